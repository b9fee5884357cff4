//! A VM the benchmark keeps running while it measures from outside: its
//! host CPU time, or the first HTTP answer through a forwarded port. Started
//! from the launcher's own command (`VmConfig::command`), so it runs under
//! exactly the conditions `qemu::run` uses; killed when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::qemu::VmConfig;

/// Linux reports process times in USER_HZ ticks, 100 per second on every
/// architecture's user ABI (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SECOND: f64 = 100.0;

pub struct RunningVm {
    child: Child,
    /// Taken just before QEMU was started: every time is measured from it.
    pub start: Instant,
    lines: mpsc::Receiver<(Instant, String)>,
    /// The serial output so far, each line with its time from `start`.
    pub output: Vec<(Duration, String)>,
    errors: Option<JoinHandle<String>>,
}

impl RunningVm {
    /// Starts `config`, and starts it once more if it printed nothing
    /// within [`crate::linux_guest::FIRST_LINE_WITHIN`] (a guest kernel
    /// that hung in its boot under TCG on a loaded host: seen with the
    /// Linux guest, see `linux_guest::run`). Toro and the Linux guest both
    /// print a line early in their boot, so a silent one has hung.
    pub fn spawn(config: &VmConfig) -> Result<Self> {
        let mut running = Self::spawn_once(config)?;
        let within = crate::linux_guest::FIRST_LINE_WITHIN;
        if running.wait_for_line(&|_| true, running.start + within).is_none() && !running.has_exited() {
            eprintln!(
                "bench: the guest printed nothing in {} s (its boot hung); booting it once more",
                within.as_secs()
            );
            running.kill();
            running = Self::spawn_once(config)?;
        }
        Ok(running)
    }

