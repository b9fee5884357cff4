//! `cargo xtask`: Toro's host tool.
//!
//! ```text
//! cargo xtask run [APP] [options]     build APP (default webserver, on --net user) and boot it
//! cargo xtask test [--filter WORD]    host unit tests, then every in-VM test
//! cargo xtask gdb [APP|IMAGE] [options]  boot halted and attach gdb
//! cargo xtask boot ELF [options]      boot an already built image (cargo runner)
//! cargo xtask setup                   install the Rust target and QEMU
//! cargo xtask bench [--runs N] [--quick]  Toro against the Linux guest yardstick
//! options: --cpus N  --memory MIB  --machine microvm|q35  --accel kvm|tcg
//!          --cmdline "..."  --debug  --timeout SECONDS  --device QEMU-DEVICE (repeatable)
//!          --vmm qemu|firecracker|cloud-hypervisor  --disk IMAGE[,ro]|FOLDER
//!          --share FOLDER (virtio-fs, mounted at /share; repeatable)
//!          --net user|tap|tap=IFNAME|none  --nics N
//! ```

mod accel;
mod bench;
mod build;
mod disk;
mod disktest;
mod floor;
mod frames;
mod linux_guest;
mod lockcheck;
mod netns;
mod nettest;
mod qemu;
mod setup;
mod share;
mod storms;
mod symbols;
mod vmm;
mod vmtest;
mod wrk;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::accel::Accel;
use crate::qemu::{Machine, VmConfig};
use crate::symbols::Symbols;

/// Options shared by the commands that boot something.
#[derive(Debug)]
pub struct BootOptions {
    pub cpus: u32,
    pub memory_mib: u32,
    pub machine: Machine,
    pub accel: Option<Accel>,
    /// As given (bytes, not necessarily UTF-8).
    pub command_line: OsString,
    pub debug: bool,
    pub timeout: Option<Duration>,
    /// A virtio-net card on QEMU user networking (`--net user`), with
    /// these (host port on 127.0.0.1, guest port) TCP forwards.
    pub network: Option<qemu::UserNetwork>,
    pub positional: Vec<String>,
    /// Disks to attach as virtio-blk (`--disk PATH[,ro][,sector=BYTES]`).
    pub disks: Vec<disk::Disk>,
    /// Host folders to share over virtio-fs (`--share FOLDER`).
    pub shares: Vec<PathBuf>,
    /// Extra QEMU devices (`--device virtio-rng-pci`).
    pub devices: Vec<String>,
    /// Which VMM boots the image (`--vmm`).
    pub vmm: vmm::Vmm,
    /// A virtio-net card on a tap (`--net tap`: in a network namespace the
    /// tool makes; `--net tap=IFNAME`: an existing tap of the host's).
    pub tap: Option<TapNetwork>,
    /// Cards with `--net tap` (`--nics N`): tap0..tapN-1 in the
    /// namespace, card K at 172.31.K.2 (`toro.ethK.ip=`), the cards spread
    /// over the CPUs.
    pub nics: u32,
}

/// Where `--net tap` puts the guest's card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapNetwork {
    /// A tap in a fresh network namespace, host side at
    /// `netns::HOST_ADDRESS`, the guest at `netns::GUEST_ADDRESS`.
    Namespace,
    /// The host's tap with this name, set up by the user.
    Existing(String),
}

/// The forward `--net user` gets without `--forward`: the web server's
/// port 80 on the host's 127.0.0.1:8080.
pub const DEFAULT_FORWARD: (u16, u16) = (8080, 80);

/// Reads `HOST:GUEST` (two TCP ports).
fn parse_forward(text: &str) -> Result<(u16, u16)> {
    let (host, guest) = text.split_once(':').with_context(|| format!("--forward {text:?}: give HOST:GUEST ports"))?;
    let port =
        |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).with_context(|| format!("--forward: bad port {p:?}"));
    Ok((port(host)?, port(guest)?))
}

