//! Host tests of the DSDT reader: tables recorded from QEMU microvm, built ones (Firecracker's layout), garbled ones.
//!
//! The fixtures in `fixtures/` are whole DSDTs as the VMM built them:
//!
//! - `qemu-microvm-rng-net-blk.aml`: QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18),
//!   `-machine microvm,pit=on,pic=off,rtc=off -device virtio-rng-device
//!   -device virtio-net-device -device virtio-blk-device`, booting
//!   `examples/idle`; dumped with the monitor's `pmemsave` of guest RAM and
//!   cut out by following RSDP, XSDT, FACP, DSDT.
//! - `qemu-microvm-rng.aml`: the same with only `-device virtio-rng-device`.

use super::*;

const MICROVM_THREE: &[u8] = include_bytes!("fixtures/qemu-microvm-rng-net-blk.aml");
const MICROVM_RNG: &[u8] = include_bytes!("fixtures/qemu-microvm-rng.aml");
/// Firecracker v1.16.1's DSDT (see `core/tests/fixtures/acpi/README.md`): it
/// lists no virtio device (Firecracker names them on the command line).
const FIRECRACKER: &[u8] = include_bytes!("../../../tests/fixtures/acpi/firecracker-dsdt.bin");

fn read(table: &[u8]) -> (Result<DsdtReport, DsdtError>, Vec<MmioDevice>, Vec<DsdtError>) {
    let mut devices = MmioDevices::new();
    let mut problems = Vec::new();
    let result = virtio_mmio_devices(table, &mut devices, |problem| problems.push(problem));
    (result, devices.as_slice().to_vec(), problems)
}

/// An edge-triggered, active-high device (Firecracker's).
fn device(address: u64, size: u64, gsi: u32) -> MmioDevice {
    MmioDevice { address, size, gsi, level: false, active_low: false }
}

/// A level-triggered, active-high device (QEMU microvm's).
fn level_device(address: u64, size: u64, gsi: u32) -> MmioDevice {
    MmioDevice { level: true, ..device(address, size, gsi) }
}

/// Sets the checksum byte so the table adds up to zero.
fn fix_checksum(table: &mut [u8]) {
    table[9] = 0;
    let sum = table.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
    table[9] = sum.wrapping_neg();
}

#[test]
fn qemu_microvm_lists_its_three_devices() {
    let (result, devices, problems) = read(MICROVM_THREE);
    // microvm puts virtio-mmio slot n at 0xfeb00000 + n * 0x200, on GSI 24 + n
    // (its second IOAPIC), level-triggered; devices fill the slots from the top (23, 22, 21).
    assert_eq!(
        devices,
        [
            level_device(0xfeb0_2e00, 0x200, 47),
            level_device(0xfeb0_2c00, 0x200, 46),
            level_device(0xfeb0_2a00, 0x200, 45)
        ]
    );
    // The GED device's OperationRegion, Field and Method are stepped over:
    // no problem reported, the devices after it found.
    assert_eq!(problems, []);
    let report = result.unwrap();
    assert_eq!(report.virtio_devices, 3);
    // COM1, the firmware configuration device, GED, its power button, three virtio-mmio.
    assert_eq!(report.devices_seen, 7);
}

#[test]
fn qemu_microvm_with_one_device() {
    let (result, devices, problems) = read(MICROVM_RNG);
    assert_eq!(devices, [level_device(0xfeb0_2e00, 0x200, 47)]);
    assert_eq!(problems, []);
    assert_eq!(result.unwrap().virtio_devices, 1);
}

#[test]
fn recorded_firecracker_dsdt_lists_no_virtio_device() {
    let (result, devices, problems) = read(FIRECRACKER);
    assert_eq!(devices, []);
    assert_eq!(problems, []);
    let report = result.unwrap();
    assert_eq!(report.virtio_devices, 0);
    // Its devices are read (none is virtio-mmio).
    assert_eq!(report.devices_seen, 5);
}

