//! `approval:` steps: wait until enough people say yes, one says no, or time
//! runs out.
//!
//! # Where decisions come from
//!
//! - `runbook run --approve STEP` (or `resume --approve STEP --as NAME`): an
//!   approval by the operator, counted when the rules allow it.
//! - `runbook approve RUN STEP --as NAME [--reject] [--comment TEXT]` from
//!   another process: [`submit`] checks the run is waiting on that step and
//!   that NAME may answer it, then writes a decision file atomically (temp
//!   file + rename) into `<run dir>/approvals/<step>/`. The waiting executor
//!   polls that directory every 200 ms.
//! - a prompt on the terminal, when the run has one: the operator answers.
//!
//! While it waits, the executor keeps `<run dir>/approvals/<step>/waiting.json`
//! (who may approve, how many are needed, who started the run), which is what
//! `submit` validates against; the run lock says whether the waiter is alive.
//!
//! # Durability
//!
//! Every counted decision is emitted as [`Event::Approval`], so it is in the
//! journal (fsync'd) before the executor acts on it; only then is its file
//! moved to `approvals/<step>/done/`. The journal is the record of what was
//! decided: an attempt (a retry, or the re-run of the step after `resume`)
//! starts from the approvals journaled for the step so far, and picks up
//! decision files nobody consumed yet. A crash between journaling and moving
//! a file only journals that decision twice, which counts once.
//!
//! A rejection ends the step: it is a permanent error, never retried (nor is
//! an approval that timed out waiting, or one that can never pass). Approvals
//! are carried into a later attempt (a retry after a transient error, the
//! re-run of the step after `resume`).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use super::{render, Cx, Executor, Outputs, StepError};
use crate::error::{Done, Error};
use crate::events::{Event, Stream};
use crate::journal::{FileStore, RunStore};
use crate::providers::BoxFuture;
use crate::runbook::{Action, ActionKind, Approval, Rollback};

/// How often the waiting step looks for decision files.
const POLL: Duration = Duration::from_millis(200);

pub struct ApprovalExec;

/// What `waiting.json` holds: everything `submit` needs to judge a decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rules {
    step: String,
    /// Who may answer; anyone when `None`.
    approvers: Option<Vec<String>>,
    required: usize,
    allow_self_approval: bool,
    /// The identity that started the run.
    started_by: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    pid: u32,
}

impl Rules {
    fn listed(&self, who: &str) -> bool {
        self.approvers
            .as_ref()
            .is_none_or(|l| l.iter().any(|a| a == who))
    }

    /// `Err(why)` when `who` may not approve.
    fn may_approve(&self, who: &str) -> Result<(), String> {
        if !self.listed(who) {
            return Err(format!(
                "{who} is not an approver of step `{}`; {}",
                self.step,
                self.who_can()
            ));
        }
        if who == self.started_by && !self.allow_self_approval {
            return Err(format!(
                "{who} started this run and cannot approve step `{}` (allow_self_approval is not set); {}",
                self.step,
                self.who_can()
            ));
        }
        Ok(())
    }

    /// `Err(why)` when `who` may not reject. Starting the run does not stop
    /// anyone from stopping it.
    fn may_reject(&self, who: &str) -> Result<(), String> {
        if self.listed(who) || who == self.started_by {
            Ok(())
        } else {
            Err(format!(
                "{who} is not an approver of step `{}`; {}",
                self.step,
                self.who_can()
            ))
        }
    }

    /// The listed approvers who may approve (the starter left out unless
    /// self approval is allowed), in list order, without repeats.
    fn eligible(&self) -> Option<Vec<String>> {
        self.approvers.as_ref().map(|list| {
            let mut seen = HashSet::new();
            list.iter()
                .filter(|a| self.allow_self_approval || **a != self.started_by)
                .filter(|a| seen.insert(a.as_str()))
                .cloned()
                .collect()
        })
    }

    fn who_can(&self) -> String {
        match self.eligible() {
            Some(list) if list.is_empty() => "nobody else is listed".into(),
            Some(list) => format!("approvers: {}", list.join(", ")),
            None if self.allow_self_approval => "anyone may approve".into(),
            None => format!("anyone but {} may approve", self.started_by),
        }
    }

