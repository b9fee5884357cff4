//! The network tests that need the host's side of a real link: the web
//! server on a tap inside a network namespace made for the test, on each
//! VMM, fetched by curl (and loaded by wrk) from inside the namespace; on
//! QEMU also a flood of hostile frames, after which it must still serve.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns::{self, Namespace, GUEST_ADDRESS};
use crate::qemu::{self, VmConfig};
use crate::vmm::{self, Vmm};

/// The guest card's MAC (the frames are addressed to it).
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Random frames after the crafted ones.
const RANDOM_FRAMES: usize = 1500;
/// The request body the tap tests POST to `/echo` (under the server's 64
/// KiB limit; the host sends it in segments of up to the window).
const LARGE_BODY: usize = 60_000;

/// What one tap test does beyond fetching pages.
#[derive(Clone, Copy)]
pub struct TapTest {
    pub vmm: Vmm,
    pub cpus: u32,
    /// Send the hostile frames, then check the server still serves.
    pub hostile_frames: bool,
    /// Load the server with wrk for a moment (when wrk is installed).
    pub wrk: bool,
    /// Fetch `/stats` (which visits every CPU) and read its counters.
    pub stats: bool,
    /// How long the guest may take to answer its first request.
    pub boot_wait: Duration,
    /// Tap queues: above 1, QEMU q35 with a multi-queue virtio-net-pci
    /// card, and every CPU must own a queue pair and serve connections.
    pub queues: u32,
    /// Cards: above 1, one tap each, each card on its own CPU with its own
    /// address ([`run_nics`], on QEMU's `machine`).
    pub nics: u32,
    /// The QEMU machine of a several-cards test.
    pub machine: qemu::Machine,
}

impl TapTest {
    /// What [`tests`] entries share: QEMU microvm, 2 CPUs, one card with
    /// one queue, pages and `/stats` only.
    const BASE: TapTest = TapTest {
        vmm: Vmm::Qemu,
        cpus: 2,
        hostile_frames: false,
        wrk: false,
        stats: true,
        boot_wait: Duration::from_secs(60),
        queues: 1,
        nics: 1,
        machine: qemu::Machine::Microvm,
    };

    pub fn name(&self) -> String {
        if self.nics > 1 {
            let machine = match (self.vmm, self.machine) {
                (Vmm::Qemu, qemu::Machine::Q35) => "q35".to_string(),
                (Vmm::Qemu, qemu::Machine::Microvm) => "microvm".to_string(),
                (vmm, _) => vmm.to_string(),
            };
            format!("webserver-nics-{machine}-{}", self.cpus)
        } else if self.queues > 1 {
            format!("webserver-tap-mq-q35-{}", self.cpus)
        } else {
            format!("webserver-tap-{}-{}", self.vmm, self.cpus)
        }
    }
}

/// The tap tests the suite runs: QEMU microvm with the hostile frames and
/// wrk; QEMU q35 with a 2-queue and a 4-queue tap (a queue pair per CPU,
/// wrk spreads connections over them, each CPU must serve some); two cards on two
/// taps, a card per CPU, on QEMU microvm and q35, on Firecracker and on
/// cloud-hypervisor (back since its `/stats` flake was explained,
/// docs/net.md); cloud-hypervisor (virtio-net over PCI with MSI-X, its only
/// transport) and Firecracker (virtio-mmio from the command line) with
/// pages only (guest code is slow on this kind of machine's `/dev/kvm`).
pub fn tests() -> Vec<TapTest> {
    vec![
        TapTest { hostile_frames: true, wrk: true, ..TapTest::BASE },
        TapTest { wrk: true, queues: 2, ..TapTest::BASE },
        TapTest { cpus: 4, wrk: true, queues: 4, ..TapTest::BASE },
        TapTest { nics: 2, ..TapTest::BASE },
        TapTest { nics: 2, machine: qemu::Machine::Q35, ..TapTest::BASE },
        TapTest { vmm: Vmm::Firecracker, nics: 2, ..TapTest::BASE },
        TapTest { vmm: Vmm::CloudHypervisor, nics: 2, ..TapTest::BASE },
        TapTest { vmm: Vmm::CloudHypervisor, ..TapTest::BASE },
        TapTest { vmm: Vmm::Firecracker, ..TapTest::BASE },
    ]
}

/// Why `test` cannot run here, if it cannot.
pub fn skip_reason(test: &TapTest) -> Option<String> {
    if let Some(reason) = netns::unavailable() {
        return Some(reason);
    }
    vmm::locate(test.vmm).err().map(|missing| format!("{missing:#}"))
}

/// The value of column `name` in the `/stats` text's row for interface
/// `interface` (`interface cpu sockets ... rx_frames ...` header, then
/// `eth0 1 3 ...`).
pub fn stats_field(stats: &str, interface: &str, name: &str) -> Option<u64> {
    let header = stats.lines().find(|line| line.starts_with("interface "))?;
    let column = header.split_whitespace().position(|column| column == name)?;
    let row = stats.lines().find(|line| line.split_whitespace().next() == Some(interface))?;
    row.split_whitespace().nth(column)?.parse().ok()
}

/// The most pumps of the stack (`/stats` interface column `pumps`, each a
/// walk over every socket) per request served under wrk's 16 keep-alive
/// connections. With a pump after every socket call a request cost four
/// or more; left to the service, the pumps of the connections served
/// together are one (about one per request with a single connection,
/// below one under load; issue 10).
const MAX_PUMPS_PER_REQUEST: f64 = 2.0;

/// The sum of column `name` over every interface row of the `/stats` text.
pub fn interface_total(stats: &str, name: &str) -> Option<u64> {
    let mut lines = stats.lines().skip_while(|line| !line.starts_with("interface "));
    let header = lines.next()?;
    let column = header.split_whitespace().position(|column| column == name)?;
    lines.map(|line| line.split_whitespace().nth(column).and_then(|value| value.parse::<u64>().ok())).sum()
}

