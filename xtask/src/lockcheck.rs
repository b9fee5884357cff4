//! Proof by disassembly that cross-CPU paths take no lock: every function
//! reachable by calls from the roots is searched for `lock`-prefixed
//! instructions and `xchg` with a memory operand (which locks implicitly).
//!
//! What is checked, in every image the suite builds:
//! - the named roots ([`ROOTS`]: the cross-CPU API and its machinery),
//!   wherever they are: as functions of their own, or inlined into other
//!   code (found by the image's DWARF inline records: a generic
//!   `Receiver::recv` inlined into an application's `main` is checked as
//!   the instructions DWARF attributes to it there);
//! - every job function (a `Job.run` target): a function whose address the
//!   code loads (an immediate or RIP-relative operand that is a function's
//!   start) and whose name ends in `_job` (the kernel's convention, held by
//!   the unit test `job_functions_follow_the_naming_convention`);
//! - everything those reach by direct `call`/`jmp`, except the whole
//!   symbols in [`STOP_AT`] (cold paths that end the VM or report).
//!
//! An indirect call or tail jump on a checked path fails the check unless
//! it is resolved: through the GOT or a register loaded with a function's
//! address (`memcpy` and friends), a call of the `log` crate's logger (log
//! output, a reporting path like panics), or
//! [`RESOLVED`] says where it goes (job dispatch goes to job functions,
//! which are all roots) or why its target is out of scope (a thread's
//! body is the application's code). Jump tables (`jmp reg` after a
//! `movsxd` from a table) stay inside their function and are not calls.
//! A call through memory (`call [rip+x]`) is indirect: the symbol objdump
//! names is the pointer's home, not the code.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Whole symbols where the walk stops: cold paths that end the VM (panics
/// print through the console, whose spin lock is allowed) or report an
/// allocation failure once before it. Generic instances match by their
/// demangled name (without hash).
pub const STOP_AT: &[&str] = &[
    "core::panicking::panic",
    "core::panicking::panic_fmt",
    "core::panicking::panic_nounwind",
    "core::panicking::panic_bounds_check",
    "core::panicking::panic_const::panic_const_add_overflow",
    "core::panicking::panic_const::panic_const_sub_overflow",
    "core::panicking::panic_const::panic_const_mul_overflow",
    "core::panicking::panic_const::panic_const_div_by_zero",
    "core::panicking::panic_const::panic_const_rem_by_zero",
    "core::panicking::panic_const::panic_const_shl_overflow",
    "core::panicking::panic_const::panic_const_shr_overflow",
    "core::panicking::panic_misaligned_pointer_dereference",
    "core::panicking::assert_failed",
    "core::panicking::assert_failed_inner",
    "core::option::expect_failed",
    "core::option::unwrap_failed",
    "core::result::unwrap_failed",
    "core::slice::index::slice_start_index_len_fail",
    "core::slice::index::slice_end_index_len_fail",
    "core::slice::index::slice_index_order_fail",
    "core::cell::panic_already_borrowed",
    "core::cell::panic_already_mutably_borrowed",
    "alloc::raw_vec::handle_error",
    "alloc::raw_vec::capacity_overflow",
    "alloc::alloc::handle_alloc_error",
    "rust_begin_unwind",
    "__rustc::rust_begin_unwind",
    "toro::memory::allocation_failure",
];

/// The cross-CPU paths, by function: allocate, free, remote free, lend and
/// take back memory; send and run jobs; spawn, hand over, migrate, wake,
/// block, switch, exit, join, release, idle; channels, mutexes, condition
/// variables, barriers; service calls and posts, their delivery and the
/// service thread; interrupt dispatch; the virtio-rng request path; the
/// network stack's socket calls on the owner CPU. Each must be found in at
/// least one image the suite builds (a stale name fails the check). Job
/// functions need not be listed: they are found by address.
pub const ROOTS: &[&str] = &[
    // allocate, free, remote free, and taking remote frees back
    "toro::memory::allocate",
    "toro::memory::allocate_full",
    "toro::memory::free",
    "toro::memory::free_full",
    "toro::memory::idle",
    "toro::cpu::push_if_room",
    // messages between CPUs, and sleeping until one arrives
    "toro::cpu::send",
    "toro::cpu::run_incoming",
    "toro::cpu::halt_unless_work",
    "toro::cpu::drain_overflow",
    // spawn (a control block, its stack, the hand-over), migrate, wake,
    // block, switch, exit, join's release, idle
    "toro::thread::Builder::spawn_on",
    "toro::thread::Builder::spawn_on::drop_result",
    "toro::thread::JoinHandle<T>::join",
    "toro::thread::scheduler::thread_entry",
    "toro::thread::scheduler::new_thread_control",
    "toro::thread::scheduler::hand_over",
    "toro::thread::scheduler::wake",
    "toro::thread::scheduler::block",
    "toro::thread::scheduler::block_until",
    "toro::thread::scheduler::switch_away",
    "toro::thread::scheduler::finish_switch",
    "toro::thread::scheduler::exit_current",
    "toro::thread::scheduler::release",
    "toro::thread::scheduler::idle_loop",
    "toro::thread::scheduler::migrate",
    "toro::thread::scheduler::unpark",
    // channels: send, receive, select, and the end-of-channel clean-up
    "toro::sync::channel::Sender<T>::send",
    "toro::sync::channel::SyncSender<T>::send",
    "toro::sync::channel::SyncSender<T>::try_send",
    "toro::sync::channel::Receiver<T>::recv",
    "toro::sync::channel::Receiver<T>::try_recv",
    "toro::sync::channel::Receiver<T>::recv_timeout",
    "toro::sync::channel::SenderInner<T>::send",
    "toro::sync::channel::SenderInner<T>::split",
    "toro::sync::channel::Receiver<T>::pop",
    "toro::sync::channel::Receiver<T>::pop_slow",
    "toro::sync::channel::Receiver<T>::receive",
    "toro::sync::channel::SenderInner<T>::send_slow",
    "toro::sync::channel::Select::ready_until",
    "toro::sync::channel::wait_for_room",
    "toro::sync::channel::wait_ready",
    // mutex and condition variable requests and their handling at home
    "toro::sync::mutex::RawMutex::lock",
    "toro::sync::mutex::RawMutex::on_home",
    "toro::sync::mutex::RawMutex::try_lock",
    "toro::sync::mutex::Condvar::notify",
    "toro::sync::mutex::Condvar::wait_until",
    "toro::sync::on_home",
    "toro::sync::barrier::Barrier::wait",
    // service calls and posts from any CPU, delivery, the service thread,
    // completion and wake-up; interrupt dispatch and deferred work
    "toro::service::Handle<S>::try_call",
    "toro::service::Handle<S>::try_post",
    "toro::service::send_request",
    "toro::service::service_main",
    "toro::service::run_call",
    "toro::service::run_post",
    "toro::service::run_on",
    "toro::service::Inbox::notify",
    "toro::service::Completion::complete",
    "toro::service::Completion::wait",
    "toro::service::service_interrupt",
    "toro::arch::x86_64::irq::dispatch",
    "toro::arch::x86_64::irq::run_marked_work",
    // a virtio-rng request from any CPU, its submission on the owner, the
    // interrupt hook that hands the bytes back
    "toro::virtio::rng::Rng::fill",
    "toro::virtio::rng::RngDevice::submit",
    "toro::virtio::rng::RngDevice::on_interrupt",
    // a virtio-fs request (or a FORGET) from any CPU, its queuing on the
    // owner, the interrupt hook that hands the reply back
    "toro::virtio::fs::VirtioFs::exchange",
    "toro::virtio::fs::VirtioFs::send",
    "toro::virtio::fs::FsDevice::start",
    "toro::virtio::fs::FsDevice::on_interrupt",
    // socket calls on their owner CPU (the stack's poll, waking waiters)
    "toro::net::instance::Instance::pump",
    "toro::net::tcp::TcpStream::read_some",
    "toro::net::tcp::TcpStream::write_some",
    // a UDP bind or close telling the card's other queue pairs (calls)
    "toro::net::instance::announce_udp",
    // a receive on a UDP socket bound to 0.0.0.0 on several instances:
    // the look at the members' flags, the wait in the CPU's slot
    "toro::net::udp::UdpSocket::recv_any",
    "toro::net::udp::UdpGroup::wait",
];