    /// `approval 1/2 (alice); waiting for bob or carol`
    fn waiting_on(&self, approved: &[String]) -> String {
        let mut s = format!("approval {}/{}", approved.len(), self.required);
        if !approved.is_empty() {
            s.push_str(&format!(" ({})", approved.join(", ")));
        }
        let pending = match self.eligible() {
            Some(list) => {
                let rest: Vec<String> =
                    list.into_iter().filter(|a| !approved.contains(a)).collect();
                or_list(&rest)
            }
            None if self.allow_self_approval => "anyone".into(),
            None => format!("anyone but {}", self.started_by),
        };
        s.push_str(&format!("; waiting for {pending}"));
        s
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => "nobody".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// One decision file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Decision {
    by: String,
    approved: bool,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    at: Option<String>,
}

/// `<run dir>/approvals/<step>`.
fn approvals_dir(run_dir: &Path, step: &str) -> PathBuf {
    run_dir.join("approvals").join(step)
}

/// A file name part made of safe characters only.
fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// Writes `value` as JSON to `path` atomically: a hidden temp file beside it,
/// fsync'd, renamed over, the directory fsync'd.
/// Writes JSON whole or not at all: a reader never sees half a decision.
fn write_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(path, &text, crate::fsutil::PRIVATE)
}

/// Removes `waiting.json` when the attempt ends, however it ends.
struct WaitingFile(PathBuf);

impl Drop for WaitingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Decision files not consumed yet, oldest first.
fn pending_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    !n.starts_with('.') && n != "waiting.json"
                })
        })
        .collect();
    files.sort();
    files
}

/// Moves a consumed decision file into `done/`.
fn consume(dir: &Path, file: &Path) {
    let done = dir.join("done");
    let _ = std::fs::create_dir_all(&done);
    if let Some(name) = file.file_name() {
        if std::fs::rename(file, done.join(name)).is_err() {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Lines typed on the terminal, read by one thread for the whole process so
/// two prompts never compete for stdin.
fn stdin_lines() -> &'static tokio::sync::Mutex<mpsc::UnboundedReceiver<String>> {
    static LINES: OnceLock<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        tokio::sync::Mutex::new(rx)
    })
}

/// The next line typed, `None` once stdin is closed.
async fn next_line() -> Option<String> {
    stdin_lines().lock().await.recv().await
}

/// Parses a prompt answer: `y`/`yes` or `n`/`no`, optionally with a comment.
fn parse_answer(line: &str) -> Option<(bool, Option<String>)> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let approved = match word.to_ascii_lowercase().as_str() {
        "y" | "yes" => true,
        "n" | "no" => false,
        _ => return None,
    };
    let rest = rest.trim();
    Some((approved, (!rest.is_empty()).then(|| rest.to_string())))
}

/// The tally of one attempt.
struct Tally<'a> {
    cx: &'a Cx<'a>,
    rules: Rules,
    approved: Vec<String>,
    rejected: Option<(String, Option<String>)>,
}

impl Tally<'_> {
    fn note(&self, line: String) {
        self.cx.bus.note(Event::Output {
            step: self.cx.label.to_string(),
            stream: Stream::Stderr,
            line,
        });
    }

    /// Counts a decision when the rules allow it, journaling it first.
    /// Returns whether it counted.
    fn decide(&mut self, d: Decision) -> bool {
        let allowed = if d.approved {
            self.rules.may_approve(&d.by)
        } else {
            self.rules.may_reject(&d.by)
        };
        if let Err(why) = allowed {
            self.note(format!("ignored a decision: {why}"));
            return false;
        }
        let recorded = self.cx.bus.emit(Event::Approval {
            step: self.cx.label.to_string(),
            by: d.by.clone(),
            approved: d.approved,
            comment: d.comment.clone(),
        });
        if !recorded {
            // A decision the journal does not hold does not count.
            return false;
        }
        if d.approved {
            if !self.approved.contains(&d.by) {
                self.approved.push(d.by);
            }
        } else if self.rejected.is_none() {
            self.rejected = Some((d.by, d.comment));
        }
        true
    }

    fn done(&self) -> bool {
        self.rejected.is_some() || self.approved.len() >= self.rules.required
    }
}

/// Approvals of `label` the run already holds (earlier attempts, earlier
/// processes), in order, without repeats.
fn journaled_approvals(cx: &Cx<'_>) -> Vec<String> {
    cx.env
        .state
        .lock()
        .map(|s| s.approvers(cx.label))
        .unwrap_or_default()
}

