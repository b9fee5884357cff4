//! Puts the kernel's linker script where the linker finds it.
//!
//! `-C link-arg=-Ttoro.ld` (from `.cargo/config.toml`, in this repository or
//! an application's) names the script; this adds its folder to the link
//! search path of every crate that depends on `toro`, so applications outside
//! this repository need no copy of it.

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::copy("toro.ld", format!("{out}/toro.ld")).expect("copy toro.ld");
    println!("cargo:rustc-link-search=native={out}");
    println!("cargo:rerun-if-changed=toro.ld");
}
