//! `cargo xtask bench`: the same workloads on Toro and on the Linux guest
//! yardstick (`linux_guest.rs`), in the same run, under the same launcher
//! (`qemu.rs`: same QEMU, accelerator, machine, vCPUs and memory), repeated;
//! prints one table (median, min–max, Linux/Toro), writes a JSON record to
//! `target/bench/` and, for full runs, refreshes `docs/benchmarks.md` and
//! its plots.
//!
//! ```text
//! cargo xtask bench [--runs N] [--quick] [--only ROWS]
//! ```
//!
//! `--only ROWS` (comma-separated row keys, `prefix*` allowed; `only.rs`)
//! measures only those rows and leaves `docs/` alone.
//!
//! The metrics, all lower-is-better:
//!
//! - boot: QEMU start to the first line the application prints (Toro's
//!   `hello`) or `/init` prints (Linux, which keeps its own log off the
//!   console with `loglevel=1`), from `qemu::RunResult::first_line`;
//! - first HTTP 200: QEMU start to the first `200` from Toro's
//!   `examples/webserver` and from the guest's nginx through QEMU user
//!   networking (hostfwd on 127.0.0.1), [`HTTP_BOOTS_PER_RUN`] boots per
//!   run and side (the first of them then takes the wrk load below);
//! - HTTP under load: wrk on the host (2 threads, 16 keep-alive
//!   connections, 5 s) against each server through that same forward: the
//!   wall time per request (1/throughput) and the 99th percentile latency;
//!   over each wrk run (here and in `net.rs`), wrk's and QEMU's host CPU
//!   in cores, a note under the tables (`net::HostCpu`);
//! - smallest `-m` that works, by bisection: Toro's `hello` exits 0, Linux
//!   answers HTTP;
//! - host CPU time (user + system, `/proc/PID/stat`) of the idle VM over
//!   10 s, from 2 s after it printed its first line;
//! - image size: Toro's ELF stripped, Linux's vmlinux plus initramfs.
//!
//! Then the allocation and thread/message workloads (`workloads.rs`):
//! Toro's `examples/bench` against the static Linux programs of
//! `bench/linux` run by the guest's `/init` in bench mode, each a fresh
//! boot per run; every figure read from `BENCH` lines. Full runs also run
//! those Linux programs host-native, shown apart and marked as not the
//! comparison.
//!
//! `--quick` (the test suite's mode) runs each once, shortens the idle
//! window to 1 s and every workload to 15 ms, skips the memory bisection
//! and the host-native runs, and leaves `docs/` alone: it checks that the
//! benchmark works, never its speed.

mod net;
mod only;
mod report;
mod stats;
mod storage;
mod vm;
mod workloads;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::accel::Accel;
use crate::linux_guest::{self, LinuxGuest, Mode, GUEST_HTTP_PORT, INIT_MARKER};
use crate::qemu::{self, Outcome, UserNetwork, VmConfig};
use crate::vmm::{self, Vmm};

use only::Only;
use report::{Metric, Side};
use vm::RunningVm;
use workloads::{Reading, Source, Workload};

/// The sides of the main table's runs, by index.
const SOURCES: [Source; 2] = [Source::Toro, Source::Linux];
/// The idle window for full runs.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The idle window in `--quick` mode.
const QUICK_IDLE_WINDOW: Duration = Duration::from_secs(1);
/// How long after its first line a guest is left to settle before the idle
/// window opens: Linux is still finishing deferred boot work when `/init`
/// starts (measured here: 50 ms of host CPU in the first second after the
/// marker, then about 10 ms a second), and boot is measured separately.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// Longest a Toro run may take before it counts as failed.
const TORO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a Linux run may take to reach its marker or first HTTP answer
/// (about 4 s is normal here).
const LINUX_TIMEOUT: Duration = Duration::from_secs(60);
/// Per probe of the memory bisection: a guest short of memory may hang.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one run of the workloads may take: Toro's takes about 3 s here,
/// the Linux guest's about 15 s (boot included).
const TORO_WORKLOADS_TIMEOUT: Duration = Duration::from_secs(90);
const LINUX_WORKLOADS_TIMEOUT: Duration = Duration::from_secs(240);
/// What Toro's `bench` reads to shorten its workloads.
const TORO_QUICK_ARGUMENT: &str = "bench.quick=1";
/// The bisection's range in MiB; the top is the launcher's default `-m`.
/// Toro's image is loaded at 1 MiB, so it needs more than 1 MiB (with
/// `-m 1` the run only times out).
const TORO_MEMORY_RANGE: (u32, u32) = (2, 128);
const LINUX_MEMORY_RANGE: (u32, u32) = (64, 128);
/// What the Toro `hello` example prints first.
const HELLO_LINE: &str = "Hello from Toro!";
const DEFAULT_RUNS: usize = 5;
/// Runs of the allocation and thread/message workloads in full runs (at
/// least): their medians are compared to a few percent, and a single boot
/// can be disturbed by the host.
const WORKLOAD_RUNS: usize = 9;
/// The command line of the boots on Firecracker and cloud-hypervisor.
const VMM_BOOT_COMMAND_LINE: &str = "toro.log=error";
/// wrk's load in full runs (threads, connections, duration) and in quick mode.
const HTTP_LOAD: (u32, u32, Duration) = (2, 16, Duration::from_secs(5));
const HTTP_LOAD_QUICK: (u32, u32, Duration) = (1, 4, Duration::from_secs(1));
/// Boots per run and side for the first HTTP 200 (1 with `--quick`): a
/// boot's figure moves by 10-20% with the host's moment (Toro's 61-79 ms
/// over 12 runs), so 5 runs' median moved by as much between full runs;
/// 15 boots' median moves less. Only each run's first boot takes wrk's
/// load (the other rows keep one sample per run).
const HTTP_BOOTS_PER_RUN: usize = 3;
const _: () = assert!(HTTP_BOOTS_PER_RUN == 3, "the first-200 row's title says 3 boots a run");
/// wrk's load over a tap in full runs: the issue's 30 connections.
const HTTP_TAP_LOAD: (u32, u32, Duration) = (2, 30, Duration::from_secs(5));
/// Runs of the boot on Firecracker and cloud-hypervisor (at least).
const VMM_BOOT_RUNS: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub runs: usize,
    pub quick: bool,
    pub only: Only,
}