/// The rules of this attempt. Every error here is permanent: the settings
/// render the same way on every attempt.
fn rules_for(a: &Approval, cx: &Cx<'_>) -> Result<Rules, StepError> {
    let required = crate::engine::resolve_num(&a.required, cx.template)?;
    let required = usize::try_from(required)
        .ok()
        .filter(|r| *r >= 1)
        .ok_or_else(|| {
            StepError::permanent(format!("`required` must be at least 1, got {required}"))
        })?;
    let approvers = match &a.approvers {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|s| render(cx, s))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    // Kept in waiting.json on disk: no secrets there.
    let message = a
        .message
        .as_deref()
        .map(|m| render(cx, m).map(|m| cx.bus.masker().mask(&m)))
        .transpose()?;
    let rules = Rules {
        step: cx.label.to_string(),
        approvers,
        required,
        allow_self_approval: a.allow_self_approval,
        started_by: cx.env.identity.clone(),
        message,
        pid: std::process::id(),
    };
    if let Some(eligible) = rules.eligible() {
        if eligible.len() < required {
            let excluded = !rules.allow_self_approval
                && rules
                    .approvers
                    .iter()
                    .flatten()
                    .any(|a| *a == rules.started_by);
            let why = if excluded {
                format!(
                    " ({} started the run and cannot approve it: allow_self_approval is not set)",
                    rules.started_by
                )
            } else {
                String::new()
            };
            return Err(StepError::permanent(format!(
                "this approval can never pass: {required} approvals are required but only {} can approve{why}",
                match eligible.len() {
                    0 => "nobody".to_string(),
                    _ => eligible.join(", "),
                }
            )));
        }
    }
    Ok(rules)
}

impl Executor for ApprovalExec {
    type Body = Approval;

    fn run<'a>(
        &'a self,
        a: &'a Approval,
        _action: &'a Action,
        cx: &'a Cx<'a>,
    ) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(async move {
            let rules = rules_for(a, cx)?;
            let timeout = a
                .timeout
                .as_ref()
                .map(|t| crate::engine::resolve_dur(t, cx.template))
                .transpose()?;
            let started = tokio::time::Instant::now();
            let dir = approvals_dir(&cx.env.run_dir, cx.label);
            std::fs::create_dir_all(dir.join("done")).map_err(|e| {
                StepError::transient(format!("cannot create {}: {e}", dir.display()))
            })?;

            let mut tally = Tally {
                cx,
                rules,
                approved: Vec::new(),
                rejected: None,
            };
            for by in journaled_approvals(cx) {
                if tally.rules.may_approve(&by).is_ok() {
                    tally.approved.push(by);
                }
            }

            let operator = cx.env.operator.clone();
            if cx.env.approve.iter().any(|s| s == cx.label) {
                match tally.rules.may_approve(&operator) {
                    Ok(()) if tally.approved.contains(&operator) => {}
                    Ok(()) => {
                        tally.decide(Decision {
                            by: operator.clone(),
                            approved: true,
                            comment: Some("--approve".into()),
                            at: None,
                        });
                    }
                    Err(why) => tally.note(format!("--approve {} does not count: {why}", cx.label)),
                }
            }

            let waiting = WaitingFile(dir.join("waiting.json"));
            if !tally.done() {
                write_atomic(&waiting.0, &tally.rules).map_err(|e| {
                    StepError::transient(format!("cannot write {}: {e}", waiting.0.display()))
                })?;
            }

            // The terminal prompt: only for an operator whose answer counts.
            let mut prompting = cx.env.interactive
                && tally.rules.may_approve(&operator).is_ok()
                && !tally.approved.contains(&operator);
            if prompting {
                let asks = match &tally.rules.message {
                    Some(m) => format!("{} asks: {m}", tally.rules.started_by),
                    None => format!(
                        "{} asks for approval of {}",
                        tally.rules.started_by, cx.label
                    ),
                };
                tally.note(asks);
                tally.note(format!(
                    "approve as {operator}? type y (or n to reject, optionally followed by a comment) and Enter"
                ));
                // Lines typed before the question are not answers to it.
                if let Ok(mut rx) = stdin_lines().try_lock() {
                    while rx.try_recv().is_ok() {}
                }
            }

            let mut shown = None;
            let mut seen_files: HashSet<PathBuf> = HashSet::new();
            loop {
                for file in pending_files(&dir) {
                    if tally.done() {
                        break;
                    }
                    if !seen_files.insert(file.clone()) {
                        continue;
                    }
                    match std::fs::read(&file)
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            serde_json::from_slice::<Decision>(&b).map_err(|e| e.to_string())
                        }) {
                        Ok(d) => {
                            tally.decide(d);
                        }
                        Err(e) => {
                            tally.note(format!("ignored {}: not a decision ({e})", file.display()));
                        }
                    }
                    consume(&dir, &file);
                }
                if let Some((by, comment)) = &tally.rejected {
                    return Err(StepError::permanent(match comment {
                        Some(c) => format!("rejected by {by}: {c}"),
                        None => format!("rejected by {by}"),
                    }));
                }
                if tally.approved.len() >= tally.rules.required {
                    let mut values = Outputs::new();
                    values.insert(
                        "approved_by".into(),
                        Json::Array(tally.approved.iter().cloned().map(Json::String).collect()),
                    );
                    let mut out = Outputs::new();
                    out.insert("outputs".into(), Json::Object(values));
                    return Ok(out);
                }
                let on = tally.rules.waiting_on(&tally.approved);
                if shown.as_ref() != Some(&on) {
                    cx.bus.note(Event::Waiting {
                        step: cx.label.to_string(),
                        on: on.clone(),
                    });
                    shown = Some(on);
                }
                let deadline = async {
                    match timeout {
                        Some(t) => tokio::time::sleep_until(started + t).await,
                        None => std::future::pending().await,
                    }
                };
                let answer = async {
                    if prompting {
                        next_line().await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    stop = cx.stopped() => {
                        let msg = format!("stopped while waiting: {}", tally.rules.waiting_on(&tally.approved));
                        return Err(StepError::stopped(stop, msg));
                    }
                    () = deadline => {
                        let t = crate::duration::format(timeout.unwrap_or_default());
                        let got = if tally.approved.is_empty() {
                            "no approvals".to_string()
                        } else {
                            format!("{}/{} approvals ({})", tally.approved.len(), tally.rules.required, tally.approved.join(", "))
                        };
                        // Nobody answered: asking again would only wait again.
                        return Err(StepError::permanent(format!("approval timed out after {t} with {got}")));
                    }
                    line = answer => match line {
                        None => prompting = false,
                        Some(line) => match parse_answer(&line) {
                            Some((approved, comment)) => {
                                tally.decide(Decision { by: operator.clone(), approved, comment, at: None });
                                prompting = false;
                            }
                            None if line.trim().is_empty() => {}
                            None => tally.note("please answer y or n".into()),
                        },
                    },
                }
            }
        })
    }
}

