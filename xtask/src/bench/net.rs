//! The network rows of issue 10, over a tap inside a network namespace of
//! their own (no user-network forwarder in the way), Toro beside the Linux
//! guest in the same run:
//!
//! - wrk, keep-alive, 30 connections, against the 612-byte page on QEMU
//!   q35 with 1 and with 2 vCPUs, the tap with one queue pair per vCPU
//!   (Toro: a queue pair on each CPU; Linux: virtio-net's own multi-queue,
//!   nginx with a worker per CPU): requests/s, p50, p99, and the 2/1 vCPU
//!   scaling of requests/s;
//! - requests/s against the number of connections (1 to 256) on the
//!   2-vCPU boot, plotted (`bench-net-connections.svg`);
//! - TCP echo throughput: one connection from the host (inside the
//!   namespace) to Toro's `examples/echo` and to `toro-bench-echo` of
//!   `bench/linux` (beside nginx in the 2-vCPU boot), both on port 7 of
//!   the same 2-vCPU q35 tap, bytes sent and echoed back at once, every
//!   byte checked.
//!
//! And the same wrk load over QEMU user networking (slirp, `hostfwd` on
//! 127.0.0.1, wrk on the host), on the launcher's microvm like the main
//! table's HTTP rows, with 1 and 2 vCPUs: requests/s, and the host's
//! `ListenOverflows` over each wrk run (QEMU's port forward listens with a
//! backlog of 1, so 30 simultaneous connects overflow it; its latency
//! measures the forwarder, so the latency rows are the tap's).
//!
//! Over every wrk run, the host CPU of wrk and of QEMU in cores
//! ([`HostCpu`]): not a row (lower is not better), a note per row under the
//! table and in the record, saying whether the host's cores were full.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::{self, Json, Side};
use super::stats::Summary;
use super::vm::RunningVm;
use super::workloads::{self, Better, LineUnit, Reading, Source, Spec, Workload, Yardstick};
use super::Bench;
use crate::linux_guest::Mode;
use crate::qemu::{Machine, UserNetwork, VmConfig};
use crate::vmm;

const NGINX: &[Yardstick] = &[Yardstick { variant: "nginx", label: "nginx, a worker per vCPU" }];
const ECHO: &[Yardstick] = &[Yardstick { variant: "std", label: "std::net, a thread per connection" }];

/// wrk's connections for the scaling rows (the 30).
const CONNECTIONS: u32 = 30;
/// The scaling rows' wrk window, full and quick.
const WINDOW: Duration = Duration::from_secs(5);
const QUICK_WINDOW: Duration = Duration::from_secs(1);
/// The points of the connections curve, full and quick, and each point's
/// wrk window.
pub const CURVE: &[u32] = &[1, 4, 16, 64, 256];
const QUICK_CURVE: &[u32] = &[1, 16];
const CURVE_WINDOW: Duration = Duration::from_secs(3);
/// Bytes echoed per run, full and quick.
const ECHO_BYTES: usize = 64 << 20;
const QUICK_ECHO_BYTES: usize = 4 << 20;
/// Longest a guest may take to answer on the tap.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The vCPU counts of the user-network boots, full and quick (the test
/// suite's quick plan skips the 1-vCPU boot: one Linux boot fewer).
const USER_CPUS: &[u32] = &[1, 2];
const QUICK_USER_CPUS: &[u32] = &[2];

macro_rules! spec {
    ($key:expr, $title:expr, $line_unit:expr, $unit:expr, $divisor:expr, $better:expr, $yardsticks:expr) => {
        Spec {
            key: $key,
            title: $title,
            line_unit: $line_unit,
            unit: $unit,
            divisor: $divisor,
            better: $better,
            yardsticks: $yardsticks,
        }
    };
}

/// A requests/s row against nginx.
macro_rules! requests {
    ($key:expr, $title:expr) => {
        spec!($key, $title, LineUnit::PerSecond, "k req/s", 1e3, Better::Higher, NGINX)
    };
}

/// A row of the host's ListenOverflows over a wrk run (a count, lower is
/// better), beside nginx's.
macro_rules! overflows {
    ($key:expr, $title:expr) => {
        spec!($key, $title, LineUnit::Count, "overflows", 1.0, Better::Lower, NGINX)
    };
}

/// The rows, in the order of their table.
pub const SPECS: &[Spec] = &[
    requests!("net-mq-1cpu-rps", "q35 tap, 1 vCPU (1 queue pair): requests/s, wrk 30 keep-alive connections"),
    spec!("net-mq-1cpu-p50", "q35 tap, 1 vCPU: latency p50", LineUnit::Microseconds, "ms", 1e3, Better::Lower, NGINX),
    spec!("net-mq-1cpu-p99", "q35 tap, 1 vCPU: latency p99", LineUnit::Microseconds, "ms", 1e3, Better::Lower, NGINX),
    requests!(
        "net-mq-2cpu-rps",
        "q35 multi-queue tap, 2 vCPUs (2 queue pairs): requests/s, wrk 30 keep-alive connections"
    ),
    spec!("net-mq-2cpu-p50", "q35 tap, 2 vCPUs: latency p50", LineUnit::Microseconds, "ms", 1e3, Better::Lower, NGINX),
    spec!("net-mq-2cpu-p99", "q35 tap, 2 vCPUs: latency p99", LineUnit::Microseconds, "ms", 1e3, Better::Lower, NGINX),
    spec!(
        "net-mq-scaling",
        "q35 tap: requests/s with 2 vCPUs / with 1 vCPU (same run)",
        LineUnit::PerSecond,
        "x",
        1.0,
        Better::Higher,
        NGINX
    ),
    spec!(
        "net-mq-core-scaling",
        "q35 tap: requests per host core of the vCPU threads, 2 vCPUs / 1 vCPU (same run; 1.0 = linear per core)",
        LineUnit::PerSecond,
        "x",
        1.0,
        Better::Higher,
        NGINX
    ),
    requests!(
        "net-gzip-1cpu-rps",
        "q35 tap, 1 vCPU: requests/s, the page gzip-coded per request (Accept-Encoding: gzip, level 1), 30 connections"
    ),
    requests!(
        "net-gzip-2cpu-rps",
        "q35 multi-queue tap, 2 vCPUs (2 queue pairs): requests/s, the same gzip-coded load"
    ),
    spec!(
        "net-gzip-scaling",
        "q35 tap, gzip-coded page: requests/s with 2 vCPUs / with 1 vCPU (same run)",
        LineUnit::PerSecond,
        "x",
        1.0,
        Better::Higher,
        NGINX
    ),
    spec!(
        "net-gzip-core-scaling",
        "q35 tap, gzip-coded page: requests per host core of the vCPU threads, 2 vCPUs / 1 vCPU (1.0 = linear per core)",
        LineUnit::PerSecond,
        "x",
        1.0,
        Better::Higher,
        NGINX
    ),
    requests!("net-conn-1", "q35 tap, 2 vCPUs: requests/s with 1 connection"),
    requests!("net-conn-4", "q35 tap, 2 vCPUs: requests/s with 4 connections"),
    requests!("net-conn-16", "q35 tap, 2 vCPUs: requests/s with 16 connections"),
    requests!("net-conn-64", "q35 tap, 2 vCPUs: requests/s with 64 connections"),
    requests!("net-conn-256", "q35 tap, 2 vCPUs: requests/s with 256 connections"),
    requests!(
        "net-user-1cpu-rps",
        "user networking (hostfwd 127.0.0.1), microvm 1 vCPU: requests/s, wrk 30 keep-alive connections"
    ),
    overflows!(
        "net-user-1cpu-overflows",
        "user networking, 1 vCPU: host ListenOverflows during that wrk run (QEMU's forward, backlog 1)"
    ),
    requests!(
        "net-user-2cpu-rps",
        "user networking (hostfwd 127.0.0.1), microvm 2 vCPUs: requests/s, wrk 30 keep-alive connections"
    ),
    overflows!(
        "net-user-2cpu-overflows",
        "user networking, 2 vCPUs: host ListenOverflows during that wrk run (QEMU's forward, backlog 1)"
    ),
    spec!(
        "net-echo",
        "TCP echo over the q35 tap, 2 vCPUs, one connection: MB/s echoed",
        LineUnit::PerSecond,
        "MB/s",
        1e6,
        Better::Higher,
        ECHO
    ),
];

