//! The owner of a mounted filesystem: its state lives on one CPU and every
//! operation runs there.
//!
//! `Owner::call(f)` runs `f(&mut state)` on the owner CPU: a thread on
//! another CPU migrates there (`thread::migrate_to`, one message through
//! the CPU-pair ring), runs the request under the owner-homed mutex (on
//! its home CPU a plain check-and-set: requests that block inside, e.g. on
//! disk I/O, do not interleave) and migrates back. No lock instruction.
//!
//! This is the interim form of the kernel's service model
//! (`toro::service::Handle<S>`, same `call` shape): when that lands,
//! `Owner<S>` becomes `Handle<S>` and this file goes.

use crate::sync::Mutex;
use crate::thread;

/// State kept and used only on CPU `cpu`.
pub(crate) struct Owner<S> {
    cpu: usize,
    state: Mutex<S>,
}

impl<S: Send> Owner<S> {
    /// Makes the state with `init` on CPU `cpu` (so its memory comes from
    /// that CPU's share) and returns the owner.
    pub(crate) fn start<E>(cpu: usize, init: impl FnOnce() -> Result<S, E>) -> Result<Owner<S>, StartError<E>> {
        let home = crate::cpu_id() as usize;
        if cpu != home {
            thread::migrate_to(cpu).map_err(|_| StartError::NoSuchCpu(cpu))?;
        }
        let state = init();
        if cpu != home {
            thread::migrate_to(home).expect("the calling CPU is up");
        }
        Ok(Owner { cpu, state: Mutex::new_on(cpu, state.map_err(StartError::Init)?) })
    }

    /// The owner CPU.
    pub(crate) fn cpu(&self) -> usize {
        self.cpu
    }

    /// Runs `function` with the state, on the owner CPU.
    pub(crate) fn call<R: Send>(&self, function: impl FnOnce(&mut S) -> R + Send) -> R {
        let home = crate::cpu_id() as usize;
        if home != self.cpu {
            thread::migrate_to(self.cpu).expect("a filesystem's owner CPU stays up");
        }
        let result = {
            let mut state = self.state.lock();
            function(&mut state)
        };
        if home != self.cpu {
            thread::migrate_to(home).expect("the calling CPU stays up");
        }
        result
    }
}

/// Why [`Owner::start`] failed.
#[derive(Debug)]
pub(crate) enum StartError<E> {
    /// No such CPU (or it is not up).
    NoSuchCpu(usize),
    /// The state's constructor failed.
    Init(E),
}
