//! The PVH entry: from 32-bit protected mode, paging off, to Rust in long mode.
//!
//! A PVH loader (QEMU `-kernel`, Firecracker, cloud-hypervisor) reads the Xen
//! `PHYS32_ENTRY` note, enters `pvh_entry32` in 32-bit protected mode with
//! paging off and `ebx` holding the physical address of `hvm_start_info`. It
//! gives no stack, GDT or IDT. This code:
//! 1. reads the TSC first (boot time is measured from here),
//! 2. zeroes `.bss` (loaders are not required to; stacks are left out),
//! 3. identity-maps the first 4 GiB with 2 MiB pages (enough to reach the
//!    kernel, `hvm_start_info` and the boot stack; `paging::init` replaces
//!    these tables with the final W^X ones),
//! 4. enables PAE, long mode, no-execute pages and CR0.WP (so ring-0 writes
//!    to read-only pages fault),
//! 5. jumps to 64-bit code and calls `kernel_entry(start_info, boot_tsc)`.

use super::paging::PAGE_SIZE;

/// Bytes of the boot stack, which `main` keeps. Generous: the boot path keeps
/// fixed-size tables (memory map, CPU lists, the split plan) on it, and it
/// costs nothing in the image (`.stacks` is not loaded or zeroed).
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

/// The boot CPU's stack, with an unmapped guard page below it.
#[repr(C, align(4096))]
pub struct BootStack {
    pub guard: [u8; PAGE_SIZE],
    pub stack: [u8; BOOT_STACK_SIZE],
}

/// Written only by the boot code below (before Rust runs); read-only after.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".stacks.boot")]
pub static mut BOOT_STACK: BootStack = BootStack { guard: [0; PAGE_SIZE], stack: [0; BOOT_STACK_SIZE] };

/// The first page tables: PML4, one PDPT, four page directories (4 GiB).
#[repr(C, align(4096))]
pub struct BootTables {
    pub pml4: [u64; 512],
    pub pdpt: [u64; 512],
    pub directories: [[u64; 512]; 4],
}

#[unsafe(no_mangle)]
pub static mut BOOT_TABLES: BootTables = BootTables { pml4: [0; 512], pdpt: [0; 512], directories: [[0; 512]; 4] };

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a"
    .balign 4
    .long 4                     /* namesz: "Xen\0" */
    .long 8                     /* descsz */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_entry32           /* 64-bit ELF: QEMU reads 8 bytes, others the low 4 */
    .balign 4

    .section .rodata
    .balign 16
boot_gdt:
    .quad 0                     /* null */
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, ring 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, ring 0 */
boot_gdt_end:
    .balign 4
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_entry32
pvh_entry32:
    cli
    cld
    /* ebx = hvm_start_info (kept to the end); esi:ebp = TSC at entry. */
    rdtsc
    mov %eax, %esi
    mov %edx, %ebp

    /* Zero .bss (page-aligned at both ends) 4 bytes at a time; the boot
       tables live there. Stacks are in .stacks, not zeroed. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories. */
    mov $BOOT_TABLES, %edi
    lea 0x1000(%edi), %eax
    or $0x3, %eax                       /* present | writable */
    mov %eax, (%edi)
    lea 0x2000(%edi), %eax
    or $0x3, %eax
    xor %ecx, %ecx
1:
    mov %eax, 0x1000(%edi,%ecx,8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jne 1b

    /* 2048 entries of 2 MiB pages: identity map of 0..4 GiB. */
    lea 0x2000(%edi), %edx
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax                      /* present | writable | huge */
    mov %eax, (%edx,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax                       /* bits 32.. of the address */
    mov %eax, 4(%edx,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    mov %edi, %cr3
    mov %cr4, %eax
    or $0x20, %eax                      /* CR4.PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx               /* IA32_EFER */
    rdmsr
    or $0x900, %eax                     /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax                /* PG | WP | PE */
    mov %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $pvh_entry64

    .code64
pvh_entry64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $(BOOT_STACK + {stack_top}), %rsp
    mov %ebx, %edi                      /* arg 0: start_info (zero-extended) */
    mov %esi, %esi                      /* TSC low half, zero-extended */
    mov %ebp, %eax
    shl $32, %rax
    or %rax, %rsi                       /* arg 1: TSC at entry */
    xor %ebp, %ebp                      /* end of the frame-pointer chain */
    call kernel_entry
    ud2
"#,
    stack_top = const PAGE_SIZE + BOOT_STACK_SIZE,
    options(att_syntax)
);
