//! Builds Toro images (the kernel linked with one application) with cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::TARGET;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

/// An image to build: a binary of a workspace package.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub package: String,
    pub binary: String,
}

/// The release profile unless `debug`.
pub fn profile_dir(debug: bool) -> &'static str {
    if debug {
        "debug"
    } else {
        "release"
    }
}

/// Builds the given binaries in one cargo run; returns their ELF paths.
pub fn build(images: &[ImageSpec], debug: bool) -> Result<Vec<PathBuf>> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let root = workspace_root();
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(&root).args(["build", "--target", TARGET]);
    if !debug {
        command.arg("--release");
    }
    for image in images {
        command.args(["-p", &image.package, "--bin", &image.binary]);
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the image failed");
    }
    Ok(images
        .iter()
        .map(|image| root.join("target").join(TARGET).join(profile_dir(debug)).join(&image.binary))
        .collect())
}

/// The image spec for an application name: `hello` is `examples/hello`, a
/// path is an application crate elsewhere (built in its own directory).
pub fn example(name: &str) -> ImageSpec {
    ImageSpec { package: name.to_string(), binary: name.to_string() }
}