/// The key of the connections curve's point with `connections`.
fn curve_key(connections: u32) -> String {
    format!("net-conn-{connections}")
}

/// Every row's key (for `--only`).
pub fn keys() -> Vec<&'static str> {
    SPECS.iter().map(|spec| spec.key).collect()
}

/// The vCPU count a user-network row's key names (`net-user-1cpu-rps`: 1).
fn user_cpus_of(key: &str) -> Option<u32> {
    key.strip_prefix("net-user-")?.split_once("cpu-")?.0.parse().ok()
}

/// The rows a run measures: those `wanted` says, less the connection
/// points and user-network boots the plan (full or `--quick`) leaves out.
fn plan(quick: bool, wanted: &dyn Fn(&str) -> bool) -> Vec<String> {
    let curve: &[u32] = if quick { QUICK_CURVE } else { CURVE };
    let user_cpus: &[u32] = if quick { QUICK_USER_CPUS } else { USER_CPUS };
    keys()
        .into_iter()
        .map(str::to_string)
        .filter(|key| !key.starts_with("net-conn-") || curve.iter().any(|&c| curve_key(c) == *key))
        .filter(|key| user_cpus_of(key).is_none_or(|cpus| user_cpus.contains(&cpus)))
        .filter(|key| wanted(key))
        .collect()
}

/// A reading of one side: Toro's carry no yardstick, Linux's its one.
fn reading(key: &str, value: f64, unit: LineUnit, source: Source) -> Reading {
    let variant = match source {
        Source::Toro => None,
        Source::Linux => {
            let spec = SPECS.iter().find(|spec| spec.key == key).expect("a known row");
            Some(spec.yardsticks[0].variant.to_string())
        }
    };
    Reading { name: key.to_string(), variant, value, unit }
}

/// The readings of one wrk report under `prefix` (`net-mq-1cpu`).
fn wrk_readings(prefix: &str, report: &crate::wrk::Report, source: Source) -> Vec<Reading> {
    let mut readings = vec![reading(&format!("{prefix}-rps"), report.requests_per_second, LineUnit::PerSecond, source)];
    for (name, value) in [("p50", report.p50), ("p99", report.p99)] {
        if let Some(value) = value {
            let micros = value.as_secs_f64() * 1e6;
            readings.push(reading(&format!("{prefix}-{name}"), micros, LineUnit::Microseconds, source));
        }
    }
    readings
}

/// The readings of one wrk run over user networking with `cpus`:
/// requests/s, and the host's ListenOverflows over the run when read.
fn user_readings(cpus: u32, report: &crate::wrk::Report, source: Source) -> Vec<Reading> {
    let prefix = format!("net-user-{cpus}cpu");
    let mut readings = vec![reading(&format!("{prefix}-rps"), report.requests_per_second, LineUnit::PerSecond, source)];
    if let Some(count) = report.listen_overflows {
        readings.push(reading(&format!("{prefix}-overflows"), count as f64, LineUnit::Count, source));
    }
    readings
}

/// The host's CPU over one wrk run of one side: what says whether wrk and
/// QEMU together took the host's cores (a second vCPU cannot add when
/// they already do). Not a row of the table: it says what limits one.
#[derive(Clone, Debug, PartialEq)]
pub struct HostCpu {
    /// The run's row, a key's prefix: `net-mq-1cpu`, `net-conn-16`,
    /// `net-user-2cpu`, `http`, `http-tap`.
    pub row: String,
    pub source: Source,
    /// wrk's and QEMU's host CPU over the run, and the host's busy CPU
    /// (every process), in cores (CPU seconds / wall seconds); NaN where
    /// unread.
    pub wrk: f64,
    pub qemu: f64,
    pub host: f64,
    /// Each of QEMU's threads in cores: the main loop first, then the
    /// others (the vCPUs among them) from the busiest.
    pub threads: Vec<f64>,
}

impl HostCpu {
    pub fn of(row: &str, source: Source, report: &crate::wrk::Report) -> Self {
        let cores = |value: Option<f64>| value.unwrap_or(f64::NAN);
        Self {
            row: row.to_string(),
            source,
            wrk: cores(report.wrk_cores()),
            qemu: cores(report.qemu_cores()),
            host: cores(report.host_cores()),
            threads: report.qemu_thread_cores(),
        }
    }

    /// QEMU's threads but its main loop (the vCPU threads, and QEMU's
    /// few helpers), in cores; NaN where unread.
    fn vcpus(&self) -> f64 {
        if self.threads.len() < 2 {
            return f64::NAN;
        }
        self.threads.iter().skip(1).sum()
    }