fn parse_options(arguments: &[OsString]) -> Result<BootOptions> {
    let mut options = BootOptions {
        cpus: 2,
        memory_mib: 128,
        machine: Machine::Microvm,
        accel: None,
        command_line: OsString::new(),
        debug: false,
        timeout: None,
        network: None,
        positional: Vec::new(),
        disks: Vec::new(),
        shares: Vec::new(),
        devices: Vec::new(),
        vmm: vmm::Vmm::Qemu,
        tap: None,
        nics: 1,
    };
    let mut forwards = Vec::new();
    let mut iterator = arguments.iter();
    while let Some(argument) = iterator.next() {
        let mut raw = |name: &str| iterator.next().with_context(|| format!("{name} needs a value")).cloned();
        let Some(argument) = argument.to_str() else {
            bail!("argument {argument:?} is not UTF-8 (only --cmdline's value may be any bytes)");
        };
        if argument == "--cmdline" {
            options.command_line = raw("--cmdline")?;
            continue;
        }
        let mut value =
            |name: &str| raw(name)?.into_string().map_err(|bytes| anyhow::anyhow!("{name} {bytes:?}: not UTF-8"));
        match argument {
            "--cpus" => options.cpus = value("--cpus")?.parse().context("--cpus takes a number")?,
            "--nics" => options.nics = value("--nics")?.parse().context("--nics takes a number")?,
            "--memory" => options.memory_mib = value("--memory")?.parse().context("--memory takes MiB")?,
            "--machine" => {
                let name = value("--machine")?;
                options.machine =
                    Machine::parse(&name).with_context(|| format!("unknown machine {name:?}: microvm or q35"))?;
            }
            "--accel" => {
                let name = value("--accel")?;
                options.accel =
                    Some(Accel::parse(&name).with_context(|| format!("unknown accelerator {name:?}: kvm or tcg"))?);
            }
            "--timeout" => {
                options.timeout =
                    Some(Duration::from_secs(value("--timeout")?.parse().context("--timeout takes seconds")?))
            }
            "--vmm" => {
                let name = value("--vmm")?;
                options.vmm = vmm::Vmm::parse(&name)
                    .with_context(|| format!("unknown VMM {name:?}: qemu, firecracker or cloud-hypervisor"))?;
            }
            "--debug" => options.debug = true,
            "--disk" => options.disks.push(disk::parse(&value("--disk")?)?),
            "--device" => options.devices.push(value("--device")?),
            "--share" => {
                let folder = PathBuf::from(value("--share")?);
                if !folder.is_dir() {
                    bail!("--share {}: no such folder", folder.display());
                }
                options.shares.push(folder);
            }
            "--net" => match value("--net")?.as_str() {
                "user" => (options.network, options.tap) = (Some(qemu::UserNetwork::default()), None),
                "none" => (options.network, options.tap) = (None, None),
                "tap" => (options.network, options.tap) = (None, Some(TapNetwork::Namespace)),
                other => match other.strip_prefix("tap=") {
                    Some(name) if !name.is_empty() && name.len() < 16 && !name.contains(['/', ',', ' ']) => {
                        (options.network, options.tap) = (None, Some(TapNetwork::Existing(name.into())))
                    }
                    _ => bail!("unknown --net {other:?}: user, tap, tap=IFNAME or none"),
                },
            },
            "--forward" => forwards.push(parse_forward(&value("--forward")?)?),
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            _ => options.positional.push(argument.to_string()),
        }
    }
    if let Some(network) = &mut options.network {
        network.tcp_forwards = if forwards.is_empty() { vec![DEFAULT_FORWARD] } else { forwards };
    } else if !forwards.is_empty() {
        bail!("--forward needs --net user");
    }
    if options.vmm != vmm::Vmm::Qemu && (options.accel.is_some() || options.machine != Machine::Microvm) {
        bail!("--machine and --accel are QEMU's: {} has one machine type and always uses KVM", options.vmm);
    }
    if options.vmm != vmm::Vmm::Qemu && !options.shares.is_empty() {
        bail!("--share works with QEMU only (vhost-user-fs)");
    }
    if options.vmm != vmm::Vmm::Qemu && options.command_line.to_str().is_none() {
        bail!("a --cmdline that is not UTF-8 works with QEMU only ({} takes text)", options.vmm);
    }
    if options.cpus == 0 || options.cpus > 255 {
        bail!("--cpus must be 1..=255");
    }
    if options.nics == 0 || options.nics > netns::MAX_NETWORKS {
        bail!("--nics must be 1..={}", netns::MAX_NETWORKS);
    }
    if options.nics > 1 && options.tap != Some(TapNetwork::Namespace) {
        bail!("--nics needs --net tap (a tap per card, in the namespace the tool makes)");
    }
    if options.memory_mib < 2 {
        // The image loads at 1 MiB: with less RAM QEMU runs whatever is at
        // the entry point, and the VM never ends.
        bail!("--memory must be at least 2 (MiB): Toro images load at 1 MiB");
    }
    Ok(options)
}

