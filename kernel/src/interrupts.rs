//! Interrupts for drivers: vectors on a chosen CPU, MSI messages that
//! deliver to it, I/O APIC routes, counts. See docs/interrupts.md for the
//! contract (threads run with interrupts off; handlers only acknowledge
//! and mark work).
//!
//! Most drivers do not use this directly: they bind their interrupt to
//! their service (`service::Handle::bind_interrupt`), which allocates the
//! vector on the owner CPU, routes it there and runs the service's
//! interrupt hook on its thread. This module is the layer below.

pub use crate::arch::ioapic::IoApicError;
pub use crate::arch::irq::{
    Handler, IrqError, Registration, Trigger, FIRST_DEVICE_VECTOR, LAST_DEVICE_VECTOR, SPURIOUS_VECTOR,
    STORM_THRESHOLD, STORM_WINDOW_MICROSECONDS, TIMER_VECTOR, WAKE_VECTOR,
};
pub use toro_core::acpi::IsaRoute;

use toro_core::acpi::MadtSummary;

use crate::arch::ioapic::IoApics;
use crate::arch::{apic, ioapic, irq, percpu};
use crate::cpu as messages;
use crate::once::BootCell;
use crate::service::{run_on, ServiceError};

/// Why an interrupt could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptError {
    /// The vector table of the CPU said no.
    Vector(IrqError),
    /// The I/O APIC said no.
    IoApic(IoApicError),
    /// A service has [`crate::service::MAX_INTERRUPT_SOURCES`] bound already.
    TooManySources,
    /// MSI without interrupt remapping addresses APIC ids up to 255.
    DestinationTooLarge(u32),
    /// That CPU does not run.
    Unreachable(usize),
}

impl core::fmt::Display for InterruptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Vector(error) => write!(f, "{error}"),
            Self::IoApic(error) => write!(f, "{error}"),
            Self::TooManySources => write!(f, "too many interrupt sources bound to one service"),
            Self::DestinationTooLarge(id) => write!(f, "APIC id {id} cannot be an MSI destination"),
            Self::Unreachable(cpu) => write!(f, "cpu {cpu} does not run"),
        }
    }
}

impl From<ServiceError> for InterruptError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Interrupt(error) => error,
            ServiceError::Unreachable(cpu) => Self::Unreachable(cpu),
            _ => Self::Unreachable(usize::MAX),
        }
    }
}

/// An MSI/MSI-X message: what a device writes to raise the interrupt
/// (Intel SDM vol. 3, 11.11.1 "Message Address Register Format" and
/// 11.11.2 "Message Data Register Format"): physical destination mode,
/// fixed delivery, edge-triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address: 0xFEE in bits 31:20, the destination APIC id in
    /// bits 19:12; upper 32 bits 0.
    pub address: u64,
    /// Message data: the vector in bits 7:0.
    pub data: u32,
}

/// The fixed top of every MSI address (SDM vol. 3, 11.11.1).
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;
const MSI_DESTINATION_SHIFT: u64 = 12;

impl MsiMessage {
    /// The message that raises `vector` on the CPU with APIC id `apic_id`.
    pub fn new(apic_id: u32, vector: u8) -> Result<Self, InterruptError> {
        if apic_id > 0xff {
            return Err(InterruptError::DestinationTooLarge(apic_id));
        }
        Ok(Self { address: MSI_ADDRESS_BASE | (u64::from(apic_id) << MSI_DESTINATION_SHIFT), data: u32::from(vector) })
    }

    /// The message that raises `vector` on CPU `cpu`.
    pub fn for_cpu(cpu: usize, vector: u8) -> Result<Self, InterruptError> {
        Self::new(apic_id(cpu).ok_or(InterruptError::Unreachable(cpu))?, vector)
    }
}

/// The local APIC id of CPU `cpu`.
pub fn apic_id(cpu: usize) -> Option<u32> {
    percpu::by_index(cpu).map(|block| block.apic_id)
}

/// Registers `registration` for a free device vector on CPU `cpu`;
/// returns the vector. From another CPU this is a message there.
pub fn allocate_on(cpu: usize, registration: Registration) -> Result<u8, InterruptError> {
    run_on(cpu, move || irq::allocate(registration))?.map_err(InterruptError::Vector)
}

/// Registers `registration` for `vector` on CPU `cpu`.
pub fn register_on(cpu: usize, vector: u8, registration: Registration) -> Result<(), InterruptError> {
    run_on(cpu, move || irq::register(vector, registration))?.map_err(InterruptError::Vector)
}

