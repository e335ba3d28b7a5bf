//! `shell:` steps: a script under the interpreter, in its own process group.
//!
//! The group is what gets signalled on timeout or cancellation (TERM, then
//! KILL after a grace period), so grandchildren die with the step. Output is
//! read line by line and emitted live; stdout is also kept (bounded) for
//! `steps.<id>.stdout`. Values the script writes to `$RUNBOOK_OUTPUT` as
//! `key=value` lines become `steps.<id>.outputs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value as Json;
use tokio::process::Command;

use super::child_output::{pump, JournalBudget, Sink};
use super::{render, template_error, Attempt, Executor, Outputs, StepError, Stop};
use crate::events::Stream;
use crate::process_group::ProcessGroup;
use crate::providers::BoxFuture;
use crate::runbook::{Action, ActionKind};
use crate::simple_command::SimpleCommand;

pub(super) struct Shell;

const GRACE: Duration = Duration::from_secs(2);
/// Most a script may write to `$RUNBOOK_OUTPUT`.
const MAX_OUTPUT_FILE: u64 = 1 << 20;

impl Executor for Shell {
    /// The script, as written.
    type Body = str;

    fn run<'a>(
        &'a self,
        script: &'a str,
        action: &'a Action,
        cx: &'a Attempt<'a>,
    ) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(run(script, action, cx))
    }
}

