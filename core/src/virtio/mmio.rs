//! virtio-mmio devices named on the kernel command line: `virtio_mmio.device=SIZE@ADDR:IRQ[:ID]`.
//!
//! The syntax is Linux's (`drivers/virtio/virtio_mmio.c`, `vm_cmdline_set`):
//! `SIZE` is a number with an optional `K`, `M` or `G` suffix (`memparse`),
//! `ADDR` a number in C notation (`0x` hex, leading-`0` octal, else decimal),
//! `IRQ` a decimal interrupt number (for Toro: a GSI, an IOAPIC input,
//! taken as edge-triggered and active high), and
//! `ID` an optional platform-device id, which Toro reads and ignores.
//! Firecracker passes one such word per device (`4K@0xc0001000:5`); QEMU
//! microvm does too when ACPI is off. Nothing here assumes where the
//! devices are: the addresses are whatever the line says.

use core::fmt;

use super::{MmioDevice, MmioDevices};
use crate::command_line::CommandLine;

/// The command-line key, as Linux names it.
pub const KEY: &str = "virtio_mmio.device";

/// The smallest register block a virtio-mmio device can have: its
/// registers end at `ConfigGeneration` + 4 = 0x100 (virtio 1.2, section 4.2.2).
pub const MIN_REGISTER_BLOCK_BYTES: u64 = 0x100;

/// Why a `virtio_mmio.device=` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioParameterError {
    /// `SIZE` is missing, not a number, or its suffix is unknown.
    BadSize,
    /// `SIZE` is below [`MIN_REGISTER_BLOCK_BYTES`], or overflows.
    SizeOutOfRange,
    /// No `@` after the size.
    MissingAddress,
    /// `ADDR` is not a number.
    BadAddress,
    /// `ADDR + SIZE` runs past the end of the 64-bit address space, or `ADDR` is 0.
    AddressOutOfRange,
    /// No `:IRQ` after the address.
    MissingInterrupt,
    /// `IRQ` is not a decimal number that fits 32 bits.
    BadInterrupt,
    /// `ID` is present but not a number, or something follows it.
    TrailingCharacters,
}

impl fmt::Display for MmioParameterError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::BadSize => "the size is not a number with an optional K, M or G suffix",
            Self::SizeOutOfRange => "the size is below 256 bytes (a virtio-mmio register block) or too large",
            Self::MissingAddress => "no '@ADDRESS' after the size",
            Self::BadAddress => "the address is not a number",
            Self::AddressOutOfRange => "the address is 0 or the block runs past the end of the address space",
            Self::MissingInterrupt => "no ':IRQ' after the address",
            Self::BadInterrupt => "the interrupt is not a decimal number",
            Self::TrailingCharacters => "unexpected characters after the interrupt (expected ':ID' at most)",
        })
    }
}

/// Parses one value: `SIZE@ADDR:IRQ[:ID]`.
pub fn parse_device(value: &str) -> Result<MmioDevice, MmioParameterError> {
    let (size, rest) = value.split_once('@').ok_or(MmioParameterError::MissingAddress)?;
    let size = parse_size(size)?;
    if size < MIN_REGISTER_BLOCK_BYTES {
        return Err(MmioParameterError::SizeOutOfRange);
    }
    let (address, rest) = rest.split_once(':').ok_or(MmioParameterError::MissingInterrupt)?;
    let address = parse_c_number(address).ok_or(MmioParameterError::BadAddress)?;
    if address == 0 || address.checked_add(size).is_none() {
        return Err(MmioParameterError::AddressOutOfRange);
    }
    let (interrupt, id) = match rest.split_once(':') {
        Some((interrupt, id)) => (interrupt, Some(id)),
        None => (rest, None),
    };
    let gsi =
        parse_decimal(interrupt).and_then(|gsi| u32::try_from(gsi).ok()).ok_or(MmioParameterError::BadInterrupt)?;
    if let Some(id) = id {
        let id = id.strip_prefix('-').unwrap_or(id);
        parse_decimal(id).ok_or(MmioParameterError::TrailingCharacters)?;
    }
    // No trigger mode on the command line: an edge-triggered, active-high
    // line, as Firecracker signals it (and as Linux takes GSIs below 16).
    Ok(MmioDevice { address, size, gsi, level: false, active_low: false })
}

/// Adds every `virtio_mmio.device=` device on `line` to `devices`;
/// `refused(value, error)` is called for each value that does not parse
/// (the kernel logs it and goes on without that device).
pub fn devices_from_command_line(
    line: &CommandLine<'_>,
    devices: &mut MmioDevices,
    mut refused: impl FnMut(&str, MmioParameterError),
) {
    for argument in line.arguments().filter(|argument| argument.key == KEY) {
        let value = argument.value.unwrap_or("");
        match parse_device(value) {
            Ok(device) => {
                devices.push(device);
            }
            Err(error) => refused(value, error),
        }
    }
}

/// `memparse`: a C number with an optional `K`, `M` or `G` (binary) suffix.
fn parse_size(text: &str) -> Result<u64, MmioParameterError> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'k' | b'K') => (&text[..text.len() - 1], 10),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 20),
        Some(b'g' | b'G') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let number = parse_c_number(digits).ok_or(MmioParameterError::BadSize)?;
    number.checked_mul(1 << shift).ok_or(MmioParameterError::SizeOutOfRange)
}

