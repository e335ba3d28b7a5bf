//! A small builder that drives the real `runbook` binary, in the style of
//! casey/just's tests:
//!
//! ```ignore
//! Test::new()
//!     .file("x.yaml", "version: 1\n...")
//!     .args(&["validate", "x.yaml"])
//!     .run()
//!     .code(2)
//!     .stderr_contains("error[E010]");
//! ```
//!
//! Every test gets its own temporary directory, which is the binary's working
//! directory; relative paths in `file` and `args` are relative to it. The
//! inherited environment is kept (shell steps need `PATH`) except for
//! `RUNBOOK_*` variables, which would make a test depend on the machine.
//! `NO_COLOR` is set so diagnostics are plain text.

#![allow(dead_code)]
// each test binary uses a different part of this module
// Test harnesses: they start and signal real services, and fail loudly.
#![allow(unsafe_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod http_server;
pub(crate) mod postgres;
pub(crate) mod raw_tcp;
pub(crate) mod redis;
pub(crate) mod services;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The default state dir of a test's binary, relative to its test dir.
pub(crate) const DEFAULT_STATE_DIR: &str = ".xdg-state/runbook";

/// The repository root, for reading fixtures and committed files.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads a file of the repository (path relative to the root).
pub(crate) fn read_repo_file(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub(crate) struct Test {
    /// Shared with a [`Running`] binary its [`Running::beside`] commands run beside.
    dir: std::sync::Arc<tempfile::TempDir>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
    state_dir: Option<PathBuf>,
    /// A program that starts the binary (see [`Test::wrapped`]).
    wrapper: Vec<String>,
    /// The working directory inside the test dir (see [`Test::in_dir`]).
    cwd: Option<PathBuf>,
}

impl Default for Test {
    fn default() -> Self {
        Test::new()
    }
}

impl Test {
    pub(crate) fn new() -> Test {
        Test {
            dir: std::sync::Arc::new(
                tempfile::Builder::new()
                    .prefix("runbook-test-")
                    .tempdir()
                    .expect("create a temporary directory"),
            ),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            state_dir: None,
            wrapper: Vec::new(),
            cwd: None,
        }
    }

    /// Starts the binary through another program: `wrapper` then the
    /// binary's path then the arguments, e.g. `["unshare", "-m", "sh", "-c",
    /// "mount ... && exec \"$0\" \"$@\""]` (the binary is `$0` there).
    pub(crate) fn wrapped(mut self, wrapper: &[&str]) -> Test {
        self.wrapper = wrapper.iter().map(ToString::to_string).collect();
        self
    }

    /// The test's working directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel` inside the test directory (parents created).
    pub(crate) fn file(self, rel: &str, contents: &str) -> Test {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        std::fs::write(&path, contents).expect("write test file");
        self
    }

    /// A shipped runbook of the repository copied in, with the files it
    /// reads beside it (`runbooks/allowed_signers`).
    pub(crate) fn shipped(self, rel: &str) -> Test {
        let t = self.repo_file(rel);
        if rel.starts_with("runbooks/") {
            t.repo_file("runbooks/allowed_signers")
        } else {
            t
        }
    }

    /// Copies a file of the repository (e.g. `examples/hello.yaml`) into the
    /// test directory under the same relative path.
    pub(crate) fn repo_file(self, rel: &str) -> Test {
        let contents = read_repo_file(rel);
        self.file(rel, &contents)
    }

    pub(crate) fn arg(mut self, arg: &str) -> Test {
        self.args.push(arg.to_string());
        self
    }

    pub(crate) fn args(mut self, args: &[&str]) -> Test {
        self.args.extend(args.iter().map(ToString::to_string));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub(crate) fn stdin(mut self, input: &str) -> Test {
        self.stdin = Some(input.to_string());
        self
    }

    /// Runs the binary in `rel`, a directory inside the test dir (made if
    /// missing): an operator in another directory of the same user.
    pub(crate) fn in_dir(mut self, rel: &str) -> Test {
        let dir = self.dir.path().join(rel);
        std::fs::create_dir_all(&dir).expect("create the working directory");
        self.cwd = Some(dir);
        self
    }

    /// Uses `rel` (inside the test directory) as the state dir, passed as
    /// `$RUNBOOK_STATE_DIR`. Without it the binary's per-user default
    /// applies: `$XDG_STATE_HOME/runbook`, with `XDG_STATE_HOME` set to
    /// `.xdg-state` inside the test dir ([`DEFAULT_STATE_DIR`]).
    pub(crate) fn state_dir(mut self, rel: &str) -> Test {
        self.state_dir = Some(self.dir.path().join(rel));
        self
    }

    /// Starts the binary with piped output, feeding it `stdin` if given.
    fn start(&self) -> std::process::Child {
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the runbook binary");
        if let Some(input) = &self.stdin {
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin
                .write_all(input.as_bytes())
                .expect("write to the child's stdin");
        }
        child
    }

    pub(crate) fn run(self) -> Output {
        let child = self.start();
        let out = child
            .wait_with_output()
            .expect("wait for the runbook binary");
        Output {
            command: format!("runbook {}", self.args.join(" ")),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            dir: self.dir,
        }
    }
}

/// What a run printed and how it exited. Assertion helpers panic with the
/// whole output, so a failing test shows what the binary said.
pub(crate) struct Output {
    pub command: String,
    pub stdout: String,
    pub stderr: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed the binary, if one did (`libc::SIGKILL`, ...).
    pub signal: Option<i32>,
    /// Kept alive so the test can inspect files the run wrote.
    pub dir: std::sync::Arc<tempfile::TempDir>,
}

impl Output {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\ncommand: {}\nexit code: {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new command in the same directory, keeping every file the earlier
    /// ones wrote (the state dir, logs): `run` -> crash -> `resume` -> `status`.
    /// Arguments, environment and stdin start empty again.
    pub(crate) fn again(self) -> Test {
        Test {
            dir: self.dir,
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            state_dir: None,
            wrapper: Vec::new(),
            cwd: None,
        }
    }

    /// Whether the binary died by SIGKILL (as `RUNBOOK_CRASH_AT` makes it).
    pub(crate) fn killed(&self) -> bool {
        self.signal == Some(libc::SIGKILL) || self.code == Some(137)
    }

    pub(crate) fn code(self, expected: i32) -> Output {
        if self.code != Some(expected) {
            self.fail(&format!("expected exit code {expected}"));
        }
        self
    }

    pub(crate) fn success(self) -> Output {
        self.code(0)
    }

    pub(crate) fn stdout_contains(self, needle: &str) -> Output {
        if !self.stdout.contains(needle) {
            self.fail(&format!("stdout does not contain {needle:?}"));
        }
        self
    }

    pub(crate) fn stdout_not_contains(self, needle: &str) -> Output {
        if self.stdout.contains(needle) {
            self.fail(&format!("stdout contains {needle:?}"));
        }
        self
    }

    pub(crate) fn stderr_contains(self, needle: &str) -> Output {
        if !self.stderr.contains(needle) {
            self.fail(&format!("stderr does not contain {needle:?}"));
        }
        self
    }

    pub(crate) fn stderr_not_contains(self, needle: &str) -> Output {
        if self.stderr.contains(needle) {
            self.fail(&format!("stderr contains {needle:?}"));
        }
        self
    }

    pub(crate) fn stdout_eq(self, expected: &str) -> Output {
        if self.stdout != expected {
            self.fail(&format!("stdout is not {expected:?}"));
        }
        self
    }

    pub(crate) fn stderr_eq(self, expected: &str) -> Output {
        if self.stderr != expected {
            self.fail(&format!("stderr is not {expected:?}"));
        }
        self
    }

    /// `(code, line)` of every `error[..]` diagnostic on stderr, in order.
    pub(crate) fn errors(&self) -> Vec<(String, u32)> {
        diagnostics(&self.stderr, "error")
    }

    /// `(code, line)` of every `warning[..]` diagnostic on stderr, in order.
    pub(crate) fn warnings(&self) -> Vec<(String, u32)> {
        diagnostics(&self.stderr, "warning")
    }
}

/// Parses rendered diagnostics: a `label[CODE]: ...` line followed by
/// `  --> file:LINE:COL`.
fn diagnostics(stderr: &str, label: &str) -> Vec<(String, u32)> {
    let prefix = format!("{label}[");
    let mut out = Vec::new();
    let mut lines = stderr.lines().peekable();
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix(&prefix) else {
            continue;
        };
        let Some(code) = rest.split(']').next() else {
            continue;
        };
        let line = lines
            .peek()
            .and_then(|next| next.trim_start().strip_prefix("--> "))
            .and_then(|loc| loc.rsplit(':').nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        out.push((code.to_string(), line));
    }
    out
}

// ---------------------------------------------------------------------------
// Spawning: for tests that signal the binary while it runs, or start a second
// run while the first holds something.

/// The kill points of a crash sweep over a run that writes `events`
/// records: `before:N` and `after:N` for every N.
#[allow(dead_code)] // not every test binary sweeps
pub(crate) fn kill_points(events: usize) -> Vec<(&'static str, usize)> {
    (1..=events)
        .flat_map(|n| [("before", n), ("after", n)])
        .collect()
}

/// Calls `each` on every item from two threads: a sweep's points are a few
/// short processes each, mostly waiting on fsync and start-up, so two
/// overlap well even on 2 cores.
#[allow(dead_code)] // not every test binary sweeps
pub(crate) fn on_two_workers<T: Sync>(items: &[T], each: impl Fn(&T) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(item) =
                    items.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    each(item);
                }
            });
        }
    });
}