/// Whether `label` (`id` or `id.rollback.N`) names an approval in the runbook.
/// `Err` says what it is instead.
fn approval_label(rb: &crate::runbook::Runbook, label: &str) -> Result<(), String> {
    let (id, body) = match label.split_once(".rollback.") {
        Some((id, n)) => (id, n.parse::<usize>().ok()),
        None => (label, None),
    };
    let step = rb
        .steps
        .iter()
        .chain(&rb.on_failure)
        .chain(&rb.finally)
        .find(|s| s.id == id);
    let Some(step) = step else {
        let approvals: Vec<&str> = rb
            .steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .filter(|s| matches!(s.action.kind, ActionKind::Approval(_)))
            .map(|s| s.id.as_str())
            .collect();
        return Err(if approvals.is_empty() {
            format!("there is no step `{label}` (the runbook has no approval steps)")
        } else {
            format!(
                "there is no step `{label}`; approval steps: {}",
                approvals.join(", ")
            )
        });
    };
    let action = match (body, &step.rollback) {
        (None, _) => &step.action,
        (Some(n), Rollback::Bodies(bodies)) if n >= 1 && n <= bodies.len() => &bodies[n - 1],
        _ => return Err(format!("step `{id}` has no rollback body {label}")),
    };
    match action.kind {
        ActionKind::Approval(_) => Ok(()),
        ref k => Err(format!("`{label}` is a {} step, not an approval", k.name())),
    }
}

/// `runbook approve`: records a decision for a waiting approval step.
pub fn submit(
    state_dir: &Path,
    run_id: &str,
    step: &str,
    identity: Option<&str>,
    reject: bool,
    comment: Option<&str>,
) -> crate::error::Result {
    let msg = try_submit(state_dir, run_id, step, identity, reject, comment)?;
    println!("{msg}");
    Ok(Done::Ok)
}

