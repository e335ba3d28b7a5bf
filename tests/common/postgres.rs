//! A real PostgreSQL 15 for one test binary, on a free loopback port.
//!
//! `initdb` and `postgres` refuse to run as root, so they run as the
//! `postgres` user through `setpriv` (which execs: the pid we hold is the
//! server's). The data dir lives under /tmp so that user can read it. A
//! missing PostgreSQL fails the test: scripts/test.sh installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::raw_tcp::free_port;

pub(crate) struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

fn server(bin: &Path, data: &Path, sockets: &Path, port: u16) -> Child {
    as_postgres(&bin.join("postgres"))
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(sockets)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start postgres")
}

fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bin_dir() -> PathBuf {
    for v in ["17", "16", "15", "14", "13"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("postgres").exists() {
            return p;
        }
    }
    panic!("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run scripts/test.sh, which installs the `postgresql` package");
}

fn as_postgres(bin: &Path) -> Command {
    let running_as_root = unsafe { libc::geteuid() } == 0;
    if running_as_root {
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

impl Postgres {
    pub(crate) fn start() -> Postgres {
        let bin = bin_dir();
        let mut dir = tempfile::Builder::new()
            .prefix("runbook-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let data = dir.path().join("data");
        // The postgres user must be able to enter the dir and own the data dir.
        Command::new("chmod")
            .arg("777")
            .arg(dir.path())
            .status()
            .expect("chmod");
        let st = as_postgres(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run initdb");
        assert!(
            st.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        for attempt in 0..5 {
            let port = free_port();
            let child = server(&bin, &data, dir.path(), port);
            let mut pg = Postgres { port, dir, child };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = pg.child.try_wait() {
                    break;
                }
                if ready(&bin, port) {
                    return pg;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = pg.child.kill();
            let _ = pg.child.wait();
            assert!(attempt < 4, "PostgreSQL did not become ready");
            dir = std::mem::replace(&mut pg.dir, tempfile::tempdir().expect("temp dir"));
        }
        unreachable!("the loop returns or panics")
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub(crate) fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on the same port and data.
    pub(crate) fn start_again(&mut self) {
        let bin = bin_dir();
        self.child = server(
            &bin,
            &self.dir.path().join("data"),
            self.dir.path(),
            self.port,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ready(&bin, self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL did not come back");
    }

    /// A fresh database; returns its URL.
    pub(crate) fn database(&self, name: &str) -> String {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0"),
        );
        self.url(name)
    }

    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL, returning the unaligned output; panics on error.
    pub(crate) fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "--no-psqlrc",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
                &self.url(db),
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is the "fast" shutdown; SIGTERM would wait for clients.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
