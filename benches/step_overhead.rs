//! Per-step overhead of `runbook run` over the processes it starts, workload
//! by workload, each paired in the same run with a fork+exec floor of the
//! same commands (A B A B ..., medians): what issue "Per-step overhead at the
//! limit of a durable engine" measures.
//!
//! `cargo bench --bench step_overhead` runs, with the release binary and the
//! journal on disk (fsync on):
//!
//! - a chain of 500 `true` steps (a shell builtin: no process at all now),
//!   and of 500 `/bin/true` steps; floor: 500 spawns of `/bin/true`;
//! - 500 independent `/bin/true` steps at `concurrency: 2`; floor: the same
//!   spawns, two at a time;
//! - a chain of 200 `sleep 0.01` steps; floor: 200 spawns of `sleep 0.01`;
//! - a one-step run (wall time; floor: one spawn);
//! - then, once each, the peak RSS of 10,000-step chains of `true` and
//!   `/bin/true`.
//!
//! It prints ms/step over the floor and peak RSS, runs `make` and `just` on
//! the same chains when they are installed and says so when they are not,
//! and measures the disk's fsync latency in the same run: back to back, and
//! as a step meets it, after a process ran. Beside the fork+exec floor it
//! measures a durable floor (the same spawns, each after one append +
//! fdatasync), so what the engine adds beyond the one cost a durable engine
//! cannot avoid shows on its own (`over dur.`).
//! `BENCH_ITERS` (default 10) sets the pairs per workload; `BENCH_BIN` another
//! build of `runbook` to measure (default: this one); `BENCH_DIR` where
//! state dirs go (default: under `target/`); `BENCH_ONLY=TEXT` runs only the
//! workloads whose name contains TEXT.

#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)] // a benchmark harness

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{bin, chain_yaml, median, ms, run_engine};

struct Workload {
    name: &'static str,
    steps: usize,
    /// The runbook.
    yaml: String,
    /// The commands of the floor, and how many run at once.
    floor: (Vec<&'static str>, usize),
    /// A Makefile doing the same, when make can express it.
    makefile: Option<String>,
    /// A justfile doing the same, likewise.
    justfile: Option<String>,
}

fn parallel_yaml(n: usize, cmd: &str, concurrency: usize) -> String {
    let mut s = format!("version: 1\nname: bench\nconcurrency: {concurrency}\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - id: s{i}\n    needs: []\n    shell: {cmd:?}\n"
        ));
    }
    s
}

/// A justfile doing the same: recipe `tN` depends on `tN-1`.
fn chain_justfile(n: usize, cmd: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        let dep = if i == 0 {
            String::new()
        } else {
            format!(" t{}", i - 1)
        };
        s.push_str(&format!("t{i}:{dep}\n\t@{cmd}\n"));
    }
    s
}

fn chain_makefile(n: usize, cmd: &str) -> String {
    let mut s = String::from(".PHONY:");
    for i in 0..n {
        s.push_str(&format!(" t{i}"));
    }
    s.push('\n');
    for i in 0..n {
        let dep = if i == 0 {
            String::new()
        } else {
            format!("t{}", i - 1)
        };
        s.push_str(&format!("t{i}: {dep}\n\t@{cmd}\n"));
    }
    s
}

impl Workload {
    /// `n` steps running `cmd`, one after another; the floor runs `floor` `n` times.
    fn chain(name: &'static str, n: usize, cmd: &str, floor: &'static str) -> Workload {
        Workload {
            name,
            steps: n,
            yaml: chain_yaml(n, cmd),
            floor: (vec![floor; n], 1),
            makefile: (n > 1).then(|| chain_makefile(n, cmd)),
            justfile: (n > 1).then(|| chain_justfile(n, cmd)),
        }
    }
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload::chain("chain of `true`", 500, "true", "/bin/true"),
        Workload::chain("chain of `/bin/true`", 500, "/bin/true", "/bin/true"),
        Workload {
            name: "500 independent `/bin/true`, 2 at a time",
            steps: 500,
            yaml: parallel_yaml(500, "/bin/true", 2),
            floor: (vec!["/bin/true"; 500], 2),
            makefile: None,
            justfile: None,
        },
        Workload::chain("chain of `sleep 0.01`", 200, "sleep 0.01", "sleep 0.01"),
        Workload::chain("one-step run", 1, "/bin/true", "/bin/true"),
    ]
}

