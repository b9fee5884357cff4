//! wrk, the HTTP load generator (Debian's `wrk`): runs it and reads its
//! report, for the network tests (no errors under load) and the HTTP
//! benchmark rows (throughput and latency, Toro beside the Linux guest).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What wrk reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub requests: u64,
    pub requests_per_second: f64,
    /// Latency percentiles (`--latency`), when printed.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors together.
    pub socket_errors: u64,
    /// The host's `TcpExtListenOverflows` (what `nstat` shows) counted
    /// over the run, when the caller read it: connections the host's
    /// kernel dropped because a listen queue was full.
    pub listen_overflows: Option<u64>,
    /// Wall time of the run, from starting wrk to reaping it.
    pub wall: Duration,
    /// wrk's own host CPU time (user + system) over the run, from its
    /// `wait4` rusage (which holds its waited-for children, so a wrapper
    /// such as `ip netns exec` counts the wrk it runs).
    pub wrk_cpu: Option<Duration>,
    /// The VM's QEMU process's host CPU time over the same span, when the
    /// caller read it (`bench::vm::RunningVm::wrk`).
    pub qemu_cpu: Option<Duration>,
    /// Every host CPU's busy time over the same span, whoever ran
    /// (`/proc/stat`), when the caller read it.
    pub host_busy: Option<Duration>,
    /// The CPU time of each of QEMU's threads over the same span, when
    /// the caller read it: its main thread first (its main loop, which
    /// does every tap read and write and the user network's work), then
    /// the others (the vCPU threads among them) from the busiest.
    pub qemu_threads: Vec<Duration>,
}

impl Report {
    /// wrk's host CPU over the run in cores (CPU seconds / wall seconds).
    pub fn wrk_cores(&self) -> Option<f64> {
        cores(self.wrk_cpu?, self.wall)
    }

    /// QEMU's host CPU over the run in cores.
    pub fn qemu_cores(&self) -> Option<f64> {
        cores(self.qemu_cpu?, self.wall)
    }

    /// Each of QEMU's threads over the run in cores, in the order of
    /// `qemu_threads`.
    pub fn qemu_thread_cores(&self) -> Vec<f64> {
        self.qemu_threads.iter().filter_map(|&cpu| cores(cpu, self.wall)).collect()
    }

    /// The host's busy cores over the run (every process).
    pub fn host_cores(&self) -> Option<f64> {
        cores(self.host_busy?, self.wall)
    }
}

/// `cpu` over `wall`, in cores.
fn cores(cpu: Duration, wall: Duration) -> Option<f64> {
    (!wall.is_zero()).then(|| cpu.as_secs_f64() / wall.as_secs_f64())
}

/// The host's `TcpExt ListenOverflows` counter (`/proc/net/netstat`, what
/// `nstat` reads) for the calling thread's network namespace.
pub fn listen_overflows() -> Option<u64> {
    listen_overflows_in(&std::fs::read_to_string("/proc/net/netstat").ok()?)
}

/// `ListenOverflows` from a `/proc/net/netstat` text.
fn listen_overflows_in(netstat: &str) -> Option<u64> {
    tcp_ext_counter(netstat, "ListenOverflows")
}

/// The `TcpExt` counter `name` from a `/proc/net/netstat` text: the
/// `TcpExt:` header line names the fields, the next `TcpExt:` line holds
/// their values.
pub fn tcp_ext_counter(netstat: &str, name: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let column = names.split_whitespace().position(|field| field == name)?;
    values.split_whitespace().nth(column)?.parse().ok()
}

/// Runs `wrk` (through `command`, e.g. inside a network namespace) with
/// `threads`, `connections` and `duration` against `url`, with latency
/// percentiles; the report holds the run's wall time and wrk's host CPU
/// time (that child's own rusage, reaped with `wait4`).
pub fn run(mut command: Command, url: &str, threads: u32, connections: u32, duration: Duration) -> Result<Report> {
    let seconds = duration.as_secs().max(1);
    command.args(["-t", &threads.to_string(), "-c", &connections.to_string(), "-d", &format!("{seconds}s")]).args([
        "--timeout",
        "5s",
        "--latency",
        url,
    ]);
    let Measured { stdout, stderr, wall, cpu: wrk_cpu } =
        run_measured(command).context("running wrk (install the Debian package wrk)")?;
    let text = String::from_utf8_lossy(&stdout);
    match parse(&text) {
        Some(report) => Ok(Report { wall, wrk_cpu, ..report }),
        None => bail!("wrk printed no summary: {} {}", text.trim(), String::from_utf8_lossy(&stderr).trim()),
    }
}

/// Runs `command` to its end: its stdout and stderr, the wall time from
/// start to reaping, and its host CPU time (user + system, its children's
/// that it waited for included) from `wait4` on its pid: that child's
/// rusage alone, where `RUSAGE_CHILDREN` would add every other child of
/// this process.
struct Measured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    wall: Duration,
    /// None if the child could not be reaped.
    cpu: Option<Duration>,
}

fn run_measured(mut command: Command) -> std::io::Result<Measured> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn()?;
    let mut errors = child.stderr.take().expect("stderr is piped");
    let error_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = errors.read_to_end(&mut bytes);
        bytes
    });
    let mut stdout = Vec::new();
    let read = child.stdout.take().expect("stdout is piped").read_to_end(&mut stdout);
    let pid = child.id() as libc::pid_t;
    // SAFETY: all-zero is a valid rusage and a valid status.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    let reaped = loop {
        // SAFETY: `pid` is our child, not yet waited for (std's Child
        // waits only when asked); the pointers are to live locals.
        if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } == pid {
            break true;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break false;
        }
    };
    let wall = started.elapsed();
    let stderr = error_reader.join().unwrap_or_default();
    read?;
    Ok(Measured { stdout, stderr, wall, cpu: reaped.then(|| cpu_time(&usage)) })
}