/// Where an indirect call or tail jump on a checked path goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// To a job function (every job function is a root).
    Jobs,
    /// To one of these functions (checked as roots of the path).
    Targets(&'static [&'static str]),
    /// Out of the check's scope, for the reason given.
    OutOfScope(&'static str),
}

/// The indirect calls of checked functions, by whole function name.
pub const RESOLVED: &[(&str, Resolution)] = &[
    ("toro::cpu::run_incoming", Resolution::Jobs),
    // A service request's `Header.run`: its call or post function.
    ("toro::service::deliver_job", Resolution::Targets(SERVICE_REQUESTS)),
    ("toro::service::service_main", Resolution::Targets(SERVICE_REQUESTS)),
    ("toro::service::run_request", Resolution::Targets(SERVICE_REQUESTS)),
    ("toro::service::Inbox::enqueue", Resolution::Targets(SERVICE_REQUESTS)),
    ("toro::service::Inbox::notify", Resolution::Targets(SERVICE_REQUESTS)),
    ("toro::service::Handle<S>::try_post", Resolution::Targets(SERVICE_REQUESTS)),
    // `Deferred.run` (`irq::add_deferred`)
    ("toro::arch::x86_64::irq::run_marked_work", Resolution::Targets(DEFERRED_WORK)),
    // `Registration.handler` and `on_storm` (the unit test
    // `interrupt_handlers_are_listed` keeps these lists whole).
    ("toro::arch::x86_64::irq::dispatch", Resolution::Targets(INTERRUPT_HANDLERS)),
    ("toro::arch::x86_64::irq::report_storms", Resolution::Targets(STORM_HANDLERS)),
    (
        "toro::thread::scheduler::exit_current",
        Resolution::OutOfScope("drops the thread's thread-local values: the application's code"),
    ),
    ("toro::sync::on_home", Resolution::Jobs),
    // every message's first code: the typed call of its `*_job` function
    ("toro::cpu::message_job", Resolution::Jobs),
    ("toro::cpu::drain_overflow", Resolution::Jobs),
    (
        "toro::thread::scheduler::thread_entry",
        Resolution::OutOfScope("the thread's entry closure: the application's code, run on its own thread"),
    ),
];

/// What a service request's `Header.run` points to.
pub const SERVICE_REQUESTS: &[&str] = &["toro::service::run_call", "toro::service::run_post"];
/// Every `Registration.handler` the kernel registers.
pub const INTERRUPT_HANDLERS: &[&str] = &["toro::service::service_interrupt"];
/// Every function given to `irq::add_deferred`.
pub const DEFERRED_WORK: &[&str] = &["toro::service::service_interrupt_work"];
/// The memory intrinsics the compiler calls (through the GOT or a
/// register holding its entry).
pub const MEMORY_INTRINSICS: &[&str] = &["memcpy", "memmove", "memset", "memcmp", "bcmp"];

/// Indirect calls that DWARF attributes to code inlined from these
/// functions resolve so.
pub const INLINED_RESOLUTIONS: &[(&str, Resolution)] = &[
    ("core::ptr::copy_nonoverlapping", Resolution::Targets(MEMORY_INTRINSICS)),
    ("core::ptr::copy", Resolution::Targets(MEMORY_INTRINSICS)),
    ("core::ptr::write_bytes", Resolution::Targets(MEMORY_INTRINSICS)),
    ("core::intrinsics::copy_nonoverlapping", Resolution::Targets(MEMORY_INTRINSICS)),
    ("core::intrinsics::copy", Resolution::Targets(MEMORY_INTRINSICS)),
    ("core::intrinsics::write_bytes", Resolution::Targets(MEMORY_INTRINSICS)),
    (
        "smoltcp::wire::tcp::TcpTimestampRepr::generate_reply_with_tsval",
        Resolution::OutOfScope(
            "smoltcp's TCP timestamp generator: Toro sets none (unit test `no_tcp_timestamp_generator`), so it is never called",
        ),
    ),
];

/// Every `Registration.on_storm`.
pub const STORM_HANDLERS: &[&str] = &["toro::service::on_storm"];

/// Functions that run or drop what their caller gave them: a closure (a
/// service call's operation, a `run_on` function, a thread's body) or a
/// value (a thread's result). That code, inlined or called, is the
/// caller's: closures given to these by cross-CPU paths are checked as
/// part of those paths (where they are inlined into a root, or as roots of
/// their own); the machinery around them (the message, the completion, the
/// wake-up, the hand-over) is checked here.
pub const CLOSURE_BOUNDARIES: &[&str] = &[
    "toro::service::run_on_job",
    "toro::service::run_on",
    "toro::service::run_call",
    "toro::service::run_post",
    "toro::service::Handle<S>::try_call",
    "toro::service::Handle<S>::try_post",
    "toro::thread::Builder::spawn_on",
    "toro::thread::Builder::spawn_on::drop_result",
    // runs the service's requests; drops its value when it stops
    "toro::service::service_main",
    // drops the values still in a channel when both ends are gone: the
    // senders' values (their `Drop` is the application's code)
    "toro::sync::channel::free",
];

/// One instruction: its address and text (mnemonic and operands).
#[derive(Clone, Debug)]
pub struct Instruction {
    pub address: u64,
    pub text: String,
}

/// A disassembled function.
#[derive(Default, Debug)]
pub struct Function {
    pub start: u64,
    pub instructions: Vec<Instruction>,
}

/// A disassembled image: functions by demangled name (generic instances
/// share a name, so each name has a list), and names by start address.
#[derive(Default, Debug)]
pub struct Image {
    pub functions: BTreeMap<String, Vec<Function>>,
    pub starts: BTreeMap<u64, String>,
    /// The GOT's entries (`__got_start..__got_end`): address -> value.
    /// Written by the linker only, so a call through one is direct.
    pub got: BTreeMap<u64, u64>,
    /// Read-only data (start, bytes): jump tables.
    pub rodata: Vec<(u64, Vec<u8>)>,
}

impl Image {
    /// The 8-byte little-endian word at `address` in read-only data.
    fn rodata_word(&self, address: u64) -> Option<u64> {
        let (base, bytes) = self.rodata.iter().find(|(b, d)| (*b..*b + d.len() as u64).contains(&address))?;
        let offset = (address - base) as usize;
        Some(u64::from_le_bytes(bytes.get(offset..offset + 8)?.try_into().ok()?))
    }
}

/// The symbol name without objdump's `@plt`-style decorations.
fn clean(name: &str) -> &str {
    name.trim()
}

/// Parses `objdump -d --no-show-raw-insn -C -M intel` output.
pub fn parse(disassembly: &str) -> Image {
    let mut image = Image::default();
    let mut current: Option<Function> = None;
    let mut current_name = String::new();
    let finish = |image: &mut Image, name: &str, function: Option<Function>| {
        if let Some(function) = function {
            image.starts.insert(function.start, name.to_string());
            image.functions.entry(name.to_string()).or_default().push(function);
        }
    };
    for line in disassembly.lines() {
        if let Some((address, name)) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")) {
            if let Ok(start) = u64::from_str_radix(address.trim(), 16) {
                let previous = current.take();
                finish(&mut image, &current_name, previous);
                current_name = clean(name).to_string();
                current = Some(Function { start, instructions: Vec::new() });
                continue;
            }
        }
        let Some(function) = current.as_mut() else { continue };
        let Some((address, text)) = line.split_once(":\t") else { continue };
        let Ok(address) = u64::from_str_radix(address.trim(), 16) else { continue };
        function.instructions.push(Instruction { address, text: text.trim().to_string() });
    }
    finish(&mut image, &current_name, current);
    image
}