/// Spawns each command (fork+exec, no shell), `at_once` at a time, reading
/// their piped output as the engine does. With `journal`, it is the durable
/// floor: before each spawn, and once at the end, every thread appends a
/// record's worth of bytes to a new file there and fdatasyncs it, as
/// "journal before acting" asks at the least (the engine's own records,
/// schedule and views are what it costs beyond that).
fn floor(cmds: &[&str], at_once: usize, journal: Option<&Path>) -> Duration {
    let run = |cmd: &str| {
        let mut words = cmd.split(' ');
        let out = Command::new(words.next().unwrap())
            .args(words)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("spawn");
        assert!(out.status.success());
    };
    let started = Instant::now();
    let file = journal.map(|p| std::fs::File::create(p).expect("create the floor's journal"));
    let record = |f: &std::fs::File| {
        let mut f = f;
        f.write_all(&[b'x'; RECORD_BYTES]).expect("append");
        f.sync_data().expect("fdatasync");
    };
    std::thread::scope(|s| {
        for part in cmds.chunks(cmds.len().div_ceil(at_once)) {
            let file = file.as_ref();
            s.spawn(move || {
                for c in part {
                    file.inspect(|f| record(f));
                    run(c);
                }
            });
        }
    });
    if let Some(f) = &file {
        record(f);
    }
    let took = started.elapsed();
    if let Some(p) = journal {
        let _ = std::fs::remove_file(p);
    }
    took
}

/// About what the engine journals between two steps of a chain (a
/// `step_finished` and the next `step_started`).
const RECORD_BYTES: usize = 280;

fn tool(name: &str, args: &[&str], dir: &Path) -> Option<Duration> {
    let started = Instant::now();
    let ok = Command::new(name)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| started.elapsed())
}

