//! The kernel command line: sanitised into UTF-8, split into `key=value` arguments.
//!
//! The VMM's bytes go through [`CommandLineBuffer::fill`] first, which makes
//! them valid, printable UTF-8 in a fixed buffer. [`CommandLine`] then
//! splits that text the way Linux does:
//!
//! - arguments are separated by whitespace;
//! - an argument is `key`, `key=value` or `key="value with spaces"`; the
//!   double quotes are kept in [`Argument::raw`] and stripped from
//!   [`Argument::value`]; a whole argument may be quoted too
//!   (`"key=value with spaces"`); a quote left open runs to the end of the line;
//! - a standalone `--` ends the kernel's arguments: everything after it
//!   belongs to the application alone. Keys starting with `toro.` before it
//!   are the kernel's, and so are the words VMMs add for Linux guests
//!   ([`VMM_KEYS`]: Firecracker appends `pci=off`, and names its virtio-mmio
//!   devices with `virtio_mmio.device=`); the rest before it are seen by both
//!   (as Linux passes unknown parameters on to `init`).

use core::fmt;

/// The longest command line kept, in bytes.
pub const MAX_COMMAND_LINE: usize = 4096;

/// Keys starting with this are the kernel's and are hidden from the application.
pub const KERNEL_KEY_PREFIX: &str = "toro.";

/// Keys VMMs put on the command line for a Linux guest; the kernel's, not
/// the application's (Firecracker adds them before any `--`).
pub const VMM_KEYS: &[&str] = &["pci", "virtio_mmio.device"];

/// The argument that ends the kernel's arguments.
pub const END_OF_KERNEL_ARGUMENTS: &str = "--";

/// What [`CommandLineBuffer::fill`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SanitizeReport {
    /// The line did not fit in [`MAX_COMMAND_LINE`] bytes and was cut (at a character boundary).
    pub truncated: bool,
    /// Bytes that were not valid UTF-8. Each invalid sequence (as
    /// `<[u8]>::utf8_chunks` delimits them) became one `?`.
    pub invalid_bytes_replaced: usize,
    /// Control characters (other than whitespace) that became `?`, one per character.
    pub control_bytes_replaced: usize,
}

/// The command line, copied and sanitised into a fixed buffer.
#[derive(Clone)]
pub struct CommandLineBuffer {
    /// `bytes[..len]` is valid UTF-8, free of control characters.
    bytes: [u8; MAX_COMMAND_LINE],
    /// Invariant: `len <= MAX_COMMAND_LINE`, on a character boundary.
    len: usize,
}

impl CommandLineBuffer {
    /// An empty command line.
    pub const fn new() -> Self {
        Self { bytes: [0; MAX_COMMAND_LINE], len: 0 }
    }

    /// Replaces the contents with `raw`, sanitised.
    ///
    /// Invalid UTF-8 sequences and control characters become `?`. ASCII
    /// whitespace (tab, newline, carriage return, vertical tab, form feed)
    /// becomes a space: they separate arguments, as in Linux, and a
    /// bootloader's trailing newline should not turn into an argument. The
    /// result is cut at the last whole character that fits in
    /// [`MAX_COMMAND_LINE`] bytes.
    pub fn fill(&mut self, raw: &[u8]) -> SanitizeReport {
        self.len = 0;
        let mut report = SanitizeReport::default();
        'chunks: for chunk in raw.utf8_chunks() {
            for character in chunk.valid().chars() {
                let (sanitized, replaced) = sanitize(character);
                if !self.push(sanitized) {
                    report.truncated = true;
                    break 'chunks;
                }
                report.control_bytes_replaced += usize::from(replaced);
            }
            if !chunk.invalid().is_empty() {
                if !self.push(REPLACEMENT) {
                    report.truncated = true;
                    break;
                }
                report.invalid_bytes_replaced += chunk.invalid().len();
            }
        }
        report
    }

    /// The sanitised command line.
    pub fn as_str(&self) -> &str {
        // Always valid: `fill` only ever writes whole encoded characters.
        // The empty fallback keeps this panic-free all the same.
        self.bytes.get(..self.len).and_then(|bytes| core::str::from_utf8(bytes).ok()).unwrap_or("")
    }

    /// The sanitised command line, split into arguments.
    pub fn command_line(&self) -> CommandLine<'_> {
        CommandLine::new(self.as_str())
    }

    /// Appends `character` if it fits whole; returns whether it did.
    fn push(&mut self, character: char) -> bool {
        let mut encoded = [0; 4];
        let encoded = character.encode_utf8(&mut encoded).as_bytes();
        let Some(end) = self.len.checked_add(encoded.len()) else {
            return false;
        };
        let Some(slots) = self.bytes.get_mut(self.len..end) else {
            return false;
        };
        for (slot, byte) in slots.iter_mut().zip(encoded) {
            *slot = *byte;
        }
        self.len = end;
        true
    }
}

