//! The allocation and thread/message workloads (issues 4 and 5): what each
//! one is, the `BENCH` lines the guests print for them, and their results
//! side by side.
//!
//! Toro's `examples/bench` prints `BENCH <name> <value> <unit>`; the Linux
//! programs (`bench/linux`) print `BENCH <name>:<yardstick> <value> <unit>`,
//! the yardstick naming what Linux used (`glibc`, `mimalloc`, `mpsc`,
//! `crossbeam`, `sched_yield`, `std`). Units are `ns`, `us` or `per_s`.
//! Each run of a guest gives one figure per line; the table shows the
//! median over runs with the min–max, and Toro's advantage over each
//! yardstick.

use std::fmt::Write as _;

use super::report::{self, Json, Side};
use super::stats::Summary;

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Times: lower is better.
    Lower,
    /// Rates: higher is better.
    Higher,
}

/// The unit of a `BENCH` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineUnit {
    Nanoseconds,
    Microseconds,
    PerSecond,
    /// A count of events (the host's ListenOverflows over a wrk run): read
    /// by xtask itself, never from a guest's line.
    Count,
}

impl LineUnit {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "ns" => Some(Self::Nanoseconds),
            "us" => Some(Self::Microseconds),
            "per_s" => Some(Self::PerSecond),
            _ => None,
        }
    }
}

/// A Linux yardstick for a workload: the name its lines carry and how the
/// table calls it.
#[derive(Debug)]
pub struct Yardstick {
    pub variant: &'static str,
    pub label: &'static str,
}

/// One workload.
#[derive(Debug)]
pub struct Spec {
    /// The name in `BENCH` lines; also the JSON key and the plot's name.
    pub key: &'static str,
    pub title: &'static str,
    /// The unit its lines must carry.
    pub line_unit: LineUnit,
    /// The unit shown, and what the line's value is divided by for it
    /// (dividing, not multiplying by 1e-6, keeps the record's figures
    /// free of binary fractions: 9506156 / 1e6 is 9.506156).
    pub unit: &'static str,
    pub divisor: f64,
    pub better: Better,
    pub yardsticks: &'static [Yardstick],
}

const ALLOCATORS: &[Yardstick] =
    &[Yardstick { variant: "glibc", label: "glibc malloc" }, Yardstick { variant: "mimalloc", label: "mimalloc" }];
const CHANNELS: &[Yardstick] = &[
    Yardstick { variant: "mpsc", label: "std::sync::mpsc" },
    Yardstick { variant: "crossbeam", label: "crossbeam-channel" },
];
const STD_THREAD: &[Yardstick] = &[Yardstick { variant: "std", label: "std::thread" }];
/// A request to a thread that owns a resource on the other CPU, and its reply.
const CROSS_CPU_CALLS: &[Yardstick] = &[
    Yardstick { variant: "mpsc", label: "std::sync::mpsc" },
    Yardstick { variant: "crossbeam", label: "crossbeam-channel" },
    Yardstick { variant: "pipe", label: "a pipe each way" },
];

/// The workload Toro measures in a boot of its own, with
/// `toro.watchdog=off` (the yield workload again): beside `yield`, what the
/// watchdog costs on the yield path.
pub const WATCHDOG_OFF: &str = "yield-watchdog-off";

/// Every workload's key, in the order of the table.
pub fn keys() -> Vec<&'static str> {
    SPECS.iter().map(|spec| spec.key).collect()
}

