//! The IDT, the entry stubs for all 256 vectors, and CPU-exception reports.
//!
//! Each vector's stub is 16 bytes at `interrupt_stubs + 16 * vector`: it
//! pushes a zero where the CPU pushes no error code, then the vector, and
//! jumps to a common path that saves every general-purpose register and
//! calls `interrupt_dispatch` with a pointer to the saved frame. (Rust's
//! `x86-interrupt` ABI needs nightly, so the stubs are assembly.)

use core::fmt::Write;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::{cpu, gdt};

/// What fault reports need to know about the running thread. `arch` does
/// not call up into the scheduler: boot hands these in (`set_thread_info`).
pub struct ThreadInfo {
    /// The running thread's stack, if it has a slot: (guard page, top).
    pub current_stack: fn() -> Option<(u64, u64)>,
    /// Writes the running thread's name and id.
    pub describe_current: fn(&mut dyn Write),
    /// Handles an NMI the kernel asked for (the watchdog's); false if it
    /// did not ask.
    pub on_nmi: fn(&InterruptFrame) -> bool,
}

static THREAD_INFO: AtomicPtr<ThreadInfo> = AtomicPtr::new(core::ptr::null_mut());

/// Tells fault reports how to describe the running thread (once, at boot).
pub fn set_thread_info(info: &'static ThreadInfo) {
    THREAD_INFO.store(info as *const ThreadInfo as *mut ThreadInfo, Ordering::Release);
}

fn thread_info() -> Option<&'static ThreadInfo> {
    // SAFETY: only ever set from a `&'static ThreadInfo`.
    unsafe { THREAD_INFO.load(Ordering::Acquire).as_ref() }
}

fn describe_current(out: &mut dyn Write) {
    if let Some(info) = thread_info() {
        (info.describe_current)(out);
    }
}

/// Registers as saved by the stubs, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

core::arch::global_asm!(
    r#"
    .section .text
    .balign 16
    .global interrupt_stubs
interrupt_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if (vector == 8) || (vector == 10) || (vector == 11) || (vector == 12) || (vector == 13) || (vector == 14) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    push 0
    .endif
    push vector
    jmp interrupt_common
    .set vector, vector + 1
    .endr

interrupt_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call interrupt_dispatch
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq
"#
);

unsafe extern "C" {
    static interrupt_stubs: u8;
}

/// An IDT gate (Intel SDM vol. 3, 6.14.1, "64-bit mode IDT").
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: IST slot (0 = none).
    ist: u8,
    /// Present, DPL 0, type 0xE (64-bit interrupt gate).
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

const INTERRUPT_GATE: u8 = 0x8e;

/// Set once by `init` on the boot CPU; afterwards read only by CPUs.
static mut IDT: [Gate; 256] =
    [Gate { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_middle: 0, offset_high: 0, reserved: 0 }; 256];

/// Fills and loads the IDT.
///
/// # Safety
/// Call once on the boot CPU after `gdt::init` (gates use its code selector
/// and IST slots).
pub unsafe fn init() {
    let stubs = (&raw const interrupt_stubs) as u64;
    let code_selector: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { core::arch::asm!("mov {0:x}, cs", out(reg) code_selector, options(nomem, nostack)) };
    // SAFETY: single-threaded boot; nothing reads the IDT until `lidt`.
    let idt = unsafe { &mut *(&raw mut IDT) };
    for (vector, gate) in idt.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        let ist = match vector {
            8 => gdt::DOUBLE_FAULT_IST,
            2 => gdt::NMI_IST,
            18 => gdt::MACHINE_CHECK_IST,
            _ => 0,
        };
        *gate = Gate {
            offset_low: handler as u16,
            selector: code_selector,
            ist,
            attributes: INTERRUPT_GATE,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    // SAFETY: just filled.
    unsafe { load() };
}

/// Loads the (shared, read-only after `init`) IDT on this CPU.
///
/// # Safety
/// `init` must have run; this CPU's GDT must hold the code selector.
pub unsafe fn load() {
    let idt = &raw const IDT;
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer { limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16, base: idt as u64 };
    // SAFETY: the IDT is static and fully initialised.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}

/// Names of the architectural exceptions (Intel SDM vol. 3, table 6-1).
const EXCEPTIONS: [(&str, &str); 32] = [
    ("divide error", "#DE"),
    ("debug", "#DB"),
    ("non-maskable interrupt", "NMI"),
    ("breakpoint", "#BP"),
    ("overflow", "#OF"),
    ("bound range exceeded", "#BR"),
    ("invalid opcode", "#UD"),
    ("device not available", "#NM"),
    ("double fault", "#DF"),
    ("coprocessor segment overrun", "#MF"),
    ("invalid TSS", "#TS"),
    ("segment not present", "#NP"),
    ("stack-segment fault", "#SS"),
    ("general protection fault", "#GP"),
    ("page fault", "#PF"),
    ("reserved", "-"),
    ("x87 floating-point error", "#MF"),
    ("alignment check", "#AC"),
    ("machine check", "#MC"),
    ("SIMD floating-point exception", "#XM"),
    ("virtualization exception", "#VE"),
    ("control protection exception", "#CP"),
    ("reserved", "-"),
    ("reserved", "-"),
    ("reserved", "-"),
    ("reserved", "-"),
    ("reserved", "-"),
    ("reserved", "-"),
    ("hypervisor injection exception", "#HV"),
    ("VMM communication exception", "#VC"),
    ("security exception", "#SX"),
    ("reserved", "-"),
];

/// Exit status of the VM after a CPU exception.
pub const EXIT_CPU_EXCEPTION: u32 = 102;

/// Called by `interrupt_common` for every vector.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    if frame.vector == 2 && super::exit::stopping() {
        super::cpu::halt_forever();
    }
    if frame.vector == 2 && thread_info().is_some_and(|info| (info.on_nmi)(frame)) {
        return;
    }
    if frame.vector == 3 {
        log::warn!("breakpoint at rip {:#018x}", frame.rip);
        return;
    }
    if frame.vector >= super::irq::EXCEPTION_VECTORS as u64 {
        // Every interrupt (device, IPI, timer, spurious): the handler
        // table, which also sends the EOI.
        super::irq::dispatch(frame.vector as u8);
        return;
    }
    report_exception(frame);
    super::exit::fail(EXIT_CPU_EXCEPTION);
}

