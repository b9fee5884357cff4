//! The one launcher: builds the QEMU command line for every guest (Toro
//! images and, for benchmarks, the Linux yardstick), so the conditions they
//! run under cannot drift apart, and runs it with a timeout while reading
//! the serial console.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::Accel;
use crate::setup::QEMU;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    Microvm,
    Q35,
}

impl Machine {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "microvm" => Some(Self::Microvm),
            "q35" => Some(Self::Q35),
            _ => None,
        }
    }
}

/// Everything that decides how a guest runs.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Bytes, not text: passed to the kernel as they are.
    pub command_line: std::ffi::OsString,
    pub cpus: u32,
    pub memory_mib: u32,
    pub machine: Machine,
    pub accel: Accel,
    /// Stop at the first instruction and wait for gdb on this TCP port.
    pub gdb_port: Option<u16>,
    /// A virtio network card on QEMU user networking, if any.
    pub network: Option<UserNetwork>,
    /// Split CPUs and memory evenly into this many NUMA nodes (the firmware
    /// then describes them in the ACPI SRAT; q35 only).
    pub numa_nodes: Option<u32>,
    /// Disks attached as virtio-blk, in order.
    pub disks: Vec<crate::disk::Disk>,
    /// Host folders shared over virtio-fs (their virtiofsd already
    /// listening); the guest's RAM is then a shared memory backend.
    pub shares: Vec<crate::share::Share>,
    /// Extra `-device` arguments, as given (`virtio-rng-pci`,
    /// `virtio-rng-device`, ...).
    pub devices: Vec<String>,
    /// More QEMU arguments, appended as they are (devices a test needs).
    pub extra_arguments: Vec<String>,
    /// Under TCG, put `toro.tsc_khz=<the host's TSC frequency>` before
    /// the command line (a Toro image; the Linux guest gets its own
    /// `tsc_early_khz=`). TCG passes the host's TSC through and offers no
    /// CPUID leaf with its rate, so without it Toro calibrates against the
    /// PIT, 0.5-2% off under emulation (docs/time.md).
    pub tsc_khz_hint: bool,
    /// Run the VMM inside this network namespace (`ip netns exec`), where
    /// its taps are (`crate::netns`).
    pub namespace: Option<String>,
}

/// QEMU user-mode networking (slirp: the guest is 10.0.2.15, the gateway
/// 10.0.2.2) with TCP ports forwarded from the host's loopback only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserNetwork {
    /// (host port on 127.0.0.1, guest port) pairs.
    pub tcp_forwards: Vec<(u16, u16)>,
}

impl UserNetwork {
    /// The `-netdev` and `-device` arguments: a virtio-mmio card on microvm,
    /// virtio-pci on q35.
    fn arguments(&self, machine: Machine) -> [String; 4] {
        let mut netdev = String::from("user,id=net0");
        for (host, guest) in &self.tcp_forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        let device = match machine {
            Machine::Microvm => "virtio-net-device,netdev=net0",
            Machine::Q35 => "virtio-net-pci,netdev=net0",
        };
        ["-netdev".into(), netdev, "-device".into(), device.into()]
    }
}

/// The `-netdev`/`-device` arguments for tap cards: virtio-mmio on
/// microvm, virtio-pci on q35 (multi-queue there when the tap has several
/// queues: `mq=on` and the MSI-X vectors it needs, one per queue plus the
/// configuration and control queues).
pub fn tap_arguments(machine: Machine, taps: &[crate::vmm::Tap]) -> Vec<String> {
    let mut arguments = Vec::new();
    for (index, tap) in taps.iter().enumerate() {
        let queues = if tap.queues > 1 { format!(",queues={}", tap.queues) } else { String::new() };
        arguments.push("-netdev".into());
        arguments.push(format!("tap,id=tap{index},ifname={},script=no,downscript=no{queues}", tap.name));
        let mac = tap.mac.as_ref().map(|mac| format!(",mac={mac}")).unwrap_or_default();
        let device = match machine {
            Machine::Microvm => format!("virtio-net-device,netdev=tap{index}{mac}"),
            Machine::Q35 if tap.queues > 1 => {
                format!("virtio-net-pci,netdev=tap{index}{mac},mq=on,vectors={}", 2 * tap.queues + 2)
            }
            Machine::Q35 => format!("virtio-net-pci,netdev=tap{index}{mac}"),
        };
        arguments.push("-device".into());
        arguments.push(device);
    }
    arguments
}