/// What a control transfer instruction does.
#[derive(Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Not a call or jump.
    None,
    /// A direct call or jump to this address.
    Direct(u64),
    /// A call or jump through a register or memory.
    Indirect,
}

/// The control transfer of one instruction.
pub fn transfer(text: &str) -> Transfer {
    let mut words = text.split_whitespace();
    let mut mnemonic = words.next().unwrap_or("");
    if mnemonic == "notrack" || mnemonic == "bnd" {
        mnemonic = words.next().unwrap_or("");
    }
    if mnemonic != "call" && !mnemonic.starts_with('j') {
        return Transfer::None;
    }
    let operand = words.next().unwrap_or("");
    // `call 101100 <name>`: a hexadecimal address, then the symbol.
    match u64::from_str_radix(operand, 16) {
        Ok(address) => Transfer::Direct(address),
        Err(_) => Transfer::Indirect,
    }
}

/// Whether an instruction takes a bus lock.
pub fn is_locking(instruction: &str) -> bool {
    let mut words = instruction.split_whitespace();
    let mnemonic = words.next().unwrap_or("");
    mnemonic == "lock" || (mnemonic == "xchg" && instruction.contains('['))
}

/// Hexadecimal numbers in an instruction's operands (immediates,
/// displacements, objdump's `# address` comments).
fn numbers(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|word| word.strip_prefix("0x").or(Some(word)))
        .filter(|word| word.len() >= 5 && word.chars().all(|c| c.is_ascii_hexdigit()))
        .filter_map(|word| u64::from_str_radix(word, 16).ok())
}

/// Functions whose address the code loads (not calls): candidates for
/// function pointers.
pub fn address_taken(image: &Image) -> BTreeSet<String> {
    let mut taken = BTreeSet::new();
    for functions in image.functions.values() {
        for function in functions {
            for instruction in &function.instructions {
                if transfer(&instruction.text) != Transfer::None {
                    continue;
                }
                for number in numbers(&instruction.text) {
                    if let Some(name) = image.starts.get(&number) {
                        taken.insert(name.clone());
                    }
                }
            }
        }
    }
    taken
}

/// The last path segment of a name, without generic arguments.
fn last_segment(name: &str) -> &str {
    let mut depth = 0usize;
    let mut end = name.len();
    let mut start = 0;
    for (index, c) in name.char_indices() {
        match c {
            '<' => {
                if depth == 0 && end == name.len() && index > start {
                    end = index;
                }
                depth += 1;
            }
            '>' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                start = index + 1;
                end = name.len();
            }
            _ => {}
        }
    }
    &name[start..end.max(start)]
}

/// Job functions: address-taken functions named `*_job`.
pub fn job_functions(image: &Image) -> BTreeSet<String> {
    address_taken(image).into_iter().filter(|name| last_segment(name).ends_with("_job")).collect()
}

/// Code inlined from a function, as DWARF records it: the origin's
/// demangled name and the address ranges it covers.
#[derive(Clone, Debug)]
pub struct Inlined {
    pub origin: String,
    pub ranges: Vec<(u64, u64)>,
    /// Ranges of code inlined into this instance, by origin name.
    pub nested: Vec<(String, Vec<(u64, u64)>)>,
    /// An out-of-line copy (a concrete subprogram), recorded for what is
    /// inlined into it, not an inlined instance.
    pub concrete: bool,
}

/// Demangles a linkage name to the form objdump's `-C` prints (no hash).
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// The inlined instances, in `image`'s DWARF, of functions whose names
/// `wanted` accepts.
pub fn inlined(data: &[u8], wanted: &dyn Fn(&str) -> bool) -> Result<Vec<Inlined>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).context("parsing the image as ELF")?;
    let load = |id: gimli::SectionId| -> Result<Cow<[u8]>, gimli::Error> {
        Ok(file.section_by_name(id.name()).and_then(|s| s.uncompressed_data().ok()).unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|section| gimli::EndianSlice::new(section, gimli::LittleEndian));
    // Pass 1: the linkage names of every DIE that has one, by global
    // offset (inline records point at them, possibly across units).
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    let mut links: BTreeMap<usize, usize> = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        while let Some((_, entry)) = entries.next_dfs()? {
            if entry.tag() != gimli::DW_TAG_subprogram {
                continue;
            }
            let Some(here) = entry.offset().to_debug_info_offset(&unit.header) else { continue };
            if let Some(value) = entry.attr_value(gimli::DW_AT_linkage_name)? {
                let name = dwarf.attr_string(&unit, value)?;
                names.insert(here.0, demangle(&name.to_string_lossy()));
            } else if let Some(target) = reference(&unit, entry.attr_value(gimli::DW_AT_specification)?) {
                links.insert(here.0, target);
            }
        }
    }
    let name_of = |offset: usize| -> Option<&String> {
        names.get(&offset).or_else(|| links.get(&offset).and_then(|target| names.get(target)))
    };
    // Pass 2: inlined subroutines of wanted origins, with what is inlined
    // into them.
    let mut found = Vec::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        // Open instances: (depth, index into found).
        let mut open: Vec<(isize, usize)> = Vec::new();
        let mut depth = 0isize;
        while let Some((delta, entry)) = entries.next_dfs()? {
            depth += delta;
            open.retain(|(d, _)| *d < depth);
            let concrete = entry.tag() == gimli::DW_TAG_subprogram;
            if entry.tag() != gimli::DW_TAG_inlined_subroutine && !concrete {
                continue;
            }
            let name = if concrete {
                // Out-of-line copies: their own linkage name, or their
                // abstract origin's; only those with code.
                if entry.attr_value(gimli::DW_AT_low_pc)?.is_none() && entry.attr_value(gimli::DW_AT_ranges)?.is_none()
                {
                    continue;
                }
                let own = entry.offset().to_debug_info_offset(&unit.header).and_then(|o| name_of(o.0));
                let origin = reference(&unit, entry.attr_value(gimli::DW_AT_abstract_origin)?).and_then(name_of);
                match own.or(origin) {
                    Some(name) => name,
                    None => continue,
                }
            } else {
                let Some(origin) = reference(&unit, entry.attr_value(gimli::DW_AT_abstract_origin)?) else { continue };
                let Some(name) = name_of(origin) else { continue };
                name
            };
            let mut ranges = Vec::new();
            let mut iterator = dwarf.die_ranges(&unit, entry)?;
            while let Some(range) = iterator.next()? {
                if range.end > range.begin {
                    ranges.push((range.begin, range.end));
                }
            }
            if !concrete {
                for (_, index) in &open {
                    let instance: &mut Inlined = &mut found[*index];
                    instance.nested.push((name.clone(), ranges.clone()));
                }
            }
            if wanted(name) && (!concrete || CLOSURE_BOUNDARIES.contains(&name.as_str())) {
                open.push((depth, found.len()));
                found.push(Inlined { origin: name.clone(), ranges, nested: Vec::new(), concrete });
            }
        }
    }
    Ok(found)
}

