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
//!
//! The harness's own commands go through the `redis` crate's blocking
//! client, one connection per command (a test may kill or pause the server
//! between two of them).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use redis::Value;

use super::raw_tcp::free_port;

/// How long the harness waits to connect to, or hear from, the server.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Redis {
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
    pub(crate) fn start_with(extra: &[&str]) -> Redis {
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

    pub(crate) fn start() -> Redis {
        Redis::start_with(&[])
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's pid, for a step that kills it mid-run.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis is running").id()
    }

    /// Writes the server's pid to `path` (for a shell step to `kill`).
    pub(crate) fn write_pid(&self, path: &Path) {
        std::fs::write(path, self.pid().to_string()).expect("write the redis pid");
    }

    /// Stops the server now (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process has exited (reaping it if so).
    pub(crate) fn exited(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        }
    }

    /// Authenticates the harness's own commands (a `--requirepass` server).
    pub(crate) fn with_password(mut self, password: &str) -> Redis {
        self.password = Some(password.to_string());
        self
    }

    /// Runs a command; panics when Redis cannot be reached or answers
    /// with an error.
    pub(crate) fn command(&self, args: &[&str]) -> Value {
        command_at(self.port, self.password.as_deref(), args)
            .unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    /// `GET key` as text; `None` when the key does not exist.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        match self.command(&["GET", key]) {
            Value::Nil => None,
            Value::BulkString(v) => Some(String::from_utf8_lossy(&v).into_owned()),
            other => panic!("GET {key}: unexpected reply {other:?}"),
        }
    }

    /// `GET key` parsed as JSON; `None` when the key does not exist.
    pub(crate) fn get_json(&self, key: &str) -> Option<serde_json::Value> {
        self.get(key).map(|t| {
            serde_json::from_str(&t).unwrap_or_else(|e| panic!("{key} holds {t:?}, not JSON: {e}"))
        })
    }

    pub(crate) fn set(&self, key: &str, value: &str) {
        match self.command(&["SET", key, value]) {
            Value::Okay => {}
            other => panic!("SET {key}: unexpected reply {other:?}"),
        }
    }

    /// `SET key value` with any bytes (not only UTF-8).
    pub(crate) fn set_bytes(&self, key: &str, value: &[u8]) {
        match command_bytes_at(
            self.port,
            self.password.as_deref(),
            &[b"SET", key.as_bytes(), value],
        ) {
            Ok(Value::Okay) => {}
            other => panic!("SET {key}: unexpected reply {other:?}"),
        }
    }

    /// `GET key` as bytes; `None` when the key does not exist.
    pub(crate) fn get_bytes(&self, key: &str) -> Option<Vec<u8>> {
        match self.command(&["GET", key]) {
            Value::Nil => None,
            Value::BulkString(v) => Some(v),
            other => panic!("GET {key}: unexpected reply {other:?}"),
        }
    }

    pub(crate) fn exists(&self, key: &str) -> bool {
        matches!(self.command(&["EXISTS", key]), Value::Int(1))
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
        match command_at(port, None, &["PING"]) {
            Ok(Value::SimpleString(s)) if s == "PONG" => return true,
            // Up, but wants a password: that is ready too.
            Err(e) if e.code() == Some("NOAUTH") => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// Runs one command on a connection of its own (authenticated with
/// `password` if given); an error reply is an `Err`.
fn command_at(port: u16, password: Option<&str>, args: &[&str]) -> redis::RedisResult<Value> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    command_bytes_at(port, password, &args)
}

fn command_bytes_at(
    port: u16,
    password: Option<&str>,
    args: &[&[u8]],
) -> redis::RedisResult<Value> {
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp("127.0.0.1".into(), port),
        redis: redis::RedisConnectionInfo {
            password: password.map(str::to_string),
            ..Default::default()
        },
    };
    let mut conn = redis::Client::open(info)?.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let (name, rest) = args.split_first().expect("a command has a name");
    redis::cmd(&String::from_utf8_lossy(name))
        .arg(rest)
        .query(&mut conn)
}
