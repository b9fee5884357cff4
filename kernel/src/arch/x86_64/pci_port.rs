//! PCI configuration access through I/O ports 0xCF8 (address) and 0xCFC
//! (data) (PCI Local Bus Specification 3.0, 3.2.2.3.2). The pair is shared
//! by every CPU: callers make sure only one CPU uses it (the boot CPU; see
//! `devices::pci`).

use x86_64::instructions::port::Port;

/// CONFIG_ADDRESS and CONFIG_DATA.
const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Reads the configuration dword `address` selects (enable bit set).
pub fn read(address: u32) -> u32 {
    // SAFETY: writing CONFIG_ADDRESS selects a register; reading
    // CONFIG_DATA reads it (all ones where no function answers).
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(address);
        Port::<u32>::new(CONFIG_DATA).read()
    }
}

/// Writes the configuration dword `address` selects.
pub fn write(address: u32, value: u32) {
    // SAFETY: as in `read`; the caller decided the write.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(address);
        Port::<u32>::new(CONFIG_DATA).write(value);
    }
}