/// Frees `vector` on CPU `cpu`.
pub fn free_on(cpu: usize, vector: u8) -> Result<(), InterruptError> {
    run_on(cpu, move || irq::free(vector))?.map_err(InterruptError::Vector)
}

/// Interrupts CPU `cpu` took on `vector`.
pub fn count_on(cpu: usize, vector: u8) -> Result<u64, InterruptError> {
    Ok(run_on(cpu, move || irq::count(vector))?)
}

/// Spurious interrupts CPU `cpu` took.
pub fn spurious_on(cpu: usize) -> Result<u64, InterruptError> {
    Ok(run_on(cpu, irq::spurious_count)?)
}

/// Interrupts on vectors with no handler that CPU `cpu` took.
pub fn unexpected_on(cpu: usize) -> Result<u64, InterruptError> {
    Ok(run_on(cpu, irq::unexpected_count)?)
}

/// Whether `vector` on CPU `cpu` was silenced after a storm.
pub fn is_silenced_on(cpu: usize, vector: u8) -> Result<bool, InterruptError> {
    Ok(run_on(cpu, move || irq::is_silenced(vector))?)
}

/// Sends `vector` as a fixed IPI to CPU `cpu` (itself included).
pub fn send_ipi(cpu: usize, vector: u8) -> Result<(), InterruptError> {
    let id = apic_id(cpu).ok_or(InterruptError::Unreachable(cpu))?;
    apic::send_fixed(id, vector);
    Ok(())
}

/// The I/O APICs (owned by the boot CPU) and the MADT they came from.
static IO_APICS: BootCell<IoApics> = BootCell::new();
static MADT: BootCell<MadtSummary> = BootCell::new();

/// Finds the I/O APICs and masks all their pins (boot CPU, once, after
/// paging).
pub(crate) fn init(madt: &MadtSummary) {
    IO_APICS.set(ioapic::init(madt));
    MADT.set(madt.clone());
}

/// Routes `gsi` to `vector` on CPU `cpu` at its I/O APIC (a message to the
/// boot CPU, which owns the I/O APICs).
pub fn route_gsi(gsi: u32, cpu: usize, vector: u8, level: bool, active_low: bool) -> Result<(), InterruptError> {
    let id = apic_id(cpu).ok_or(InterruptError::Unreachable(cpu))?;
    run_on(0, move || route_here(gsi, id, vector, level, active_low))?
}

/// Boot CPU: programs the I/O APIC entry of `gsi`.
pub(crate) fn route_here(
    gsi: u32,
    apic_id: u32,
    vector: u8,
    level: bool,
    active_low: bool,
) -> Result<(), InterruptError> {
    let apics = IO_APICS.get().ok_or(InterruptError::IoApic(IoApicError::NoSuchGsi(gsi)))?;
    ioapic::route(apics, gsi, apic_id, vector, level, active_low).map_err(InterruptError::IoApic)
}

/// Where ISA IRQ `irq` arrives, after the MADT's overrides.
pub fn isa_route(irq: u8) -> Option<IsaRoute> {
    MADT.get().map(|madt| madt.isa_interrupt(irq))
}

/// Ends the level-triggered interrupt `vector` taken by this CPU, once its
/// driver has quieted the device (services do this themselves).
pub fn end_level_interrupt(vector: u8) {
    irq::end_level_interrupt(vector);
}

unsafe fn mask_gsi_job(gsi: u32) {
    let Some(apics) = IO_APICS.get() else { return };
    if let Err(error) = ioapic::mask(apics, gsi) {
        log::warn!("cannot mask GSI {gsi}: {error}");
    }
}

/// Masks `gsi` at its I/O APIC, soon (scheduler context allowed: a message
/// to the boot CPU, or done here on it).
pub(crate) fn mask_gsi_later(gsi: u32) {
    // SAFETY: the message points to nothing; the boot CPU owns the I/O
    // APICs.
    let _ = unsafe { messages::on_cpu(0, gsi, mask_gsi_job) };
}

/// Reads `toro.irq_storm=N` (interrupts on one vector within 10 ms that
/// make a storm; default 1000). A bad value is reported and the default
/// kept. Boot CPU, before any scheduler starts.
pub(crate) fn read_storm_threshold() {
    match crate::system::argument("toro.irq_storm").map(toro_core::command_line::parse_storm_threshold) {
        None => {}
        Some(Ok(threshold)) => irq::set_storm_threshold(threshold),
        Some(Err(error)) => {
            crate::println!("toro: warning: {error}; the default ({}) stays", irq::STORM_THRESHOLD)
        }
    }
}