/// Polls `done` every 20 ms until it returns true or `timeout` passes; returns
/// whether it became true. For waiting on files a step writes, instead of
/// sleeping a fixed time.
pub(crate) fn poll_until(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Test {
    /// The command `run` and `spawn` start: the binary in the test directory,
    /// without the caller's `RUNBOOK_*` variables.
    fn command(&self) -> Command {
        let bin = env!("CARGO_BIN_EXE_runbook");
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(bin),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
        };
        cmd.args(&self.args)
            .current_dir(self.cwd.as_deref().unwrap_or(self.dir.path()));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RUNBOOK_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("NO_COLOR", "1");
        // The per-user default state dir, inside the test dir: tests never
        // see each other's runs, nor the machine's.
        cmd.env("XDG_STATE_HOME", self.dir.path().join(".xdg-state"));
        if let Some(state) = &self.state_dir {
            cmd.env("RUNBOOK_STATE_DIR", state);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the binary and returns at once. Stdout and stderr are collected
    /// on background threads, so a chatty child never blocks on a full pipe.
    pub(crate) fn spawn(self) -> Running {
        let mut child = self.start();
        let collect = |r: Option<Box<dyn std::io::Read + Send>>| {
            r.map(|mut r| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = r.read_to_end(&mut buf);
                    String::from_utf8_lossy(&buf).into_owned()
                })
            })
        };
        let stdout = collect(child.stdout.take().map(|s| Box::new(s) as _));
        let stderr = collect(child.stderr.take().map(|s| Box::new(s) as _));
        Running {
            command: format!("runbook {}", self.args.join(" ")),
            child: Some(child),
            stdout,
            stderr,
            dir: Some(self.dir),
        }
    }
}