fn try_submit(
    state_dir: &Path,
    run_id: &str,
    step: &str,
    identity: Option<&str>,
    reject: bool,
    comment: Option<&str>,
) -> Result<String, Error> {
    let invalid = Error::Invalid;
    if run_id.is_empty() || run_id.starts_with('.') || run_id.contains('/') {
        return Err(invalid(format!("`{run_id}` is not a run id")));
    }
    if step.is_empty() || step.starts_with('.') || step.contains('/') {
        return Err(invalid(format!("`{step}` is not a step id")));
    }
    let who = crate::runner::operator(identity);
    let store = FileStore::new(state_dir);
    let rec = match store.read(run_id) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "no run `{run_id}` in {}",
                state_dir.display()
            )))
        }
        Err(e) => {
            return Err(Error::CannotStart(format!(
                "cannot read the journal of run `{run_id}`: {e}"
            )))
        }
    };
    let rb = crate::commands::journaled_runbook(&rec);
    if let Some(rb) = &rb {
        approval_label(rb, step).map_err(|e| invalid(format!("run `{run_id}`: {e}")))?;
    }
    let state = rec.state(rb.as_deref());
    if let Some(status) = state.status {
        return Err(invalid(format!(
            "run `{run_id}` already finished ({}); step `{step}` is not waiting for approval",
            status.as_str()
        )));
    }
    let run_dir = store.run_dir(run_id);
    if !crate::lock::is_held(&run_dir.join("run.lock")) {
        return Err(invalid(format!(
            "run `{run_id}` is not running (its process stopped); `runbook resume {run_id}` continues it, then approve"
        )));
    }
    let dir = approvals_dir(&run_dir, step);
    let rules: Rules = match std::fs::read(dir.join("waiting.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::CannotStart(format!(
                "{} is damaged: {e}",
                dir.join("waiting.json").display()
            ))
        })?,
        Err(_) => {
            return Err(invalid(format!(
                "step `{step}` of run `{run_id}` is not waiting for approval (it is {})",
                state
                    .steps
                    .get(step.split(".rollback.").next().unwrap_or(step))
                    .map_or("not_started", |s| s.display_status())
                    .replace('_', " ")
            )))
        }
    };
    if reject {
        rules.may_reject(&who).map_err(invalid)?;
    } else {
        rules.may_approve(&who).map_err(invalid)?;
    }
    let now = SystemTime::now();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let decision = Decision {
        by: who.clone(),
        approved: !reject,
        comment: comment.map(str::to_string),
        at: Some(humantime::format_rfc3339_millis(now).to_string()),
    };
    let path = dir.join(format!(
        "{nanos:020}-{}-{}.json",
        file_safe(&who),
        std::process::id()
    ));
    write_atomic(&path, &decision)
        .map_err(|e| Error::CannotStart(format!("cannot write {}: {e}", path.display())))?;
    Ok(format!(
        "{who} {} step `{step}` of run `{run_id}`",
        if reject { "rejected" } else { "approved" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(approvers: Option<&[&str]>, required: usize, allow_self: bool) -> Rules {
        Rules {
            step: "gate".into(),
            approvers: approvers.map(|l| l.iter().map(ToString::to_string).collect()),
            required,
            allow_self_approval: allow_self,
            started_by: "alice".into(),
            message: None,
            pid: 0,
        }
    }

    #[test]
    fn waiting_text_names_who_is_left() {
        let r = rules(Some(&["alice", "bob", "carol", "dave"]), 2, false);
        assert_eq!(
            r.waiting_on(&["bob".into()]),
            "approval 1/2 (bob); waiting for carol or dave"
        );
        assert_eq!(
            r.waiting_on(&[]),
            "approval 0/2; waiting for bob, carol or dave"
        );
        let anyone = rules(None, 1, false);
        assert_eq!(
            anyone.waiting_on(&[]),
            "approval 0/1; waiting for anyone but alice"
        );
    }

    #[test]
    fn self_approval_and_lists() {
        let r = rules(Some(&["alice", "bob"]), 1, false);
        assert!(r.may_approve("bob").is_ok());
        let e = r.may_approve("alice").unwrap_err();
        assert!(e.contains("started this run"), "{e}");
        assert!(e.contains("approvers: bob"), "{e}");
        let e = r.may_approve("mallory").unwrap_err();
        assert!(e.contains("not an approver"), "{e}");
        assert!(r.may_reject("alice").is_ok());
        assert!(r.may_reject("mallory").is_err());
        assert!(rules(Some(&["alice"]), 1, true)
            .may_approve("alice")
            .is_ok());
        assert!(rules(None, 1, false).may_approve("zed").is_ok());
    }

    #[test]
    fn answers() {
        assert_eq!(parse_answer("y"), Some((true, None)));
        assert_eq!(parse_answer(" YES "), Some((true, None)));
        assert_eq!(
            parse_answer("n error rate too high"),
            Some((false, Some("error rate too high".into())))
        );
        assert_eq!(parse_answer("maybe"), None);
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_safe("../x y"), "___x_y");
        assert_eq!(file_safe(""), "_");
    }
}
