//! Firecracker and cloud-hypervisor beside QEMU: finding them, their command
//! lines (from the same [`VmConfig`] QEMU gets), and a run's exit status,
//! which they cannot pass on: the kernel's last line `toro: exit status N`
//! carries it (see `kernel/src/arch/x86_64/exit.rs`, `docs/vmm.md`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::qemu::{self, Outcome, RunResult, VmConfig};

/// The line the kernel ends every run with (before the number).
pub const STATUS_LINE: &str = "toro: exit status ";

/// Which VMM boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vmm {
    Qemu,
    Firecracker,
    CloudHypervisor,
}

impl Vmm {
    pub const ALL: [Vmm; 3] = [Vmm::Qemu, Vmm::Firecracker, Vmm::CloudHypervisor];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|vmm| vmm.name() == name)
    }

    /// The name on the command line, and of the program.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Firecracker => "firecracker",
            Self::CloudHypervisor => "cloud-hypervisor",
        }
    }

    /// The environment variable naming the program, if any.
    fn variable(self) -> Option<&'static str> {
        match self {
            Self::Qemu => None,
            Self::Firecracker => Some("TORO_FIRECRACKER"),
            Self::CloudHypervisor => Some("TORO_CLOUD_HYPERVISOR"),
        }
    }

    /// What to install, for the message when it is missing.
    fn install_hint(self) -> &'static str {
        match self {
            Self::Qemu => "the Debian package qemu-system-x86",
            Self::Firecracker => {
                "Firecracker v1.16 (a release binary from github.com/firecracker-microvm/firecracker/releases)"
            }
            Self::CloudHypervisor => {
                "cloud-hypervisor v53 (a release binary from github.com/cloud-hypervisor/cloud-hypervisor/releases)"
            }
        }
    }
}

impl fmt::Display for Vmm {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where builds beside the repository live: `../shared/vmm`, from the
/// checkout and, for a git worktree, from the main checkout too.
fn shared_directories() -> Vec<PathBuf> {
    let root = crate::build::workspace_root();
    let mut checkouts = vec![root.clone()];
    let common = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .output();
    if let Some(output) = common.ok().filter(|o| o.status.success()) {
        let common = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if let Some(main) = common.parent().filter(|main| *main != root) {
            checkouts.push(main.to_path_buf());
        }
    }
    checkouts.into_iter().map(|checkout| checkout.join("..").join("shared").join("vmm")).collect()
}

/// Finds `vmm`'s program: `$TORO_FIRECRACKER` / `$TORO_CLOUD_HYPERVISOR`
/// when set, else on `PATH`, else in `../shared/vmm/`. The error names what
/// to install. Firecracker and cloud-hypervisor also need `/dev/kvm`.
pub fn locate(vmm: Vmm) -> Result<PathBuf> {
    let name = vmm.name();
    let program = if vmm == Vmm::Qemu {
        PathBuf::from(crate::setup::QEMU)
    } else {
        let from_variable = vmm.variable().and_then(|variable| std::env::var_os(variable).map(|v| (variable, v)));
        let found = match from_variable {
            Some((variable, value)) => {
                let path = PathBuf::from(value);
                if !is_executable(&path) {
                    bail!("{variable}={} is not an executable file", path.display());
                }
                Some(path)
            }
            None => on_path(name)
                .or_else(|| shared_directories().into_iter().map(|d| d.join(name)).find(|p| is_executable(p))),
        };
        let Some(found) = found else {
            bail!(
                "{name} not found (not on PATH, {} unset, not in ../shared/vmm): install {} and put it on PATH, or set {} to its path",
                vmm.variable().unwrap_or_default(),
                vmm.install_hint(),
                vmm.variable().unwrap_or_default(),
            );
        };
        found
    };
    if vmm != Vmm::Qemu {
        let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm");
        if let Err(error) = kvm {
            bail!("{name} needs /dev/kvm, which cannot be opened ({error}): run on a host with KVM, as a user in group kvm");
        }
    }
    Ok(program)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

/// A tap device for the guest's network card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tap {
    /// The host's tap interface name.
    pub name: String,
    /// The guest's MAC address (`52:54:00:...`), if chosen.
    pub mac: Option<String>,
    /// Queue pairs (a multi-queue tap when more than 1; QEMU q35 only).
    pub queues: u32,
}

impl Tap {
    /// A single-queue tap named `name` with the VMM's choice of MAC.
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), mac: None, queues: 1 }
    }
}