fn installed(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Median latency of appending a small record and `fdatasync`ing it, in
/// `dir`, after `before` (nothing: back to back, the disk at its best).
fn fsync_latency(dir: &Path, before: impl Fn()) -> Duration {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("create the probe");
    let mut times = Vec::new();
    for _ in 0..100 {
        before();
        let t = Instant::now();
        f.write_all(&[b'x'; RECORD_BYTES]).expect("write");
        f.sync_data().expect("fdatasync");
        times.push(t.elapsed());
    }
    let _ = std::fs::remove_file(path);
    median(times)
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let dir = common::bench_dir("step-overhead-");
    let (make, just) = (installed("make"), installed("just"));
    println!("step overhead over a fork+exec floor, paired, median of {iters} pairs");
    println!(
        "binary: {}; state dirs on disk under {}",
        bin(),
        dir.path().display()
    );
    // A step's sync comes after its process ran (or slept): on a virtual
    // disk that costs more than syncs back to back.
    let spawn = |cmd: &str| {
        let mut words = cmd.split(' ');
        let _ = Command::new(words.next().unwrap()).args(words).status();
    };
    println!(
        "fsync ({RECORD_BYTES}-byte append + fdatasync) on that disk, medians: {:.3}ms back to back, \
         {:.3}ms after a `/bin/true`, {:.3}ms after a `sleep 0.01`",
        ms(fsync_latency(dir.path(), || {})),
        ms(fsync_latency(dir.path(), || spawn("/bin/true"))),
        ms(fsync_latency(dir.path(), || spawn("sleep 0.01"))),
    );
    println!(
        "make: {}; just: {}",
        if make {
            "installed, run on the chains"
        } else {
            "not installed"
        },
        if just {
            "installed, run on the chains"
        } else {
            "not installed"
        }
    );
    println!(
        "\n{:<44} {:>6} {:>10} {:>10} {:>10} {:>11} {:>11} {:>9} {:>11} {:>11}",
        "workload",
        "steps",
        "floor",
        "durable",
        "runbook",
        "over/step",
        "over dur.",
        "RSS",
        "make/step",
        "just/step"
    );
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (k, w) in workloads().iter().enumerate() {
        if !w.name.contains(&only) {
            continue;
        }
        let file = dir.path().join(format!("w{k}.yaml"));
        std::fs::write(&file, &w.yaml).expect("write the runbook");
        let makefile = w.makefile.as_ref().map(|m| {
            let p = dir.path().join(format!("w{k}.mk"));
            std::fs::write(&p, m).expect("write the makefile");
            p
        });
        let justfile = w.justfile.as_ref().map(|j| {
            let p = dir.path().join(format!("w{k}.just"));
            std::fs::write(&p, j).expect("write the justfile");
            p
        });
        // Warm up the page cache and the binary.
        let _ = run_engine(&file, &dir.path().join("warm"));
        let (mut eng, mut flo, mut dur, mut mk, mut jt, mut rss) =
            (vec![], vec![], vec![], vec![], vec![], 0);
        let journal = dir.path().join("floor-journal");
        for i in 0..iters {
            let r = run_engine(&file, &dir.path().join(format!("st-{k}-{i}")));
            eng.push(r.time);
            rss = rss.max(r.rss_kib);
            flo.push(floor(&w.floor.0, w.floor.1, None));
            dur.push(floor(&w.floor.0, w.floor.1, Some(&journal)));
            if let (true, Some(m)) = (make, &makefile) {
                let last = format!("t{}", w.steps - 1);
                if let Some(t) = tool(
                    "make",
                    &["-s", "-f", &m.display().to_string(), &last],
                    dir.path(),
                ) {
                    mk.push(t);
                }
            }
            if let (true, Some(j)) = (just, &justfile) {
                let last = format!("t{}", w.steps - 1);
                if let Some(t) = tool("just", &["-f", &j.display().to_string(), &last], dir.path())
                {
                    jt.push(t);
                }
            }
        }
        let (e, f, d) = (median(eng), median(flo), median(dur));
        let over = (ms(e) - ms(f)) / w.steps as f64;
        let over_durable = (ms(e) - ms(d)) / w.steps as f64;
        let per_step = |times: Vec<Duration>| {
            if times.is_empty() {
                "-".to_string()
            } else {
                format!("{:+.3}ms", (ms(median(times)) - ms(f)) / w.steps as f64)
            }
        };
        let (make_col, just_col) = (per_step(mk), per_step(jt));
        println!(
            "{:<44} {:>6} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>+9.3}ms {:>+9.3}ms {:>7.1}Mi {:>11} {:>11}",
            w.name,
            w.steps,
            ms(f),
            ms(d),
            ms(e),
            over,
            over_durable,
            rss as f64 / 1024.0,
            make_col,
            just_col
        );
    }
    println!("\nover/step: (runbook - floor) / steps, medians of paired runs; over dur.: (runbook - durable) / steps,");
    println!(
        "where durable is the floor plus one append + fdatasync before each spawn and at the end;"
    );
    println!("make/step and just/step: (tool - floor) / steps");
    if only.is_empty() || only.contains("10,000") {
        for cmd in ["true", "/bin/true"] {
            let file = dir.path().join("long.yaml");
            std::fs::write(&file, chain_yaml(10_000, cmd)).expect("write the runbook");
            let r = run_engine(&file, &dir.path().join("st-long"));
            println!(
                "10,000-step chain of `{cmd}`: peak RSS {:.1}Mi, {:.0}ms (one run)",
                r.rss_kib as f64 / 1024.0,
                ms(r.time)
            );
        }
    }
}