impl VmConfig {
    pub fn new(kernel: PathBuf, accel: Accel) -> Self {
        Self {
            kernel,
            initrd: None,
            command_line: std::ffi::OsString::new(),
            cpus: 2,
            memory_mib: 128,
            machine: Machine::Microvm,
            accel,
            gdb_port: None,
            network: None,
            numa_nodes: None,
            disks: Vec::new(),
            shares: Vec::new(),
            devices: Vec::new(),
            extra_arguments: Vec::new(),
            namespace: None,
            tsc_khz_hint: true,
        }
    }

    /// The kernel command line as QEMU gets it: `command_line`, after
    /// `toro.tsc_khz=` where `tsc_khz_hint` asks for it (first, so that a
    /// `--` in the line keeps it a kernel key; left out when the line
    /// already sets it or the host's frequency cannot be read).
    pub fn effective_command_line(&self) -> std::ffi::OsString {
        let given = self.command_line.as_encoded_bytes();
        let already = given.windows(b"toro.tsc_khz=".len()).any(|window| window == b"toro.tsc_khz=");
        match host_tsc_khz().filter(|_| self.tsc_khz_hint && self.accel == Accel::Tcg && !already) {
            None => self.command_line.clone(),
            Some(khz) => {
                let mut line = std::ffi::OsString::from(format!("toro.tsc_khz={khz}"));
                if !given.is_empty() {
                    line.push(" ");
                    line.push(&self.command_line);
                }
                line
            }
        }
    }

    /// The QEMU command for this configuration.
    pub fn command(&self) -> Command {
        let mut command = crate::netns::wrap(self.namespace.as_deref(), QEMU);
        let mut machine = String::from(match self.machine {
            // PIT on for TSC calibration under TCG; no legacy PIC or RTC.
            Machine::Microvm => "microvm,pit=on,pic=off,rtc=off",
            Machine::Q35 => "q35",
        });
        // virtiofsd maps the guest's RAM: it must be shared memory.
        let numa = self.numa_nodes.filter(|&n| n > 1);
        let shared_ram = !self.shares.is_empty();
        if shared_ram && numa.is_none() {
            machine.push_str(",memory-backend=toro-ram");
        }
        command
            .args(["-machine", &machine])
            .args(["-accel", self.accel.qemu_argument()])
            .args(["-cpu", self.accel.cpu_model()])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &format!("{}M", self.memory_mib)])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .args(["-serial", "stdio"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            // microvm's virtio-mmio devices are legacy (version 1) unless told
            // otherwise; Toro drives version 2 only (docs/virtio.md).
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .arg("-kernel")
            .arg(&self.kernel);
        if let Some(initrd) = &self.initrd {
            command.arg("-initrd").arg(initrd);
        }
        let command_line = self.effective_command_line();
        if !command_line.is_empty() {
            command.arg("-append").arg(command_line);
        }
        if shared_ram && numa.is_none() {
            command.args(["-object", &format!("memory-backend-memfd,id=toro-ram,size={}M,share=on", self.memory_mib)]);
        }
        if let Some(nodes) = numa {
            let cpus_per_node = (self.cpus / nodes).max(1);
            for node in 0..nodes {
                let first = node * cpus_per_node;
                let last = if node + 1 == nodes { self.cpus - 1 } else { first + cpus_per_node - 1 };
                let backend = if shared_ram { "memory-backend-memfd,share=on" } else { "memory-backend-ram" };
                command.args(["-object", &format!("{backend},id=node{node},size={}M", self.memory_mib / nodes)]);
                command.args(["-numa", &format!("node,nodeid={node},cpus={first}-{last},memdev=node{node}")]);
            }
        }
        if let Some(network) = &self.network {
            command.args(network.arguments(self.machine));
        }
        for (index, disk) in self.disks.iter().enumerate() {
            let read_only = if disk.read_only { ",readonly=on" } else { "" };
            let mut drive = std::ffi::OsString::from("file=");
            drive.push(&disk.image);
            drive.push(format!(",if=none,id=disk{index},format=raw,cache=writeback{read_only}"));
            command.arg("-drive").arg(drive);
            let device = match self.machine {
                Machine::Microvm => "virtio-blk-device",
                Machine::Q35 => "virtio-blk-pci",
            };
            let sectors = disk
                .sector_size
                .map(|bytes| format!(",logical_block_size={bytes},physical_block_size={bytes}"))
                .unwrap_or_default();
            command.args(["-device", &format!("{device},drive=disk{index}{sectors}")]);
        }
        command.args(crate::share::device_arguments(self.machine, &self.shares));
        for device in &self.devices {
            command.args(["-device", device]);
        }
        command.args(&self.extra_arguments);
        if let Some(port) = self.gdb_port {
            command.args(["-gdb", &format!("tcp:127.0.0.1:{port}"), "-S"]);
        }
        command
    }
}