impl Default for CommandLineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CommandLineBuffer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_tuple("CommandLineBuffer").field(&self.as_str()).finish()
    }
}

/// What replaces bytes that cannot be shown.
const REPLACEMENT: char = '?';

/// The character to keep for `character`, and whether it was a control character replaced.
fn sanitize(character: char) -> (char, bool) {
    if character.is_ascii_whitespace() || character == '\x0b' {
        (' ', false)
    } else if character.is_control() {
        (REPLACEMENT, true)
    } else {
        (character, false)
    }
}

/// One argument of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argument<'a> {
    /// The part before the first `=` (the whole argument if there is none), without quotes.
    pub key: &'a str,
    /// The part after the first `=`, without its surrounding quotes; `None` for a bare `key`.
    pub value: Option<&'a str>,
    /// The argument as written, quotes included.
    pub raw: &'a str,
}

impl<'a> Argument<'a> {
    /// Splits one argument as Linux's `next_arg` does.
    fn parse(raw: &'a str) -> Self {
        let (body, quoted) = match raw.strip_prefix('"') {
            Some(body) => (body.strip_suffix('"').unwrap_or(body), true),
            None => (raw, false),
        };
        match body.split_once('=') {
            Some((key, value)) => {
                let value = match value.strip_prefix('"') {
                    // In a quoted argument the closing quote is already gone.
                    Some(inner) if !quoted => inner.strip_suffix('"').unwrap_or(inner),
                    Some(inner) => inner,
                    None => value,
                };
                Self { key, value: Some(value), raw }
            }
            None => Self { key: body, value: None, raw },
        }
    }

    /// Whether this is the kernel's: its key starts with [`KERNEL_KEY_PREFIX`]
    /// or is one of [`VMM_KEYS`].
    pub fn is_kernel_argument(&self) -> bool {
        self.key.starts_with(KERNEL_KEY_PREFIX) || VMM_KEYS.contains(&self.key)
    }
}

/// A view of a command line; see the module documentation for the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLine<'a> {
    text: &'a str,
}

impl<'a> CommandLine<'a> {
    /// A view of `text`.
    pub const fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// The text as given.
    pub const fn as_str(&self) -> &'a str {
        self.text
    }

    /// The arguments before a standalone `--`: the ones the kernel reads.
    pub fn arguments(&self) -> Arguments<'a> {
        Arguments { tokens: Tokens::new(self.text) }
    }

    /// The value of the last argument named `key` before `--`; a bare `key` gives `Some("")`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.arguments().filter(|argument| argument.key == key).last().map(|argument| argument.value.unwrap_or(""))
    }

    /// What the application sees: the arguments before `--` whose key does
    /// not start with `toro.`, then every argument after `--` as it is
    /// (`toro.` keys and further `--` included).
    pub fn application_arguments(&self) -> ApplicationArguments<'a> {
        ApplicationArguments { tokens: Tokens::new(self.text), after_end_of_kernel_arguments: false }
    }
}

/// The arguments before `--`, from [`CommandLine::arguments`].
#[derive(Debug, Clone)]
pub struct Arguments<'a> {
    tokens: Tokens<'a>,
}

impl<'a> Iterator for Arguments<'a> {
    type Item = Argument<'a>;

    fn next(&mut self) -> Option<Argument<'a>> {
        let argument = self.tokens.next()?;
        if argument.raw == END_OF_KERNEL_ARGUMENTS {
            self.tokens = Tokens::new("");
            return None;
        }
        Some(argument)
    }
}

