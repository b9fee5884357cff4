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

    /// QEMU's `-cpu` model for this accelerator: under KVM the host's
    /// CPU, less `arch-capabilities` where this host's KVM cannot set that
    /// MSR (QEMU then aborts with `failed to set MSR 0x10a`: nested or
    /// emulated KVM); found once per run by booting the floor kernel.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Self::Kvm => {
                static MODEL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
                MODEL.get_or_init(|| {
                    let model = kvm_cpu_model(probe_kvm_host_cpu().as_deref());
                    if model != KVM_CPU {
                        eprintln!("accelerator: KVM cannot give the guest MSR 0x10a here: using -cpu {model}");
                    }
                    model
                })
            }
            Self::Tcg => "max",
        }
    }
}

/// The KVM CPU model, and the one without the MSR KVM may fail to set.
const KVM_CPU: &str = "host";
const KVM_CPU_WITHOUT_ARCH_CAPABILITIES: &str = "host,-arch-capabilities";

/// The `-cpu` model under KVM given what QEMU printed when it booted the
/// floor kernel with `-cpu host` (`None`: the probe could not run).
pub fn kvm_cpu_model(probe_stderr: Option<&str>) -> &'static str {
    match probe_stderr {
        Some(text) if text.contains("failed to set MSR 0x10a") || text.contains("arch-capabilities") => {
            KVM_CPU_WITHOUT_ARCH_CAPABILITIES
        }
        _ => KVM_CPU,
    }
}

/// Boots the floor kernel (it exits at its first instruction) under KVM
/// with `-cpu host`; returns what QEMU printed on stderr.
fn probe_kvm_host_cpu() -> Option<String> {
    let image = crate::floor::write(&crate::build::workspace_root().join("target")).ok()?;
    let mut child = std::process::Command::new(crate::setup::QEMU)
        .args(["-machine", "microvm", "-accel", "kvm", "-cpu", KVM_CPU, "-m", "16M"])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let started = std::time::Instant::now();
    while child.try_wait().ok()?.is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take()?, &mut text).ok()?;
    Some(text)
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
    fn kvm_drops_arch_capabilities_only_where_qemu_failed_on_it() {
        let failed = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x20c8ee4\n\
                      qemu-system-x86_64: ../target/i386/kvm/kvm.c:3213: kvm_buf_set_msrs: Assertion failed.";
        assert_eq!(kvm_cpu_model(Some(failed)), "host,-arch-capabilities");
        assert_eq!(kvm_cpu_model(Some("")), "host");
        assert_eq!(kvm_cpu_model(None), "host");
        assert_eq!(Accel::Tcg.cpu_model(), "max");
    }

    #[test]
    fn finds_vmx_and_svm_only_as_whole_flags() {
        assert!(cpuinfo_has_virtualization("flags\t\t: fpu vme vmx sse\n"));
        assert!(cpuinfo_has_virtualization("processor: 0\nflags : svm lm\n"));
        assert!(!cpuinfo_has_virtualization("flags : fpu vmxx svmm\n"));
        assert!(!cpuinfo_has_virtualization("model name : vmx\nflags : fpu\n"));
    }
}