/// The host's TSC frequency in kHz, read once (`None` if it cannot be).
fn host_tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| crate::linux_guest::host_tsc_khz().ok())
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote this status to `isa-debug-exit`.
    Exited(i32),
    /// QEMU ended with status 0: the guest reset or powered off without an
    /// exit status (a triple fault ends this way, with `-no-reboot`).
    NoStatus,
    /// QEMU itself failed (bad option, missing file).
    QemuFailed(i32),
    /// Killed after the timeout.
    TimedOut,
}

impl Outcome {
    /// The status the host tool should exit with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Exited(status) => *status,
            Self::NoStatus => 124,
            Self::QemuFailed(_) => 125,
            Self::TimedOut => 124,
        }
    }

    fn from_qemu(code: Option<i32>) -> Self {
        match code {
            Some(code) if code & 1 == 1 => Self::Exited(code >> 1),
            Some(0) => Self::NoStatus,
            Some(code) => Self::QemuFailed(code),
            None => Self::TimedOut,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "exit status {status}"),
            Self::NoStatus => write!(f, "the VM stopped without an exit status (reset or triple fault?)"),
            Self::QemuFailed(code) => write!(f, "QEMU failed with status {code}"),
            Self::TimedOut => write!(f, "timed out"),
        }
    }
}

/// The result of one run.
pub struct RunResult {
    pub outcome: Outcome,
    /// Everything the guest printed (after symbolisation).
    pub output: String,
    /// Wall time of the VMM process.
    pub wall: Duration,
    /// When the first line of output arrived, from the VMM's start.
    pub first_line: Option<Duration>,
    /// The VMM went on after the kernel's `toro: exit status` line and was
    /// killed (cloud-hypervisor rebooting, say); always false for QEMU.
    pub lingered: bool,
}

/// Runs `config`; each line of serial output goes through `annotate`, then
/// to our stdout if `echo`. Kills QEMU after `timeout`.
pub fn run(
    config: &VmConfig,
    timeout: Option<Duration>,
    echo: bool,
    annotate: &dyn Fn(&str) -> String,
) -> Result<RunResult> {
    run_within(config, timeout, None, echo, annotate)
}

/// [`run`], ending the run as timed out (with `first_line` `None`) if the
/// guest printed nothing within `first_line_within`.
pub fn run_within(
    config: &VmConfig,
    timeout: Option<Duration>,
    first_line_within: Option<Duration>,
    echo: bool,
    annotate: &dyn Fn(&str) -> String,
) -> Result<RunResult> {
    let process = run_process_within(
        config.command(),
        QEMU,
        timeout,
        first_line_within,
        echo,
        annotate,
        &|_| false,
        LAST_LINE_GRACE,
    )?;
    let outcome = if process.timed_out { Outcome::TimedOut } else { Outcome::from_qemu(process.code) };
    if let Outcome::QemuFailed(code) = outcome {
        bail!("{QEMU} failed (exit status {code}): {}", process.errors.trim());
    }
    if !process.errors.trim().is_empty() {
        eprintln!("{}", process.errors.trim_end());
    }
    Ok(RunResult {
        outcome,
        output: process.output,
        wall: process.wall,
        first_line: process.first_line,
        lingered: false,
    })
}

/// What a VMM process did, from [`run_process`].
pub struct Process {
    /// Its exit code (`None` if killed by a signal, or by us).
    pub code: Option<i32>,
    /// Killed after the timeout.
    pub timed_out: bool,
    /// Killed because it went on after a line `last_line` accepted.
    pub lingered: bool,
    /// Everything it printed on stdout (after `annotate`).
    pub output: String,
    /// What it printed on stderr.
    pub errors: String,
    /// Its wall time.
    pub wall: Duration,
    /// When the first line arrived, from its start.
    pub first_line: Option<Duration>,
}

/// How long a VMM may go on after the guest's last line before it is killed.
pub const LAST_LINE_GRACE: Duration = Duration::from_secs(3);

