//! `toro.dedicate=...`: which CPU owns which device.
//!
//! The value is a comma-separated list of `SELECTOR@CPU` entries:
//!
//! - `00:03.0@2` or `0000:00:03.0@2`: the PCI function at that address;
//! - `mmio:0xd0000000@1`: the virtio-mmio device at that base address;
//! - `net@1`, `blk@3`, `rng@0`: every device of that kind, in discovery
//!   order; `net#1@2`: the second device of that kind (counting from 0).
//!
//! The first entry that matches a device decides its owner. Devices no
//! entry names are spread over the CPUs. Malformed entries are reported
//! (each once, with what is wrong) and ignored; the rest still apply.

use crate::pci::PciAddress;

/// Entries accepted in one `toro.dedicate` value.
pub const MAX_ENTRIES: usize = 32;

/// Which devices an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// A PCI function.
    Pci(PciAddress),
    /// A virtio-mmio device by base address.
    Mmio(u64),
    /// Devices of a kind (`net`, `blk`, ...), all or the `index`-th one.
    Kind {
        /// The kind (`net`, `blk`, ...).
        kind: &'a str,
        /// Which one (counting from 0), or all.
        index: Option<usize>,
    },
}

/// One `SELECTOR@CPU` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Which devices.
    pub selector: Selector<'a>,
    /// Their owner CPU.
    pub cpu: usize,
}

/// What is wrong with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedicateError<'a> {
    /// No `@CPU` part.
    MissingCpu(&'a str),
    /// The CPU is not a decimal number.
    BadCpu(&'a str),
    /// The selector is neither a PCI address, `mmio:ADDRESS`, nor a kind.
    BadSelector(&'a str),
}

impl core::fmt::Display for DedicateError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::MissingCpu(entry) => write!(f, "toro.dedicate entry {entry:?} has no @CPU"),
            Self::BadCpu(entry) => write!(f, "toro.dedicate entry {entry:?}: the CPU is not a number"),
            Self::BadSelector(entry) => write!(
                f,
                "toro.dedicate entry {entry:?}: expected a PCI address (00:03.0), mmio:0xADDRESS or a device kind (net, blk#1)"
            ),
        }
    }
}

/// Parses one entry.
pub fn parse_entry(text: &str) -> Result<Entry<'_>, DedicateError<'_>> {
    let (selector, cpu) = text.rsplit_once('@').ok_or(DedicateError::MissingCpu(text))?;
    let cpu = cpu.parse::<usize>().map_err(|_| DedicateError::BadCpu(text))?;
    let selector = if let Some(address) = selector.strip_prefix("mmio:") {
        let digits = address.strip_prefix("0x").or_else(|| address.strip_prefix("0X"));
        let value = match digits {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => address.parse::<u64>().ok(),
        };
        Selector::Mmio(value.ok_or(DedicateError::BadSelector(text))?)
    } else if let Some(address) = PciAddress::parse(selector) {
        Selector::Pci(address)
    } else {
        let (kind, index) = match selector.split_once('#') {
            Some((kind, index)) => (kind, Some(index.parse::<usize>().map_err(|_| DedicateError::BadSelector(text))?)),
            None => (selector, None),
        };
        let word = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !word {
            return Err(DedicateError::BadSelector(text));
        }
        Selector::Kind { kind, index }
    };
    Ok(Entry { selector, cpu })
}

/// The entries of a `toro.dedicate` value, each parsed (empty items are
/// skipped), at most [`MAX_ENTRIES`].
pub fn entries(value: &str) -> impl Iterator<Item = Result<Entry<'_>, DedicateError<'_>>> {
    value.split(',').filter(|item| !item.is_empty()).take(MAX_ENTRIES).map(parse_entry)
}

/// A device, as the owner choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey<'a> {
    /// Its PCI address, for a PCI function.
    pub pci: Option<PciAddress>,
    /// Its register base, for a virtio-mmio device.
    pub mmio: Option<u64>,
    /// Its kind (`net`, `blk`, `host-bridge`, ...).
    pub kind: &'a str,
    /// How many devices of this kind were found before it.
    pub kind_index: usize,
}

impl Selector<'_> {
    /// Whether this selector names `device`.
    pub fn matches(&self, device: &DeviceKey) -> bool {
        match *self {
            Selector::Pci(address) => device.pci == Some(address),
            Selector::Mmio(address) => device.mmio == Some(address),
            Selector::Kind { kind, index } => kind == device.kind && index.is_none_or(|i| i == device.kind_index),
        }
    }
}

/// The owner `value` gives `device`, if an entry names it with a CPU below
/// `cpus`. Entries naming CPUs that do not run are skipped.
pub fn owner(value: &str, device: &DeviceKey, cpus: usize) -> Option<usize> {
    entries(value).flatten().find(|entry| entry.cpu < cpus && entry.selector.matches(device)).map(|entry| entry.cpu)
}

/// The owner of the `ordinal`-th device found when no entry names it:
/// spread over the CPUs, starting after the boot CPU (which runs `main`).
pub fn spread(ordinal: usize, cpus: usize) -> usize {
    if cpus <= 1 {
        0
    } else {
        (1 + ordinal) % cpus
    }
}

