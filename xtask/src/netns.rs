//! Network namespaces with tap devices: a private network for one guest,
//! made and removed by the tool itself (`ip netns`, iproute2; needs root).
//!
//! The guest's card is a tap whose host side lives inside the namespace at
//! [`HOST_ADDRESS`]; the guest takes [`GUEST_ADDRESS`] (given to Toro on its
//! command line as `toro.ip=`/`toro.gw=`). The VMM runs inside the
//! namespace (it opens the tap there), and so do the host-side clients
//! (curl, wrk, the frame injector): nothing reaches the machine's own
//! network, and two runs never see each other's traffic.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

/// The host side of the tap, inside the namespace.
pub const HOST_ADDRESS: &str = "172.31.0.1";
/// The guest's address on the tap network.
pub const GUEST_ADDRESS: &str = "172.31.0.2";
/// The tap network's prefix length.
pub const PREFIX: u8 = 24;
/// The host side's IPv6 address on the tap network (a /64 of fd00::/8).
pub const HOST_ADDRESS6: &str = "fd00:31::1";
/// The network [`Namespace::route_nowhere`] routes as unreachable.
pub const UNREACHABLE_NETWORK: &str = "10.99.0.0/16";
/// The guest's static IPv6 address there.
pub const GUEST_ADDRESS6: &str = "fd00:31::2";

/// Most tap networks one namespace gets (`--nics`).
pub const MAX_NETWORKS: u32 = 16;

/// The host side's address on tap network `network` (`172.31.N.1`;
/// network 0's is [`HOST_ADDRESS`]).
pub fn host_address(network: u32) -> String {
    format!("172.31.{network}.1")
}

/// The guest's address on tap network `network` (`172.31.N.2`).
pub fn guest_address(network: u32) -> String {
    format!("172.31.{network}.2")
}

/// The MAC of the guest's card on tap network `network` (QEMU's default
/// for the first, then counting up).
pub fn guest_mac(network: u32) -> String {
    format!("52:54:00:12:34:{:02x}", 0x56 + network)
}

/// Why namespaces cannot be made here, if they cannot (for "skipped: ...").
pub fn unavailable() -> Option<String> {
    if !crate::setup::is_root() {
        return Some("network namespaces need root (ip netns add)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing (no tap devices)".into());
    }
    if Command::new("ip").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true) {
        return Some("`ip` (iproute2) not found".into());
    }
    None
}

/// A network namespace; removed (with its taps) when dropped.
pub struct Namespace {
    name: String,
}

/// The Toro command-line words that put the guest on the tap network.
pub fn guest_arguments() -> String {
    format!("toro.ip={GUEST_ADDRESS}/{PREFIX} toro.gw={HOST_ADDRESS} toro.ip6={GUEST_ADDRESS6}/64")
}

/// The words for `cards` cards, one per tap network: card 0 as
/// [`guest_arguments`], card K at `toro.ethK.ip=172.31.K.2/24` (no
/// gateway: the namespace is one hop).
pub fn guest_arguments_for(cards: u32) -> String {
    let mut words = guest_arguments();
    for card in 1..cards {
        words.push_str(&format!(" toro.eth{card}.ip={}/{PREFIX}", guest_address(card)));
    }
    words
}

