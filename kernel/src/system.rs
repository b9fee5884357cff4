//! What an application can ask about the machine it runs on.

use core::time::Duration;

use toro_core::command_line::{Argument, CommandLine, CommandLineBuffer};

use crate::once::BootCell;

pub(crate) struct SystemInfo {
    pub cpu_count: usize,
    pub memory_bytes: u64,
    pub entry_tsc: u64,
    pub main_tsc: u64,
}

static INFO: BootCell<SystemInfo> = BootCell::new();

/// The command line, kept for the application (sanitised UTF-8).
static COMMAND_LINE: BootCell<CommandLineBuffer> = BootCell::new();

/// Keeps the command line boot read (once); returns it.
pub(crate) fn keep_command_line(buffer: CommandLineBuffer) -> &'static str {
    COMMAND_LINE.set(buffer);
    command_line()
}

pub(crate) fn publish(info: SystemInfo) {
    INFO.set(info);
}

fn info() -> &'static SystemInfo {
    INFO.get().expect("system information is published before main")
}

/// CPUs the firmware describes (ACPI MADT), at least 1.
pub fn cpu_count() -> usize {
    info().cpu_count
}

/// Bytes of RAM available to the kernel and the application (after the
/// image, page tables and firmware areas).
pub fn memory_size() -> u64 {
    info().memory_bytes
}

/// The whole kernel command line (invalid bytes replaced by `?`).
pub fn command_line() -> &'static str {
    COMMAND_LINE.get().map(|c| c.as_str()).unwrap_or("")
}

/// The command-line arguments meant for the application: all but the
/// kernel's own `toro.*` ones, and everything after a standalone `--`.
pub fn arguments() -> impl Iterator<Item = Argument<'static>> {
    CommandLine::new(command_line()).application_arguments()
}

/// The value of `key=value` on the command line (last one wins).
pub fn argument(key: &str) -> Option<&'static str> {
    CommandLine::new(command_line()).get(key)
}

/// TSC ticks from the first instruction of the kernel to `main`.
pub fn boot_ticks() -> u64 {
    info().main_tsc.saturating_sub(info().entry_tsc)
}

/// Time from the first instruction of the kernel to `main`, if the TSC
/// frequency is known.
pub fn boot_duration() -> Option<Duration> {
    crate::time::ticks_to_duration(boot_ticks())
}