    /// QEMU's main loop in cores, NaN where unread.
    fn main_loop(&self) -> f64 {
        self.threads.first().copied().unwrap_or(f64::NAN)
    }

    /// For a progress line: `wrk 0.91 + QEMU 1.05 cores (main loop 0.40,
    /// other threads 0.60 0.05), host busy 1.98`.
    pub fn shown(&self) -> String {
        let others: Vec<String> =
            self.threads.iter().skip(1).filter(|&&cores| cores >= 0.005).map(|&cores| shown_cores(cores)).collect();
        format!(
            "wrk {} + QEMU {} cores (main loop {}, other threads {}), host busy {}",
            shown_cores(self.wrk),
            shown_cores(self.qemu),
            shown_cores(self.main_loop()),
            if others.is_empty() { "-".to_string() } else { others.join(" ") },
            shown_cores(self.host)
        )
    }
}

fn shown_cores(cores: f64) -> String {
    if cores.is_finite() {
        format!("{cores:.2}")
    } else {
        "?".into()
    }
}

/// The median of the finite `values`, NaN if none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    Summary::of(&values).map_or(f64::NAN, |summary| summary.median)
}

/// The rows of `entries` in the order first measured, each with its
/// entries of each side.
fn host_cpu_rows(entries: &[HostCpu]) -> Vec<(&str, [Vec<&HostCpu>; 2])> {
    let mut rows: Vec<(&str, [Vec<&HostCpu>; 2])> = Vec::new();
    for entry in entries {
        let index = match rows.iter().position(|(row, _)| *row == entry.row) {
            Some(index) => index,
            None => {
                rows.push((&entry.row, [Vec::new(), Vec::new()]));
                rows.len() - 1
            }
        };
        rows[index].1[usize::from(entry.source == Source::Linux)].push(entry);
    }
    rows
}

/// One line per row: each side's median cores of wrk, of QEMU, of both
/// (the median of each run's sum) and of the whole host's busy time,
/// against the host's `host_cpus`.
pub fn host_cpu_notes(entries: &[HostCpu], host_cpus: usize) -> Vec<String> {
    host_cpu_rows(entries)
        .into_iter()
        .map(|(row, sides)| {
            let parts: Vec<String> = ["Toro", "Linux"]
                .iter()
                .zip(&sides)
                .filter(|(_, runs)| !runs.is_empty())
                .map(|(name, runs)| {
                    let wrk = median(runs.iter().map(|r| r.wrk));
                    let qemu = median(runs.iter().map(|r| r.qemu));
                    let both = median(runs.iter().map(|r| r.wrk + r.qemu));
                    let host = median(runs.iter().map(|r| r.host));
                    let main_loop = median(runs.iter().map(|r| r.main_loop()));
                    format!(
                        "{name} wrk {} + QEMU {} (its main loop {}) = {} (host busy {}) of {host_cpus}",
                        shown_cores(wrk),
                        shown_cores(qemu),
                        shown_cores(main_loop),
                        shown_cores(both),
                        shown_cores(host)
                    )
                })
                .collect();
            format!("{row}: {}", parts.join("; "))
        })
        .collect()
}

/// The record's part: every run's cores, by row and side.
pub fn host_cpu_json(entries: &[HostCpu]) -> Json {
    let mut items = Vec::new();
    for (row, sides) in host_cpu_rows(entries) {
        for (side, runs) in ["toro", "linux"].iter().zip(&sides).filter(|(_, runs)| !runs.is_empty()) {
            // To the thousandth: 10 ms ticks over seconds say no more.
            let cores = |value: fn(&HostCpu) -> f64| {
                Json::Array(runs.iter().map(|r| Json::Number((value(r) * 1000.0).round() / 1000.0)).collect())
            };
            items.push(Json::object(vec![
                ("row", Json::String(row.to_string())),
                ("side", Json::String(side.to_string())),
                ("wrk_cores", cores(|r| r.wrk)),
                ("qemu_cores", cores(|r| r.qemu)),
                ("host_busy_cores", cores(|r| r.host)),
                (
                    "qemu_thread_cores_main_first",
                    Json::Array(
                        runs.iter()
                            .map(|r| {
                                Json::Array(
                                    r.threads.iter().map(|c| Json::Number((c * 1000.0).round() / 1000.0)).collect(),
                                )
                            })
                            .collect(),
                    ),
                ),
            ]));
        }
    }
    Json::Array(items)
}

/// `ratio` = the 2-vCPU requests/s over the 1-vCPU one of the rows named
/// `kind` (`mq`: `net-mq-2cpu-rps` / `net-mq-1cpu-rps`, read as
/// `net-mq-scaling`), when both are in.
fn scaling(readings: &[Reading], kind: &str, source: Source) -> Option<Reading> {
    let rate = |key: String| readings.iter().find(|r| r.name == key).map(|r| r.value).filter(|v| *v > 0.0);
    let ratio = rate(format!("net-{kind}-2cpu-rps"))? / rate(format!("net-{kind}-1cpu-rps"))?;
    Some(reading(&format!("net-{kind}-scaling"), ratio, LineUnit::PerSecond, source))
}

/// `net-{kind}-core-scaling`: requests/s per host core that QEMU's threads
/// other than its main loop (the vCPU threads) ran, 2 vCPUs over 1 vCPU,
/// from the latest `host_cpu` entries of `source` for rows
/// `net-{kind}-{cpus}cpu` (pushed with this run's readings). 1.0 means
/// the second vCPU serves as much per core of the host as the only one
/// did: the guest scales linearly and the 1 -> 2 vCPU ratio is bounded by
/// the cores the host gave its vCPU threads (2 here, shared with wrk and
/// QEMU's main loop).
fn core_scaling(readings: &[Reading], host_cpu: &[HostCpu], kind: &str, source: Source) -> Option<Reading> {
    let per_core = |cpus: u32| {
        let rate = readings.iter().find(|r| r.name == format!("net-{kind}-{cpus}cpu-rps"))?.value;
        let row = format!("net-{kind}-{cpus}cpu");
        let cores = host_cpu.iter().rev().find(|cpu| cpu.row == row && cpu.source == source)?.vcpus();
        (rate > 0.0 && cores.is_finite() && cores > 0.0).then_some(rate / cores)
    };
    let ratio = per_core(2)? / per_core(1)?;
    Some(reading(&format!("net-{kind}-core-scaling"), ratio, LineUnit::PerSecond, source))
}

