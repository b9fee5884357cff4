//! Finding virtio devices: virtio-mmio ones from the ACPI DSDT and the command line, virtio-pci ones from the PCI enumeration; probed and listed at boot.
//!
//! At boot, while the firmware's tables are reachable, [`read_firmware`]
//! reads the DSDT's `LNRO0005` devices (QEMU microvm, Firecracker) and the
//! `virtio_mmio.device=` words (Firecracker, microvm with `acpi=off`).
//! Then [`probe`] checks each one (magic value, version 2, device type),
//! and each virtio-pci function the PCI enumeration found (vendor
//! capabilities against its BARs, MSI-X; `crate::devices::discover` has
//! listed it and given it its owner already), adds the mmio ones to the device list (`crate::devices`, which gives it an owner
//! CPU: `toro.dedicate=...`, else spread over the CPUs) and logs it at
//! `info`; [`start`] starts the drivers Toro has (virtio-rng here).
//! [`devices`] lists what was found, for drivers built elsewhere (net, blk).

use alloc::vec::Vec;

use toro_core::acpi::Rsdp;
use toro_core::command_line::CommandLine;
use toro_core::virtio::{dsdt, mmio, MmioDevices};
use toro_core::PhysicalMemory;

use super::{device_type, InterruptLine, Transport, VirtioError};
use crate::once::BootCell;

/// The largest DSDT read (microvm's is about 500 bytes, q35's about 8 KiB).
const DSDT_BUFFER_BYTES: usize = 32 * 1024;

/// The virtio-mmio devices the firmware and the command line name.
static FIRMWARE_DEVICES: BootCell<MmioDevices> = BootCell::new();
/// What [`probe`] found.
static FOUND: BootCell<Vec<FoundDevice>> = BootCell::new();

/// A virtio device found at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundDevice {
    /// The device type (`virtio::device_type`).
    pub device_type: u32,
    /// Its register block (virtio-mmio), or its common configuration structure (virtio-pci).
    pub address: u64,
    /// Bytes of registers (virtio-mmio; 0 on PCI).
    pub size: u64,
    /// The PCI function (virtio-pci), else `None`.
    pub pci: Option<toro_core::pci::PciAddress>,
    /// Its interrupt.
    pub interrupt: InterruptLine,
    /// The CPU that owns it: its driver's service runs there.
    pub owner: usize,
}

impl FoundDevice {
    /// Opens the device's transport (call on the owner CPU, in the driver's service `init`).
    pub fn open(&self) -> Result<Transport, VirtioError> {
        match self.pci {
            Some(address) => Transport::pci(crate::devices::pci::device(address).ok_or(VirtioError::NoDevice)?),
            None => Transport::mmio(self.address, self.size, self.interrupt),
        }
    }
}

/// Reads the DSDT (at boot, while `memory` reaches the firmware's tables)
/// and the command line; bad entries are logged and left out.
pub(crate) fn read_firmware(memory: &impl PhysicalMemory, rsdp: Option<&Rsdp>, command_line: &str) {
    let mut devices = MmioDevices::new();
    if let Some(rsdp) = rsdp {
        read_dsdt(memory, rsdp, &mut devices);
    }
    mmio::devices_from_command_line(&CommandLine::new(command_line), &mut devices, |value, error| {
        log::warn!("virtio: {}={value:?} left out: {error}", mmio::KEY);
    });
    if devices.dropped > 0 {
        log::warn!(
            "virtio: {} virtio-mmio devices beyond the first {} left out",
            devices.dropped,
            devices.as_slice().len()
        );
    }
    FIRMWARE_DEVICES.set(devices);
}

fn read_dsdt(memory: &impl PhysicalMemory, rsdp: &Rsdp, devices: &mut MmioDevices) {
    let (address, length) = match dsdt::find_dsdt(memory, rsdp) {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(error) => {
            log::warn!("virtio: {error}; no virtio-mmio devices from ACPI");
            return;
        }
    };
    let mut buffer = [0u8; DSDT_BUFFER_BYTES];
    let Some(table) = buffer.get_mut(..length as usize) else {
        log::warn!("virtio: DSDT of {length} bytes is larger than {DSDT_BUFFER_BYTES}; not read");
        return;
    };
    if let Err(error) = memory.read(address, table) {
        log::warn!("virtio: DSDT: {error}");
        return;
    }
    match dsdt::virtio_mmio_devices(table, devices, |problem| log::warn!("virtio: {problem}")) {
        Ok(report) => {
            log::debug!("virtio: DSDT: {} devices, {} virtio-mmio", report.devices_seen, report.virtio_devices)
        }
        Err(error) => log::warn!("virtio: {error}; no virtio-mmio devices from ACPI"),
    }
}

