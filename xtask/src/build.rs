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
    build_with(images, debug, &[], &workspace_root().join("target"))
}

/// Builds the given binaries with extra cargo `features` into
/// `target_dir`; returns their ELF paths.
pub fn build_with(images: &[ImageSpec], debug: bool, features: &[&str], target_dir: &Path) -> Result<Vec<PathBuf>> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let root = workspace_root();
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(&root).args(["build", "--target", TARGET]).env("CARGO_TARGET_DIR", target_dir);
    if !debug {
        command.arg("--release");
    }
    for image in images {
        command.args(["-p", &image.package, "--bin", &image.binary]);
    }
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the image failed");
    }
    Ok(images.iter().map(|image| target_dir.join(TARGET).join(profile_dir(debug)).join(&image.binary)).collect())
}

/// The image spec for an application in `examples/`.
pub fn example(name: &str) -> ImageSpec {
    ImageSpec { package: name.to_string(), binary: name.to_string() }
}

/// The applications in `examples/`, sorted.
pub fn known_applications() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("examples"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The `name` in a `Cargo.toml`'s `[package]` table.
pub fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(value) = line.strip_prefix("name").map(str::trim).and_then(|l| l.strip_prefix('=')) {
                return Some(value.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

/// Builds the application `name` and returns its image: an application of
/// `examples/` by name, or the path of an application crate elsewhere
/// (built in its own directory with its own cargo configuration, as
/// docs/applications.md sets it up).
pub fn application(name: &str, debug: bool) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.join("Cargo.toml").is_file() {
        let directory = path.canonicalize().with_context(|| format!("{}", path.display()))?;
        let manifest = std::fs::read_to_string(directory.join("Cargo.toml"))?;
        let package = package_name(&manifest)
            .with_context(|| format!("{}/Cargo.toml has no [package] name", directory.display()))?;
        let mut command = Command::new(env!("CARGO"));
        // Its own configuration (target, linker flags) applies, not ours.
        command.current_dir(&directory).arg("build").env_remove("CARGO_TARGET_DIR");
        if !debug {
            command.arg("--release");
        }
        if !command.status().context("running cargo build")?.success() {
            bail!("building {} failed", directory.display());
        }
        let image = directory.join("target").join(TARGET).join(profile_dir(debug)).join(&package);
        if !image.is_file() {
            bail!(
                "built {}, but found no image at {} (does its .cargo/config.toml set target = \"{TARGET}\"? see docs/applications.md)",
                directory.display(),
                image.display()
            );
        }
        return Ok(image);
    }
    let known = known_applications();
    if !known.iter().any(|k| k == name) {
        bail!(
            "unknown application {name:?}: the known applications are {} (or give the path of an application crate)",
            known.join(", ")
        );
    }
    Ok(build(&[example(name)], debug)?.remove(0))
}