/// The owner of `device` when no entry names it; `driven_before` counts
/// the devices Toro drives that were found before it. Network cards are
/// spread by their own count (card K on CPU (1 + K) mod CPUs, whatever
/// else was found), so N cards on N CPUs land on N different CPUs, each
/// with its own TCP/IP instance; other devices by `driven_before`.
pub fn default_owner(device: &DeviceKey, driven_before: usize, cpus: usize) -> usize {
    if device.kind == "net" {
        spread(device.kind_index, cpus)
    } else {
        spread(driven_before, cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pci: Option<PciAddress>, mmio: Option<u64>, kind: &str, kind_index: usize) -> DeviceKey<'_> {
        DeviceKey { pci, mmio, kind, kind_index }
    }

    #[test]
    fn entries_of_every_form() {
        let parsed: Vec<_> = entries("00:03.0@2,mmio:0xd0000000@1,net@3,blk#1@0,,0001:02:1f.7@4").collect();
        assert_eq!(
            parsed,
            vec![
                Ok(Entry { selector: Selector::Pci(PciAddress::new(0, 3, 0)), cpu: 2 }),
                Ok(Entry { selector: Selector::Mmio(0xd000_0000), cpu: 1 }),
                Ok(Entry { selector: Selector::Kind { kind: "net", index: None }, cpu: 3 }),
                Ok(Entry { selector: Selector::Kind { kind: "blk", index: Some(1) }, cpu: 0 }),
                Ok(Entry {
                    selector: Selector::Pci(PciAddress { segment: 1, bus: 2, device: 0x1f, function: 7 }),
                    cpu: 4
                }),
            ]
        );
    }

    #[test]
    fn malformed_entries_are_errors_and_the_rest_apply() {
        let value = "net,net@x,NET@1,mmio:zz@1,blk#a@1,@2,rng@1";
        let errors: Vec<_> = entries(value).filter_map(Result::err).collect();
        assert_eq!(
            errors,
            vec![
                DedicateError::MissingCpu("net"),
                DedicateError::BadCpu("net@x"),
                DedicateError::BadSelector("NET@1"),
                DedicateError::BadSelector("mmio:zz@1"),
                DedicateError::BadSelector("blk#a@1"),
                DedicateError::BadSelector("@2"),
            ]
        );
        assert_eq!(owner(value, &key(None, None, "rng", 0), 4), Some(1));
        assert!(errors[0].to_string().contains("no @CPU"));
    }

    #[test]
    fn owners_first_match_wins_and_absent_cpus_are_skipped() {
        let value = "net#1@3,net@2,00:04.0@9,00:04.0@1,mmio:3489660928@0";
        let pci = PciAddress::new(0, 4, 0);
        assert_eq!(owner(value, &key(None, None, "net", 0), 4), Some(2));
        assert_eq!(owner(value, &key(None, None, "net", 1), 4), Some(3));
        // With 2 CPUs both "net" entries name CPUs that do not run.
        assert_eq!(owner(value, &key(None, None, "net", 1), 2), None);
        assert_eq!(owner(value, &key(Some(pci), None, "blk", 0), 4), Some(1));
        assert_eq!(owner(value, &key(None, Some(0xd000_0000), "rng", 0), 4), Some(0));
        assert_eq!(owner(value, &key(None, None, "console", 0), 4), None);
        assert_eq!(owner("", &key(None, None, "net", 0), 4), None);
    }

    #[test]
    fn spreading_skips_the_boot_cpu_first() {
        assert_eq!((0..5).map(|i| spread(i, 4)).collect::<Vec<_>>(), vec![1, 2, 3, 0, 1]);
        assert_eq!(spread(3, 1), 0);
        assert_eq!(spread(0, 0), 0);
    }

    #[test]
    fn network_cards_land_on_different_cpus() {
        // microvm with a virtio-rng before two cards, 2 CPUs: the cards
        // are spread by their own count, not the devices before them.
        let owners: Vec<usize> =
            (0..2).map(|card| default_owner(&key(None, Some(0xfeb0_0000), "net", card), 1 + card, 2)).collect();
        assert_eq!(owners, [1, 0]);
        let owners: Vec<usize> = (0..4).map(|card| default_owner(&key(None, None, "net", card), 3, 4)).collect();
        assert_eq!(owners, [1, 2, 3, 0]);
        assert_eq!(default_owner(&key(None, None, "net", 5), 0, 1), 0);
        // Other kinds keep the order they were found in.
        assert_eq!(default_owner(&key(None, None, "blk", 0), 2, 4), 3);
    }

    #[test]
    fn random_values_never_panic() {
        let alphabet = b"0123456789abcdef:.@#,mx-";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5_000 {
            let mut value = String::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                value.push(alphabet[(state % alphabet.len() as u64) as usize] as char);
            }
            let _ = owner(&value, &key(Some(PciAddress::new(0, 3, 0)), Some(0), "net", 0), 4);
        }
    }
}