/// The GOT's entries, between the linker script's `__got_start` and
/// `__got_end` (empty for an image without them).
pub fn got(data: &[u8]) -> Result<BTreeMap<u64, u64>> {
    use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
    let file = object::File::parse(data).context("parsing the image as ELF")?;
    let symbol = |name: &str| file.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address());
    let mut entries = BTreeMap::new();
    let (Some(start), Some(end)) = (symbol("__got_start"), symbol("__got_end")) else { return Ok(entries) };
    // Loaded data only: debug sections have address 0 and may be large
    // enough to seem to cover the range.
    for section in file.sections().filter(|s| matches!(s.kind(), SectionKind::Data | SectionKind::ReadOnlyData)) {
        let (base, size) = (section.address(), section.size());
        if base == 0 || start < base || end > base + size {
            continue;
        }
        let bytes = section.data()?;
        let mut address = start;
        while address + 8 <= end {
            let offset = (address - base) as usize;
            let word = bytes.get(offset..offset + 8).context("GOT outside its section's data")?;
            entries.insert(address, u64::from_le_bytes(word.try_into().expect("8 bytes")));
            address += 8;
        }
    }
    Ok(entries)
}

/// The GOT entry an operand like `QWORD PTR [rip+0x12]  # 1683f0 <..>`
/// reads, if it reads one: the function it holds.
fn through_got(image: &Image, text: &str) -> Option<u64> {
    if !text.contains("[rip+") {
        return None;
    }
    let comment = text.split_once('#')?.1.split_whitespace().next()?;
    let address = u64::from_str_radix(comment.trim_start_matches("0x"), 16).ok()?;
    image.got.get(&address).copied().filter(|target| image.starts.contains_key(target))
}

/// The function a `mov reg, ...` loads: a GOT entry's, or a function's
/// address as an immediate (`mov r15, 0x158620`, the static relocation
/// model's way of loading `memcpy`).
fn loaded_function(image: &Image, text: &str) -> Option<u64> {
    if !text.starts_with("mov ") && !text.starts_with("movabs ") {
        return None;
    }
    if let Some(target) = through_got(image, text) {
        return Some(target);
    }
    let source = text.split_once(',')?.1.trim();
    let value = u64::from_str_radix(source.strip_prefix("0x")?, 16).ok()?;
    image.starts.contains_key(&value).then_some(value)
}

/// Whether the indirect call at `position` calls the `log` crate's logger
/// (its register loaded from `log::LOGGER` just before): log output.
fn is_log_call(function: &Function, position: usize) -> bool {
    let text = &function.instructions[position].text;
    let Some(register) = text.split_once('[').and_then(|(_, r)| r.split(['+', ']']).next()) else { return false };
    function.instructions[position.saturating_sub(12)..position].iter().any(|i| {
        i.text.contains("<log::LOGGER>")
            && i.text.split_whitespace().nth(1).and_then(|o| o.split(',').next()) == Some(register)
    })
}

/// The 64-bit register an operand names, with its sub-registers folded.
fn register64(operand: &str) -> Option<&'static str> {
    const NAMES: &[(&str, &[&str])] = &[
        ("rax", &["rax", "eax", "ax", "al"]),
        ("rbx", &["rbx", "ebx", "bx", "bl"]),
        ("rcx", &["rcx", "ecx", "cx", "cl"]),
        ("rdx", &["rdx", "edx", "dx", "dl"]),
        ("rsi", &["rsi", "esi", "si", "sil"]),
        ("rdi", &["rdi", "edi", "di", "dil"]),
        ("rbp", &["rbp", "ebp", "bp", "bpl"]),
        ("r8", &["r8", "r8d", "r8w", "r8b"]),
        ("r9", &["r9", "r9d", "r9w", "r9b"]),
        ("r10", &["r10", "r10d", "r10w", "r10b"]),
        ("r11", &["r11", "r11d", "r11w", "r11b"]),
        ("r12", &["r12", "r12d", "r12w", "r12b"]),
        ("r13", &["r13", "r13d", "r13w", "r13b"]),
        ("r14", &["r14", "r14d", "r14w", "r14b"]),
        ("r15", &["r15", "r15d", "r15w", "r15b"]),
    ];
    NAMES.iter().find(|(_, forms)| forms.contains(&operand)).map(|(name, _)| *name)
}

/// Resolves `call reg` / `jmp reg` at `position` of `function` when the
/// register holds a function's address (see [`register_value`]).
fn register_through_got(image: &Image, function: &Function, position: usize) -> Option<u64> {
    let text = &function.instructions[position].text;
    let register = register64(text.split_whitespace().nth(1)?)?;
    register_value(image, function, position, register, 0)
}

/// The function whose address `register` holds just before `position`:
/// the last write before it, in straight-line code (no jump lands in
/// between; for a caller-saved register, no call in between), loads a GOT
/// entry, an immediate function address or another register holding one;
/// or, for a callee-saved register, every write to it in the function
/// (pushes and pops aside) loads the same function.
fn register_value(image: &Image, function: &Function, position: usize, register: &str, depth: u32) -> Option<u64> {
    if depth > 4 {
        return None;
    }
    let destination_of = |instruction: &Instruction| -> Option<&'static str> {
        let mut words = instruction.text.split_whitespace();
        let mnemonic = words.next().unwrap_or("");
        if matches!(mnemonic, "push" | "cmp" | "test" | "call" | "jmp") || mnemonic.starts_with('j') {
            return None;
        }
        register64(words.next().unwrap_or("").split(',').next().unwrap_or(""))
    };
    let value_written = |index: usize| -> Option<u64> {
        let text = &function.instructions[index].text;
        if let Some(target) = loaded_function(image, text) {
            return Some(target);
        }
        // `mov reg, other`: what `other` held there.
        let source = text.strip_prefix("mov ")?.split_once(',')?.1.trim();
        register_value(image, function, index, register64(source)?, depth + 1)
    };
    let landings: BTreeSet<u64> = function
        .instructions
        .iter()
        .filter_map(|i| match transfer(&i.text) {
            Transfer::Direct(target) => Some(target),
            _ => None,
        })
        .collect();
    // Calls preserve callee-saved registers.
    let callee_saved = matches!(register, "rbx" | "rbp" | "r12" | "r13" | "r14" | "r15");
    for index in (0..position).rev() {
        let instruction = &function.instructions[index];
        if landings.contains(&function.instructions[index + 1].address)
            || (instruction.text.starts_with("call") && !callee_saved)
            || instruction.text.starts_with("ret")
        {
            break;
        }
        if destination_of(instruction) == Some(register) {
            if let Some(target) = value_written(index) {
                return Some(target);
            }
            break;
        }
    }
    flow_value(image, function, position, register, callee_saved, depth)
}

/// The function every store to the stack slot `slot` (`QWORD PTR
/// [rbp-0x30]`) of `function` writes, if they all write the same one (a
/// spilled `memcpy` reloaded later).
fn slot_value(image: &Image, function: &Function, slot: &str, depth: u32) -> Option<u64> {
    let prefix = format!("mov    {slot},");
    let mut value = None;
    for (index, instruction) in function.instructions.iter().enumerate() {
        let Some(source) = instruction.text.strip_prefix(&prefix) else { continue };
        let stored = register_value(image, function, index, register64(source.trim())?, depth + 1)?;
        if value.is_some_and(|v| v != stored) {
            return None;
        }
        value = Some(stored);
    }
    value
}

