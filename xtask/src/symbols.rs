//! Function names for addresses in fault reports, from the image's symbol
//! table: the kernel prints raw addresses (its symbols are not loaded into
//! the VM), and the host tool appends `<function+offset>` as lines arrive.

use std::path::Path;

use anyhow::{Context, Result};
use object::{Object, ObjectSymbol, SymbolKind};

pub struct Symbols {
    /// (start, size, demangled name), sorted by start.
    functions: Vec<(u64, u64, String)>,
}

impl Symbols {
    /// Reads the function symbols of an ELF image.
    pub fn load(image: &Path) -> Result<Self> {
        let data = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
        let file = object::File::parse(&*data).context("parsing the image as ELF")?;
        let mut functions: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| {
                matches!(s.kind(), SymbolKind::Text | SymbolKind::Label | SymbolKind::Unknown) && s.address() != 0
            })
            .filter(|s| s.section_index().is_some())
            .filter_map(|s| {
                let name = s.name().ok()?;
                Some((s.address(), s.size(), format!("{:#}", rustc_demangle::demangle(name))))
            })
            .collect();
        functions.sort_by_key(|f| f.0);
        Ok(Self { functions })
    }

    /// `name+0xoffset` for an address inside a known function.
    pub fn lookup(&self, address: u64) -> Option<String> {
        self.lookup_parts(address).map(|(name, offset)| format!("{name}+{offset:#x}"))
    }

    /// The function holding `address` and the offset into it.
    fn lookup_parts(&self, address: u64) -> Option<(&str, u64)> {
        let index = self.functions.partition_point(|f| f.0 <= address).checked_sub(1)?;
        let (start, size, name) = &self.functions[index];
        let offset = address - start;
        // Symbols of size 0 (assembly labels) cover up to the next symbol.
        let inside =
            if *size > 0 { offset < *size } else { self.functions.get(index + 1).is_none_or(|next| address < next.0) };
        inside.then_some((name.as_str(), offset))
    }

    /// Appends `<function+offset>` to lines that carry code addresses: the
    /// `rip` line and backtrace lines (`#N 0x...`) of fault reports.
    pub fn annotate(&self, line: &str) -> String {
        let trimmed = line.trim_start();
        let is_code_line = trimmed.starts_with('#') || trimmed.starts_with("rip ");
        if !is_code_line {
            return line.to_string();
        }
        let address = trimmed
            .split_whitespace()
            .find_map(|word| word.strip_prefix("0x").and_then(|hex| u64::from_str_radix(hex, 16).ok()));
        // Return addresses (frames after #0) point after their call, which
        // may be the last instruction of a function: look up the byte before.
        let is_return_address = trimmed.starts_with('#') && !trimmed.starts_with("#0 ");
        let found = address.and_then(|a| {
            if is_return_address {
                let (name, offset) = self.lookup_parts(a.checked_sub(1)?)?;
                Some(format!("{name}+{:#x}", offset + 1))
            } else {
                self.lookup(a)
            }
        });
        match found {
            Some(name) => format!("{line}  <{name}>"),
            None => line.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Symbols {
        Symbols {
            functions: vec![
                (0x1000, 0x20, "toro::boot::entry".into()),
                (0x1040, 0, "interrupt_stubs".into()),
                (0x2000, 0x10, "hello::main".into()),
            ],
        }
    }

    #[test]
    fn looks_up_inside_sized_and_unsized_symbols() {
        let symbols = table();
        assert_eq!(symbols.lookup(0x1004).as_deref(), Some("toro::boot::entry+0x4"));
        assert_eq!(symbols.lookup(0x1030), None);
        assert_eq!(symbols.lookup(0x1100).as_deref(), Some("interrupt_stubs+0xc0"));
        assert_eq!(symbols.lookup(0x10), None);
    }

    #[test]
    fn annotates_only_code_lines() {
        let symbols = table();
        assert_eq!(symbols.annotate("    #1  0x0000000000002004"), "    #1  0x0000000000002004  <hello::main+0x4>");
        assert!(symbols.annotate("    rip 0x0000000000001000 rsp 0x5").ends_with("<toro::boot::entry+0x0>"));
        assert_eq!(symbols.annotate("rax 0x0000000000002004"), "rax 0x0000000000002004");
    }
}