async fn run(script: &str, action: &Action, cx: &Attempt<'_>) -> Result<Outputs, StepError> {
    let script = crate::template::render_shell(
        script,
        cx.template,
        crate::template::is_shell(&action.interpreter),
    )
    .map_err(|e| template_error(&e))?;
    let (program, args) = action
        .interpreter
        .split_first()
        .ok_or_else(|| StepError::permanent("empty interpreter"))?;
    let out_dir = cx.env.run_dir.join("outputs");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| StepError::transient(format!("cannot create {}: {e}", out_dir.display())))?;
    let output_file = out_dir.join(format!("{}.{}.env", cx.label, cx.attempt));
    {
        use std::os::unix::fs::OpenOptionsExt;
        // What a script writes here may be a secret: only we may read it,
        // and it is gone when the attempt ends, however it ends.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&output_file)
            .map_err(|e| {
                StepError::transient(format!("cannot create {}: {e}", output_file.display()))
            })?;
    }
    let _remove = RemoveOnDrop(output_file.clone());

    let mut step_env = Vec::with_capacity(action.env.len());
    for (k, v) in &action.env {
        step_env.push((k, render(cx, v)?));
    }
    let cwd = match &action.cwd {
        Some(c) => cx.env.cwd.join(render(cx, c)?),
        None => cx.env.cwd.clone(),
    };
    let path_var = step_env
        .iter()
        .rev()
        .find(|(k, _)| k.as_str() == "PATH")
        .map(|(_, v)| v.as_str())
        .or_else(|| {
            cx.env
                .base_env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_str())
        });

    let direct = match &action.kind {
        ActionKind::Shell {
            direct: Some(d), ..
        } => Some(d),
        _ => None,
    };
    let exec = match direct {
        Some(SimpleCommand::Status(code)) => {
            // `true`, `false`, `exit N`: what bash would do, without a
            // process; starting one in a missing directory would fail.
            if !cwd.is_dir() {
                return Err(StepError::transient(format!(
                    "cannot start `{program}` in {}: no such directory",
                    cwd.display()
                )));
            }
            use std::os::unix::process::ExitStatusExt;
            return finish(
                cx,
                &output_file,
                std::process::ExitStatus::from_raw(*code << 8),
                "",
            );
        }
        Some(SimpleCommand::Exec(words)) => find_program(&words[0], path_var, &cwd)
            .filter(|(p, _)| runs_directly(p))
            .map(|(p, shown)| (p, shown, words)),
        None => None,
    };
    let mut cmd = match &exec {
        Some((path, _, words)) => {
            let mut c = Command::new(path);
            c.arg0(&words[0]).args(&words[1..]);
            c
        }
        None => {
            let mut c = Command::new(resolve_program(program, path_var, &cwd));
            c.arg0(program).args(args).arg(&script.text);
            c
        }
    };
    cmd.env_clear();
    for (k, v) in &cx.env.base_env {
        cmd.env(k, v);
    }
    for (k, v) in &step_env {
        cmd.env(k, v);
    }
    if let Some((_, shown, _)) = &exec {
        let inherited = |name: &str| {
            step_env
                .iter()
                .rev()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(
                    cx.env
                        .base_env
                        .iter()
                        .rev()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        for (k, v) in bash_env(inherited, &cwd, shown) {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
    }
    // The script's template values, set last so nothing overrides them.
    for (k, v) in &script.values {
        cmd.env(k, v);
    }
    cmd.env("RUNBOOK_STEP_ID", cx.step_id);
    cmd.env("RUNBOOK_OUTPUT", &output_file);
    cmd.current_dir(&cwd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.process_group(0);
    cmd.kill_on_drop(true);

    let before = crate::process_group::boot_ticks();
    // The engine's thread stops while the kernel copies the new process and
    // until it execs (vfork): with other steps' processes alive beside this
    // one, a blocking-pool thread pays for that instead.
    let live = LiveProcess::count(&cx.env.live_processes);
    let spawned = if live.beside_others {
        tokio::task::spawn_blocking(move || cmd.spawn())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    } else {
        cmd.spawn()
    };
    let mut child = spawned.map_err(|e| {
        StepError::transient(format!(
            "cannot start `{program}` in {}: {e}",
            cwd.display()
        ))
    })?;
    // Killed when dropped: a step future that is dropped (a second Ctrl-C)
    // leaves no processes behind.
    let mut group = ProcessGroup::of(&child);
    // Recorded so that a resume after the engine's death can kill what this
    // attempt left running before it runs the attempt again.
    if let Some(pid) = child.id() {
        if let Some(leader) = crate::process_group::Leader::spawned(pid, before) {
            cx.bus.note(crate::events::Event::Spawned {
                step: cx.label.to_string(),
                pgid: pid,
                sid: leader.sid,
                started: leader.started,
                started_until: Some(leader.started_until),
                boot: (leader.boot != 0).then(|| format!("{:032x}", leader.boot)),
            });
        }
    }
    let budget = JournalBudget::default();
    let sink = |stream, keep| Sink {
        bus: cx.bus,
        label: cx.label,
        stream,
        budget: &budget,
        keep,
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| pump(s, sink(Stream::Stdout, true)));
    let stderr = child
        .stderr
        .take()
        .map(|s| pump(s, sink(Stream::Stderr, false)));
    let stdout = async {
        match stdout {
            Some(f) => f.await,
            None => String::new(),
        }
    };
    let stderr = async {
        if let Some(f) = stderr {
            f.await;
        }
    };
    tokio::pin!(stdout, stderr);

    // Each pipe's end is noticed on its own: the first one closing says the
    // process is exiting, and its status is watched for right then.
    let (mut out_text, mut err_done) = (None, false);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| StepError::transient(format!("waiting for the script: {e}")))?,
            out = &mut stdout, if out_text.is_none() => {
                out_text = Some(out);
                if let Some(status) = exit_status_soon(&mut child) {
                    break status;
                }
            }
            () = &mut stderr, if !err_done => {
                err_done = true;
                if let Some(status) = exit_status_soon(&mut child) {
                    break status;
                }
            }
            stop = cx.stopped() => {
                group.signal(Signal::TERM);
                if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                    group.signal(Signal::KILL);
                    let _ = child.wait().await;
                }
                return Err(StepError::stopped(stop, match stop {
                    Stop::Timeout => "timed out",
                    Stop::Cancel => "cancelled",
                }));
            }
        }
    };
    // The script ended on its own: what it left running in the background
    // (`nohup server &`) was left on purpose. Only timeouts, cancellation and
    // a dropped step kill the group.
    group.disarm();
    // A background process that kept our pipes open must not hold the step:
    // take what arrived shortly after the script exited.
    let linger = tokio::time::Instant::now() + Duration::from_millis(300);
    let stdout_text = match out_text {
        Some(out) => out,
        None => tokio::time::timeout_at(linger, &mut stdout)
            .await
            .unwrap_or_default(),
    };
    if !err_done {
        let _ = tokio::time::timeout_at(linger, &mut stderr).await;
    }

    finish(cx, &output_file, status, &stdout_text)
}

/// How long a step whose pipes closed is watched for its exit status.
const EXIT_SOON: Duration = Duration::from_millis(1);

/// The exit status of a child whose pipes have just closed, if it comes
/// within [`EXIT_SOON`]. A process closes its files a little before its
/// parent can reap it; going back to sleep for that cost a wake-up per step
/// (0.2 to 0.6 ms on an idle machine) before the next one could start. A
/// script that closed its output and goes on running costs one such wait.
fn exit_status_soon(child: &mut tokio::process::Child) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + EXIT_SOON;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            _ => return None,
        }
    }
}