/// Runs QEMU until the guest prints a line containing `marker`, then
/// kills it at once (SIGKILL: no shutdown, nothing more from the guest),
/// as a power cut would: for tests of what survives a crash. The result's
/// `lingered` says it was killed there; its outcome is then `TimedOut`.
pub fn run_killed_at(
    config: &VmConfig,
    timeout: Option<Duration>,
    annotate: &dyn Fn(&str) -> String,
    marker: &str,
) -> Result<RunResult> {
    let process =
        run_process(config.command(), QEMU, timeout, false, annotate, &|line| line.contains(marker), Duration::ZERO)?;
    Ok(RunResult {
        outcome: if process.lingered { Outcome::TimedOut } else { Outcome::from_qemu(process.code) },
        output: process.output,
        wall: process.wall,
        first_line: process.first_line,
        lingered: process.lingered,
    })
}

/// Starts `command` (the VMM `program`) with piped output and reads its
/// lines as [`run`] describes; kills it after `timeout`, or `grace` after
/// a line for which `last_line` is true.
pub fn run_process(
    command: Command,
    program: &str,
    timeout: Option<Duration>,
    echo: bool,
    annotate: &dyn Fn(&str) -> String,
    last_line: &dyn Fn(&str) -> bool,
    grace: Duration,
) -> Result<Process> {
    run_process_within(command, program, timeout, None, echo, annotate, last_line, grace)
}

/// [`run_process`], also killing the VMM (as timed out) if it printed no
/// line within `first_line_within` of its start.
#[allow(clippy::too_many_arguments)]
pub fn run_process_within(
    mut command: Command,
    program: &str,
    timeout: Option<Duration>,
    first_line_within: Option<Duration>,
    echo: bool,
    annotate: &dyn Fn(&str) -> String,
    last_line: &dyn Fn(&str) -> bool,
    grace: Duration,
) -> Result<Process> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {program}"))?;
    let (lines_rx, reader, errors) = read_output(&mut child);
    let mut output = String::new();
    let mut first_line = None;
    let (mut timed_out, mut lingered) = (false, false);
    let mut deadline = match (timeout, first_line_within) {
        (Some(t), Some(f)) => Some(start + t.min(f)),
        (t, f) => t.or(f).map(|t| start + t),
    };
    let mut after_last_line = false;
    loop {
        let wait = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match lines_rx.recv_timeout(wait) {
            Ok((when, line)) => {
                if first_line.is_none() && first_line_within.is_some() {
                    // The first line came: the whole run's timeout again.
                    deadline = timeout.map(|t| start + t);
                }
                first_line.get_or_insert(when - start);
                if last_line(&line) && !after_last_line {
                    after_last_line = true;
                    let grace = Instant::now() + grace;
                    deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
                }
                let line = annotate(&line);
                if echo {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                }
                output.push_str(&line);
                output.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    if after_last_line {
                        lingered = true;
                    } else {
                        timed_out = true;
                    }
                    kill(&mut child);
                    break;
                }
            }
        }
    }
    let status = child.wait()?;
    let wall = start.elapsed();
    let _ = reader.join();
    let errors = errors.join().unwrap_or_default();
    let code = if timed_out || lingered { None } else { status.code() };
    Ok(Process { code, timed_out, lingered, output, errors, wall, first_line })
}

/// Reads a started QEMU's piped stdout line by line (with the time each
/// line arrived) and its stderr whole, each on a thread of its own: a full
/// pipe would stall the guest's serial port. Returns the lines, and the two
/// reader threads (the second gives stderr's text).
pub fn read_output(
    child: &mut Child,
) -> (mpsc::Receiver<(Instant, String)>, std::thread::JoinHandle<()>, std::thread::JoinHandle<String>) {
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (lines_tx, lines_rx) = mpsc::channel::<(Instant, String)>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
                    if lines_tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    (lines_rx, reader, errors)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
}

