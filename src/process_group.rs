//! The process group a step's child leads, and what kills it.
//!
//! Shell steps and command metrics start their child with `process_group(0)`,
//! so the child's pid is also the id of a new group holding everything it
//! starts. Signalling the group (not the child) is what stops grandchildren
//! too. The guard kills the group when dropped, so a step future that is
//! abandoned (a second Ctrl-C, a timeout racing the work) leaves nothing
//! running; a caller whose child ended on its own disarms it first.

use rustix::process::{kill_process_group, Pid, Signal};

/// What `/proc/PID/stat` says of a process: its group, its session, and
/// its start time (clock ticks after boot), which with the pid tells it
/// from a later process that got the same pid.
struct Stat {
    pgrp: u32,
    sid: u32,
    started: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parens: fields follow the last `)`.
    let fields: Vec<&str> = text.rsplit_once(") ")?.1.split(' ').collect();
    // After `pid (comm)`: state ppid pgrp session ...; starttime is field 22.
    Some(Stat {
        pgrp: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

/// A process's session id and start time, to journal with its group.
pub fn identity(pid: u32) -> Option<(u32, u64)> {
    stat(pid).map(|s| (s.sid, s.started))
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
    let ours = match stat(pgid) {
        Some(leader) => leader.started == started,
        None => members(pgid).iter().any(|m| m.sid == sid),
    };
    ours && kill_process_group(group, Signal::KILL).is_ok()
}

/// The processes in group `pgid`.
fn members(pgid: u32) -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|s| s.pgrp == pgid)
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