/// User + system time of a rusage.
fn cpu_time(usage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A wrk duration: `812.00us`, `1.23ms`, `2.01s`, `1.50m`.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Reads wrk's report; `None` without its "N requests in" line.
pub fn parse(output: &str) -> Option<Report> {
    let mut report = Report::default();
    let mut found = false;
    for line in output.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            if rest.contains(',') {
                report.requests = count.parse().ok()?;
                found = true;
            }
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            report.requests_per_second = rate.trim().parse().unwrap_or(0.0);
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.non_2xx = count.trim().parse().unwrap_or(0);
        } else if let Some(list) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            report.socket_errors =
                list.split(',').filter_map(|item| item.split_whitespace().nth(1)?.parse::<u64>().ok()).sum();
        } else if let Some(value) = line.strip_prefix("50%") {
            report.p50 = duration(value.trim());
        } else if let Some(value) = line.strip_prefix("99%") {
            report.p99 = duration(value.trim());
        }
    }
    found.then_some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read() {
        let good = "Running 3s test @ http://172.31.0.2/\n  2 threads and 8 connections\n\
                    \x20 Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     90%    2.00ms\n\
                    \x20    99%   12.34ms\n  2345 requests in 3.00s, 1.80MB read\nRequests/sec:    781.12\n\
                    Transfer/sec:    614.40KB\n";
        let report = parse(good).unwrap();
        assert_eq!((report.requests, report.non_2xx, report.socket_errors), (2345, 0, 0));
        assert_eq!(report.requests_per_second, 781.12);
        assert_eq!(report.p50, Some(Duration::from_micros(812)));
        assert_eq!(report.p99, Some(Duration::from_micros(12_340)));
        let bad = "  120 requests in 3.01s, 80.00KB read\n  Socket errors: connect 0, read 2, write 0, timeout 5\n\
                   Non-2xx or 3xx responses: 3\n";
        let report = parse(bad).unwrap();
        assert_eq!((report.requests, report.non_2xx, report.socket_errors), (120, 3, 7));
        assert_eq!(report.p99, None);
        assert_eq!(parse("unable to connect to 172.31.0.2:80 Connection refused"), None);
    }

    #[test]
    fn listen_overflows_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 1 42 43\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(listen_overflows_in(text), Some(42));
        assert_eq!(listen_overflows_in("TcpExt: SyncookiesSent\nTcpExt: 1\n"), None);
        assert_eq!(listen_overflows_in(""), None);
        assert!(listen_overflows().is_some(), "this host's /proc/net/netstat has the counter");
    }

    #[test]
    fn the_childs_own_cpu_time_is_measured() {
        let summary = "printf '  5 requests in 1.00s, 1.00KB read\\nRequests/sec: 5.00\\n'";
        let run_sh = |script: &str| {
            let mut command = Command::new("sh");
            command.args(["-c", script, "sh"]);
            run(command, "http://127.0.0.1/", 1, 1, Duration::from_secs(1))
        };
        // A wrapper that waits for a child (as `ip netns exec` may): the
        // child's busy loop counts.
        let busy = format!("(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done); {summary}");
        let report = run_sh(&busy).unwrap();
        assert_eq!(report.requests, 5);
        let (cpu, wall) = (report.wrk_cpu.unwrap(), report.wall);
        assert!(cpu > Duration::from_millis(30) && cpu <= wall + Duration::from_millis(20), "{cpu:?} of {wall:?}");
        let cores = report.wrk_cores().unwrap();
        assert!(cores > 0.0 && cores < 1.2, "{cores}");
        assert_eq!(report.qemu_cores(), None);
        // The next run counts only itself, not the busy child reaped
        // before it (RUSAGE_CHILDREN would).
        let idle = run_sh(summary).unwrap().wrk_cpu.unwrap();
        assert!(idle < Duration::from_millis(20) && idle < cpu / 2, "{idle:?} after {cpu:?}");
        // No summary: the error says what was printed.
        let error = run_sh("echo nothing here; echo oops >&2").unwrap_err().to_string();
        assert!(error.contains("nothing here") && error.contains("oops"), "{error}");
    }

    #[test]
    fn cores_are_cpu_over_wall() {
        let usage = libc::rusage {
            ru_utime: libc::timeval { tv_sec: 1, tv_usec: 250_000 },
            ru_stime: libc::timeval { tv_sec: 0, tv_usec: 500_000 },
            // SAFETY: all-zero is a valid rusage.
            ..unsafe { std::mem::zeroed() }
        };
        assert_eq!(cpu_time(&usage), Duration::from_millis(1750));
        let report = Report {
            wall: Duration::from_secs(2),
            wrk_cpu: Some(Duration::from_millis(1800)),
            qemu_cpu: Some(Duration::from_secs(3)),
            host_busy: Some(Duration::from_secs(4)),
            ..Default::default()
        };
        assert_eq!((report.wrk_cores(), report.qemu_cores(), report.host_cores()), (Some(0.9), Some(1.5), Some(2.0)));
        assert_eq!(Report { wall: Duration::ZERO, ..report }.wrk_cores(), None);
    }

    #[test]
    fn durations_carry_their_units() {
        assert_eq!(duration("2.00s"), Some(Duration::from_secs(2)));
        assert_eq!(duration("1.50m"), Some(Duration::from_secs(90)));
        assert_eq!(duration("12"), None);
        assert_eq!(duration("3.0xs"), None);
        assert_eq!(duration("-1.0ms"), None);
    }
}