#[test]
fn bad_headers_are_refused() {
    assert_eq!(read(&MICROVM_RNG[..20]).0, Err(DsdtError::Truncated { bytes: 20 }));
    assert_eq!(read(&MICROVM_RNG[..100]).0, Err(DsdtError::Truncated { bytes: 100 }));
    let mut table = MICROVM_RNG.to_vec();
    table[0] = b'X';
    assert_eq!(read(&table).0, Err(DsdtError::Signature(*b"XSDT")));
    let mut table = MICROVM_RNG.to_vec();
    table[40] ^= 1;
    assert_eq!(read(&table).0, Err(DsdtError::Checksum));
    let mut table = MICROVM_RNG.to_vec();
    table[4..8].copy_from_slice(&10u32.to_le_bytes());
    assert!(matches!(read(&table).0, Err(DsdtError::Truncated { .. })));
}

#[test]
fn every_truncated_body_and_every_flipped_byte_is_survived() {
    for fixture in [MICROVM_THREE, MICROVM_RNG] {
        // Cut the table short at every length (header length fixed up).
        for length in 36..fixture.len() {
            let mut table = fixture[..length].to_vec();
            table[4..8].copy_from_slice(&(length as u32).to_le_bytes());
            fix_checksum(&mut table);
            let (result, devices, _) = read(&table);
            assert!(result.is_ok());
            // Whatever is found was in the whole table.
            let (_, all, _) = read(fixture);
            assert!(devices.iter().all(|found| all.contains(found)), "length {length}: {devices:?}");
        }
        // Every byte after the header set to a few values.
        for offset in 36..fixture.len() {
            for value in [0x00, 0x01, 0x0d, 0x11, 0x5b, 0x7f, 0x80, 0xc0, 0xff] {
                let mut table = fixture.to_vec();
                table[offset] = value;
                fix_checksum(&mut table);
                let _ = read(&table);
            }
        }
    }
}

// A few AML builders for the cases the VMMs do not produce.

fn package(contents: &[u8]) -> Vec<u8> {
    // Two-byte PkgLength (covers up to 4095 bytes), counting itself.
    let length = contents.len() + 2;
    assert!(length < 4096);
    let mut bytes = vec![0x40 | (length & 0x0F) as u8, (length >> 4) as u8];
    bytes.extend_from_slice(contents);
    bytes
}

fn device_object(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut contents = name.to_vec();
    contents.extend_from_slice(body);
    let mut bytes = vec![0x5b, 0x82];
    bytes.extend(package(&contents));
    bytes
}

fn scope(name: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut contents = name.to_vec();
    contents.extend_from_slice(body);
    let mut bytes = vec![0x10];
    bytes.extend(package(&contents));
    bytes
}

fn name_string(name: &[u8; 4], text: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x08];
    bytes.extend_from_slice(name);
    bytes.push(0x0d);
    bytes.extend_from_slice(text);
    bytes.push(0);
    bytes
}

fn name_buffer(name: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut contents = vec![0x0a, data.len() as u8];
    contents.extend_from_slice(data);
    let mut bytes = vec![0x08];
    bytes.extend_from_slice(name);
    bytes.push(0x11);
    bytes.extend(package(&contents));
    bytes
}

fn memory32_fixed(address: u32, length: u32) -> Vec<u8> {
    let mut bytes = vec![0x86, 9, 0, 1];
    bytes.extend_from_slice(&address.to_le_bytes());
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes
}

fn interrupt(gsi: u32) -> Vec<u8> {
    // Consumer, edge-triggered, active high (Firecracker's `Interrupt::new(true, true, false, false, ..)`).
    let mut bytes = vec![0x89, 6, 0, 0x03, 1];
    bytes.extend_from_slice(&gsi.to_le_bytes());
    bytes
}

const END_TAG: [u8; 2] = [0x79, 0];

fn virtio_device(name: &[u8; 4], resources: &[u8]) -> Vec<u8> {
    let mut body = name_string(b"_HID", b"LNRO0005");
    body.extend(name_buffer(b"_CRS", resources));
    device_object(name, &body)
}