/// Every workload, in the order of the table.
pub const SPECS: &[Spec] = &[
    Spec {
        key: "alloc-1cpu",
        title: "alloc+free pairs per CPU, 1 CPU busy",
        line_unit: LineUnit::PerSecond,
        unit: "M/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: ALLOCATORS,
    },
    Spec {
        key: "alloc-2cpu",
        title: "alloc+free pairs per CPU, 2 CPUs busy",
        line_unit: LineUnit::PerSecond,
        unit: "M/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: ALLOCATORS,
    },
    Spec {
        key: "alloc-remote",
        title: "remote free: blocks from CPU 1 freed on CPU 0",
        line_unit: LineUnit::PerSecond,
        unit: "M/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: ALLOCATORS,
    },
    Spec {
        key: "alloc-borrowed",
        title: "24 MiB block borrowed from CPU 1's share: alloc + write each page + free",
        line_unit: LineUnit::Nanoseconds,
        unit: "µs",
        divisor: 1e3,
        better: Better::Lower,
        yardsticks: ALLOCATORS,
    },
    Spec {
        key: "yield",
        title: "yield: switch between 2 threads on 1 CPU",
        line_unit: LineUnit::Nanoseconds,
        unit: "ns",
        divisor: 1.0,
        better: Better::Lower,
        yardsticks: &[Yardstick { variant: "sched_yield", label: "sched_yield, pinned" }],
    },
    Spec {
        key: WATCHDOG_OFF,
        title: "yield, Toro booted with toro.watchdog=off",
        line_unit: LineUnit::Nanoseconds,
        unit: "ns",
        divisor: 1.0,
        better: Better::Lower,
        yardsticks: &[Yardstick { variant: "sched_yield", label: "sched_yield, pinned" }],
    },
    Spec {
        key: "spawn-join-same",
        title: "spawn + join, same CPU",
        line_unit: LineUnit::Nanoseconds,
        unit: "µs",
        divisor: 1e3,
        better: Better::Lower,
        yardsticks: STD_THREAD,
    },
    Spec {
        key: "spawn-join-other",
        title: "spawn + join, other CPU",
        line_unit: LineUnit::Nanoseconds,
        unit: "µs",
        divisor: 1e3,
        better: Better::Lower,
        yardsticks: STD_THREAD,
    },
    Spec {
        key: "message-latency",
        title: "message across CPUs, one way (ping-pong / 2)",
        line_unit: LineUnit::Nanoseconds,
        unit: "µs",
        divisor: 1e3,
        better: Better::Lower,
        yardsticks: CHANNELS,
    },
    Spec {
        key: "service-call-other",
        title: "service call from another CPU (request + reply)",
        line_unit: LineUnit::Nanoseconds,
        unit: "µs",
        divisor: 1e3,
        better: Better::Lower,
        yardsticks: CROSS_CPU_CALLS,
    },
    Spec {
        key: "service-call-same",
        title: "service call on its owner CPU (direct)",
        line_unit: LineUnit::Nanoseconds,
        unit: "ns",
        divisor: 1.0,
        better: Better::Lower,
        yardsticks: &[Yardstick { variant: "mutex", label: "std::sync::Mutex, uncontended" }],
    },
    Spec {
        key: "interrupt-to-thread",
        title: "interrupt to its service thread on an idle CPU, median",
        line_unit: LineUnit::Nanoseconds,
        unit: "µs",
        divisor: 1e3,
        better: Better::Lower,
        yardsticks: &[Yardstick { variant: "pipe", label: "pipe write -> reader blocked on the other CPU" }],
    },
    Spec {
        key: "channel-throughput",
        title: "channel throughput across CPUs (u64)",
        line_unit: LineUnit::PerSecond,
        unit: "M msg/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: CHANNELS,
    },
    Spec {
        key: "channel-4-producers",
        title: "channel throughput, 4 senders over the CPUs to 1 receiver (u64)",
        line_unit: LineUnit::PerSecond,
        unit: "M msg/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: CHANNELS,
    },
    Spec {
        key: "sleep-late-p50",
        title: "sleep(1 ms): lateness, median",
        line_unit: LineUnit::Microseconds,
        unit: "µs",
        divisor: 1.0,
        better: Better::Lower,
        yardsticks: &[Yardstick { variant: "std", label: "std::thread::sleep" }],
    },
    Spec {
        key: "sleep-late-p99",
        title: "sleep(1 ms): lateness, 99th percentile",
        line_unit: LineUnit::Microseconds,
        unit: "µs",
        divisor: 1.0,
        better: Better::Lower,
        yardsticks: &[Yardstick { variant: "std", label: "std::thread::sleep" }],
    },
];

/// One parsed `BENCH` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub name: String,
    /// The Linux yardstick; `None` on Toro's lines.
    pub variant: Option<String>,
    pub value: f64,
    pub unit: LineUnit,
}

