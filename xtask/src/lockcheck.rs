//! Proof by disassembly that cross-CPU paths take no lock: every function
//! reachable by calls from the given roots is searched for `lock`-prefixed
//! instructions and `xchg` with a memory operand (which locks implicitly).
//!
//! Reachability follows direct `call`/`jmp` targets in `objdump -d` output.
//! The walk stops at the cold paths named in `STOP_AT` (panics and the
//! allocation-failure report print through the console, whose spin lock is
//! allowed: they end the VM or run once). Indirect calls cannot be followed;
//! the hot paths checked here make none (a root that does is reported).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Function-name fragments where the walk stops (cold, fatal or reporting
/// paths).
pub const STOP_AT: &[&str] = &[
    "core::panicking::",
    "core::option::expect_failed",
    "core::result::unwrap_failed",
    "rust_begin_unwind",
    "allocation_failure",
    "core::slice::index::",
    "core::fmt::",
];

/// A disassembled function.
#[derive(Default, Debug)]
pub struct Function {
    /// Instructions as objdump prints them (mnemonic and operands).
    pub instructions: Vec<String>,
    /// Names of functions it calls or jumps to directly.
    pub callees: BTreeSet<String>,
    /// Whether it makes an indirect call.
    pub indirect_calls: bool,
}

/// Parses `objdump -d --no-show-raw-insn -C -M intel` output.
pub fn parse(disassembly: &str) -> BTreeMap<String, Function> {
    let mut functions: BTreeMap<String, Function> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in disassembly.lines() {
        if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")).map(|(_, name)| name) {
            current = Some(name.to_string());
            functions.entry(name.to_string()).or_default();
            continue;
        }
        let Some(name) = &current else { continue };
        let Some((_, instruction)) = line.split_once(":\t") else { continue };
        let instruction = instruction.trim().to_string();
        let function = functions.get_mut(name).expect("inserted above");
        let mnemonic = instruction.split_whitespace().next().unwrap_or("");
        if mnemonic == "call" || mnemonic.starts_with('j') {
            match instruction.split_once(" <").and_then(|(_, target)| target.strip_suffix('>')) {
                Some(target) => {
                    // `<name+0x12>` inside a function is a local jump.
                    let target = target.split('+').next().unwrap_or(target);
                    if target != name {
                        function.callees.insert(target.to_string());
                    }
                }
                None if mnemonic == "call" => function.indirect_calls = true,
                None => {}
            }
        }
        function.instructions.push(instruction);
    }
    functions
}

/// Whether an instruction takes a bus lock.
pub fn is_locking(instruction: &str) -> bool {
    let mut words = instruction.split_whitespace();
    let mnemonic = words.next().unwrap_or("");
    mnemonic == "lock" || (mnemonic == "xchg" && instruction.contains('['))
}

/// Every locking instruction reachable from `roots`, as
/// `(function, instruction, path from the root)`.
pub fn find_locks(
    functions: &BTreeMap<String, Function>,
    roots: &[&str],
) -> Result<Vec<(String, String, Vec<String>)>> {
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<Vec<String>> = VecDeque::new();
    for root in roots {
        let matching: Vec<&String> =
            functions.keys().filter(|name| name.as_str() == *root || name.starts_with(&format!("{root}::"))).collect();
        if matching.is_empty() {
            bail!("no function named {root} in the image");
        }
        for name in matching {
            queue.push_back(vec![name.clone()]);
        }
    }
    while let Some(path) = queue.pop_front() {
        let name = path.last().expect("paths are never empty").clone();
        if !seen.insert(name.clone()) || STOP_AT.iter().any(|stop| name.contains(stop)) {
            continue;
        }
        let Some(function) = functions.get(&name) else { continue };
        for instruction in function.instructions.iter().filter(|i| is_locking(i)) {
            found.push((name.clone(), instruction.clone(), path.clone()));
        }
        for callee in &function.callees {
            let mut next = path.clone();
            next.push(callee.clone());
            queue.push_back(next);
        }
    }
    Ok(found)
}

/// Disassembles `image` and checks the paths from `roots`; returns a list
/// of problems (empty = lock-free).
pub fn check(image: &Path, roots: &[&str]) -> Result<Vec<String>> {
    let output = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C", "-M", "intel"])
        .arg(image)
        .output()
        .context("running objdump (Debian package binutils)")?;
    if !output.status.success() {
        bail!("objdump failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let functions = parse(&String::from_utf8_lossy(&output.stdout));
    let locks = find_locks(&functions, roots)?;
    Ok(locks
        .into_iter()
        .map(|(function, instruction, path)| {
            format!("`{instruction}` in {function} (reached by {})", path.join(" -> "))
        })
        .collect())
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
";

    #[test]
    fn parses_functions_calls_and_local_jumps() {
        let functions = parse(SAMPLE);
        let allocate = &functions["toro::memory::allocate"];
        assert_eq!(allocate.instructions.len(), 5);
        assert!(allocate.callees.contains("core::panicking::panic"));
        assert!(allocate.callees.contains("toro::memory::refill"));
        assert!(!allocate.callees.contains("toro::memory::allocate"));
    }

    #[test]
    fn finds_locks_only_on_reachable_hot_paths() {
        let functions = parse(SAMPLE);
        assert!(find_locks(&functions, &["__rust_alloc"]).unwrap().is_empty());
        let locks = find_locks(&functions, &["toro::sync::SpinLock::lock"]).unwrap();
        assert_eq!(locks.len(), 1);
        assert!(locks[0].1.starts_with("xchg"));
        assert!(find_locks(&functions, &["missing"]).is_err());
    }

    #[test]
    fn classifies_locking_instructions() {
        assert!(is_locking("lock cmpxchg QWORD PTR [rip+0x10],rcx"));
        assert!(is_locking("lock xadd DWORD PTR [rdi],eax"));
        assert!(is_locking("xchg   QWORD PTR [rdi],rax"));
        assert!(!is_locking("xchg   rax,rax"));
        assert!(!is_locking("mov    QWORD PTR [rdi],rax"));
    }
}