/// The accelerator to use, said at start.
pub fn choose_accel(requested: Option<Accel>) -> Accel {
    match requested {
        Some(accel) => {
            eprintln!("accelerator: {accel} (requested)");
            accel
        }
        None => {
            let (accel, reason) = accel::detect();
            eprintln!("accelerator: {accel}: {reason}");
            accel
        }
    }
}

fn vm_config(kernel: PathBuf, options: &BootOptions) -> VmConfig {
    // Firecracker and cloud-hypervisor always use KVM.
    let accel = if options.vmm == vmm::Vmm::Qemu { choose_accel(options.accel) } else { Accel::Kvm };
    let mut config = VmConfig::new(kernel, accel);
    config.cpus = options.cpus;
    config.memory_mib = options.memory_mib;
    config.machine = options.machine;
    config.command_line = options.command_line.clone();
    config.disks = options.disks.clone();
    config.devices = options.devices.clone();
    config.network = options.network.clone();
    config
}

/// Bytes of one CPU-pair job ring in the kernel (64 jobs of 24 bytes and
/// two cache-line-padded indexes): the boot CPU allocates one per ordered
/// pair of CPUs from its share.
const JOB_RING_BYTES: u64 = 1664;

/// A warning when `cpus` CPUs likely do not fit in `memory_mib` (the
/// kernel then refuses to boot, status 103): memory is split evenly among
/// the CPUs, and the boot CPU's share must hold the job rings.
pub fn fit_warning(cpus: u32, memory_mib: u32) -> Option<String> {
    let (cpus, memory) = (u64::from(cpus), u64::from(memory_mib) << 20);
    let rings = cpus * cpus.saturating_sub(1) * JOB_RING_BYTES;
    // The image and page tables come off the top first; each CPU's thread
    // stack zone off its share (about a quarter of it at 32 MiB).
    let share = memory.saturating_sub(16 << 20) / cpus.max(1);
    (rings + (2 << 20) > share * 7 / 10).then(|| {
        format!(
            "{cpus} CPUs in {memory_mib} MiB likely do not fit: the boot CPU's share (about {} MiB) must hold the \
             job rings between every pair of CPUs ({} MiB); the kernel will refuse to boot (status 103). Use fewer \
             CPUs or more memory.",
            share >> 20,
            rings >> 20
        )
    })
}

fn boot(image: PathBuf, options: &BootOptions) -> Result<ExitCode> {
    if let Some(warning) = fit_warning(options.cpus, options.memory_mib) {
        eprintln!("warning: {warning}");
    }
    let symbols = Symbols::load(&image)?;
    let config = vm_config(image, options);
    if let Some(network) = &config.network {
        for (host, guest) in &network.tcp_forwards {
            eprintln!("network: QEMU user networking; the guest's TCP port {guest} is http://127.0.0.1:{host}/");
        }
    }
    let mut config = config;
    let mut taps = vmm::Devices::default();
    // Kept until the VM ends: dropping it removes the namespace.
    let mut namespace = None;
    match &options.tap {
        None => {}
        Some(TapNetwork::Existing(name)) => {
            taps.taps.push(vmm::Tap::new(name));
            eprintln!("network: the guest's card is on the host's tap {name}");
        }
        Some(TapNetwork::Namespace) => {
            let made = netns::Namespace::create("run")?;
            // q35 under QEMU with one card: a multi-queue tap, one queue
            // pair per CPU. Several cards: one queue each, a card per CPU.
            let queues = if options.vmm == vmm::Vmm::Qemu && config.machine == qemu::Machine::Q35 && options.nics == 1 {
                options.cpus.max(1)
            } else {
                1
            };
            for card in 0..options.nics {
                let name = format!("tap{card}");
                made.add_tap_on(&name, queues, card)?;
                taps.taps.push(vmm::Tap { queues, mac: Some(netns::guest_mac(card)), ..vmm::Tap::new(&name) });
            }
            config.namespace = Some(made.name().into());
            // Bytes: a `toro.ip=` the user gave wins.
            let given = config.command_line.as_encoded_bytes();
            if !given.split(|b| b.is_ascii_whitespace()).any(|word| word.starts_with(b"toro.ip=")) {
                let mut line = OsString::from(netns::guest_arguments_for(options.nics));
                if !given.is_empty() {
                    line.push(" ");
                    line.push(&config.command_line);
                }
                config.command_line = line;
            }
            for card in 0..options.nics {
                eprintln!(
                    "network: tap{card} in network namespace {0} (host side {1}); the guest's eth{card} is {2}: try `ip netns exec {0} curl http://{2}/`",
                    made.name(),
                    netns::host_address(card),
                    netns::guest_address(card)
                );
            }
            namespace = Some(made);
        }
    }
    // Kept until the VM ends: dropping one stops its virtiofsd.
    let mut daemons = Vec::new();
    if !options.shares.is_empty() {
        setup::ensure_virtiofsd()?;
    }
    for (index, folder) in options.shares.iter().enumerate() {
        let run_dir = build::workspace_root().join("target").join("shares").join(std::process::id().to_string());
        let daemon = share::start(folder, &run_dir, &share::tag(index))?;
        eprintln!(
            "share: {} over virtio-fs (tag {}){}",
            folder.display(),
            daemon.share.tag,
            if index == 0 { ", mounted at /share unless toro.mount= says otherwise" } else { "" }
        );
        config.shares.push(daemon.share.clone());
        daemons.push(daemon);
    }
    let result = vmm::run(options.vmm, &config, &taps, options.timeout, true, &|line| symbols.annotate(line));
    drop(daemons);
    drop(namespace);
    let result = result?;
    if !matches!(result.outcome, qemu::Outcome::Exited(0)) {
        eprintln!("toro: {}", result.outcome);
    }
    Ok(ExitCode::from(result.outcome.exit_code() as u8))
}

