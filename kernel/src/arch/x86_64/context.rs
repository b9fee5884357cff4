//! The context switch between threads.
//!
//! Only what the System V ABI makes the callee preserve is saved: RBX, RBP,
//! R12-R15 and the stack pointer (the caller of `switch_context` saved
//! everything else, as for any call). No SIMD or x87 state is saved, because
//! none exists: Toro and its applications are built for
//! `x86_64-unknown-none`, which compiles with SSE and x87 disabled
//! (soft-float), and CR4.OSFXSR stays clear, so any SSE instruction faults
//! (#UD) instead of silently sharing registers between threads.

core::arch::global_asm!(
    r#"
    .section .text
    .global switch_context
    /* switch_context(save: *mut u64 [rdi], next_rsp: u64 [rsi]) */
switch_context:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .global thread_trampoline
    /* A new thread's first return lands here: r12 = argument, r13 = entry. */
thread_trampoline:
    mov rdi, r12
    xor ebp, ebp
    call r13
    ud2
"#
);

unsafe extern "C" {
    /// Saves the callee-saved registers and stack pointer into `*save`, and
    /// resumes the context whose stack pointer is `next_rsp`.
    pub fn switch_context(save: *mut u64, next_rsp: u64);
    fn thread_trampoline();
}

/// Prepares a fresh stack (`top`, 16-byte aligned) so that switching to the
/// returned stack pointer calls `entry(argument)`, which must not return.
///
/// # Safety
/// `top` must be the end of a writable stack of at least 64 bytes that
/// nothing else uses.
pub unsafe fn prepare_stack(top: u64, entry: extern "C" fn(u64) -> !, argument: u64) -> u64 {
    // Layout popped by switch_context: r15, r14, r13, r12, rbx, rbp, then
    // the return address. After `ret`, RSP = top - 8, so that the `call` in
    // the trampoline leaves RSP + 8 16-byte aligned at the entry, as the ABI
    // requires.
    let frame: [u64; 8] = [0, 0, entry as *const () as u64, argument, 0, 0, thread_trampoline as *const () as u64, 0];
    let rsp = top - 8 * 8 - 8;
    // SAFETY: the caller guarantees the stack is ours and large enough.
    unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut u64, frame.len()) };
    rsp
}
