//! `cargo xtask bench --only ROWS`: which rows a run measures.
//!
//! `ROWS` is a comma-separated list of row keys (the JSON keys and plot
//! names: `alloc-1cpu`, `yield`, `boot`, `http-tap-p99`, ...), each exact
//! or a prefix ending in `*` (`alloc-*`). A run with `--only` measures the
//! sections that have a selected row, tells the guests' benchmark programs
//! to run only the selected workloads (`bench.only=` for Toro,
//! `toro_bench_only=` for the Linux guest), and leaves `docs/` alone (its
//! table is a full run's).

use anyhow::{bail, Result};

/// The rows of the sections outside the workload table, by section.
pub const BOOT: &[&str] = &["boot"];
pub const VMM_BOOT: &[&str] =
    &["boot-firecracker", "exit-firecracker", "boot-cloud-hypervisor", "exit-cloud-hypervisor"];
pub const HTTP: &[&str] = &["http", "http-request", "http-p99", "http-listen-overflows"];
pub const HTTP_TAP: &[&str] = &["http-tap-request", "http-tap-p50", "http-tap-p99"];
pub const HTTP_DISK: &[&str] = &["http-disk-file"];
pub const MEMORY: &[&str] = &["memory"];
pub const IDLE: &[&str] = &["idle"];
pub const IMAGE: &[&str] = &["image"];

/// The selection: `None` is every row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Only(Option<Vec<String>>);

impl Only {
    /// Every row.
    pub fn all() -> Self {
        Self(None)
    }

    /// Parses `ROWS`; every item must name at least one of `known`.
    pub fn parse(list: &str, known: &[&str]) -> Result<Self> {
        let items: Vec<String> =
            list.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect();
        if items.is_empty() {
            bail!("--only needs at least one row");
        }
        for item in &items {
            if !known.iter().any(|key| matches(item, key)) {
                bail!("--only: no row {item:?}; the rows are: {}", known.join(", "));
            }
        }
        Ok(Self(Some(items)))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    pub fn wants(&self, key: &str) -> bool {
        self.0.as_ref().is_none_or(|items| items.iter().any(|item| matches(item, key)))
    }

    pub fn wants_any(&self, keys: &[&str]) -> bool {
        keys.iter().any(|key| self.wants(key))
    }

    /// The selected keys among `keys`, comma-separated (what the guests'
    /// programs are given); `None` when every row is wanted.
    pub fn list(&self, keys: &[&str]) -> Option<String> {
        self.0.as_ref()?;
        Some(keys.iter().filter(|key| self.wants(key)).copied().collect::<Vec<_>>().join(","))
    }
}

fn matches(item: &str, key: &str) -> bool {
    match item.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => item == key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["boot", "alloc-1cpu", "alloc-2cpu", "yield"];

    #[test]
    fn selects_exact_keys_and_prefixes() {
        let only = Only::parse("alloc-*, yield", KNOWN).unwrap();
        assert!(only.wants("alloc-1cpu") && only.wants("alloc-2cpu") && only.wants("yield"));
        assert!(!only.wants("boot") && !only.wants("yield-watchdog-off"));
        assert!(!only.is_all());
        assert_eq!(only.list(KNOWN).as_deref(), Some("alloc-1cpu,alloc-2cpu,yield"));
        assert!(Only::all().wants("anything") && Only::all().list(KNOWN).is_none());
        assert!(only.wants_any(&["boot", "yield"]) && !only.wants_any(&["boot"]));
    }

    #[test]
    fn rejects_unknown_rows_and_empty_lists() {
        let error = Only::parse("alloc-1cpu,teleport", KNOWN).unwrap_err().to_string();
        assert!(error.contains("\"teleport\"") && error.contains("alloc-2cpu"), "{error}");
        assert!(Only::parse("zzz*", KNOWN).is_err());
        assert!(Only::parse(" , ", KNOWN).is_err());
    }
}
