//! The Linux guest yardstick: Debian's own kernel, static busybox and nginx
//! in a small initramfs, built on demand from Debian's packages and cached
//! under `target/linux-guest/`, booted through the one launcher in
//! `qemu.rs`.
//!
//! What goes in, and why:
//!
//! - `vmlinux`: the ELF kernel pulled out of Debian's `linux-image-amd64`
//!   bzImage the way the kernel's `scripts/extract-vmlinux` does (find a
//!   compressed stream's magic, decompress, keep what is an ELF). QEMU boots
//!   it through its PVH note, skipping the bzImage's self-decompression.
//! - `initramfs.cpio.gz`: a newc archive written here (gzip-compressed by
//!   the host's `gzip`, which is Essential in Debian), with
//!   busybox as the shell, the virtio modules (`virtio_mmio`, `virtio_pci`
//!   for q35, `virtio_net`, `virtio_blk` and what they depend on: they are modules in Debian's
//!   config), nginx with its ELF interpreter and shared libraries, and the
//!   device nodes `/init` needs (`/dev/console` above all).
//! - For the benchmark's workloads, a second, uncompressed archive placed
//!   in front of that one (`bench-initramfs.cpio.gz`): the static programs
//!   of `bench/linux`, built here by cargo for `x86_64-unknown-linux-gnu`
//!   with `+crt-static` (see [`ensure_bench`]). The kernel unpacks
//!   concatenated archives one after the other, as it does for early
//!   microcode, so the workloads' programs change without rebuilding the
//!   guest.
//!
//! Pitfalls met on the way (each cost a boot that hung or died):
//!
//! - Debian's kernel has `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` off, so it
//!   ignores `virtio_mmio.device=`; it finds microvm's devices in ACPI.
//! - Under TCG the kernel marks the TSC unstable and then hangs unless it is
//!   told the TSC frequency (`tsc_early_khz=`); microvm also needs `pit=on`
//!   (the launcher always sets it). TCG's guest TSC is the host's TSC, so the
//!   host's frequency is the right value (see [`host_tsc_khz`]).
//! - Even so, the TSC sync check between vCPUs fails under TCG, and without
//!   `tsc=reliable` an idle Linux ticks at 250 Hz per vCPU; and the built-in
//!   `rtc_cmos` driver spends a second looking for the RTC that microvm
//!   (`rtc=off`) does not have. See [`command_line`] for both.
//! - The `.deb` ships no `modules.dep` (the package's postinst runs
//!   `depmod`), so the load order comes from each module's own
//!   `.modinfo` `depends=` field, which is what `depmod` reads too.
//! - Busybox's `unxz` lacks the x86 BCJ filter the kernel's xz stream uses,
//!   so the host's `xz` decompresses the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

use crate::accel::Accel;
use crate::qemu::{self, Outcome, RunResult, VmConfig};

/// The line `/init` prints first thing, before anything else runs: boot time
/// is measured to it.
pub const INIT_MARKER: &str = "toro-bench: linux /init started";
/// The line `/init` prints once nginx runs (serve mode).
pub const NGINX_MARKER: &str = "toro-bench: nginx started";
/// The line `/init` prints when every benchmark program succeeded (bench
/// mode), before ending the VM with status 0.
pub const BENCH_DONE_MARKER: &str = "toro-bench: workloads done";
/// The status bench mode ends the VM with when a program failed.
pub const BENCH_FAILED_STATUS: i32 = 1;
/// The port nginx listens on inside the guest.
pub const GUEST_HTTP_PORT: u16 = 80;

/// Bumped whenever what goes into the guest changes, so a cached guest built
/// by an older recipe is rebuilt.
const RECIPE_VERSION: u32 = 4;

/// The Debian packages fetched directly; the kernel package and nginx's
/// libraries are found through their `Depends` fields.
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
const NGINX_PACKAGE: &str = "nginx";

/// The modules `/init` loads (with their dependencies, found in `.modinfo`).
/// `ext4` mounts the storage benchmark's ext2 image (Debian builds ext2
/// support into the ext4 module: `CONFIG_EXT4_USE_FOR_EXT2`); it refuses to
/// mount without a `crc32c` driver ("Cannot load crc32c driver"), which its
/// `.modinfo` names only as a soft dependency: `crc32c_generic` goes first.
const WANTED_MODULES: &[&str] = &["virtio_mmio", "virtio_pci", "virtio_net", "virtio_blk", "crc32c_generic", "ext4"];

/// Busybox applets `/init` calls by name (symlinks to `/bin/busybox`).
const APPLETS: &[&str] = &["sh", "insmod", "ip", "mount", "umount", "mkdir", "ls", "sleep", "dd", "printf", "cat"];

/// The classic nginx welcome page, 612 bytes: the page the reference
/// HTTP figures were measured with.
const INDEX_HTML: &str = "<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
    body {
        width: 35em;
        margin: 0 auto;
        font-family: Tahoma, Verdana, Arial, sans-serif;
    }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href=\"http://nginx.org/\">nginx.org</a>.<br/>
Commercial support is available at
<a href=\"http://nginx.com/\">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
";

const NGINX_CONF: &str = "# Written by xtask/src/linux_guest.rs for the benchmark guest.
user root;
worker_processes auto;
pid /run/nginx.pid;
error_log stderr;
events {
    worker_connections 1024;
}
http {
    access_log off;
    default_type text/html;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    # For the gzip rows (requests that send Accept-Encoding: gzip): coded
    # per response at level 1, as Toro's web server does by default.
    gzip on;
    gzip_comp_level 1;
    gzip_min_length 256;
    gzip_vary on;
    gzip_types text/plain application/json;
    server {
        listen 80 default_server;
        root /www;
        index index.html;
    }
}
";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// How long the guest may take to print its first line ([`INIT_MARKER`]:
/// about 5 s under TCG) before [`run`] counts its boot as hung.
pub const FIRST_LINE_WITHIN: Duration = Duration::from_secs(60);

/// Runs the guest `config` with QEMU for at most `timeout`, booting it once
/// more if it printed nothing within [`FIRST_LINE_WITHIN`]: under TCG on a
/// loaded host the guest kernel now and then hangs before `/init` (seen in
/// 1 of 5 idle boots of a full bench, and once in a clean-clone CI's quick
/// bench: the workloads boot printed nothing in 240 s). That is a hang of
/// the yardstick's boot, not a result; a guest that hangs twice fails.
/// `name` says which run it was, in the note printed to stderr.
pub fn run(name: &str, config: &VmConfig, timeout: Duration) -> Result<RunResult> {
    let attempt = || qemu::run_within(config, Some(timeout), Some(FIRST_LINE_WITHIN), false, &|line| line.to_string());
    let result = attempt()?;
    if result.outcome == Outcome::TimedOut && result.first_line.is_none() {
        eprintln!(
            "{name}: the Linux guest printed nothing in {} s (its boot hung); booting it once more",
            FIRST_LINE_WITHIN.as_secs()
        );
        return attempt();
    }
    Ok(result)
}