/// Network devices beyond what [`VmConfig`] holds (which has QEMU's user
/// networking only); disks come from [`VmConfig::disks`], as for QEMU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    pub taps: Vec<Tap>,
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Firecracker's `--config-file` for `config` (its API's field names:
/// boot-source, drives, machine-config, network-interfaces).
pub fn firecracker_config(config: &VmConfig, devices: &Devices) -> String {
    let drives: Vec<String> = config
        .disks
        .iter()
        .enumerate()
        .map(|(index, drive)| {
            format!(
                "{{ \"drive_id\": \"drive{index}\", \"path_on_host\": {}, \"is_root_device\": false, \"is_read_only\": {} }}",
                json_string(&drive.image.to_string_lossy()),
                drive.read_only
            )
        })
        .collect();
    let interfaces: Vec<String> = devices
        .taps
        .iter()
        .enumerate()
        .map(|(index, tap)| {
            let mac = tap.mac.as_ref().map(|mac| format!(", \"guest_mac\": {}", json_string(mac))).unwrap_or_default();
            format!("{{ \"iface_id\": \"net{index}\", \"host_dev_name\": {}{mac} }}", json_string(&tap.name))
        })
        .collect();
    let initrd = config
        .initrd
        .as_ref()
        .map(|initrd| format!(", \"initrd_path\": {}", json_string(&initrd.to_string_lossy())))
        .unwrap_or_default();
    format!(
        "{{\n  \"boot-source\": {{ \"kernel_image_path\": {}, \"boot_args\": {}{initrd} }},\n  \"drives\": [{}],\n  \"network-interfaces\": [{}],\n  \"machine-config\": {{ \"vcpu_count\": {}, \"mem_size_mib\": {}, \"smt\": false }}\n}}\n",
        json_string(&config.kernel.to_string_lossy()),
        json_string(&config.command_line.to_string_lossy()),
        drives.join(", "),
        interfaces.join(", "),
        config.cpus,
        config.memory_mib
    )
}

/// cloud-hypervisor's arguments for `config`, the log going to `log`.
pub fn cloud_hypervisor_arguments(config: &VmConfig, devices: &Devices, log: &Path) -> Vec<String> {
    let mut arguments: Vec<String> = vec![
        "--kernel".into(),
        config.kernel.to_string_lossy().into_owned(),
        "--cpus".into(),
        format!("boot={}", config.cpus),
        "--memory".into(),
        format!("size={}M", config.memory_mib),
        "--serial".into(),
        "tty".into(),
        "--console".into(),
        "off".into(),
        "--log-file".into(),
        log.to_string_lossy().into_owned(),
    ];
    if !config.command_line.is_empty() {
        arguments.extend(["--cmdline".into(), config.command_line.to_string_lossy().into_owned()]);
    }
    if let Some(initrd) = &config.initrd {
        arguments.extend(["--initramfs".into(), initrd.to_string_lossy().into_owned()]);
    }
    for tap in &devices.taps {
        let mac = tap.mac.as_ref().map(|mac| format!(",mac={mac}")).unwrap_or_default();
        arguments.extend(["--net".into(), format!("tap={}{mac}", tap.name)]);
    }
    for disk in &config.disks {
        let read_only = if disk.read_only { ",readonly=on" } else { "" };
        arguments.extend(["--disk".into(), format!("path={},image_type=raw{read_only}", disk.image.display())]);
    }
    arguments
}

/// The status in the last `toro: exit status N` line of `output`.
pub fn status_from_output(output: &str) -> Option<i32> {
    output.lines().rev().find_map(|line| line.trim().strip_prefix(STATUS_LINE)?.parse().ok())
}

/// A fresh directory for one run's config and log files, under `target/vmm`.
fn run_directory(vmm: Vmm) -> Result<PathBuf> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let directory = crate::build::workspace_root().join("target").join("vmm").join(format!(
        "{}-{}-{run}",
        vmm.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&directory).with_context(|| format!("creating {}", directory.display()))?;
    Ok(directory)
}

/// QEMU's configuration with `devices` (taps) added to its arguments.
pub fn qemu_config(config: &VmConfig, devices: &Devices) -> VmConfig {
    let mut config = config.clone();
    config.extra_arguments.extend(qemu::tap_arguments(config.machine, &devices.taps));
    config
}