/// The application's arguments, from [`CommandLine::application_arguments`].
#[derive(Debug, Clone)]
pub struct ApplicationArguments<'a> {
    tokens: Tokens<'a>,
    after_end_of_kernel_arguments: bool,
}

impl<'a> Iterator for ApplicationArguments<'a> {
    type Item = Argument<'a>;

    fn next(&mut self) -> Option<Argument<'a>> {
        loop {
            let argument = self.tokens.next()?;
            if self.after_end_of_kernel_arguments {
                return Some(argument);
            }
            if argument.raw == END_OF_KERNEL_ARGUMENTS {
                self.after_end_of_kernel_arguments = true;
            } else if !argument.is_kernel_argument() {
                return Some(argument);
            }
        }
    }
}

/// Every whitespace-separated argument, `--` included.
#[derive(Debug, Clone)]
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    const fn new(text: &'a str) -> Self {
        Self { rest: text }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Argument<'a>;

    fn next(&mut self) -> Option<Argument<'a>> {
        let text = self.rest.trim_start_matches(|character: char| character.is_ascii_whitespace());
        if text.is_empty() {
            self.rest = "";
            return None;
        }
        let mut in_quote = false;
        let mut end = text.len();
        for (index, byte) in text.bytes().enumerate() {
            if byte == b'"' {
                in_quote = !in_quote;
            } else if byte.is_ascii_whitespace() && !in_quote {
                end = index;
                break;
            }
        }
        // `end` is at an ASCII byte or the end, so always a character boundary.
        let (raw, rest) = text.split_at_checked(end).unwrap_or((text, ""));
        self.rest = rest;
        Some(Argument::parse(raw))
    }
}

/// How much the kernel logs, from `off` to `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Also what the kernel sets up (the default).
    Info,
    /// Also details useful when something goes wrong.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level's name, as `parse_log_level` accepts it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What is wrong with a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandLineError<'a> {
    /// The log level is neither a level's name nor a number from 0 to 5.
    UnknownLogLevel {
        /// The value as given.
        given: &'a str,
    },
    /// A size is not a number of bytes with an optional `K`, `M` or `G`
    /// suffix, or does not fit in 64 bits.
    BadSize {
        /// The value as given.
        given: &'a str,
    },
    /// A watchdog setting is neither `off` nor a number of seconds (at
    /// least 0.001, at most a day, up to three decimals).
    BadWatchdog {
        /// The value as given.
        given: &'a str,
    },
    /// A watchdog action is neither `report` nor `stop`.
    BadWatchdogAction {
        /// The value as given.
        given: &'a str,
    },
    /// An interrupt storm threshold is not a whole number from 10 to
    /// 1,000,000.
    BadStormThreshold {
        /// The value as given.
        given: &'a str,
    },
    /// A TSC frequency is not a whole number of kHz from 1,000 (1 MHz) to
    /// 100,000,000 (100 GHz).
    BadTscKhz {
        /// The value as given.
        given: &'a str,
    },
    /// A TLB refresh interval is neither `off` nor a whole number of
    /// milliseconds from 1 to 60,000.
    BadTlbRefresh {
        /// The value as given.
        given: &'a str,
    },
}

impl fmt::Display for CommandLineError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownLogLevel { given } => write!(
                formatter,
                "unknown log level {given:?} (expected off, error, warn, info, debug, trace, or 0 to 5)"
            ),
            Self::BadSize { given } => {
                write!(formatter, "bad size {given:?} (expected bytes, optionally with K, M or G: 65536, 256K, 8M)")
            }
            Self::BadWatchdog { given } => {
                write!(formatter, "bad watchdog setting {given:?} (expected off or seconds, 0.001 to 86400: 2, 0.5)")
            }
            Self::BadWatchdogAction { given } => {
                write!(formatter, "bad watchdog action {given:?} (expected report or stop)")
            }
            Self::BadStormThreshold { given } => write!(
                formatter,
                "bad interrupt storm threshold {given:?} (expected interrupts per 10 ms on one vector, 10 to 1000000)"
            ),
            Self::BadTscKhz { given } => {
                write!(formatter, "bad TSC frequency {given:?} (expected kHz, 1000 to 100000000: 2596122)")
            }
            Self::BadTlbRefresh { given } => {
                write!(formatter, "bad TLB refresh interval {given:?} (expected `off` or milliseconds, 1 to 60000)")
            }
        }
    }
}