/// What the guest does after printing [`INIT_MARKER`]; passed on the kernel
/// command line as `toro_mode=`, which the kernel hands to `/init` as an
/// environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Print the marker and end the VM through `isa-debug-exit` (status 0).
    Boot,
    /// Load the virtio modules, bring up the network, start nginx, idle.
    Serve,
    /// Print the marker and idle with nothing else running.
    Idle,
    /// Load the modules, mount the ext2 disk (`/dev/vda`) at `/mnt` and run
    /// [`DISK_PROGRAM`] on it and on the raw disk (`/dev/vdb`), then end the
    /// VM as bench mode does.
    Disk { quick: bool },
    /// Run the benchmark programs ([`BENCH_PROGRAMS`], from the bench
    /// archive) one after the other, each printing its `BENCH` lines, then
    /// end the VM: status 0 after [`BENCH_DONE_MARKER`] if all succeeded,
    /// [`BENCH_FAILED_STATUS`] at the first that failed. `quick` shortens
    /// every workload (the programs' `quick` argument).
    Bench { quick: bool },
    /// Serve mode with [`ECHO_PROGRAM`] (a TCP echo server on port 7,
    /// from the bench archive) running beside nginx.
    Echo,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::Serve => "serve",
            Self::Idle => "idle",
            Self::Bench { .. } => "bench",
            Self::Disk { .. } => "disk",
            Self::Echo => "echo",
        }
    }
}

/// The benchmark programs `/init` runs in bench mode, in order, from
/// [`BENCH_DIR`]: the allocation workloads on glibc malloc and the thread
/// workloads, then the allocation workloads on mimalloc.
pub const BENCH_PROGRAMS: &[&str] = &["toro-bench-glibc", "toro-bench-mimalloc"];
/// The storage workloads' program (disk mode), also in the bench archive.
pub const DISK_PROGRAM: &str = "toro-bench-disk";
/// The TCP echo server (echo mode), also in the bench archive.
pub const ECHO_PROGRAM: &str = "toro-bench-echo";
/// Where the bench archive puts them in the guest.
const BENCH_DIR: &str = "bench";
/// The Rust target of the Linux programs: the host's own (static), so the
/// toolchain always has its standard library.
const LINUX_TARGET: &str = "x86_64-unknown-linux-gnu";

/// A built guest: the two files QEMU loads.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
    /// The Debian kernel release, such as `6.1.0-56-amd64`.
    pub release: String,
    /// The host's TSC frequency, given to the guest as `tsc_early_khz=`.
    pub tsc_khz: u64,
    /// What went in (package files, modules), for the record.
    pub manifest: String,
    /// The bench archive in front of `initramfs`, once [`ensure_bench`]
    /// has built it; bench mode boots this instead.
    pub bench_initramfs: Option<PathBuf>,
}

impl LinuxGuest {
    /// The kernel command line for `mode`.
    pub fn command_line(&self, mode: Mode) -> String {
        command_line(self.tsc_khz, mode)
    }

    /// The launcher configuration for `mode`: the same defaults as a Toro
    /// image (machine, vCPUs, memory), with the initramfs and command line.
    pub fn vm_config(&self, accel: Accel, mode: Mode) -> VmConfig {
        let mut config = VmConfig::new(self.vmlinux.clone(), accel);
        let initramfs = match (mode, &self.bench_initramfs) {
            (Mode::Bench { .. } | Mode::Disk { .. } | Mode::Echo, Some(bench)) => bench,
            // Without the bench archive, /init reports the programs missing.
            _ => &self.initramfs,
        };
        config.initrd = Some(initramfs.clone());
        config.command_line = self.command_line(mode).into();
        // Its own `tsc_early_khz=` is in the line already.
        config.tsc_khz_hint = false;
        config
    }
}

fn command_line(tsc_khz: u64, mode: Mode) -> String {
    // loglevel=1: only emergencies reach the console, so the first line of
    // output is /init's marker, not the kernel's log. panic=-1: a panic
    // (say, too little memory) reboots at once, which ends QEMU
    // (-no-reboot) instead of hanging until the timeout.
    // initcall_blacklist=cmos_init: the launcher's microvm has no RTC
    // (rtc=off), and the built-in rtc_cmos driver spends about 1 s of
    // emulated time (initcall_debug: 1076 ms) probing for it before giving
    // up ("broken or not accessible"). A yardstick should not be slowed by
    // hardware the machine does not have, so that probe is skipped.
    // tsc=reliable: under TCG each vCPU's TSC is the host's invariant TSC,
    // but the kernel's cross-CPU sync check fails on emulation jitter
    // ("Marking TSC unstable due to TSCs unsynchronized"); Linux then falls
    // back to the jiffies clocksource, loses tickless idle and takes 250
    // timer interrupts a second per vCPU while idle (measured: about 6x the
    // idle host CPU). The check is wrong about this machine, so it is off.
    // toro_bench= (bench mode): the workloads' length, `quick` or `full`;
    // like toro_mode=, it reaches /init as an environment variable (as does
    // toro_bench_only=, which `cargo xtask bench --only` appends: the
    // programs' second argument).
    let mut line = format!(
        "console=ttyS0 loglevel=1 panic=-1 tsc_early_khz={tsc_khz} tsc=reliable initcall_blacklist=cmos_init \
         toro_mode={}",
        mode.name()
    );
    if let Mode::Bench { quick } | Mode::Disk { quick } = mode {
        line.push_str(if quick { " toro_bench=quick" } else { " toro_bench=full" });
    }
    line
}