fn parse_options(arguments: &[String]) -> Result<Options> {
    let mut options = Options { runs: DEFAULT_RUNS, quick: false, only: Only::all() };
    let mut runs_given = false;
    let mut iterator = arguments.iter();
    while let Some(argument) = iterator.next() {
        match argument.as_str() {
            "--quick" => options.quick = true,
            "--runs" => {
                options.runs =
                    iterator.next().context("--runs needs a number")?.parse().context("--runs takes a number")?;
                runs_given = true;
            }
            "--only" => options.only = Only::parse(iterator.next().context("--only needs ROWS")?, &known_rows())?,
            other => bail!("unknown option {other:?}: cargo xtask bench [--runs N] [--quick] [--only ROWS]"),
        }
    }
    if options.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if options.quick && !runs_given {
        options.runs = 1;
    }
    Ok(options)
}

/// Every row `--only` can name: the sections' and the workloads'.
fn known_rows() -> Vec<&'static str> {
    let sections = [
        only::BOOT,
        only::VMM_BOOT,
        only::HTTP,
        only::HTTP_TAP,
        only::HTTP_DISK,
        only::MEMORY,
        only::IDLE,
        only::IMAGE,
    ];
    sections.concat().into_iter().chain(workloads::keys()).chain(storage::keys()).chain(net::keys()).collect()
}