/// What a register holds before `position`, by a forward data-flow pass
/// over the function's instructions (edges: fall-through and direct
/// jumps): a function's address if every path there loads the same one.
fn flow_value(
    image: &Image,
    function: &Function,
    position: usize,
    register: &str,
    callee_saved: bool,
    depth: u32,
) -> Option<u64> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Unvisited,
        Known(u64),
        Unknown,
    }
    let meet = |a: State, b: State| match (a, b) {
        (State::Unvisited, x) | (x, State::Unvisited) => x,
        (State::Known(x), State::Known(y)) if x == y => State::Known(x),
        _ => State::Unknown,
    };
    let instructions = &function.instructions;
    let index_of: BTreeMap<u64, usize> = instructions.iter().enumerate().map(|(i, x)| (x.address, i)).collect();
    let key = (function.start, register.to_string(), callee_saved, depth == 0);
    if let Some(entry) = FLOW_CACHE.with(|cache| cache.borrow().get(&key).cloned()) {
        return match entry.get(position) {
            Some(Some(target)) => Some(*target),
            _ => None,
        };
    }
    let mut entry = vec![State::Unvisited; instructions.len()];
    entry[0] = State::Unknown;
    let mut work = vec![0usize];
    // Absolute jump tables (`jmp [index*8+table]`) are followed: their
    // entries are read while they point into the function. Code after an
    // unconditional transfer that no direct jump or table reaches (a
    // relative table's targets) starts from nothing known.
    let end = instructions.last().map_or(function.start, |i| i.address);
    let mut table_targets: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (index, instruction) in instructions.iter().enumerate() {
        let text = instruction.text.as_str();
        let Some(table) = text
            .strip_prefix("jmp    QWORD PTR [")
            .and_then(|rest| rest.split_once("*8+0x"))
            .and_then(|(_, table)| u64::from_str_radix(table.trim_end_matches(']'), 16).ok())
        else {
            continue;
        };
        let mut address = table;
        while let Some(target) = image.rodata_word(address).filter(|t| (function.start..=end).contains(t)) {
            table_targets.entry(index).or_default().extend(index_of.get(&target).copied());
            address += 8;
        }
    }
    let reached: BTreeSet<usize> = instructions
        .iter()
        .filter_map(|i| match transfer(&i.text) {
            Transfer::Direct(target) => index_of.get(&target).copied(),
            _ => None,
        })
        .chain(table_targets.values().flatten().copied())
        .collect();
    // Alignment padding (`nop`, `data16 cs nop ...`, and `xchg ax,ax`,
    // the 2-byte NOP `66 90`) after such a transfer is not code that runs:
    // seeding it would carry "unknown" into the instruction it falls
    // through to (a loop head reached by a jump).
    let padding = |text: &str| {
        text.split_whitespace().take_while(|w| matches!(*w, "data16" | "cs" | "nop")).any(|w| w == "nop")
            || text.split_whitespace().eq(["xchg", "ax,ax"])
    };
    for index in 1..instructions.len() {
        let previous = instructions[index - 1].text.split_whitespace().next().unwrap_or("");
        if matches!(previous, "jmp" | "ret" | "ud2" | "int3" | "hlt" | "notrack")
            && !reached.contains(&index)
            && !padding(&instructions[index].text)
        {
            entry[index] = State::Unknown;
            work.push(index);
        }
    }
    while let Some(index) = work.pop() {
        let instruction = &instructions[index];
        let text = instruction.text.as_str();
        let mut words = text.split_whitespace();
        let mnemonic = words.next().unwrap_or("");
        let destination = words.next().unwrap_or("").split(',').next().unwrap_or("");
        let control = mnemonic == "call" || mnemonic.starts_with('j') || mnemonic == "cmp" || mnemonic == "test";
        let out = if !control && mnemonic != "push" && register64(destination) == Some(register) {
            let reload = text
                .strip_prefix("mov ")
                .and_then(|t| t.split_once(','))
                .map(|(_, source)| source.trim())
                .filter(|source| source.starts_with("QWORD PTR [rbp-") && source.ends_with(']'));
            let copied = text
                .strip_prefix("mov ")
                .and_then(|t| t.split_once(','))
                .and_then(|(_, source)| register64(source.trim()))
                .filter(|_| depth < 2);
            loaded_function(image, text)
                .or_else(|| reload.filter(|_| depth == 0).and_then(|slot| slot_value(image, function, slot, depth)))
                .or_else(|| copied.and_then(|other| register_value(image, function, index, other, depth + 1)))
                .map_or(State::Unknown, State::Known)
        } else if mnemonic == "call" && !callee_saved {
            State::Unknown
        } else {
            entry[index]
        };
        let mut next = Vec::new();
        let ends = mnemonic == "ret" || mnemonic == "ud2" || mnemonic == "int3" || mnemonic == "hlt";
        match transfer(text) {
            Transfer::Direct(target) if mnemonic.starts_with('j') => {
                next.extend(index_of.get(&target).copied());
                if mnemonic != "jmp" {
                    next.push(index + 1);
                }
            }
            Transfer::Indirect if mnemonic.starts_with('j') => {
                next.extend(table_targets.get(&index).into_iter().flatten().copied());
            }
            _ if ends => {}
            _ => next.push(index + 1),
        }
        for successor in next.into_iter().filter(|&s| s < instructions.len()) {
            let merged = meet(entry[successor], out);
            if merged != entry[successor] {
                entry[successor] = merged;
                work.push(successor);
            }
        }
    }
    let known: Vec<Option<u64>> =
        entry.iter().map(|state| if let State::Known(target) = state { Some(*target) } else { None }).collect();
    let result = known.get(position).copied().flatten();
    FLOW_CACHE.with(|cache| cache.borrow_mut().insert(key, std::rc::Rc::new(known)));
    result
}

/// Data-flow results by (function start, register, callee-saved,
/// spill reloads followed): what the register holds before each
/// instruction.
type FlowKey = (u64, String, bool, bool);
thread_local! {
    static FLOW_CACHE: std::cell::RefCell<BTreeMap<FlowKey, std::rc::Rc<Vec<Option<u64>>>>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// A reference attribute as a global `.debug_info` offset.
fn reference<R: gimli::Reader<Offset = usize>>(
    unit: &gimli::Unit<R>,
    value: Option<gimli::AttributeValue<R>>,
) -> Option<usize> {
    match value? {
        gimli::AttributeValue::UnitRef(offset) => offset.to_debug_info_offset(&unit.header).map(|o| o.0),
        gimli::AttributeValue::DebugInfoRef(offset) => Some(offset.0),
        _ => None,
    }
}

/// Whether a name is a closure, a call of one (`FnOnce::call_once` and
/// friends) or a drop of a caller's value: the caller's code inside a
/// closure boundary.
fn is_closure_call(name: &str) -> bool {
    name.contains("{{closure}}")
        || name.starts_with("core::ops::function::Fn")
        || name.starts_with("<F as core::ops::function::Fn")
        || name.starts_with("core::ptr::drop_in_place<")
}

/// A unit of the walk: a whole function (every instance with that name)
/// or code inlined from a root into another function.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Function(String),
    Inlined { origin: String, ranges: Vec<(u64, u64)>, skip: Vec<(u64, u64)> },
}

impl Node {
    fn describe(&self, image: &Image) -> String {
        match self {
            Node::Function(name) => name.clone(),
            Node::Inlined { origin, ranges, .. } => {
                let into = ranges
                    .first()
                    .and_then(|(start, _)| image.starts.range(..=start).next_back())
                    .map(|(_, name)| name.as_str())
                    .unwrap_or("?");
                format!("{origin} (inlined into {into})")
            }
        }
    }
}

/// One problem: a locking instruction or an unresolved indirect call.
#[derive(Clone, Debug)]
pub struct Problem {
    pub what: String,
    pub address: u64,
    /// The path from a root, outermost first.
    pub path: Vec<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {:#x} (reached by {})", self.what, self.address, self.path.join(" -> "))
    }
}

/// What a check of one image found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    /// Roots found in the image (as functions or inlined).
    pub roots_found: BTreeSet<String>,
    pub job_functions: usize,
    pub inlined_instances: usize,
    pub functions_checked: usize,
}

