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
    stat_at(&format!("/proc/{pid}/stat"))
}

fn stat_at(path: &str) -> Option<Stat> {
    use std::io::Read;
    // One read: the kernel formats the whole file on every read call, and
    // `read_to_string` would make five small ones (this runs once a step).
    let mut buf = [0u8; 2048];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
    // The command name may hold spaces and parens: fields follow the last `)`.
    let fields: Vec<&str> = text.rsplit_once(") ")?.1.split(' ').collect();
    // After `pid (comm)`: state ppid pgrp session ...; starttime is field 22.
    Some(Stat {
        pgrp: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

/// What tells a group the engine started from a later one with the same
/// id: the leader's session and a window holding its start time, in clock
/// ticks since boot as `/proc/PID/stat` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    pub sid: u32,
    pub started: u64,
    pub started_until: u64,
    /// The boot of the machine it ran on (`/proc/sys/kernel/random/boot_id`
    /// as a number; 0: not recorded): a group of another machine, or of
    /// this one before a reboot, is never this machine's to kill.
    pub boot: u128,
}

/// This boot of this machine, read once (0 when the kernel does not say).
pub fn boot_id() -> u128 {
    static BOOT: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|t| u128::from_str_radix(&t.trim().replace('-', ""), 16).ok())
            .unwrap_or(0)
    })
}

impl Leader {
    /// The leader of a child this process spawned between `before` and now
    /// (from [`boot_ticks`]): in our session, started within that window.
    /// No `/proc` read: that costs more than the rest of a step's
    /// bookkeeping (the kernel formats the whole file, walking the
    /// process's memory map). Without the clock, read it.
    pub fn spawned(pid: u32, before: Option<u64>) -> Option<Leader> {
        match (before, boot_ticks()) {
            (Some(started), Some(started_until)) => Some(Leader {
                sid: own_session()?,
                started,
                started_until,
                boot: boot_id(),
            }),
            _ => stat(pid).map(|s| Leader {
                sid: s.sid,
                started: s.started,
                started_until: s.started,
                boot: boot_id(),
            }),
        }
    }
}

/// This process's session as `/proc` shows it, read once. Not `getsid`:
/// in a PID namespace whose session leader is outside it the kernel says
/// 0, which rustix's `Pid` cannot hold (regression test
/// `a_run_in_a_pid_namespace_whose_session_is_outside_it`), and `/proc`
/// shows the leaders' sessions the same way.
fn own_session() -> Option<u32> {
    static SESSION: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *SESSION.get_or_init(|| stat_at("/proc/self/stat").map(|s| s.sid))
}

/// Now, in the clock ticks since boot that `/proc/PID/stat` gives a
/// process's start time in (`CLOCK_BOOTTIME`, as the kernel stamps a new
/// process, divided the way it divides it).
pub fn boot_ticks() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let ns = u64::try_from(t.tv_sec)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(t.tv_nsec).ok()?)?;
    let per_tick = 1_000_000_000 / rustix::param::clock_ticks_per_second().max(1);
    Some(ns / per_tick.max(1))
}

/// The process group a dead engine's attempt left running, killed if it is
/// still that group: its leader alive with the recorded start time, or, the
/// leader gone, members in the recorded session (the kernel gives a live
/// group's id to no new process, so a group without its leader is still
/// ours unless every member is in another session). True if it was killed.
pub fn kill_leftover(pgid: u32, recorded: Leader) -> bool {
    let Some(group) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    if recorded.boot != 0 && recorded.boot != boot_id() {
        return false;
    }
    let ours = match stat(pgid) {
        Some(leader) => (recorded.started..=recorded.started_until).contains(&leader.started),
        None => members(pgid).iter().any(|m| m.sid == recorded.sid),
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