/// The 2 MiB pieces of a running QEMU's guest RAM that the host has
/// backed with memory (a page of them present in `/proc/PID/pagemap`), as
/// offsets in MiB from the RAM's start. QEMU backs RAM with transparent
/// huge pages: each piece the guest first touches is a host fault that
/// zeroes it, and its 2 MiB stay in QEMU's resident memory. The RAM is the
/// first mapping of `ram_mib` MiB (or up to 2 MiB more, QEMU's alignment).
pub fn guest_ram_touched(pid: u32, ram_mib: u32) -> Result<Vec<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    const PIECE: u64 = 2 << 20;
    const PAGE: u64 = 4096;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).context("reading QEMU's smaps")?;
    let ram_bytes = u64::from(ram_mib) << 20;
    let Some((start, _)) = ram_mapping(&smaps, ram_bytes) else {
        bail!("no mapping of {ram_mib} MiB in QEMU's smaps");
    };
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).context("opening QEMU's pagemap")?;
    let mut touched = Vec::new();
    let mut entries = vec![0u8; (PIECE / PAGE * 8) as usize];
    for piece in (0..ram_bytes).step_by(PIECE as usize) {
        pagemap.seek(SeekFrom::Start((start + piece) / PAGE * 8))?;
        pagemap.read_exact(&mut entries).context("reading QEMU's pagemap")?;
        // Bit 63 of an entry: the page is present.
        if entries.chunks_exact(8).any(|entry| entry[7] & 0x80 != 0) {
            touched.push(piece >> 20);
        }
    }
    Ok(touched)
}