/// `cargo xtask bench ...`
pub fn bench(arguments: &[String]) -> Result<ExitCode> {
    let options = parse_options(arguments)?;
    let command = ["cargo", "xtask", "bench"].iter().map(|s| s.to_string()).chain(arguments.iter().cloned());
    let command = command.collect::<Vec<_>>().join(" ");
    let failures = run(&options, &command)?;
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The test suite's check: the quick mode runs and every workload works.
pub fn quick_check() -> Result<()> {
    let options = Options { runs: 1, quick: true, only: Only::all() };
    let failures = run(&options, "cargo xtask bench --quick (from cargo xtask test)")?;
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// What the runs share.
struct Bench {
    accel: Accel,
    hello: PathBuf,
    idle: Option<PathBuf>,
    /// Toro's workloads (`examples/bench`).
    workloads: PathBuf,
    /// Toro's web server (`examples/webserver`), beside the guest's nginx.
    webserver: PathBuf,
    /// Toro's storage workloads (`examples/diskbench`).
    diskbench: PathBuf,
    /// Toro's TCP echo server (`examples/echo`), for the echo row.
    echo: PathBuf,
    linux: LinuxGuest,
    /// The Linux workload programs, to run host-native too.
    linux_programs: Vec<PathBuf>,
    /// Runs that failed, with why.
    failures: Vec<String>,
    /// The rows to measure (`--only`).
    only: Only,
    /// The host's CPU over every wrk run (wrk's and QEMU's).
    host_cpu: Vec<net::HostCpu>,
}

/// Runs everything; returns the runs that failed, with why.
fn run(options: &Options, command: &str) -> Result<Vec<String>> {
    let began = Instant::now();
    let started_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let load_average = load_average();
    if load_average > 0.5 {
        eprintln!("bench: warning: the host's load average is {load_average:.2}: other work on its cores will disturb the figures");
    }
    crate::setup::ensure()?;
    let accel = crate::choose_accel(None);

    // Toro images: hello, and the idle application once it exists.
    let root = crate::build::workspace_root();
    let has_idle = root.join("examples/idle/Cargo.toml").is_file()
        && std::fs::read_to_string(root.join("Cargo.toml")).is_ok_and(|text| text.contains("\"examples/idle\""));
    let mut specs = vec![
        crate::build::example("hello"),
        crate::build::example("bench"),
        crate::build::example("webserver"),
        crate::build::example("diskbench"),
        crate::build::example("echo"),
    ];
    if has_idle {
        specs.push(crate::build::example("idle"));
    }
    let mut images = crate::build::build(&specs, false)?.into_iter();
    let hello = images.next().expect("hello was built");
    let workloads = images.next().expect("bench was built");
    let webserver = images.next().expect("webserver was built");
    let diskbench = images.next().expect("diskbench was built");
    let echo = images.next().expect("echo was built");
    let idle = images.next();

    let linux = linux_guest::ensure()?;
    let (linux, linux_programs) = linux_guest::ensure_bench(&linux)?;
    let mut bench = Bench {
        accel,
        hello,
        idle,
        workloads,
        webserver,
        diskbench,
        echo,
        linux,
        linux_programs,
        failures: Vec::new(),
        only: options.only.clone(),
        host_cpu: Vec::new(),
    };
    let only = &options.only;
    let runs = options.runs;
    eprintln!(
        "bench: {runs} run(s) per side{}; Linux guest {} ({} + {})",
        if options.quick { ", quick mode" } else { "" },
        bench.linux.release,
        bench.linux.vmlinux.display(),
        bench.linux.initramfs.display()
    );

    let mut metrics = Vec::new();
    if only.wants_any(only::BOOT) {
        metrics.push(bench.boot(runs));
    }
    // The other VMMs: median of at least 10 (one in quick mode).
    let vmm_runs = if options.quick { 1 } else { runs.max(VMM_BOOT_RUNS) };
    for vmm in [Vmm::Firecracker, Vmm::CloudHypervisor].into_iter().filter(|_| only.wants_any(only::VMM_BOOT)) {
        metrics.extend(bench.vmm_boot(vmm_runs, vmm));
    }
    if only.wants_any(only::HTTP) {
        metrics.extend(bench.http(runs, options.quick));
    }
    if only.wants_any(only::HTTP_TAP) {
        metrics.extend(bench.http_tap(runs, options.quick));
    }
    if only.wants_any(only::HTTP_DISK) {
        metrics.push(bench.files_served(runs, options.quick));
    }
    metrics.push(if options.quick || !only.wants_any(only::MEMORY) {
        Metric {
            key: "memory",
            title: "smallest -m that works",
            unit: "MiB",
            toro: Side::Missing(if options.quick { "skipped (--quick)" } else { "skipped (--only)" }.into()),
            linux: Side::Missing(if options.quick { "skipped (--quick)" } else { "skipped (--only)" }.into()),
        }
    } else {
        bench.memory()
    });
    let window = if options.quick { QUICK_IDLE_WINDOW } else { IDLE_WINDOW };
    if only.wants_any(only::IDLE) {
        metrics.push(bench.idle(runs, window));
    }
    if only.wants_any(only::IMAGE) {
        metrics.push(bench.image_size()?);
    }
    // Full runs: at least WORKLOAD_RUNS of the workloads.
    let workload_runs = if options.quick { runs } else { runs.max(WORKLOAD_RUNS) };
    let mut workloads = bench.workloads(workload_runs, options.quick);
    if only.wants_any(&storage::keys()) {
        workloads.extend(bench.storage(runs, options.quick));
    }
    if only.wants_any(&net::keys()) {
        workloads.extend(bench.network(runs, options.quick, &|key| only.wants(key)));
    }

    let context = report::Context {
        timestamp: report::iso8601(started_at),
        command: command.to_string(),
        runs,
        quick: options.quick,
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model: cpu_model(),
        qemu_version: qemu_version(),
        accelerator: accel.to_string(),
        vm: describe_vm(&VmConfig::new(PathBuf::new(), accel)),
        linux_kernel: bench.linux.release.clone(),
        linux_command_line: bench.linux.command_line(Mode::Serve),
        linux_bench_command_line: bench.linux.command_line(Mode::Bench { quick: options.quick }),
        linux_manifest: bench.linux.manifest.clone(),
        host_tsc_khz: bench.linux.tsc_khz,
        load_average,
        duration_seconds: began.elapsed().as_secs_f64(),
    };

    println!();
    print!("{}", report::table(&metrics));
    println!("(median of {runs} run(s), min–max in brackets; Linux/Toro: how many times lower Toro's figure is)");
    println!();
    print!("{}", workloads::table(&workloads));
    println!(
        "(median of {runs} run(s), min–max in brackets; Toro's advantage: how many times better Toro's median is, \
         Linux/Toro for times, Toro/Linux for rates)"
    );
    let host_cpu = net::host_cpu_notes(&bench.host_cpu, context.cpus);
    if !host_cpu.is_empty() {
        println!(
            "host CPU during each wrk run (median cores: CPU s / wall s; wrk + QEMU near {} means the host was full):",
            context.cpus
        );
        for note in &host_cpu {
            println!("  {note}");
        }
    }
    if !options.quick {
        println!();
        println!("host-native Linux, outside any VM: for orientation only, NOT the comparison");
        print!("{}", workloads::host_table(&workloads));
    }
    let record = write_record(&context, &metrics, &workloads, &bench.host_cpu)?;
    println!("record: {}", record.display());
    if !options.quick && only.is_all() {
        let document = write_docs(&context, &metrics, &workloads, &host_cpu)?;
        println!("docs: {}", document.display());
    }
    for failure in &bench.failures {
        eprintln!("bench: FAILED: {failure}");
    }
    eprintln!("bench: took {:.0} s", began.elapsed().as_secs_f64());
    Ok(bench.failures)
}

impl Bench {
    fn fail(&mut self, what: String) -> f64 {
        eprintln!("bench: {what}");
        self.failures.push(what);
        f64::NAN
    }

    // -- boot --------------------------------------------------------------

    fn boot(&mut self, runs: usize) -> Metric {
        let (mut toro, mut linux) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let toro_ms = self.toro_boot_ms();
            let linux_ms = self.linux_boot_ms();
            eprintln!("bench: boot {run}/{runs}: Toro {}, Linux {}", shown(toro_ms), shown(linux_ms));
            toro.push(toro_ms);
            linux.push(linux_ms);
        }
        Metric {
            key: "boot",
            title: "boot: QEMU start to first line",
            unit: "ms",
            toro: Side::measured(toro),
            linux: Side::measured(linux),
        }
    }

    /// QEMU start to `hello`'s first line, which must be its greeting; the
    /// run must end with exit status 0.
    fn toro_boot_ms(&mut self) -> f64 {
        let config = VmConfig::new(self.hello.clone(), self.accel);
        match qemu::run(&config, Some(TORO_TIMEOUT), false, &|line| line.to_string()) {
            Err(error) => self.fail(format!("Toro boot: {error:#}")),
            Ok(result) => {
                let first = result.output.lines().next().unwrap_or("");
                match (result.outcome, result.first_line) {
                    (Outcome::Exited(0), Some(time)) if first.contains(HELLO_LINE) => milliseconds(time),
                    (outcome, _) => self.fail(format!(
                        "Toro boot: {outcome}, first line {first:?} (expected {HELLO_LINE:?})\n{}",
                        tail(&result.output)
                    )),
                }
            }
        }
    }

    /// QEMU start to `/init`'s marker, which must be the first line; `/init`
    /// then ends the VM with status 0.
    fn linux_boot_ms(&mut self) -> f64 {
        let config = self.linux.vm_config(self.accel, Mode::Boot);
        match linux_guest::run("bench: Linux boot", &config, LINUX_TIMEOUT) {
            Err(error) => self.fail(format!("Linux boot: {error:#}")),
            Ok(result) => {
                let first = result.output.lines().next().unwrap_or("");
                match (result.outcome, result.first_line) {
                    (Outcome::Exited(0), Some(time)) if first == INIT_MARKER => milliseconds(time),
                    (outcome, _) => self.fail(format!(
                        "Linux boot: {outcome}, first line {first:?} (expected the /init marker)\n{}",
                        tail(&result.output)
                    )),
                }
            }
        }
    }

    // -- boot on Firecracker and cloud-hypervisor --------------------------

    /// Toro's `hello` on `vmm`: VMM start to the first line (the greeting)
    /// and to the VMM's exit (status 0 from the kernel's last line). The
    /// Linux guest runs on QEMU only; a VMM that is not found is skipped.
    fn vmm_boot(&mut self, runs: usize, vmm: Vmm) -> [Metric; 2] {
        let (first_key, first_title, exit_key, exit_title) = match vmm {
            Vmm::Firecracker => (
                "boot-firecracker",
                "boot: Firecracker start to first line",
                "exit-firecracker",
                "boot: Firecracker start to exit",
            ),
            _ => (
                "boot-cloud-hypervisor",
                "boot: cloud-hypervisor start to first line",
                "exit-cloud-hypervisor",
                "boot: cloud-hypervisor start to exit",
            ),
        };
        let linux = || Side::Missing("n/a — the Linux guest runs on QEMU only".into());
        let metric = |key, title, toro| Metric { key, title, unit: "ms", toro, linux: linux() };
        if let Err(error) = vmm::locate(vmm) {
            let skipped = || Side::Missing(format!("skipped: {error:#}"));
            return [metric(first_key, first_title, skipped()), metric(exit_key, exit_title, skipped())];
        }
        let (mut first, mut exit) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let mut config = VmConfig::new(self.hello.clone(), Accel::Kvm);
            // Kernel warnings off (these VMMs have no RTC, which is warned
            // about): the first line is then the application's.
            config.command_line = VMM_BOOT_COMMAND_LINE.into();
            let result =
                vmm::run(vmm, &config, &vmm::Devices::default(), Some(TORO_TIMEOUT), false, &|l| l.to_string());
            let (first_ms, exit_ms) = match result {
                Err(error) => (self.fail(format!("Toro boot on {vmm}: {error:#}")), f64::NAN),
                Ok(result) => {
                    let line = result.output.lines().next().unwrap_or("");
                    match (result.outcome, result.first_line, result.lingered) {
                        (Outcome::Exited(0), Some(time), false) if line.contains(HELLO_LINE) => {
                            (milliseconds(time), milliseconds(result.wall))
                        }
                        (outcome, _, lingered) => (
                            self.fail(format!(
                                "Toro boot on {vmm}: {outcome}{}, first line {line:?}\n{}",
                                if lingered { " (did not stop)" } else { "" },
                                tail(&result.output)
                            )),
                            f64::NAN,
                        ),
                    }
                }
            };
            eprintln!("bench: boot on {vmm} {run}/{runs}: first line {}, exit {}", shown(first_ms), shown(exit_ms));
            first.push(first_ms);
            exit.push(exit_ms);
        }
        [metric(first_key, first_title, Side::measured(first)), metric(exit_key, exit_title, Side::measured(exit))]
    }

    // -- first HTTP answer -------------------------------------------------

    /// QEMU start to the first 200 and, once both answer, wrk's load:
    /// Toro's `examples/webserver` beside the guest's nginx (2 vCPUs each,
    /// the same 612-byte page, the same user-networking backend with a
    /// forwarded loopback port; wrk runs on the host).
    fn http(&mut self, runs: usize, quick: bool) -> Vec<Metric> {
        let (threads, connections, window) = if quick { HTTP_LOAD_QUICK } else { HTTP_LOAD };
        let mut first = [Vec::new(), Vec::new()];
        let mut per_request = [Vec::new(), Vec::new()];
        let mut p99 = [Vec::new(), Vec::new()];
        let mut overflows = [Vec::new(), Vec::new()];
        let have_wrk = crate::setup::have_wrk();
        let boots = if quick { 1 } else { HTTP_BOOTS_PER_RUN };
        for (run, boot) in (1..=runs).flat_map(|run| (0..boots).map(move |boot| (run, boot))) {
            for (side, name) in ["Toro", "Linux"].into_iter().enumerate() {
                let port = match vm::free_loopback_port() {
                    Ok(port) => port,
                    Err(error) => {
                        let failed = self.fail(format!("{name} HTTP: {error:#}"));
                        first[side].push(failed);
                        continue;
                    }
                };
                let mut config = if side == 0 {
                    VmConfig::new(self.webserver.clone(), self.accel)
                } else {
                    self.linux.vm_config(self.accel, Mode::Serve)
                };
                let guest_port = if side == 0 { 80 } else { GUEST_HTTP_PORT };
                config.network = Some(UserNetwork { tcp_forwards: vec![(port, guest_port)] });
                let load = (have_wrk && boot == 0).then_some((threads, connections, window));
                let timeout = if side == 0 { TORO_TIMEOUT } else { LINUX_TIMEOUT };
                match self.serve(&config, port, timeout, load) {
                    Ok(Some((time, report))) => {
                        first[side].push(milliseconds(time));
                        match report {
                            Some(Ok(report)) if report.requests > 0 && report.socket_errors + report.non_2xx == 0 => {
                                per_request[side].push(window.as_secs_f64() * 1e6 / report.requests as f64);
                                p99[side].push(report.p99.map_or(f64::NAN, milliseconds));
                                overflows[side].push(report.listen_overflows.map_or(f64::NAN, |count| count as f64));
                                let cpu = net::HostCpu::of("http", SOURCES[side], &report);
                                eprintln!(
                                    "bench: HTTP {run}/{runs}: {name} first 200 after {}, wrk {:.0} requests/s, p99 {}, \
                                     {} host ListenOverflows, host {}",
                                    shown(milliseconds(time)),
                                    report.requests_per_second,
                                    report.p99.map_or("?".into(), |p| shown(milliseconds(p))),
                                    report.listen_overflows.map_or("?".into(), |count| count.to_string()),
                                    cpu.shown()
                                );
                                self.host_cpu.push(cpu);
                            }
                            Some(Ok(report)) => {
                                let failed = self.fail(format!("{name} HTTP load: errors under wrk: {report:?}"));
                                per_request[side].push(failed);
                                p99[side].push(f64::NAN);
                            }
                            Some(Err(error)) => {
                                let failed = self.fail(format!("{name} HTTP load: {error:#}"));
                                per_request[side].push(failed);
                                p99[side].push(f64::NAN);
                            }
                            None => eprintln!(
                                "bench: HTTP {run}/{runs}: {name} first 200 after {} (boot {} of the run)",
                                shown(milliseconds(time)),
                                boot + 1
                            ),
                        }
                    }
                    Ok(None) => {
                        let failed = self.fail(format!("{name} HTTP: no HTTP 200 before the timeout"));
                        first[side].push(failed);
                    }
                    Err(error) => {
                        let failed = self.fail(format!("{name} HTTP: {error:#}"));
                        first[side].push(failed);
                    }
                }
            }
        }
        let [toro_first, linux_first] = first;
        let mut metrics = vec![Metric {
            key: "http",
            title: if quick {
                "boot: QEMU start to first HTTP 200"
            } else {
                "boot: QEMU start to first HTTP 200 (3 boots a run)"
            },
            unit: "ms",
            toro: Side::measured(toro_first),
            linux: Side::measured(linux_first),
        }];
        let side = |samples: Vec<f64>| {
            if have_wrk {
                Side::measured(samples)
            } else {
                Side::Missing("n/a — wrk not installed".into())
            }
        };
        let [toro_request, linux_request] = per_request;
        metrics.push(Metric {
            key: "http-request",
            title: if quick {
                "HTTP keep-alive: wall time per request, wrk 1 thread 4 connections 1 s (quick)"
            } else {
                "HTTP keep-alive: wall time per request (1/throughput), wrk 2 threads 16 connections 5 s"
            },
            unit: "us",
            toro: side(toro_request),
            linux: side(linux_request),
        });
        let [toro_p99, linux_p99] = p99;
        metrics.push(Metric {
            key: "http-p99",
            title: "HTTP keep-alive: 99th percentile latency under that load",
            unit: "ms",
            toro: side(toro_p99),
            linux: side(linux_p99),
        });
        // QEMU's port forward listens with a backlog of 1: what overflowed
        // (the host's TcpExtListenOverflows, as nstat shows it, over the
        // wrk run; host-wide, so other work on the host's loopback counts).
        let [toro_overflows, linux_overflows] = overflows;
        metrics.push(Metric {
            key: "http-listen-overflows",
            title: "HTTP keep-alive: host ListenOverflows during that wrk run (QEMU's forward)",
            unit: "overflows",
            toro: side(toro_overflows),
            linux: side(linux_overflows),
        });
        metrics
    }

    /// Boots `config` (which forwards loopback `port` to the guest's HTTP
    /// port), waits up to `timeout` for the first 200, then, when `load`
    /// says so (threads, connections, duration), runs wrk against it.
    /// `None` if no 200 came before `timeout` (or the VM died).
    fn serve(
        &self,
        config: &VmConfig,
        port: u16,
        timeout: Duration,
        load: Option<(u32, u32, Duration)>,
    ) -> Result<Option<(Duration, Option<Result<crate::wrk::Report>>)>> {
        self.serve_at(config, port, "/", timeout, load)
    }

    /// [`Bench::serve`] with wrk asking for `path`.
    fn serve_at(
        &self,
        config: &VmConfig,
        port: u16,
        path: &str,
        timeout: Duration,
        load: Option<(u32, u32, Duration)>,
    ) -> Result<Option<(Duration, Option<Result<crate::wrk::Report>>)>> {
        let mut running = RunningVm::spawn(config)?;
        let deadline = running.start + timeout;
        let answer = running.first_http_ok(port, deadline);
        let report = match (answer, load) {
            (Some(_), Some((threads, connections, window))) => {
                let url = format!("http://127.0.0.1:{port}{path}");
                let before = crate::wrk::listen_overflows();
                let report = running.wrk(Command::new("wrk"), &url, threads, connections, window);
                let after = crate::wrk::listen_overflows();
                Some(report.map(|report| crate::wrk::Report {
                    listen_overflows: before.zip(after).map(|(before, after)| after.saturating_sub(before)),
                    ..report
                }))
            }
            _ => None,
        };
        let (output, errors) = running.stop();
        if answer.is_none() && (output.contains("failed") || !errors.trim().is_empty()) {
            eprintln!(
                "bench: HTTP server at {} MiB gave no answer:\n{}{}",
                config.memory_mib,
                tail(&output),
                errors.trim_end()
            );
        }
        Ok(answer.map(|time| (time, report)))
    }

    /// wrk against each server on a tap inside a network namespace of its
    /// own (no user-network forwarder in the way, whose listen backlog of 1
    /// overflows with 30 simultaneous connects): 2 threads, 30 keep-alive
    /// connections; the wall time per request and the p50 and p99 latency.
    fn http_tap(&mut self, runs: usize, quick: bool) -> Vec<Metric> {
        let (threads, connections, window) = if quick { HTTP_LOAD_QUICK } else { HTTP_TAP_LOAD };
        let missing = if !crate::setup::have_wrk() {
            Some("n/a — wrk not installed".to_string())
        } else {
            crate::netns::unavailable().map(|reason| format!("n/a — {reason}"))
        };
        let mut per_request = [Vec::new(), Vec::new()];
        let mut p50 = [Vec::new(), Vec::new()];
        let mut p99 = [Vec::new(), Vec::new()];
        if missing.is_none() {
            for run in 1..=runs {
                for (side, name) in ["Toro", "Linux"].into_iter().enumerate() {
                    let mut config = if side == 0 {
                        let mut config = VmConfig::new(self.webserver.clone(), self.accel);
                        config.command_line = crate::netns::guest_arguments().into();
                        config
                    } else {
                        let mut config = self.linux.vm_config(self.accel, Mode::Serve);
                        config.command_line.push(format!(
                            " toro_ip={}/{} toro_gw={}",
                            crate::netns::GUEST_ADDRESS,
                            crate::netns::PREFIX,
                            crate::netns::HOST_ADDRESS
                        ));
                        config
                    };
                    config.network = None;
                    let timeout = if side == 0 { TORO_TIMEOUT } else { LINUX_TIMEOUT };
                    match serve_on_tap(&config, timeout, (threads, connections, window)) {
                        Ok(report) if report.requests > 0 && report.socket_errors + report.non_2xx == 0 => {
                            let cpu = net::HostCpu::of("http-tap", SOURCES[side], &report);
                            eprintln!(
                                "bench: HTTP over a tap {run}/{runs}: {name} {:.0} requests/s, p50 {}, p99 {}, host {}",
                                report.requests_per_second,
                                report.p50.map_or("?".into(), |p| shown(milliseconds(p))),
                                report.p99.map_or("?".into(), |p| shown(milliseconds(p))),
                                cpu.shown()
                            );
                            self.host_cpu.push(cpu);
                            per_request[side].push(window.as_secs_f64() * 1e6 / report.requests as f64);
                            p50[side].push(report.p50.map_or(f64::NAN, milliseconds));
                            p99[side].push(report.p99.map_or(f64::NAN, milliseconds));
                        }
                        Ok(report) => {
                            let failed = self.fail(format!("{name} HTTP over a tap: errors under wrk: {report:?}"));
                            per_request[side].push(failed);
                        }
                        Err(error) => {
                            let failed = self.fail(format!("{name} HTTP over a tap: {error:#}"));
                            per_request[side].push(failed);
                        }
                    }
                }
            }
        }
        let side = |samples: Vec<f64>| match &missing {
            Some(reason) => Side::Missing(reason.clone()),
            None => Side::measured(samples),
        };
        let [toro_request, linux_request] = per_request;
        let [toro_p50, linux_p50] = p50;
        let [toro_p99, linux_p99] = p99;
        vec![
            Metric {
                key: "http-tap-request",
                title: if quick {
                    "HTTP over a tap: wall time per request, wrk 1 thread 4 connections 1 s (quick)"
                } else {
                    "HTTP over a tap: wall time per request (1/throughput), wrk 2 threads 30 connections 5 s"
                },
                unit: "us",
                toro: side(toro_request),
                linux: side(linux_request),
            },
            Metric {
                key: "http-tap-p50",
                title: "HTTP over a tap: median latency under that load",
                unit: "ms",
                toro: side(toro_p50),
                linux: side(linux_p50),
            },
            Metric {
                key: "http-tap-p99",
                title: "HTTP over a tap: 99th percentile latency under that load",
                unit: "ms",
                toro: side(toro_p99),
                linux: side(linux_p99),
            },
        ]
    }

    /// Boots the Linux guest in serve mode with `memory_mib` and polls nginx
    /// through a forwarded loopback port; the time from QEMU start to the
    /// first 200, `None` if none came before `timeout` (or the VM died).
    fn linux_http(&self, memory_mib: u32, timeout: Duration) -> Result<Option<Duration>> {
        let port = vm::free_loopback_port()?;
        let mut config = self.linux.vm_config(self.accel, Mode::Serve);
        config.memory_mib = memory_mib;
        config.network = Some(UserNetwork { tcp_forwards: vec![(port, GUEST_HTTP_PORT)] });
        Ok(self.serve(&config, port, timeout, None)?.map(|(time, _)| time))
    }

    // -- memory ------------------------------------------------------------

    fn memory(&mut self) -> Metric {
        eprintln!("bench: bisecting the smallest -m for Toro (hello exits 0)");
        let toro = {
            let image = self.hello.clone();
            let accel = self.accel;
            let mut works = |memory_mib: u32| -> Result<bool> {
                let mut config = VmConfig::new(image.clone(), accel);
                config.memory_mib = memory_mib;
                let outcome = match qemu::run(&config, Some(PROBE_TIMEOUT), false, &|line| line.to_string()) {
                    Ok(result) => result.outcome,
                    // QEMU may refuse a size outright: that size does not work.
                    Err(_) => Outcome::QemuFailed(1),
                };
                let works = outcome == Outcome::Exited(0);
                eprintln!("bench:   Toro -m {memory_mib}: {}", if works { "ok" } else { "no" });
                Ok(works)
            };
            stats::smallest_working(TORO_MEMORY_RANGE.0, TORO_MEMORY_RANGE.1, &mut works)
        };
        eprintln!("bench: bisecting the smallest -m for Linux (nginx answers HTTP 200)");
        let linux = {
            let mut works = |memory_mib: u32| -> Result<bool> {
                let works = self.linux_http(memory_mib, PROBE_TIMEOUT)?.is_some();
                eprintln!("bench:   Linux -m {memory_mib}: {}", if works { "ok" } else { "no" });
                Ok(works)
            };
            stats::smallest_working(LINUX_MEMORY_RANGE.0, LINUX_MEMORY_RANGE.1, &mut works)
        };
        let mut side = |name: &str, result: Result<Option<u32>>, high: u32, criterion: &str| match result {
            Ok(Some(mib)) => Side::Measured { samples: vec![f64::from(mib)], detail: Some(criterion.into()) },
            Ok(None) => Side::measured(vec![self.fail(format!("{name} memory: does not work even with -m {high}"))]),
            Err(error) => Side::measured(vec![self.fail(format!("{name} memory: {error:#}"))]),
        };
        let toro = side("Toro", toro, TORO_MEMORY_RANGE.1, "hello exits 0");
        let linux = side("Linux", linux, LINUX_MEMORY_RANGE.1, "nginx answers 200");
        Metric { key: "memory", title: "smallest -m that works", unit: "MiB", toro, linux }
    }

    // -- idle --------------------------------------------------------------

    fn idle(&mut self, runs: usize, window: Duration) -> Metric {
        let (mut toro, mut linux) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let toro_ms = match self.idle.clone() {
                Some(image) => {
                    let config = VmConfig::new(image, self.accel);
                    self.idle_cpu_ms("Toro", &config, &|_| true, TORO_TIMEOUT, window)
                }
                None => f64::NAN,
            };
            let config = self.linux.vm_config(self.accel, Mode::Idle);
            let linux_ms = self.idle_cpu_ms("Linux", &config, &|line| line == INIT_MARKER, LINUX_TIMEOUT, window);
            eprintln!(
                "bench: idle {run}/{runs}: host CPU over {} s: Toro {}, Linux {}",
                window.as_secs(),
                if self.idle.is_some() { shown(toro_ms) } else { "n/a".into() },
                shown(linux_ms)
            );
            toro.push(toro_ms);
            linux.push(linux_ms);
        }
        let toro = if self.idle.is_some() {
            Side::measured(toro)
        } else {
            Side::Missing("n/a — no examples/idle yet".into())
        };
        let title =
            if window == IDLE_WINDOW { "idle VM: host CPU over 10 s" } else { "idle VM: host CPU over 1 s (quick)" };
        Metric { key: "idle", title, unit: "ms", toro, linux: Side::measured(linux) }
    }

    /// Host CPU time QEMU spends over `window`, counted from
    /// [`IDLE_SETTLE`] after the first line that satisfies `ready`.
    fn idle_cpu_ms(
        &mut self,
        name: &str,
        config: &VmConfig,
        ready: &dyn Fn(&str) -> bool,
        timeout: Duration,
        window: Duration,
    ) -> f64 {
        let measure = || -> Result<f64> {
            let mut running = RunningVm::spawn(config)?;
            if running.wait_for_line(ready, running.start + timeout).is_none() {
                let (output, errors) = running.stop();
                bail!("no first line before the timeout\n{}{}", tail(&output), errors.trim_end());
            }
            std::thread::sleep(IDLE_SETTLE);
            let before = running.cpu_time()?;
            std::thread::sleep(window);
            if running.has_exited() {
                let (output, errors) = running.stop();
                bail!("the VM ended while idle\n{}{}", tail(&output), errors.trim_end());
            }
            let after = running.cpu_time()?;
            Ok(milliseconds(after.saturating_sub(before)))
        };
        // One boot more when the first one failed: on a loaded host the
        // Linux guest once printed nothing in 60 s (1 of 5 idle boots of a
        // full run); a guest that fails twice fails the row.
        let measured = measure().or_else(|error| {
            eprintln!("bench: {name} idle: {error:#}; booting it once more");
            measure()
        });
        measured.unwrap_or_else(|error| self.fail(format!("{name} idle: {error:#}")))
    }

    // -- workloads ---------------------------------------------------------

    /// The allocation and thread/message workloads, `runs` times on each
    /// side (Toro and Linux alternating, so drift in the host's load hits
    /// both), plus host-native Linux in full runs.
    fn workloads(&mut self, runs: usize, quick: bool) -> Vec<Workload> {
        let (mut toro, mut linux, mut host) = (Vec::new(), Vec::new(), Vec::new());
        if !self.only.wants_any(&workloads::keys()) {
            return Vec::new();
        }
        for run in 1..=runs {
            let started = Instant::now();
            let toro_readings = self.toro_workloads(quick);
            let toro_seconds = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let linux_readings = self.linux_workloads(quick);
            let linux_seconds = started.elapsed().as_secs_f64();
            let mut progress = format!(
                "bench: workloads {run}/{runs}: Toro {} ({toro_seconds:.1} s), Linux guest {} ({linux_seconds:.1} s)",
                if toro_readings.is_empty() { "failed" } else { "ok" },
                if linux_readings.is_empty() { "failed" } else { "ok" },
            );
            if !quick {
                let started = Instant::now();
                let host_readings = self.host_workloads();
                let _ = write!(
                    progress,
                    ", host-native {} ({:.1} s)",
                    if host_readings.is_empty() { "failed" } else { "ok" },
                    started.elapsed().as_secs_f64()
                );
                host.push(host_readings);
            }
            eprintln!("{progress}");
            toro.push(toro_readings);
            linux.push(linux_readings);
        }
        let only = self.only.clone();
        workloads::collect(&toro, &linux, &host, "not run (--quick)", &|key| only.wants(key))
    }

    /// One boot of Toro's `bench` for every selected workload but
    /// `WATCHDOG_OFF`, and one with `toro.watchdog=off` for that one: their
    /// readings, or none if a boot failed.
    fn toro_workloads(&mut self, quick: bool) -> Vec<Reading> {
        let keys = workloads::keys();
        let main: Vec<&str> = keys.iter().copied().filter(|&key| key != workloads::WATCHDOG_OFF).collect();
        let mut readings = Vec::new();
        if self.only.wants_any(&main) {
            let list = self.only.list(&main);
            let only = self.only.clone();
            let wanted = move |key: &str| key != workloads::WATCHDOG_OFF && only.wants(key);
            match self.toro_boot_workloads(quick, list.as_deref(), None, &wanted) {
                Some(found) => readings.extend(found),
                None => return Vec::new(),
            }
        }
        if self.only.wants(workloads::WATCHDOG_OFF) {
            let wanted = |key: &str| key == workloads::WATCHDOG_OFF;
            match self.toro_boot_workloads(quick, Some(workloads::WATCHDOG_OFF), Some("toro.watchdog=off"), &wanted) {
                Some(found) => readings.extend(found),
                None => return Vec::new(),
            }
        }
        readings
    }

    /// One boot of Toro's `bench` with `bench.only=only` and `extra` on its
    /// command line: its readings (which must cover what `wanted` says),
    /// or `None` if it failed.
    fn toro_boot_workloads(
        &mut self,
        quick: bool,
        only: Option<&str>,
        extra: Option<&str>,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Option<Vec<Reading>> {
        let mut config = VmConfig::new(self.workloads.clone(), self.accel);
        let mut arguments: Vec<String> = Vec::new();
        if quick {
            arguments.push(TORO_QUICK_ARGUMENT.into());
        }
        if let Some(only) = only {
            arguments.push(format!("bench.only={only}"));
        }
        arguments.extend(extra.map(str::to_string));
        config.command_line = arguments.join(" ").into();
        match qemu::run(&config, Some(TORO_WORKLOADS_TIMEOUT), false, &|line| line.to_string()) {
            Err(error) => {
                self.fail(format!("Toro workloads: {error:#}"));
                None
            }
            Ok(result) => {
                let readings = self.judge("Toro workloads", &result.output, &result.outcome, Source::Toro, wanted);
                (!readings.is_empty()).then_some(readings)
            }
        }
    }

    /// One boot of the Linux guest in bench mode: its readings, or none if
    /// it failed.
    fn linux_workloads(&mut self, quick: bool) -> Vec<Reading> {
        let mut config = self.linux.vm_config(self.accel, Mode::Bench { quick });
        if let Some(list) = self.only.list(&workloads::keys()) {
            let line = format!("{} toro_bench_only={list}", config.command_line.to_string_lossy());
            config.command_line = line.into();
        }
        let only = self.only.clone();
        let wanted = move |key: &str| only.wants(key);
        match linux_guest::run("bench: Linux workloads", &config, LINUX_WORKLOADS_TIMEOUT) {
            Err(error) => {
                self.fail(format!("Linux workloads: {error:#}"));
                Vec::new()
            }
            Ok(result) => {
                let mut readings =
                    self.judge("Linux workloads", &result.output, &result.outcome, Source::Linux, &wanted);
                if !result.output.lines().any(|line| line == linux_guest::BENCH_DONE_MARKER) && !readings.is_empty() {
                    self.fail(format!("Linux workloads: no {:?} line", linux_guest::BENCH_DONE_MARKER));
                    readings.clear();
                }
                readings
            }
        }
    }

    /// The Linux programs run directly on the host (full runs only). Not
    /// the comparison, so a failure here (say, a host with one CPU) is
    /// only a warning.
    fn host_workloads(&mut self) -> Vec<Reading> {
        let mut output = String::new();
        for program in &self.linux_programs {
            let list = self.only.list(&workloads::keys()).unwrap_or_default();
            match Command::new(program).arg("full").arg(list).stderr(std::process::Stdio::inherit()).output() {
                Ok(result) if result.status.success() => output.push_str(&String::from_utf8_lossy(&result.stdout)),
                Ok(result) => {
                    eprintln!("bench: warning: host-native {} ended with {}", program.display(), result.status);
                    return Vec::new();
                }
                Err(error) => {
                    eprintln!("bench: warning: host-native {}: {error}", program.display());
                    return Vec::new();
                }
            }
        }
        let (readings, mut problems) = workloads::parse_output(&output);
        problems.extend(workloads::check(&readings, Source::Linux, &|key| self.only.wants(key)));
        if !problems.is_empty() {
            eprintln!("bench: warning: host-native: {}", problems.join("; "));
        }
        readings
    }

    /// The readings of a run that must end with status 0 and report every
    /// workload; a failure is recorded, with the guest's last lines.
    fn judge(
        &mut self,
        name: &str,
        output: &str,
        outcome: &Outcome,
        source: Source,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Vec<Reading> {
        self.judge_with(workloads::SPECS, name, output, outcome, source, wanted)
    }

    /// [`Bench::judge`] against other rows (the storage rows).
    fn judge_with(
        &mut self,
        specs: &'static [workloads::Spec],
        name: &str,
        output: &str,
        outcome: &Outcome,
        source: Source,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Vec<Reading> {
        let (readings, mut problems) = workloads::parse_output(output);
        if *outcome != Outcome::Exited(0) {
            problems.insert(0, outcome.to_string());
        }
        problems.extend(workloads::check_specs(specs, &readings, source, wanted));
        if problems.is_empty() {
            return readings;
        }
        self.fail(format!("{name}: {}\n{}", problems.join("; "), tail(output)));
        if *outcome == Outcome::Exited(0) {
            readings
        } else {
            Vec::new()
        }
    }

    // -- image size --------------------------------------------------------

    fn image_size(&mut self) -> Result<Metric> {
        let stripped = strip_copy(&self.hello)?;
        let toro_bytes = std::fs::metadata(&stripped)?.len();
        let vmlinux = std::fs::metadata(&self.linux.vmlinux)?.len();
        let initramfs = std::fs::metadata(&self.linux.initramfs)?.len();
        let kib = |bytes: u64| bytes as f64 / 1024.0;
        Ok(Metric {
            key: "image",
            title: "image size",
            unit: "KiB",
            toro: Side::Measured { samples: vec![kib(toro_bytes).round()], detail: Some("hello, stripped ELF".into()) },
            linux: Side::Measured {
                samples: vec![kib(vmlinux + initramfs).round()],
                detail: Some(format!("vmlinux {:.0} + initramfs {:.0}", kib(vmlinux), kib(initramfs))),
            },
        })
    }
}

/// A stripped copy of `image` under `target/bench/`.
fn strip_copy(image: &Path) -> Result<PathBuf> {
    let dir = crate::build::workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let name = image.file_name().context("image has no file name")?.to_string_lossy();
    let stripped = dir.join(format!("{name}.stripped"));
    let status = if Command::new("llvm-objcopy").arg("--version").output().is_ok_and(|o| o.status.success()) {
        Command::new("llvm-objcopy").arg("--strip-all").arg(image).arg(&stripped).status()?
    } else {
        linux_guest::ensure_tool("strip", "binutils")?;
        Command::new("strip").arg("--strip-all").arg("-o").arg(&stripped).arg(image).status()?
    };
    if !status.success() {
        bail!("stripping {} failed", image.display());
    }
    Ok(stripped)
}

/// Milliseconds, to the microsecond.
fn milliseconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A progress figure: "3412 ms", or "failed" for a failed run.
fn shown(ms: f64) -> String {
    if ms.is_finite() {
        format!("{} ms", report::number(ms))
    } else {
        "failed".into()
    }
}

/// The last lines of a guest's output, indented, for a failure report.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines.len().saturating_sub(15);
    lines[start..].iter().map(|line| format!("    | {line}\n")).collect()
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn qemu_version() -> String {
    Command::new(crate::setup::QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "QEMU (version unknown)".into())
}

/// The launcher's conditions, in words, from the command it builds.
fn describe_vm(config: &VmConfig) -> String {
    let arguments: Vec<String> = config.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let value = |flag: &str| {
        arguments.iter().position(|a| a == flag).and_then(|i| arguments.get(i + 1)).cloned().unwrap_or_default()
    };
    format!(
        "`-machine {}`, `-accel {}`, `-cpu {}`, `-smp {}`, `-m {}` (the HTTP runs add a virtio-net card on user networking)",
        value("-machine"),
        value("-accel"),
        value("-cpu"),
        value("-smp"),
        value("-m")
    )
}

fn write_record(
    context: &report::Context,
    metrics: &[Metric],
    workloads: &[Workload],
    host_cpu: &[net::HostCpu],
) -> Result<PathBuf> {
    let dir = crate::build::workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("bench-{}.json", context.timestamp.replace(':', "-")));
    std::fs::write(
        &path,
        report::json(context, metrics, workloads::json(workloads), net::host_cpu_json(host_cpu)).render(),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    // The connections curve of every run, docs/ or not.
    if let Some(curve) = net::curve_svg(workloads) {
        std::fs::write(path.with_extension("connections.svg"), curve)?;
    }
    Ok(path)
}

/// Refreshes the generated part of `docs/benchmarks.md` and the plots.
fn write_docs(
    context: &report::Context,
    metrics: &[Metric],
    workloads: &[Workload],
    host_cpu: &[String],
) -> Result<PathBuf> {
    let docs = crate::build::workspace_root().join("docs");
    std::fs::create_dir_all(&docs)?;
    let mut plots = Vec::new();
    for metric in metrics {
        let file = format!("bench-{}.svg", metric.key);
        std::fs::write(docs.join(&file), report::svg(metric))?;
        plots.push((file, metric));
    }
    let mut workload_plots = Vec::new();
    for workload in workloads {
        let file = format!("bench-{}.svg", workload.spec.key);
        std::fs::write(docs.join(&file), workloads::svg(workload))?;
        workload_plots.push((file, workload.spec.title.to_string()));
    }
    if let Some(curve) = net::curve_svg(workloads) {
        let file = "bench-net-connections.svg".to_string();
        std::fs::write(docs.join(&file), curve)?;
        workload_plots.push((file, "HTTP over a q35 tap: requests/s against connections".to_string()));
    }
    let workload_part =
        workloads::markdown(workloads, context.runs, &context.linux_bench_command_line, host_cpu, &workload_plots);
    let path = docs.join("benchmarks.md");
    let document = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let generated = report::markdown(context, metrics, &plots, &workload_part);
    std::fs::write(&path, report::splice(&document, &generated))?;
    Ok(path)
}

/// Boots `config` with a card on a tap inside a fresh network namespace
/// (the guest at `netns::GUEST_ADDRESS`), waits up to `timeout` for a 200
/// from inside the namespace, then runs wrk there with `load` (threads,
/// connections, duration).
fn serve_on_tap(config: &VmConfig, timeout: Duration, load: (u32, u32, Duration)) -> Result<crate::wrk::Report> {
    let load = net::Load::plain(load.0, load.1, load.2);
    net::serve_on_tap_loads(config, timeout, 1, &[load], &mut |_| {})?.pop().context("wrk ran once")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn options() {
        let all = Only::all;
        assert_eq!(parse_options(&[]).unwrap(), Options { runs: 5, quick: false, only: all() });
        assert_eq!(parse_options(&strings(&["--quick"])).unwrap(), Options { runs: 1, quick: true, only: all() });
        assert_eq!(parse_options(&strings(&["--runs", "7"])).unwrap(), Options { runs: 7, quick: false, only: all() });
        assert_eq!(
            parse_options(&strings(&["--quick", "--runs", "2"])).unwrap(),
            Options { runs: 2, quick: true, only: all() }
        );
        let only = parse_options(&strings(&["--only", "alloc-*,yield-watchdog-off,boot"])).unwrap().only;
        assert!(only.wants("alloc-borrowed") && only.wants("boot") && !only.wants("yield") && !only.wants("http"));
        // The storage rows and the files-from-disk row are rows too.
        let only = parse_options(&strings(&["--only", "disk-raw-*,http-disk-file"])).unwrap().only;
        assert!(only.wants("disk-raw-seq-read") && only.wants("http-disk-file") && !only.wants("disk-fs-seq-read"));
        assert!(known_rows().iter().all(|key| !key.is_empty()));
        assert!(storage::keys().iter().all(|key| known_rows().contains(key)));
        // The user-network rows of the workload table (bench/net.rs).
        let only = parse_options(&strings(&["--only", "net-user-*"])).unwrap().only;
        assert!(
            only.wants("net-user-1cpu-rps") && only.wants("net-user-2cpu-overflows") && !only.wants("http-request")
        );
        assert!(!only.wants("net-mq-1cpu-rps"));
        assert!(parse_options(&strings(&["--only", "nosuchrow"])).is_err());
        assert!(parse_options(&strings(&["--only"])).is_err());
        assert!(parse_options(&strings(&["--runs", "0"])).is_err());
        assert!(parse_options(&strings(&["--runs"])).is_err());
        assert!(parse_options(&strings(&["--fast"])).is_err());
    }

    #[test]
    fn describes_the_launchers_conditions() {
        let text = describe_vm(&VmConfig::new(PathBuf::from("/x"), Accel::Tcg));
        assert!(text.contains("`-machine microvm,pit=on,pic=off,rtc=off`"));
        assert!(text.contains("`-smp 2`"));
        assert!(text.contains("`-m 128M`"));
    }
}