/// Pumps per request between two `/stats` texts (every interface, every CPU).
fn pumps_per_request(before: &str, after: &str) -> Option<f64> {
    let requests = |stats: &str| requests_per_cpu(stats).iter().map(|&(_, requests)| requests).sum::<u64>();
    let served = requests(after).checked_sub(requests(before)).filter(|&served| served > 0)?;
    let pumps = interface_total(after, "pumps")?.checked_sub(interface_total(before, "pumps")?)?;
    Some(pumps as f64 / served as f64)
}

/// Each CPU's `requests` from the `/stats` text's first table (` cpu
/// accepted open requests ...` header, then a row per CPU).
pub fn requests_per_cpu(stats: &str) -> Vec<(u64, u64)> {
    let mut lines = stats.lines();
    let Some(header) = lines.next() else { return Vec::new() };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let (Some(cpu), Some(requests)) =
        (columns.iter().position(|c| *c == "cpu"), columns.iter().position(|c| *c == "requests"))
    else {
        return Vec::new();
    };
    lines
        .take_while(|line| !line.starts_with("interface"))
        .filter_map(|line| {
            let values: Vec<u64> = line.split_whitespace().map(|v| v.parse().ok()).collect::<Option<_>>()?;
            Some((*values.get(cpu)?, *values.get(requests)?))
        })
        .collect()
}

/// What a multi-queue run must show: one queue pair with its MSI-X
/// vectors on each CPU in the boot log, `VQ_PAIRS_SET` accepted, and
/// requests served on every CPU.
fn check_queue_pairs(
    test: &TapTest,
    output: &[String],
    stats: &str,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let mut owners = Vec::new();
    for pair in 0..test.queues {
        let marker = format!("queue pair {pair}: interrupts MSI-X (");
        match output.iter().find(|line| line.contains(&marker)) {
            Some(line) => owners.push(line.rsplit("on cpu ").next().unwrap_or("").trim().to_string()),
            None => problems.push(format!("the boot log shows no \"{marker}...\" (multi-queue off?)")),
        }
    }
    owners.sort();
    owners.dedup();
    if owners.len() != test.queues as usize {
        problems.push(format!("queue pairs' CPUs {owners:?}: expected {} different CPUs", test.queues));
    }
    let set = format!("{0} queue pairs of {0} (VQ_PAIRS_SET)", test.queues);
    if !output.iter().any(|line| line.contains(&set)) {
        problems.push(format!("the boot log shows no \"{set}\""));
    }
    let served = requests_per_cpu(stats);
    if served.len() != test.cpus as usize || served.iter().any(|&(_, requests)| requests == 0) {
        problems.push(format!("requests per CPU {served:?}: every CPU must serve (stats: {stats:?})"));
    } else {
        notes.push(format!("requests per cpu {served:?}"));
    }
}

/// Requests sent to card K in [`run_nics`] (a different count per card,
/// so `/stats` tells whose CPU served whose).
fn nics_requests(card: u32) -> u64 {
    3 + 2 * u64::from(card)
}

/// What a several-cards run must show, from the boot log and `/stats`
/// before and after [`nics_requests`] went to each card: every card's
/// interrupt bound on the CPU that `/stats` says owns it, every card on a
/// CPU of its own, and each CPU's request count grown by its card's
/// requests (plus at most the `/stats` request itself).
fn check_cards(cards: u32, output: &[String], before: &str, after: &str, problems: &mut Vec<String>) -> Vec<u64> {
    let mut owners = Vec::new();
    for card in 0..cards {
        let name = format!("eth{card}");
        let Some(cpu) = stats_field(before, &name, "cpu") else {
            problems.push(format!("/stats has no row for {name}: {before:?}"));
            continue;
        };
        owners.push(cpu);
        let listed = format!("{name} on cpu {cpu}: http://{}:80/", netns::guest_address(card));
        if !output.iter().any(|line| line.contains(&listed)) {
            problems.push(format!("the web server did not list \"{listed}\""));
        }
    }
    // Each card's interrupt: "virtio-net at 0x..: interrupts GSI (0x..) on
    // cpu K" (microvm) or "... MSI-X (0x.., 0x..) ..." (q35), one per card.
    let mut bound: Vec<u64> = output
        .iter()
        .filter(|line| {
            line.contains("virtio-net at ")
                && (line.contains(": interrupts GSI (") || line.contains(": interrupts MSI-X ("))
        })
        .filter_map(|line| line.rsplit("on cpu ").next()?.trim().parse().ok())
        .collect();
    bound.sort_unstable();
    let mut sorted = owners.clone();
    sorted.sort_unstable();
    if bound != sorted {
        problems.push(format!("cards' interrupts bound on cpus {bound:?}, cards owned by cpus {sorted:?}"));
    }
    sorted.dedup();
    if sorted.len() != cards as usize {
        problems.push(format!("cards owned by cpus {owners:?}: expected {cards} different CPUs"));
        return owners;
    }
    let (before, after) = (requests_per_cpu(before), requests_per_cpu(after));
    for (card, &cpu) in owners.iter().enumerate() {
        let served = |table: &[(u64, u64)]| table.iter().find(|&&(c, _)| c == cpu).map(|&(_, requests)| requests);
        let sent = nics_requests(card as u32);
        match (served(&before), served(&after)) {
            (Some(before), Some(after)) if (sent..=sent + 1).contains(&(after.saturating_sub(before))) => {}
            (before_count, after_count) => problems.push(format!(
                "eth{card} got {sent} requests; its cpu {cpu} served {before_count:?} -> {after_count:?} (each CPU must serve its own card's)"
            )),
        }
    }
    owners
}