/// What `cargo xtask run` boots when no application is named: the web
/// server, on QEMU user networking unless `--net` says otherwise.
const DEFAULT_APP: &str = "webserver";

fn run(arguments: &[OsString]) -> Result<ExitCode> {
    let mut options = parse_options(arguments)?;
    if options.positional.is_empty() && options.vmm == vmm::Vmm::Qemu && !arguments.iter().any(|a| a == "--net") {
        let with_network: Vec<OsString> =
            ["--net", "user"].iter().map(OsString::from).chain(arguments.iter().cloned()).collect();
        options = parse_options(&with_network)?;
    }
    setup::ensure()?;
    let app = options.positional.first().map(String::as_str).unwrap_or(DEFAULT_APP);
    let image = build::application(app, options.debug)?;
    boot(image, &options)
}

fn gdb(arguments: &[OsString]) -> Result<ExitCode> {
    const PORT: u16 = 1234;
    let options = parse_options(arguments)?;
    if options.vmm != vmm::Vmm::Qemu {
        bail!("gdb works with QEMU only");
    }
    setup::ensure()?;
    // An application's name, its crate's path, or a built image's path
    // (out-of-tree applications).
    let app = options.positional.first().map(String::as_str).unwrap_or("hello");
    let image = if std::path::Path::new(app).is_file() { app.into() } else { build::application(app, options.debug)? };
    let mut config = vm_config(image.clone(), &options);
    config.gdb_port = Some(PORT);
    // QEMU's serial output still reaches the terminal; the terminal's input
    // belongs to gdb.
    let mut qemu = config.command().stdin(std::process::Stdio::null()).spawn().context("starting QEMU")?;
    eprintln!("QEMU waits for gdb on 127.0.0.1:{PORT}; the VM starts at `continue`");
    let status = std::process::Command::new("gdb")
        .arg("-q")
        .arg(&image)
        .args(["-ex", &format!("target remote 127.0.0.1:{PORT}")])
        .args(["-ex", "hbreak kernel_entry"])
        .status()
        .context("starting gdb (install the Debian package gdb)")?;
    let _ = qemu.kill();
    let _ = qemu.wait();
    Ok(ExitCode::from(if status.success() { 0 } else { 1 }))
}

