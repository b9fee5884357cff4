//! Architecture selection: the one place that names the target architecture.

mod x86_64;
pub use self::x86_64::*;