fn ip(arguments: &[&str]) -> Result<()> {
    let output = Command::new("ip").args(arguments).stdin(Stdio::null()).output().context("running ip")?;
    if !output.status.success() {
        bail!("ip {} failed: {}", arguments.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

impl Namespace {
    /// A new namespace named `toro-TAG-PID` with its loopback up.
    pub fn create(tag: &str) -> Result<Self> {
        if let Some(reason) = unavailable() {
            bail!("cannot make a network namespace: {reason}");
        }
        remove_stale();
        let name = format!("toro-{tag}-{}", std::process::id());
        // A namespace left by a killed earlier run with this pid.
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let namespace = Self { name };
        ip(&["-n", &namespace.name, "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds tap `ifname` with `queues` queues (multi-queue when more than
    /// one), at `HOST_ADDRESS/PREFIX` when `address`, and brings it up.
    pub fn add_tap(&self, ifname: &str, queues: u32, address: bool) -> Result<()> {
        self.add_tap_with(ifname, queues, address.then_some(0))
    }

    /// Adds tap `ifname` on tap network `network`: network 0 as
    /// [`Self::add_tap`] with its addresses, network K at
    /// `172.31.K.1/24` (IPv4 only).
    pub fn add_tap_on(&self, ifname: &str, queues: u32, network: u32) -> Result<()> {
        self.add_tap_with(ifname, queues, Some(network))
    }

    fn add_tap_with(&self, ifname: &str, queues: u32, network: Option<u32>) -> Result<()> {
        let mut arguments = vec!["-n", &self.name, "tuntap", "add", "dev", ifname, "mode", "tap"];
        if queues > 1 {
            arguments.push("multi_queue");
        }
        ip(&arguments)?;
        if let Some(other) = network.filter(|&network| network > 0) {
            let cidr = format!("{}/{PREFIX}", host_address(other));
            ip(&["-n", &self.name, "addr", "add", &cidr, "dev", ifname])?;
        }
        if network == Some(0) {
            let cidr = format!("{HOST_ADDRESS}/{PREFIX}");
            ip(&["-n", &self.name, "addr", "add", &cidr, "dev", ifname])?;
            // No duplicate-address wait: the address is usable at once.
            let cidr6 = format!("{HOST_ADDRESS6}/64");
            ip(&["-n", &self.name, "-6", "addr", "add", &cidr6, "dev", ifname, "nodad"])?;
            // The prefix the SLAAC test advertises, so the host reaches
            // the address the guest makes from it.
            ip(&["-n", &self.name, "-6", "addr", "add", "fd00:32::1/64", "dev", ifname, "nodad"])?;
        }
        // The host side's link-local address would stay tentative for a
        // second or two of duplicate-address detection after the link comes
        // up (no link-local traffic until then): no detection on a link with
        // one guest.
        let dad = format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad");
        let status = self.command("sh").args(["-c", &format!("echo 0 > {dad}")]).status().context("running sh")?;
        if !status.success() {
            bail!("could not turn off duplicate-address detection on {ifname} ({dad})");
        }
        ip(&["-n", &self.name, "link", "set", ifname, "up"])
    }

    /// Makes the namespace a router that reaches nothing beyond its taps:
    /// IPv4 forwarding on, and `10.99.0.0/16` routed as unreachable. A
    /// packet to that network is answered with an ICMP host unreachable,
    /// one to any other network off the taps with a network unreachable
    /// (the namespace has no default route).
    pub fn route_nowhere(&self) -> Result<()> {
        let forward = "/proc/sys/net/ipv4/ip_forward";
        let status = self.command("sh").args(["-c", &format!("echo 1 > {forward}")]).status().context("running sh")?;
        if !status.success() {
            bail!("could not turn on forwarding in the namespace ({forward})");
        }
        ip(&["-n", &self.name, "route", "add", "unreachable", UNREACHABLE_NETWORK])
    }

    /// Drops everything the namespace sends to `address` (a blackhole
    /// route for it): from the guest's side, a peer that went silent.
    pub fn black_hole(&self, address: &str) -> Result<()> {
        ip(&["-n", &self.name, "route", "add", "blackhole", &format!("{address}/32")])
    }

    /// Checks from inside the namespace that the server at `url` answers a
    /// request that takes gzip with a gzip-coded page that curl decodes to
    /// what it serves uncoded (the tap tests; the bench before its gzip
    /// rows, which would say nothing if they measured uncoded answers).
    pub fn gzip_served(&self, url: &str) -> Result<()> {
        let get = |arguments: &[&str]| -> Result<Vec<u8>> {
            let output = self.command("curl").args(["-s", "-m", "5"]).args(arguments).arg(url).output()?;
            ensure!(output.status.success(), "curl {arguments:?} {url} failed: {:?}", output.status);
            Ok(output.stdout)
        };
        let plain = get(&[])?;
        let coded = get(&["--compressed", "-D", "-"])?;
        let text = String::from_utf8_lossy(&coded);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("curl --compressed printed no head: {text:?}");
        };
        let coding = head.lines().any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("content-encoding") && value.trim().eq_ignore_ascii_case("gzip")
            })
        });
        ensure!(coding, "the server answered Accept-Encoding: gzip uncoded: {head:?}");
        ensure!(body.as_bytes() == plain.as_slice(), "the gzip-coded page decodes to something else");
        Ok(())
    }

    /// POSTs `bytes` bytes of a fixed pattern to `url` (the web server's
    /// `/echo`) with curl from inside the namespace, and checks that the
    /// answer is a 200 whose body is those bytes.
    pub fn body_echoed(&self, url: &str, bytes: usize) -> Result<()> {
        let body: Vec<u8> = (0..bytes).map(|at| (at % 251) as u8 ^ (at >> 8) as u8).collect();
        let path = std::env::temp_dir().join(format!("toro-body-{}-{}", self.name, bytes));
        std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
        let output = self
            .command("curl")
            .args(["-s", "-m", "10", "-w", "\n%{http_code}", "-H", "Content-Type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", path.display()))
            .arg(url)
            .output();
        let _ = std::fs::remove_file(&path);
        let output = output?;
        ensure!(output.status.success(), "curl POST {url} ({bytes} bytes) failed: {:?}", output.status);
        let split = output.stdout.iter().rposition(|&byte| byte == b'\n').unwrap_or(0);
        let (echoed, code) = output.stdout.split_at(split);
        ensure!(code == b"\n200", "POST {url} ({bytes} bytes) answered {:?}", String::from_utf8_lossy(code));
        ensure!(echoed == body.as_slice(), "POST {url}: {} bytes came back, not the {bytes} sent", echoed.len());
        Ok(())
    }

    /// Gives the namespace's side of `ifname` (on tap network 0) `hosts`
    /// more addresses (`172.31.0.100` on, or `fd00:31::100` on when `v6`)
    /// and fetches `url` once from each (curl `--interface`): to the guest,
    /// that many hosts on its link, of which it saw no ARP request or
    /// neighbour solicitation (the namespace asked for the guest once, from
    /// its first address). Returns how many SYNs the namespace had to
    /// retransmit for those connections (`TcpExt TCPSynRetrans`) and the
    /// time all the fetches took: a guest that must ask for each host, at
    /// most once a second, holds back its SYN-ACKs meanwhile.
    pub fn many_hosts_served(
        &self,
        ifname: &str,
        hosts: u32,
        v6: bool,
        url: &str,
    ) -> Result<(u64, std::time::Duration)> {
        let retransmits = || -> Result<u64> {
            let output = self.command("cat").arg("/proc/net/netstat").output().context("reading /proc/net/netstat")?;
            crate::wrk::tcp_ext_counter(&String::from_utf8_lossy(&output.stdout), "TCPSynRetrans")
                .context("no TcpExt TCPSynRetrans in the namespace's /proc/net/netstat")
        };
        let before = retransmits()?;
        let started = std::time::Instant::now();
        for host in 0..hosts {
            let address = self.add_link_host(ifname, host, v6)?;
            let output = self
                .command("curl")
                .args(["-s", "-g", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "--interface", &address, url])
                .output()
                .context("running curl")?;
            let code = String::from_utf8_lossy(&output.stdout).into_owned();
            ensure!(output.status.success() && code == "200", "GET {url} from {address} gave {code:?}");
        }
        Ok((retransmits()? - before, started.elapsed()))
    }

    /// Gives `ifname` its extra address number `host` (from 0):
    /// 172.31.0.(100 + host) or fd00:31::(0x100 + host); returns it.
    pub fn add_link_host(&self, ifname: &str, host: u32, v6: bool) -> Result<String> {
        let address = match v6 {
            false => format!("172.31.0.{}", 100 + host),
            true => format!("fd00:31::{:x}", 0x100 + host),
        };
        match v6 {
            // No duplicate address detection: usable at once.
            true => ip(&["-n", &self.name, "address", "add", &format!("{address}/64"), "dev", ifname, "nodad"])?,
            false => ip(&["-n", &self.name, "address", "add", &format!("{address}/{PREFIX}"), "dev", ifname])?,
        }
        Ok(address)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        wrap(Some(&self.name), program)
    }
}

/// The process that made namespace `name` (`toro-TAG-PID`), if the name is ours.
fn maker(name: &str) -> Option<u32> {
    name.strip_prefix("toro-")?.rsplit_once('-')?.1.parse().ok()
}

/// Removes the namespaces of earlier runs that were killed (Ctrl-C on
/// `cargo xtask run --net tap` ends the tool before it can clean up).
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = maker(name) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

/// Moves the calling thread into namespace `name` (`setns`; only this
/// thread moves): sockets it opens afterwards live in the namespace, and
/// stay there whichever thread uses them. Call it on a thread of its own.
pub fn enter(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a plain system call on a descriptor this thread owns.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// `program`, inside namespace `namespace` when one is given.
pub fn wrap(namespace: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match namespace {
        Some(name) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", name]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_inside_the_namespace() {
        let command = wrap(Some("toro-t-1"), "curl");
        assert_eq!(command.get_program(), "ip");
        let arguments: Vec<_> = command.get_args().collect();
        assert_eq!(arguments, ["netns", "exec", "toro-t-1", "curl"]);
        assert_eq!(wrap(None, "curl").get_program(), "curl");
        assert_eq!(guest_arguments(), "toro.ip=172.31.0.2/24 toro.gw=172.31.0.1 toro.ip6=fd00:31::2/64");
        assert_eq!(guest_arguments_for(1), guest_arguments());
        assert_eq!(
            guest_arguments_for(3),
            format!("{} toro.eth1.ip=172.31.1.2/24 toro.eth2.ip=172.31.2.2/24", guest_arguments())
        );
        assert_eq!(host_address(0), HOST_ADDRESS);
        assert_eq!(guest_address(0), GUEST_ADDRESS);
        assert_eq!(guest_mac(0), "52:54:00:12:34:56");
        assert_eq!(guest_mac(1), "52:54:00:12:34:57");
        assert_eq!(maker("toro-run-1234"), Some(1234));
        assert_eq!(maker("toro-my-tag-77"), Some(77));
        assert_eq!(maker("other-run-1234"), None);
        assert_eq!(maker("toro-run-x"), None);
    }
}
