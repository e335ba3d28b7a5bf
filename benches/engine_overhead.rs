//! What the engine costs per step, beyond the processes it starts.
//!
//! `cargo bench --bench engine_overhead` generates a chain of N `true` shell
//! steps, runs it with the release binary (`runbook run`, plain output to
//! /dev/null, a fresh state dir each time) and compares the wall time with
//! spawning `bash -eo pipefail -c true` N times in a plain loop (stdout and
//! stderr piped and read, as the engine does). The difference divided by N is
//! the per-step overhead: scheduling, events, the view, and the journal,
//! synced once a step. `true` now runs no process at all (a simple command
//! decided in the engine), so the difference is below zero: what it shows
//! is the engine's own cost per step against bash's; `step_overhead` compares
//! like with like.
//! The same chain is also run with the state dir on /dev/shm (tmpfs, where
//! fsync is free): the gap between the two is the price of durability on the
//! disk the bench runs on.
//!
//! Peak RSS (`wait4`'s `ru_maxrss`) is given for the run and, to tell what
//! loading costs from what running costs, for `runbook validate` of the same
//! file.
//!
//! Set `BENCH_SIZES=1000,5000` (default) or `BENCH_ITERS=3` (default; medians
//! are reported) to change the defaults; `BENCH_DIR` picks where the on-disk
//! state dirs go (default: a temporary dir under `target/`, i.e. the same
//! disk as a project's `.runbook`).

#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)] // a benchmark harness: it may panic, and counts allocations

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{bin, children_cpu, median, ms, run_engine, wait4, EngineRun};

/// Writes the chain of `n` steps into `dir` (once) and returns its path.
fn chain_file(dir: &Path, n: usize) -> PathBuf {
    let file = dir.join(format!("chain-{n}.yaml"));
    if !file.exists() {
        std::fs::write(&file, common::chain_yaml(n, "true")).expect("write the runbook");
    }
    file
}

/// `runbook run` on the chain, with a fresh state dir under `state_base`.
fn engine(dir: &Path, state_base: &Path, n: usize, iter: usize) -> EngineRun {
    run_engine(
        &chain_file(dir, n),
        &state_base.join(format!("state-{n}-{iter}")),
    )
}

/// Peak RSS of `runbook validate` on the chain: what loading alone costs.
#[allow(clippy::zombie_processes)] // reaped by `wait4`, for its rusage
fn validate_rss(dir: &Path, n: usize) -> u64 {
    let file = chain_file(dir, n);
    let child = Command::new(bin())
        .arg("validate")
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .expect("start runbook");
    let (status, rss, _) = wait4(child.id());
    assert_eq!(status, 0, "runbook validate failed");
    rss
}

/// Wall time and the children's CPU time of spawning bash `n` times.
fn plain_loop(n: usize) -> (Duration, Duration) {
    let cpu_before = children_cpu();
    let started = Instant::now();
    for _ in 0..n {
        let out = Command::new("bash")
            .args(["-eo", "pipefail", "-c", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("start bash");
        assert!(out.status.success());
    }
    (started.elapsed(), children_cpu().saturating_sub(cpu_before))
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let sizes = env_list("BENCH_SIZES", &[1000, 5000]);
    let iters = env_list("BENCH_ITERS", &[3])[0].max(1);
    let dir = common::bench_dir("engine-overhead-");
    // The same runs with the state dir in memory, where fsync costs nothing:
    // the difference is what durability (the fsync'd journal) costs.
    let shm = tempfile::Builder::new()
        .prefix("engine-overhead-")
        .tempdir_in("/dev/shm")
        .ok();

    println!("engine overhead: chain of `true` steps, median of {iters} runs");
    println!("binary: {}", bin());
    println!("state dir on disk: {}", dir.path().display());
    println!(
        "{:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
        "steps",
        "loop wall",
        "engine",
        "per step",
        "engine shm",
        "per step",
        "CPU/step",
        "RSS run",
        "RSS valid."
    );
    for &n in &sizes {
        // Warm up (page cache, the binary, bash).
        let _ = engine(dir.path(), dir.path(), n.min(50), 0);
        let _ = plain_loop(n.min(50));
        let (mut disk, mut mem, mut loop_wall, mut loop_cpu) = (vec![], vec![], vec![], vec![]);
        let mut cpu = Vec::new();
        let mut rss = Vec::new();
        for i in 0..iters {
            // Interleaved, so a change in machine load hits every side.
            let r = engine(dir.path(), dir.path(), n, i);
            disk.push(r.time);
            cpu.push(r.cpu);
            rss.push(r.rss_kib);
            if let Some(shm) = &shm {
                let r = engine(dir.path(), shm.path(), n, i);
                mem.push(r.time);
                cpu.push(r.cpu);
                rss.push(r.rss_kib);
            }
            let (wall, c) = plain_loop(n);
            loop_wall.push(wall);
            loop_cpu.push(c);
        }
        let l = median(loop_wall);
        let per_step = |t: Duration| format!("{:.3}ms", ms(t.saturating_sub(l)) / n as f64);
        let e = median(disk);
        let (m, m_step) = if mem.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let m = median(mem);
            (format!("{:.0}ms", ms(m)), per_step(m))
        };
        // CPU: the engine and its steps, minus the loop's bash processes.
        let cpu_step = ms(median(cpu).saturating_sub(median(loop_cpu))) / n as f64;
        let mib = |kib: u64| format!("{:.1}MiB", kib as f64 / 1024.0);
        println!(
            "{n:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
            format!("{:.0}ms", ms(l)),
            format!("{:.0}ms", ms(e)),
            per_step(e),
            m,
            m_step,
            format!("{cpu_step:.3}ms"),
            mib(rss.iter().copied().max().unwrap_or(0)),
            mib(validate_rss(dir.path(), n)),
        );
    }
    println!(
        "per step: (engine - loop) wall time / steps, state dir on disk, then in /dev/shm (no fsync cost)"
    );
    println!("CPU/step: (engine + its steps - the loop's bash) user+sys CPU / steps");
    println!(
        "RSS: peak (wait4 ru_maxrss) of `runbook run`, and of `runbook validate` of the same file"
    );
}