/// Checks the paths from `roots` (plus every job function and every
/// inlined instance of a root) in a disassembled image.
pub fn check_image(image: &Image, roots: &[&str], inlined: &[Inlined]) -> Report {
    // The data-flow cache is keyed by address: one image at a time.
    FLOW_CACHE.with(|cache| cache.borrow_mut().clear());
    let mut report = Report::default();
    let jobs = job_functions(image);
    report.job_functions = jobs.len();
    let stop: BTreeSet<&str> = STOP_AT.iter().copied().collect();
    let resolved: BTreeMap<&str, Resolution> = RESOLVED.iter().copied().collect();
    let mut queue: VecDeque<(Node, Vec<String>)> = VecDeque::new();
    for root in roots {
        if image.functions.contains_key(*root) {
            report.roots_found.insert(root.to_string());
            queue.push_back((Node::Function(root.to_string()), Vec::new()));
        }
    }
    for instance in inlined.iter().filter(|i| !i.concrete && roots.contains(&i.origin.as_str())) {
        report.roots_found.insert(instance.origin.clone());
        report.inlined_instances += 1;
        let skip = if CLOSURE_BOUNDARIES.contains(&instance.origin.as_str()) {
            instance.nested.iter().filter(|(name, _)| is_closure_call(name)).flat_map(|(_, r)| r.clone()).collect()
        } else {
            Vec::new()
        };
        let node = Node::Inlined { origin: instance.origin.clone(), ranges: instance.ranges.clone(), skip };
        queue.push_back((node, Vec::new()));
    }
    for job in &jobs {
        queue.push_back((Node::Function(job.clone()), Vec::new()));
    }
    // Functions where a closure boundary applies to their out-of-line
    // instances: the closure code DWARF finds inlined in them is skipped.
    let boundary_skips: Vec<(u64, u64)> = inlined
        .iter()
        .filter(|i| CLOSURE_BOUNDARIES.contains(&i.origin.as_str()))
        .flat_map(|i| i.nested.iter().filter(|(name, _)| is_closure_call(name)).flat_map(|(_, r)| r.clone()))
        .collect();
    let mut seen: BTreeSet<Node> = BTreeSet::new();
    while let Some((node, mut path)) = queue.pop_front() {
        if !seen.insert(node.clone()) {
            continue;
        }
        if let Node::Function(name) = &node {
            if stop.contains(name.as_str()) {
                continue;
            }
        }
        path.push(node.describe(image));
        // The instructions this node covers, and in which function.
        let mut covered: Vec<(&str, &Function, usize)> = Vec::new();
        let boundary;
        let mut skip: Vec<(u64, u64)> = Vec::new();
        match &node {
            Node::Function(name) => {
                let Some(instances) = image.functions.get(name) else { continue };
                boundary = CLOSURE_BOUNDARIES.contains(&name.as_str());
                if boundary {
                    skip = boundary_skips.clone();
                }
                for function in instances {
                    covered.extend((0..function.instructions.len()).map(|i| (name.as_str(), function, i)));
                }
            }
            Node::Inlined { ranges, skip: inner, .. } => {
                boundary = !inner.is_empty();
                skip = inner.clone();
                for (start, end) in ranges {
                    let Some((_, container)) = image.starts.range(..=start).next_back() else { continue };
                    for function in &image.functions[container] {
                        covered.extend(
                            (0..function.instructions.len())
                                .filter(|i| (*start..*end).contains(&function.instructions[*i].address))
                                .map(|i| (container.as_str(), function, i)),
                        );
                    }
                }
            }
        }
        report.functions_checked += 1;
        let in_skip = |address: u64| skip.iter().any(|(s, e)| (*s..*e).contains(&address));
        for (function, body, position) in covered {
            let instruction = &body.instructions[position];
            if in_skip(instruction.address) {
                continue;
            }
            if is_locking(&instruction.text) {
                report.problems.push(Problem {
                    what: format!("`{}` in {function}", instruction.text),
                    address: instruction.address,
                    path: path.clone(),
                });
            }
            let resolved_target =
                through_got(image, &instruction.text).or_else(|| register_through_got(image, body, position));
            let kind = match (transfer(&instruction.text), resolved_target) {
                (Transfer::Indirect, Some(target)) => Transfer::Direct(target),
                (kind, _) => kind,
            };
            match kind {
                Transfer::None => {}
                Transfer::Direct(target) => {
                    let Some(callee) = image.starts.get(&target) else { continue };
                    if callee == function || (boundary && is_closure_call(callee)) {
                        continue;
                    }
                    queue.push_back((Node::Function(callee.clone()), path.clone()));
                }
                Transfer::Indirect => {
                    if is_jump_table(image, function, instruction.address) || is_log_call(body, position) {
                        continue;
                    }
                    let resolution = resolved
                        .get(function)
                        .copied()
                        .or_else(|| match &node {
                            Node::Inlined { origin, .. } => resolved.get(origin.as_str()).copied(),
                            Node::Function(_) => None,
                        })
                        .or_else(|| {
                            inlined
                                .iter()
                                .filter(|i| !i.concrete)
                                .filter(|i| i.ranges.iter().any(|(s, e)| (*s..*e).contains(&instruction.address)))
                                .find_map(|i| INLINED_RESOLUTIONS.iter().find(|(o, _)| *o == i.origin).map(|(_, r)| *r))
                        });
                    match resolution {
                        // Every job function is queued as a root above.
                        Some(Resolution::Jobs) | Some(Resolution::OutOfScope(_)) => {}
                        Some(Resolution::Targets(targets)) => {
                            for target in targets {
                                queue.push_back((Node::Function(target.to_string()), path.clone()));
                                for instance in inlined.iter().filter(|i| !i.concrete && i.origin == *target) {
                                    let node = Node::Inlined {
                                        origin: instance.origin.clone(),
                                        ranges: instance.ranges.clone(),
                                        skip: Vec::new(),
                                    };
                                    queue.push_back((node, path.clone()));
                                }
                            }
                        }
                        None => report.problems.push(Problem {
                            what: format!(
                                "unresolved indirect `{}` in {function} (resolve it or list it in lockcheck::RESOLVED with a reason)",
                                instruction.text
                            ),
                            address: instruction.address,
                            path: path.clone(),
                        }),
                    }
                }
            }
        }
    }
    report
}

/// Whether the indirect jump at `address` in `function` is a jump table's
/// dispatch (`movsxd reg, [base+index*4]`, `add reg, base`, `jmp reg`).
fn is_jump_table(image: &Image, function: &str, address: u64) -> bool {
    let Some(instances) = image.functions.get(function) else { return false };
    for instance in instances {
        if let Some(position) = instance.instructions.iter().position(|i| i.address == address) {
            let text = &instance.instructions[position].text;
            if !text.starts_with("jmp") && !text.starts_with("notrack jmp") {
                return false;
            }
            // Non-PIC tables: `jmp [index*8+table]`, no base register.
            if let Some(operand) = text.split_once("PTR [").map(|(_, o)| o) {
                let absolute = operand.split_once('*').is_some_and(|(index, rest)| {
                    !index.contains('+') && rest.starts_with("8+0x") && rest.ends_with(']')
                });
                return absolute;
            }
            let before = &instance.instructions[position.saturating_sub(4)..position];
            return before.iter().any(|i| i.text.starts_with("movsxd") && i.text.contains("*4]"));
        }
    }
    false
}