/// What a page fault's address and error code say happened.
/// Whether `address` is in the guard page of the running thread's stack.
fn in_thread_guard(address: u64) -> bool {
    thread_info()
        .and_then(|info| (info.current_stack)())
        .is_some_and(|(guard, _)| (guard..guard + super::paging::PAGE_SIZE as u64).contains(&address))
}

fn page_fault_cause(address: u64, error_code: u64) -> &'static str {
    let present = error_code & 1 != 0;
    let write = error_code & 2 != 0;
    let fetch = error_code & 16 != 0;
    let layout = super::sections::layout();
    if address < super::paging::PAGE_SIZE as u64 {
        "null pointer dereference"
    } else if gdt::stacks().iter().any(|s| s.guard_contains(address)) || in_thread_guard(address) {
        "stack overflow (guard page hit)"
    } else if present && write && layout.text.contains(&address) {
        "write to kernel text (read-only)"
    } else if present && write && layout.rodata.contains(&address) {
        "write to read-only data"
    } else if present && fetch {
        "execution of a no-execute page"
    } else if !present {
        "access to unmapped memory"
    } else {
        "protection violation"
    }
}

fn report_exception(frame: &InterruptFrame) {
    let (name, mnemonic) = EXCEPTIONS[frame.vector as usize];
    let mut out = crate::console::Emergency::lock();
    let _ =
        writeln!(out, "\n!!! CPU exception: {name} ({mnemonic}, vector {}) on cpu {}", frame.vector, crate::cpu_id());
    let _ = write!(out, "    in ");
    describe_current(&mut out);
    let _ = writeln!(out, "\n    error code {:#x}", frame.error_code);
    if frame.vector == 14 {
        let address = cpu::cr2();
        let _ = writeln!(
            out,
            "    cr2 {address:#018x}: {} ({} {})",
            page_fault_cause(address, frame.error_code),
            if frame.error_code & 16 != 0 {
                "instruction fetch"
            } else if frame.error_code & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if frame.error_code & 1 != 0 { "of a present page" } else { "of a non-present page" },
        );
    }
    if frame.vector == 8 {
        // The CPU's saved RIP/RSP are undefined for #DF; CR2 still holds the
        // address of the page fault that could not be delivered.
        let address = cpu::cr2();
        if let Some(stack) = gdt::stacks().iter().find(|s| s.guard_contains(address)) {
            let _ = writeln!(out, "    kernel stack overflow: {} guard page hit (cr2 {address:#018x})", stack.name);
        } else if in_thread_guard(address) {
            let _ = write!(out, "    stack overflow: ");
            describe_current(&mut out);
            let _ = writeln!(out, " on cpu {} hit its guard page (cr2 {address:#018x})", crate::cpu_id());
        }
    }
    let _ = writeln!(
        out,
        "    rip {:#018x} rsp {:#018x} rflags {:#x} cs {:#x}",
        frame.rip, frame.rsp, frame.rflags, frame.cs
    );
    let _ = writeln!(
        out,
        "    rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n    rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}\n    r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}\n    r13 {:#018x} r14 {:#018x} r15 {:#018x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp, frame.r8,
        frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15
    );
    crate::backtrace::write(&mut out, frame.rip, frame.rbp);
}

/// Masks both legacy 8259 PICs. Firmware (SeaBIOS on q35/pc) leaves them
/// programmed with vector base 8, where a timer tick would look like a
/// double fault; Toro uses the local and IO APICs instead. On microvm
/// (`pic=off`) the ports are unassigned and the writes are ignored.
pub fn mask_legacy_pic() {
    // SAFETY: writing the PICs' interrupt mask registers only masks IRQs.
    unsafe {
        x86_64::instructions::port::Port::<u8>::new(0x21).write(0xff);
        x86_64::instructions::port::Port::<u8>::new(0xa1).write(0xff);
    }
}
