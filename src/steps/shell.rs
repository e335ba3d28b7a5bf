//! `shell:` steps: a script under the interpreter, in its own process group.
//!
//! The group is what gets signalled on timeout or cancellation (TERM, then
//! KILL after a grace period), so grandchildren die with the step. Output is
//! read line by line and emitted live; stdout is also kept (bounded) for
//! `steps.<id>.stdout`. Values the script writes to `$RUNBOOK_OUTPUT` as
//! `key=value` lines become `steps.<id>.outputs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value as Json;
use tokio::process::Command;

use super::child_output::{pump, JournalBudget, Sink};
use super::{render, template_error, Attempt, Executor, Outputs, StepError, Stop};
use crate::events::Stream;
use crate::process_group::ProcessGroup;
use crate::providers::BoxFuture;
use crate::runbook::Action;

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

    let mut cmd = Command::new(resolve_program(program, path_var, &cwd));
    cmd.arg0(program).args(args).arg(&script.text);
    cmd.env_clear();
    for (k, v) in &cx.env.base_env {
        cmd.env(k, v);
    }
    for (k, v) in step_env {
        cmd.env(k, v);
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

    let mut child = cmd.spawn().map_err(|e| {
        StepError::transient(format!(
            "cannot start `{program}` in {}: {e}",
            cwd.display()
        ))
    })?;
    // Killed when dropped: a step future that is dropped (a second Ctrl-C)
    // leaves no processes behind.
    let mut group = ProcessGroup::of(&child);
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
    let readers = async {
        let out = match stdout {
            Some(f) => f.await,
            None => String::new(),
        };
        if let Some(f) = stderr {
            f.await;
        }
        out
    };
    tokio::pin!(readers);

    let mut collected = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| StepError::transient(format!("waiting for the script: {e}")))?,
            out = &mut readers, if collected.is_none() => collected = Some(out),
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
    let stdout_text = match collected {
        Some(out) => out,
        None => tokio::time::timeout(Duration::from_millis(300), &mut readers)
            .await
            .unwrap_or_default(),
    };

    let mut outputs = Outputs::new();
    let text = read_output_file(&output_file)?;
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

/// The interpreter as a path, found in the step's own `PATH` the way
/// `execvp` would. Given a bare name and an environment of its own, std's
/// `Command` falls back to fork + exec, copying the engine's page tables for
/// every step (a cost that grows with the engine's memory); given a path it
/// uses `posix_spawn` (vfork). Not found: the name as is, and spawning
/// reports the error as before.
fn resolve_program(program: &str, path_var: Option<&str>, cwd: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let Some(path_var) = path_var.filter(|_| !program.contains('/')) else {
        return PathBuf::from(program);
    };
    for dir in std::env::split_paths(path_var) {
        // An empty entry means the working directory, a relative one is
        // relative to it (the child's, after `cwd`).
        let candidate = cwd.join(dir).join(program);
        if std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return candidate;
        }
    }
    PathBuf::from(program)
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

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