/// Probes the virtio-mmio devices named at boot and adds them to the
/// device list (`crate::devices`), which gives each its owner CPU
/// (`toro.dedicate=...`, else spread over the CPUs). Boot CPU, before the
/// device list is closed.
pub(crate) fn probe() {
    let mut found = Vec::new();
    for device in FIRMWARE_DEVICES.get().map(MmioDevices::as_slice).unwrap_or(&[]) {
        let interrupt = InterruptLine::Gsi { gsi: device.gsi, level: device.level, active_low: device.active_low };
        match Transport::mmio(device.address, device.size, interrupt) {
            Ok(transport) => {
                let device_type = transport.device_type();
                let kind = device_type::name(device_type);
                let owner = crate::devices::add(
                    crate::devices::Transport::Mmio { address: device.address, size: device.size },
                    kind,
                    crate::devices::InterruptLine::Gsi(device.gsi),
                )
                .unwrap_or(0);
                log::info!(
                    "virtio: mmio {:#x} ({} bytes) GSI {} {}: {kind} (type {device_type}), owner cpu {owner}",
                    device.address,
                    device.size,
                    device.gsi,
                    if device.level { "level" } else { "edge" },
                );
                found.push(FoundDevice {
                    device_type,
                    address: device.address,
                    size: device.size,
                    pci: None,
                    interrupt,
                    owner,
                });
            }
            Err(VirtioError::NoDevice) => {}
            Err(error) => log::warn!("virtio: mmio {:#x} left out: {error}", device.address),
        }
    }
    probe_pci(&mut found);
    FOUND.set(found);
}

/// The vendor ID of virtio-pci functions.
const VIRTIO_PCI_VENDOR: u16 = 0x1af4;

/// Checks the virtio-pci functions (structures, MSI-X) and lists the usable ones.
fn probe_pci(found: &mut Vec<FoundDevice>) {
    for device in crate::devices::pci::devices() {
        if device.vendor() != VIRTIO_PCI_VENDOR || toro_core::virtio::pci::device_type(device.device()).is_none() {
            continue;
        }
        let address = device.address();
        match Transport::pci(device) {
            Ok(transport) => {
                let device_type = transport.device_type();
                let interrupt = transport.interrupt();
                let owner = crate::devices::owner(crate::devices::Transport::Pci(address)).unwrap_or(0);
                let line = match interrupt {
                    InterruptLine::Msix { entries } => alloc::format!("MSI-X x{entries}"),
                    InterruptLine::Gsi { gsi, level, active_low } => {
                        // INTx lines are shared; one service per line here.
                        if let Some(other) = found.iter().find(|f| f.pci.is_some() && f.interrupt == interrupt) {
                            log::warn!(
                                "virtio: pci {address} left out: its INTx shares GSI {gsi} with pci {}, and a line is not shared between services",
                                other.pci.unwrap_or_default()
                            );
                            continue;
                        }
                        let pin = device.function.interrupt_pin;
                        alloc::format!(
                            "INT{} GSI {gsi} {} {}",
                            (b'A' + pin.saturating_sub(1)) as char,
                            if level { "level" } else { "edge" },
                            if active_low { "low" } else { "high" },
                        )
                    }
                };
                log::info!(
                    "virtio: pci {address} common cfg {:#x} {line}: {} (type {device_type}), owner cpu {owner}",
                    transport.address(),
                    device_type::name(device_type),
                );
                found.push(FoundDevice {
                    device_type,
                    address: transport.address(),
                    size: 0,
                    pci: Some(address),
                    interrupt,
                    owner,
                });
            }
            Err(error) => log::warn!("virtio: pci {address} left out: {error}"),
        }
    }
}

/// Starts the drivers Toro has for the devices found (rng, blk, fs), each
/// on its device's owner CPU. Boot CPU, before the application.
pub(crate) fn start() {
    super::rng::start_default();
    super::blk::start_all();
    super::fs::start_all();
}

/// The virtio devices (mmio and pci) found at boot (empty before [`probe`]).
pub fn devices() -> &'static [FoundDevice] {
    FOUND.get().map(Vec::as_slice).unwrap_or(&[])
}
