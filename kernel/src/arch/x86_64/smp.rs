//! Starting the other CPUs (application processors, APs).
//!
//! The boot CPU gives each AP a `PerCpu` block and its stacks (each with an
//! unmapped guard page) carved from low memory, copies a real-mode
//! trampoline to `TRAMPOLINE`, and sends INIT then STARTUP IPIs to all APs
//! at once, then goes on booting while they start. Each AP goes real mode
//! -> protected mode -> long mode on the
//! boot page tables (which map low memory executable), jumps to
//! `ap_entry64` in kernel text, switches to the final page tables, picks its
//! stack by APIC id, and enters `ap_main`, which loads its GDT, TSS and IDT,
//! enables its local APIC and checks in.
//!
//! Waits: under KVM and TCG an AP starts as soon as the IPIs arrive, so the
//! boot CPU sends INIT and STARTUP back to back and then only waits for
//! check-ins. Real hardware wants 10 ms after INIT and a second STARTUP
//! after 200 us (Intel SDM vol. 3, 9.4.4.1 / MP spec B.4); here a second
//! STARTUP goes only to APs that have not checked in after
//! `RESEND_TICKS`, and an AP that never checks in is reported and left out.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use super::paging::{self, FrameBump, PAGE_SIZE};
use super::percpu::{PerCpu, StackInfo, MAX_CPUS, STACKS};
use super::{apic, cpu, gdt};

/// Where the trampoline is copied: page-aligned, below 1 MiB, outside
/// 0x500-0x8fff (Firecracker's boot data) and below the EBDA.
pub const TRAMPOLINE: u64 = 0x9000;
/// Bytes of each AP's main kernel stack.
pub const AP_STACK_SIZE: usize = 64 * 1024;
/// An AP area: guard + main stack, then guard + IST stack, three times.
const AREA_BYTES: usize = PAGE_SIZE + AP_STACK_SIZE + 3 * (PAGE_SIZE + gdt::IST_STACK_SIZE);
/// Per AP: its area and one page for its `PerCpu` block.
pub const BYTES_PER_AP: u64 = (AREA_BYTES + PAGE_SIZE) as u64;
/// TSC ticks before a second STARTUP IPI (about 3-10 ms at 1-3 GHz; the
/// TSC frequency may not be known yet, so no calibration is spent on this).
const RESEND_TICKS: u64 = 10_000_000;
/// TSC ticks before giving up on an AP (about 1-3 s).
const GIVE_UP_TICKS: u64 = 3_000_000_000;

/// Final page-table root, for `ap_entry64`.
#[unsafe(no_mangle)]
static AP_CR3: AtomicU64 = AtomicU64::new(0);
/// Stack tops by APIC id, for `ap_entry64`; 0 = no such AP.
#[unsafe(no_mangle)]
static AP_STACK_BY_APIC_ID: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// `PerCpu` blocks by APIC id, for `ap_main`.
static AP_BLOCK_BY_APIC_ID: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Set by each AP (only by that AP) when it is up.
static CHECKED_IN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
    .global ap_trampoline_end
    .code16
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_gdt_pointer - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $({trampoline} + ap_protected_mode - ap_trampoline_start)
    .code32
ap_protected_mode:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr4, %eax
    or $0x20, %eax                      /* CR4.PAE */
    mov %eax, %cr4
    mov $BOOT_TABLES, %eax              /* boot tables: low memory executable */
    mov %eax, %cr3
    mov $0xc0000080, %ecx               /* IA32_EFER: LME | NXE */
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax                /* PG | WP | PE */
    mov %eax, %cr0
    ljmpl $0x18, $ap_entry64
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff            /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: data */
    .quad 0x00af9a000000ffff            /* 0x18: 64-bit code */
ap_gdt_pointer:
    .word 31
    .long {trampoline} + ap_gdt - ap_trampoline_start
ap_trampoline_end:

    .section .text
    .code64
ap_entry64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov AP_CR3, %rax
    mov %rax, %cr3                      /* the final, W^X page tables */
    mov $1, %eax
    cpuid
    shr $24, %ebx                       /* initial APIC id */
    mov AP_STACK_BY_APIC_ID(,%rbx,8), %rsp
    test %rsp, %rsp
    jz 2f
    mov %ebx, %edi
    xor %ebp, %ebp
    call ap_main
2:
    cli
    hlt
    jmp 2b
"#,
    trampoline = const TRAMPOLINE,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// What each AP runs once set up (from `launch`).
static AP_ENTRY: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// APs sent on their way, for `wait`.
pub struct Launch {
    apic_ids: [u32; MAX_CPUS],
    count: usize,
    start: u64,
}

