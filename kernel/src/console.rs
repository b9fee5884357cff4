//! The console: whole lines from any CPU, never interleaved mid-line.
//!
//! Each `print!`/`println!`/log call formats while holding the console lock,
//! so one call's output reaches the UART as one piece; bytes are staged in a
//! small buffer and sent in FIFO-sized bursts. A fault report uses
//! `Emergency`, which takes over the lock if its holder is this CPU or
//! does not release it soon.

use core::fmt::{self, Write};

use crate::arch::serial::Serial;
use crate::sync::spin::{Guard, SpinLock};

static CONSOLE: SpinLock<Serial> = SpinLock::new(Serial::com1());

/// Spins an emergency writer waits for another CPU before taking over.
const EMERGENCY_SPINS: u32 = 10_000_000;

/// Sets up the UART.
pub fn init() {
    CONSOLE.lock().init();
}

/// A writer holding the console lock; buffers and flushes on drop.
pub struct Writer<'a> {
    serial: Guard<'a, Serial>,
    buffer: [u8; 128],
    length: usize,
}

impl Writer<'_> {
    fn flush(&mut self) {
        let length = self.length;
        self.serial.write(&self.buffer[..length]);
        self.length = 0;
    }
}

impl Write for Writer<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            if self.length == self.buffer.len() {
                self.flush();
            }
            self.buffer[self.length] = byte;
            self.length += 1;
        }
        Ok(())
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The console for ordinary output.
pub fn writer() -> Writer<'static> {
    Writer { serial: CONSOLE.lock(), buffer: [0; 128], length: 0 }
}

/// The console for fatal reports (see the module docs).
pub struct Emergency;

impl Emergency {
    #[allow(clippy::new_ret_no_self)]
    pub fn lock() -> Writer<'static> {
        Writer { serial: CONSOLE.lock_or_steal(EMERGENCY_SPINS), buffer: [0; 128], length: 0 }
    }
}

#[doc(hidden)]
pub fn _print(arguments: fmt::Arguments, newline: bool) {
    let mut out = writer();
    let _ = out.write_fmt(arguments);
    if newline {
        let _ = out.write_str("\n");
    }
}

/// Prints to the console (serial), like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => { $crate::console::_print(format_args!($($argument)*), false) };
}

/// Prints a line to the console (serial), like `std::println!`. Lines
/// printed by one call are never interleaved with other CPUs' output.
#[macro_export]
macro_rules! println {
    () => { $crate::console::_print(format_args!(""), true) };
    ($($argument:tt)*) => { $crate::console::_print(format_args!($($argument)*), true) };
}
