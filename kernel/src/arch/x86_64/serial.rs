//! The 16550 UART at COM1: the console every VMM we target provides.
//!
//! Written by hand rather than with `uart_16550`: the console wants to push
//! up to a FIFO's worth of bytes per line-status check, because each port
//! access is a VM exit (and costly even under TCG).

use x86_64::instructions::port::Port;

/// I/O base of COM1.
const COM1: u16 = 0x3f8;
/// Line status register bit 5: transmit holding register empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Bytes the transmit FIFO takes once it is empty (16550A).
const FIFO_DEPTH: usize = 16;

pub struct Serial {
    data: Port<u8>,
    line_status: Port<u8>,
}

impl Serial {
    /// COM1, not yet initialised.
    pub const fn com1() -> Self {
        Self { data: Port::new(COM1), line_status: Port::new(COM1 + 5) }
    }

    /// 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        let registers: [(u16, u8); 6] = [
            (1, 0x00), // IER: no interrupts
            (3, 0x80), // LCR: DLAB on to set the divisor
            (0, 0x01), // DLL: divisor 1 = 115200 baud
            (1, 0x00), // DLM
            (3, 0x03), // LCR: 8 data bits, no parity, 1 stop bit, DLAB off
            (2, 0xc7), // FCR: enable and clear FIFOs, 14-byte trigger
        ];
        for (offset, value) in registers {
            // SAFETY: COM1's registers; writing them only configures the UART.
            unsafe { Port::<u8>::new(COM1 + offset).write(value) };
        }
    }

    /// Sends `bytes`, waiting for FIFO room (and translating `\n` to `\r\n`).
    pub fn write(&mut self, bytes: &[u8]) {
        let mut room = 0;
        for &byte in bytes {
            if byte == b'\n' {
                self.put(b'\r', &mut room);
            }
            self.put(byte, &mut room);
        }
    }

    fn put(&mut self, byte: u8, room: &mut usize) {
        if *room == 0 {
            // SAFETY: reading LSR has no side effect beyond status.
            while unsafe { self.line_status.read() } & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            *room = FIFO_DEPTH;
        }
        // SAFETY: THR has room (checked above); writing it sends the byte.
        unsafe { self.data.write(byte) };
        *room -= 1;
    }
}
