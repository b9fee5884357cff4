//! Device discovery: PCI enumeration (ECAM from the MCFG on q35, port I/O
//! without one), BARs sized and mapped, capabilities (MSI-X, virtio vendor
//! structures), owners from `toro.dedicate` or spread, and the list's
//! queries. Run with `-device virtio-rng-pci` on q35.

#![no_std]
#![no_main]

use toro::devices::pci::{self, CAPABILITY_MSIX, CAPABILITY_VENDOR};
use toro::devices::{self, Transport};
use toro::{cpu, println, system};

fn check(condition: bool, what: &str) -> bool {
    if !condition {
        println!("FAILED: {what}");
    }
    condition
}

#[toro::main]
fn main() -> i32 {
    let mut ok = true;
    let expect_rng = system::argument("test.rng").is_some();
    let want_owner = system::argument("test.rng-owner").and_then(|v| v.parse::<usize>().ok());
    println!("devices: {} PCI functions, ECAM {}", pci::devices().len(), pci::has_ecam());
    for device in devices::list() {
        ok &= check(device.owner < cpu::count(), "every owner is a running CPU");
    }
    let rng = pci::devices().iter().find(|d| d.vendor() == 0x1af4 && matches!(d.device(), 0x1005 | 0x1044));
    if expect_rng {
        let Some(rng) = rng else {
            println!("FAILED: virtio-rng-pci not found");
            return 1;
        };
        println!("devices: virtio-rng-pci at {} ({:04x}:{:04x})", rng.address(), rng.vendor(), rng.device());
        let vendor_caps = rng.capabilities_with(CAPABILITY_VENDOR).count();
        ok &= check(vendor_caps >= 4, "virtio-pci vendor capabilities (common, notify, isr, device)");
        ok &= check(rng.capabilities_with(CAPABILITY_MSIX).count() == 1, "an MSI-X capability");
        let table = rng.msix_table();
        ok &= check(table.is_ok_and(|t| t.entries >= 1), "an MSI-X table");
        // The virtio structures live in a memory BAR: map it and read the
        // common configuration's num_queues (virtio 1.2, 4.1.4.3).
        let common = rng.capabilities_with(CAPABILITY_VENDOR).find(|c| rng.read8(c.offset + 3) == 1);
        match common {
            Some(capability) => {
                let bar = rng.read8(capability.offset + 4);
                let offset = rng.read32(capability.offset + 8);
                match rng.map_bar(bar) {
                    Ok(memory) => {
                        let queues: u16 = memory.read(u64::from(offset) + 0x12);
                        println!(
                            "devices: BAR {bar} at {:#x}+{:#x}, num_queues {queues}",
                            memory.address(),
                            memory.size()
                        );
                        ok &= check(queues == 1, "virtio-rng has one queue");
                    }
                    Err(error) => ok &= check(false, &toro::alloc::format!("map BAR {bar}: {error}")),
                }
            }
            None => ok &= check(false, "a virtio common configuration capability"),
        }
        let owner = devices::owner(Transport::Pci(rng.address()));
        ok &= check(owner.is_some(), "the device has an owner");
        if let Some(want) = want_owner {
            ok &= check(owner == Some(want), "toro.dedicate chose the owner");
        }
        println!("devices: rng owned by cpu {}", owner.unwrap_or(usize::MAX));
        ok &= check(devices::of_kind("rng").count() == 1, "one device of kind rng");
    } else {
        ok &= check(rng.is_none(), "no virtio-rng-pci without one");
    }
    if ok {
        println!("devices: all checks passed");
        0
    } else {
        1
    }
}