/// Why a `BENCH` line could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Not `BENCH <name> <value> <unit>`.
    Shape(String),
    /// The value is not a finite, non-negative number.
    Value(String),
    /// The unit is none of `ns`, `us`, `per_s`.
    Unit(String),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shape(line) => write!(f, "not `BENCH <name> <value> <unit>`: {line:?}"),
            Self::Value(line) => write!(f, "the value is not a non-negative number: {line:?}"),
            Self::Unit(line) => write!(f, "unknown unit (ns, us or per_s): {line:?}"),
        }
    }
}

/// Reads one line of guest output: `None` if it is not a `BENCH` line,
/// else the reading or why it is malformed. Serial output may end lines
/// with `\r` and carry stray spaces; both are tolerated.
pub fn parse_line(line: &str) -> Option<Result<Reading, LineError>> {
    let mut words = line.split_whitespace();
    if words.next() != Some("BENCH") {
        return None;
    }
    let shape = || LineError::Shape(line.trim().to_string());
    let parsed = (|| {
        let (Some(name), Some(value), Some(unit), None) = (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(shape());
        };
        let (name, variant) = match name.split_once(':') {
            Some((name, variant)) => (name, Some(variant)),
            None => (name, None),
        };
        if name.is_empty() || variant.is_some_and(str::is_empty) {
            return Err(shape());
        }
        let value: f64 = value.parse().map_err(|_| LineError::Value(line.trim().to_string()))?;
        if !value.is_finite() || value < 0.0 {
            return Err(LineError::Value(line.trim().to_string()));
        }
        let unit = LineUnit::parse(unit).ok_or_else(|| LineError::Unit(line.trim().to_string()))?;
        Ok(Reading { name: name.to_string(), variant: variant.map(str::to_string), value, unit })
    })();
    Some(parsed)
}

/// Every reading in a guest's output, and what was wrong with the rest.
pub fn parse_output(output: &str) -> (Vec<Reading>, Vec<String>) {
    let mut readings = Vec::new();
    let mut problems = Vec::new();
    for line in output.lines() {
        match parse_line(line) {
            None => {}
            Some(Ok(reading)) => readings.push(reading),
            Some(Err(error)) => problems.push(error.to_string()),
        }
    }
    (readings, problems)
}

/// Which side a set of readings comes from, for checking them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Toro,
    /// The Linux programs (in the guest, or host-native): every yardstick
    /// of every workload.
    Linux,
}

/// What is missing or unexpected in one run's readings, which must hold a
/// figure for each workload `wanted` says it ran.
pub fn check(readings: &[Reading], source: Source, wanted: &dyn Fn(&str) -> bool) -> Vec<String> {
    check_specs(SPECS, readings, source, wanted)
}

/// [`check`] against other rows than [`SPECS`] (the storage rows).
pub fn check_specs(
    specs: &'static [Spec],
    readings: &[Reading],
    source: Source,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for reading in readings {
        let Some(spec) = specs.iter().find(|spec| spec.key == reading.name) else {
            problems.push(format!("unknown workload {:?}", reading.name));
            continue;
        };
        if reading.unit != spec.line_unit {
            problems.push(format!("{} in {:?}, expected {:?}", reading.name, reading.unit, spec.line_unit));
        }
        let known = match (&reading.variant, source) {
            (None, Source::Toro) => true,
            (Some(variant), Source::Linux) => spec.yardsticks.iter().any(|y| y.variant == variant),
            _ => false,
        };
        if !known {
            problems.push(format!("unexpected line for {} ({:?})", reading.name, reading.variant));
        }
    }
    for spec in specs.iter().filter(|spec| wanted(spec.key)) {
        let wanted: Vec<Option<&str>> = match source {
            Source::Toro => vec![None],
            Source::Linux => spec.yardsticks.iter().map(|y| Some(y.variant)).collect(),
        };
        for variant in wanted {
            if find(readings, spec.key, variant).is_none() {
                match variant {
                    Some(variant) => problems.push(format!("no figure for {}:{variant}", spec.key)),
                    None => problems.push(format!("no figure for {}", spec.key)),
                }
            }
        }
    }
    problems
}

fn find(readings: &[Reading], name: &str, variant: Option<&str>) -> Option<f64> {
    readings.iter().rev().find(|r| r.name == name && r.variant.as_deref() == variant).map(|r| r.value)
}