/// One wrk run of a boot: threads, connections, how long, and whether its
/// requests ask for gzip (`Accept-Encoding: gzip`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Load {
    pub threads: u32,
    pub connections: u32,
    pub window: Duration,
    pub gzip: bool,
}

impl Load {
    pub fn plain(threads: u32, connections: u32, window: Duration) -> Self {
        Self { threads, connections, window, gzip: false }
    }
}

impl Bench {
    /// The network rows (`SPECS`), `runs` times on each side; `wanted`
    /// says which rows to measure (a boot is skipped when none of its
    /// rows is wanted).
    pub(super) fn network(&mut self, runs: usize, quick: bool, wanted: &dyn Fn(&str) -> bool) -> Vec<Workload> {
        let missing = if !crate::setup::have_wrk() {
            Some("n/a — wrk not installed".to_string())
        } else {
            crate::netns::unavailable().map(|reason| format!("n/a — {reason}"))
        };
        let curve: &[u32] = if quick { QUICK_CURVE } else { CURVE };
        let measured_keys = plan(quick, wanted);
        let (mut toro, mut linux) = (Vec::new(), Vec::new());
        if missing.is_none() && !measured_keys.is_empty() {
            for run in 1..=runs {
                for source in [Source::Toro, Source::Linux] {
                    let started = Instant::now();
                    let noted = self.host_cpu.len();
                    let readings =
                        self.network_side(quick, curve, source, &|key| measured_keys.iter().any(|k| k == key));
                    let name = if source == Source::Toro { "Toro" } else { "Linux guest" };
                    let mut progress =
                        format!("bench: network {run}/{runs}: {name} ({:.1} s):", started.elapsed().as_secs_f64());
                    for reading in &readings {
                        let _ = write!(progress, " {} {}", reading.name, report::number(reading.value));
                    }
                    for cpu in &self.host_cpu[noted..] {
                        let _ = write!(progress, "; {} host: {}", cpu.row, cpu.shown());
                    }
                    eprintln!("{progress}");
                    match source {
                        Source::Toro => toro.push(readings),
                        Source::Linux => linux.push(readings),
                    }
                }
            }
        }
        let mut rows = workloads::collect_specs(SPECS, &toro, &linux, &[], "not run (the guests' only)", wanted);
        rows.retain(|row| measured_keys.iter().any(|key| key == row.spec.key));
        if let Some(reason) = missing {
            for row in &mut rows {
                row.toro = Side::Missing(reason.clone());
                for (_, side) in &mut row.linux {
                    *side = Side::Missing(reason.clone());
                }
            }
        }
        rows
    }

