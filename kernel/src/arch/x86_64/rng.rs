//! The CPU's random number instructions, RDRAND and RDSEED, and whether
//! the CPU has them.
//!
//! CPUID: RDRAND is leaf 01H ECX bit 30; RDSEED is leaf 07H (subleaf 0)
//! EBX bit 18 (Intel SDM Vol. 2A, CPUID). Either sets CF=1 when the value
//! is valid and CF=0 when the entropy source had none ready (Intel SDM
//! Vol. 2B, RDRAND/RDSEED); retrying is the caller's job.

use super::cpu::cpuid;

/// CPUID.01H:ECX.RDRAND[bit 30].
const RDRAND_BIT: u32 = 1 << 30;
/// CPUID.(EAX=07H,ECX=0):EBX.RDSEED[bit 18].
const RDSEED_BIT: u32 = 1 << 18;
/// The structured extended feature leaf.
const EXTENDED_FEATURES_LEAF: u32 = 7;

/// Whether the CPU has RDRAND.
pub fn has_rdrand() -> bool {
    cpuid(1).2 & RDRAND_BIT != 0
}

/// Whether the CPU has RDSEED.
pub fn has_rdseed() -> bool {
    cpuid(0).0 >= EXTENDED_FEATURES_LEAF && cpuid(EXTENDED_FEATURES_LEAF).1 & RDSEED_BIT != 0
}

/// One RDRAND; `None` if no value was ready.
///
/// # Safety
/// The CPU must have RDRAND (`has_rdrand`); else #UD.
pub unsafe fn rdrand() -> Option<u64> {
    let value: u64;
    let valid: u8;
    // SAFETY: the caller checked CPUID; RDRAND only writes its register and
    // the flags.
    unsafe { core::arch::asm!("rdrand {0}", "setc {1}", out(reg) value, out(reg_byte) valid, options(nomem, nostack)) };
    (valid != 0).then_some(value)
}

/// One RDSEED; `None` if no value was ready.
///
/// # Safety
/// The CPU must have RDSEED (`has_rdseed`); else #UD.
pub unsafe fn rdseed() -> Option<u64> {
    let value: u64;
    let valid: u8;
    // SAFETY: as for `rdrand`.
    unsafe { core::arch::asm!("rdseed {0}", "setc {1}", out(reg) value, out(reg_byte) valid, options(nomem, nostack)) };
    (valid != 0).then_some(value)
}