/// A binary started by [`Test::spawn`]. Dropping it kills the child, so a
/// failing test leaves nothing running.
pub(crate) struct Running {
    command: String,
    child: Option<std::process::Child>,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl Running {
    pub(crate) fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("the child is running");
        i32::try_from(child.id()).expect("pid fits in i32")
    }

    /// The test's working directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.as_ref().expect("the test directory").path()
    }

    /// `runbook serve` over this run's state dir (`st`) on a free loopback
    /// port, with `--auth-header` when given, once it answers: the server
    /// and its base URL.
    pub(crate) fn serve_beside(&self, auth_header: Option<&str>) -> (Running, String) {
        let listen = format!("127.0.0.1:{}", raw_tcp::free_port());
        let mut args = vec!["serve", "--state-dir", "st", "--listen", &listen];
        if let Some(h) = auth_header {
            args.extend(["--auth-header", h]);
        }
        let server = self.beside().args(&args).spawn();
        let base = format!("http://{listen}");
        let up = poll_until(std::time::Duration::from_secs(30), || {
            services::http_request("GET", &format!("{base}/api/runs"), &[], None).is_ok()
        });
        assert!(up, "runbook serve never answered at {base}");
        (server, base)
    }

    /// A second command in the same directory while this one runs
    /// (`status`, `approve`, `cancel`), as [`Output::again`] is after it.
    pub(crate) fn beside(&self) -> Test {
        let mut t = Test::new();
        t.dir = std::sync::Arc::clone(self.dir.as_ref().expect("the test directory"));
        t
    }

    /// Sends `sig` (e.g. `libc::SIGINT`) to the binary (not to its steps,
    /// which run in process groups of their own).
    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits (bounded) until `rel` exists in the test directory. Fails the
    /// test, showing the child's output, if the child exits first or the
    /// time runs out.
    pub(crate) fn wait_for_file(&mut self, rel: &str, timeout: std::time::Duration) {
        let path = self.path().join(rel);
        let mut exited = false;
        let found = poll_until(timeout, || {
            if path.exists() {
                return true;
            }
            exited = matches!(
                self.child.as_mut().map(std::process::Child::try_wait),
                Some(Ok(Some(_)))
            );
            exited
        });
        if !found || (exited && !path.exists()) {
            let why = if exited {
                format!("the binary exited before {rel} appeared")
            } else {
                format!("{rel} did not appear within {timeout:?}")
            };
            let out = self.finish(std::time::Duration::from_secs(10));
            out.fail(&why);
        }
    }

    /// Whether the binary has exited (without reaping its output).
    pub(crate) fn exited(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(std::process::Child::try_wait),
            Some(Ok(Some(_)))
        )
    }

    /// Waits for the binary to exit (at most two minutes: a hung run fails
    /// the test instead of hanging the suite).
    pub(crate) fn wait(mut self) -> Output {
        let limit = std::time::Duration::from_secs(120);
        let out = self.finish(limit);
        if out.code.is_none() && out.stderr.ends_with("[killed by the test]\n") {
            out.fail(&format!("the binary did not exit within {limit:?}"));
        }
        out
    }

    fn finish(&mut self, limit: std::time::Duration) -> Output {
        let mut child = self.child.take().expect("the child is running");
        let mut killed = false;
        let exited = poll_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
            killed = true;
        }
        let status = child.wait().expect("wait for the runbook binary");
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        let stdout = join(self.stdout.take());
        let mut stderr = join(self.stderr.take());
        if killed {
            stderr.push_str("[killed by the test]\n");
        }
        Output {
            command: self.command.clone(),
            stdout,
            stderr,
            code: status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&status),
            dir: self.dir.take().expect("the test directory"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// What tests read back from a run

/// `bash ./wait_for.sh FILE`: waits until FILE exists (bounded, 60 s), so a
/// step can wait for another step or for the test without a fixed sleep.
pub(crate) const WAIT_FOR: &str = r#"# usage: bash ./wait_for.sh FILE
for _ in $(seq 1 3000); do
  [ -e "$1" ] && exit 0
  sleep 0.02
done
echo "gave up waiting for $1" >&2
exit 1
"#;

/// The `--report report.json` a run wrote in its directory.
pub(crate) fn report(out: &Output) -> serde_json::Value {
    let path = out.path().join("report.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no report at {}: {e}\nstdout:\n{}\nstderr:\n{}",
            path.display(),
            out.stdout,
            out.stderr
        )
    });
    serde_json::from_str(&text).expect("the report is JSON")
}