/// One workload's results: Toro, each Linux yardstick in the guest, and
/// each yardstick host-native (for orientation only).
#[derive(Clone, Debug)]
pub struct Workload {
    pub spec: &'static Spec,
    pub toro: Side,
    pub linux: Vec<(&'static Yardstick, Side)>,
    pub host: Vec<(&'static Yardstick, Side)>,
}

impl Workload {
    /// How many times better Toro's median is than `linux`'s: Linux/Toro
    /// for times, Toro/Linux for rates; above 1, Toro is ahead.
    pub fn advantage(&self, linux: &Side) -> Option<f64> {
        let (toro, linux) = (self.toro.summary()?, linux.summary()?);
        advantage(self.spec.better, &toro, &linux)
    }
}

fn advantage(better: Better, toro: &Summary, linux: &Summary) -> Option<f64> {
    match better {
        Better::Lower => (toro.median > 0.0).then(|| linux.median / toro.median),
        Better::Higher => (linux.median > 0.0).then(|| toro.median / linux.median),
    }
}

/// The results of the workloads `wanted` says were run, from each run's
/// readings (an empty run, one that failed, counts as a failed sample).
/// `host` empty: host-native not run, and why.
pub fn collect(
    toro_runs: &[Vec<Reading>],
    linux_runs: &[Vec<Reading>],
    host_runs: &[Vec<Reading>],
    host_missing: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<Workload> {
    collect_specs(SPECS, toro_runs, linux_runs, host_runs, host_missing, wanted)
}

/// [`collect`] for other rows than [`SPECS`] (the storage rows).
pub fn collect_specs(
    specs: &'static [Spec],
    toro_runs: &[Vec<Reading>],
    linux_runs: &[Vec<Reading>],
    host_runs: &[Vec<Reading>],
    host_missing: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<Workload> {
    let samples = |runs: &[Vec<Reading>], spec: &Spec, variant: Option<&str>| -> Vec<f64> {
        runs.iter().map(|run| find(run, spec.key, variant).map_or(f64::NAN, |value| value / spec.divisor)).collect()
    };
    specs
        .iter()
        .filter(|spec| wanted(spec.key))
        .map(|spec| Workload {
            spec,
            toro: Side::measured(samples(toro_runs, spec, None)),
            linux: spec
                .yardsticks
                .iter()
                .map(|yardstick| (yardstick, Side::measured(samples(linux_runs, spec, Some(yardstick.variant)))))
                .collect(),
            host: spec
                .yardsticks
                .iter()
                .map(|yardstick| {
                    let side = if host_runs.is_empty() {
                        Side::Missing(host_missing.to_string())
                    } else {
                        Side::measured(samples(host_runs, spec, Some(yardstick.variant)))
                    };
                    (yardstick, side)
                })
                .collect(),
        })
        .collect()
}

const HEADERS: [&str; 5] = ["workload", "Toro", "Linux guest", "Linux yardstick", "Toro's advantage"];

fn rows(workloads: &[Workload]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for workload in workloads {
        let spec = workload.spec;
        for (yardstick, side) in &workload.linux {
            rows.push(vec![
                spec.title.to_string(),
                report::cell(&workload.toro, spec.unit),
                report::cell(side, spec.unit),
                yardstick.label.to_string(),
                workload.advantage(side).map_or_else(|| "—".into(), report::times),
            ]);
        }
    }
    rows
}

fn host_rows(workloads: &[Workload]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for workload in workloads {
        for (yardstick, side) in &workload.host {
            rows.push(vec![
                workload.spec.title.to_string(),
                report::cell(side, workload.spec.unit),
                yardstick.label.to_string(),
            ]);
        }
    }
    rows
}

/// The table for the terminal.
pub fn table(workloads: &[Workload]) -> String {
    report::aligned(&HEADERS, &rows(workloads))
}

/// The host-native figures for the terminal (not the comparison).
pub fn host_table(workloads: &[Workload]) -> String {
    report::aligned(&["workload", "host-native Linux", "yardstick"], &host_rows(workloads))
}

/// The Markdown part of `docs/benchmarks.md` for the workloads;
/// `host_cpu` (`net::host_cpu_notes`) goes under the network table.
/// "9", or "5–9" when the rows differ: how many runs (boots) each side
/// of these rows had, from their samples; `fallback` when none was
/// measured. (Full runs boot the thread rows more often than the rest:
/// `WORKLOAD_RUNS`.)
fn runs_of(workloads: &[Workload], fallback: usize) -> String {
    let counts = workloads.iter().flat_map(|workload| {
        core::iter::once(&workload.toro).chain(workload.linux.iter().map(|(_, side)| side)).filter_map(
            |side| match side {
                Side::Measured { samples, .. } => Some(samples.len()),
                Side::Missing(_) => None,
            },
        )
    });
    let (low, high) = counts.fold((usize::MAX, 0), |(low, high), count| (low.min(count), high.max(count)));
    match (low, high) {
        (usize::MAX, _) => fallback.to_string(),
        (low, high) if low == high => low.to_string(),
        (low, high) => format!("{low}–{high}"),
    }
}

pub fn markdown(
    workloads: &[Workload],
    runs: usize,
    linux_command_line: &str,
    host_cpu: &[String],
    plots: &[(String, String)],
) -> String {
    let mut out = String::new();
    out.push_str("### Allocation, threads and messages (issues 4 and 5)\n\n");
    // The storage rows (keys `disk-...`, `bench/storage.rs`) get a table of their own.
    let (storage, workloads): (Vec<Workload>, Vec<Workload>) =
        workloads.iter().cloned().partition(|workload| workload.spec.key.starts_with("disk-"));
    // The network rows (keys `net-...`, `bench/net.rs`) too.
    let (network, workloads): (Vec<Workload>, Vec<Workload>) =
        workloads.into_iter().partition(|workload| workload.spec.key.starts_with("net-"));
    let _ = writeln!(
        out,
        "Toro's `examples/bench` against the static Linux programs of `bench/linux` in the same Linux guest \
         (command line `{linux_command_line}`), both pinned the same way: the measuring thread on CPU 0, its \
         partner on CPU 0 or CPU 1 as the workload says. Median of {} runs per side, each a fresh boot, \
         (min–max) after it. Toro's advantage: how many times better Toro's median is (Linux/Toro for times, \
         Toro/Linux for rates); above 1x Toro is ahead.\n",
        runs_of(&workloads, runs)
    );
    out.push_str(&report::markdown_grid(&HEADERS, &rows(&workloads), &["---", "--:", "--:", "---", "--:"]));
    out.push('\n');
    if !network.is_empty() {
        out.push_str("### Network (issue 10)\n\n");
        let _ = writeln!(
            out,
            "Toro's `examples/webserver` against nginx in the Linux guest, each on a tap inside a network namespace \
             of its own, wrk inside the namespace; QEMU q35 with one queue pair per vCPU; the echo row: \
             `examples/echo` against `toro-bench-echo` of `bench/linux` (beside nginx) on the 2-vCPU boot. The \
             user-networking rows: the same wrk load from the host through QEMU's port forward on 127.0.0.1, on \
             microvm; the overflow rows count the host's ListenOverflows over each of those wrk runs (the \
             forward's listen backlog is 1). Median of {} runs per side.\n",
            runs_of(&network, runs)
        );
        out.push_str(&report::markdown_grid(&HEADERS, &rows(&network), &["---", "--:", "--:", "---", "--:"]));
        out.push('\n');
        if !host_cpu.is_empty() {
            out.push_str(
                "Host CPU during each wrk run (median over the runs, in cores: CPU seconds over the run's wall \
                 seconds; wrk's own rusage, QEMU's `/proc/PID/stat`, the host's busy time from `/proc/stat`, \
                 every process; lower is not better here, it says whether the host's cores were all taken, and \
                 by whom):\n\n",
            );
            for note in host_cpu {
                let _ = writeln!(out, "- {note}");
            }
            out.push('\n');
        }
    }
    if !storage.is_empty() {
        out.push_str("### Storage (issue 11)\n\n");
        let _ = writeln!(
            out,
            "Toro's `examples/diskbench` against `toro-bench-disk` of `bench/linux` (`O_DIRECT`) in the Linux guest \
             (`toro_mode=disk`), on the same two fresh images per boot: an ext2 image (4 KiB blocks) holding a \
             32 MiB file made on the host, and a raw 64 MiB disk; one request at a time. Median of {} runs per \
             side.\n",
            runs_of(&storage, runs)
        );
        out.push_str(&report::markdown_grid(&HEADERS, &rows(&storage), &["---", "--:", "--:", "---", "--:"]));
        out.push('\n');
    }
    if workloads.iter().any(|w| w.host.iter().any(|(_, side)| matches!(side, Side::Measured { .. }))) {
        out.push_str(
            "Host-native, for orientation only (**not the comparison**): the same static Linux programs run \
             directly on this machine's host kernel, outside any VM, pinned the same way.\n\n",
        );
        out.push_str(&report::markdown_grid(
            &["workload", "host-native Linux", "yardstick"],
            &host_rows(&workloads),
            &["---", "--:", "---"],
        ));
        out.push('\n');
    }
    for (file, title) in plots {
        let _ = writeln!(out, "![{title}]({file})");
    }
    out
}

/// A bar chart: Toro and each Linux yardstick in the guest.
pub fn svg(workload: &Workload) -> String {
    let spec = workload.spec;
    let mut bars = vec![report::Bar { label: "Toro".into(), side: &workload.toro, colour: report::TORO_COLOUR }];
    let colours = ["#495057", "#868e96"];
    for (index, (yardstick, side)) in workload.linux.iter().enumerate() {
        let label =
            if workload.linux.len() == 1 { "Linux guest".to_string() } else { format!("Linux {}", yardstick.variant) };
        bars.push(report::Bar { label, side, colour: colours[index % colours.len()] });
    }
    let direction = match spec.better {
        Better::Lower => "lower is better",
        Better::Higher => "higher is better",
    };
    let advantages: Vec<String> = workload
        .linux
        .iter()
        .filter_map(|(yardstick, side)| {
            workload.advantage(side).map(|ratio| format!("{} vs {}", report::times(ratio), yardstick.variant))
        })
        .collect();
    let subtitle = if advantages.is_empty() {
        format!("{}, {direction}", spec.unit)
    } else {
        format!("{}, {direction}; Toro: {}", spec.unit, advantages.join(", "))
    };
    report::bar_chart(spec.title, &subtitle, spec.unit, &bars)
}

/// The workloads in the JSON record.
pub fn json(workloads: &[Workload]) -> Json {
    let yardsticks = |sides: &[(&'static Yardstick, Side)], with_advantage: Option<&Workload>| {
        Json::Array(
            sides
                .iter()
                .map(|(yardstick, side)| {
                    let mut fields = vec![
                        ("yardstick", Json::String(yardstick.variant.into())),
                        ("label", Json::String(yardstick.label.into())),
                        ("result", report::side_json(side)),
                    ];
                    if let Some(workload) = with_advantage {
                        fields.push(("toro_advantage", workload.advantage(side).map_or(Json::Null, Json::Number)));
                    }
                    Json::object(fields)
                })
                .collect(),
        )
    };
    Json::Array(
        workloads
            .iter()
            .map(|workload| {
                let spec = workload.spec;
                Json::object(vec![
                    ("key", Json::String(spec.key.into())),
                    ("title", Json::String(spec.title.into())),
                    ("unit", Json::String(spec.unit.into())),
                    (
                        "better",
                        Json::String(match spec.better {
                            Better::Lower => "lower".into(),
                            Better::Higher => "higher".into(),
                        }),
                    ),
                    ("toro", report::side_json(&workload.toro)),
                    ("linux_guest", yardsticks(&workload.linux, Some(workload))),
                    ("host_native_not_the_comparison", yardsticks(&workload.host, None)),
                ])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bench_lines() {
        assert_eq!(
            parse_line("BENCH alloc-1cpu 1591983 per_s"),
            Some(Ok(Reading {
                name: "alloc-1cpu".into(),
                variant: None,
                value: 1_591_983.0,
                unit: LineUnit::PerSecond
            }))
        );
        assert_eq!(
            parse_line("BENCH message-latency:crossbeam 541.1 ns\r"),
            Some(Ok(Reading {
                name: "message-latency".into(),
                variant: Some("crossbeam".into()),
                value: 541.1,
                unit: LineUnit::Nanoseconds
            }))
        );
        assert_eq!(parse_line("BENCH sleep-late-p99:std 165.4 us").unwrap().unwrap().unit, LineUnit::Microseconds);
        assert_eq!(parse_line("bench: toro, 2 cpus"), None);
        assert_eq!(parse_line("BENCHMARK 1 ns"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn rejects_malformed_bench_lines() {
        assert!(matches!(parse_line("BENCH yield 12.5"), Some(Err(LineError::Shape(_)))));
        assert!(matches!(parse_line("BENCH yield 12.5 ns extra"), Some(Err(LineError::Shape(_)))));
        assert!(matches!(parse_line("BENCH yield: 12.5 ns"), Some(Err(LineError::Shape(_)))));
        assert!(matches!(parse_line("BENCH :glibc 12.5 ns"), Some(Err(LineError::Shape(_)))));
        assert!(matches!(parse_line("BENCH yield fast ns"), Some(Err(LineError::Value(_)))));
        assert!(matches!(parse_line("BENCH yield -1 ns"), Some(Err(LineError::Value(_)))));
        assert!(matches!(parse_line("BENCH yield NaN ns"), Some(Err(LineError::Value(_)))));
        assert!(matches!(parse_line("BENCH yield inf ns"), Some(Err(LineError::Value(_)))));
        assert!(matches!(parse_line("BENCH yield 12 ms"), Some(Err(LineError::Unit(_)))));
    }

    #[test]
    fn parse_output_keeps_readings_and_reports_the_rest() {
        let output = "boot noise\nBENCH yield 230 ns\nBENCH broken\nBENCH alloc-1cpu:glibc 5 per_s\n";
        let (readings, problems) = parse_output(output);
        assert_eq!(readings.len(), 2);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("BENCH broken"));
    }

    fn toro_output() -> String {
        let mut text = String::new();
        for spec in SPECS {
            let unit = match spec.line_unit {
                LineUnit::Nanoseconds => "ns",
                LineUnit::Microseconds => "us",
                LineUnit::PerSecond => "per_s",
                LineUnit::Count => unreachable!("no guest workload is a count"),
            };
            text.push_str(&format!("BENCH {} 100 {unit}\n", spec.key));
        }
        text
    }

    fn linux_output(scale: f64) -> String {
        let mut text = String::new();
        for spec in SPECS {
            let unit = match spec.line_unit {
                LineUnit::Nanoseconds => "ns",
                LineUnit::Microseconds => "us",
                LineUnit::PerSecond => "per_s",
                LineUnit::Count => unreachable!("no guest workload is a count"),
            };
            for yardstick in spec.yardsticks {
                text.push_str(&format!("BENCH {}:{} {} {unit}\n", spec.key, yardstick.variant, 100.0 * scale));
            }
        }
        text
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn checks_that_every_workload_reported() {
        let (toro, _) = parse_output(&toro_output());
        assert!(check(&toro, Source::Toro, &all).is_empty(), "{:?}", check(&toro, Source::Toro, &all));
        let (linux, _) = parse_output(&linux_output(2.0));
        assert!(check(&linux, Source::Linux, &all).is_empty(), "{:?}", check(&linux, Source::Linux, &all));
        // Toro's lines are not Linux's.
        assert!(!check(&toro, Source::Linux, &all).is_empty());
        let partial: Vec<Reading> = toro.iter().filter(|r| r.name != "yield").cloned().collect();
        assert_eq!(check(&partial, Source::Toro, &all), ["no figure for yield"]);
        // A workload not run is not missing.
        assert!(check(&partial, Source::Toro, &|key| key != "yield").is_empty());
        let wrong_unit = parse_output("BENCH yield 5 per_s\n").0;
        assert!(check(&wrong_unit, Source::Toro, &all).iter().any(|p| p.contains("expected Nanoseconds")));
        let unknown = parse_output("BENCH teleport 5 ns\n").0;
        assert!(check(&unknown, Source::Toro, &all).iter().any(|p| p.contains("unknown workload")));
    }

    #[test]
    fn collects_medians_and_advantages_both_ways() {
        let toro: Vec<Vec<Reading>> = (0..3).map(|_| parse_output(&toro_output()).0).collect();
        let linux: Vec<Vec<Reading>> = [1.0, 2.0, 3.0].iter().map(|&s| parse_output(&linux_output(s)).0).collect();
        let workloads = collect(&toro, &linux, &[], "not run", &all);
        let only_yield = collect(&toro, &linux, &[], "not run", &|key| key == "yield");
        assert_eq!(only_yield.len(), 1);
        assert_eq!(workloads.len(), SPECS.len());
        let yield_ = workloads.iter().find(|w| w.spec.key == "yield").unwrap();
        assert_eq!(yield_.toro.summary().unwrap().median, 100.0);
        assert_eq!(yield_.linux[0].1.summary().unwrap().median, 200.0);
        // A time: Linux's 200 ns against Toro's 100 ns is 2x for Toro.
        assert_eq!(yield_.advantage(&yield_.linux[0].1), Some(2.0));
        let rate = workloads.iter().find(|w| w.spec.key == "alloc-1cpu").unwrap();
        // A rate, scaled to M/s: Toro's 100/s against Linux's 200/s is 0.5x.
        assert_eq!(rate.toro.summary().unwrap().median, 0.0001);
        assert_eq!(rate.advantage(&rate.linux[1].1), Some(0.5));
        assert!(matches!(&rate.host[0].1, Side::Missing(reason) if reason == "not run"));
        // A run without a figure is a failed sample: no median.
        let mut failed = toro.clone();
        failed[1].clear();
        let workloads = collect(&failed, &linux, &[], "", &all);
        assert!(workloads[0].toro.summary().is_none());
    }

    #[test]
    fn markdown_states_the_runs_the_rows_had() {
        // A full run boots the thread rows 9 times while the report's run
        // count says 5: the text must say 9 (it said 5).
        let toro = vec![parse_output(&toro_output()).0; 9];
        let linux = vec![parse_output(&linux_output(4.0)).0; 9];
        let workloads = collect(&toro, &linux, &[], "", &all);
        let markdown = markdown(&workloads, 5, "console=ttyS0", &[], &[]);
        assert!(markdown.contains("Median of 9 runs per side, each a fresh boot"), "{markdown}");
        assert!(!markdown.contains("Median of 5 runs"), "{markdown}");
        let fewer = vec![parse_output(&linux_output(4.0)).0; 7];
        let workloads = collect(&toro, &fewer, &[], "", &all);
        assert!(markdown_contains(&workloads, "Median of 7–9 runs per side"));
        assert_eq!(runs_of(&[], 5), "5", "nothing measured: the run count given");
    }

    fn markdown_contains(workloads: &[Workload], text: &str) -> bool {
        markdown(workloads, 5, "console=ttyS0", &[], &[]).contains(text)
    }

    #[test]
    fn table_markdown_svg_and_json_cover_every_yardstick() {
        let toro = vec![parse_output(&toro_output()).0];
        let linux = vec![parse_output(&linux_output(4.0)).0];
        let host = vec![parse_output(&linux_output(0.5)).0];
        let workloads = collect(&toro, &linux, &host, "", &all);
        let rows = SPECS.iter().map(|s| s.yardsticks.len()).sum::<usize>();
        let text = table(&workloads);
        assert_eq!(text.lines().count(), rows + 2);
        assert!(text.contains("crossbeam-channel"));
        assert!(text.contains("0.25x"), "a rate 4x Linux's is 0.25x for Toro:\n{text}");
        assert!(text.contains("4.0x"), "a time 4x Linux's is 4x for Toro:\n{text}");
        let markdown = markdown(&workloads, 1, "console=ttyS0", &[], &[("bench-yield.svg".into(), "yield".into())]);
        assert!(markdown.contains("| workload | Toro | Linux guest | Linux yardstick | Toro's advantage |"));
        assert!(markdown.contains("not the comparison"));
        assert!(markdown.contains("![yield](bench-yield.svg)"));
        let alloc = svg(&workloads[0]);
        assert_eq!(alloc.matches("<rect").count(), 4, "background, Toro, glibc, mimalloc");
        assert!(alloc.contains("higher is better") && alloc.contains("Linux mimalloc"));
        let rendered = json(&workloads).render();
        assert!(rendered.contains("\"yardstick\": \"sched_yield\""));
        assert!(rendered.contains("\"better\": \"higher\""));
        assert!(rendered.contains("\"toro_advantage\": 4"));
        assert!(rendered.contains("host_native_not_the_comparison"));
    }
}
