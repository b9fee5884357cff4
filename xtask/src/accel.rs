//! Picks the accelerator that really is fastest here.
//!
//! KVM only when the host CPU lists `vmx` or `svm` (hardware
//! virtualisation) and `/dev/kvm` opens. A `/dev/kvm` without them (such as
//! the `kvm_pvm` software emulator) runs ring-0 code far slower than TCG, so
//! then TCG with one host thread per vCPU.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "kvm" => Some(Self::Kvm),
            "tcg" => Some(Self::Tcg),
            _ => None,
        }
    }

    /// QEMU's `-accel` argument.
    pub fn qemu_argument(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg,thread=multi",
        }
    }

    /// QEMU's `-cpu` model for this accelerator.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Self::Kvm => "host",
            Self::Tcg => "max",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "KVM",
            Self::Tcg => "TCG (multi-threaded)",
        })
    }
}

/// Whether `/proc/cpuinfo`'s flags show hardware virtualisation.
pub fn cpuinfo_has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| line.split_whitespace().any(|flag| flag == "vmx" || flag == "svm"))
}

/// The accelerator to use and why.
pub fn detect() -> (Accel, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo_has_virtualization(&cpuinfo);
    let kvm_opens = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    match (hardware, kvm_opens) {
        (true, true) => (Accel::Kvm, "host CPU has vmx/svm and /dev/kvm opens".into()),
        (true, false) => (Accel::Tcg, "/dev/kvm cannot be opened".into()),
        (false, true) => (
            Accel::Tcg,
            "/dev/kvm exists but the host CPU lists no vmx/svm: it is a software emulator, slower than TCG".into(),
        ),
        (false, false) => (Accel::Tcg, "no KVM on this host".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_vmx_and_svm_only_as_whole_flags() {
        assert!(cpuinfo_has_virtualization("flags\t\t: fpu vme vmx sse\n"));
        assert!(cpuinfo_has_virtualization("processor: 0\nflags : svm lm\n"));
        assert!(!cpuinfo_has_virtualization("flags : fpu vmxx svmm\n"));
        assert!(!cpuinfo_has_virtualization("model name : vmx\nflags : fpu\n"));
    }
}