/// One step of a report, by id.
pub(crate) fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .expect("report.steps is a list")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in the report: {report:#}"))
}

/// The 1-based line numbers of `text` that contain `needle`, for asserting
/// where a diagnostic points without hard-coding line numbers.
pub(crate) fn lines_containing(text: &str, needle: &str) -> Vec<u32> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| u32::try_from(i + 1).expect("line number fits in u32"))
        .collect()
}

/// The first line of `text` containing `needle`; panics when there is none.
pub(crate) fn line_of(text: &str, needle: &str) -> u32 {
    *lines_containing(text, needle)
        .first()
        .unwrap_or_else(|| panic!("no line contains {needle:?} in:\n{text}"))
}

/// `runbook plan FILE --format json` with `--param` arguments, parsed; fails
/// the test (showing the output) unless it exits 0.
pub(crate) fn plan_json(t: Test, file: &str, params: &[&str]) -> serde_json::Value {
    let mut args = vec!["plan", file, "--format", "json"];
    for p in params {
        args.extend(["--param", p]);
    }
    let out = t.args(&args).run().success();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --format json is not JSON ({e}):\n{}", out.stdout))
}

/// `runbook plan FILE --format FORMAT --param ...` of a repository file,
/// with `env` set: its stdout. The plan must succeed, write nothing to
/// stderr, and hold no `hunter2` (the secret values tests set).
pub(crate) fn plan_of(file: &str, format: &str, params: &[&str], env: &[(&str, &str)]) -> String {
    let mut args = vec!["plan", file, "--format", format];
    for p in params {
        args.extend(["--param", p]);
    }
    let mut t = Test::new().shipped(file);
    for (k, v) in env {
        t = t.env(k, v);
    }
    let out = t.args(&args).run().success().stdout_not_contains("hunter2");
    assert!(
        out.stderr.is_empty(),
        "plan wrote to stderr:\n{}",
        out.stderr
    );
    out.stdout
}