/// Reads a log level: a name in any case (`warning` too), or `0` (off) to `5` (trace).
pub fn parse_log_level(value: &str) -> Result<LogLevel, CommandLineError<'_>> {
    const NAMES: [(&str, LogLevel); 13] = [
        ("off", LogLevel::Off),
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("warning", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
        ("0", LogLevel::Off),
        ("1", LogLevel::Error),
        ("2", LogLevel::Warn),
        ("3", LogLevel::Info),
        ("4", LogLevel::Debug),
        ("5", LogLevel::Trace),
    ];
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|&(_, level)| level)
        .ok_or(CommandLineError::UnknownLogLevel { given: value })
}

/// Reads a size in bytes: digits with an optional `K`, `M` or `G` suffix
/// (powers of 1024, either case; `KiB`/`MiB`/`GiB` too).
pub fn parse_size(value: &str) -> Result<u64, CommandLineError<'_>> {
    let bad = CommandLineError::BadSize { given: value };
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &value[digits.len()..];
    let units: [(&[&str], u32); 4] =
        [(&["", "b"], 0), (&["k", "kib", "kb"], 10), (&["m", "mib", "mb"], 20), (&["g", "gib", "gb"], 30)];
    let Some(&(_, shift)) = units.iter().find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(suffix))) else {
        return Err(bad);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let number: u64 = digits.parse().map_err(|_| bad)?;
    number.checked_mul(1 << shift).ok_or(bad)
}

/// The watchdog as the command line sets it (`toro.watchdog=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchdog {
    /// `off`: nothing is watched.
    Off,
    /// Report a thread that runs this many milliseconds without reaching
    /// a scheduling point.
    AfterMilliseconds(u64),
}

/// Reads `toro.watchdog=`: `off` (or `0`), or seconds with up to three
/// decimals, from 0.001 to 86400.
pub fn parse_watchdog(value: &str) -> Result<Watchdog, CommandLineError<'_>> {
    let bad = CommandLineError::BadWatchdog { given: value };
    if value.eq_ignore_ascii_case("off") || value == "0" {
        return Ok(Watchdog::Off);
    }
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 3 {
        return Err(bad);
    }
    let seconds: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad)? };
    let thousandths: u64 = if fraction.is_empty() { 0 } else { fraction.parse::<u64>().map_err(|_| bad)? };
    let scale = 10u64.pow(3 - fraction.len() as u32);
    let milliseconds = seconds.checked_mul(1000).and_then(|ms| ms.checked_add(thousandths * scale)).ok_or(bad)?;
    match milliseconds {
        0 => Ok(Watchdog::Off),
        1..=86_400_000 => Ok(Watchdog::AfterMilliseconds(milliseconds)),
        _ => Err(bad),
    }
}

/// Reads `toro.irq_storm=`: how many interrupts on one vector within
/// 10 ms make a storm, a whole number from 10 to 1,000,000.
pub fn parse_storm_threshold(value: &str) -> Result<u32, CommandLineError<'_>> {
    whole_number_within(value, 10..=1_000_000)
        .map(|threshold| threshold as u32)
        .ok_or(CommandLineError::BadStormThreshold { given: value })
}

/// `value` as a whole number in `range`: decimal digits only (no sign,
/// no spaces), or `None`.
fn whole_number_within(value: &str, range: core::ops::RangeInclusive<u64>) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().filter(|number| range.contains(number))
}

/// Reads `toro.tsc_khz=`: the TSC's frequency in kHz, a whole number from
/// 1,000 (1 MHz) to 100,000,000 (100 GHz), as Linux's `tsc_early_khz=`.
pub fn parse_tsc_khz(value: &str) -> Result<u64, CommandLineError<'_>> {
    whole_number_within(value, 1_000..=100_000_000).ok_or(CommandLineError::BadTscKhz { given: value })
}

