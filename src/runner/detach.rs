//! `runbook run --detach`: the run goes on in a process of its own, in a
//! session of its own (`setsid`), so closing the terminal does not end it.
//!
//! The foreground process validates what it can (file, params, run id,
//! plan), starts `runbook run ... --detached-child` with the same settings
//! and the run id fixed, and waits until the child has either written its
//! journal (the run is claimed: print its id, exit 0) or exited (refused:
//! show why, exit with its code). The child's own output (the plain view,
//! and anything printed before its journal exists) goes to
//! `<state dir>/detached/<run id>.log` (with a database, a file in the
//! temp dir of the machine that started it); the run's story is its
//! journal, which `runbook logs` reads from anywhere. The state dir reaches
//! the child through its environment, not its command line, where a
//! database password would be readable by every local user.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Done, Error, Result};

use super::RunSettings;

/// How long the foreground waits for the child to claim its run: pre-flight
/// may wait on secrets commands and provider checks, each bounded.
const CLAIM_WAIT: Duration = Duration::from_secs(120);

/// Starts the run in the background and reports where it went.
pub(super) fn spawn(s: &RunSettings, run_id: &str) -> Result {
    let store = s.store.as_ref();
    let log = store.detached_log(run_id);
    let unusable =
        |e: std::io::Error| Error::cannot_start(format!("cannot write {}: {e}", log.display()));
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(unusable)?;
    }
    // Private, and never through a symlink someone planted.
    let out = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log)
            .map_err(unusable)?
    };
    let err = out.try_clone().map_err(unusable)?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::cannot_start(format!("cannot find the runbook binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg(&s.file)
        .arg("--run-id")
        .arg(run_id)
        .env("RUNBOOK_STATE_DIR", store.locator())
        .args(["--lease", &crate::duration::format(s.output.lease)])
        .arg("--detached-child");
    for step in &s.output.approve {
        cmd.arg("--approve").arg(step);
    }
    if let Some(who) = &s.output.identity {
        cmd.arg("--as").arg(who);
    }
    if let Some(key) = &s.output.key {
        cmd.arg("--key").arg(key);
    }
    if let Some(r) = &s.output.report {
        cmd.arg("--report").arg(r);
    }
    if s.output.json_log {
        cmd.args(["--log-format", "json"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| Error::cannot_start(format!("cannot start the detached run: {e}")))?;
    // Params go through a pipe, not the command line: a secret param on the
    // background process's argv would be readable by every local user (`ps`)
    // for as long as the run lasts.
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        let params = serde_json::to_string(&s.params).unwrap_or_default();
        let _ = stdin.write_all(params.as_bytes());
    }

    let started = Instant::now();
    loop {
        if store.read(run_id).is_ok() {
            break;
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                // Refused before its journal: what it said is the answer.
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                crate::broken_pipe::eprint_text(&said);
                let _ = std::fs::remove_file(&log);
                return Err(Error::Exited(status.code().unwrap_or(4)));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Error::cannot_start(format!(
                    "cannot watch the detached run: {e}"
                )))
            }
        }
        if started.elapsed() > CLAIM_WAIT {
            crate::broken_pipe::eprint_line(&format!(
                "run {run_id} has not started its journal after {}s; it may still be checking its providers: see {}",
                CLAIM_WAIT.as_secs(),
                log.display()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::broken_pipe::print_line(run_id);
    let sd = store.flag();
    crate::broken_pipe::eprint_line(&format!(
        "run {run_id} goes on in the background (process {}); it survives this terminal.\n  \
         follow it:   runbook logs {run_id} --follow{sd}\n  \
         where it is: runbook status {run_id}{sd}\n  \
         stop it:     runbook cancel {run_id}{sd}",
        child.id()
    ));
    Ok(Done::Ok)
}

/// In the detached child: a session of its own, so the terminal's hangup
/// never reaches it; and the params the foreground sent on stdin.
pub(super) fn become_detached() -> Result<Vec<(String, String)>> {
    use std::io::Read as _;
    let _ = rustix::process::setsid();
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        Error::cannot_start(format!("cannot read the params of the detached run: {e}"))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::cannot_start(format!(
            "the params of the detached run are not readable: {e}"
        ))
    })
}
