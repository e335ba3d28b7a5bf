//! The process group a step's child leads, and what kills it.
//!
//! Shell steps and command metrics start their child with `process_group(0)`,
//! so the child's pid is also the id of a new group holding everything it
//! starts. Signalling the group (not the child) is what stops grandchildren
//! too. The guard kills the group when dropped, so a step future that is
//! abandoned (a second Ctrl-C, a timeout racing the work) leaves nothing
//! running; a caller whose child ended on its own disarms it first.

use rustix::process::{kill_process_group, Pid, Signal};

/// A process's session id and start time (clock ticks after boot), from
/// `/proc/PID/stat`: with the pid, what tells it from a later process that
/// got the same pid.
pub fn identity(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parens: fields follow the last `)`.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    // After `pid (comm)`: state ppid pgrp session ... starttime is field 22.
    let sid = fields.get(3)?.parse().ok()?;
    let started = fields.get(19)?.parse().ok()?;
    Some((sid, started))
}

/// The process group a dead engine's attempt left running, killed if it is
/// still that group: its leader alive with the recorded start time, or, the
/// leader gone, members in the recorded session (the kernel gives a live
/// group's id to no new process, so a group without its leader is still
/// ours unless every member is in another session). True if it was killed.
pub fn kill_leftover(pgid: u32, sid: u32, started: u64) -> bool {
    let Some(group) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    let ours = match identity(pgid) {
        Some((_, leader_started)) => leader_started == started,
        None => members(pgid)
            .into_iter()
            .any(|pid| identity(pid).is_some_and(|(s, _)| s == sid)),
    };
    ours && kill_process_group(group, Signal::KILL).is_ok()
}

/// Pids of the processes in group `pgid`.
fn members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(2)?.parse::<u32>().ok())
                    == Some(pgid)
            })
        })
        .collect()
}

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
