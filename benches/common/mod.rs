//! What the engine benches share: the runbooks they generate, running the
//! release binary on one and reaping it with its rusage, medians, and where
//! their state dirs go.

#![allow(dead_code)] // each bench uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary measured: this build's, or `$BENCH_BIN` (another build, to
/// compare two in the same conditions).
pub(crate) fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_runbook").to_string())
}

/// What one `runbook run` took.
pub(crate) struct EngineRun {
    pub time: Duration,
    /// User + system time of the engine and the steps it reaped.
    pub cpu: Duration,
    pub rss_kib: u64,
}

/// Runs `runbook run FILE` with the fresh state dir `state` (removed
/// after), output to /dev/null.
#[allow(clippy::zombie_processes)] // reaped by `wait4`, for its rusage
pub(crate) fn run_engine(file: &Path, state: &Path) -> EngineRun {
    let started = Instant::now();
    let bin = bin();
    let child = Command::new(&bin)
        .arg("run")
        .arg(file)
        .arg("--state-dir")
        .arg(state)
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runbook");
    let (status, rss_kib, cpu) = wait4(child.id());
    let time = started.elapsed();
    assert_eq!(
        status,
        0,
        "`{bin} run {}` failed (wait status {status})",
        file.display()
    );
    let _ = std::fs::remove_dir_all(state);
    EngineRun { time, cpu, rss_kib }
}

/// A chain of `n` shell steps running `cmd`, each waiting for the one
/// before (the default `needs`).
pub(crate) fn chain_yaml(n: usize, cmd: &str) -> String {
    let mut s = String::from("version: 1\nname: bench\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  - id: s{i}\n    shell: {cmd:?}\n"));
    }
    s
}

fn cpu(ru: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Waits for `pid`; returns its exit status, peak RSS in KiB, and the CPU
/// time (user + system) of it and the children it reaped (its steps).
pub(crate) fn wait4(pid: u32) -> (i32, u64, Duration) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; pid is our unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid as i32, "wait4 failed");
    (status, u64::try_from(ru.ru_maxrss).unwrap_or(0), cpu(&ru))
}

/// CPU time of the reaped children of this process so far.
pub(crate) fn children_cpu() -> Duration {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    cpu(&ru)
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A fresh temporary dir for state dirs, under `$BENCH_DIR` (default: the
/// project's `target/`, the disk a project's state would be on).
pub(crate) fn bench_dir(prefix: &str) -> tempfile::TempDir {
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).expect("create the bench dir");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .expect("create a temporary dir")
}