/// Gives every AP in `apic_ids` (the boot CPU's id excluded by the caller)
/// its stacks and block, and sends INIT and STARTUP to all of them; returns
/// at once. CPU indexes follow the order of `apic_ids`, from 1. Each AP,
/// once set up, calls `entry` (`arch` does not call up into the kernel).
pub fn launch(apic_ids: &[u32], frames: &mut FrameBump, entry: fn() -> !) -> Launch {
    AP_ENTRY.store(entry as *mut (), Ordering::Release);
    let count = apic_ids.len().min(MAX_CPUS - 1);
    let mut launch = Launch { apic_ids: [0; MAX_CPUS], count, start: 0 };
    launch.apic_ids[..count].copy_from_slice(&apic_ids[..count]);
    for (position, &apic_id) in apic_ids[..count].iter().enumerate() {
        if apic_id as usize >= MAX_CPUS {
            log::warn!("cpu with APIC id {apic_id} is beyond the xAPIC range; left out");
            continue;
        }
        prepare(position as u32 + 1, apic_id, frames);
    }
    copy_trampoline();
    let root: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) root, options(nomem, nostack, preserves_flags)) };
    AP_CR3.store(root, Ordering::Release);
    let page = (TRAMPOLINE >> 12) as u8;
    for &apic_id in &apic_ids[..count] {
        apic::send_init(apic_id);
    }
    for &apic_id in &apic_ids[..count] {
        apic::send_startup(apic_id, page);
    }
    launch.start = cpu::rdtsc();
    launch
}

/// Waits until every launched AP checked in (sending a second STARTUP to
/// late ones, giving up on silent ones); returns how many did.
pub fn wait(launch: &Launch) -> usize {
    let apic_ids = &launch.apic_ids[..launch.count];
    let page = (TRAMPOLINE >> 12) as u8;
    let mut resent = false;
    loop {
        let waiting = (1..=launch.count).filter(|&index| !CHECKED_IN[index].load(Ordering::Acquire)).count();
        if waiting == 0 {
            break;
        }
        let elapsed = cpu::rdtsc() - launch.start;
        if !resent && elapsed > RESEND_TICKS {
            resent = true;
            for (position, &apic_id) in apic_ids.iter().enumerate() {
                if !CHECKED_IN[position + 1].load(Ordering::Acquire) {
                    apic::send_startup(apic_id, page);
                }
            }
        }
        if elapsed > GIVE_UP_TICKS {
            for (position, &apic_id) in apic_ids.iter().enumerate() {
                if !CHECKED_IN[position + 1].load(Ordering::Acquire) {
                    log::error!("cpu {} (APIC id {apic_id}) did not start; running without it", position + 1);
                }
            }
            break;
        }
        core::hint::spin_loop();
    }
    (1..=launch.count).filter(|&index| CHECKED_IN[index].load(Ordering::Acquire)).count()
}

/// Whether CPU `index` is running.
pub fn is_up(index: usize) -> bool {
    index == 0 || CHECKED_IN.get(index).is_some_and(|flag| flag.load(Ordering::Acquire))
}

/// Carves the stacks and `PerCpu` block of one AP.
fn prepare(index: u32, apic_id: u32, frames: &mut FrameBump) {
    let area = frames.allocate_range(AREA_BYTES / PAGE_SIZE);
    let page = PAGE_SIZE as u64;
    let mut stacks = [StackInfo::EMPTY; STACKS];
    let mut cursor = area;
    for (slot, stack) in stacks.iter_mut().enumerate() {
        let size = if slot == 0 { AP_STACK_SIZE } else { gdt::IST_STACK_SIZE } as u64;
        paging::unmap_small_page(cursor);
        *stack =
            StackInfo { name: gdt::STACK_NAMES[slot], guard: cursor, start: cursor + page, end: cursor + page + size };
        cursor += page + size;
    }
    let block = frames.allocate_range(1) as *mut PerCpu;
    let mut percpu = PerCpu::new(index, apic_id);
    percpu.stacks = stacks;
    // SAFETY: a fresh page from the frame allocator, large enough and
    // page-aligned; no one else refers to it.
    unsafe { block.write(percpu) };
    AP_BLOCK_BY_APIC_ID[apic_id as usize].store(block as u64, Ordering::Release);
    AP_STACK_BY_APIC_ID[apic_id as usize].store(stacks[0].end, Ordering::Release);
}

fn copy_trampoline() {
    let start = &raw const ap_trampoline_start;
    let end = &raw const ap_trampoline_end;
    let length = end as usize - start as usize;
    // SAFETY: the trampoline page is usable low RAM the kernel reserved
    // from allocation (below 1 MiB), identity-mapped writable; the source
    // is the trampoline's bytes in rodata; they do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, length) };
}

/// An AP's first Rust code, on its own stack, GS not yet set.
#[unsafe(no_mangle)]
extern "C" fn ap_main(apic_id: u32) -> ! {
    let block = AP_BLOCK_BY_APIC_ID[apic_id as usize].load(Ordering::Acquire) as *mut PerCpu;
    // SAFETY: `prepare` made this block for this APIC id; only this CPU
    // uses it from now on.
    unsafe { super::percpu::install(block) };
    // SAFETY: this CPU sets itself up, interrupts off; its stacks are mapped.
    unsafe {
        core::arch::asm!(
            "mov {tmp}, cr4", "or {tmp}, 0x80", "mov cr4, {tmp}",
            tmp = out(reg) _, options(nostack, preserves_flags)
        );
        gdt::load(super::percpu::current_mut());
        super::interrupts::load();
    }
    apic::enable();
    let index = super::percpu::current_index();
    CHECKED_IN[index].store(true, Ordering::Release);
    let entry = AP_ENTRY.load(Ordering::Acquire);
    // SAFETY: `launch` stored a `fn() -> !` there before any AP started.
    let entry: fn() -> ! = unsafe { core::mem::transmute::<*mut (), fn() -> !>(entry) };
    entry()
}
