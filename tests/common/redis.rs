//! A real `redis-server` for one test, on a free loopback port.
//!
//! ```ignore
//! let redis = Redis::start();           // fails the test if redis-server is missing
//! redis.set("flags:x", "true");
//! assert_eq!(redis.get("flags:x").as_deref(), Some("true"));
//! ```
//!
//! Each test starts its own server (40-90 ms): tests that stop Redis mid-run
//! cannot share one, and nothing leaks between tests. The server is killed
//! when the handle drops, and by the kernel (`PR_SET_PDEATHSIG`) if the
//! test's thread dies first. A missing `redis-server` FAILS the test with the
//! command that installs it; it never skips.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::raw_tcp::free_port;

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Sent with `AUTH` before every command of the harness.
    password: Option<String>,
}

/// `redis-server` on PATH, or a test failure saying how to get it.
fn redis_server() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "redis-server is not on PATH; these tests need a real Redis (>= 6.2).\n\
             install it with: apt-get update && apt-get install -y --no-install-recommends redis-server\n\
             (scripts/test.sh does this when RUNBOOK_NEEDS_SERVICES=1)"
        )
    })
}

impl Redis {
    /// Starts a server; `extra` are more `redis-server` arguments
    /// (`["--requirepass", "pw"]`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let bin = redis_server();
        let dir = tempfile::Builder::new()
            .prefix("runbook-redis-")
            .tempdir()
            .expect("a directory for redis");
        let mut last_log = String::new();
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let log = dir.path().join(format!("redis-{port}.log"));
            let mut cmd = Command::new(&bin);
            cmd.args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            // SAFETY: prctl in the child between fork and exec; async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            if wait_ready(&mut child, port, Duration::from_secs(10)) {
                return Redis {
                    child: Some(child),
                    port,
                    dir,
                    password: None,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("redis-server did not become ready on any of 5 ports; its last log:\n{last_log}");
    }

    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's pid, for a step that kills it mid-run.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis is running").id()
    }

    /// Writes the server's pid to `path` (for a shell step to `kill`).
    pub fn write_pid(&self, path: &Path) {
        std::fs::write(path, self.pid().to_string()).expect("write the redis pid");
    }

    /// Stops the server now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        }
    }

    /// Authenticates the harness's own commands (a `--requirepass` server).
    pub fn with_password(mut self, password: &str) -> Redis {
        self.password = Some(password.to_string());
        self
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<Reply> {
        match &self.password {
            None => command_at(self.port, args),
            Some(pw) => {
                let mut replies = commands_at(self.port, &[&["AUTH", pw], args])?;
                let command = replies.pop().expect("two replies");
                match replies.pop() {
                    Some(Reply::Status(ok)) if ok == "OK" => Ok(command),
                    other => Err(std::io::Error::other(format!("AUTH: {other:?}"))),
                }
            }
        }
    }

    /// Runs a command; panics when Redis cannot be reached.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    /// `GET key` as text; `None` when the key does not exist.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.command(&["GET", key]) {
            Reply::Bulk(v) => v,
            other => panic!("GET {key}: unexpected reply {other:?}"),
        }
    }

    /// `GET key` parsed as JSON; `None` when the key does not exist.
    pub fn get_json(&self, key: &str) -> Option<serde_json::Value> {
        self.get(key).map(|t| {
            serde_json::from_str(&t).unwrap_or_else(|e| panic!("{key} holds {t:?}, not JSON: {e}"))
        })
    }

    pub fn set(&self, key: &str, value: &str) {
        match self.command(&["SET", key, value]) {
            Reply::Status(s) if s == "OK" => {}
            other => panic!("SET {key}: unexpected reply {other:?}"),
        }
    }

    pub fn exists(&self, key: &str) -> bool {
        matches!(self.command(&["EXISTS", key]), Reply::Integer(1))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls PING (bounded) until the server answers; false if it exits first.
fn wait_ready(child: &mut Child, port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        match command_at(port, &["PING"]) {
            Ok(Reply::Status(s)) if s == "PONG" => return true,
            // Up, but wants a password: that is ready too.
            Ok(Reply::Error(e)) if e.starts_with("NOAUTH") => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn command_at(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let mut replies = commands_at(port, &[args])?;
    Ok(replies.pop().expect("one reply"))
}

/// Sends commands on one connection and reads one reply for each.
fn commands_at(port: u16, commands: &[&[&str]]) -> std::io::Result<Vec<Reply>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = String::new();
    for args in commands {
        req.push_str(&format!("*{}\r\n", args.len()));
        for a in *args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    commands.iter().map(|_| read_reply(&mut r)).collect()
}

/// A RESP reply (only what these tests need).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    let bad = || std::io::Error::other(format!("bad reply line {line:?}"));
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Integer(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; usize::try_from(n).map_err(|_| bad())? + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(buf.len() - 2);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}