/// The several-cards test: QEMU microvm (virtio-mmio) or q35
/// (virtio-net-pci, one queue pair each) with one card per tap
/// (tap0..tapN-1 in the namespace, card K at 172.31.K.2), every card on
/// its own CPU; curl sends each card its own number of requests over new
/// connections, and `/stats` must show each card's CPU serving exactly its
/// card's. A word naming no card and a bad value must be reported, and
/// the system must go on.
fn run_nics(test: &TapTest, image: &Path, accel: crate::accel::Accel) -> Result<(bool, String)> {
    let namespace = Namespace::create("test")?;
    let mut devices = vmm::Devices::default();
    for card in 0..test.nics {
        let name = format!("tap{card}");
        namespace.add_tap_on(&name, 1, card)?;
        devices.taps.push(vmm::Tap { mac: Some(netns::guest_mac(card)), ..vmm::Tap::new(&name) });
    }
    let mut config = VmConfig::new(image.to_path_buf(), accel);
    config.cpus = test.cpus;
    config.machine = test.machine;
    // A word for no card, and a bad value (IPv6 only: card 1's IPv4 stays).
    let stray = "toro.eth9.ip=10.9.0.2/24";
    let bad = "toro.eth1.slaac=maybe";
    config.command_line = format!("{} {stray} {bad} toro.log=info", netns::guest_arguments_for(test.nics)).into();
    config.namespace = Some(namespace.name().into());
    let (mut command, directory, _log) = vmm::command(test.vmm, &config, &devices)?;
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", test.vmm))?;
    let (lines, reader, errors) = qemu::read_output(&mut child);
    let url = |card: u32, path: &str| format!("http://{}{path}", netns::guest_address(card));
    let curl = |url: &str| {
        namespace
            .command("curl")
            .args(["-s", "-m", "10", url])
            .output()
            .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()))
    };
    let status = |url: &str| {
        namespace
            .command("curl")
            .args(["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut up = 0;
    while up < test.nics && started.elapsed() < test.boot_wait {
        if status(&url(up, "/"))? == "200 612" {
            up += 1;
        } else {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    if up < test.nics {
        problems.push(format!("eth{up} ({}) gave no 200 within {:?}", netns::guest_address(up), test.boot_wait));
    } else {
        notes.push(format!("every card answered after {:.1} s", started.elapsed().as_secs_f64()));
        let (_, before) = curl(&url(0, "/stats"))?;
        for card in 0..test.nics {
            for _ in 0..nics_requests(card) {
                let answer = status(&url(card, "/"))?;
                if answer != "200 612" {
                    problems.push(format!("GET {} gave {answer:?}", url(card, "/")));
                }
            }
        }
        let (_, after) = curl(&url(test.nics - 1, "/stats"))?;
        let output: Vec<String> = lines.try_iter().map(|(_, line)| line).collect();
        let owners = check_cards(test.nics, &output, &before, &after, &mut problems);
        if !output.iter().any(|line| line.contains(&format!("net: {stray}: there is no such card"))) {
            problems.push(format!("the guest did not report {stray:?} (no such card)"));
        }
        if !output.iter().any(|line| line.contains("net: eth1: toro.eth1.slaac must be 0 or 1")) {
            problems.push(format!("the guest did not report the bad {bad:?}"));
        }
        notes.push(format!("cards on cpus {owners:?}, requests per cpu {:?}", requests_per_cpu(&after)));
        if let Some(line) = output.iter().find(|line| line.contains("panic") || line.contains("CPU exception")) {
            problems.push(format!("the guest failed: {line}"));
        }
        if !problems.is_empty() {
            notes.push(format!("guest printed: {}", output.join(" | ")));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let vmm_errors = errors.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&directory);
    Ok(if problems.is_empty() {
        (true, format!("ok ({})", notes.join("; ")))
    } else {
        let stderr =
            if vmm_errors.trim().is_empty() { String::new() } else { format!("; stderr: {}", vmm_errors.trim()) };
        (false, format!("FAILED: {}; {}{stderr}", problems.join("; "), notes.join("; ")))
    })
}

/// `udp-mq-q35-2`: examples/echo (`group=239.1.2.3`) on q35 with a 2-queue tap; from the
/// namespace, one datagram from each of [`UDP_FLOWS`] source ports (flows
/// the tap spreads over both queues by its hash) to the one UDP socket,
/// which lives on one queue pair: every datagram must come back. Without
/// the hand-over between pairs, the flows that reached the other queue
/// got "port unreachable".
pub fn udp_multiqueue_test(image: &Path, accel: crate::accel::Accel) -> Result<(bool, String)> {
    let namespace = Namespace::create("udp")?;
    namespace.add_tap("tap0", 2, true)?;
    let words = format!("toro.log=info group={UDP_GROUP}");
    let (mut child, _directory, (lines, reader, errors)) = boot_on_two_queues(image, accel, &namespace, &words)?;
    let target = format!("{GUEST_ADDRESS}:7");
    let mut answer = first_echo(&namespace, &target, Duration::from_secs(60))?;
    let mut problems = Vec::new();
    if answer != "answered 1 of 1" {
        problems.push(format!("the echo server never answered one datagram: {answer:?}"));
    } else {
        answer = udp_probe(&namespace, &target, UDP_FLOWS)?;
        if answer != format!("answered {UDP_FLOWS} of {UDP_FLOWS}") {
            problems.push(format!("{UDP_FLOWS} flows: {answer:?}"));
        }
        // The same flows to the multicast group the socket joined (the
        // namespace routes 224.0.0.0/4 out of tap0): each echoed from the
        // card's own address, whichever queue its hash chose.
        let route = namespace.command("ip").args(["route", "add", "224.0.0.0/4", "dev", "tap0"]).status()?;
        let group = format!("{UDP_GROUP}:7");
        let output = namespace
            .command(std::env::current_exe()?)
            .args(["udp-flows", &group, &UDP_FLOWS.to_string(), &target])
            .output()
            .context("running xtask udp-flows in the namespace")?;
        let multicast = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !route.success() || multicast != format!("answered {UDP_FLOWS} of {UDP_FLOWS}") {
            problems.push(format!("{UDP_FLOWS} flows to group {UDP_GROUP}: {multicast:?} (route added: {route})"));
        }
        answer = format!("{answer}; to group {UDP_GROUP}: {multicast}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = errors.join();
    let output: Vec<String> = lines.try_iter().map(|(_, line)| line).collect();
    if !output.iter().any(|line| line.contains("2 queue pairs of 2 (VQ_PAIRS_SET)")) {
        problems.push("the boot log shows no \"2 queue pairs of 2\" (multi-queue off?)".into());
    }
    Ok(if problems.is_empty() {
        (true, format!("ok ({answer}, one socket, two queue pairs)"))
    } else {
        (false, format!("FAILED: {}; guest printed: {}", problems.join("; "), output.join(" | ")))
    })
}

/// What [`qemu::read_output`] gives.
type Output =
    (std::sync::mpsc::Receiver<(Instant, String)>, std::thread::JoinHandle<()>, std::thread::JoinHandle<String>);

/// Boots `image` in QEMU on q35 with 2 CPUs and `namespace`'s 2-queue
/// `tap0`, the guest's tap arguments and `words` on its command line;
/// the child, its run directory and its output.
fn boot_on_two_queues(
    image: &Path,
    accel: crate::accel::Accel,
    namespace: &Namespace,
    words: &str,
) -> Result<(std::process::Child, std::path::PathBuf, Output)> {
    let mut config = VmConfig::new(image.to_path_buf(), accel);
    config.cpus = 2;
    config.machine = qemu::Machine::Q35;
    config.command_line = format!("{} {words}", netns::guest_arguments()).into();
    config.namespace = Some(namespace.name().into());
    let mac = GUEST_MAC.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":");
    let devices = vmm::Devices { taps: vec![vmm::Tap { name: "tap0".into(), mac: Some(mac), queues: 2 }] };
    let (mut command, directory, _log) = vmm::command(Vmm::Qemu, &config, &devices)?;
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().context("starting QEMU")?;
    let output = qemu::read_output(&mut child);
    Ok((child, directory, output))
}

/// What `resolve` prints when the namespace is to stop answering it
/// ([`Namespace::black_hole`]): its connection's peer vanishes.
const CUT_OFF_LINE: &str = "resolve: cut the guest off now";

/// Extra addresses of the namespace's host in `dns-q35-2`, each family:
/// `resolve` connects to 12 of them from each of its 2 CPUs at once
/// (tests/vm `resolve`, `LINK_HOSTS`).
const OUTGOING_LINK_HOSTS: u32 = 24;

/// The DNS test's name.
pub const DNS_TEST: &str = "dns-q35-2";

/// `dns-q35-2`: tests/vm `resolve` on q35 with 2 CPUs and a 2-queue tap;
/// dnsmasq in the namespace (on the host's side of the tap, 172.31.0.1)
/// knows `peer.toro.test` (A 172.31.0.1, AAAA fd00:31::1) and answers
/// NXDOMAIN for the rest of `toro.test`, and the namespace routes
/// (`Namespace::route_nowhere`), answering connects beyond it with ICMP
/// unreachables; the guest gets `toro.dns=` and prints `resolve: all
/// passed` when every lookup and connect gave what it should.
pub fn dns_test(image: &Path, accel: crate::accel::Accel) -> Result<(bool, String)> {
    let dnsmasq = crate::setup::dnsmasq().context("dnsmasq is not installed")?;
    let namespace = Namespace::create("dns")?;
    namespace.add_tap("tap0", 2, true)?;
    namespace.route_nowhere()?;
    // The hosts on the link that `resolve` connects to all at once.
    for host in 0..OUTGOING_LINK_HOSTS {
        for v6 in [false, true] {
            namespace.add_link_host("tap0", host, v6)?;
        }
    }
    let host = netns::host_address(0);
    let mut server = namespace
        .command(&dnsmasq)
        .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file="])
        .args(["--bind-interfaces", &format!("--listen-address={host}"), "--local=/toro.test/"])
        .arg(format!("--host-record=peer.toro.test,{host},{}", netns::HOST_ADDRESS6))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting dnsmasq in the namespace")?;
    let (mut child, directory, (lines, reader, errors)) = boot_on_two_queues(
        image,
        accel,
        &namespace,
        &format!("toro.dns={host} toro.tcp_connect_timeout=1 toro.tcp_user_timeout=3 toro.log=info"),
    )?;
    let started = Instant::now();
    let mut output = Vec::new();
    let mut passed = false;
    while started.elapsed() < Duration::from_secs(120) {
        match lines.recv_timeout(Duration::from_millis(250)) {
            Ok((_, line)) => {
                if line.contains(CUT_OFF_LINE) {
                    // The guest's TCP peer (dnsmasq) goes silent.
                    namespace.black_hole(netns::GUEST_ADDRESS)?;
                }
                passed |= line.contains("resolve: all passed");
                let done = passed || line.contains("exit status") || line.contains("panic");
                output.push(line);
                if done {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let status = child.wait();
    let _ = reader.join();
    let vmm_errors = errors.join().unwrap_or_default();
    let _ = server.kill();
    let _ = server.wait();
    let dns_errors = server.stderr.take().map(|mut e| {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut e, &mut text);
        text
    });
    let _ = std::fs::remove_dir_all(&directory);
    Ok(if passed {
        // How long the simultaneous connects to hosts on the link took.
        let rounds: Vec<&str> = output
            .iter()
            .filter_map(|line| line.split_once("resolve: ").map(|(_, said)| said))
            .filter(|said| said.contains("connects to hosts on the link") || said.contains("neighbours solicited"))
            .collect();
        (
            true,
            format!(
                "ok (every lookup as expected after {:.1} s; {})",
                started.elapsed().as_secs_f64(),
                rounds.join("; ")
            ),
        )
    } else {
        let failed: Vec<&String> = output.iter().filter(|line| line.contains("FAILED")).collect();
        (
            false,
            format!(
                "FAILED after {:.1} s: {failed:?}; guest printed: {}; QEMU {status:?}, stderr: {}; dnsmasq: {}",
                started.elapsed().as_secs_f64(),
                output.join(" | "),
                vmm_errors.trim(),
                dns_errors.unwrap_or_default().trim()
            ),
        )
    })
}

/// Source ports [`udp_multiqueue_test`] sends from.
pub const UDP_FLOWS: u32 = 32;
/// The multicast group `udp-mq-q35-2`'s echo server joins (`group=`).
pub const UDP_GROUP: &str = "239.1.2.3";

/// Runs `cargo xtask udp-flows TARGET FLOWS` inside `namespace`; its line.
fn udp_probe(namespace: &Namespace, target: &str, flows: u32) -> Result<String> {
    let output = namespace
        .command(std::env::current_exe()?)
        .args(["udp-flows", target, &flows.to_string()])
        .output()
        .context("running xtask udp-flows in the namespace")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// One datagram at a time to `target` until one is echoed or `within`
/// passes; the last answer ("answered 1 of 1" once echoed).
fn first_echo(namespace: &Namespace, target: &str, within: Duration) -> Result<String> {
    let started = Instant::now();
    loop {
        let answer = udp_probe(namespace, target, 1)?;
        if answer == "answered 1 of 1" || started.elapsed() >= within {
            return Ok(answer);
        }
    }
}

/// `cargo xtask udp-flows ADDRESS:PORT N [FROM:PORT]` (run by
/// [`udp_multiqueue_test`] and [`udp_nics_test`] inside their namespace):
/// one datagram from each of N sockets, then up to 3 s for the echoes;
/// prints "answered K of N", counting only echoes that came back from
/// ADDRESS:PORT itself, or FROM:PORT when given (the echo of a datagram to
/// a multicast group comes from the member's own address); a reply from
/// another address is what a client that `connect`s would drop; it names
/// those that came from elsewhere.
pub fn udp_flows(arguments: &[String]) -> Result<std::process::ExitCode> {
    let usage = "usage: cargo xtask udp-flows ADDRESS:PORT N [FROM:PORT]";
    let (target, flows, from) = match arguments {
        [target, flows] => (target, flows, target),
        [target, flows, from] => (target, flows, from),
        _ => anyhow::bail!(usage),
    };
    let flows: usize = flows.parse().context("N must be a number")?;
    let target: std::net::SocketAddr = target.parse().context("ADDRESS:PORT must be an IP address and port")?;
    let answerer: std::net::SocketAddr = from.parse().context("FROM:PORT must be an IP address and port")?;
    let sockets: Vec<std::net::UdpSocket> =
        (0..flows).map(|_| std::net::UdpSocket::bind("0.0.0.0:0")).collect::<std::io::Result<_>>()?;
    for (index, socket) in sockets.iter().enumerate() {
        socket.send_to(format!("flow {index}").as_bytes(), target)?;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut answered = 0;
    let mut elsewhere = Vec::new();
    for (index, socket) in sockets.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(left))?;
        let mut buffer = [0u8; 64];
        if let Ok((count, from)) = socket.recv_from(&mut buffer) {
            if &buffer[..count] == format!("flow {index}").as_bytes() {
                if from == answerer {
                    answered += 1;
                } else {
                    elsewhere.push(from.to_string());
                }
            }
        }
    }
    if elsewhere.is_empty() {
        println!("answered {answered} of {flows}");
    } else {
        elsewhere.sort();
        elsewhere.dedup();
        println!("answered {answered} of {flows}; echoes from another address: {}", elsewhere.join(", "));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Datagrams [`udp_nics_test`] sends each card (one per source port).
pub const UDP_NICS_FLOWS: u32 = 16;

/// The names of the UDP tests on two cards, by QEMU machine.
pub const UDP_NICS: [(qemu::Machine, &str); 2] =
    [(qemu::Machine::Microvm, "udp-nics-microvm-2"), (qemu::Machine::Q35, "udp-nics-q35-2")];

/// `udp-nics-{microvm,q35}-2`: examples/echo on 2 CPUs with 2 cards on 2
/// taps (card K at 172.31.K.2, each on its own CPU with its own stack);
/// its one UDP socket is bound to `0.0.0.0:7`. From the namespace,
/// [`UDP_NICS_FLOWS`] datagrams to each card's address: every one must
/// be echoed, from the address it was sent to. Before a socket on
/// `0.0.0.0` had a member on every card, it lived on card 0's stack only
/// and card 1 answered "port unreachable".
pub fn udp_nics_test(image: &Path, accel: crate::accel::Accel, machine: qemu::Machine) -> Result<(bool, String)> {
    let namespace = Namespace::create("udpnics")?;
    let mut devices = vmm::Devices::default();
    for card in 0..2 {
        let name = format!("tap{card}");
        namespace.add_tap_on(&name, 1, card)?;
        devices.taps.push(vmm::Tap { mac: Some(netns::guest_mac(card)), ..vmm::Tap::new(&name) });
    }
    let mut config = VmConfig::new(image.to_path_buf(), accel);
    config.cpus = 2;
    config.machine = machine;
    config.command_line = format!("{} toro.log=info", netns::guest_arguments_for(2)).into();
    config.namespace = Some(namespace.name().into());
    let (mut command, _directory, _log) = vmm::command(Vmm::Qemu, &config, &devices)?;
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().context("starting QEMU")?;
    let (lines, reader, errors) = qemu::read_output(&mut child);
    let target = |card: u32| format!("{}:7", netns::guest_address(card));
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // Card 0 up (the boot), then card 1 gets 15 s more (it is up by then).
    let answer = first_echo(&namespace, &target(0), Duration::from_secs(60))?;
    if answer != "answered 1 of 1" {
        problems.push(format!("eth0 ({}) never echoed one datagram: {answer:?}", target(0)));
    } else {
        notes.push(format!("eth0 echoed after {:.1} s", started.elapsed().as_secs_f64()));
        let answer = first_echo(&namespace, &target(1), Duration::from_secs(15))?;
        if answer != "answered 1 of 1" {
            problems.push(format!("eth1 ({}) never echoed one datagram: {answer:?}", target(1)));
        }
        for card in 0..2 {
            let answer = udp_probe(&namespace, &target(card), UDP_NICS_FLOWS)?;
            if answer != format!("answered {UDP_NICS_FLOWS} of {UDP_NICS_FLOWS}") {
                problems.push(format!("{UDP_NICS_FLOWS} flows to eth{card} ({}): {answer:?}", target(card)));
            } else {
                notes.push(format!("eth{card}: {answer}"));
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let vmm_errors = errors.join().unwrap_or_default();
    let output: Vec<String> = lines.try_iter().map(|(_, line)| line).collect();
    if let Some(line) = output.iter().find(|line| line.contains("panic") || line.contains("CPU exception")) {
        problems.push(format!("the guest failed: {line}"));
    }
    Ok(if problems.is_empty() {
        (true, format!("ok ({}; one socket on 0.0.0.0:7, two cards)", notes.join("; ")))
    } else {
        let stderr =
            if vmm_errors.trim().is_empty() { String::new() } else { format!("; stderr: {}", vmm_errors.trim()) };
        (
            false,
            format!(
                "FAILED: {}; {}; guest printed: {}{stderr}",
                problems.join("; "),
                notes.join("; "),
                output.join(" | ")
            ),
        )
    })
}

/// Addresses the tap tests add to the namespace's side of the tap, each a
/// host on the guest's link that it must answer (more than smoltcp's
/// default neighbour cache of 8).
const LINK_HOSTS: u32 = 12;
/// SYN retransmissions those connects may need (the host may be slow);
/// a guest that asks ARP for each, once a second at most, needs about one
/// per host.
const MAX_LINK_HOST_SYN_RETRANSMITS: u64 = 2;

/// Runs one tap test with the web server image; (passed, summary).
pub fn run(test: &TapTest, image: &Path, accel: crate::accel::Accel) -> Result<(bool, String)> {
    if test.nics > 1 {
        return run_nics(test, image, accel);
    }
    let namespace = Namespace::create("test")?;
    namespace.add_tap("tap0", test.queues, true)?;
    let mut config = VmConfig::new(image.to_path_buf(), accel);
    config.cpus = test.cpus;
    if test.queues > 1 {
        config.machine = qemu::Machine::Q35;
        // The boot log's queue pairs.
        config.command_line = format!("{} toro.log=info", netns::guest_arguments()).into();
    }
    if test.queues <= 1 {
        config.command_line = netns::guest_arguments().into();
    }
    config.namespace = Some(namespace.name().into());
    let mac = GUEST_MAC.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":");
    let devices = vmm::Devices { taps: vec![vmm::Tap { name: "tap0".into(), mac: Some(mac), queues: test.queues }] };
    let (mut command, directory, _log) = vmm::command(test.vmm, &config, &devices)?;
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", test.vmm))?;
    let (lines, reader, errors) = qemu::read_output(&mut child);
    let url = |path: &str| format!("http://{GUEST_ADDRESS}{path}");
    let curl = |arguments: &[&str]| {
        namespace
            .command("curl")
            .args(["-s", "-m", "10"])
            .args(arguments)
            .output()
            .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()))
    };
    // "CODE BYTES" of one GET (`-g`: IPv6 literals in brackets).
    let status = |url: &str| curl(&["-g", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url]);
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut first = None;
    let mut last_stats = String::new();
    while started.elapsed() < test.boot_wait {
        let (ok, out) = status(&url("/"))?;
        if ok && out.starts_with("200") {
            first = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    match first.as_deref() {
        Some("200 612") => notes.push(format!("first 200 after {:.1} s", started.elapsed().as_secs_f64())),
        other => problems.push(format!("GET / gave {other:?}, expected \"200 612\"")),
    }
    if first.is_some() {
        let (_, pair) = curl(&[
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download} %{num_connects};",
            &url("/"),
            &url("/live"),
        ])?;
        if !pair.starts_with("200 612 1;200 ") || !pair.ends_with(" 0;") {
            problems.push(format!("keep-alive pair gave {pair:?}, expected one connection for two 200s"));
        }
        // gzip: curl asks for it (--compressed) and decodes what it gets.
        if let Err(error) = namespace.gzip_served(&url("/")) {
            problems.push(format!("GET / with gzip: {error:#}"));
        }
        // A request body of 60,000 bytes, echoed byte for byte: the host
        // sends it in segments larger than a frame where the card takes
        // them (QEMU's and Firecracker's taps: GUEST_TSO4 with merged
        // receive buffers), which `/stats` counts as rx_large.
        // cloud-hypervisor offers GUEST_TSO4 but not MRG_RXBUF (features
        // 0x120637faf), so the driver declines it there.
        let large_segments = test.stats && test.vmm != Vmm::CloudHypervisor;
        let large = |stats: &str| interface_total(stats, "rx_large");
        let before = if large_segments { large(&curl(&[&url("/stats")])?.1) } else { None };
        if let Err(error) = namespace.body_echoed(&url("/echo"), LARGE_BODY) {
            problems.push(format!("{error:#}"));
        }
        if large_segments {
            match (before, large(&curl(&[&url("/stats")])?.1)) {
                (Some(before), Some(after)) if after > before => {
                    notes.push(format!("{LARGE_BODY}-byte body echoed, {} large segments", after - before))
                }
                counts => problems.push(format!(
                    "a {LARGE_BODY}-byte body came in no segment larger than a frame (rx_large {counts:?})"
                )),
            }
        }
        // IPv6: the static address, and the link-local one (from the MAC),
        // reached through the tap by its scope.
        let link_local = "fe80::5054:ff:fe12:3456%25tap0".to_string();
        for host in [netns::GUEST_ADDRESS6, &link_local] {
            let (ok, out) = status(&format!("http://[{host}]/"))?;
            if !ok || out != "200 612" {
                problems.push(format!("GET http://[{host}]/ gave {out:?} (curl ok: {ok})"));
            }
        }
        // SLAAC: a router advertisement for fd00:32::/64 gives the guest an
        // address made from the prefix and its MAC.
        let prefix = [0xfd, 0x00, 0x00, 0x32, 0, 0, 0, 0];
        let router = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x32, 0x01];
        let advertisement = crate::frames::router_advertisement([0x02, 0, 0x5e, 0, 0x32, 0x01], router, prefix);
        crate::frames::inject(namespace.name(), "tap0", &[advertisement], 1, Duration::ZERO)?;
        let autoconfigured = "fd00:32::5054:ff:fe12:3456";
        let mut answer = String::new();
        for _ in 0..20 {
            let (ok, out) = status(&format!("http://[{autoconfigured}]/"))?;
            answer = out;
            if ok && answer == "200 612" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if answer != "200 612" {
            problems.push(format!("after a router advertisement, GET http://[{autoconfigured}]/ gave {answer:?}"));
        }
        if test.stats {
            // Hosts on the guest's link that it never saw ask for it.
            let mut learned_before = interface_total(&curl(&[&url("/stats")])?.1, "neighbours_learned").unwrap_or(0);
            for (v6, target) in [(false, url("/")), (true, format!("http://[{}]/", netns::GUEST_ADDRESS6))] {
                let family = if v6 { "IPv6" } else { "IPv4" };
                match namespace.many_hosts_served("tap0", LINK_HOSTS, v6, &target) {
                    Ok((retransmits, took)) if retransmits <= MAX_LINK_HOST_SYN_RETRANSMITS => {
                        let learned = interface_total(&curl(&[&url("/stats")])?.1, "neighbours_learned");
                        let new = learned.map(|learned| learned.saturating_sub(learned_before));
                        learned_before = learned.unwrap_or(learned_before);
                        match new {
                            Some(new) if new >= u64::from(LINK_HOSTS) => notes.push(format!(
                                "{LINK_HOSTS} more {family} hosts on the link served in {:.2} s, {retransmits} SYNs \
                                 retransmitted, {new} neighbours learned",
                                took.as_secs_f64()
                            )),
                            other => problems.push(format!(
                                "{LINK_HOSTS} more {family} hosts on the link served in {:.2} s ({retransmits} SYNs \
                                 retransmitted), but /stats neighbours_learned grew by {other:?}",
                                took.as_secs_f64()
                            )),
                        }
                    }
                    Ok((retransmits, _)) => problems.push(format!(
                        "{LINK_HOSTS} more {family} hosts on the link: {retransmits} SYNs had to be retransmitted \
                         (the guest dropped SYN-ACKs while asking for them)"
                    )),
                    Err(error) => problems.push(format!("{error:#}")),
                }
            }
        }
        let (_, stats) = if test.stats { curl(&[&url("/stats")])? } else { (true, String::new()) };
        let before = stats_field(&stats, "eth0", "rx_frames");
        if test.stats && before.is_none() {
            problems.push(format!("/stats has no eth0 rx_frames: {stats:?}"));
        }
        if test.hostile_frames {
            let frames = crate::frames::hostile(GUEST_MAC, [172, 31, 0, 2], [172, 31, 0, 1], RANDOM_FRAMES, 0x70a0);
            let sent = crate::frames::inject(namespace.name(), "tap0", &frames, 32, Duration::from_millis(20))?;
            // The guest must go on serving, on the same and on new connections.
            let (ok, out) = status(&url("/"))?;
            if !ok || out != "200 612" {
                problems.push(format!("after {sent} hostile frames GET / gave {out:?}"));
            }
            let (_, stats) = curl(&[&url("/stats")])?;
            let after = stats_field(&stats, "eth0", "rx_frames");
            match (before, after) {
                (Some(before), Some(after)) if after - before >= sent as u64 / 2 => {
                    notes.push(format!("{sent} hostile frames sent, {} received by the guest", after - before))
                }
                _ => problems.push(format!(
                    "{sent} hostile frames sent; rx_frames went {before:?} -> {after:?} (they did not reach the guest)"
                )),
            }
        }
        if test.wrk && crate::setup::have_wrk() {
            let (_, before) = curl(&[&url("/stats")])?;
            // 16 connections (twice the stack's idle listen pool, so a
            // burst of connects must wait in the backlog), 8 per queue
            // above 2 queues: the tap hashes each to a queue, and with 16
            // over 4 queues one queue would get none once in 25 runs.
            let connections = 16.max(8 * test.queues);
            match crate::wrk::run(namespace.command("wrk"), &url("/"), 2, connections, Duration::from_secs(3)) {
                Ok(report) if report.requests > 0 && report.non_2xx == 0 && report.socket_errors == 0 => {
                    notes.push(format!("wrk: {} requests in 3 s", report.requests))
                }
                Ok(report) => problems.push(format!("wrk: {report:?}")),
                Err(error) => problems.push(format!("{error:#}")),
            }
            let (_, after) = curl(&[&url("/stats")])?;
            match pumps_per_request(&before, &after) {
                Some(pumps) if pumps <= MAX_PUMPS_PER_REQUEST => {
                    notes.push(format!("{pumps:.2} pumps of the stack per request under wrk"))
                }
                Some(pumps) => problems.push(format!(
                    "{pumps:.2} pumps of the stack per request under wrk (at most {MAX_PUMPS_PER_REQUEST}: socket \
                     calls leave their pumps to the service, docs/net.md)"
                )),
                None => problems.push(format!("/stats gave no pumps or requests: {before:?} -> {after:?}")),
            }
        } else if test.queues > 1 {
            // Without wrk: 16 connections one after another (each a new
            // flow, spread over the queues by the tap's hash).
            for _ in 0..16 {
                let (ok, out) = status(&url("/"))?;
                if !ok || out != "200 612" {
                    problems.push(format!("GET / gave {out:?}"));
                    break;
                }
            }
        }
        if test.queues > 1 {
            last_stats = curl(&[&url("/stats")])?.1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let vmm_errors = errors.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&directory);
    let output: Vec<String> = lines.try_iter().map(|(_, line)| line).collect();
    if !output.iter().any(|line| line.contains(&format!("http://{GUEST_ADDRESS}:80/"))) {
        problems.push(format!("the guest did not list eth0 at {GUEST_ADDRESS}"));
    }
    if let Some(line) = output.iter().find(|line| line.contains("panic") || line.contains("CPU exception")) {
        problems.push(format!("the guest failed: {line}"));
    }
    if test.queues > 1 && first.is_some() {
        check_queue_pairs(test, &output, &last_stats, &mut problems, &mut notes);
    }
    Ok(if problems.is_empty() {
        (true, format!("ok ({})", notes.join("; ")))
    } else {
        (
            false,
            format!(
                "FAILED: {}; guest printed: {}{}",
                problems.join("; "),
                output.join(" | "),
                if vmm_errors.trim().is_empty() { String::new() } else { format!("; stderr: {}", vmm_errors.trim()) }
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pumps_are_counted_per_request() {
        let before = " cpu accepted open requests\n0 1 1 10 \n1 2 2 10\n\
                      interface cpu sockets pumps\nlo 0 8 5\neth0 1 40 100\n";
        let after = " cpu accepted open requests\n0 1 1 110\n1 2 2 110\n\
                     interface cpu sockets pumps\nlo 0 8 5\neth0 1 40 400\n";
        assert_eq!(interface_total(after, "pumps"), Some(405));
        assert_eq!(interface_total(after, "nosuch"), None);
        assert_eq!(pumps_per_request(before, after), Some(1.5));
        assert_eq!(pumps_per_request(after, after), None, "no request served");
        assert_eq!(pumps_per_request(before, "garbage"), None);
    }

    #[test]
    fn requests_are_read_per_cpu() {
        let stats = " cpu accepted open requests rejected\n0 3 1 130 0\n1 21 14 72 0\n\
                     interface cpu sockets\nlo 0 8\n";
        assert_eq!(requests_per_cpu(stats), vec![(0, 130), (1, 72)]);
        assert_eq!(requests_per_cpu(""), vec![]);
        assert_eq!(requests_per_cpu(" cpu accepted\n0 1\n"), vec![]);
    }

    #[test]
    fn each_card_must_be_served_on_its_own_cpu() {
        let stats = |cpu0: u64, cpu1: u64, eth1_cpu: u64| {
            format!(
                " cpu accepted open requests\n0 1 0 {cpu0}\n1 1 0 {cpu1}\ninterface cpu sockets\nlo 0 8\neth0 1 8\neth1 {eth1_cpu} 8\n"
            )
        };
        let log = |cpus: [u64; 2]| -> Vec<String> {
            let mut lines: Vec<String> = (0..2)
                .map(|card| format!("virtio-net at 0xfeb0{card}e00: interrupts GSI (0x3{card}) on cpu {}", cpus[card]))
                .collect();
            lines.push("webserver: eth0 on cpu 1: http://172.31.0.2:80/ (/24)".into());
            lines.push(format!("webserver: eth1 on cpu {}: http://172.31.1.2:80/ (/24)", cpus[1]));
            lines
        };
        // eth0 on cpu 1 got 3 requests, eth1 on cpu 0 got 5 (and the last /stats).
        let mut problems = Vec::new();
        let owners = check_cards(2, &log([1, 0]), &stats(10, 20, 0), &stats(16, 23, 0), &mut problems);
        assert_eq!((owners, problems), (vec![1, 0], Vec::<String>::new()));
        // Card 1's requests served on card 0's CPU.
        let mut problems = Vec::new();
        check_cards(2, &log([1, 0]), &stats(10, 20, 0), &stats(10, 28, 0), &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        // Both cards on one CPU.
        let mut problems = Vec::new();
        check_cards(2, &log([1, 1]), &stats(10, 20, 1), &stats(10, 28, 1), &mut problems);
        assert!(problems.iter().any(|p| p.contains("expected 2 different CPUs")), "{problems:?}");
        // A card's interrupt bound on another CPU than its instance.
        let mut problems = Vec::new();
        check_cards(2, &log([1, 1]), &stats(10, 20, 0), &stats(16, 23, 0), &mut problems);
        assert!(problems.iter().any(|p| p.contains("interrupts bound on cpus [1, 1]")), "{problems:?}");
    }

    #[test]
    fn stats_columns_are_found_by_name() {
        let stats = " cpu accepted\n0 1\n1 2\ninterface cpu sockets closing accepted rx_frames tx_frames\n\
                     lo 0 4 0 0 0 0\neth0 1 5 0 3 117 90\n";
        assert_eq!(stats_field(stats, "eth0", "rx_frames"), Some(117));
        assert_eq!(stats_field(stats, "lo", "sockets"), Some(4));
        assert_eq!(stats_field(stats, "eth1", "rx_frames"), None);
        assert_eq!(stats_field(stats, "eth0", "nothing"), None);
        assert_eq!(stats_field("", "eth0", "rx_frames"), None);
    }
}
