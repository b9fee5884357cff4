//! `cargo xtask test`: the host unit tests, then every in-VM test image,
//! each booted with a timeout and judged by its exit status and output.

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::build::{self, ImageSpec};
use crate::qemu::{self, Machine, Outcome, VmConfig};
use crate::symbols::Symbols;
use crate::vmm::{self, Vmm};

/// One in-VM test: which image, how to boot it, what must come out.
struct VmTest {
    name: &'static str,
    package: &'static str,
    binary: &'static str,
    cpus: u32,
    memory_mib: u32,
    command_line: &'static str,
    machine: Machine,
    numa_nodes: Option<u32>,
    /// Extra QEMU `-device` arguments.
    devices: &'static [&'static str],
    status: i32,
    /// Each must appear in the output.
    expect: &'static [&'static str],
    /// More QEMU arguments (devices the test needs).
    qemu_arguments: &'static [&'static str],
    /// The VMM that boots it.
    vmm: Vmm,
    /// A disk made before the boot and checked on the host after it.
    disk: Option<crate::disktest::DiskTest>,
    /// A folder shared over virtio-fs, made before and checked after.
    share: Option<crate::disktest::ShareTest>,
    /// Kill the VM (SIGKILL) as soon as the guest prints a line holding
    /// this (a crash test); `status` is then not checked.
    kill_at: Option<&'static str>,
}

pub(crate) const PANIC: i32 = 101;

pub(crate) const CPU_EXCEPTION: i32 = 102;

const fn vm(package: &'static str, binary: &'static str) -> VmTest {
    VmTest {
        name: binary,
        package,
        binary,
        cpus: 2,
        memory_mib: 128,
        command_line: "",
        machine: Machine::Microvm,
        numa_nodes: None,
        devices: &[],
        status: 0,
        expect: &[],
        qemu_arguments: &[],
        vmm: Vmm::Qemu,
        disk: None,
        share: None,
        kill_at: None,
    }
}