/// Reads `toro.tlb_refresh=`: `off` (or `0`) for never, or the interval
/// in milliseconds, a whole number from 1 to 60,000. `None` is off.
pub fn parse_tlb_refresh(value: &str) -> Result<Option<u64>, CommandLineError<'_>> {
    if value.eq_ignore_ascii_case("off") || value == "0" {
        return Ok(None);
    }
    whole_number_within(value, 1..=60_000).map(Some).ok_or(CommandLineError::BadTlbRefresh { given: value })
}

/// What the watchdog does after its report (`toro.watchdog_action=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogAction {
    /// Report and keep going (the thread goes on running).
    Report,
    /// Report, then end the VM with a failure status.
    Stop,
}

/// Reads `toro.watchdog_action=`: `report` or `stop`.
pub fn parse_watchdog_action(value: &str) -> Result<WatchdogAction, CommandLineError<'_>> {
    if value.eq_ignore_ascii_case("report") {
        Ok(WatchdogAction::Report)
    } else if value.eq_ignore_ascii_case("stop") {
        Ok(WatchdogAction::Stop)
    } else {
        Err(CommandLineError::BadWatchdogAction { given: value })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tsc_frequencies() {
        assert_eq!(parse_tsc_khz("2596122"), Ok(2_596_122));
        assert_eq!(parse_tsc_khz("1000"), Ok(1000));
        assert_eq!(parse_tsc_khz("100000000"), Ok(100_000_000));
        for bad in ["", "999", "0", "100000001", "-5", "+5", "2.6e6", "2596.122", "99999999999999999999999", " 1000"] {
            assert_eq!(parse_tsc_khz(bad), Err(CommandLineError::BadTscKhz { given: bad }), "{bad:?}");
        }
        assert!(format!("{}", parse_tsc_khz("x").unwrap_err()).contains("1000 to 100000000"));
    }

    #[test]
    fn tlb_refresh_intervals() {
        assert_eq!(parse_tlb_refresh("20"), Ok(Some(20)));
        assert_eq!(parse_tlb_refresh("1"), Ok(Some(1)));
        assert_eq!(parse_tlb_refresh("60000"), Ok(Some(60_000)));
        assert_eq!(parse_tlb_refresh("off"), Ok(None));
        assert_eq!(parse_tlb_refresh("OFF"), Ok(None));
        assert_eq!(parse_tlb_refresh("0"), Ok(None));
        for bad in ["", "60001", "-5", "+5", "20ms", "1.5", " 20", "99999999999999999999999", "on"] {
            assert_eq!(parse_tlb_refresh(bad), Err(CommandLineError::BadTlbRefresh { given: bad }), "{bad:?}");
        }
        assert!(format!("{}", parse_tlb_refresh("x").unwrap_err()).contains("`off` or milliseconds"));
    }

    #[test]
    fn storm_thresholds() {
        assert_eq!(parse_storm_threshold("10"), Ok(10));
        assert_eq!(parse_storm_threshold("1000"), Ok(1000));
        assert_eq!(parse_storm_threshold("1000000"), Ok(1_000_000));
        for bad in ["", "9", "0", "1000001", "-5", "+5", "1e3", "99999999999", " 100", "100 "] {
            assert_eq!(parse_storm_threshold(bad), Err(CommandLineError::BadStormThreshold { given: bad }), "{bad:?}");
        }
        assert!(format!("{}", parse_storm_threshold("x").unwrap_err()).contains("10 to 1000000"));
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "K", "12Q", "-1", "1.5M", "99999999999999999999", "17179869184G", " 4K"] {
            assert_eq!(parse_size(bad), Err(CommandLineError::BadSize { given: bad }), "{bad:?}");
        }
    }

    #[test]
    fn watchdog_settings() {
        assert_eq!(parse_watchdog("off"), Ok(Watchdog::Off));
        assert_eq!(parse_watchdog("OFF"), Ok(Watchdog::Off));
        assert_eq!(parse_watchdog("0"), Ok(Watchdog::Off));
        assert_eq!(parse_watchdog("2"), Ok(Watchdog::AfterMilliseconds(2000)));
        assert_eq!(parse_watchdog("0.5"), Ok(Watchdog::AfterMilliseconds(500)));
        assert_eq!(parse_watchdog(".25"), Ok(Watchdog::AfterMilliseconds(250)));
        assert_eq!(parse_watchdog("1.001"), Ok(Watchdog::AfterMilliseconds(1001)));
        assert_eq!(parse_watchdog("86400"), Ok(Watchdog::AfterMilliseconds(86_400_000)));
        for bad in ["", ".", "1.0001", "86401", "-1", "2s", "1e3", "on", "184467440737095516"] {
            assert_eq!(parse_watchdog(bad), Err(CommandLineError::BadWatchdog { given: bad }), "{bad:?}");
        }
        assert_eq!(parse_watchdog_action("stop"), Ok(WatchdogAction::Stop));
        assert_eq!(parse_watchdog_action("Report"), Ok(WatchdogAction::Report));
        assert_eq!(parse_watchdog_action("halt"), Err(CommandLineError::BadWatchdogAction { given: "halt" }));
    }

    fn sanitized(raw: &[u8]) -> (String, SanitizeReport) {
        let mut buffer = CommandLineBuffer::new();
        let report = buffer.fill(raw);
        (buffer.as_str().to_owned(), report)
    }

    fn keys(line: &str) -> Vec<&str> {
        CommandLine::new(line).arguments().map(|argument| argument.key).collect()
    }

    fn application_raws(line: &str) -> Vec<&str> {
        CommandLine::new(line).application_arguments().map(|argument| argument.raw).collect()
    }

    #[test]
    fn words_firecracker_adds_are_not_the_applications() {
        // What Firecracker passes for boot_args "x=1 -- a b" with a virtio-mmio disk.
        let line = CommandLine::new("x=1 pci=off virtio_mmio.device=4K@0xc0001000:5 -- a b pci=off");
        let keys: Vec<&str> = line.application_arguments().map(|argument| argument.raw).collect();
        assert_eq!(keys, ["x=1", "a", "b", "pci=off"]);
        assert_eq!(line.get("virtio_mmio.device"), Some("4K@0xc0001000:5"));
    }

    #[test]
    fn clean_lines_pass_unchanged() {
        let line = b"console=ttyS0 reboot=k panic=1 virtio_mmio.device=4K@0xd0000000:5";
        let (text, report) = sanitized(line);
        assert_eq!(text.as_bytes(), line);
        assert_eq!(report, SanitizeReport::default());
        let (text, _) = sanitized("name=Zoë ÿ 日本".as_bytes());
        assert_eq!(text, "name=Zoë ÿ 日本");
    }

    #[test]
    fn invalid_utf8_becomes_question_marks() {
        // A lone continuation byte, a truncated 3-byte sequence, an overlong encoding.
        let (text, report) = sanitized(b"a=\x80 b=\xe6\x97 c=\xc0\xaf d");
        assert_eq!(text, "a=? b=? c=?? d");
        assert_eq!(report.invalid_bytes_replaced, 5);
        assert!(!report.truncated);
    }

    #[test]
    fn control_characters_become_question_marks_and_whitespace_spaces() {
        let (text, report) = sanitized(b"a\tb\nc\r\x0b\x0cd \x00e\x1b[0m\x7f \xc2\x85");
        assert_eq!(text, "a b c   d ?e?[0m? ?");
        assert_eq!(report.control_bytes_replaced, 4);
        assert_eq!(report.invalid_bytes_replaced, 0);
    }

    #[test]
    fn ten_kilobytes_are_truncated_on_a_character_boundary() {
        let (text, report) = sanitized(&[b'x'; 10 * 1024]);
        assert!(report.truncated);
        assert_eq!(text.len(), MAX_COMMAND_LINE);

        // 4095 ASCII bytes then a 3-byte character: it cannot fit whole.
        let mut raw = vec![b'a'; MAX_COMMAND_LINE - 1];
        raw.extend_from_slice("日".as_bytes());
        let (text, report) = sanitized(&raw);
        assert!(report.truncated);
        assert_eq!(text.len(), MAX_COMMAND_LINE - 1);

        // Exactly full is not truncated.
        let (text, report) = sanitized(&[b'y'; MAX_COMMAND_LINE]);
        assert!(!report.truncated);
        assert_eq!(text.len(), MAX_COMMAND_LINE);
    }

    #[test]
    fn fill_replaces_earlier_contents() {
        let mut buffer = CommandLineBuffer::default();
        buffer.fill(b"first=1 second=2");
        buffer.fill(b"third");
        assert_eq!(buffer.as_str(), "third");
        assert_eq!(buffer.command_line().get("third"), Some(""));
        assert_eq!(format!("{buffer:?}"), "CommandLineBuffer(\"third\")");
    }

    #[test]
    fn firecracker_line_splits_into_arguments() {
        let line = CommandLine::new("console=ttyS0 reboot=k panic=1 virtio_mmio.device=4K@0xd0000000:5");
        let arguments: Vec<_> = line.arguments().collect();
        assert_eq!(arguments.len(), 4);
        assert_eq!(
            arguments[3],
            Argument {
                key: "virtio_mmio.device",
                value: Some("4K@0xd0000000:5"),
                raw: "virtio_mmio.device=4K@0xd0000000:5"
            }
        );
        assert_eq!(line.get("reboot"), Some("k"));
        assert_eq!(line.get("missing"), None);
    }

    #[test]
    fn whitespace_of_any_amount_separates() {
        assert_eq!(keys("  a \t b\n\nc  "), ["a", "b", "c"]);
        assert!(keys("").is_empty());
        assert!(keys("   \t ").is_empty());
    }

    #[test]
    fn bare_keys_empty_values_and_last_occurrence() {
        let line = CommandLine::new("quiet toro.log=info empty= toro.log=trace =orphan a=b=c");
        assert_eq!(line.get("quiet"), Some(""));
        assert_eq!(line.get("empty"), Some(""));
        assert_eq!(line.get("toro.log"), Some("trace"));
        assert_eq!(line.get(""), Some("orphan"));
        assert_eq!(line.get("a"), Some("b=c"));
        let quiet = line.arguments().next().unwrap();
        assert_eq!(quiet.value, None);
    }

    #[test]
    fn quoted_values_keep_their_spaces() {
        let line = CommandLine::new(r#"greeting="hello big world" x=1 "whole=quoted arg" empty="" mixed=a"b c"d"#);
        let arguments: Vec<_> = line.arguments().collect();
        assert_eq!(arguments[0].key, "greeting");
        assert_eq!(arguments[0].value, Some("hello big world"));
        assert_eq!(arguments[0].raw, r#"greeting="hello big world""#);
        assert_eq!(line.get("x"), Some("1"));
        assert_eq!(line.get("whole"), Some("quoted arg"));
        assert_eq!(arguments[2].raw, r#""whole=quoted arg""#);
        assert_eq!(line.get("empty"), Some(""));
        // Quotes in the middle group but are not stripped, as in Linux.
        assert_eq!(line.get("mixed"), Some(r#"a"b c"d"#));
        assert_eq!(arguments.len(), 5);
    }

    #[test]
    fn unterminated_quote_runs_to_the_end() {
        let line = CommandLine::new(r#"a=1 b="two three c=4"#);
        let arguments: Vec<_> = line.arguments().collect();
        assert_eq!(arguments.len(), 2);
        assert_eq!(arguments[1].value, Some("two three c=4"));
        assert_eq!(line.get("c"), None);
        for text in ["\"", "a=\"", "\"=", "\"\"", "=", "==\"=", "\"a b"] {
            let count = CommandLine::new(text).arguments().count();
            assert_eq!(count, 1, "{text}");
        }
        assert_eq!(CommandLine::new("a=\"").get("a"), Some(""));
        assert_eq!(CommandLine::new("\"a b").get("a b"), Some(""));
    }

    #[test]
    fn double_dash_ends_the_kernel_arguments() {
        let line = CommandLine::new("console=ttyS0 toro.log=debug port=80 -- toro.log=app --verbose -- x");
        assert_eq!(keys(line.as_str()), ["console", "toro.log", "port"]);
        assert_eq!(line.get("toro.log"), Some("debug"));
        assert_eq!(line.get("--verbose"), None);
        assert_eq!(
            application_raws(line.as_str()),
            ["console=ttyS0", "port=80", "toro.log=app", "--verbose", "--", "x"]
        );
        // Quoted, or part of a longer word, it is an ordinary argument.
        assert_eq!(keys(r#"a "--" b --c"#), ["a", "--", "b", "--c"]);
        assert_eq!(keys("-- a"), Vec::<&str>::new());
        assert_eq!(application_raws("-- a"), ["a"]);
        assert_eq!(application_raws("a --"), ["a"]);
    }

    #[test]
    fn application_arguments_hide_the_kernel_keys() {
        assert_eq!(
            application_raws("toro.log=info toro.cpus=2 name=web toro port=8080 toro_x=1"),
            ["name=web", "toro", "port=8080", "toro_x=1"]
        );
    }

    #[test]
    fn log_levels_parse_by_name_and_number() {
        assert_eq!(parse_log_level("off"), Ok(LogLevel::Off));
        assert_eq!(parse_log_level("ERROR"), Ok(LogLevel::Error));
        assert_eq!(parse_log_level("Warning"), Ok(LogLevel::Warn));
        assert_eq!(parse_log_level("warn"), Ok(LogLevel::Warn));
        assert_eq!(parse_log_level("info"), Ok(LogLevel::Info));
        assert_eq!(parse_log_level("DeBuG"), Ok(LogLevel::Debug));
        assert_eq!(parse_log_level("trace"), Ok(LogLevel::Trace));
        for (number, level) in ["0", "1", "2", "3", "4", "5"].iter().zip([
            LogLevel::Off,
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ]) {
            assert_eq!(parse_log_level(number), Ok(level));
            assert_eq!(parse_log_level(level.as_str()), Ok(level));
        }
        assert!(LogLevel::Error < LogLevel::Trace);
        for bad in ["", "6", "-1", "verbose", "info ", "10", "ınfo"] {
            assert_eq!(parse_log_level(bad), Err(CommandLineError::UnknownLogLevel { given: bad }));
        }
        assert_eq!(
            parse_log_level("loud").unwrap_err().to_string(),
            "unknown log level \"loud\" (expected off, error, warn, info, debug, trace, or 0 to 5)"
        );
    }

    proptest! {
        #[test]
        fn fill_always_yields_clean_utf8(raw in prop::collection::vec(any::<u8>(), 0..6000)) {
            let mut buffer = CommandLineBuffer::new();
            let report = buffer.fill(&raw);
            // as_str falls back to "" only if the bytes were not valid UTF-8.
            prop_assert!(core::str::from_utf8(&buffer.bytes[..buffer.len]).is_ok());
            prop_assert_eq!(buffer.as_str().len(), buffer.len);
            prop_assert!(buffer.len <= MAX_COMMAND_LINE);
            prop_assert!(!buffer.as_str().chars().any(char::is_control));
            prop_assert!(report.truncated || buffer.len <= raw.len());
            if !report.truncated && raw.len() <= MAX_COMMAND_LINE {
                if let Ok(text) = core::str::from_utf8(&raw) {
                    prop_assert_eq!(report.invalid_bytes_replaced, 0);
                    prop_assert_eq!(buffer.as_str().chars().count(), text.chars().count());
                }
            }
        }

        #[test]
        fn arbitrary_strings_split_without_panicking(text in any::<String>()) {
            check_split(&text)?;
        }

        #[test]
        fn command_like_strings_split_without_panicking(text in "[a-z=\" \t.\\-]{0,64}") {
            check_split(&text)?;
        }
    }

    fn check_split(text: &str) -> Result<(), TestCaseError> {
        let line = CommandLine::new(text);
        for argument in line.arguments().chain(line.application_arguments()) {
            prop_assert!(!argument.raw.is_empty());
            prop_assert!(text.contains(argument.raw));
            prop_assert!(argument.raw.contains(argument.key));
            if let Some(value) = argument.value {
                prop_assert!(argument.raw.contains(value));
            }
        }
        prop_assert!(line.arguments().count() <= text.len());
        let _ = line.get("a");
        Ok(())
    }
}