/// A number as C's `%lli` reads it: `0x` hex, leading-`0` octal, else decimal.
fn parse_c_number(text: &str) -> Option<u64> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        parse_radix(hex, 16)
    } else if text.len() > 1 && text.starts_with('0') {
        parse_radix(&text[1..], 8)
    } else {
        parse_decimal(text)
    }
}

fn parse_decimal(text: &str) -> Option<u64> {
    parse_radix(text, 10)
}

/// Digits only (no sign, no `+`, no empty string), without overflow.
fn parse_radix(text: &str, radix: u32) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.chars().try_fold(0u64, |value, character| {
        let digit = character.to_digit(radix)?;
        value.checked_mul(u64::from(radix))?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(address: u64, size: u64, gsi: u32) -> MmioDevice {
        MmioDevice { address, size, gsi, level: false, active_low: false }
    }

    #[test]
    fn firecracker_and_qemu_words_parse() {
        // What Firecracker 1.16 appends (addresses from 0xc0001000, GSIs from 5).
        assert_eq!(parse_device("4K@0xc0001000:5"), Ok(device(0xc000_1000, 4096, 5)));
        assert_eq!(parse_device("4K@0xc0002000:6"), Ok(device(0xc000_2000, 4096, 6)));
        // QEMU microvm with acpi=off.
        assert_eq!(parse_device("512@0xfeb00e00:12"), Ok(device(0xfeb0_0e00, 512, 12)));
        // Linux's optional platform id, decimal sizes, octal addresses, big sizes.
        assert_eq!(parse_device("0x200@0xd0000000:7:3"), Ok(device(0xd000_0000, 512, 7)));
        assert_eq!(parse_device("1M@4096:1:-1"), Ok(device(4096, 1 << 20, 1)));
        assert_eq!(parse_device("1k@010000:0"), Ok(device(0o10000, 1024, 0)));
        assert_eq!(parse_device("1G@0x100000000:40"), Ok(device(1 << 32, 1 << 30, 40)));
    }

    #[test]
    fn garbled_words_give_errors() {
        use MmioParameterError::*;
        for (value, error) in [
            ("", MissingAddress),
            ("4K", MissingAddress),
            ("@0x1000:5", BadSize),
            ("4X@0x1000:5", BadSize),
            ("4KK@0x1000:5", BadSize),
            ("-4K@0x1000:5", BadSize),
            ("16@0x1000:5", SizeOutOfRange),
            ("99999999999G@0x1000:5", SizeOutOfRange),
            ("4K@0x1000", MissingInterrupt),
            ("4K@:5", BadAddress),
            ("4K@0xg000:5", BadAddress),
            ("4K@0x:5", BadAddress),
            ("4K@09:5", BadAddress),
            ("4K@0:5", AddressOutOfRange),
            ("4K@0xfffffffffffff800:5", AddressOutOfRange),
            ("4K@0x1000:", BadInterrupt),
            ("4K@0x1000:0x5", BadInterrupt),
            ("4K@0x1000:4294967296", BadInterrupt),
            ("4K@0x1000:5:", TrailingCharacters),
            ("4K@0x1000:5:1:2", TrailingCharacters),
            ("4K@0x1000:5 x", BadInterrupt),
            ("4K@0x1000:99999999999999999999", BadInterrupt),
        ] {
            assert_eq!(parse_device(value), Err(error), "{value:?}");
            // Each error has words to show.
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn every_word_on_the_line_is_read_and_bad_ones_reported() {
        let line = CommandLine::new(
            "console=ttyS0 virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=nonsense \
             virtio_mmio.device=4K@0xc0002000:6 virtio_mmio.device=4K@0xc0001000:5 pci=off \
             virtio_mmio.device -- virtio_mmio.device=4K@0xc0009000:9",
        );
        let mut devices = MmioDevices::new();
        let mut refused = Vec::new();
        devices_from_command_line(&line, &mut devices, |value, error| refused.push((value.to_string(), error)));
        assert_eq!(devices.as_slice(), [device(0xc000_1000, 4096, 5), device(0xc000_2000, 4096, 6)]);
        assert_eq!(
            refused,
            [
                ("nonsense".to_string(), MmioParameterError::MissingAddress),
                (String::new(), MmioParameterError::MissingAddress)
            ]
        );
    }

    #[test]
    fn the_list_keeps_its_capacity() {
        let mut devices = MmioDevices::new();
        for index in 0..(crate::virtio::MAX_MMIO_DEVICES as u64 + 3) {
            devices.push(device(0x1000 * (index + 1), 0x1000, 5));
        }
        assert_eq!(devices.as_slice().len(), crate::virtio::MAX_MMIO_DEVICES);
        assert_eq!(devices.dropped, 3);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_errs_without_panic(value in ".{0,40}") {
            let _ = parse_device(&value);
        }

        #[test]
        fn written_devices_read_back(address in 1u64..(1 << 48), pages in 1u64..64, gsi in 0u32..256) {
            let text = format!("{}K@{:#x}:{}", pages * 4, address, gsi);
            proptest::prop_assert_eq!(parse_device(&text), Ok(device(address, pages * 4096, gsi)));
        }
    }
}