fn main() -> ExitCode {
    // OsString: a --cmdline may be any bytes.
    let arguments: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((command, rest)) = arguments.split_first() else {
        eprintln!("usage: cargo xtask run|test|gdb|boot|setup ... (see xtask/src/main.rs)");
        return ExitCode::from(2);
    };
    let text = |arguments: &[OsString]| -> Result<Vec<String>> {
        arguments
            .iter()
            .map(|a| a.clone().into_string().map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8")))
            .collect()
    };
    let result = match command.to_str().unwrap_or("") {
        "run" => run(rest),
        "test" => text(rest).and_then(|rest| vmtest::test(&rest)),
        "gdb" => gdb(rest),
        "boot" => parse_options(rest).and_then(|options| {
            let image = options.positional.first().context("boot needs the path of an image")?.into();
            boot(image, &options)
        }),
        "setup" => setup::ensure().map(|()| ExitCode::SUCCESS),
        "bench" => text(rest).and_then(|rest| bench::bench(&rest)),
        "lockcheck" => text(rest).and_then(|rest| vmtest::lockcheck_command(&rest)),
        // The UDP multi-queue test's client, run inside its namespace.
        "udp-flows" => text(rest).and_then(|rest| nettest::udp_flows(&rest)),
        _ => Err(anyhow::anyhow!("unknown command {:?}: run, test, gdb, boot or setup", OsStr::new(command))),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(words: &[&str]) -> Result<BootOptions> {
        parse_options(&words.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn user_network_gets_the_web_forward_by_default() {
        let parsed = options(&["--net", "user"]).unwrap();
        assert_eq!(parsed.network.unwrap().tcp_forwards, vec![DEFAULT_FORWARD]);
        let parsed = options(&["--net", "user", "--forward", "8007:7", "--forward", "9000:80"]).unwrap();
        assert_eq!(parsed.network.unwrap().tcp_forwards, vec![(8007, 7), (9000, 80)]);
        assert!(options(&[]).unwrap().network.is_none());
    }

    #[test]
    fn warns_when_the_cpus_do_not_fit_in_memory() {
        assert!(fit_warning(128, 4096).is_some());
        assert!(fit_warning(255, 8192).is_some());
        assert!(fit_warning(2, 128).is_none());
        assert!(fit_warning(8, 256).is_none());
        assert!(fit_warning(4, 256).is_none());
    }

    #[test]
    fn the_command_line_may_be_any_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = vec![b'a', b'=', 0xff, 0xfe, b' ', b'b'];
        let words = vec![OsString::from("--cmdline"), OsString::from_vec(bytes.clone())];
        let parsed = parse_options(&words).unwrap();
        assert_eq!(parsed.command_line.into_vec(), bytes);
        // Other values must be text: a clear error, not a panic.
        assert!(parse_options(&[OsString::from("--cpus"), OsString::from_vec(vec![0xff])]).is_err());
        assert!(parse_options(&[OsString::from_vec(vec![0xff])]).is_err());
    }

    #[test]
    fn bad_network_options_are_errors() {
        assert!(options(&["--forward", "8080:80"]).is_err(), "--forward without --net user");
        assert!(options(&["--net", "user", "--forward", "8080"]).is_err());
        assert!(options(&["--net", "user", "--forward", "0:80"]).is_err());
        assert!(options(&["--net", "carrier-pigeon"]).is_err());
        assert!(options(&["--net", "tap="]).is_err());
        assert!(options(&["--net", "tap=a/b"]).is_err());
        assert!(options(&["--net", "tap=much-too-long-name"]).is_err());
    }

    #[test]
    fn several_cards_need_the_tools_namespace() {
        assert_eq!(options(&["--net", "tap", "--nics", "3"]).unwrap().nics, 3);
        assert_eq!(options(&["--net", "tap"]).unwrap().nics, 1);
        for bad in [
            &["--net", "tap", "--nics", "0"][..],
            &["--net", "tap", "--nics", "17"],
            &["--net", "tap", "--nics", "two"],
            &["--net", "tap", "--nics"],
            &["--net", "user", "--nics", "2"],
            &["--net", "tap=tap7", "--nics", "2"],
            &["--nics", "2"],
        ] {
            let error = options(bad).map(|_| ()).unwrap_err().to_string();
            assert!(error.contains("--nics"), "{bad:?}: {error}");
        }
        assert!(options(&["--net", "user", "--nics", "1"]).is_ok());
    }

    #[test]
    fn tap_networks_replace_user_networking() {
        let parsed = options(&["--net", "user", "--net", "tap"]).unwrap();
        assert_eq!((parsed.network, parsed.tap), (None, Some(TapNetwork::Namespace)));
        let parsed = options(&["--net", "tap=tap7"]).unwrap();
        assert_eq!(parsed.tap, Some(TapNetwork::Existing("tap7".into())));
        assert!(options(&["--net", "tap", "--net", "none"]).unwrap().tap.is_none());
        assert!(options(&["--net", "tap", "--forward", "8080:80"]).is_err(), "forwards are user networking's");
    }
}
