//! Per-step overhead of the PostgreSQL store against the file store, paired
//! in the same run (A B A B ..., medians): what team mode costs a step.
//!
//! `cargo bench --bench team_store` starts a PostgreSQL of its own on
//! loopback (`initdb` in a temp dir, `fsync` and `synchronous_commit` on:
//! a commit is as durable as an fsync'd journal line), then runs a chain of
//! 200 `true` steps and a one-step run against a state dir on disk and
//! against the database. It says so and stops when PostgreSQL is not
//! installed. `BENCH_ITERS` (default 10) sets the pairs.

#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)] // a benchmark harness

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{chain_yaml, median, ms, run_engine};

fn pg_bin() -> Option<PathBuf> {
    ["17", "16", "15", "14", "13"]
        .iter()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .find(|p| p.join("postgres").exists())
}

fn as_postgres(bin: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGINT);
        }
        let _ = self.0.wait();
    }
}

fn start_postgres(bin: &Path, dir: &Path) -> (Server, u16) {
    let data = dir.join("data");
    let made = as_postgres(&bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("initdb");
    assert!(made.success(), "initdb failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = as_postgres(&bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "synchronous_commit=on",
            "-c",
            "fsync=on",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start postgres");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("PostgreSQL did not start");
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let Some(bin) = pg_bin() else {
        println!("PostgreSQL is not installed (/usr/lib/postgresql/*/bin): nothing measured");
        return;
    };
    // Under /tmp: the postgres user must reach it.
    let dir = tempfile::Builder::new()
        .prefix("runbook-bench-pg-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
    let (_server, port) = start_postgres(&bin, dir.path());
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let files = common::bench_dir("team-store-");
    println!("PostgreSQL store vs file store, paired, median of {iters} pairs");
    println!(
        "database: local PostgreSQL ({}), fsync=on, synchronous_commit=on",
        bin.display()
    );
    println!(
        "\n{:<26} {:>6} {:>12} {:>12} {:>14}",
        "workload", "steps", "file store", "PostgreSQL", "extra/step"
    );
    for (name, n) in [("chain of `true`", 200), ("one-step run", 1)] {
        let file = files.path().join(format!("c{n}.yaml"));
        std::fs::write(&file, chain_yaml(n, "true")).expect("write the runbook");
        // Warm up both (the first database run creates the tables).
        let _ = run_engine(&file, &files.path().join("warm"));
        let _ = run_engine(&file, Path::new(&url));
        let (mut on_disk, mut in_db) = (Vec::new(), Vec::new());
        for i in 0..iters {
            on_disk.push(run_engine(&file, &files.path().join(format!("st-{n}-{i}"))).time);
            in_db.push(run_engine(&file, Path::new(&url)).time);
        }
        let (f, p) = (median(on_disk), median(in_db));
        println!(
            "{name:<26} {n:>6} {:>10.1}ms {:>10.1}ms {:>+12.3}ms",
            ms(f),
            ms(p),
            (ms(p) - ms(f)) / n as f64
        );
    }
}
