//! `runbook approve`: checks that the run is waiting on the step and that
//! the caller may answer it, then posts a decision to the store's mailbox
//! for the waiting executor. It runs in another process (or on another
//! machine) than the run, so it reads only the journal, the run's claim
//! and the rules the waiting step published.

use std::path::Path;
use std::time::SystemTime;

use crate::error::{Done, Error};
use crate::runbook::{ActionKind, Rollback};
use crate::store::Store;

use super::mailbox::Decision;
use super::rules::Rules;

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
    match &action.kind {
        ActionKind::Approval(_) => Ok(()),
        // A gate that pauses on inconclusive evaluations is answered the same way.
        ActionKind::Metric(m) if m.can_pause() => Ok(()),
        k => Err(format!(
            "`{label}` is a {} step, not an approval or a gate that can pause",
            k.name()
        )),
    }
}

/// `runbook approve`, resolved.
pub struct Answer<'a> {
    pub run_id: &'a str,
    pub step: &'a str,
    pub identity: Option<&'a str>,
    pub reject: bool,
    pub comment: Option<&'a str>,
    /// `--key`: the private key that signs it, or a public key whose
    /// private half is in ssh-agent.
    pub key: Option<&'a Path>,
}

/// `runbook approve`: records a decision for a waiting approval step.
pub fn submit(store: &dyn Store, answer: &Answer<'_>) -> crate::error::Result {
    crate::broken_pipe::print_line(&decide(store, answer)?);
    Ok(Done::Ok)
}

/// Records the decision; what to tell the approver.
pub(crate) fn decide(store: &dyn Store, answer: &Answer<'_>) -> Result<String, Error> {
    let Answer {
        run_id,
        step,
        identity,
        reject,
        comment,
        key,
    } = *answer;
    let invalid = Error::Invalid;
    if run_id.is_empty() || run_id.starts_with('.') || run_id.contains('/') {
        return Err(invalid(format!("`{run_id}` is not a run id")));
    }
    if step.is_empty() || step.starts_with('.') || step.contains('/') {
        return Err(invalid(format!("`{step}` is not a step id")));
    }
    let who = crate::runner::operator(identity);
    let rec = match store.read(run_id) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "no run `{run_id}` in {}",
                store.describe()
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
    let live = store.is_live(run_id).map_err(|e| {
        Error::CannotStart(format!(
            "cannot tell whether run `{run_id}` is running: {e}"
        ))
    })?;
    if !live {
        return Err(invalid(format!(
            "run `{run_id}` is not running (its process stopped); `runbook resume {run_id}` continues it, then approve"
        )));
    }
    let waiting = store.waiting(run_id, step).map_err(|e| {
        Error::CannotStart(format!("cannot read what step `{step}` waits for: {e}"))
    })?;
    let rules: Rules = match waiting {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::CannotStart(format!(
                "the rules step `{step}` waits with are damaged: {e}"
            ))
        })?,
        None => {
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
    let signature = match (&rules.signed, key) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(invalid(format!(
                "--key given, but step `{step}` of run `{run_id}` takes no signatures (its runbook has no `allowed_signers`)"
            )))
        }
        (Some(_), None) => {
            return Err(invalid(format!(
                "step `{step}` of run `{run_id}` counts only signed decisions: add --key PATH (your SSH private key, or a public key whose private half is in ssh-agent)"
            )))
        }
        (Some(by), Some(key)) => {
            let decision = if reject { "reject" } else { "approve" };
            let statement = crate::signing::Statement {
                run_id,
                step,
                decision,
                comment,
                fingerprint: &by.fingerprint,
            };
            let signed = crate::signing::sign(key, &statement.bytes()).map_err(invalid)?;
            // Checked here as the engine will check it, so a wrong key is
            // told now, not only in the run's log.
            let signers = crate::signing::AllowedSigners::parse(&by.allowed_signers)
                .map_err(|_| Error::CannotStart("the run's allowed signers do not parse".into()))?;
            signers
                .verify(&who, &statement.bytes(), &signed.signature, now)
                .map_err(|why| invalid(format!("refused: {why}")))?;
            Some(signed.signature)
        }
    };
    let me = crate::runner::os_user_and_host();
    let decision = Decision {
        by: who.clone(),
        approved: !reject,
        comment: comment.map(str::to_string),
        at: Some(humantime::format_rfc3339_millis(now).to_string()),
        signature,
        os_user: me.os_user,
        host: me.host,
    };
    store
        .post_decision(run_id, step, &decision)
        .map_err(|e| Error::CannotStart(format!("cannot post the decision: {e}")))?;
    Ok(format!(
        "{who} {} step `{step}` of run `{run_id}`",
        if reject { "rejected" } else { "approved" }
    ))
}