fn table(body: &[u8]) -> Vec<u8> {
    let mut bytes = b"DSDT".to_vec();
    bytes.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&[2, 0]);
    bytes.extend_from_slice(b"TORO  TESTTEST");
    bytes.extend_from_slice(&[1, 0, 0, 0]);
    bytes.extend_from_slice(b"TORO");
    bytes.extend_from_slice(&[1, 0, 0, 0]);
    bytes.extend_from_slice(body);
    fix_checksum(&mut bytes);
    bytes
}

fn resources_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut bytes: Vec<u8> = parts.concat();
    bytes.extend_from_slice(&END_TAG);
    bytes
}

#[test]
fn firecracker_style_devices_above_three_gib() {
    let mut body = Vec::new();
    for index in 0..3u32 {
        let resources = resources_of(&[&memory32_fixed(0xc000_1000 + index * 0x1000, 0x1000), &interrupt(5 + index)]);
        body.extend(virtio_device(&[b'V', b'0', b'0', b'0' + index as u8], &resources));
    }
    let (result, devices, problems) = read(&table(&scope(b"_SB_", &body)));
    assert_eq!(problems, []);
    assert_eq!(result.unwrap().virtio_devices, 3);
    assert_eq!(
        devices,
        [device(0xc000_1000, 0x1000, 5), device(0xc000_2000, 0x1000, 6), device(0xc000_3000, 0x1000, 7)]
    );
}

