//! The `log` crate's backend: `[LEVEL target] message` lines on the console.
//! The level comes from `toro.log=` on the command line (default: warn).

use core::fmt::Write;

use log::{LevelFilter, Log, Metadata, Record};
use toro_core::command_line::LogLevel;

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut out = crate::console::writer();
        let _ = writeln!(out, "[{:<5} {}] {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}

/// The default level when the command line names none.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Warn;

/// Installs the logger at `level`.
pub fn init(level: LevelFilter) {
    // `set_logger_racy` avoids an atomic read-modify-write; boot is
    // single-threaded here, which is its requirement.
    // SAFETY: called once on the boot CPU before any other CPU runs.
    let _ = unsafe { log::set_logger_racy(&LOGGER) };
    // SAFETY: as above.
    unsafe { log::set_max_level_racy(level) };
}

/// Converts the command line's level to the `log` crate's.
pub fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}