/// The fingerprint hashes the engine's version too: snapshots keep its
/// place, and `fingerprint_*` tests check its value.
pub(crate) fn redact_fingerprint(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sha256:") {
        let (head, tail) = rest.split_at(at + "sha256:".len());
        out.push_str(head);
        if tail.bytes().take_while(u8::is_ascii_hexdigit).count() == 64 {
            out.push_str("<fingerprint>");
            rest = &tail[64..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// The lines of a file in `dir` (none when it does not exist).
pub(crate) fn lines_at(dir: &Path, rel: &str) -> Vec<String> {
    match std::fs::read_to_string(dir.join(rel)) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// The lines the runbook's steps appended to `log` in the test directory.
pub(crate) fn log(out: &Output) -> Vec<String> {
    lines_at(out.path(), "log")
}

/// `runbook status RUN --state-dir STATE --format json`, parsed (its steps
/// have the report's shape: read one with [`step`]).
pub(crate) fn status_json(out: Output, state_dir: &str, run: &str) -> (serde_json::Value, Output) {
    let out = out
        .again()
        .args(&["status", run, "--state-dir", state_dir, "--format", "json"])
        .run()
        .success();
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}):\n{}", out.stdout));
    (v, out)
}

/// The first line (the header) of a run's journal, `<state>/runs/<id>/journal.jsonl`.
pub(crate) fn journal_header(out: &Output, state_dir: &str, run_id: &str) -> serde_json::Value {
    let path = out
        .path()
        .join(state_dir)
        .join("runs")
        .join(run_id)
        .join("journal.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let first = text.lines().next().expect("the journal has a header line");
    serde_json::from_str(first).expect("the journal header is JSON")
}

// ---------------------------------------------------------------------------
// Broken pipes: a reader of the binary's stdout that goes away

/// The write end of a pipe whose read end is already closed.
fn closed_pipe() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills the two-int array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2 failed");
    // SAFETY: both fds were just created and are owned by nobody else.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    write
}

impl Test {
    /// Runs the binary with stdout on a pipe whose read end is closed before
    /// the binary starts, so its first write to stdout fails (EPIPE, or
    /// SIGPIPE where not ignored) whatever the output's size or timing.
    pub(crate) fn run_into_closed_pipe(self) -> Output {
        let write = closed_pipe();
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::piped());
        let out = cmd.output().expect("run the runbook binary");
        self.output(&out, String::new())
    }

    /// As [`Test::run_into_closed_pipe`], with stderr on a closed pipe too
    /// (`runbook run x 2>&1 | head -0`): nothing the binary prints arrives.
    pub(crate) fn run_into_closed_pipes(self) -> Output {
        let write = closed_pipe();
        let err = write.try_clone().expect("dup the pipe");
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(err));
        let out = cmd.output().expect("run the runbook binary");
        self.output(&out, String::new())
    }

    /// Runs the binary with stdout piped, reads its first line and closes
    /// the pipe, as `runbook ... | head -1` does. Returns the line too.
    pub(crate) fn run_reading_one_line(self) -> (String, Output) {
        use std::io::{BufRead as _, Read as _};
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the runbook binary");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let mut line = String::new();
        {
            let stdout = child.stdout.take().expect("piped stdout");
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        let status = child.wait().expect("wait for the runbook binary");
        let out = std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: stderr.join().unwrap_or_default(),
        };
        let output = self.output(&out, line.clone());
        (line, output)
    }

    fn output(self, out: &std::process::Output, stdout: String) -> Output {
        Output {
            command: format!("runbook {}", self.args.join(" ")),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            dir: self.dir,
        }
    }
}

impl Output {
    /// Asserts the binary died of SIGPIPE (a shell shows exit 141) and said
    /// nothing on stderr: no panic, no "failed printing to stdout".
    pub(crate) fn died_of_sigpipe(self) -> Output {
        if self.signal != Some(libc::SIGPIPE) {
            self.fail(&format!(
                "expected death by SIGPIPE, got signal {:?}",
                self.signal
            ));
        }
        self.stderr_eq("")
    }
}