/// The command that starts `config` on `vmm` (QEMU too), inside the
/// config's network namespace if it has one, with the directory holding its
/// generated files and the VMM's log file (remove the directory when done).
pub fn command(vmm: Vmm, config: &VmConfig, devices: &Devices) -> Result<(Command, PathBuf, PathBuf)> {
    let directory = run_directory(vmm)?;
    let log = directory.join(format!("{}.log", vmm.name()));
    if vmm == Vmm::Qemu {
        return Ok((qemu_config(config, devices).command(), directory, log));
    }
    if !config.devices.is_empty() || !config.extra_arguments.is_empty() {
        bail!("--device and extra QEMU arguments are QEMU's; {vmm} has none of them");
    }
    if config.disks.iter().any(|disk| disk.sector_size.is_some()) {
        bail!("--disk ...,sector=: {vmm} has no setting for a disk's sector size (QEMU has)");
    }
    if config.network.is_some() {
        bail!("--net user is QEMU's user networking; {vmm} has none (use --net tap)");
    }
    if devices.taps.iter().any(|tap| tap.queues > 1) {
        bail!("multi-queue taps are wired for QEMU q35 only");
    }
    let program = locate(vmm)?;
    std::fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
    let mut command = crate::netns::wrap(config.namespace.as_deref(), &program);
    match vmm {
        Vmm::Firecracker => {
            let file = directory.join("vm.json");
            std::fs::write(&file, firecracker_config(config, devices))
                .with_context(|| format!("writing {}", file.display()))?;
            command.arg("--no-api").arg("--config-file").arg(&file).arg("--log-path").arg(&log);
            command.args(["--level", "Warning"]);
        }
        Vmm::CloudHypervisor => {
            command.args(cloud_hypervisor_arguments(config, devices, &log));
        }
        Vmm::Qemu => unreachable!("handled above"),
    }
    Ok((command, directory, log))
}

/// Runs `config` on `vmm` as [`qemu::run`] does on QEMU; the exit status
/// comes from the kernel's last line where the VMM cannot pass it on.
pub fn run(
    vmm: Vmm,
    config: &VmConfig,
    devices: &Devices,
    timeout: Option<Duration>,
    echo: bool,
    annotate: &dyn Fn(&str) -> String,
) -> Result<RunResult> {
    if vmm == Vmm::Qemu {
        return qemu::run(&qemu_config(config, devices), timeout, echo, annotate);
    }
    let (command, directory, log) = command(vmm, config, devices)?;
    let is_status = |line: &str| line.trim().starts_with(STATUS_LINE);
    let process = qemu::run_process(command, vmm.name(), timeout, echo, annotate, &is_status, qemu::LAST_LINE_GRACE)?;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status_from_output(&process.output);
    let outcome = match (status, process.timed_out) {
        (_, true) => Outcome::TimedOut,
        (Some(status), false) => Outcome::Exited(status),
        (None, false) => match process.code {
            Some(0) | None => Outcome::NoStatus,
            Some(code) => bail!(
                "{} failed (exit status {code}): {}{}",
                vmm.name(),
                process.errors.trim(),
                if log_text.trim().is_empty() { String::new() } else { format!("\nits log:\n{}", log_text.trim_end()) }
            ),
        },
    };
    if process.lingered {
        eprintln!("toro: {vmm} went on after the exit status line; killed (did the VM reboot?)");
    }
    let _ = std::fs::remove_dir_all(&directory);
    Ok(RunResult {
        outcome,
        output: process.output,
        wall: process.wall,
        first_line: process.first_line,
        lingered: process.lingered,
    })
}

/// One in-VM test the suite runs on Firecracker and on cloud-hypervisor.
pub struct SuiteTest {
    pub name: &'static str,
    pub package: &'static str,
    pub binary: &'static str,
    pub cpus: u32,
    pub status: i32,
    pub expect: &'static [&'static str],
    pub vmm: Vmm,
}

