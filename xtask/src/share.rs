//! Host folders shared with a guest over virtio-fs: `--share FOLDER`
//! starts the host's `virtiofsd` on a socket for each folder, and QEMU
//! gets the guest's RAM as a shared memory backend (`memory-backend-memfd,
//! share=on`: virtiofsd reads and writes the guest's buffers in place)
//! and a `vhost-user-fs-device` (microvm) or `vhost-user-fs-pci` (q35) on
//! that socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A folder attached to a guest: the socket its virtiofsd listens on and the tag the guest sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub socket: PathBuf,
    pub tag: String,
}

/// The tag of the `index`-th share (`share`, `share1`, ...).
pub fn tag(index: usize) -> String {
    if index == 0 {
        "share".into()
    } else {
        format!("share{index}")
    }
}

/// A running virtiofsd; killed (and its socket removed) when dropped.
pub struct Virtiofsd {
    child: Child,
    pub share: Share,
    log: PathBuf,
}

impl Virtiofsd {
    /// What virtiofsd printed (its log file), for a failed test's report.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        // It ends by itself when QEMU disconnects; make sure.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.share.socket);
    }
}

/// Starts virtiofsd serving `folder` on a socket in `run_dir` (named after
/// `tag`), and waits until the socket is there. Needs root (virtiofsd
/// switches credentials per request) and the program (`cargo xtask setup`).
pub fn start(folder: &Path, run_dir: &Path, tag: &str) -> Result<Virtiofsd> {
    let program = crate::setup::virtiofsd().context(
        "virtiofsd is missing: `cargo xtask setup` installs it (cargo install virtiofsd; needs libseccomp-dev and libcap-ng-dev)",
    )?;
    if !folder.is_dir() {
        bail!("--share {}: not a folder", folder.display());
    }
    std::fs::create_dir_all(run_dir)?;
    let socket = run_dir.join(format!("{tag}.sock"));
    let log = run_dir.join(format!("{tag}.virtiofsd.log"));
    let _ = std::fs::remove_file(&socket);
    let log_file = std::fs::File::create(&log)?;
    // `--sandbox none`: no namespaces (the suite runs in a container
    // without the rights to make them); the folder is all it serves.
    let child = Command::new(&program)
        .arg("--socket-path")
        .arg(&socket)
        .arg("--shared-dir")
        .arg(folder)
        .args(["--sandbox", "none", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut daemon = Virtiofsd { child, share: Share { socket, tag: tag.into() }, log };
    let started = Instant::now();
    while !daemon.share.socket.exists() {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            bail!("virtiofsd exited with {status}: {}", daemon.log().trim());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("virtiofsd made no socket in 10 s: {}", daemon.log().trim());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
}

/// The QEMU arguments for `shares` (after the memory backend: see
/// `VmConfig::command`).
pub fn device_arguments(machine: crate::qemu::Machine, shares: &[Share]) -> Vec<String> {
    let device = match machine {
        crate::qemu::Machine::Microvm => "vhost-user-fs-device",
        crate::qemu::Machine::Q35 => "vhost-user-fs-pci",
    };
    let mut arguments = Vec::new();
    for (index, share) in shares.iter().enumerate() {
        arguments.push("-chardev".into());
        arguments.push(format!("socket,id=vfs{index},path={}", share.socket.display()));
        arguments.push("-device".into());
        arguments.push(format!("{device},chardev=vfs{index},tag={}", share.tag));
    }
    arguments
}