/// The `/init` script. `modules` are the module names in load order.
fn init_script(modules: &[String]) -> String {
    let mut script = String::new();
    script.push_str("#!/bin/sh\n");
    script.push_str(&format!("echo '{INIT_MARKER}'\n"));
    // isa-debug-exit (iobase 0xf4) turns the byte written into QEMU's exit
    // status (byte << 1) | 1; /dev/port is the way to an `out` from a shell.
    script.push_str("exit_vm() { printf '\\000' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; }\n");
    script.push_str(&format!(
        "fail_vm() {{ printf '\\{BENCH_FAILED_STATUS:03o}' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; }}\n"
    ));
    script.push_str("idle() { while :; do sleep 3600; done; }\n");
    // Bench mode: each program in turn; the first failure ends the VM
    // with the failure status.
    script.push_str("run_bench() {\n");
    for program in BENCH_PROGRAMS {
        script.push_str(&format!(
            "  /{BENCH_DIR}/{program} \"$toro_bench\" \"$toro_bench_only\" || {{ echo 'toro-bench: {program} failed'; fail_vm; idle; }}\n"
        ));
    }
    script.push_str(&format!("  echo '{BENCH_DONE_MARKER}'; exit_vm; idle\n}}\n"));
    script.push_str("case \"$toro_mode\" in\n");
    script.push_str("boot) exit_vm; idle ;;\n");
    script.push_str("idle) idle ;;\n");
    script.push_str("bench) run_bench ;;\n");
    script.push_str("esac\n");
    script.push_str("mount -t proc proc /proc\n");
    script.push_str("mount -t sysfs sysfs /sys\n");
    for module in modules {
        script.push_str(&format!("insmod /lib/modules/{module}.ko || echo 'toro-bench: insmod {module} failed'\n"));
    }
    // Disk mode: the storage workloads once the modules are in.
    script.push_str(&format!(
        "if [ \"$toro_mode\" = disk ]; then\n  mount -t devtmpfs devtmpfs /dev\n  mkdir -p /mnt\n  mount -t ext2 /dev/vda /mnt || {{ echo 'toro-bench: mount failed'; cat /proc/partitions /proc/filesystems; ls /dev; fail_vm; idle; }}\n  \
         /{BENCH_DIR}/{DISK_PROGRAM} \"$toro_bench\" /dev/vdb /mnt || {{ echo 'toro-bench: {DISK_PROGRAM} failed'; fail_vm; idle; }}\n  \
         umount /mnt\n  echo '{BENCH_DONE_MARKER}'; exit_vm; idle\nfi\n"
    ));
    script.push_str("ip link set lo up\n");
    script.push_str("ip link set eth0 up\n");
    // QEMU user networking: the guest is 10.0.2.15, the gateway 10.0.2.2,
    // unless toro_ip= and toro_gw= on the command line (environment
    // variables for /init, like toro_mode=) say otherwise: the benchmark's
    // tap runs.
    script.push_str("ip addr add \"${toro_ip:-10.0.2.15/24}\" dev eth0\n");
    script.push_str("ip route add default via \"${toro_gw:-10.0.2.2}\"\n");
    // toro_www_disk=1 (the storage bench's file row): the ext2 disk
    // (/dev/vda) read-only under nginx's root at /www/disk.
    script.push_str(
        "if [ -n \"$toro_www_disk\" ]; then\n  mount -t devtmpfs devtmpfs /dev\n  mkdir -p /www/disk\n  \
         mount -t ext2 -o ro /dev/vda /www/disk || echo 'toro-bench: mount failed'\nfi\n",
    );
    // Echo mode: the echo server beside nginx.
    script.push_str(&format!("if [ \"$toro_mode\" = echo ]; then\n  /{BENCH_DIR}/{ECHO_PROGRAM} &\nfi\n"));
    script.push_str("/usr/sbin/nginx || echo 'toro-bench: nginx failed'\n");
    script.push_str(&format!("echo '{NGINX_MARKER}'\n"));
    script.push_str("idle\n");
    script
}

/// The cache: `target/linux-guest/`.
fn cache_dir() -> PathBuf {
    crate::build::workspace_root().join("target").join("linux-guest")
}

/// Builds the guest if the cache does not already hold one from this
/// recipe, and returns it.
pub fn ensure() -> Result<LinuxGuest> {
    let cache = cache_dir();
    let vmlinux = cache.join("vmlinux");
    let initramfs = cache.join("initramfs.cpio.gz");
    let stamp = cache.join("recipe");
    let manifest_path = cache.join("manifest.txt");
    let release_path = cache.join("release");
    let tsc_khz = host_tsc_khz()?;
    let wanted_stamp = recipe_stamp();
    if vmlinux.is_file()
        && initramfs.is_file()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted_stamp.as_str())
    {
        let manifest = std::fs::read_to_string(&manifest_path).unwrap_or_default();
        let release = std::fs::read_to_string(&release_path).unwrap_or_default().trim().to_string();
        return Ok(LinuxGuest { vmlinux, initramfs, release, tsc_khz, manifest, bench_initramfs: None });
    }
    eprintln!("linux guest: building under {}", cache.display());
    std::fs::create_dir_all(&cache)?;
    let _ = std::fs::remove_file(&stamp);
    let debs = fetch_packages(&cache.join("debs"))?;
    let root = cache.join("root");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    std::fs::create_dir_all(&root)?;
    for deb in debs.values() {
        let status = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root).status().context("running dpkg-deb")?;
        ensure!(status.success(), "dpkg-deb -x {} failed", deb.display());
    }

    let kernel_package = debs.keys().find(|name| name.starts_with("linux-image-") && *name != KERNEL_META_PACKAGE);
    let kernel_package = kernel_package.context("no linux-image package was fetched")?;
    let release = kernel_package.trim_start_matches("linux-image-").to_string();
    let bzimage = root.join("boot").join(format!("vmlinuz-{release}"));
    eprintln!("linux guest: extracting the ELF vmlinux from {}", bzimage.display());
    let elf = extract_vmlinux(&std::fs::read(&bzimage).with_context(|| format!("reading {}", bzimage.display()))?)?;
    ensure!(
        has_pvh_note(&elf)?,
        "the extracted vmlinux has no PVH note (Xen note type 18): QEMU cannot boot it directly"
    );
    write_atomically(&vmlinux, &elf)?;

    let (archive, manifest) = build_initramfs(&root, &release)?;
    // Compressed, the initrd QEMU places in guest memory is 5 MB instead of
    // 12 MB while the kernel unpacks it: Linux then boots and serves with
    // 94 MiB instead of 100 MiB, for about 0.1 s more boot.
    ensure_tool("gzip", "gzip")?;
    let compressed = filter("gzip", &["-9", "-n", "-c"], &archive)?;
    ensure!(compressed.starts_with(b"\x1f\x8b"), "gzip produced no output");
    write_atomically(&initramfs, &compressed)?;
    let mut manifest_text = String::new();
    manifest_text.push_str("packages:\n");
    for deb in debs.values() {
        manifest_text.push_str(&format!("  {}\n", deb.file_name().unwrap_or_default().to_string_lossy()));
    }
    manifest_text.push_str(&manifest);
    std::fs::write(&manifest_path, &manifest_text)?;
    std::fs::write(&release_path, &release)?;
    std::fs::write(&stamp, &wanted_stamp)?;
    // The extracted packages (over 400 MB, nearly all of it kernel modules)
    // are rebuilt from the cached .debs whenever needed.
    let _ = std::fs::remove_dir_all(&root);
    eprintln!(
        "linux guest: vmlinux {} KiB, initramfs {} KiB ({} KiB unpacked)",
        elf.len() / 1024,
        compressed.len() / 1024,
        archive.len() / 1024
    );
    Ok(LinuxGuest { vmlinux, initramfs, release, tsc_khz, manifest: manifest_text, bench_initramfs: None })
}

// ---------------------------------------------------------------------------
// The benchmark programs