    fn spawn_once(config: &VmConfig) -> Result<Self> {
        let mut command = config.command();
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = command.spawn().context("starting QEMU")?;
        // Keep reading even when nobody waits for a line (see read_output).
        let (lines, _reader, errors) = crate::qemu::read_output(&mut child);
        Ok(Self { child, start, lines, output: Vec::new(), errors: Some(errors) })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes in the lines printed so far.
    fn collect(&mut self) {
        while let Ok((when, line)) = self.lines.try_recv() {
            self.output.push((when - self.start, line));
        }
    }

    /// Waits for a line that satisfies `wanted`; its time from QEMU start,
    /// or `None` if QEMU ended or `deadline` passed first.
    pub fn wait_for_line(&mut self, wanted: &dyn Fn(&str) -> bool, deadline: Instant) -> Option<Duration> {
        if let Some((when, _)) = self.output.iter().find(|(_, line)| wanted(line)) {
            return Some(*when);
        }
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(wait) {
                Ok((when, line)) => {
                    let elapsed = when - self.start;
                    let found = wanted(&line);
                    self.output.push((elapsed, line));
                    if found {
                        return Some(elapsed);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Whether QEMU has ended.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// QEMU's host CPU time so far (user + system, all its threads).
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).context("reading QEMU's /proc stat")?;
        let ticks = stat_cpu_ticks(&stat).context("unexpected /proc/PID/stat format")?;
        Ok(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
    }

    /// The host CPU time of each of QEMU's threads so far, by thread id
    /// (`/proc/PID/task/TID/stat`; a thread that ends between the listing
    /// and the read is left out).
    fn thread_times(&self) -> Vec<(u32, Duration)> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else { return Vec::new() };
        tasks
            .filter_map(|task| {
                let task = task.ok()?;
                let tid = task.file_name().to_str()?.parse().ok()?;
                let ticks = stat_cpu_ticks(&std::fs::read_to_string(task.path().join("stat")).ok()?)?;
                Some((tid, Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND)))
            })
            .collect()
    }

    /// `crate::wrk::run` against this VM, with QEMU's host CPU time over
    /// the same span ([`RunningVm::cpu_time`] before and after) and the
    /// host's busy time (all its CPUs, every process: `/proc/stat`) in the
    /// report beside wrk's own.
    pub fn wrk(
        &self,
        command: std::process::Command,
        url: &str,
        threads: u32,
        connections: u32,
        window: Duration,
    ) -> Result<crate::wrk::Report> {
        let (before, host_before, threads_before) = (self.cpu_time().ok(), host_busy(), self.thread_times());
        let report = crate::wrk::run(command, url, threads, connections, window)?;
        let (after, host_after, threads_after) = (self.cpu_time().ok(), host_busy(), self.thread_times());
        let span = |before: Option<Duration>, after: Option<Duration>| {
            before.zip(after).map(|(before, after)| after.saturating_sub(before))
        };
        Ok(crate::wrk::Report {
            qemu_cpu: span(before, after),
            host_busy: span(host_before, host_after),
            qemu_threads: thread_spans(self.pid(), &threads_before, &threads_after),
            ..report
        })
    }

    /// Polls `http://127.0.0.1:port/` until it answers 200; the time from
    /// QEMU start to that answer, or `None` if QEMU ended or `deadline`
    /// passed first.
    pub fn first_http_ok(&mut self, port: u16, deadline: Instant) -> Option<Duration> {
        // QEMU accepts on the forwarded port at once and only then tries the
        // guest; until the server listens, an attempt ends in a reset, a
        // close or (before the guest's network is up) silence, and a silent
        // attempt may stay silent after the guest comes up, waiting for a
        // SYN retransmission. So attempts overlap: a new one every STAGGER,
        // each given up after ATTEMPT_LIFETIME, which keeps the answer's
        // time within about STAGGER of when the server could first give it.
        // Connects do not block: QEMU's forward listens with a backlog of 1,
        // and a connect into a full backlog waits for the host's SYN
        // retransmission; a blocking connect (100 ms timeout) stalled the
        // whole loop with it, which added 30-50 ms to most of Toro's first
        // answers. STAGGER is 5 ms: at 2 ms the attempts' resets made slirp
        // and the guest's NIC busy enough to slow Toro's boot.
        const STAGGER: Duration = Duration::from_millis(5);
        const ATTEMPT_LIFETIME: Duration = Duration::from_millis(500);
        const POLL: Duration = Duration::from_millis(1);
        let mut attempts: Vec<HttpAttempt> = Vec::new();
        let mut next_attempt = Instant::now();
        while Instant::now() < deadline {
            self.collect();
            if self.has_exited() {
                return None;
            }
            let now = Instant::now();
            if now >= next_attempt {
                next_attempt = now + STAGGER;
                if let Ok(attempt) = HttpAttempt::start(port) {
                    attempts.push(attempt);
                }
            }
            let mut answered = false;
            attempts.retain_mut(|attempt| match attempt.poll() {
                AttemptState::Ok => {
                    answered = true;
                    false
                }
                AttemptState::Waiting => attempt.started.elapsed() < ATTEMPT_LIFETIME,
                AttemptState::Failed => false,
            });
            if answered {
                return Some(self.start.elapsed());
            }
            std::thread::sleep(POLL);
        }
        None
    }

    /// Stops QEMU; returns the serial output and QEMU's own messages, for
    /// error reports.
    pub fn stop(mut self) -> (String, String) {
        self.kill();
        self.collect();
        let errors = self.errors.take().and_then(|handle| handle.join().ok()).unwrap_or_default();
        let output = self.output.iter().map(|(_, line)| format!("{line}\n")).collect();
        (output, errors)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `GET /` on the loopback: connected, sent and read without blocking.
struct HttpAttempt {
    stream: TcpStream,
    started: Instant,
    /// Whether the request went out (the connect completed first).
    sent: bool,
    head: Vec<u8>,
}

enum AttemptState {
    Waiting,
    Ok,
    Failed,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

impl HttpAttempt {
    fn start(port: u16) -> std::io::Result<Self> {
        let stream = connect_nonblocking(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        Ok(Self { stream, started: Instant::now(), sent: false, head: Vec::new() })
    }

    fn poll(&mut self) -> AttemptState {
        if !self.sent {
            match self.stream.take_error() {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => return AttemptState::Failed,
            }
            // Connected once the peer is known; the request is far smaller
            // than a socket buffer, so one write takes it whole.
            if self.stream.peer_addr().is_err() {
                return AttemptState::Waiting;
            }
            match self.stream.write(REQUEST) {
                Ok(count) if count == REQUEST.len() => self.sent = true,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return AttemptState::Waiting,
                Ok(_) | Err(_) => return AttemptState::Failed,
            }
        }
        let mut buffer = [0u8; 256];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => return AttemptState::Failed,
                Ok(count) => {
                    self.head.extend_from_slice(&buffer[..count]);
                    if self.head.len() >= 12 {
                        return if status_is_ok(&self.head) { AttemptState::Ok } else { AttemptState::Failed };
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return AttemptState::Waiting,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return AttemptState::Failed,
            }
        }
    }
}

/// A TCP connect to `address` that returns at once, the stream still
/// connecting (std has only blocking connects).
fn connect_nonblocking(address: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = address else {
        return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "IPv4 only"));
    };
    // SAFETY: plain system calls; the descriptor is owned by the
    // `TcpStream` from the moment it exists, so every path closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let socket_address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let result = libc::connect(
            fd,
            (&raw const socket_address).cast(),
            core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(error);
            }
        }
        Ok(stream)
    }
}

fn status_is_ok(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for QEMU's hostfwd.
pub fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces, so count from the
/// last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, index 11.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Each thread's CPU time between `before` and `after` (by thread id; a
/// thread started between them counts from zero): the main thread `pid`
/// first, then the others from the busiest.
fn thread_spans(pid: u32, before: &[(u32, Duration)], after: &[(u32, Duration)]) -> Vec<Duration> {
    let span = |tid: u32, time: Duration| {
        let start = before.iter().find(|(t, _)| *t == tid).map_or(Duration::ZERO, |(_, time)| *time);
        time.saturating_sub(start)
    };
    let main = after.iter().find(|(tid, _)| *tid == pid).map(|&(tid, time)| span(tid, time));
    let mut others: Vec<Duration> =
        after.iter().filter(|(tid, _)| *tid != pid).map(|&(tid, time)| span(tid, time)).collect();
    others.sort_by(|a, b| b.cmp(a));
    main.into_iter().chain(others).collect()
}

/// The host's busy time so far, all its CPUs together (`/proc/stat`).
fn host_busy() -> Option<Duration> {
    let ticks = stat_busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
}

/// The busy ticks of `/proc/stat`'s first line, `cpu  user nice system
/// idle iowait irq softirq steal guest guest_nice`: all but idle and
/// iowait (guest time is already inside user and nice; steal, time this
/// machine's own hypervisor gave its cores to others, was not ours).
fn stat_busy_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    (fields.len() >= 4).then(|| field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime() {
        let stat = "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 2530 0 0 0 137 42 0 0 20 0 5 0 1 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(179));
        let tricky = "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 1 0 0";
        assert_eq!(stat_cpu_ticks(tricky), Some(15));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_the_hosts_busy_ticks() {
        let stat = "cpu  100 2 30 5000 7 1 4 3 50 0\ncpu0 50 1 15 2500 3 0 2 1 25 0\nintr 1\n";
        assert_eq!(stat_busy_ticks(stat), Some(140));
        assert_eq!(stat_busy_ticks("cpu  10 0 5 100\n"), Some(15));
        assert_eq!(stat_busy_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(stat_busy_ticks("cpu  1 x 3 4\n"), None);
        assert_eq!(stat_busy_ticks(""), None);
        assert!(host_busy().is_some(), "this host's /proc/stat");
    }

    #[test]
    fn thread_spans_put_the_main_thread_first() {
        let ms = Duration::from_millis;
        let before = [(10, ms(100)), (11, ms(50)), (12, ms(500))];
        let after = [(12, ms(900)), (10, ms(300)), (11, ms(60)), (13, ms(70))];
        assert_eq!(thread_spans(10, &before, &after), [ms(200), ms(400), ms(70), ms(10)]);
        assert_eq!(thread_spans(99, &before, &after[..1]), [ms(400)], "no main thread read");
        assert!(thread_spans(10, &[], &[]).is_empty());
    }

    #[test]
    fn own_process_has_cpu_time() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(stat_cpu_ticks(&stat).is_some());
    }

    #[test]
    fn recognises_http_ok() {
        assert!(status_is_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(!status_is_ok(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!status_is_ok(b""));
    }

    #[test]
    fn a_refused_connect_fails_without_blocking() {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
        let started = Instant::now();
        let failed = match HttpAttempt::start(port) {
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionRefused,
            Ok(mut attempt) => loop {
                match attempt.poll() {
                    AttemptState::Waiting if started.elapsed() < Duration::from_secs(5) => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    AttemptState::Failed => break true,
                    _ => break false,
                }
            },
        };
        assert!(failed, "nothing listens: the attempt fails");
        assert!(started.elapsed() < Duration::from_secs(1), "and says so without waiting on the connect");
    }

    #[test]
    fn http_attempt_against_a_local_server() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in [&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..], b"HTTP/1.1 503 Busy\r\n\r\n", b""] {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = [0u8; 512];
                let _ = stream.read(&mut request).unwrap();
                stream.write_all(answer).unwrap();
            }
        });
        let wait = |mut attempt: HttpAttempt| {
            let started = Instant::now();
            loop {
                match attempt.poll() {
                    AttemptState::Waiting if started.elapsed() < Duration::from_secs(5) => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    AttemptState::Waiting => panic!("no answer"),
                    AttemptState::Ok => return true,
                    AttemptState::Failed => return false,
                }
            }
        };
        assert!(wait(HttpAttempt::start(port).unwrap()), "200 is ok");
        assert!(!wait(HttpAttempt::start(port).unwrap()), "503 is not");
        assert!(!wait(HttpAttempt::start(port).unwrap()), "a close without an answer is not");
        server.join().unwrap();
    }
}