#[test]
fn qword_memory_and_legacy_irq_descriptors() {
    let mut qword = vec![0x8a, 43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    qword.extend_from_slice(&0x1_0000_0000u64.to_le_bytes()); // minimum
    qword.extend_from_slice(&0x1_0000_0fffu64.to_le_bytes()); // maximum
    qword.extend_from_slice(&0u64.to_le_bytes()); // translation
    qword.extend_from_slice(&0x1000u64.to_le_bytes()); // length
    assert_eq!(qword.len(), 46);
    let irq = [0x23, 0x00, 0x04, 0x18]; // IRQ 10, level, active low (information byte 0x18)
    let resources = resources_of(&[&qword, &irq]);
    let (_, devices, problems) = read(&table(&virtio_device(b"VIRT", &resources)));
    assert_eq!(problems, []);
    assert_eq!(devices, [MmioDevice { level: true, active_low: true, ..device(0x1_0000_0000, 0x1000, 10) }]);
}

#[test]
fn a_virtio_device_without_usable_resources_is_left_out_with_a_problem() {
    let no_interrupt = resources_of(&[&memory32_fixed(0xd000_0000, 0x1000)]);
    let tiny = resources_of(&[&memory32_fixed(0xd000_0000, 0x10), &interrupt(5)]);
    let good = resources_of(&[&memory32_fixed(0xd000_2000, 0x1000), &interrupt(6)]);
    let mut body = virtio_device(b"BAD0", &no_interrupt);
    body.extend(virtio_device(b"BAD1", &tiny));
    body.extend(device_object(b"BAD2", &name_string(b"_HID", b"LNRO0005")));
    body.extend(virtio_device(b"GOOD", &good));
    // A device of another kind with the same resources is not a virtio device.
    let mut other = name_string(b"_HID", b"PNP0501");
    other.extend(name_buffer(b"_CRS", &good));
    body.extend(device_object(b"COM1", &other));
    let (result, devices, problems) = read(&table(&body));
    assert_eq!(devices, [device(0xd000_2000, 0x1000, 6)]);
    assert_eq!(problems.len(), 3);
    assert!(problems.iter().all(|problem| matches!(problem, DsdtError::DeviceResources { .. })));
    assert_eq!(result.unwrap().devices_seen, 5);
}

#[test]
fn an_unknown_opcode_skips_only_its_own_body() {
    let good = resources_of(&[&memory32_fixed(0xd000_2000, 0x1000), &interrupt(6)]);
    // A device whose body holds a `While` (0xa2): not understood.
    let mut strange = name_string(b"_HID", b"ACPI0013");
    strange.extend_from_slice(&[0xa2, 0x03, 0x01]);
    let mut body = device_object(b"GED_", &strange);
    body.extend(virtio_device(b"GOOD", &good));
    let (_, devices, problems) = read(&table(&body));
    assert_eq!(devices, [device(0xd000_2000, 0x1000, 6)]);
    assert_eq!(problems.len(), 1);
    assert!(matches!(problems[0], DsdtError::UnknownOpcode { opcode: 0xa2, .. }));
}

#[test]
fn nesting_is_capped() {
    let good = resources_of(&[&memory32_fixed(0xd000_2000, 0x1000), &interrupt(6)]);
    let mut body = virtio_device(b"DEEP", &good);
    for _ in 0..MAX_DEPTH + 2 {
        body = scope(b"SCOP", &body);
    }
    let (_, devices, problems) = read(&table(&body));
    assert_eq!(devices, []);
    assert!(matches!(problems[..], [DsdtError::TooDeep { .. }]));
}

#[test]
fn an_object_longer_than_its_body_is_a_problem() {
    let good = resources_of(&[&memory32_fixed(0xd000_2000, 0x1000), &interrupt(6)]);
    let mut body = virtio_device(b"GOOD", &good);
    // Claim the device package is 16 bytes longer than it is.
    body[3] += 1;
    let (result, devices, problems) = read(&table(&body));
    assert!(result.is_ok());
    assert_eq!(devices, []);
    assert!(matches!(problems[..], [DsdtError::ObjectTooLong { .. }]));
}

#[test]
fn find_dsdt_follows_the_fadt() {
    use crate::test_memory::{acpi_table, FakeMemory};
    let rsdp = Rsdp { revision: 2, rsdt_address: 0, xsdt_address: Some(0x7fe_0000), oem_id: *b"TOROVM" };
    let xsdt = |fadt: u64| acpi_table(b"XSDT", 1, &fadt.to_le_bytes());
    // An ACPI 1.0-sized FADT: the 32-bit DSDT field at 40.
    let mut short_body = vec![0; 80];
    short_body[4..8].copy_from_slice(&0x7fe_3000u32.to_le_bytes());
    let memory = FakeMemory::new()
        .with(0x7fe_0000, xsdt(0x7fe_1000))
        .with(0x7fe_1000, acpi_table(b"FACP", 1, &short_body))
        .with(0x7fe_3000, MICROVM_RNG.to_vec());
    assert_eq!(find_dsdt(&memory, &rsdp), Ok(Some((0x7fe_3000, MICROVM_RNG.len() as u32))));
    // A full FADT: X_DSDT at 140 wins over DSDT.
    let mut body = vec![0; 276 - 36];
    body[4..8].copy_from_slice(&0x7fe_3000u32.to_le_bytes());
    body[140 - 36..148 - 36].copy_from_slice(&0x7fe_4000u64.to_le_bytes());
    let memory = FakeMemory::new()
        .with(0x7fe_0000, xsdt(0x7fe_1000))
        .with(0x7fe_1000, acpi_table(b"FACP", 6, &body))
        .with(0x7fe_4000, MICROVM_THREE.to_vec());
    assert_eq!(find_dsdt(&memory, &rsdp), Ok(Some((0x7fe_4000, MICROVM_THREE.len() as u32))));
    // A DSDT pointer to nowhere, or no FADT.
    let memory = FakeMemory::new().with(0x7fe_0000, xsdt(0x7fe_1000)).with(0x7fe_1000, acpi_table(b"FACP", 6, &body));
    assert!(matches!(find_dsdt(&memory, &rsdp), Err(DsdtError::Acpi(AcpiError::Unreadable(_)))));
    let memory = FakeMemory::new().with(0x7fe_0000, acpi_table(b"XSDT", 1, &[]));
    assert_eq!(find_dsdt(&memory, &rsdp), Ok(None));
}

proptest::proptest! {
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = read(&table(&body));
    }

    #[test]
    fn random_resource_templates_never_panic(template in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
        let _ = read(&table(&virtio_device(b"RAND", &template)));
    }
}