/// The Linux benchmark programs (`bench/linux`), built for the guest: the
/// host-native copies `bench` may also run. Cargo rebuilds them only when
/// their sources changed.
pub fn build_bench_programs() -> Result<Vec<PathBuf>> {
    // Static glibc (libc.a) is in libc6-dev; mimalloc is C, built by gcc.
    ensure_tool("gcc", "gcc")?;
    let static_libc = Path::new("/usr/lib/x86_64-linux-gnu/libc.a");
    if !static_libc.is_file() {
        ensure!(is_root(), "{} is missing: install the Debian package libc6-dev", static_libc.display());
        eprintln!("linux guest: installing libc6-dev with apt-get");
        let mut installed =
            apt_get().args(["install", "-y", "--no-install-recommends", "libc6-dev"]).status()?.success();
        if !installed {
            apt_update()?;
            installed = apt_get().args(["install", "-y", "--no-install-recommends", "libc6-dev"]).status()?.success();
        }
        ensure!(installed && static_libc.is_file(), "installing libc6-dev failed");
    }
    let root = crate::build::workspace_root();
    let target_dir = root.join("target").join("bench-linux");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--release", "--manifest-path", "bench/linux/Cargo.toml", "--target", LINUX_TARGET])
        // Static: the guest's initramfs has no shared libraries for them.
        // RUSTFLAGS replaces any flags from the environment for this build
        // only (its own target directory keeps the workspace's untouched).
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .context("running cargo build for bench/linux")?;
    ensure!(status.success(), "building the Linux benchmark programs (bench/linux) failed");
    Ok(BENCH_PROGRAMS.iter().map(|program| target_dir.join(LINUX_TARGET).join("release").join(program)).collect())
}

/// Builds the benchmark programs and the bench archive (the programs in an
/// uncompressed newc archive, followed by the guest's own compressed
/// initramfs); returns the guest with `bench_initramfs` set, and the
/// programs' paths on the host.
pub fn ensure_bench(guest: &LinuxGuest) -> Result<(LinuxGuest, Vec<PathBuf>)> {
    let programs = build_bench_programs()?;
    let mut contents = Vec::new();
    let disk = programs[0].with_file_name(DISK_PROGRAM);
    let echo = programs[0].with_file_name(ECHO_PROGRAM);
    let extra = [&DISK_PROGRAM, &ECHO_PROGRAM];
    for (name, path) in BENCH_PROGRAMS.iter().chain(extra).zip(programs.iter().chain([&disk, &echo])) {
        contents.push((*name, std::fs::read(path).with_context(|| format!("reading {}", path.display()))?));
    }
    let base = std::fs::read(&guest.initramfs).context("reading the guest's initramfs")?;
    let path = cache_dir().join("bench-initramfs.cpio.gz");
    write_atomically(&path, &bench_archive(&contents, &base))?;
    Ok((LinuxGuest { bench_initramfs: Some(path), ..guest.clone() }, programs))
}

