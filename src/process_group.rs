//! The process group a step's child leads, and what kills it.
//!
//! Shell steps and command metrics start their child with `process_group(0)`,
//! so the child's pid is also the id of a new group holding everything it
//! starts. Signalling the group (not the child) is what stops grandchildren
//! too. The guard kills the group when dropped, so a step future that is
//! abandoned (a second Ctrl-C, a timeout racing the work) leaves nothing
//! running; a caller whose child ended on its own disarms it first.

use rustix::process::{kill_process_group, Pid, Signal};

/// The group led by a child started with `process_group(0)`; SIGKILLed when
/// dropped unless disarmed.
pub struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    /// The group of `child`, or none if the child has already been reaped.
    pub fn of(child: &tokio::process::Child) -> ProcessGroup {
        ProcessGroup {
            pgid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw),
        }
    }

    /// Sends `sig` to every process in the group. A group that is gone
    /// already (ESRCH) has nothing left to signal, so errors are ignored.
    pub fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = kill_process_group(pgid, sig);
        }
    }

    /// Leaves the group alone when dropped: what the child left running in
    /// the background was left on purpose.
    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}