/// Disassembles an image (objdump) and reads its inline records (DWARF).
pub fn load(image: &Path, roots: &[&str]) -> Result<(Image, Vec<Inlined>)> {
    let output = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C", "-M", "intel"])
        .arg(image)
        .output()
        .context("running objdump (Debian package binutils)")?;
    if !output.status.success() {
        bail!("objdump failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let mut disassembly = parse(&String::from_utf8_lossy(&output.stdout));
    let data = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    disassembly.got = got(&data)?;
    {
        use object::{Object, ObjectSection, SectionKind};
        let file = object::File::parse(&*data).context("parsing the image as ELF")?;
        for section in file.sections().filter(|s| s.kind() == SectionKind::ReadOnlyData) {
            disassembly.rodata.push((section.address(), section.data()?.to_vec()));
        }
    }
    let wanted = |name: &str| {
        roots.contains(&name)
            || CLOSURE_BOUNDARIES.contains(&name)
            || RESOLVED.iter().any(|(_, r)| matches!(r, Resolution::Targets(t) if t.contains(&name)))
            || INLINED_RESOLUTIONS.iter().any(|(o, _)| *o == name)
    };
    let inlined = inlined(&data, &wanted).with_context(|| format!("reading DWARF of {}", image.display()))?;
    Ok((disassembly, inlined))
}

/// Checks one image file.
pub fn check(image: &Path, roots: &[&str]) -> Result<Report> {
    let (disassembly, inlined) = load(image, roots)?;
    Ok(check_image(&disassembly, roots, &inlined))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "
0000000000101000 <__rust_alloc>:
  101000:\tpush   rbp
  101001:\tcall   101100 <toro::memory::allocate>
  101006:\tret

0000000000101100 <toro::memory::allocate>:
  101100:\tmov    rax,QWORD PTR [rdi]
  101104:\tjne    101110 <toro::memory::allocate+0x10>
  101106:\tcall   101200 <core::panicking::panic>
  101108:\tcall   101300 <toro::memory::refill>
  10110c:\tret

0000000000101200 <core::panicking::panic>:
  101200:\tlock cmpxchg QWORD PTR [rip+0x10],rcx

0000000000101300 <toro::memory::refill>:
  101300:\txchg   rax,rax
  101302:\tret

0000000000101400 <toro::sync::SpinLock::lock>:
  101400:\txchg   QWORD PTR [rdi],rax

0000000000101500 <toro::cpu::send>:
  101500:\tmov    rsi,0x101600
  101507:\tcall   QWORD PTR [rip+0x100]        # 101700 <toro::cpu::SOME_STATIC>
  10150d:\tret

0000000000101600 <toro::cpu::flush_job>:
  101600:\tlock xadd QWORD PTR [rip+0x10],rax        # 101800 <toro::cpu::COUNT>
  101608:\tret

0000000000101640 <toro::cpu::helper>:
  101640:\tret

0000000000101700 <toro::cpu::SOME_STATIC>:
  101700:\tlock inc QWORD PTR [rdi]

0000000000101a00 <toro::cpu::run_incoming>:
  101a00:\tcall   rax
  101a02:\tmov    ecx,0x101640
  101a07:\tret

0000000000101b00 <toro::memory::allocation_failure_helper>:
  101b00:\tlock inc QWORD PTR [rdi]

0000000000101c00 <toro::memory::free>:
  101c00:\tcall   101b00 <toro::memory::allocation_failure_helper>
  101c05:\tmovsxd rax,DWORD PTR [rcx+rax*4]
  101c09:\tadd    rax,rcx
  101c0c:\tjmp    rax
  101c0e:\tjmp    QWORD PTR [rax*8+0x159b50]
";

    /// Alignment padding after an unconditional jump (a multi-byte `nop`
    /// no jump reaches) falls through into a loop head that a jump does
    /// reach: it must not make the register unknown there (smoltcp's
    /// multicast egress, inlined into `Instance::pump`, calls `memcpy`
    /// through a register loaded from the GOT before such a loop).
    #[test]
    fn padding_after_a_jump_does_not_hide_a_loaded_function() {
        padded_loop_keeps_the_loaded_function("data16 cs nop WORD PTR [rax+rax*1+0x0]");
    }

    /// The same with the 2-byte NOP: `Instance::pump`'s poll loop, whose
    /// 128-bit division (`now_micros`) calls the compiler's builtin through
    /// a register loaded from the GOT before the loop. (A test of its own:
    /// the data-flow cache is per thread and keyed by the function's start.)
    #[test]
    fn a_two_byte_nop_after_a_jump_does_not_hide_a_loaded_function() {
        padded_loop_keeps_the_loaded_function("xchg   ax,ax");
    }

    fn padded_loop_keeps_the_loaded_function(padding: &str) {
        let text = "
00000000001f2000 <memcpy>:
  1f2000:\tret

00000000001f2100 <toro::net::pump>:
  1f2100:\tmov    r9,QWORD PTR [rip+0x100]        # 1f3000 <__got_start>
  1f2107:\ttest   rax,rax
  1f210a:\tje     1f2130 <toro::net::pump+0x30>
  1f2110:\tcmp    rdx,rcx
  1f2113:\tjne    1f2120 <toro::net::pump+0x20>
  1f2115:\tjmp    1f2130 <toro::net::pump+0x30>
  1f2117:\tPADDING
  1f2120:\tinc    rax
  1f2123:\tjne    1f2110 <toro::net::pump+0x10>
  1f2130:\tcall   r9
  1f2133:\tret
"
        .replace("PADDING", padding);
        let mut image = parse(&text);
        image.got.insert(0x1f3000, 0x1f2000);
        let pump = &image.functions["toro::net::pump"][0];
        let call = pump.instructions.iter().position(|i| i.text.starts_with("call   r9")).unwrap();
        assert_eq!(register_through_got(&image, pump, call), Some(0x1f2000), "after `{padding}`");
    }

    #[test]
    fn parses_functions_and_transfers() {
        let image = parse(SAMPLE);
        let allocate = &image.functions["toro::memory::allocate"][0];
        assert_eq!(allocate.start, 0x101100);
        assert_eq!(allocate.instructions.len(), 5);
        assert_eq!(transfer(&allocate.instructions[2].text), Transfer::Direct(0x101200));
        assert_eq!(transfer("call   rax"), Transfer::Indirect);
        assert_eq!(
            transfer("call   QWORD PTR [rip+0x100]        # 101700 <toro::cpu::SOME_STATIC>"),
            Transfer::Indirect
        );
        assert_eq!(transfer("jmp    QWORD PTR [rax*8+0x10]"), Transfer::Indirect);
        assert_eq!(transfer("mov    rax,rbx"), Transfer::None);
    }

    /// The problems not found from the sample's job function (a root in
    /// every check).
    fn beyond_the_job(report: Report) -> Vec<Problem> {
        report.problems.into_iter().filter(|p| p.path[0] != "toro::cpu::flush_job").collect()
    }

    #[test]
    fn finds_locks_only_on_reachable_paths_and_stops_at_whole_symbols() {
        let image = parse(SAMPLE);
        let problems = beyond_the_job(check_image(&image, &["__rust_alloc"], &[]));
        assert!(problems.is_empty(), "{problems:?}");
        let report = check_image(&image, &["toro::sync::SpinLock::lock"], &[]);
        let locks: Vec<_> = report.problems.iter().filter(|p| p.what.contains("xchg")).collect();
        assert_eq!(locks.len(), 1);
        // `allocation_failure_helper` is not the excluded `allocation_failure`.
        let problems = beyond_the_job(check_image(&image, &["toro::memory::free"], &[]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let report = Report { problems, ..Report::default() };
        assert!(report.problems[0].what.contains("allocation_failure_helper"));
    }

    #[test]
    fn job_functions_are_roots_found_by_address() {
        let image = parse(SAMPLE);
        let jobs = job_functions(&image);
        assert_eq!(jobs.into_iter().collect::<Vec<_>>(), vec!["toro::cpu::flush_job".to_string()]);
        // No root at all: the job function alone is checked.
        let report = check_image(&image, &[], &[]);
        assert!(report.problems.iter().any(|p| p.what.contains("COUNT")), "{:?}", report.problems);
    }

    #[test]
    fn calls_through_memory_are_indirect_not_calls_of_the_pointer_home() {
        let image = parse(SAMPLE);
        let report = check_image(&image, &["toro::cpu::send"], &[]);
        assert!(report.problems.iter().any(|p| p.what.starts_with("unresolved indirect")), "{:?}", report.problems);
        assert!(!report.problems.iter().any(|p| p.what.contains("lock inc")), "{:?}", report.problems);
        // Job dispatch is resolved (to the job functions, all roots).
        let report = check_image(&image, &["toro::cpu::run_incoming"], &[]);
        assert!(!report.problems.iter().any(|p| p.what.starts_with("unresolved")), "{:?}", report.problems);
    }

    #[test]
    fn inlined_roots_are_checked_where_they_were_inlined() {
        let image = parse(SAMPLE);
        let inlined = vec![Inlined {
            origin: "toro::sync::channel::Receiver<T>::recv".into(),
            ranges: vec![(0x101100, 0x101104)],
            nested: Vec::new(),
            concrete: false,
        }];
        // The range holds no lock; a wider one reaches the panic (stopped)
        // and refill (no locked xchg).
        let report = check_image(&image, &["toro::sync::channel::Receiver<T>::recv"], &inlined);
        assert!(report.roots_found.contains("toro::sync::channel::Receiver<T>::recv"));
        assert!(beyond_the_job(report).is_empty());
        let inlined = vec![Inlined {
            origin: "toro::sync::channel::Receiver<T>::recv".into(),
            ranges: vec![(0x101600, 0x101608)],
            nested: Vec::new(),
            concrete: false,
        }];
        let report = check_image(&image, &["toro::sync::channel::Receiver<T>::recv"], &inlined);
        let inside: Vec<_> = report.problems.iter().filter(|p| p.path[0].contains("(inlined into")).collect();
        assert_eq!(inside.len(), 1, "{:?}", report.problems);
        assert!(inside[0].path[0].contains("inlined into toro::cpu::flush_job"));
    }

    #[test]
    fn jump_tables_are_not_calls() {
        let image = parse(SAMPLE);
        assert!(is_jump_table(&image, "toro::memory::free", 0x101c0c));
        assert!(is_jump_table(&image, "toro::memory::free", 0x101c0e));
        assert!(!is_jump_table(&image, "toro::cpu::run_incoming", 0x101a00));
    }

    #[test]
    fn names_split_into_segments() {
        assert_eq!(last_segment("toro::sync::channel::weight_back_job<u64>"), "weight_back_job");
        assert_eq!(last_segment("toro::cpu::flush_job"), "flush_job");
        assert_eq!(last_segment("<toro::x::Y<T> as core::ops::Drop>::drop"), "drop");
    }

    #[test]
    fn classifies_locking_instructions() {
        assert!(is_locking("lock cmpxchg QWORD PTR [rip+0x10],rcx"));
        assert!(is_locking("lock xadd DWORD PTR [rdi],eax"));
        assert!(is_locking("xchg   QWORD PTR [rdi],rax"));
        assert!(!is_locking("xchg   rax,rax"));
        assert!(!is_locking("mov    QWORD PTR [rdi],rax"));
    }

    /// Every function the kernel registers as an interrupt handler, storm
    /// hook or deferred work is in the lists the check resolves calls to.
    #[test]
    fn interrupt_handlers_are_listed() {
        let sources = kernel_sources();
        let mut problems = Vec::new();
        for (path, text) in &sources {
            for (field, list) in [("handler: ", INTERRUPT_HANDLERS), ("on_storm: Some(", STORM_HANDLERS)] {
                for (at, rest) in text.match_indices(field).map(|(i, _)| (i, text.split_at(i + field.len()).1)) {
                    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
                    if text[line_start..at].trim_start().starts_with("//") {
                        continue;
                    }
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if name == "Handler" || name.is_empty() {
                        continue;
                    }
                    if !list.iter().any(|full| last_segment(full) == name) {
                        problems.push(format!("{}: {field}{name} is not listed", path.display()));
                    }
                }
            }
            for (_, rest) in text.match_indices("add_deferred(").map(|(i, _)| text.split_at(i + 13)) {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if name != "run" && !DEFERRED_WORK.iter().any(|full| last_segment(full) == name) {
                    problems.push(format!("{}: add_deferred({name}) is not in DEFERRED_WORK", path.display()));
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// The check treats smoltcp's timestamp generator as never called.
    #[test]
    fn no_tcp_timestamp_generator() {
        let root = crate::build::workspace_root();
        for directory in ["kernel", "net"] {
            for (path, text) in sources_under(&root.join(directory).join("src")) {
                assert!(!text.contains("set_tsval_generator"), "{} sets a TCP timestamp generator", path.display());
            }
        }
    }

    fn kernel_sources() -> Vec<(std::path::PathBuf, String)> {
        sources_under(&crate::build::workspace_root().join("kernel").join("src"))
    }

    fn sources_under(directory: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
        let mut found = Vec::new();
        let mut paths = vec![directory.to_path_buf()];
        while let Some(path) = paths.pop() {
            if path.is_dir() {
                paths.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
        found
    }

    /// Every function sent as a message (`cpu::send_to`, `cpu::on_cpu`,
    /// `cpu::send_if_room`, and the wrappers `on_home`, `on_thread_cpu`)
    /// is named `*_job`, or the call forwards its caller's `run`: so finding
    /// job functions by address and name finds them all. (`cpu::Job` is
    /// private to `cpu.rs`: the compiler keeps every message on these.)
    #[test]
    fn job_functions_follow_the_naming_convention() {
        const SENDERS: &[&str] = &["send_to(", "on_cpu(", "send_if_room(", "on_home(", "on_thread_cpu("];
        let mut problems = Vec::new();
        for (path, text) in kernel_sources() {
            for sender in SENDERS {
                for (index, _) in text.match_indices(sender) {
                    let before = &text[..index];
                    let preceding = before.chars().next_back();
                    if before.ends_with("fn ") || preceding.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue; // a definition, or a longer name
                    }
                    let wrapper = matches!(*sender, "on_home(" | "on_thread_cpu(");
                    if !wrapper && !before.ends_with("cpu::") && !before.ends_with("messages::") {
                        continue; // another `send_to` (a socket's, say)
                    }
                    let line = before.lines().last().unwrap_or("").trim_start();
                    if line.starts_with("//") {
                        continue;
                    }
                    let arguments = call_arguments(&text[index + sender.len()..]);
                    let named = arguments.iter().any(|argument| {
                        let name = argument.split("::<").next().unwrap_or("");
                        last_segment(name).ends_with("_job") || argument == "run"
                    });
                    if !named {
                        let number = before.lines().count();
                        problems.push(format!(
                            "{}:{number}: {sender}{}) sends no *_job",
                            path.display(),
                            arguments.join(", ")
                        ));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// The top-level arguments of a call whose text starts after its `(`.
    fn call_arguments(text: &str) -> Vec<String> {
        let mut arguments = vec![String::new()];
        let mut depth = 0usize;
        for c in text.chars() {
            match c {
                '(' | '[' | '{' | '<' => depth += 1,
                ')' | ']' | '}' | '>' if depth == 0 => break,
                ')' | ']' | '}' | '>' => depth -= 1,
                ',' if depth == 0 => {
                    arguments.push(String::new());
                    continue;
                }
                _ => {}
            }
            arguments.last_mut().unwrap().push(c);
        }
        arguments
            .into_iter()
            .map(|a| a.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|a| !a.is_empty())
            .collect()
    }
}