/// The first mapping in `smaps` of `bytes` to `bytes` + 2 MiB: its
/// start and end addresses.
fn ram_mapping(smaps: &str, bytes: u64) -> Option<(u64, u64)> {
    let mut current = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Size:"), Some(kib)) => {
                let size = kib.parse::<u64>().ok()? << 10;
                if let Some(range) = current.filter(|_| (bytes..=bytes + (2 << 20)).contains(&size)) {
                    return Some(range);
                }
            }
            (Some(range), Some(_)) if !range.ends_with(':') => {
                let (start, end) = range.split_once('-')?;
                current = Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn finds_the_guest_ram_mapping_in_smaps() {
        let smaps = "\
55d0c0000000-55d0c0200000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                   8 kB
7f3a00000000-7f3a08200000 rw-p 00000000 00:00 0 
Size:             133120 kB
AnonHugePages:     14336 kB
7f3b00000000-7f3b08000000 rw-p 00000000 00:00 0 
Size:             131072 kB
";
        assert_eq!(ram_mapping(smaps, 128 << 20), Some((0x7f3a_0000_0000, 0x7f3a_0820_0000)));
        assert_eq!(ram_mapping(smaps, 2 << 20), Some((0x55d0_c000_0000, 0x55d0_c020_0000)));
        assert_eq!(ram_mapping(smaps, 512 << 20), None);
        assert_eq!(ram_mapping("garbage\nSize: x kB\n", 128 << 20), None);
    }
    use super::*;

    /// `script` run by `sh`, with a 30 s timeout and 300 ms for its first line.
    fn run_shell(script: &str) -> Process {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        let (timeout, first_line) = (Duration::from_secs(30), Duration::from_millis(300));
        run_process_within(
            command,
            "sh",
            Some(timeout),
            Some(first_line),
            false,
            &|l| l.to_string(),
            &|_| false,
            Duration::ZERO,
        )
        .unwrap()
    }

    #[test]
    fn a_silent_process_is_ended_at_the_first_line_limit() {
        let started = Instant::now();
        let process = run_shell("exec sleep 20");
        assert!(process.timed_out);
        assert!(process.first_line.is_none());
        assert!(started.elapsed() < Duration::from_secs(10), "killed at the first-line limit, not the timeout");
    }

    #[test]
    fn a_process_that_printed_runs_on_past_the_first_line_limit() {
        let process = run_shell("echo up; sleep 1; echo done");
        assert!(!process.timed_out);
        assert_eq!(process.output, "up\ndone\n");
        assert_eq!(process.code, Some(0));
    }

    #[test]
    fn decodes_debug_exit_statuses() {
        assert_eq!(Outcome::from_qemu(Some(1)), Outcome::Exited(0));
        assert_eq!(Outcome::from_qemu(Some(85)), Outcome::Exited(42));
        assert_eq!(Outcome::from_qemu(Some(203)), Outcome::Exited(101));
        assert_eq!(Outcome::from_qemu(Some(0)), Outcome::NoStatus);
        assert_eq!(Outcome::from_qemu(Some(2)), Outcome::QemuFailed(2));
        assert_eq!(Outcome::from_qemu(None), Outcome::TimedOut);
    }

    #[test]
    fn command_line_names_machine_accel_and_exit_device() {
        let mut config = VmConfig::new(PathBuf::from("/tmp/image"), Accel::Tcg);
        config.command_line = "toro.log=debug".into();
        let command = config.command();
        let arguments: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = arguments.join(" ");
        assert!(joined.contains("-machine microvm"));
        assert!(joined.contains("-accel tcg,thread=multi"));
        assert!(joined.contains("isa-debug-exit,iobase=0xf4,iosize=0x04"));
        // After the host's `toro.tsc_khz=` under TCG (when it can be read).
        assert!(joined.contains("-append toro.log=debug") || joined.contains(" toro.log=debug"));
        let append = arguments.iter().position(|a| a == "-append").map(|i| &arguments[i + 1]);
        assert!(append.is_some_and(|line| line.ends_with("toro.log=debug")), "{append:?}");
        assert!(joined.contains("-smp 2"));
        assert!(!joined.contains("-netdev"));
    }

    #[test]
    fn toro_images_under_tcg_are_told_the_host_tsc_frequency() {
        let Some(khz) = host_tsc_khz() else { return };
        let mut config = VmConfig::new(PathBuf::from("/tmp/image"), Accel::Tcg);
        assert_eq!(config.effective_command_line(), format!("toro.tsc_khz={khz}").as_str());
        config.command_line = "toro.log=info -- app".into();
        assert_eq!(config.effective_command_line(), format!("toro.tsc_khz={khz} toro.log=info -- app").as_str());
        config.command_line = "toro.tsc_khz=1000000".into();
        assert_eq!(config.effective_command_line(), "toro.tsc_khz=1000000", "the user's value stays alone");
        config.command_line = "toro.log=info".into();
        config.tsc_khz_hint = false;
        assert_eq!(config.effective_command_line(), "toro.log=info");
        config.tsc_khz_hint = true;
        config.accel = Accel::Kvm;
        assert_eq!(config.effective_command_line(), "toro.log=info", "KVM offers the frequency itself");
    }

    #[test]
    fn tap_cards_are_virtio_mmio_on_microvm_and_pci_on_q35() {
        let mut tap = crate::vmm::Tap::new("tap0");
        let joined = tap_arguments(Machine::Microvm, std::slice::from_ref(&tap)).join(" ");
        assert_eq!(
            joined,
            "-netdev tap,id=tap0,ifname=tap0,script=no,downscript=no -device virtio-net-device,netdev=tap0"
        );
        tap.queues = 4;
        tap.mac = Some("52:54:00:00:00:02".into());
        let joined = tap_arguments(Machine::Q35, &[tap]).join(" ");
        assert!(joined.contains("ifname=tap0,script=no,downscript=no,queues=4"));
        assert!(joined.ends_with("virtio-net-pci,netdev=tap0,mac=52:54:00:00:00:02,mq=on,vectors=10"));
        let mut config = VmConfig::new(PathBuf::from("/k"), Accel::Tcg);
        config.namespace = Some("toro-x-1".into());
        let command = config.command();
        assert_eq!(command.get_program(), "ip");
        assert_eq!(command.get_args().take(4).collect::<Vec<_>>(), ["netns", "exec", "toro-x-1", QEMU]);
    }

    #[test]
    fn user_network_forwards_from_loopback_only() {
        let mut config = VmConfig::new(PathBuf::from("/tmp/image"), Accel::Tcg);
        config.network = Some(UserNetwork { tcp_forwards: vec![(18080, 80)] });
        let arguments: Vec<String> = config.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = arguments.join(" ");
        assert!(joined.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:18080-:80"));
        assert!(joined.contains("-device virtio-net-device,netdev=net0"));
    }

    #[test]
    fn disks_attach_as_virtio_blk_on_either_machine() {
        let mut config = VmConfig::new(PathBuf::from("/tmp/image"), Accel::Tcg);
        config.disks = vec![
            crate::disk::Disk { image: PathBuf::from("/tmp/a.img"), read_only: false, sector_size: None },
            crate::disk::Disk { image: PathBuf::from("/tmp/b.img"), read_only: true, sector_size: Some(4096) },
        ];
        let joined = |config: &VmConfig| {
            config.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        };
        let microvm = joined(&config);
        assert!(microvm.contains(
            "-drive file=/tmp/a.img,if=none,id=disk0,format=raw,cache=writeback -device virtio-blk-device,drive=disk0"
        ));
        assert!(
            microvm.contains("id=disk1,format=raw,cache=writeback,readonly=on -device virtio-blk-device,drive=disk1,logical_block_size=4096,physical_block_size=4096")
        );
        config.machine = Machine::Q35;
        assert!(joined(&config).contains("-device virtio-blk-pci,drive=disk0"));
    }
}