/// What decides the guest's contents, apart from the packages themselves.
fn recipe_stamp() -> String {
    // A plain checksum of the text that goes in: FNV-1a, stable across
    // Rust versions (unlike `DefaultHasher`).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let wanted = WANTED_MODULES.join(",");
    let applets = APPLETS.join(",");
    for text in [NGINX_CONF, INDEX_HTML, PASSWD, GROUP, &init_script(&[]), &wanted, &applets] {
        for byte in text.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("recipe {RECIPE_VERSION} {hash:016x}\n")
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, data).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// The bench archive: `programs` (name, contents) under [`BENCH_DIR`] in
/// an uncompressed newc archive, then `base` (the guest's compressed
/// initramfs). The kernel takes an uncompressed archive only at a 4-byte
/// boundary and a compressed one after it at any offset
/// (`init/initramfs.c`, `unpack_to_rootfs`), so this order needs no
/// padding between them; the newc writer ends on a 4-byte boundary anyway.
fn bench_archive(programs: &[(&str, Vec<u8>)], base: &[u8]) -> Vec<u8> {
    let mut archive = cpio::Writer::new();
    archive.directory(BENCH_DIR, 0o755);
    for (name, data) in programs {
        archive.file(&format!("{BENCH_DIR}/{name}"), 0o755, data);
    }
    let mut bytes = archive.finish();
    bytes.extend_from_slice(base);
    bytes
}

// ---------------------------------------------------------------------------
// Host facts and tools

/// The host's TSC frequency in kHz. Under TCG the guest reads the host's
/// TSC, so this is the frequency the guest kernel must be told. Taken from,
/// in order: `/sys/devices/system/cpu/cpu0/tsc_freq_khz` where a kernel
/// provides it; the host kernel's own boot log (`tsc: Refined TSC
/// clocksource calibration: ... MHz`, else `tsc: Detected ... MHz`); the
/// first `cpu MHz` of `/proc/cpuinfo` (on this host all three agree:
/// 2445.432 MHz, an invariant TSC, `constant_tsc nonstop_tsc`).
pub fn host_tsc_khz() -> Result<u64> {
    if let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz") {
        if let Ok(khz) = text.trim().parse::<u64>() {
            return Ok(khz);
        }
    }
    if let Ok(output) = Command::new("dmesg").output() {
        if let Some(khz) = boot_log_tsc_khz(&String::from_utf8_lossy(&output.stdout)) {
            return Ok(khz);
        }
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    cpuinfo_mhz_as_khz(&cpuinfo).context("/proc/cpuinfo has no `cpu MHz` line to take the TSC frequency from")
}

/// The TSC frequency the host kernel logged at boot, in kHz: the refined
/// calibration if there is one, else the first detection.
fn boot_log_tsc_khz(log: &str) -> Option<u64> {
    let mhz_after = |marker: &str| -> Option<u64> {
        let line = log.lines().find(|line| line.contains(marker))?;
        let rest = &line[line.find(marker)? + marker.len()..];
        let mhz: f64 = rest.split_whitespace().next()?.parse().ok()?;
        (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
    };
    mhz_after("tsc: Refined TSC clocksource calibration: ").or_else(|| mhz_after("tsc: Detected "))
}

/// The first `cpu MHz` of a `/proc/cpuinfo` text, in kHz.
fn cpuinfo_mhz_as_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|line| line.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// `apt-get` with quiet output and no sandbox user (the `_apt` user cannot
/// write into `target/`).
fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.args(["-qq", "-o", "Dpkg::Use-Pty=0", "-o", "APT::Sandbox::User=root"]);
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn apt_update() -> Result<()> {
    eprintln!("linux guest: apt-get update");
    let status = apt_get().arg("update").status().context("running apt-get update")?;
    ensure!(status.success(), "apt-get update failed");
    Ok(())
}

/// Installs a host tool with apt-get when it is missing (as `setup.rs` does
/// for QEMU).
pub fn ensure_tool(program: &str, package: &str) -> Result<()> {
    if have(program) {
        return Ok(());
    }
    if !is_root() {
        bail!("{program} is missing: install the Debian package `{package}` (sudo apt-get install {package})");
    }
    eprintln!("linux guest: installing {package} with apt-get");
    let install = |update: bool| -> Result<bool> {
        if update {
            apt_update()?;
        }
        Ok(apt_get().args(["install", "-y", "--no-install-recommends", package]).status()?.success())
    };
    if !install(false)? && !install(true)? {
        bail!("installing {package} failed");
    }
    ensure!(have(program), "{program} is still missing after installing {package}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Packages

/// Downloads (or finds in `dir`) the guest's packages; returns package name
/// -> `.deb` path.
fn fetch_packages(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut debs = BTreeMap::new();
    download(dir, &[KERNEL_META_PACKAGE, BUSYBOX_PACKAGE, NGINX_PACKAGE], &mut debs)?;
    // The meta package names the versioned kernel package; nginx names its
    // libraries (libc6, libssl3, ...), which come from Debian too rather
    // than from the host, so a fresh machine builds the same guest.
    let kernel = control_field(&debs[KERNEL_META_PACKAGE], "Depends")?;
    let kernel: Vec<String> =
        dependency_names(&kernel).into_iter().filter(|name| name.starts_with("linux-image-")).collect();
    ensure!(!kernel.is_empty(), "{KERNEL_META_PACKAGE} depends on no linux-image package");
    let libraries: Vec<String> = dependency_names(&control_field(&debs[NGINX_PACKAGE], "Depends")?)
        .into_iter()
        .filter(|name| name.starts_with("lib") || name.starts_with("zlib"))
        .collect();
    let second: Vec<&str> = kernel.iter().chain(&libraries).map(String::as_str).collect();
    download(dir, &second, &mut debs)?;
    Ok(debs)
}

/// Adds `packages` to `debs`, downloading those not already in `dir`. The
/// newest cached `.deb` of a package is reused: the cache is the point.
fn download(dir: &Path, packages: &[&str], debs: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    let cached = |name: &str| -> Result<Option<PathBuf>> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| deb_package_name(path).as_deref() == Some(name))
            .collect();
        found.sort();
        Ok(found.pop())
    };
    let mut missing = Vec::new();
    for &package in packages {
        match cached(package)? {
            Some(path) => {
                debs.insert(package.to_string(), path);
            }
            None => missing.push(package),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("linux guest: apt-get download {}", missing.join(" "));
    let attempt = || apt_get().arg("download").args(&missing).current_dir(dir).status();
    let mut status = attempt().context("running apt-get download")?;
    if !status.success() {
        // A fresh machine may have no package lists yet, or stale ones.
        apt_update()?;
        status = attempt().context("running apt-get download")?;
    }
    ensure!(status.success(), "apt-get download {} failed", missing.join(" "));
    for package in missing {
        let path = cached(package)?.with_context(|| format!("apt-get download left no .deb for {package}"))?;
        debs.insert(package.to_string(), path);
    }
    Ok(())
}

/// The package name of a `.deb` file name (`name_version_arch.deb`).
fn deb_package_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".deb")?;
    Some(stem.split('_').next()?.to_string())
}

fn control_field(deb: &Path, field: &str) -> Result<String> {
    let output = Command::new("dpkg-deb").arg("-f").arg(deb).arg(field).output().context("running dpkg-deb -f")?;
    ensure!(output.status.success(), "dpkg-deb -f {} {field} failed", deb.display());
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The package names in a `Depends` field: version constraints and
/// architecture qualifiers dropped, the first of each set of alternatives
/// kept.
fn dependency_names(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|clause| {
            let first = clause.split('|').next()?;
            let name = first.split('(').next()?.trim();
            let name = name.split(':').next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The kernel

/// Compressed-stream magics and the host decompressors for them, as in the
/// kernel's `scripts/extract-vmlinux`. Debian's kernel uses xz.
const DECOMPRESSORS: &[(&[u8], &str, &str)] =
    &[(b"\xfd7zXZ\x00", "xz", "xz-utils"), (b"\x1f\x8b\x08", "gzip", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd", "zstd")];

/// The ELF kernel inside a bzImage: try each offset where a known
/// compressed stream's magic appears, decompress from there, and keep the
/// first output that is an ELF file.
fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    for (magic, tool, package) in DECOMPRESSORS {
        for offset in find_all(bzimage, magic) {
            ensure_tool(tool, package)?;
            // The stream is followed by other data, so the decompressor may
            // complain about trailing garbage after writing the whole
            // kernel: judge by the output, as extract-vmlinux does.
            let output = filter(tool, &["-dc"], &bzimage[offset..])?;
            if output.starts_with(b"\x7fELF") {
                return Ok(output);
            }
        }
    }
    bail!("no compressed ELF kernel found in the bzImage")
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack.windows(needle.len()).enumerate().filter(|(_, window)| *window == needle).map(|(i, _)| i).collect()
}

/// Runs `tool arguments` with `input` on its standard input; its standard
/// output, whatever its exit status (callers judge the output).
fn filter(tool: &str, arguments: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {tool}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Feed from a thread: neither side fits in a pipe's buffer.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output()?;
    let _ = writer.join();
    Ok(output.stdout)
}

/// Whether an ELF file carries the Xen PVH entry note
/// (`XEN_ELFNOTE_PHYS32_ENTRY`, type 18), which QEMU's `-kernel` needs to
/// boot an ELF kernel directly.
fn has_pvh_note(data: &[u8]) -> Result<bool> {
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let header = elf::FileHeader64::<object::Endianness>::parse(data).context("vmlinux is not a 64-bit ELF")?;
    let endian = header.endian()?;
    for segment in header.program_headers(endian, data)? {
        if let Some(mut notes) = segment.notes(endian, data)? {
            while let Some(note) = notes.next()? {
                if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------
// Kernel modules

/// The `depends=` list of a kernel module's `.modinfo` section.
fn module_dependencies(module: &[u8]) -> Result<Vec<String>> {
    let header = elf::FileHeader64::<object::Endianness>::parse(module).context("not a 64-bit ELF module")?;
    let endian = header.endian()?;
    let sections = header.sections(endian, module)?;
    let (_, modinfo) = sections.section_by_name(endian, b".modinfo").context("module has no .modinfo")?;
    let modinfo = object::read::elf::SectionHeader::data(modinfo, endian, module)
        .map_err(|_| anyhow::anyhow!("bad .modinfo section"))?;
    Ok(modinfo_depends(modinfo))
}

/// The names in the `depends=` entry of a `.modinfo` blob (NUL-separated
/// `key=value` strings).
fn modinfo_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|&byte| byte == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| String::from_utf8_lossy(list).split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The order to load `wanted` in, every module after all it depends on
/// (each loaded once). `dependencies` gives a module's direct dependencies.
fn load_order(wanted: &[&str], dependencies: &dyn Fn(&str) -> Result<Vec<String>>) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        dependencies: &dyn Fn(&str) -> Result<Vec<String>>,
        in_progress: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|done| done == name) {
            return Ok(());
        }
        if in_progress.iter().any(|open| open == name) {
            bail!("module dependency cycle: {} -> {name}", in_progress.join(" -> "));
        }
        in_progress.push(name.to_string());
        for dependency in dependencies(name)? {
            visit(&dependency, dependencies, in_progress, order)?;
        }
        in_progress.pop();
        order.push(name.to_string());
        Ok(())
    }
    let mut order = Vec::new();
    for name in wanted {
        visit(name, dependencies, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Module name -> file, for every `.ko` under `dir` (names use `_` where
/// file names may use `-`, as modprobe treats them alike).
fn index_modules(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                index.insert(stem.replace('-', "_"), path);
            }
        }
    }
    Ok(index)
}

// ---------------------------------------------------------------------------
// Shared libraries

/// An ELF program's interpreter (`PT_INTERP`) and `DT_NEEDED` libraries.
fn elf_dependencies(data: &[u8]) -> Result<(Option<String>, Vec<String>)> {
    let header = elf::FileHeader64::<object::Endianness>::parse(data).context("not a 64-bit ELF")?;
    let endian = header.endian()?;
    let mut interpreter = None;
    for segment in header.program_headers(endian, data)? {
        if let Some(path) = segment.interpreter(endian, data)? {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let sections = header.sections(endian, data)?;
    let mut needed = Vec::new();
    if let Some((dynamic, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for entry in dynamic {
            use object::read::elf::Dyn;
            if entry.tag32(endian) == Some(elf::DT_NEEDED) {
                needed.push(String::from_utf8_lossy(entry.string(endian, strings)?).into_owned());
            }
        }
    }
    Ok((interpreter, needed))
}

/// Follows symbolic links inside `root` (absolute targets are taken
/// relative to `root`, never the host's `/`); returns the real file.
fn resolve_in_root(root: &Path, path_in_root: &str) -> Option<PathBuf> {
    let mut current = PathBuf::from(path_in_root.trim_start_matches('/'));
    for _ in 0..40 {
        let on_disk = root.join(&current);
        let metadata = std::fs::symlink_metadata(&on_disk).ok()?;
        if !metadata.file_type().is_symlink() {
            return metadata.is_file().then_some(on_disk);
        }
        let target = std::fs::read_link(&on_disk).ok()?;
        let joined = if target.is_absolute() { target } else { Path::new("/").join(current.parent()?).join(target) };
        current = normalize(&joined)?;
    }
    None
}

/// `/a/b/../c` -> `a/c` (relative to the root), without touching the disk.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(part) => parts.push(part),
        }
    }
    Some(parts.iter().collect())
}

/// Where the dynamic loader looks for libraries (Debian's multiarch
/// directories first, then the plain ones).
const LIBRARY_DIRS: &[&str] = &["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"];
const HOST_LIBRARY_DIRS: &[&str] = &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"];

/// Finds a library by soname in the extracted packages, else on the host
/// (the guest and the host are the same Debian release).
fn find_library(root: &Path, soname: &str) -> Option<(PathBuf, bool)> {
    for dir in LIBRARY_DIRS {
        if let Some(path) = resolve_in_root(root, &format!("{dir}/{soname}")) {
            return Some((path, false));
        }
    }
    for dir in HOST_LIBRARY_DIRS {
        let path = Path::new(dir).join(soname);
        if let Ok(real) = std::fs::canonicalize(&path) {
            if real.is_file() {
                return Some((real, true));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The initramfs

/// The initramfs and a manifest of what went in.
fn build_initramfs(root: &Path, release: &str) -> Result<(Vec<u8>, String)> {
    let mut manifest = String::new();
    let mut archive = cpio::Writer::new();
    for dir in [
        "bin",
        "dev",
        "etc",
        "etc/nginx",
        "lib",
        "lib/modules",
        "lib/x86_64-linux-gnu",
        "lib64",
        "proc",
        "run",
        "sys",
        "tmp",
        "usr",
        "usr/sbin",
        "var",
        "var/lib",
        "var/lib/nginx",
        "var/log",
        "var/log/nginx",
        "www",
    ] {
        archive.directory(dir, 0o755);
    }
    // Device nodes: /dev/console is where /init's output goes (without it
    // the kernel starts /init with no stdout); /dev/null for nginx's
    // daemonising; /dev/port for isa-debug-exit.
    archive.character_device("dev/console", 0o600, 5, 1);
    archive.character_device("dev/null", 0o666, 1, 3);
    archive.character_device("dev/port", 0o600, 1, 4);
    archive.character_device("dev/urandom", 0o666, 1, 9);

    let busybox = root.join("bin/busybox");
    archive.file("bin/busybox", 0o755, &std::fs::read(&busybox).context("busybox-static has no /bin/busybox")?);
    for applet in APPLETS {
        archive.symlink(&format!("bin/{applet}"), "busybox");
    }

    let modules_dir = root.join("lib/modules").join(release);
    let index = index_modules(&modules_dir)?;
    let dependencies = |name: &str| -> Result<Vec<String>> {
        let path = index.get(name).with_context(|| format!("module {name} is not in {}", modules_dir.display()))?;
        module_dependencies(&std::fs::read(path)?).with_context(|| format!("reading {}", path.display()))
    };
    let modules = load_order(WANTED_MODULES, &dependencies)?;
    manifest.push_str(&format!("modules (load order): {}\n", modules.join(" ")));
    for module in &modules {
        archive.file(&format!("lib/modules/{module}.ko"), 0o644, &std::fs::read(&index[module])?);
    }

    let nginx = std::fs::read(root.join("usr/sbin/nginx")).context("the nginx package has no /usr/sbin/nginx")?;
    archive.file("usr/sbin/nginx", 0o755, &nginx);
    let (interpreter, _) = elf_dependencies(&nginx)?;
    let interpreter = interpreter.context("nginx has no ELF interpreter")?;
    let interpreter_file = resolve_in_root(root, &interpreter)
        .with_context(|| format!("the ELF interpreter {interpreter} is not in the packages"))?;
    archive.file(interpreter.trim_start_matches('/'), 0o755, &std::fs::read(&interpreter_file)?);
    manifest.push_str(&format!("interpreter: {interpreter}\n"));
    let interpreter_name = Path::new(&interpreter).file_name().map(|n| n.to_string_lossy().into_owned());
    // Every library nginx needs, directly or through another, once.
    let mut placed = BTreeSet::new();
    let mut pending = elf_dependencies(&nginx)?.1;
    while let Some(soname) = pending.pop() {
        if Some(&soname) == interpreter_name.as_ref() || !placed.insert(soname.clone()) {
            continue;
        }
        let (path, from_host) =
            find_library(root, &soname).with_context(|| format!("library {soname} (needed by nginx) not found"))?;
        let data = std::fs::read(&path)?;
        pending.extend(elf_dependencies(&data)?.1);
        archive.file(&format!("lib/x86_64-linux-gnu/{soname}"), 0o755, &data);
        manifest.push_str(&format!(
            "library: {soname} from {}{}\n",
            path.display(),
            if from_host { " (host)" } else { "" }
        ));
    }

    archive.file("etc/nginx/nginx.conf", 0o644, NGINX_CONF.as_bytes());
    archive.file("etc/passwd", 0o644, PASSWD.as_bytes());
    archive.file("etc/group", 0o644, GROUP.as_bytes());
    archive.file("www/index.html", 0o644, INDEX_HTML.as_bytes());
    archive.file("init", 0o755, init_script(&modules).as_bytes());
    Ok((archive.finish(), manifest))
}

/// A writer for the "new ASCII" (newc) cpio format the kernel unpacks an
/// initramfs from (Documentation/driver-api/early-userspace/buffer-format).
mod cpio {
    const S_IFDIR: u32 = 0o040000;
    const S_IFREG: u32 = 0o100000;
    const S_IFLNK: u32 = 0o120000;
    const S_IFCHR: u32 = 0o020000;

    pub struct Writer {
        out: Vec<u8>,
        next_inode: u32,
    }

    impl Writer {
        pub fn new() -> Self {
            Self { out: Vec::new(), next_inode: 1 }
        }

        pub fn directory(&mut self, path: &str, permissions: u32) {
            self.entry(path, S_IFDIR | permissions, 2, (0, 0), &[]);
        }

        pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
            self.entry(path, S_IFREG | permissions, 1, (0, 0), data);
        }

        pub fn symlink(&mut self, path: &str, target: &str) {
            self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
        }

        pub fn character_device(&mut self, path: &str, permissions: u32, major: u32, minor: u32) {
            self.entry(path, S_IFCHR | permissions, 1, (major, minor), &[]);
        }

        /// Ends the archive with the `TRAILER!!!` entry.
        pub fn finish(mut self) -> Vec<u8> {
            self.next_inode = 0;
            self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
            self.out
        }

        fn entry(&mut self, path: &str, mode: u32, links: u32, rdev: (u32, u32), data: &[u8]) {
            let inode = self.next_inode;
            if inode != 0 {
                self.next_inode += 1;
            }
            let name_size = path.len() + 1; // with its NUL
            let fields = [
                inode,
                mode,
                0, // uid
                0, // gid
                links,
                0, // mtime: fixed, so the archive is reproducible
                data.len() as u32,
                0, // devmajor
                0, // devminor
                rdev.0,
                rdev.1,
                name_size as u32,
                0, // check (only for the "crc" format)
            ];
            self.out.extend_from_slice(b"070701");
            for field in fields {
                self.out.extend_from_slice(format!("{field:08x}").as_bytes());
            }
            self.out.extend_from_slice(path.as_bytes());
            self.out.push(0);
            self.pad();
            self.out.extend_from_slice(data);
            self.pad();
        }

        /// Header plus name, and the data, each end on a 4-byte boundary.
        fn pad(&mut self) {
            while !self.out.len().is_multiple_of(4) {
                self.out.push(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut writer = cpio::Writer::new();
        writer.file("init", 0o755, b"#!/bin/sh\n");
        writer.character_device("dev/console", 0o600, 5, 1);
        let archive = writer.finish();
        assert_eq!(archive.len() % 4, 0);
        // First header: magic, inode 1, mode 0100755, filesize 10, namesize 5.
        let header = std::str::from_utf8(&archive[..110]).unwrap();
        assert!(header.starts_with("070701"));
        let field = |index: usize| u32::from_str_radix(&header[6 + 8 * index..14 + 8 * index], 16).unwrap();
        assert_eq!(field(0), 1);
        assert_eq!(field(1), 0o100755);
        assert_eq!(field(6), 10);
        assert_eq!(field(11), 5);
        // 110-byte header + "init\0" = 115, padded to 116; data 10, padded to 12.
        assert_eq!(&archive[110..115], b"init\0");
        assert_eq!(&archive[116..126], b"#!/bin/sh\n");
        let second = std::str::from_utf8(&archive[128..238]).unwrap();
        let field = |index: usize| u32::from_str_radix(&second[6 + 8 * index..14 + 8 * index], 16).unwrap();
        assert_eq!(field(1), 0o020600);
        assert_eq!((field(9), field(10)), (5, 1));
        let end = &archive[archive.len() - 124..];
        assert!(std::str::from_utf8(&end[..6]).unwrap() == "070701");
        assert!(archive.windows(11).any(|w| w == b"TRAILER!!!\0"));
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let modinfo = b"license=GPL\0depends=virtio_ring,virtio,net_failover\0intree=Y\0";
        assert_eq!(modinfo_depends(modinfo), ["virtio_ring", "virtio", "net_failover"]);
        assert!(modinfo_depends(b"depends=\0name=virtio_ring\0").is_empty());
    }

    #[test]
    fn load_order_puts_dependencies_first_once() {
        // The real graph of Debian 6.1's virtio modules.
        let graph: BTreeMap<&str, &[&str]> = [
            ("virtio_mmio", &["virtio", "virtio_ring"][..]),
            ("virtio_pci", &["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_ring", "virtio"][..]),
            ("virtio_pci_modern_dev", &[][..]),
            ("virtio_pci_legacy_dev", &[][..]),
            ("virtio_net", &["virtio_ring", "virtio", "net_failover"][..]),
            ("virtio_blk", &["virtio", "virtio_ring"][..]),
            ("virtio", &["virtio_ring"][..]),
            ("virtio_ring", &[][..]),
            ("net_failover", &["failover"][..]),
            ("failover", &[][..]),
            ("crc32c_generic", &[][..]),
            ("ext4", &["mbcache", "jbd2", "crc16"][..]),
            ("mbcache", &[][..]),
            ("jbd2", &[][..]),
            ("crc16", &[][..]),
        ]
        .into_iter()
        .collect();
        let dependencies = |name: &str| -> Result<Vec<String>> {
            Ok(graph.get(name).context("unknown")?.iter().map(|s| s.to_string()).collect())
        };
        let order = load_order(WANTED_MODULES, &dependencies).unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_blk",
                "crc32c_generic",
                "mbcache",
                "jbd2",
                "crc16",
                "ext4"
            ]
        );
        for (index, module) in order.iter().enumerate() {
            for dependency in dependencies(module).unwrap() {
                assert!(order[..index].contains(&dependency), "{dependency} must load before {module}");
            }
        }
    }

    #[test]
    fn load_order_reports_cycles_and_unknown_modules() {
        let cyclic = |name: &str| -> Result<Vec<String>> {
            Ok(vec![if name == "a" { "b".to_string() } else { "a".to_string() }])
        };
        assert!(load_order(&["a"], &cyclic).unwrap_err().to_string().contains("cycle"));
        let unknown = |_: &str| -> Result<Vec<String>> { bail!("not found") };
        assert!(load_order(&["x"], &unknown).is_err());
    }

    #[test]
    fn parses_depends_fields() {
        let field = "libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), libpcre2-8-0 (>= 10.22), libssl3 (>= 3.0.0), \
                     zlib1g (>= 1:1.1.4), iproute2, nginx-common (= 1.22.1-9+deb12u11)";
        assert_eq!(
            dependency_names(field),
            ["libc6", "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g", "iproute2", "nginx-common"]
        );
        assert_eq!(dependency_names("linux-image-6.1.0-56-amd64 (= 6.1.192-2)"), ["linux-image-6.1.0-56-amd64"]);
        assert_eq!(dependency_names("debconf (>= 0.5) | debconf-2.0, python3:any"), ["debconf", "python3"]);
        assert_eq!(
            deb_package_name(Path::new("x/busybox-static_1%3a1.35.0-4_amd64.deb")).as_deref(),
            Some("busybox-static")
        );
    }

    #[test]
    fn tsc_frequency_from_cpuinfo() {
        let cpuinfo =
            "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.432\n\nprocessor\t: 1\ncpu MHz\t\t: 1200.000\n";
        assert_eq!(cpuinfo_mhz_as_khz(cpuinfo), Some(2_445_432));
        assert_eq!(cpuinfo_mhz_as_khz("model name: x\n"), None);
        let log = "[    0.000000] tsc: Fast TSC calibration using PIT\n\
                   [    0.000102] tsc: Detected 2445.432 MHz processor\n\
                   [    1.234567] tsc: Refined TSC clocksource calibration: 2445.410 MHz\n";
        assert_eq!(boot_log_tsc_khz(log), Some(2_445_410));
        assert_eq!(boot_log_tsc_khz(&log.lines().take(2).collect::<Vec<_>>().join("\n")), Some(2_445_432));
        assert_eq!(boot_log_tsc_khz("[    0.5] clocksource: tsc: mask: 0xff\n"), None);
    }

    #[test]
    fn command_line_quiets_the_kernel_and_names_the_mode() {
        let line = command_line(2_445_432, Mode::Serve);
        assert!(line.contains("console=ttyS0"));
        assert!(line.contains("tsc_early_khz=2445432"));
        assert!(line.contains("loglevel=1"));
        assert!(line.contains("tsc=reliable"));
        assert!(!line.contains("  "));
        assert!(line.ends_with("toro_mode=serve"));
    }

    #[test]
    fn init_prints_the_marker_first_and_loads_modules_in_order() {
        let script = init_script(&["virtio_ring".into(), "virtio".into()]);
        let mut lines = script.lines();
        assert_eq!(lines.next(), Some("#!/bin/sh"));
        assert_eq!(lines.next(), Some(format!("echo '{INIT_MARKER}'").as_str()));
        let ring = script.find("insmod /lib/modules/virtio_ring.ko").unwrap();
        let virtio = script.find("insmod /lib/modules/virtio.ko").unwrap();
        assert!(ring < virtio);
        assert!(script.contains("/usr/sbin/nginx"));
    }

    #[test]
    fn bench_mode_runs_every_program_and_reports_the_outcome() {
        let script = init_script(&[]);
        assert!(script.contains("bench) run_bench ;;"));
        for program in BENCH_PROGRAMS {
            assert!(
                script.contains(&format!("/{BENCH_DIR}/{program} \"$toro_bench\" \"$toro_bench_only\" ||")),
                "{program}"
            );
        }
        // The first failure ends the VM with status 1 (octal \001 through
        // isa-debug-exit); success prints the marker, then status 0.
        assert!(script.contains("fail_vm() { printf '\\001'"));
        assert!(script.contains(&format!("echo '{BENCH_DONE_MARKER}'; exit_vm")));
        // Bench mode is decided before the network set-up.
        assert!(script.find("bench) run_bench").unwrap() < script.find("mount -t proc").unwrap());
        let quick = command_line(2_445_432, Mode::Bench { quick: true });
        assert!(quick.ends_with("toro_mode=bench toro_bench=quick"), "{quick}");
        assert!(command_line(1, Mode::Bench { quick: false }).ends_with("toro_bench=full"));
        assert!(!command_line(1, Mode::Boot).contains("toro_bench"));
    }

    #[test]
    fn bench_archive_puts_the_programs_before_the_compressed_guest() {
        let base = b"\x1f\x8b\x08rest-of-the-gzip-stream".to_vec();
        let archive = bench_archive(&[("toro-bench-glibc", b"\x7fELF-one".to_vec())], &base);
        assert!(archive.starts_with(b"070701"));
        assert!(archive.ends_with(&base));
        let uncompressed = archive.len() - base.len();
        assert_eq!(uncompressed % 4, 0, "the compressed part starts on a 4-byte boundary");
        let head = &archive[..uncompressed];
        let holds = |needle: &[u8]| head.windows(needle.len()).any(|window| window == needle);
        assert!(holds(b"bench/toro-bench-glibc"));
        assert!(holds(b"\x7fELF-one"));
        assert!(holds(b"TRAILER!!!\0"));
    }

    #[test]
    fn index_page_is_the_612_byte_welcome_page() {
        assert_eq!(INDEX_HTML.len(), 612);
    }

    #[test]
    fn symbolic_links_resolve_inside_the_root_never_the_host() {
        let root = std::env::temp_dir().join(format!("toro-linux-guest-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(root.join("lib64")).unwrap();
        std::fs::write(root.join("lib/x86_64-linux-gnu/libz.so.1.2.13"), b"z").unwrap();
        std::os::unix::fs::symlink("libz.so.1.2.13", root.join("lib/x86_64-linux-gnu/libz.so.1")).unwrap();
        std::fs::write(root.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), b"ld").unwrap();
        // An absolute link, as libc6 ships it: it must stay inside `root`.
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            root.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("lib64/escape")).unwrap();
        assert_eq!(
            resolve_in_root(&root, "/lib64/ld-linux-x86-64.so.2"),
            Some(root.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
        );
        assert_eq!(
            resolve_in_root(&root, "lib/x86_64-linux-gnu/libz.so.1"),
            Some(root.join("lib/x86_64-linux-gnu/libz.so.1.2.13"))
        );
        assert_eq!(resolve_in_root(&root, "/lib64/escape"), None);
        assert_eq!(find_library(&root, "libz.so.1"), Some((root.join("lib/x86_64-linux-gnu/libz.so.1.2.13"), false)));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reads_interpreter_and_needed_libraries() {
        // This test program is itself a dynamically linked host ELF.
        let data = std::fs::read("/proc/self/exe").unwrap();
        let (interpreter, needed) = elf_dependencies(&data).unwrap();
        assert!(interpreter.unwrap().contains("ld-linux"));
        assert!(needed.iter().any(|name| name.starts_with("libc.so")), "{needed:?}");
        assert!(!has_pvh_note(&data).unwrap());
    }

    #[test]
    fn normalizes_paths_inside_the_root() {
        assert_eq!(normalize(Path::new("/lib/x86_64-linux-gnu/../../lib64/ld.so")), Some(PathBuf::from("lib64/ld.so")));
        assert_eq!(normalize(Path::new("/../x")), None);
    }
}