fn tests() -> Vec<VmTest> {
    let mut tests = vec![
        VmTest {
            expect: &["Hello from Toro!", "cpus: 2", "memory: ", "command line: \"\"", "boot: "],
            ..vm("hello", "hello")
        },
        VmTest {
            name: "hello-4cpus-args",
            cpus: 4,
            memory_mib: 256,
            command_line: "toro.log=info greeting=\"a b\"",
            expect: &["cpus: 4", "command line: \"toro.log=info greeting=\\\"a b\\\"\"", "[INFO"],
            ..vm("hello", "hello")
        },
        VmTest {
            name: "hello-bad-cmdline",
            command_line: "toro.log=loud \"unterminated",
            expect: &["unknown log level", "Hello from Toro!"],
            ..vm("hello", "hello")
        },
        VmTest { name: "hello-1cpu", cpus: 1, expect: &["cpus: 1"], ..vm("hello", "hello") },
        VmTest {
            // The job rings between every pair of 128 CPUs do not fit in the
            // boot CPU's share of 4 GiB: a clear boot failure, not a panic.
            name: "hello-cpus-do-not-fit",
            cpus: 128,
            memory_mib: 4096,
            status: 103,
            expect: &["toro: cannot boot: cannot fit 128 CPUs in this memory", "use fewer CPUs or more memory"],
            ..vm("hello", "hello")
        },
        VmTest { name: "hello-8cpus", cpus: 8, expect: &["cpus: 8"], ..vm("hello", "hello") },
        VmTest {
            name: "hello-q35",
            machine: Machine::Q35,
            cpus: 4,
            expect: &["Hello from Toro!", "cpus: 4"],
            ..vm("hello", "hello")
        },
        VmTest {
            name: "hello-numa",
            machine: Machine::Q35,
            cpus: 4,
            memory_mib: 512,
            numa_nodes: Some(2),
            command_line: "toro.log=info",
            expect: &[
                "ACPI SRAT: 2 NUMA nodes",
                "memory: cpu 0 node 0",
                "memory: cpu 1 node 0",
                "memory: cpu 2 node 1",
                "memory: cpu 3 node 1",
                "cpus: 4",
            ],
            ..vm("hello", "hello")
        },
        VmTest {
            name: "hello-long-cmdline",
            // Longer than the 4096 bytes the kernel keeps.
            command_line: Box::leak(format!("toro.log=warn {}", "x".repeat(5000)).into_boxed_str()),
            expect: &["command line longer than 4096 bytes: truncated", "Hello from Toro!"],
            ..vm("hello", "hello")
        },
        VmTest {
            name: "hello-control-bytes-cmdline",
            command_line: "a=\u{1}b \u{7f} c=\u{1b}[31m",
            expect: &["control bytes: replaced by '?'", "command line: \"a=?b ? c=?[31m\""],
            ..vm("hello", "hello")
        },
        VmTest {
            name: "tsc-khz-given",
            command_line: "toro.tsc_khz=2596122 toro.boottrace",
            expect: &["boot: TSC at Some(2596122000) Hz", "Hello from Toro!"],
            ..vm("hello", "hello")
        },
        VmTest {
            name: "tsc-khz-bad",
            command_line: "toro.tsc_khz=2.6GHz toro.boottrace",
            expect: &[
                "bad TSC frequency \"2.6GHz\" (expected kHz, 1000 to 100000000",
                "the TSC frequency is measured instead",
                "boot: TSC at Some(",
                "Hello from Toro!",
            ],
            ..vm("hello", "hello")
        },
        VmTest { status: 42, expect: &["returning 42"], ..vm("vm-tests", "exit_status") },
        VmTest {
            name: "virtio-rng-1",
            cpus: 1,
            command_line: "toro.log=info",
            qemu_arguments: &["-device", "virtio-rng-device"],
            expect: &[
                "virtio: mmio 0xfeb02e00 (512 bytes) GSI 47 level: rng",
                // The boot report's line for it: transport, address, interrupt, owner.
                "device: virtio-mmio 0xfeb02e00+0x200 rng interrupt GSI 47, owner cpu 0",
                "virtio-rng: all checks passed",
            ],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            name: "virtio-rng-2",
            qemu_arguments: &["-device", "virtio-rng-device"],
            expect: &["virtio-rng: owner cpu 1", "virtio-rng: all checks passed", "on cpu 1, 0 elsewhere"],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            name: "virtio-rng-4",
            cpus: 4,
            memory_mib: 256,
            // A second device of another type is listed and left to its driver.
            qemu_arguments: &["-device", "virtio-rng-device", "-device", "virtio-rng-device"],
            expect: &[
                "virtio-rng: owner cpu 1",
                "owner cpu 2",
                "virtio-rng: all checks passed",
                "4000 calls from 4 CPUs",
            ],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            name: "virtio-rng-pci-q35-2",
            machine: Machine::Q35,
            devices: &["virtio-rng-pci"],
            command_line: "toro.log=info",
            expect: &[
                "MSI-X x2: rng (type 4), owner cpu 1",
                "virtio-rng: owner cpu 1",
                "virtio-rng: all checks passed",
                "on cpu 1, 0 elsewhere",
            ],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            name: "virtio-rng-pci-q35-1",
            cpus: 1,
            machine: Machine::Q35,
            devices: &["virtio-rng-pci"],
            command_line: "toro.log=info",
            expect: &[
                "MSI-X x2: rng (type 4), owner cpu 0",
                "virtio-rng: owner cpu 0",
                "virtio-rng: all checks passed",
                "on cpu 0, 0 elsewhere",
            ],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            name: "virtio-rng-pci-q35-4",
            cpus: 4,
            memory_mib: 256,
            machine: Machine::Q35,
            devices: &["virtio-rng-pci"],
            command_line: "toro.log=info",
            expect: &[
                "MSI-X x2: rng (type 4), owner cpu 1",
                "virtio-rng: owner cpu 1",
                "virtio-rng: all checks passed",
                "4000 calls from 4 CPUs",
                "on cpu 1, 0 elsewhere",
            ],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            // No MSI-X (`vectors=0`): the INTx pin through the I/O APIC
            // (q35: PIRQ E-H, GSI 20-23, level, active high), the ISR read
            // to acknowledge; interrupts still only on the owner CPU.
            name: "virtio-rng-pci-intx-q35-2",
            machine: Machine::Q35,
            devices: &["virtio-rng-pci,vectors=0"],
            command_line: "toro.log=info",
            expect: &[
                "INTA GSI 21 level high: rng (type 4), owner cpu 1",
                "virtio-rng: owner cpu 1",
                "virtio-rng: all checks passed",
                "on cpu 1, 0 elsewhere",
            ],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            // No MSI-X behind a PCIe root port: the INTx swizzle through
            // bridges is not followed, so the device is left out with the
            // reason, and the system goes on.
            name: "virtio-pci-intx-behind-bridge-q35",
            machine: Machine::Q35,
            devices: &["pcie-root-port,id=rp1,chassis=1", "virtio-rng-pci,bus=rp1,vectors=0"],
            command_line: "toro.log=info",
            expect: &["left out: no MSI-X, and no INTx route: 0000:01:00.0 is behind a bridge", "Hello from Toro!"],
            ..vm("hello", "hello")
        },
        VmTest {
            // cloud-hypervisor attaches a virtio-rng-pci by default: MSI-X
            // only (no INTx), its BAR above 4 GiB.
            name: "cloud-hypervisor-virtio-rng-2",
            vmm: Vmm::CloudHypervisor,
            command_line: "toro.log=info calls=50",
            expect: &["MSI-X x2: rng (type 4), owner cpu 1", "virtio-rng: all checks passed", "on cpu 1, 0 elsewhere"],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest {
            name: "virtio-rng-stuck",
            command_line: "stuck",
            // rng-egd on a socket nobody serves: the device never completes a request.
            qemu_arguments: &[
                "-chardev",
                "socket,id=egd0,host=127.0.0.1,port=0,server=on,wait=off",
                "-object",
                "rng-egd,id=rng0,chardev=egd0",
                "-device",
                "virtio-rng-device,rng=rng0",
            ],
            expect: &[
                "no completion in 2000 ms; device reset and left out",
                "first call: Err(Timeout)",
                "second call: Err(LeftOut)",
                "timed out, left out, system goes on",
            ],
            ..vm("vm-tests", "virtio_rng")
        },
        VmTest { name: "services-1", cpus: 1, expect: &["services: all checks passed"], ..vm("vm-tests", "services") },
        VmTest {
            name: "services-2",
            command_line: "toro.log=info",
            expect: &[
                "services: all checks passed",
                "interrupt storm: vector",
                "services: unreachable: the service's CPU 2 does not run",
                "services: spurious on cpu 0: ",
                "services: spurious on cpu 1: ",
            ],
            ..vm("vm-tests", "services")
        },
        VmTest {
            // QEMU's edu test device: plain MSI to the owner CPU, then its
            // INTx line stuck asserted (a storm, silenced and masked).
            name: "edu-msi-q35-2",
            machine: Machine::Q35,
            devices: &["edu"],
            // An MSI flood costs one interrupt per scheduling point (edge
            // interrupts wait in the local APIC while threads run), below
            // the default 1000 per 10 ms under TCG.
            command_line: "toro.irq_storm=100",
            expect: &[
                "edu: all checks passed",
                "interrupt storm: vector",
                "(edu-stuck)",
                "MSI masked at the function (MSI disabled); device left out",
            ],
            ..vm("vm-tests", "edu_msi")
        },
        VmTest {
            name: "edu-msi-q35-4",
            cpus: 4,
            machine: Machine::Q35,
            devices: &["edu"],
            // An MSI flood costs one interrupt per scheduling point (edge
            // interrupts wait in the local APIC while threads run), below
            // the default 1000 per 10 ms under TCG.
            command_line: "toro.irq_storm=100",
            expect: &["edu: all checks passed", "on cpu 3, 0 elsewhere", "(edu-stuck)"],
            ..vm("vm-tests", "edu_msi")
        },
        VmTest {
            name: "devices-q35-1",
            cpus: 1,
            machine: Machine::Q35,
            devices: &["virtio-rng-pci"],
            command_line: "toro.log=info test.rng",
            expect: &[
                "devices: all checks passed",
                "ACPI MCFG: ECAM at 0xb0000000",
                "device: pci 0000:00:00.0 8086:29c0 host-bridge",
            ],
            ..vm("vm-tests", "devices")
        },
        VmTest {
            name: "devices-q35-4-dedicate",
            cpus: 4,
            machine: Machine::Q35,
            devices: &["virtio-rng-pci"],
            command_line: "toro.log=info test.rng test.rng-owner=3 toro.dedicate=bogus,rng@3,net@9",
            expect: &[
                "devices: all checks passed",
                "toro.dedicate entry \"bogus\" has no @CPU",
                "rng interrupt INTA, MSI-X x2, owner cpu 3",
            ],
            ..vm("vm-tests", "devices")
        },
        VmTest {
            name: "devices-microvm-2",
            command_line: "toro.log=info",
            expect: &["devices: all checks passed", "devices: 0 found"],
            ..vm("vm-tests", "devices")
        },
        VmTest {
            name: "services-4-q35",
            cpus: 4,
            machine: Machine::Q35,
            expect: &[
                "services: all checks passed",
                "interrupts: 200 on cpu 3, 0 elsewhere",
                "services: unreachable: the service's CPU 4 does not run",
                "services: spurious on cpu 3: ",
            ],
            ..vm("vm-tests", "services")
        },
        VmTest {
            name: "alloc_all_cpus-2",
            memory_mib: 256,
            expect: &["no corruption, no leak"],
            ..vm("vm-tests", "alloc_all_cpus")
        },
        VmTest {
            name: "alloc_all_cpus-4",
            cpus: 4,
            memory_mib: 256,
            expect: &["no corruption, no leak"],
            ..vm("vm-tests", "alloc_all_cpus")
        },
        VmTest {
            name: "alloc_all_cpus-8",
            cpus: 8,
            memory_mib: 256,
            expect: &["no corruption, no leak"],
            ..vm("vm-tests", "alloc_all_cpus")
        },
        VmTest {
            memory_mib: 64,
            status: PANIC,
            expect: &[
                "fallible allocation failed cleanly after",
                "memory allocation of 1048576 bytes failed",
                "out of memory: cpu 0 could not allocate 1048576 bytes",
                "memory by cpu",
                "    cpu 1 ",
            ],
            ..vm("vm-tests", "alloc_exhaust")
        },
        VmTest { expect: &["alloc_owed: memory owed by other CPUs came back"], ..vm("vm-tests", "alloc_owed") },
        VmTest { expect: &["alloc_borrow: all checks passed"], ..vm("vm-tests", "alloc_borrow") },
        VmTest {
            expect: &["tlb_refresh: every CPU refreshed its TLB at the set rate"],
            ..vm("vm-tests", "tlb_refresh")
        },
        VmTest {
            name: "tlb-refresh-off",
            command_line: "toro.tlb_refresh=off",
            expect: &["in 200 ms of allocating, 0 in", "tlb_refresh: every CPU refreshed its TLB at the set rate"],
            ..vm("vm-tests", "tlb_refresh")
        },
        VmTest {
            name: "tlb-refresh-bad",
            command_line: "toro.tlb_refresh=20ms",
            expect: &[
                "bad TLB refresh interval \"20ms\" (expected `off` or milliseconds, 1 to 60000); TLB refreshes keep their default (20 ms)",
                "tlb_refresh: every CPU refreshed its TLB at the set rate",
            ],
            ..vm("vm-tests", "tlb_refresh")
        },
        VmTest {
            name: "threads-1",
            cpus: 1,
            memory_mib: 256,
            expect: &["threads: all checks passed"],
            ..vm("vm-tests", "threads")
        },
        VmTest {
            name: "threads-2",
            memory_mib: 256,
            expect: &["threads: all checks passed"],
            ..vm("vm-tests", "threads")
        },
        VmTest {
            name: "threads-4",
            cpus: 4,
            memory_mib: 256,
            expect: &["threads: all checks passed"],
            ..vm("vm-tests", "threads")
        },
        VmTest {
            name: "threads-8",
            cpus: 8,
            // 200 live threads from CPU 0 with default (64 KiB) stacks
            // need a 16 MiB stack zone: 64 MiB per CPU.
            memory_mib: 512,
            expect: &["threads: all checks passed"],
            ..vm("vm-tests", "threads")
        },
        VmTest {
            status: CPU_EXCEPTION,
            expect: &[
                "thread_stack_size: 900 KiB of locals on a 1 MiB stack",
                "thread_stack_size: small and large stacks recycled",
                "thread_stack_size: refused: stack larger than this CPU's stack zone",
                "thread_stack_size: 200 KiB deep on a 256 KiB stack",
                "stack overflow: thread 'deep-custom'",
                "on cpu 1 hit its guard page",
            ],
            ..vm("vm-tests", "thread_stack_size")
        },
        VmTest {
            expect: &[
                "!!! watchdog: thread 'spinner'",
                "on cpu 1 has run",
                "without reaching a scheduling point (limit 2000 ms; it goes on)",
                "<watchdog_spin::spin_for",
                "watchdog_spin: 1 report(s)",
                "watchdog_spin: all checks passed",
            ],
            ..vm("vm-tests", "watchdog_spin")
        },
        VmTest {
            name: "watchdog_spin-off",
            command_line: "toro.watchdog=off",
            expect: &["watchdog_spin: 0 report(s)", "watchdog_spin: all checks passed"],
            ..vm("vm-tests", "watchdog_spin")
        },
        VmTest {
            name: "watchdog_spin-stop-4",
            cpus: 4,
            memory_mib: 256,
            command_line: "toro.watchdog=0.5 toro.watchdog_action=stop",
            status: 104,
            expect: &["!!! watchdog: thread 'spinner'", "on cpu 1 has run", "(limit 500 ms; stopping the VM)"],
            ..vm("vm-tests", "watchdog_spin")
        },
        VmTest {
            name: "thread_scope-4",
            cpus: 4,
            memory_mib: 256,
            expect: &["thread_scope: 4 cpus, all checks passed"],
            ..vm("vm-tests", "thread_scope")
        },
        VmTest {
            name: "thread_scope-1",
            cpus: 1,
            expect: &["thread_scope: 1 cpus, all checks passed"],
            ..vm("vm-tests", "thread_scope")
        },
        VmTest {
            name: "ring_pressure-2",
            memory_mib: 256,
            expect: &["ring_pressure: all checks passed"],
            ..vm("vm-tests", "ring_pressure")
        },
        VmTest {
            name: "ring_pressure-4",
            cpus: 4,
            memory_mib: 256,
            expect: &["ring_pressure: all checks passed"],
            ..vm("vm-tests", "ring_pressure")
        },
        VmTest {
            name: "ring_pressure-8",
            cpus: 8,
            memory_mib: 512,
            expect: &["ring_pressure: all checks passed"],
            ..vm("vm-tests", "ring_pressure")
        },
        VmTest {
            name: "sync-1",
            cpus: 1,
            memory_mib: 256,
            expect: &["sync: all checks passed"],
            ..vm("vm-tests", "sync")
        },
        VmTest {
            name: "fs_ramdisk-1",
            cpus: 1,
            expect: &["host files read and checked", "fs: all checks passed"],
            ..vm("vm-tests", "fs_ramdisk")
        },
        VmTest {
            name: "fs_ramdisk-2",
            expect: &["host files read and checked", "2 CPUs wrote at once", "fs: all checks passed"],
            ..vm("vm-tests", "fs_ramdisk")
        },
        VmTest {
            name: "fs_ramdisk-4-q35",
            cpus: 4,
            machine: Machine::Q35,
            memory_mib: 256,
            expect: &["host files read and checked", "4 CPUs wrote at once", "fs: all checks passed"],
            ..vm("vm-tests", "fs_ramdisk")
        },
        VmTest {
            name: "fs_disk-1",
            cpus: 1,
            memory_mib: 256,
            disk: Some(crate::disktest::READ_WRITE),
            expect: &["host files read and checked", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-2",
            memory_mib: 256,
            command_line: "toro.log=info",
            disk: Some(crate::disktest::READ_WRITE),
            expect: &[
                "virtio-blk#0: 32 MiB, 512-byte blocks, flush, owner cpu 1",
                "fs: blk#0 at / (owner CPU 1)",
                "2 CPUs wrote at once",
                "fs_disk: all checks passed",
            ],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-sector4k-2",
            memory_mib: 256,
            command_line: "toro.log=info",
            disk: Some(crate::disktest::READ_WRITE_4K_SECTORS),
            expect: &["virtio-blk#0: 32 MiB, 4096-byte blocks", "2 CPUs wrote at once", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-q35-2",
            machine: Machine::Q35,
            memory_mib: 256,
            command_line: "toro.log=info",
            disk: Some(crate::disktest::READ_WRITE),
            expect: &["MSI-X x3: blk (type 2), owner cpu 1", "on cpu 1, 0 elsewhere", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-q35-1",
            cpus: 1,
            machine: Machine::Q35,
            memory_mib: 256,
            disk: Some(crate::disktest::READ_WRITE),
            expect: &["host files read and checked", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-q35-4",
            cpus: 4,
            machine: Machine::Q35,
            memory_mib: 256,
            disk: Some(crate::disktest::READ_WRITE),
            expect: &["4 CPUs wrote at once", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        sync_kill("fs_disk-sync-kill-1", 1, Machine::Microvm),
        sync_kill("fs_disk-sync-kill-4", 4, Machine::Microvm),
        sync_kill("fs_disk-sync-kill-q35-1", 1, Machine::Q35),
        sync_kill("fs_disk-sync-kill-q35-2", 2, Machine::Q35),
        sync_kill("fs_disk-sync-kill-q35-4", 4, Machine::Q35),
        sync_kill("fs_disk-sync-kill-2", 2, Machine::Microvm),
        VmTest {
            name: "fs_disk-4",
            cpus: 4,
            memory_mib: 256,
            disk: Some(crate::disktest::READ_WRITE),
            expect: &["4 CPUs wrote at once", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            // cloud-hypervisor's virtio-blk is virtio-pci with MSI-X only.
            // Short, as on Firecracker.
            name: "cloud-hypervisor-fs_disk-2",
            memory_mib: 256,
            vmm: Vmm::CloudHypervisor,
            command_line: "mode=quick",
            disk: Some(crate::disktest::QUICK),
            expect: &["fs_disk: quick read and write done", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            // Firecracker's virtio-blk is virtio-mmio too (named on the
            // command line; no indirect descriptors, no flush by default).
            // Short: on this host's software /dev/kvm the full run takes
            // minutes.
            name: "firecracker-fs_disk-2",
            memory_mib: 256,
            vmm: Vmm::Firecracker,
            command_line: "mode=quick",
            disk: Some(crate::disktest::QUICK),
            expect: &["fs_disk: quick read and write done", "fs_disk: all checks passed"],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_mounts-disk-share-2",
            memory_mib: 256,
            command_line: "toro.log=info mode=mounts toro.mount=/=blk#0@0,/share=fs#0@1",
            disk: Some(crate::disktest::QUICK),
            share: Some(crate::disktest::SHARE_READ),
            expect: &[
                "fs: blk#0 at / (owner CPU 0)",
                "fs: fs#0 (tag \"share\") at /share (owner CPU 1)",
                "fs_disk: disk and share read from 2 CPUs",
                "fs_disk: all checks passed",
            ],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-ro",
            memory_mib: 256,
            command_line: "toro.log=info toro.mount=/data=blk:ro@0,/x=bogus mode=ro root=/data",
            disk: Some(crate::disktest::READ_ONLY),
            expect: &[
                "toro.mount entry \"/x=bogus\": the device must be blk, blk#N, fs or fs#N",
                "fs: blk#0 at /data, read-only (owner CPU 0)",
                "every change refused on the read-only disk",
                "fs_disk: all checks passed",
            ],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-open-limit",
            memory_mib: 256,
            command_line: "mode=open-limit",
            disk: Some(crate::disktest::OPEN_LIMIT),
            expect: &[
                "fs_disk: open-file limit after 1024 files: QuotaExceeded: too many open files",
                "fs_disk: open-file limit refused cleanly, files open again after closing",
                "fs_disk: all checks passed",
            ],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-full",
            memory_mib: 256,
            command_line: "mode=full",
            disk: Some(crate::disktest::FULL),
            expect: &[
                "StorageFull: no space left on the filesystem",
                "fs_disk: full disk refused writes, room again after a removal",
                "fs_disk: all checks passed",
            ],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-truncated",
            memory_mib: 256,
            command_line: "mode=truncated",
            disk: Some(crate::disktest::TRUNCATED),
            expect: &[
                "fs: cannot mount blk#0 at /: superblock: the filesystem is larger than the device (truncated image?)",
                "fs_disk: read across the end: virtio-blk: transfer past the end of the device",
                "fs_disk: truncated image refused, system still running",
                "fs_disk: all checks passed",
            ],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_disk-corrupt",
            memory_mib: 256,
            command_line: "mode=corrupt",
            disk: Some(crate::disktest::CORRUPT),
            expect: &[
                "fs: cannot mount blk#0 at /: not an ext2 filesystem: bad superblock magic",
                "corrupt image refused, system still running",
            ],
            ..vm("vm-tests", "fs_disk")
        },
        VmTest {
            name: "fs_share-2",
            memory_mib: 256,
            command_line: "toro.log=info",
            share: Some(crate::disktest::SHARE_READ_WRITE),
            expect: &[
                "virtio-fs#0: tag \"share\", owner cpu 1",
                "fs: fs#0 (tag \"share\") at /share (owner CPU 1)",
                "host files read and checked",
                "2 CPUs wrote at once",
                "fs_share: all checks passed",
            ],
            ..vm("vm-tests", "fs_share")
        },
        VmTest {
            name: "fs_share-q35-2",
            machine: Machine::Q35,
            memory_mib: 256,
            command_line: "toro.log=info",
            share: Some(crate::disktest::SHARE_READ_WRITE),
            expect: &["fs (type 26), owner cpu 1", "2 CPUs wrote at once", "fs_share: all checks passed"],
            ..vm("vm-tests", "fs_share")
        },
        VmTest {
            name: "fs_share-4",
            cpus: 4,
            memory_mib: 256,
            share: Some(crate::disktest::SHARE_READ_WRITE),
            expect: &["4 CPUs wrote at once", "fs_share: all checks passed"],
            ..vm("vm-tests", "fs_share")
        },
        VmTest {
            name: "fs_share-q35-1",
            cpus: 1,
            machine: Machine::Q35,
            memory_mib: 256,
            share: Some(crate::disktest::SHARE_READ_WRITE),
            expect: &["host files read and checked", "fs_share: all checks passed"],
            ..vm("vm-tests", "fs_share")
        },
        VmTest {
            name: "fs_share-q35-4",
            cpus: 4,
            machine: Machine::Q35,
            memory_mib: 256,
            share: Some(crate::disktest::SHARE_READ_WRITE),
            expect: &["4 CPUs wrote at once", "fs_share: all checks passed"],
            ..vm("vm-tests", "fs_share")
        },
        VmTest {
            name: "fs_share-1",
            cpus: 1,
            memory_mib: 256,
            command_line: "mode=read",
            share: Some(crate::disktest::SHARE_READ),
            expect: &["host files read and checked", "fs_share: all checks passed"],
            ..vm("vm-tests", "fs_share")
        },
        VmTest { name: "sync-2", memory_mib: 256, expect: &["sync: all checks passed"], ..vm("vm-tests", "sync") },
        VmTest {
            name: "sync-4",
            cpus: 4,
            memory_mib: 256,
            expect: &["sync: all checks passed"],
            ..vm("vm-tests", "sync")
        },
        VmTest {
            name: "sync-8",
            cpus: 8,
            memory_mib: 256,
            expect: &["sync: all checks passed"],
            ..vm("vm-tests", "sync")
        },
        VmTest {
            name: "sync_lifetime-2",
            memory_mib: 256,
            expect: &["sync_lifetime: all checks passed"],
            ..vm("vm-tests", "sync_lifetime")
        },
        VmTest {
            name: "sync_lifetime-4",
            cpus: 4,
            memory_mib: 256,
            expect: &["sync_lifetime: all checks passed"],
            ..vm("vm-tests", "sync_lifetime")
        },
        VmTest { expect: &["wall clock: absent", "time: all checks passed"], ..vm("vm-tests", "time") },
        VmTest {
            name: "time-q35",
            machine: Machine::Q35,
            expect: &["wall clock: rtc, unix time", "time: all checks passed"],
            ..vm("vm-tests", "time")
        },
        VmTest { expect: &["random: keys ", "random: all checks passed"], ..vm("vm-tests", "random") },
        VmTest {
            // No RDRAND, no RDSEED (the later `-cpu` wins): toro::random is
            // served by the virtio-rng device, from threads on every CPU.
            name: "random-device-4",
            cpus: 4,
            memory_mib: 256,
            qemu_arguments: &["-cpu", "max,-rdrand,-rdseed", "-device", "virtio-rng-device"],
            expect: &["calls from 4 CPUs", "random device: all checks passed"],
            ..vm("vm-tests", "random_device")
        },
        VmTest {
            // Neither instruction nor device: every call says why.
            name: "random-device-none",
            command_line: "none",
            qemu_arguments: &["-cpu", "max,-rdrand,-rdseed"],
            expect: &[
                "random device: no source: no entropy source: the CPU has neither RDRAND nor RDSEED",
                "random device: all checks passed",
            ],
            ..vm("vm-tests", "random_device")
        },
        VmTest {
            name: "net-loopback-2",
            memory_mib: 256,
            expect: &["tcp echo 1048576 B: ok", "udp echo: ok", "remote socket call", "ipv6 loopback: ok", "listener try_clone, take_error: ok", "udp connection refused: ok", "multicast, broadcast: ok", "net loopback: all passed"],
            ..vm("vm-tests", "net_loopback")
        },
        VmTest {
            name: "net-loopback-1",
            cpus: 1,
            memory_mib: 256,
            expect: &["tcp echo 1048576 B: ok", "ipv6 loopback: ok", "listener try_clone, take_error: ok", "udp connection refused: ok", "multicast, broadcast: ok", "net loopback: all passed"],
            ..vm("vm-tests", "net_loopback")
        },
        VmTest {
            // Two cards on QEMU user networking and the loopback: a UDP
            // socket on 0.0.0.0 has a member on each (tests/vm udp_any.rs).
            name: "udp-any-2",
            memory_mib: 256,
            command_line: "toro.eth1.ip=10.0.3.15/24 toro.eth1.ip6=fd00:3::15/64",
            qemu_arguments: &[
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-device,netdev=n0",
                "-netdev",
                "user,id=n1,net=10.0.3.0/24",
                "-device",
                "virtio-net-device,netdev=n1,mac=52:54:00:12:34:57",
            ],
            expect: &[
                "udp any: loopback member ok",
                "udp any: ports ok",
                "udp any: wake-ups ok",
                "udp any: all passed",
            ],
            ..vm("vm-tests", "udp_any")
        },
        VmTest {
            name: "webserver-selftest-2",
            memory_mib: 256,
            command_line: "selftest=1",
            expect: &[
                "webserver: serving port 80",
                "selftest: gzip-coded responses",
                "selftest: protocol checks done",
                "webserver selftest: all passed",
            ],
            ..vm("webserver", "webserver")
        },
        VmTest {
            name: "webserver-selftest-q35-4",
            machine: Machine::Q35,
            cpus: 4,
            memory_mib: 256,
            command_line: "selftest=1",
            expect: &["selftest: protocol checks done", "selftest: dated responses", "webserver selftest: all passed"],
            ..vm("webserver", "webserver")
        },
        VmTest {
            name: "echo-selftest-1",
            cpus: 1,
            memory_mib: 256,
            command_line: "selftest=1",
            expect: &["echo tcp 16777216 B: ok", "echo udp 1472 B: ok", "echo selftest: all passed"],
            ..vm("echo", "echo")
        },
        VmTest {
            name: "ping-loopback",
            command_line: "target=127.0.0.1 count=2",
            expect: &["seq=1 time=", "2 sent, 2 replies"],
            ..vm("ping", "ping")
        },
        VmTest {
            // DHCP against QEMU user networking's server (slirp): the
            // lease gives the address, the gateway it then pings, and
            // slirp's DNS server.
            name: "ping-dhcp",
            command_line: "toro.dhcp=1 toro.log=info count=2",
            qemu_arguments: &["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"],
            expect: &[
                "net: DHCP lease 10.0.2.15/24, gateway Some(10.0.2.2), DNS servers: 10.0.2.3",
                "ping 10.0.2.2: seq=2 time=",
                "2 sent, 2 replies",
            ],
            ..vm("ping", "ping")
        },
        VmTest {
            name: "ping-no-gateway",
            status: 2,
            expect: &["ping: no interface has a gateway"],
            ..vm("ping", "ping")
        },
        VmTest {
            name: "pingpong-2",
            command_line: "rounds=2000",
            expect: &["pingpong: 2 threads", "ns per hop", "cpu 1: sent 100000 messages to cpu 0"],
            ..vm("pingpong", "pingpong")
        },
        VmTest {
            name: "alloc_remote-2",
            memory_mib: 256,
            expect: &["no corruption, no leak"],
            ..vm("vm-tests", "alloc_remote")
        },
        VmTest {
            name: "alloc_remote-4",
            cpus: 4,
            memory_mib: 256,
            expect: &["no corruption, no leak"],
            ..vm("vm-tests", "alloc_remote")
        },
        VmTest {
            status: CPU_EXCEPTION,
            expect: &[
                "CPU exception: page fault (#PF, vector 14)",
                "null pointer dereference",
                "cr2 0x0000000000000000",
                "<fault_null::main",
            ],
            ..vm("vm-tests", "fault_null")
        },
        VmTest {
            status: CPU_EXCEPTION,
            expect: &["CPU exception: page fault (#PF, vector 14)", "write to kernel text (read-only)"],
            ..vm("vm-tests", "fault_write_text")
        },
        VmTest {
            status: CPU_EXCEPTION,
            expect: &["CPU exception: divide error (#DE, vector 0)", "<fault_divide::main"],
            ..vm("vm-tests", "fault_divide")
        },
        VmTest {
            status: CPU_EXCEPTION,
            expect: &[
                "CPU exception: double fault (#DF, vector 8)",
                "kernel stack overflow: boot stack guard page hit",
            ],
            ..vm("vm-tests", "fault_stack_overflow")
        },
        VmTest {
            name: "thread_stack_overflow-2",
            status: CPU_EXCEPTION,
            expect: &[
                "CPU exception: double fault (#DF, vector 8)",
                "stack overflow: thread 'deep' (id ",
                " on cpu 1 hit its guard page",
            ],
            ..vm("vm-tests", "thread_stack_overflow")
        },
        VmTest {
            name: "thread_stack_overflow-4",
            cpus: 4,
            status: CPU_EXCEPTION,
            expect: &["stack overflow: thread 'deep' (id ", " on cpu 3 hit its guard page"],
            ..vm("vm-tests", "thread_stack_overflow")
        },
        VmTest {
            status: PANIC,
            expect: &[
                "panicked at tests/vm/src/bin/panic.rs:10:9:",
                "deliberate panic for the test suite",
                "backtrace:",
            ],
            ..vm("vm-tests", "panic")
        },
    ];
    tests.extend(crate::vmm::suite_tests().into_iter().map(|t| VmTest {
        name: t.name,
        cpus: t.cpus,
        status: t.status,
        expect: t.expect,
        vmm: t.vmm,
        ..vm(t.package, t.binary)
    }));
    tests
}

/// `cargo xtask lockcheck IMAGE...`: the lock check of the given images,
/// every problem listed.
pub fn lockcheck_command(arguments: &[String]) -> Result<ExitCode> {
    if arguments.is_empty() {
        anyhow::bail!("usage: cargo xtask lockcheck IMAGE...");
    }
    let mut failed = false;
    for image in arguments {
        let report = crate::lockcheck::check(std::path::Path::new(image), crate::lockcheck::ROOTS)?;
        println!(
            "{image}: {} roots found, {} job functions, {} inlined instances, {} functions checked, {} problems",
            report.roots_found.len(),
            report.job_functions,
            report.inlined_instances,
            report.functions_checked,
            report.problems.len()
        );
        for problem in &report.problems {
            println!("    {problem}");
        }
        failed |= !report.problems.is_empty();
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The lock check of every image built for this run, two at a time (one
/// objdump each); with `all` (every image of the suite was built), also
/// that every root names a function of some image, counted in `tally`.
fn lock_check_suite(specs: &[ImageSpec], images: &[std::path::PathBuf], all: bool, tally: &mut Tally) -> Result<()> {
    use crate::lockcheck::{self, Report};
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<(usize, Result<Report>)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(image) = images.get(index) else { break };
                let report = lockcheck::check(image, lockcheck::ROOTS);
                results.lock().expect("no panics while held").push((index, report));
            });
        }
    });
    let mut results = results.into_inner().expect("no panics while held");
    results.sort_by_key(|(index, _)| *index);
    let mut found = std::collections::BTreeSet::new();
    for (index, report) in results {
        let name = &specs[index].binary;
        let report = report.with_context(|| format!("lock check of {name}"))?;
        found.extend(report.roots_found.iter().cloned());
        if report.problems.is_empty() {
            tally.passed += 1;
            println!(
                "vm test lock-check-{name} ... ok ({} roots, {} job functions, {} inlined instances, {} functions)",
                report.roots_found.len(),
                report.job_functions,
                report.inlined_instances,
                report.functions_checked
            );
        } else {
            tally.failed(&format!("lock-check-{name}"));
            println!("vm test lock-check-{name} ... FAILED");
            for problem in &report.problems {
                println!("    {problem}");
            }
        }
    }
    if all {
        let stale: Vec<&str> = lockcheck::ROOTS.iter().copied().filter(|root| !found.contains(*root)).collect();
        if stale.is_empty() {
            tally.passed += 1;
            println!(
                "vm test lock-check-roots ... ok (all {} roots found; {:.2} s for {} images)",
                lockcheck::ROOTS.len(),
                started.elapsed().as_secs_f64(),
                images.len()
            );
        } else {
            tally.failed("lock-check-roots");
            println!("vm test lock-check-roots ... FAILED: in no image (renamed or removed?): {}", stale.join(", "));
        }
    }
    Ok(())
}

/// The image the mutation test plants its faults in.
const MUTATION_IMAGE: &str = "sync";

/// The lock check's mutation test: the `sync` image built with the five
/// planted faults (`kernel/src/lockcheck_mutation.rs`) in its own target
/// directory; the check must report each, where it was planted.
fn lock_check_mutations() -> Result<(bool, String)> {
    let started = std::time::Instant::now();
    let features: Vec<String> = (1..=5).map(|n| format!("toro/lockcheck-mutation-{n}")).collect();
    let features: Vec<&str> = features.iter().map(String::as_str).collect();
    let target = build::workspace_root().join("target").join("lockcheck-mutations");
    let spec = ImageSpec { package: "vm-tests".into(), binary: MUTATION_IMAGE.into() };
    let image = build::build_with(&[spec], false, &features, &target)?.remove(0);
    let report = crate::lockcheck::check(&image, crate::lockcheck::ROOTS)?;
    let missed = mutations_missed(&report.problems);
    Ok(if missed.is_empty() {
        (true, format!("ok (5 of 5 planted faults caught; {:.2} s)", started.elapsed().as_secs_f64()))
    } else {
        let found: Vec<String> = report.problems.iter().map(|p| format!("    {p}")).collect();
        (false, format!("FAILED: missed {}\n    the check reported:\n{}", missed.join("; "), found.join("\n")))
    })
}

/// The planted faults (numbered as in `kernel/src/lockcheck_mutation.rs`)
/// that no problem reports where they were planted.
fn mutations_missed(problems: &[crate::lockcheck::Problem]) -> Vec<String> {
    let locked = |p: &crate::lockcheck::Problem| p.what.starts_with('`');
    let caught: [(&str, bool); 5] = [
        ("1: fetch_add in cpu::send", problems.iter().any(|p| locked(p) && p.what.ends_with(" in toro::cpu::send"))),
        (
            "2: fetch_add behind a trait object in scheduler::wake",
            problems.iter().any(|p| {
                p.what.starts_with("unresolved indirect")
                    && p.path.iter().any(|step| step.starts_with("toro::thread::scheduler::wake"))
                    && !p.path.iter().any(|step| step.contains("wake_job"))
            }),
        ),
        (
            "3: fetch_add in Receiver::recv inlined into the application",
            problems.iter().any(|p| {
                locked(p)
                    && p.path
                        .first()
                        .is_some_and(|root| root.starts_with("toro::sync::channel::Receiver<T>::recv (inlined into"))
            }),
        ),
        (
            "4: fetch_add in memory::allocation_failure_count",
            problems.iter().any(|p| locked(p) && p.what.ends_with(" in toro::memory::allocation_failure_count")),
        ),
        (
            "5: fetch_add in the job function sync::mutex::notify_job",
            problems.iter().any(|p| locked(p) && p.what.ends_with(" in toro::sync::mutex::notify_job")),
        ),
    ];
    caught.iter().filter(|(_, caught)| !caught).map(|(what, _)| what.to_string()).collect()
}

/// The image that prints its `RandomState` keys.
const RANDOM_IMAGE: &str = "random";

/// Boots the random image twice: the keys it prints must differ (hash maps
/// are not predictable across boots).
fn two_boots_test(image: &std::path::Path, accel: crate::accel::Accel) -> Result<(bool, String)> {
    let mut keys = Vec::new();
    for _ in 0..2 {
        let result =
            qemu::run(&VmConfig::new(image.to_path_buf(), accel), Some(Duration::from_secs(30)), false, &|l| {
                l.to_string()
            })?;
        let line = result.output.lines().find_map(|l| l.split("random: keys ").nth(1).map(str::to_string));
        match line {
            Some(line) => keys.push(line),
            None => return Ok((false, format!("FAILED: no keys printed ({})", result.outcome))),
        }
    }
    Ok(if keys[0] != keys[1] {
        (true, format!("ok ({} then {})", keys[0], keys[1]))
    } else {
        (false, format!("FAILED: both boots got keys {}", keys[0]))
    })
}

/// The web server image booted on `machine` (microvm: virtio-net-device; q35: virtio-net-pci with MSI-X) with 2 CPUs and a virtio-net card
/// on QEMU user networking; from the host, curl fetches `/` (612 bytes),
/// two pages over one kept-alive connection, and `/stats` (which visits
/// every CPU).
fn webserver_curl_test(
    image: &std::path::Path,
    accel: crate::accel::Accel,
    machine: Machine,
) -> Result<(bool, String)> {
    const BOOT_WAIT: Duration = Duration::from_secs(60);
    // A free port: bound by the OS, then released for QEMU's forward.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut config = VmConfig::new(image.to_path_buf(), accel);
    config.cpus = 2;
    config.machine = machine;
    config.command_line = "toro.log=info".into();
    config.network = Some(qemu::UserNetwork { tcp_forwards: vec![(port, 80)] });
    let mut command = config.command();
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().context("starting QEMU")?;
    let (lines, reader, errors) = qemu::read_output(&mut child);
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let curl = |arguments: &[String]| {
        std::process::Command::new("curl")
            .args(["-s", "-m", "10"])
            .args(arguments)
            .output()
            .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()))
    };
    let start = std::time::Instant::now();
    let mut problems = Vec::new();
    let mut first = None;
    while start.elapsed() < BOOT_WAIT {
        let (ok, out) =
            curl(&["-o".into(), "/dev/null".into(), "-w".into(), "%{http_code} %{size_download}".into(), url("/")])?;
        if ok && out.starts_with("200") {
            first = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    match first.as_deref() {
        Some("200 612") => {}
        other => problems.push(format!("GET / gave {other:?}, expected \"200 612\"")),
    }
    let (_, pair) = curl(&[
        "-o".into(),
        "/dev/null".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code} %{size_download} %{num_connects};".into(),
        url("/"),
        url("/"),
    ])?;
    if pair != "200 612 1;200 612 0;" {
        problems.push(format!("keep-alive pair gave {pair:?}, expected one connection for two 200s"));
    }
    // /stats gathers figures from every CPU and every network instance: the
    // thread serving it on the NIC's CPU (1) visits the loopback's owner
    // (CPU 0), where `main` has parked. It hung while `toro::park` halted
    // the CPU instead of blocking the thread.
    let (ok, stats) = curl(&[url("/stats")])?;
    let listed = |name: &str| stats.lines().any(|line| line.starts_with(&format!("{name} ")));
    if !ok || !listed("eth0") || !listed("lo") {
        problems.push(format!("GET /stats gave {stats:?} (curl ok: {ok}); expected rows for eth0 and lo"));
    }
    // The host memory the boot and these requests took: each CPU's stacks,
    // heap metadata and first blocks sit together (docs/memory.md), so few
    // 2 MiB pieces of guest RAM are touched. On microvm (firmware leaves
    // the RAM above 1 MiB alone) this boot and its requests touch 8; they
    // touched 11 when blocks were cut from the end of the heap and stacks
    // from the zone's bottom. (On q35, 11 against 12: SeaBIOS's tables and
    // buffers take pieces of their own, so no bound is set there.)
    const MICROVM_MOST_PIECES: usize = 9;
    let touched = qemu::guest_ram_touched(child.id(), config.memory_mib);
    let footprint = match &touched {
        Ok(pieces) => {
            if machine == Machine::Microvm && pieces.len() > MICROVM_MOST_PIECES {
                problems.push(format!(
                    "the guest touched {} pieces of 2 MiB of its RAM (at MiB {pieces:?}), more than {MICROVM_MOST_PIECES}",
                    pieces.len()
                ));
            }
            format!("{} of {} pieces of 2 MiB of RAM touched: MiB {pieces:?}", pieces.len(), config.memory_mib / 2)
        }
        Err(error) => {
            problems.push(format!("reading QEMU's memory: {error:#}"));
            String::new()
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = errors.join();
    let output: Vec<String> = lines.try_iter().map(|(_, line)| line).collect();
    if !output.iter().any(|l| l.contains("eth0 on cpu")) {
        problems.push("no eth0 instance listed".into());
    }
    let bound = if machine == Machine::Q35 { ": interrupts MSI-X" } else { ": interrupts GSI" };
    if !output.iter().any(|l| l.contains(bound)) {
        problems.push(format!("no \"{bound}\" line: the NIC is not interrupt-driven"));
    }
    Ok(if problems.is_empty() {
        (true, format!("ok (port {port}: {}, keep-alive pair {pair}; {footprint})", first.unwrap_or_default()))
    } else {
        (false, format!("FAILED: {}; guest printed: {}", problems.join("; "), output.join(" | ")))
    })
}

/// The floor kernel (exits at its first instruction) must end with status 0.
fn floor_test(accel: crate::accel::Accel) -> Result<(bool, String)> {
    let image = crate::floor::write(&build::workspace_root().join("target"))?;
    let config = VmConfig::new(image, accel);
    let result = qemu::run(&config, Some(Duration::from_secs(30)), false, &|l| l.to_string())?;
    Ok(match result.outcome {
        Outcome::Exited(0) => (true, format!("ok ({:.2} s)", result.wall.as_secs_f64())),
        other => (false, format!("FAILED: {other}")),
    })
}

/// Runs the host unit tests, then the loom models of the cross-CPU
/// structures, each test binary even after one failed; counts them in
/// `tally` from cargo's summary lines, the failed ones by name.
fn host_tests(tally: &mut Tally) -> Result<()> {
    let root = build::workspace_root();
    let mut unit = Command::new(env!("CARGO"));
    // The workspace's default members: everything that runs on the host.
    unit.current_dir(&root).args(["test", "--no-fail-fast"]);
    cargo_test(unit, tally)?;
    let mut loom = Command::new(env!("CARGO"));
    // Its own target directory: `--cfg loom` would otherwise rebuild the
    // shared one.
    loom.current_dir(&root)
        .args(["test", "--no-fail-fast", "-p", "toro-core", "--release", "--test", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", root.join("target").join("loom"));
    cargo_test(loom, tally)
}

/// Runs a `cargo test` command and counts it in `tally` (a build failure
/// counts as one failure).
fn cargo_test(mut command: Command, tally: &mut Tally) -> Result<()> {
    let output = command.stderr(std::process::Stdio::inherit()).output().context("running cargo test")?;
    let text = String::from_utf8_lossy(&output.stdout);
    print!("{text}");
    let (passed, failed) = cargo_counts(&text, output.status.success());
    tally.passed += passed;
    let mut names = failed_names(&text);
    names.resize(names.len().max(failed), "a host test or its build (see cargo's output above)".to_string());
    tally.failed.extend(names);
    Ok(())
}

/// The tests cargo test's output says FAILED, as `host test NAME`.
fn failed_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(|name| format!("host test {name}"))
        .collect()
}

/// (passed, failed) from cargo test's summary lines; a run that failed
/// with no failed test (its build) counts as one failure.
fn cargo_counts(text: &str, success: bool) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for line in text.lines().filter(|l| l.starts_with("test result:")) {
        let number = |word: &str| {
            line.split(';')
                .find(|part| part.trim_end().ends_with(word))
                .and_then(|part| part.split_whitespace().rev().nth(1)?.parse::<usize>().ok())
                .unwrap_or(0)
        };
        passed += number("passed");
        failed += number("failed");
    }
    if !success && failed == 0 {
        failed = 1;
    }
    (passed, failed)
}

/// fs_disk's kill-after-sync case on `machine` with `cpus` CPUs: the host
/// kills the VM when the guest says its sync returned (`kill_at`) and finds
/// every synced change on the image (`disktest::SYNC_KILL`).
fn sync_kill(name: &'static str, cpus: u32, machine: Machine) -> VmTest {
    VmTest {
        name,
        cpus,
        machine,
        memory_mib: 256,
        command_line: "mode=sync-kill",
        disk: Some(crate::disktest::SYNC_KILL),
        kill_at: Some("fs_disk: synced, kill the VM now"),
        expect: &["fs_disk: synced, kill the VM now"],
        ..vm("vm-tests", "fs_disk")
    }
}

/// Runs one test of the table and prints its line: `Some(passed)`, or
/// `None` when it is skipped (its VMM or virtiofsd is missing).
fn run_listed(test: &VmTest, image: std::path::PathBuf, accel: crate::accel::Accel) -> Result<Option<bool>> {
    let symbols = Symbols::load(&image)?;
    let mut config = VmConfig::new(image, accel);
    config.cpus = test.cpus;
    config.memory_mib = test.memory_mib;
    config.command_line = test.command_line.into();
    // Tests see the command line they give (several check its echo);
    // `tsc-khz-*` give `toro.tsc_khz=` themselves.
    config.tsc_khz_hint = false;
    config.machine = test.machine;
    config.numa_nodes = test.numa_nodes;
    config.devices = test.devices.iter().map(|d| d.to_string()).collect();
    config.extra_arguments = test.qemu_arguments.iter().map(|argument| argument.to_string()).collect();
    if let Err(missing) = vmm::locate(test.vmm) {
        println!("vm test {} ... skipped: {missing:#}", test.name);
        return Ok(None);
    }
    let disk = match test.disk {
        Some(disk) => {
            let folder = build::workspace_root().join("target").join("vm-disks").join(test.name);
            Some((disk.prepare)(&folder).with_context(|| format!("{}: making its disk", test.name))?)
        }
        None => None,
    };
    config.disks.extend(disk.clone());
    let mut share = None;
    if let Some(test_share) = test.share {
        if crate::setup::virtiofsd().is_none() {
            println!("vm test {} ... skipped: virtiofsd is not installed (`cargo xtask setup` as root)", test.name);
            return Ok(None);
        }
        let dir = build::workspace_root().join("target").join("vm-shares").join(test.name);
        let folder = (test_share.prepare)(&dir).with_context(|| format!("{}: making its folder", test.name))?;
        let daemon = crate::share::start(&folder, &dir, &crate::share::tag(0))?;
        config.shares.push(daemon.share.clone());
        share = Some((folder, daemon));
    }
    let timeout = Some(Duration::from_secs(60));
    let result = match test.kill_at {
        Some(marker) => qemu::run_killed_at(&config, timeout, &|l| symbols.annotate(l), marker),
        None => vmm::run(test.vmm, &config, &vmm::Devices::default(), timeout, false, &|l| symbols.annotate(l)),
    };
    // virtiofsd ends with the VM; its log is kept for a failure's report.
    let share = share.map(|(folder, daemon)| (folder, daemon.log()));
    let result = result?;
    let mut problems = Vec::new();
    if let Some(marker) = test.kill_at {
        if !result.lingered {
            problems.push(format!("never killed: no {marker:?} line, {}", result.outcome));
        }
    } else if result.lingered {
        problems.push(format!("{} went on after the exit status line (rebooted?)", test.vmm));
    }
    if test.kill_at.is_none() && result.outcome != Outcome::Exited(test.status) {
        problems.push(format!("expected exit status {}, got: {}", test.status, result.outcome));
    }
    for expected in test.expect {
        if !result.output.contains(expected) {
            problems.push(format!("output lacks {expected:?}"));
        }
    }
    if let (Some(check), Some(disk), true) = (test.disk, &disk, problems.is_empty()) {
        problems.extend((check.check)(&disk.image, test.cpus)?);
    }
    if let (Some(check), Some((folder, log)), true) = (test.share, &share, problems.is_empty()) {
        problems.extend((check.check)(folder, test.cpus)?);
        if !problems.is_empty() && !log.trim().is_empty() {
            problems.push(format!("virtiofsd said: {}", log.trim()));
        }
    }
    if problems.is_empty() {
        println!("vm test {} ... ok ({:.2} s)", test.name, result.wall.as_secs_f64());
    } else {
        println!("vm test {} ... FAILED", test.name);
        for problem in &problems {
            println!("    {problem}");
        }
        println!("    --- output ---");
        for line in result.output.lines() {
            println!("    {line}");
        }
    }
    Ok(Some(problems.is_empty()))
}

/// The suite's count: how many passed, and the names of those that failed,
/// said again just above the closing `N passed, N failed` line so that the
/// end of a long log tells which test failed.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn failed(&mut self, name: &str) {
        self.failed.push(name.to_string());
    }

    /// Counts one host-driven test and prints its line. A test that could
    /// not even run (its setup failed: a tool refused its arguments, a folder
    /// could not be made) is a failed test with the reason, never the end of
    /// the whole suite.
    fn record(&mut self, name: &str, result: Result<(bool, String)>) {
        match result {
            Ok((true, summary)) => {
                self.passed += 1;
                println!("vm test {name} ... {summary}");
            }
            Ok((false, summary)) => {
                self.failed(name);
                println!("vm test {name} ... {summary}");
            }
            Err(error) => {
                self.failed(name);
                println!("vm test {name} ... FAILED: could not run: {error:#}");
            }
        }
    }

    /// The closing lines: the failed tests by name, then the count.
    fn close(&self) -> String {
        let mut text = String::new();
        for name in &self.failed {
            text.push_str(&format!("failed: {name}\n"));
        }
        text.push_str(&format!("{} passed, {} failed", self.passed, self.failed.len()));
        text
    }
}

pub fn test(arguments: &[String]) -> Result<ExitCode> {
    let usage = "usage: cargo xtask test [--filter WORD] [--vmm qemu|firecracker|cloud-hypervisor]";
    let (mut filter, mut only_vmm) = (None, None);
    let mut words = arguments.iter();
    while let Some(flag) = words.next() {
        let value = words.next().with_context(|| usage.to_string())?;
        match flag.as_str() {
            "--filter" => filter = Some(value.clone()),
            "--vmm" => only_vmm = Some(Vmm::parse(value).with_context(|| usage.to_string())?),
            _ => anyhow::bail!("{usage}"),
        }
    }
    // The QEMU-only checks (host tests, lock check, floor, bench) run
    // unless another VMM was asked for.
    let qemu_checks = only_vmm.is_none_or(|vmm| vmm == Vmm::Qemu);
    let filter = if qemu_checks { filter } else { Some(filter.unwrap_or_default()) };
    crate::setup::ensure()?;
    let mut tally = Tally::default();
    if filter.is_none() {
        host_tests(&mut tally)?;
    }

    let tests: Vec<VmTest> = tests()
        .into_iter()
        .filter(|t| filter.as_ref().is_none_or(|f| t.name.contains(f.as_str())))
        .filter(|t| only_vmm.is_none_or(|vmm| t.vmm == vmm))
        .collect();
    // `--filter lock` (or any part of `lock-check`) checks every image.
    let lock_all =
        qemu_checks && filter.as_ref().is_none_or(|f| "lock-check".contains(f.as_str()) || f.starts_with("lock-check"));
    let every_test = self::tests();
    let to_build: Vec<&VmTest> =
        if lock_all { every_test.iter().filter(|t| t.vmm == Vmm::Qemu).collect() } else { tests.iter().collect() };
    let mut specs: Vec<ImageSpec> = Vec::new();
    for test in to_build {
        if !specs.iter().any(|s| s.binary == test.binary) {
            specs.push(ImageSpec { package: test.package.into(), binary: test.binary.into() });
        }
    }
    // The host-side tests of the web server, by name (`--filter webserver-nics`).
    let tap_named = |test: &crate::nettest::TapTest| filter.as_ref().is_none_or(|f| test.name().contains(f.as_str()));
    if crate::nettest::tests().iter().any(tap_named) && !specs.iter().any(|s| s.binary == "webserver") {
        specs.push(ImageSpec { package: "webserver".into(), binary: "webserver".into() });
    }
    // The web server's file checks, by name (`--filter webserver-files-q35`).
    let files_tests: Vec<_> = crate::disktest::WEBSERVER_FILES
        .into_iter()
        .map(|(share, machine, cpus)| {
            (share, machine, cpus, crate::disktest::webserver_files_name(share, machine, cpus))
        })
        .filter(|(.., name)| qemu_checks && filter.as_ref().is_none_or(|f| name.contains(f.as_str())))
        .collect();
    if !files_tests.is_empty() && !specs.iter().any(|s| s.binary == "webserver") {
        specs.push(ImageSpec { package: "webserver".into(), binary: "webserver".into() });
    }
    // The echo server's UDP tests on taps run with the echo image's tests
    // (`--filter echo`) or by name (`--filter udp`, `--filter udp-nics`).
    let echo_listed = tests.iter().any(|t| t.binary == "echo");
    let udp_named =
        |name: &str| qemu_checks && (echo_listed || filter.as_ref().is_none_or(|f| name.contains(f.as_str())));
    let udp_tests: Vec<&str> = core::iter::once("udp-mq-q35-2")
        .chain(crate::nettest::UDP_NICS.iter().map(|&(_, name)| name))
        .filter(|name| udp_named(name))
        .collect();
    if !udp_tests.is_empty() && !specs.iter().any(|s| s.binary == "echo") {
        specs.push(ImageSpec { package: "echo".into(), binary: "echo".into() });
    }
    let dns_named = qemu_checks && filter.as_ref().is_none_or(|f| crate::nettest::DNS_TEST.contains(f.as_str()));
    if dns_named && !specs.iter().any(|s| s.binary == "resolve") {
        specs.push(ImageSpec { package: "vm-tests".into(), binary: "resolve".into() });
    }
    let images = build::build(&specs, false)?;
    let accel = crate::choose_accel(None);
    // The lock check: every image built for this run, in every run.
    let all_images = lock_all;
    lock_check_suite(&specs, &images, all_images, &mut tally)?;
    if qemu_checks && filter.as_ref().is_none_or(|f| "lock-check-mutations".contains(f.as_str())) {
        tally.record("lock-check-mutations", lock_check_mutations());
    }
    if let Some(index) = specs.iter().position(|s| s.binary == RANDOM_IMAGE) {
        tally.record("random-two-boots", two_boots_test(&images[index], accel));
    }
    if let Some(index) = specs.iter().position(|s| s.binary == "webserver") {
        for (machine, name) in [(Machine::Microvm, "webserver-curl-microvm-2"), (Machine::Q35, "webserver-curl-q35-2")]
        {
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            tally.record(name, webserver_curl_test(&images[index], accel, machine));
        }
    }
    if let Some(index) = specs.iter().position(|s| s.binary == "webserver") {
        for tap_test in
            crate::nettest::tests().iter().filter(|t| only_vmm.is_none_or(|vmm| t.vmm == vmm)).filter(|t| tap_named(t))
        {
            let name = tap_test.name();
            if let Some(reason) = crate::nettest::skip_reason(tap_test) {
                println!("vm test {name} ... skipped: {reason}");
                continue;
            }
            tally.record(&name, crate::nettest::run(tap_test, &images[index], accel));
        }
    }
    if let Some(index) = specs.iter().position(|s| s.binary == "echo") {
        for &name in &udp_tests {
            if let Some(reason) = crate::netns::unavailable() {
                println!("vm test {name} ... skipped: {reason}");
                continue;
            }
            let result = match crate::nettest::UDP_NICS.iter().find(|&&(_, n)| n == name) {
                Some(&(machine, _)) => crate::nettest::udp_nics_test(&images[index], accel, machine),
                None => crate::nettest::udp_multiqueue_test(&images[index], accel),
            };
            tally.record(name, result);
        }
    }
    if let Some(index) = specs.iter().position(|s| s.binary == "resolve").filter(|_| dns_named) {
        let name = crate::nettest::DNS_TEST;
        match (crate::netns::unavailable(), crate::setup::dnsmasq()) {
            (Some(reason), _) => println!("vm test {name} ... skipped: {reason}"),
            (None, None) => println!("vm test {name} ... skipped: dnsmasq is not installed"),
            (None, Some(_)) => tally.record(name, crate::nettest::dns_test(&images[index], accel)),
        }
    }
    if qemu_checks && filter.as_ref().is_none_or(|f| crate::storms::NAME.contains(f.as_str())) {
        let name = crate::storms::NAME;
        if let Some(reason) = crate::storms::skip_reason() {
            println!("vm test {name} ... skipped: {reason}");
        } else {
            let image = match specs.iter().position(|s| s.binary == "webserver") {
                Some(index) => images[index].clone(),
                None => build::build(&[build::example("webserver")], false)?.remove(0),
            };
            tally.record(name, crate::storms::run(&image, accel));
        }
    }
    if let Some(index) = specs.iter().position(|s| s.binary == "webserver").filter(|_| !files_tests.is_empty()) {
        for (share, machine, cpus, name) in files_tests {
            if share && crate::setup::virtiofsd().is_none() {
                println!("vm test {name} ... skipped: virtiofsd is not installed");
                continue;
            }
            let result = crate::disktest::webserver_files_test(&images[index], accel, share, machine, cpus);
            tally.record(&name, result);
        }
    }
    if qemu_checks && filter.as_ref().is_none_or(|f| "floor".contains(f.as_str())) {
        tally.record("floor", floor_test(accel));
    }
    for test in &tests {
        let index = specs.iter().position(|s| s.binary == test.binary).expect("built above");
        match run_listed(test, images[index].clone(), accel) {
            Ok(None) => {}
            Ok(Some(true)) => tally.passed += 1,
            Ok(Some(false)) => tally.failed(test.name),
            Err(error) => {
                tally.failed(test.name);
                println!("vm test {} ... FAILED: could not run: {error:#}", test.name);
            }
        }
    }
    // The benchmark's quick mode: Toro and the Linux guest each once. It
    // checks that the benchmark works, never its speed.
    if qemu_checks && filter.as_ref().is_none_or(|f| "bench-quick".contains(f.as_str())) {
        let started = std::time::Instant::now();
        match crate::bench::quick_check() {
            Ok(()) => {
                tally.passed += 1;
                println!("vm test bench-quick ... ok ({:.2} s)", started.elapsed().as_secs_f64());
            }
            Err(error) => {
                tally.failed("bench-quick");
                println!("vm test bench-quick ... FAILED");
                println!("    {error:#}");
            }
        }
    }
    println!("{}", tally.close());
    Ok(if tally.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn the_closing_lines_name_every_failed_test() {
        let mut tally = Tally::default();
        tally.record("a", Ok((true, "ok".into())));
        tally.record("b", Ok((false, "FAILED: no".into())));
        tally.record("c", Err(anyhow::anyhow!("no tap")));
        tally.failed("d");
        assert_eq!(tally.close(), "failed: b\nfailed: c\nfailed: d\n1 passed, 3 failed");
        assert_eq!(Tally::default().close(), "0 passed, 0 failed");
    }

    #[test]
    fn cargos_summary_lines_are_counted() {
        let text = "test a ... ok\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured\n\
                    test b ... FAILED\ntest result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured\n";
        assert_eq!(super::cargo_counts(text, false), (5, 1));
        assert_eq!(super::failed_names(text), ["host test b"]);
        assert_eq!(super::cargo_counts("error[E0425]: cannot find value", false), (0, 1));
        assert_eq!(super::cargo_counts("", true), (0, 0));
    }
}
