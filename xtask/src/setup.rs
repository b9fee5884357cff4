//! Installs what building and booting need when it is missing: the Rust
//! target (rustup), QEMU and e2fsprogs (apt-get, when running as root),
//! and virtiofsd for shared folders (`cargo install`, optional).

use std::process::Command;

use anyhow::{bail, Context, Result};

pub const TARGET: &str = "x86_64-unknown-none";
pub const QEMU: &str = "qemu-system-x86_64";
const QEMU_PACKAGE: &str = "qemu-system-x86";
const E2FSPROGS_PACKAGE: &str = "e2fsprogs";
/// The web server test fetches pages from the host with curl.
const CURL: &str = "curl";

/// The path of an e2fsprogs program (`mkfs.ext2`, `debugfs`, `e2fsck`):
/// they live in the sbin directories, often not on a user's PATH.
pub fn e2fsprogs(program: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.exists())
}

/// Installs a Debian package with apt-get (as root), then checks with
/// `present` that what was missing is there.
fn apt_install(package: &str, present: impl Fn() -> bool) -> Result<()> {
    if !is_root() {
        bail!("the Debian package `{package}` is missing: sudo apt-get install {package}");
    }
    eprintln!("setup: installing {package} with apt-get");
    let quiet = ["-qq", "-o", "Dpkg::Use-Pty=0"];
    let update = Command::new("apt-get").arg("update").args(quiet).status()?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(quiet)
        .arg(package)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !update.success() || !install.success() || !present() {
        bail!("installing {package} failed");
    }
    Ok(())
}

/// Whether wrk (the HTTP load generator the network tests and the HTTP
/// benchmark use) is installed; it has no `--version`.
pub fn have_wrk() -> bool {
    ["/usr/bin/wrk", "/usr/local/bin/wrk"].iter().any(|path| std::path::Path::new(path).exists())
}

/// dnsmasq (the DNS server of the `dns-q35-2` test), if installed.
pub fn dnsmasq() -> Option<std::path::PathBuf> {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].iter().map(std::path::PathBuf::from).find(|path| path.exists())
}

/// The version of virtiofsd `cargo xtask setup` installs.
const VIRTIOFSD_VERSION: &str = "1.14.0";

/// Where virtiofsd is: on the PATH, in cargo's bin directory (where
/// `cargo install` puts it), or where distributions put theirs.
pub fn virtiofsd() -> Option<std::path::PathBuf> {
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("virtiofsd")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(std::path::Path::new(&home).join("bin/virtiofsd"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(std::path::Path::new(&home).join(".cargo/bin/virtiofsd"));
    }
    candidates.extend(["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"].map(std::path::PathBuf::from));
    first_rust_virtiofsd(candidates)
}

/// The first of `candidates` that is the Rust virtiofsd (the one
/// `share::start` speaks to: `--shared-dir`, `--sandbox`). Debian 12's
/// `qemu-system-common` ships QEMU 7.2's C virtiofsd as
/// `/usr/lib/qemu/virtiofsd`, which takes `-o source=` instead and refuses
/// our arguments; it must not count as installed.
fn first_rust_virtiofsd(candidates: Vec<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    candidates.into_iter().filter(|path| path.is_file()).find(|path| {
        Command::new(path).arg("--help").stdin(std::process::Stdio::null()).output().is_ok_and(|out| {
            [out.stdout, out.stderr].iter().any(|text| String::from_utf8_lossy(text).contains("--shared-dir"))
        })
    })
}

/// For `--share`: installs virtiofsd when it is missing (as root, where it
/// can run), or says what to do.
pub fn ensure_virtiofsd() -> Result<()> {
    if virtiofsd().is_some() {
        return Ok(());
    }
    if !is_root() {
        bail!("--share needs virtiofsd, which runs as root: run as root (the tool then installs it with cargo install virtiofsd)");
    }
    install_virtiofsd()
}

/// Builds virtiofsd with `cargo install` (a few minutes, once: it lands
/// in cargo's bin directory) after the C libraries it links.
fn install_virtiofsd() -> Result<()> {
    let header = |name: &str| std::path::Path::new("/usr/include").join(name).exists();
    if !header("seccomp.h") {
        apt_install("libseccomp-dev", || header("seccomp.h"))?;
    }
    if !header("cap-ng.h") {
        apt_install("libcap-ng-dev", || header("cap-ng.h"))?;
    }
    eprintln!("setup: building virtiofsd {VIRTIOFSD_VERSION} with cargo install (a few minutes, once)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "virtiofsd", "--version", VIRTIOFSD_VERSION])
        .status()
        .context("running cargo install")?;
    if !status.success() || virtiofsd().is_none() {
        bail!("cargo install virtiofsd failed");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Makes sure the target and QEMU are there, installing them if possible.
pub fn ensure() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (Toro needs a rustup-managed toolchain)")?;
    if !String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == TARGET) {
        eprintln!("setup: adding the Rust target {TARGET}");
        let status = Command::new("rustup").args(["target", "add", TARGET]).status()?;
        if !status.success() {
            bail!("`rustup target add {TARGET}` failed");
        }
    }
    if !have(QEMU) {
        apt_install(QEMU_PACKAGE, || have(QEMU))?;
    }
    // The storage tests make and check ext2 images with the host's tools.
    if e2fsprogs("mkfs.ext2").is_none() {
        apt_install(E2FSPROGS_PACKAGE, || e2fsprogs("mkfs.ext2").is_some())?;
    }
    if !have(CURL) {
        apt_install(CURL, || have(CURL))?;
    }
    // The tap tests make network namespaces with iproute2 and load the web
    // server with wrk; without root they are skipped, so these are
    // installed only where they can be.
    if is_root() {
        let have_ip = || Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
        // Optional: without them those tests say "skipped", so a failed
        // install is reported, not fatal.
        if !have_ip() {
            if let Err(error) = apt_install("iproute2", have_ip) {
                eprintln!("setup: {error:#}; the tap tests will be skipped");
            }
        }
        if !have_wrk() {
            if let Err(error) = apt_install("wrk", have_wrk) {
                eprintln!("setup: {error:#}; the wrk checks and benchmark rows will be skipped");
            }
        }
        if dnsmasq().is_none() {
            if let Err(error) = apt_install("dnsmasq-base", || dnsmasq().is_some()) {
                eprintln!("setup: {error:#}; the DNS test will be skipped");
            }
        }
        // Shared folders (virtio-fs): virtiofsd runs as root, so it is
        // built only where it can run.
        if virtiofsd().is_none() {
            if let Err(error) = install_virtiofsd() {
                eprintln!("setup: {error:#}; the virtio-fs tests will be skipped");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, help: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\ncat <<'END'\n{help}\nEND\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_c_virtiofsd_of_qemu_7_does_not_count() {
        let dir = std::env::temp_dir().join(format!("toro-virtiofsd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // What QEMU 7.2's C virtiofsd prints (Debian 12's qemu-system-common).
        let c = script(
            &dir,
            "c",
            "usage: virtiofsd [options]\n    -o source=PATH   shared directory tree\n    --socket-path=PATH",
        );
        // What the Rust virtiofsd prints.
        let rust = script(
            &dir,
            "rust",
            "Usage: virtiofsd [OPTIONS]\n      --shared-dir <shared-dir>\n      --sandbox <sandbox>",
        );
        assert_eq!(first_rust_virtiofsd(vec![c.clone()]), None);
        assert_eq!(first_rust_virtiofsd(vec![dir.join("missing"), c.clone(), rust.clone()]), Some(rust.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
