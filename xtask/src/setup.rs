//! Installs what building and booting need when it is missing: the Rust
//! target (rustup) and QEMU (apt-get, when running as root).

use std::process::Command;

use anyhow::{bail, Context, Result};

pub const TARGET: &str = "x86_64-unknown-none";
pub const QEMU: &str = "qemu-system-x86_64";
const QEMU_PACKAGE: &str = "qemu-system-x86";

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn is_root() -> bool {
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
        if !is_root() {
            bail!(
                "{QEMU} is missing: install the Debian package `{QEMU_PACKAGE}` (sudo apt-get install {QEMU_PACKAGE})"
            );
        }
        eprintln!("setup: installing {QEMU_PACKAGE} with apt-get");
        let quiet = ["-qq", "-o", "Dpkg::Use-Pty=0"];
        let update = Command::new("apt-get").arg("update").args(quiet).status()?;
        let install = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(quiet)
            .arg(QEMU_PACKAGE)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !update.success() || !install.success() || !have(QEMU) {
            bail!("installing {QEMU_PACKAGE} failed");
        }
    }
    Ok(())
}