/// The attempt's result from how the program ended, what it printed and
/// what it wrote to `$RUNBOOK_OUTPUT`.
fn finish(
    cx: &Attempt<'_>,
    output_file: &Path,
    status: std::process::ExitStatus,
    stdout_text: &str,
) -> Result<Outputs, StepError> {
    let mut outputs = Outputs::new();
    let text = read_output_file(output_file)?;
    let mut values = serde_json::Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim();
            if !k.is_empty() {
                values.insert(k.to_string(), Json::String(v.to_string()));
            }
        }
    }
    let code = status.code();
    outputs.insert("outputs".into(), Json::Object(values));
    outputs.insert(
        "stdout".into(),
        Json::String(stdout_text.trim().to_string()),
    );
    outputs.insert("exit_code".into(), code.map_or(Json::Null, Json::from));
    if code != Some(0) {
        cx.keep(outputs.clone());
    }
    match code {
        Some(0) => Ok(outputs),
        Some(c) => Err(StepError::transient(format!("exit code {c}"))),
        None => {
            use std::os::unix::process::ExitStatusExt;
            Err(StepError::transient(format!(
                "killed by signal {}",
                status.signal().unwrap_or(0)
            )))
        }
    }
}

/// A simple command's program as `execvp` would find it: a word with a
/// `/` relative to the working directory, else the first executable file
/// in the step's `PATH`; with the name bash gives it in `$_` (the `PATH`
/// entry as written, joined with the word). `None`: the interpreter runs the
/// script instead (and reports `command not found` in bash's words).
fn find_program(word: &str, path_var: Option<&str>, cwd: &Path) -> Option<(PathBuf, String)> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if word.contains('/') {
        let p = cwd.join(word);
        return runnable(&p).then(|| (p, word.to_string()));
    }
    // An empty entry means the working directory, a relative one is
    // relative to it (the child's, after `cwd`).
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(word))
        .find(|p| runnable(&cwd.join(p)))
        .map(|p| (cwd.join(&p), p.display().to_string()))
}

/// Whether the kernel runs the file itself (an ELF binary or a `#!`
/// script); a file without either is one bash would run as a script.
fn runs_directly(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == *b"\x7fELF" || head.starts_with(b"#!"))
}

/// What bash changes in the environment of the one command it runs (`bash
/// -c CMD` execs it): `PWD` (kept when it names the working directory,
/// else the physical path), `SHLVL` (unchanged, or 0 when not a count),
/// `OLDPWD` (dropped unless a directory), `_` (the program as bash names it).
fn bash_env(
    inherited: impl Fn(&str) -> Option<String>,
    cwd: &Path,
    shown: &str,
) -> Vec<(&'static str, Option<String>)> {
    use std::os::unix::fs::MetadataExt;
    let same_dir = |p: &str| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(p), std::fs::metadata(cwd)) else {
            return false;
        };
        a.dev() == b.dev() && a.ino() == b.ino()
    };
    let pwd = inherited("PWD")
        .filter(|p| p.starts_with('/') && same_dir(p))
        .or_else(|| {
            std::fs::canonicalize(cwd)
                .ok()
                .map(|p| p.display().to_string())
        });
    let shlvl = inherited("SHLVL")
        .filter(|l| l.trim().parse::<u32>().is_ok())
        .map_or_else(|| "0".to_string(), |l| l.trim().to_string());
    let oldpwd = inherited("OLDPWD").filter(|p| Path::new(p).is_dir());
    vec![
        ("PWD", pwd),
        ("SHLVL", Some(shlvl)),
        ("OLDPWD", oldpwd),
        ("_", Some(shown.to_string())),
    ]
}

/// The interpreter as a path, found in the step's own `PATH` the way
/// `execvp` would. Given a bare name and an environment of its own, std's
/// `Command` falls back to fork + exec, copying the engine's page tables for
/// every step (a cost that grows with the engine's memory); given a path it
/// uses `posix_spawn` (vfork). Not found: the name as is, and spawning
/// reports the error as before.
fn resolve_program(program: &str, path_var: Option<&str>, cwd: &Path) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    find_program(program, path_var, cwd).map_or_else(|| PathBuf::from(program), |(path, _)| path)
}

/// What the script wrote to `$RUNBOOK_OUTPUT`: at most [`MAX_OUTPUT_FILE`]
/// bytes; more is an error, not a silent cut (a cut value would be wrong).
fn read_output_file(path: &Path) -> Result<String, StepError> {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        // The script removed it: it wrote no outputs.
        return Ok(String::new());
    };
    let mut bytes = Vec::new();
    file.take(MAX_OUTPUT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StepError::transient(format!("cannot read $RUNBOOK_OUTPUT: {e}")))?;
    if bytes.len() as u64 > MAX_OUTPUT_FILE {
        return Err(StepError::permanent(format!(
            "the script wrote more than {} MiB to $RUNBOOK_OUTPUT",
            MAX_OUTPUT_FILE >> 20
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One of a run's live step processes, counted while it lives.
struct LiveProcess<'a> {
    count: &'a AtomicUsize,
    /// Whether other steps' processes were alive when it started.
    beside_others: bool,
}

impl LiveProcess<'_> {
    fn count(count: &AtomicUsize) -> LiveProcess<'_> {
        LiveProcess {
            beside_others: count.fetch_add(1, Ordering::Relaxed) > 0,
            count,
        }
    }
}

impl Drop for LiveProcess<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