    /// One side's boots: q35 with 1 and 2 vCPUs (the curve on the second),
    /// then the echo boot; what each measured.
    fn network_side(
        &mut self,
        quick: bool,
        curve: &[u32],
        source: Source,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Vec<Reading> {
        let name = if source == Source::Toro { "Toro" } else { "Linux" };
        let window = if quick { QUICK_WINDOW } else { WINDOW };
        let curve_window = if quick { QUICK_WINDOW } else { CURVE_WINDOW };
        let echo_bytes = if quick { QUICK_ECHO_BYTES } else { ECHO_BYTES };
        let mut readings = Vec::new();
        let mut linux_echoed = None;
        for cpus in [1u32, 2] {
            let prefix = format!("net-mq-{cpus}cpu");
            let row_wanted = ["rps", "p50", "p99"].iter().any(|n| wanted(&format!("{prefix}-{n}")))
                || wanted("net-mq-scaling")
                || wanted("net-mq-core-scaling");
            let gzip_key = format!("net-gzip-{cpus}cpu-rps");
            let gzip_wanted = wanted(&gzip_key) || wanted("net-gzip-scaling") || wanted("net-gzip-core-scaling");
            let points: Vec<u32> =
                if cpus == 2 { curve.iter().copied().filter(|&c| wanted(&curve_key(c))).collect() } else { Vec::new() };
            // The Linux guest's echo server runs beside nginx in the 2-vCPU
            // boot (one boot fewer); Toro's is an application of its own.
            // That boot runs for the echo row alone too (`--only net-echo`
            // measured Toro's side only).
            let linux_echo = cpus == 2 && source == Source::Linux && wanted("net-echo");
            if !row_wanted && !gzip_wanted && points.is_empty() && !linux_echo {
                continue;
            }
            let mut loads = Vec::new();
            if row_wanted {
                loads.push(Load::plain(2, CONNECTIONS, window));
            }
            if gzip_wanted {
                loads.push(Load { gzip: true, ..Load::plain(2, CONNECTIONS, window) });
            }
            loads.extend(points.iter().map(|&c| Load::plain(c.min(2), c, curve_window)));
            let config = self.tap_config(source, cpus, linux_echo);
            let mut echoed = None;
            let mut echo = |namespace: &crate::netns::Namespace| {
                if linux_echo {
                    echoed = Some(echo_throughput(namespace.name(), echo_address(), echo_bytes));
                }
            };
            match serve_on_tap_loads(&config, READY_TIMEOUT, cpus, &loads, &mut echo) {
                Err(error) => {
                    self.fail(format!("{name} HTTP on a q35 tap with {cpus} vCPU(s): {error:#}"));
                }
                Ok(reports) => {
                    if linux_echo {
                        linux_echoed = echoed;
                    }
                    let mut reports = reports.into_iter();
                    if row_wanted {
                        match reports.next() {
                            Some(Ok(report)) if report.requests > 0 && report.socket_errors + report.non_2xx == 0 => {
                                readings.extend(wrk_readings(&prefix, &report, source));
                                self.host_cpu.push(HostCpu::of(&prefix, source, &report));
                            }
                            Some(Ok(report)) => {
                                self.fail(format!("{name} q35 tap {cpus} vCPU(s): errors under wrk: {report:?}"));
                            }
                            Some(Err(error)) => {
                                self.fail(format!("{name} q35 tap {cpus} vCPU(s): {error:#}"));
                            }
                            None => {}
                        }
                    }
                    if gzip_wanted {
                        match reports.next() {
                            Some(Ok(report)) if report.requests > 0 && report.socket_errors + report.non_2xx == 0 => {
                                readings.push(reading(
                                    &gzip_key,
                                    report.requests_per_second,
                                    LineUnit::PerSecond,
                                    source,
                                ));
                                self.host_cpu.push(HostCpu::of(&format!("net-gzip-{cpus}cpu"), source, &report));
                            }
                            Some(Ok(report)) => {
                                self.fail(format!("{name} gzip on the q35 tap, {cpus} vCPU(s): errors: {report:?}"));
                            }
                            Some(Err(error)) => {
                                self.fail(format!("{name} gzip on the q35 tap, {cpus} vCPU(s): {error:#}"));
                            }
                            None => {}
                        }
                    }
                    for (&connections, report) in points.iter().zip(reports) {
                        match report {
                            // Errors at many connections (timeouts, resets) are
                            // part of what the curve shows: counted, not failed.
                            Ok(report) if report.requests > 0 => {
                                if report.socket_errors + report.non_2xx > 0 {
                                    eprintln!(
                                        "bench: {name} with {connections} connections: {} socket errors, {} non-2xx",
                                        report.socket_errors, report.non_2xx
                                    );
                                }
                                let key = curve_key(connections);
                                self.host_cpu.push(HostCpu::of(&key, source, &report));
                                readings.push(reading(&key, report.requests_per_second, LineUnit::PerSecond, source));
                            }
                            Ok(report) => {
                                self.fail(format!("{name} with {connections} connections: no answer: {report:?}"));
                            }
                            Err(error) => {
                                self.fail(format!("{name} with {connections} connections: {error:#}"));
                            }
                        }
                    }
                }
            }
        }
        for kind in ["mq", "gzip"] {
            if wanted(&format!("net-{kind}-scaling")) {
                readings.extend(scaling(&readings, kind, source));
            }
            if wanted(&format!("net-{kind}-core-scaling")) {
                readings.extend(core_scaling(&readings, &self.host_cpu, kind, source));
            }
        }
        for cpus in [1u32, 2] {
            let keys = [format!("net-user-{cpus}cpu-rps"), format!("net-user-{cpus}cpu-overflows")];
            if keys.iter().any(|key| wanted(key)) {
                readings.extend(self.user_network_boot(source, cpus, window));
            }
        }
        if wanted("net-echo") {
            let echoed = match source {
                Source::Toro => Some(self.toro_echo(echo_bytes)),
                Source::Linux => linux_echoed,
            };
            match echoed {
                Some(Ok(rate)) => readings.push(reading("net-echo", rate, LineUnit::PerSecond, source)),
                Some(Err(error)) => {
                    self.fail(format!("{name} TCP echo over a tap: {error:#}"));
                }
                // The boot failed, and said so.
                None => {}
            }
        }
        readings
    }

    /// One boot on QEMU user networking (the launcher's microvm, a
    /// virtio-mmio card, loopback port forwarded to the guest's port 80)
    /// with `cpus`: wrk on the host, 2 threads, 30 keep-alive connections
    /// for `window`; requests/s and the host's ListenOverflows over the
    /// run, or none if the boot failed (and said so).
    fn user_network_boot(&mut self, source: Source, cpus: u32, window: Duration) -> Vec<Reading> {
        let name = if source == Source::Toro { "Toro" } else { "Linux" };
        let port = match super::vm::free_loopback_port() {
            Ok(port) => port,
            Err(error) => {
                self.fail(format!("{name} HTTP over user networking: {error:#}"));
                return Vec::new();
            }
        };
        let mut config = match source {
            Source::Toro => VmConfig::new(self.webserver.clone(), self.accel),
            Source::Linux => self.linux.vm_config(self.accel, Mode::Serve),
        };
        config.cpus = cpus;
        config.network = Some(UserNetwork { tcp_forwards: vec![(port, crate::linux_guest::GUEST_HTTP_PORT)] });
        match self.serve(&config, port, READY_TIMEOUT, Some((2, CONNECTIONS, window))) {
            Ok(Some((_, Some(Ok(report))))) if report.requests > 0 && report.non_2xx == 0 => {
                if report.socket_errors > 0 {
                    // Connects stuck behind the forwarder's backlog of 1
                    // (SYN retransmits) and timeouts: counted, not failed.
                    eprintln!(
                        "bench: {name} user networking, {cpus} vCPU(s): {} socket errors under wrk",
                        report.socket_errors
                    );
                }
                self.host_cpu.push(HostCpu::of(&format!("net-user-{cpus}cpu"), source, &report));
                user_readings(cpus, &report, source)
            }
            Ok(Some((_, Some(Ok(report))))) => {
                self.fail(format!("{name} user networking, {cpus} vCPU(s): errors under wrk: {report:?}"));
                Vec::new()
            }
            Ok(Some((_, Some(Err(error))))) => {
                self.fail(format!("{name} user networking, {cpus} vCPU(s): {error:#}"));
                Vec::new()
            }
            Ok(Some((_, None))) | Ok(None) => {
                self.fail(format!(
                    "{name} user networking, {cpus} vCPU(s): no HTTP 200 within {} s",
                    READY_TIMEOUT.as_secs()
                ));
                Vec::new()
            }
            Err(error) => {
                self.fail(format!("{name} user networking, {cpus} vCPU(s): {error:#}"));
                Vec::new()
            }
        }
    }

    /// A guest on the tap network, QEMU q35 with `cpus`: Toro's web
    /// server, or the Linux guest in serve mode (with its echo server
    /// beside nginx when `echo`).
    fn tap_config(&self, source: Source, cpus: u32, echo: bool) -> VmConfig {
        let mut config = match source {
            Source::Toro => {
                let mut config = VmConfig::new(self.webserver.clone(), self.accel);
                config.command_line = crate::netns::guest_arguments().into();
                config
            }
            Source::Linux => {
                let mut config = self.linux.vm_config(self.accel, if echo { Mode::Echo } else { Mode::Serve });
                config.command_line.push(linux_tap_arguments());
                config
            }
        };
        config.machine = Machine::Q35;
        config.cpus = cpus;
        config.network = None;
        config
    }

    /// One boot of Toro's `examples/echo` on the 2-vCPU q35 tap the HTTP
    /// rows use (a queue pair per CPU); bytes per second echoed over one
    /// connection.
    fn toro_echo(&mut self, bytes: usize) -> Result<f64> {
        let mut config = VmConfig::new(self.echo.clone(), self.accel);
        config.command_line = crate::netns::guest_arguments().into();
        config.machine = Machine::Q35;
        config.cpus = 2;
        let namespace = crate::netns::Namespace::create("bench")?;
        namespace.add_tap("tap0", config.cpus, true)?;
        config.namespace = Some(namespace.name().into());
        let devices = vmm::Devices { taps: vec![vmm::Tap { queues: config.cpus, ..vmm::Tap::new("tap0") }] };
        let mut running = RunningVm::spawn(&vmm::qemu_config(&config, &devices))?;
        let ready = |line: &str| line.starts_with(TORO_ECHO_READY);
        if running.wait_for_line(&ready, running.start + READY_TIMEOUT).is_none() {
            let (output, errors) = running.stop();
            bail!("the echo server did not start\n{}{}", super::tail(&output), errors.trim_end());
        }
        let result = echo_throughput(namespace.name(), echo_address(), bytes);
        let (output, errors) = running.stop();
        if result.is_err() {
            eprintln!("bench: the echo guest printed:\n{}{}", super::tail(&output), errors.trim_end());
        }
        result
    }
}

/// What `examples/echo` prints once it listens.
const TORO_ECHO_READY: &str = "echo: tcp and udp port 7";

/// The echo servers' address on the tap network.
fn echo_address() -> SocketAddr {
    SocketAddr::from((crate::netns::GUEST_ADDRESS.parse::<std::net::Ipv4Addr>().expect("an IPv4 address"), 7))
}

/// What the Linux guest's `/init` reads to take the tap network's address.
fn linux_tap_arguments() -> String {
    format!(" toro_ip={}/{} toro_gw={}", crate::netns::GUEST_ADDRESS, crate::netns::PREFIX, crate::netns::HOST_ADDRESS)
}

/// The byte at `offset` of the echoed stream: not a multiple of any
/// power of two, so a dropped or repeated segment shows.
fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// Sends `bytes` to `address` over one connection made inside network
/// namespace `namespace` and reads them back while sending, checking each
/// byte; bytes per second from the first write to the last byte back.
pub fn echo_throughput(namespace: &str, address: SocketAddr, bytes: usize) -> Result<f64> {
    let path = format!("/var/run/netns/{namespace}");
    // setns applies to the calling thread only: a thread of its own makes
    // the socket inside the namespace, and the socket stays there.
    let handle = std::thread::spawn(move || -> Result<f64> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on a valid namespace file descriptor changes only
        // this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns into {path}: {}", std::io::Error::last_os_error());
        }
        echo_over(address, bytes)
    });
    handle.join().map_err(|_| anyhow::anyhow!("the echo client panicked"))?
}