/// The suite's tests on the other VMMs: short boots only (guest code runs
/// slowly on this kind of machine's `/dev/kvm`): `hello` on 1 and 2 vCPUs,
/// the exit status, a fault and a panic.
pub fn suite_tests() -> Vec<SuiteTest> {
    use crate::vmtest::{CPU_EXCEPTION, PANIC};
    type Case = (&'static str, &'static str, &'static str, u32, i32, &'static [&'static str]);
    const CASES: [Case; 5] = [
        ("hello-1cpu", "hello", "hello", 1, 0, &["Hello from Toro!", "cpus: 1"]),
        ("hello-2cpus", "hello", "hello", 2, 0, &["Hello from Toro!", "cpus: 2"]),
        ("exit_status", "vm-tests", "exit_status", 2, 42, &["returning 42"]),
        (
            "fault_null",
            "vm-tests",
            "fault_null",
            2,
            CPU_EXCEPTION,
            &["CPU exception: page fault (#PF, vector 14)", "<fault_null::main"],
        ),
        ("panic", "vm-tests", "panic", 2, PANIC, &["deliberate panic for the test suite", "backtrace:"]),
    ];
    [Vmm::Firecracker, Vmm::CloudHypervisor]
        .into_iter()
        .flat_map(|vmm| {
            CASES.iter().map(move |&(name, package, binary, cpus, status, expect)| SuiteTest {
                name: Box::leak(format!("{vmm}-{name}").into_boxed_str()),
                package,
                binary,
                cpus,
                status,
                expect,
                vmm,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;

    fn config() -> VmConfig {
        let mut config = VmConfig::new(PathBuf::from("/images/hello"), Accel::Tcg);
        config.cpus = 3;
        config.memory_mib = 96;
        config.command_line = "toro.log=info greeting=\"a b\"".into();
        config
    }

    fn with_disk(mut config: VmConfig) -> VmConfig {
        config.initrd = Some("/tmp/initrd".into());
        config.disks = vec![crate::disk::Disk { image: "/tmp/disk.img".into(), read_only: true, sector_size: None }];
        config
    }

    fn devices() -> Devices {
        Devices { taps: vec![Tap { name: "toro0".into(), mac: Some("52:54:00:12:34:56".into()), queues: 1 }] }
    }

    #[test]
    fn names_parse_back() {
        for vmm in Vmm::ALL {
            assert_eq!(Vmm::parse(vmm.name()), Some(vmm));
        }
        assert_eq!(Vmm::parse("kvmtool"), None);
    }

    #[test]
    fn firecracker_config_carries_the_options() {
        let text = firecracker_config(&config(), &Devices::default());
        assert!(text.contains("\"kernel_image_path\": \"/images/hello\""));
        assert!(text.contains("\"boot_args\": \"toro.log=info greeting=\\\"a b\\\"\""));
        assert!(text.contains("\"vcpu_count\": 3, \"mem_size_mib\": 96"));
        assert!(text.contains("\"drives\": []"));
        let text = firecracker_config(&with_disk(config()), &devices());
        assert!(
            text.contains("\"boot_args\": \"toro.log=info greeting=\\\"a b\\\"\", \"initrd_path\": \"/tmp/initrd\" }")
        );
        assert!(text.contains(
            "{ \"drive_id\": \"drive0\", \"path_on_host\": \"/tmp/disk.img\", \"is_root_device\": false, \"is_read_only\": true }"
        ));
        assert!(text.contains(
            "{ \"iface_id\": \"net0\", \"host_dev_name\": \"toro0\", \"guest_mac\": \"52:54:00:12:34:56\" }"
        ));
    }

    #[test]
    fn cloud_hypervisor_arguments_carry_the_options() {
        let arguments =
            cloud_hypervisor_arguments(&with_disk(config()), &devices(), Path::new("/tmp/ch.log")).join(" ");
        assert!(
            arguments.starts_with("--kernel /images/hello --cpus boot=3 --memory size=96M --serial tty --console off")
        );
        assert!(arguments.contains("--cmdline toro.log=info greeting=\"a b\""));
        assert!(arguments.contains("--net tap=toro0,mac=52:54:00:12:34:56"));
        assert!(arguments.contains("--disk path=/tmp/disk.img,image_type=raw,readonly=on"));
        assert!(arguments.contains("--initramfs /tmp/initrd"));
        let mut empty = config();
        empty.command_line.clear();
        let arguments = cloud_hypervisor_arguments(&empty, &Devices::default(), Path::new("/l"));
        assert!(!arguments.iter().any(|a| a == "--cmdline"));
    }

    #[test]
    fn the_status_comes_from_the_last_status_line() {
        assert_eq!(status_from_output("Hello\ntoro: exit status 0\n"), Some(0));
        assert_eq!(status_from_output("toro: exit status 3\nboot again\ntoro: exit status 42\r\n"), Some(42));
        assert_eq!(status_from_output("toro: exit status x\n"), None);
        assert_eq!(status_from_output("no status\n"), None);
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