/// [`echo_throughput`] in the current namespace.
fn echo_over(address: SocketAddr, bytes: usize) -> Result<f64> {
    let mut stream = connect_with_retries(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let started = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        const CHUNK: usize = 64 * 1024;
        let mut chunk = vec![0u8; CHUNK];
        let mut sent = 0;
        while sent < bytes {
            let count = CHUNK.min(bytes - sent);
            for (index, byte) in chunk[..count].iter_mut().enumerate() {
                *byte = pattern(sent + index);
            }
            writer.write_all(&chunk[..count])?;
            sent += count;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut buffer = vec![0u8; 64 * 1024];
    let mut received = 0;
    let read = (|| -> Result<()> {
        while received < bytes {
            let count = match stream.read(&mut buffer) {
                Ok(0) => bail!("the server closed after {received} of {bytes} bytes"),
                Ok(count) => count,
                Err(error) => bail!("reading after {received} of {bytes} bytes: {error}"),
            };
            if let Some(bad) = (0..count).find(|&index| buffer[index] != pattern(received + index)) {
                bail!("byte {} came back as {} (sent {})", received + bad, buffer[bad], pattern(received + bad));
            }
            received += count;
        }
        Ok(())
    })();
    let elapsed = started.elapsed().as_secs_f64();
    if read.is_err() {
        // The sender may be blocked on a full window: end it.
        let _ = stream.shutdown(Shutdown::Both);
    }
    let sent = sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"))?;
    read?;
    sent.context("sending")?;
    Ok(bytes as f64 / elapsed)
}

/// A connection to `address`, tried for a few seconds (a guest's stack may
/// print its line a moment before its first segment gets through).
fn connect_with_retries(address: SocketAddr) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() > deadline => bail!("connecting to {address}: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Boots `config` with a card on a tap with `queues` queues inside a fresh
/// network namespace (the guest at `netns::GUEST_ADDRESS`), waits up to
/// `timeout` for a 200 from inside the namespace, then runs wrk there with
/// each of `loads` (threads, connections, duration) in turn, then `after`
/// (more measurements in the namespace): each load's report. Multi-queue
/// (`queues` above 1) needs q35.
pub(super) fn serve_on_tap_loads(
    config: &VmConfig,
    timeout: Duration,
    queues: u32,
    loads: &[Load],
    after: &mut dyn FnMut(&crate::netns::Namespace),
) -> Result<Vec<Result<crate::wrk::Report>>> {
    let namespace = crate::netns::Namespace::create("bench")?;
    namespace.add_tap("tap0", queues, true)?;
    let mut config = config.clone();
    config.namespace = Some(namespace.name().into());
    let devices = vmm::Devices { taps: vec![vmm::Tap { queues, ..vmm::Tap::new("tap0") }] };
    let running = RunningVm::spawn(&vmm::qemu_config(&config, &devices))?;
    let url = format!("http://{}/", crate::netns::GUEST_ADDRESS);
    let deadline = running.start + timeout;
    let answered = loop {
        let status =
            namespace.command("curl").args(["-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", &url]).output();
        if status.is_ok_and(|o| o.stdout == b"200") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let reports = if answered {
        let reports: Vec<_> = loads
            .iter()
            .map(|load| {
                let mut wrk = namespace.command("wrk");
                if load.gzip {
                    namespace.gzip_served(&url)?;
                    wrk.args(["-H", "Accept-Encoding: gzip"]);
                }
                running.wrk(wrk, &url, load.threads, load.connections, load.window)
            })
            .collect();
        after(&namespace);
        Ok(reports)
    } else {
        Err(anyhow::anyhow!("no HTTP 200 over the tap within {} s", timeout.as_secs()))
    };
    let (output, errors) = running.stop();
    if reports.as_ref().map_or(true, |reports| reports.iter().any(|r| r.is_err())) {
        eprintln!("bench: over the tap the guest printed:\n{}{}", super::tail(&output), errors.trim_end());
    }
    reports
}

/// Requests/s against connections, Toro beside Linux: one line each
/// through the medians, on a logarithmic axis of connections.
pub fn curve_svg(rows: &[Workload]) -> Option<String> {
    let points: Vec<(u32, &Workload)> = CURVE
        .iter()
        .filter_map(|&c| rows.iter().find(|row| row.spec.key == curve_key(c)).map(|row| (c, row)))
        .collect();
    if points.len() < 2 {
        return None;
    }
    let median = |side: &Side| side.summary().map(|s| s.median);
    let toro: Vec<Option<f64>> = points.iter().map(|(_, row)| median(&row.toro)).collect();
    let linux: Vec<Option<f64>> = points.iter().map(|(_, row)| median(&row.linux[0].1)).collect();
    let series = [("Toro", report::TORO_COLOUR, toro), ("Linux guest (nginx)", report::LINUX_COLOUR, linux)];
    let labels: Vec<String> = points.iter().map(|(c, _)| c.to_string()).collect();
    Some(report::line_chart(
        "HTTP over a q35 tap, 2 vCPUs: requests/s against connections",
        "k req/s (median of the runs), higher is better; wrk keep-alive, 612-byte page",
        "connections (wrk, keep-alive)",
        "k req/s",
        &labels,
        &series,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_known_and_readings_fit_them() {
        for &c in CURVE.iter().chain(QUICK_CURVE) {
            assert!(SPECS.iter().any(|spec| spec.key == curve_key(c)), "{c}");
        }
        let report = crate::wrk::Report {
            requests: 100,
            requests_per_second: 2000.0,
            p50: Some(Duration::from_micros(500)),
            p99: Some(Duration::from_millis(4)),
            ..Default::default()
        };
        let mut toro = wrk_readings("net-mq-1cpu", &report, Source::Toro);
        let faster = crate::wrk::Report { requests_per_second: 3000.0, ..report.clone() };
        toro.extend(wrk_readings("net-mq-2cpu", &faster, Source::Toro));
        let ratio = scaling(&toro, "mq", Source::Toro).unwrap();
        assert_eq!((ratio.name.as_str(), ratio.value), ("net-mq-scaling", 1.5));
        assert_eq!(toro.iter().find(|r| r.name == "net-mq-1cpu-p99").unwrap().value, 4000.0);
        let linux = wrk_readings("net-mq-1cpu", &report, Source::Linux);
        assert!(linux.iter().all(|r| r.variant.as_deref() == Some("nginx")));
        // The table: 2 k req/s, 0.5 ms, 4 ms.
        let rows = workloads::collect_specs(SPECS, &[toro], &[linux], &[], "n/a", &|_| true);
        let rps = rows.iter().find(|row| row.spec.key == "net-mq-1cpu-rps").unwrap();
        assert_eq!(rps.toro.summary().unwrap().median, 2.0);
        assert_eq!(rps.advantage(&rps.linux[0].1), Some(1.0));
        // No scaling without both boots.
        assert!(scaling(&wrk_readings("net-mq-1cpu", &report, Source::Toro), "mq", Source::Toro).is_none());
        // The gzip rows: their own ratio, not the plain page's.
        let gzip = [("net-gzip-1cpu-rps", 1000.0), ("net-gzip-2cpu-rps", 1900.0)]
            .map(|(key, value)| reading(key, value, LineUnit::PerSecond, Source::Linux));
        let ratio = scaling(&gzip, "gzip", Source::Linux).unwrap();
        assert_eq!(
            (ratio.name.as_str(), ratio.value, ratio.variant.as_deref()),
            ("net-gzip-scaling", 1.9, Some("nginx"))
        );
        assert!(scaling(&gzip, "mq", Source::Linux).is_none());
        // Per core of the vCPU threads: 1000 req/s on 0.98 cores, 1900 on
        // 1.90: 1.0 (linear per core), though the plain ratio says 1.9.
        // The vCPU threads: every QEMU thread but the main loop (first).
        let cpu = |row: &str, source: Source, threads: Vec<f64>| HostCpu {
            row: row.into(),
            source,
            wrk: 0.1,
            qemu: 1.9,
            host: 2.0,
            threads,
        };
        assert!((cpu("net-gzip-2cpu", Source::Toro, vec![0.2, 0.9, 0.8]).vcpus() - 1.7).abs() < 1e-9);
        assert!(cpu("net-gzip-2cpu", Source::Toro, vec![0.2]).vcpus().is_nan());
        // The latest entry of the side counts (an earlier run's, Toro's and
        // another row's do not).
        let cores = [
            cpu("net-gzip-1cpu", Source::Linux, vec![0.1, 3.0]),
            cpu("net-gzip-1cpu", Source::Linux, vec![0.1, 0.98]),
            cpu("net-gzip-2cpu", Source::Linux, vec![0.1, 0.931, 0.931]),
            cpu("net-gzip-2cpu", Source::Toro, vec![0.1, 5.0]),
            cpu("net-mq-2cpu", Source::Linux, vec![0.1, 5.0]),
        ];
        let per_core = core_scaling(&gzip, &cores, "gzip", Source::Linux).unwrap();
        assert_eq!(per_core.name, "net-gzip-core-scaling");
        assert!((per_core.value - 1.0).abs() < 1e-9, "{}", per_core.value);
        // Unread cores (NaN) or a missing boot: no reading.
        let unread = [cpu("net-gzip-1cpu", Source::Linux, vec![0.1, f64::NAN]), cores[2].clone()];
        assert!(core_scaling(&gzip, &unread, "gzip", Source::Linux).is_none());
        assert!(core_scaling(&gzip, &cores[..2], "gzip", Source::Linux).is_none());
    }

    #[test]
    fn user_network_rows_in_the_full_and_quick_plans() {
        let all = |_: &str| true;
        let full = plan(false, &all);
        for key in ["net-user-1cpu-rps", "net-user-1cpu-overflows", "net-user-2cpu-rps", "net-user-2cpu-overflows"] {
            assert!(full.iter().any(|k| k == key), "{key} in the full plan");
        }
        assert!(full.iter().any(|k| k == "net-conn-256") && full.iter().any(|k| k == "net-mq-1cpu-rps"));
        // Quick: the 2-vCPU boot only, and the short curve.
        let quick = plan(true, &all);
        assert!(quick.iter().any(|k| k == "net-user-2cpu-rps") && quick.iter().any(|k| k == "net-user-2cpu-overflows"));
        assert!(!quick.iter().any(|k| k.starts_with("net-user-1cpu-")), "{quick:?}");
        assert!(!quick.iter().any(|k| k == "net-conn-256") && quick.iter().any(|k| k == "net-mq-1cpu-rps"));
        // --only: just those rows.
        let only = plan(false, &|key: &str| key.starts_with("net-user-"));
        assert_eq!(only.len(), 4, "{only:?}");
        assert_eq!(user_cpus_of("net-user-1cpu-rps"), Some(1));
        assert_eq!(user_cpus_of("net-user-2cpu-overflows"), Some(2));
        assert_eq!(user_cpus_of("net-mq-1cpu-rps"), None);
    }

    #[test]
    fn user_network_readings_carry_the_overflows() {
        let report = crate::wrk::Report {
            requests: 9000,
            requests_per_second: 1800.0,
            listen_overflows: Some(7),
            ..Default::default()
        };
        let toro = user_readings(1, &report, Source::Toro);
        let names: Vec<&str> = toro.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["net-user-1cpu-rps", "net-user-1cpu-overflows"]);
        let linux =
            user_readings(1, &crate::wrk::Report { requests_per_second: 600.0, ..report.clone() }, Source::Linux);
        assert!(linux.iter().all(|r| r.variant.as_deref() == Some("nginx")));
        assert!(workloads::check_specs(SPECS, &toro, Source::Toro, &|_| false).is_empty());
        assert!(workloads::check_specs(SPECS, &linux, Source::Linux, &|_| false).is_empty());
        let rows = workloads::collect_specs(SPECS, &[toro], &[linux], &[], "n/a", &|k| k.starts_with("net-user-1"));
        let rps = rows.iter().find(|row| row.spec.key == "net-user-1cpu-rps").unwrap();
        assert_eq!(rps.toro.summary().unwrap().median, 1.8);
        assert_eq!(rps.advantage(&rps.linux[0].1), Some(3.0));
        let overflows = rows.iter().find(|row| row.spec.key == "net-user-1cpu-overflows").unwrap();
        assert_eq!(overflows.toro.summary().unwrap().median, 7.0);
        // Unread counter: no overflow figure (the row shows it failed).
        let unread = user_readings(2, &crate::wrk::Report { listen_overflows: None, ..report }, Source::Toro);
        assert_eq!(unread.len(), 1);
        assert_eq!(unread[0].name, "net-user-2cpu-rps");
    }

    #[test]
    fn host_cpu_is_noted_per_row_and_side() {
        let run = |row: &str, source, wrk: f64, qemu: Option<f64>| {
            let report = crate::wrk::Report {
                wall: Duration::from_secs(5),
                wrk_cpu: Some(Duration::from_secs_f64(wrk * 5.0)),
                qemu_cpu: qemu.map(|q| Duration::from_secs_f64(q * 5.0)),
                host_busy: qemu.map(|q| Duration::from_secs_f64((q + wrk + 0.05) * 5.0)),
                qemu_threads: qemu.map_or(Vec::new(), |q| {
                    vec![Duration::from_secs_f64(q * 2.5), Duration::from_secs_f64(q * 2.5), Duration::from_millis(1)]
                }),
                ..Default::default()
            };
            HostCpu::of(row, source, &report)
        };
        let entries = [
            run("net-mq-1cpu", Source::Toro, 0.8, Some(1.0)),
            run("net-mq-1cpu", Source::Linux, 0.2, Some(1.7)),
            run("net-mq-1cpu", Source::Toro, 1.0, Some(1.2)),
            run("net-mq-1cpu", Source::Toro, 0.9, None),
            run("net-user-2cpu", Source::Linux, 0.5, Some(1.4)),
        ];
        assert_eq!(
            entries[0].shown(),
            "wrk 0.80 + QEMU 1.00 cores (main loop 0.50, other threads 0.50), host busy 1.85"
        );
        assert_eq!(entries[3].shown(), "wrk 0.90 + QEMU ? cores (main loop ?, other threads -), host busy ?");
        let notes = host_cpu_notes(&entries, 2);
        assert_eq!(
            notes,
            [
                "net-mq-1cpu: Toro wrk 0.90 + QEMU 1.10 (its main loop 0.55) = 2.00 (host busy 2.05) of 2; \
                 Linux wrk 0.20 + QEMU 1.70 (its main loop 0.85) = 1.90 (host busy 1.95) of 2",
                "net-user-2cpu: Linux wrk 0.50 + QEMU 1.40 (its main loop 0.70) = 1.90 (host busy 1.95) of 2",
            ]
        );
        let json = host_cpu_json(&entries).render();
        assert!(json.contains("\"row\": \"net-mq-1cpu\"") && json.contains("\"side\": \"toro\""), "{json}");
        assert!(json.contains("\"qemu_cores\": [1, 1.2, null]"), "{json}");
        assert!(json.contains("[0.5, 0.5, 0]"), "{json}");
        assert_eq!(json.matches("\"row\"").count(), 3, "{json}");
        assert!(host_cpu_notes(&[], 2).is_empty());
    }

    #[test]
    fn echo_checks_every_byte_against_a_local_server() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for corrupt in [false, true] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buffer = vec![0u8; 16384];
                let mut offset = 0usize;
                loop {
                    let count = stream.read(&mut buffer).unwrap();
                    if count == 0 {
                        break;
                    }
                    // The planted fault: one byte changed at 100000.
                    if corrupt && offset <= 100_000 && 100_000 < offset + count {
                        buffer[100_000 - offset] ^= 1;
                    }
                    offset += count;
                    if stream.write_all(&buffer[..count]).is_err() {
                        break;
                    }
                }
            }
        });
        let rate = echo_over(address, 1 << 20).unwrap();
        assert!(rate > 0.0);
        let error = echo_over(address, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("byte 100000"), "{error}");
        server.join().unwrap();
    }

    #[test]
    fn curve_plots_both_sides() {
        let mut toro = Vec::new();
        let mut linux = Vec::new();
        for (index, &c) in CURVE.iter().enumerate() {
            let value = 1000.0 * (index + 1) as f64;
            toro.push(reading(&curve_key(c), value, LineUnit::PerSecond, Source::Toro));
            linux.push(reading(&curve_key(c), value / 2.0, LineUnit::PerSecond, Source::Linux));
        }
        let rows = workloads::collect_specs(SPECS, &[toro], &[linux], &[], "n/a", &|_| true);
        let svg = curve_svg(&rows).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("256") && svg.contains("Linux guest"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(curve_svg(&rows[..1]).is_none());
    }
}
