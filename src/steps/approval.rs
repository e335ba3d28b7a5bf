//! `approval:` steps: wait until enough people say yes, one says no, or time
//! runs out. A metric gate that pauses on inconclusive evaluations waits
//! here too ([`wait_for_answers`]), under its own step's label, so the same
//! commands, records, prompt and `status` answer it.
//!
//! # Where decisions come from
//!
//! - `runbook run --approve STEP` (or `resume --approve STEP --as NAME`): an
//!   approval by the operator, counted when the rules allow it.
//! - `runbook approve RUN STEP --as NAME [--reject] [--comment TEXT]` from
//!   another process or machine: [`crate::approvals::submit`] checks the run
//!   is waiting on that step and that NAME may answer it, then posts the
//!   decision to the store's mailbox ([`crate::store::Store::post_decision`]:
//!   a file in the run's directory, or a row in the database). The waiting
//!   executor takes new ones every 200 ms.
//! - a prompt on the terminal, when the run has one and the operator's
//!   approval would count ([`crate::approvals::offer`]); anyone else is told
//!   who may answer and the command, and nothing typed is read.
//!
//! Each `Waiting` event carries the rules as data (who may approve, how
//! many, approvals so far, the deadline), so `status` and the views show
//! them from the run's state, never from `waiting.json`.
//!
//! While it waits, the executor publishes the step's rules in the store
//! (who may approve, how many are needed, who started the run), which is what
//! `submit` validates against; the run's claim says whether the waiter is alive.
//!
//! # Durability
//!
//! Every counted decision is emitted as [`Event::Approval`], so it is in the
//! journal (fsync'd) before the executor acts on it; only then is its file
//! taken from the mailbox for good. The journal is the record of what was
//! decided: an attempt (a retry, or the re-run of the step after `resume`)
//! starts from the approvals journaled for the step so far, and picks up
//! decision files nobody consumed yet. A crash between journaling and moving
//! a file only journals that decision twice, which counts once.
//!
//! A rejection ends the step: it is a permanent error, never retried (nor is
//! an approval that timed out waiting, or one that can never pass). Approvals
//! are carried into a later attempt (a retry after a transient error, the
//! re-run of the step after `resume`).
//!
//! This file is the executor, the waiting itself; what `runbook approve`
//! shares with it (rules, decision files, the prompt) is in
//! [`crate::approvals`].

use std::time::Duration;

use serde_json::Value as Json;

use super::{render, Attempt, Executor, Outputs, StepError};
use crate::approvals::{next_line, offer, parse_answer, stdin_lines, Decision, Offer, Rules};
use crate::events::{AnswerWanted, Event, Stream, WaitingDetail};
use crate::providers::BoxFuture;
use crate::runbook::{Action, Approval};

/// How often the waiting step looks for decision files.
const POLL: Duration = Duration::from_millis(200);

pub struct ApprovalExec;

/// The tally of one attempt.
struct Tally<'a> {
    cx: &'a Attempt<'a>,
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
    /// Where signatures are required, one that is missing or does not
    /// verify is journaled as refused and does not count. Returns whether
    /// it counted.
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
        let mut proof = crate::events::Proof {
            os_user: d.os_user.clone(),
            host: d.host.clone(),
            key: None,
            signature: None,
        };
        if let Some(file) = self.cx.env.signers.for_label(self.cx.label) {
            let statement = statement(self.cx, d.approved, d.comment.as_deref());
            let checked = match &d.signature {
                None => Err("it is not signed, and this approval counts only signed decisions (`runbook approve ... --key PATH`)".to_string()),
                Some(sig) => file.signers.verify(
                    &d.by,
                    &statement.bytes(),
                    sig,
                    std::time::SystemTime::now(),
                ),
            };
            match checked {
                Ok(key) => {
                    proof.key = Some(key);
                    proof.signature.clone_from(&d.signature);
                }
                Err(why) => {
                    self.note(format!("refused a decision by {}: {why}", d.by));
                    let _ = self.cx.bus.emit(Event::ApprovalRefused {
                        step: self.cx.label.to_string(),
                        by: d.by.clone(),
                        approved: d.approved,
                        why,
                    });
                    return false;
                }
            }
        }
        let recorded = self.cx.bus.emit(Event::Approval {
            step: self.cx.label.to_string(),
            by: d.by.clone(),
            approved: d.approved,
            comment: d.comment.clone(),
            proof: Some(Box::new(proof)),
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

/// What a decision on this attempt's step signs.
fn statement<'a>(
    cx: &'a Attempt<'a>,
    approved: bool,
    comment: Option<&'a str>,
) -> crate::signing::Statement<'a> {
    crate::signing::Statement::for_decision(
        &cx.env.run_id,
        cx.label,
        approved,
        comment,
        &cx.env.plan.fingerprint,
    )
}

/// A decision of the operator of this process (`--approve`, the prompt),
/// signed with their `--key` where signatures are required.
fn own_decision(cx: &Attempt<'_>, by: &str, approved: bool, comment: Option<String>) -> Decision {
    let me = crate::runner::os_user_and_host();
    let signature = match (&cx.env.key, cx.env.signers.for_label(cx.label)) {
        (Some(key), Some(_)) => {
            let statement = statement(cx, approved, comment.as_deref());
            match crate::signing::sign(key, &statement.bytes()) {
                Ok(s) => Some(s.signature),
                Err(e) => {
                    cx.bus.note(Event::Output {
                        step: cx.label.to_string(),
                        stream: Stream::Stderr,
                        line: format!("cannot sign the answer: {e}"),
                    });
                    None
                }
            }
        }
        _ => None,
    };
    Decision {
        by: by.to_string(),
        approved,
        comment,
        at: None,
        signature,
        os_user: me.os_user,
        host: me.host,
    }
}

/// Approvals of `label` the run already holds (earlier attempts, earlier
/// processes), in order, without repeats. Where signatures are required,
/// each is checked again against the signers the run started with: a
/// line added to the journal by hand does not count. The signature is
/// checked at the decision's journaled time.
fn journaled_approvals(cx: &Attempt<'_>) -> Vec<String> {
    let Ok(state) = cx.env.state.lock() else {
        return Vec::new();
    };
    let Some(file) = cx.env.signers.for_label(cx.label) else {
        return state.approvers(cx.label);
    };
    let mut out: Vec<String> = Vec::new();
    for d in state
        .decisions
        .iter()
        .filter(|d| d.label == cx.label && d.approved)
    {
        let signature = d.proof.as_ref().and_then(|p| p.signature.as_deref());
        let holds = signature.is_some_and(|sig| {
            let statement = statement(cx, true, d.comment.as_deref());
            file.signers
                .verify_journaled(&d.by, &statement, sig, &d.at)
                .is_ok()
        });
        if holds && !out.contains(&d.by) {
            out.push(d.by.clone());
        }
    }
    out
}

/// The rules of this attempt. Every error here is permanent: the settings
/// render the same way on every attempt.
fn rules_for(a: &Approval, cx: &Attempt<'_>) -> Result<Rules, StepError> {
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
            // Identities are compared trimmed (`--as " alice"` is alice).
            list.iter()
                .map(|s| render(cx, s).map(|who| who.trim().to_string()))
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
        signed: cx
            .env
            .signers
            .for_label(cx.label)
            .map(|f| crate::approvals::SignedBy {
                allowed_signers: f.text.clone(),
                run_id: cx.env.run_id.clone(),
                fingerprint: cx.env.plan.fingerprint.clone(),
            }),
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
            let needed = match required {
                1 => "1 approval is required".to_string(),
                n => format!("{n} approvals are required"),
            };
            let who = match eligible.len() {
                0 => "nobody can approve".to_string(),
                _ => format!("only {} can approve", eligible.join(", ")),
            };
            return Err(StepError::permanent(format!(
                "this approval can never pass: {needed} but {who}{why}"
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
        cx: &'a Attempt<'a>,
    ) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(async move {
            let approved = wait_for_answers(a, cx, None).await?;
            let mut values = Outputs::new();
            values.insert(
                "approved_by".into(),
                Json::Array(approved.into_iter().map(Json::String).collect()),
            );
            let mut out = Outputs::new();
            out.insert("outputs".into(), Json::Object(values));
            Ok(out)
        })
    }
}

/// Withdraws the step's published rules when the attempt ends, however it ends.
struct Waiting<'a> {
    store: &'a dyn crate::store::Store,
    run_id: &'a str,
    step: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.store.close_waiting(self.run_id, self.step);
    }
}

/// Waits until enough people approve (their names, in order), one rejects
/// or the timeout passes (a permanent error either way). An approval step
/// waits here, and so does a paused gate, with `paused_gate` the
/// evaluations that led to the pause: the same rules, commands, records
/// and prompt answer both.
pub(super) async fn wait_for_answers(
    a: &Approval,
    cx: &Attempt<'_>,
    paused_gate: Option<Vec<String>>,
) -> Result<Vec<String>, StepError> {
    let rules = rules_for(a, cx)?;
    let timeout = a
        .timeout
        .as_ref()
        .map(|t| crate::engine::resolve_dur(t, cx.template))
        .transpose()?;
    let started = tokio::time::Instant::now();
    let deadline_at = timeout
        .and_then(|t| std::time::SystemTime::now().checked_add(t))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    let state_dir = cx.env.store.describe();
    let store = &cx.env.store;

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
                tally.decide(own_decision(cx, &operator, true, Some("--approve".into())));
            }
            Err(why) => tally.note(format!("--approve {} does not count: {why}", cx.label)),
        }
    }

    let _waiting = Waiting {
        store: store.as_ref(),
        run_id: &cx.env.run_id,
        step: cx.label,
    };
    if !tally.done() {
        let rules = serde_json::to_vec_pretty(&tally.rules)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        store
            .open_waiting(&cx.env.run_id, cx.label, &rules)
            .map_err(|e| {
                StepError::transient(format!("cannot publish the waiting approval: {e}"))
            })?;
    }

    // The terminal prompt: only for an operator whose answer counts;
    // anyone else is told who can answer and how.
    let mut prompting = false;
    if cx.env.interactive && !tally.done() {
        let pending = tally.rules.eligible().map(|l| {
            l.into_iter()
                .filter(|a| !tally.approved.contains(a))
                .collect::<Vec<_>>()
        });
        let command = crate::state::answer_command(
            &state_dir,
            &cx.env.run_id,
            cx.label,
            pending.as_deref(),
            false,
        );
        match offer(&tally.rules, &operator, &tally.approved, &command) {
            Offer::Ask => {
                prompting = true;
                let asks = match (&tally.rules.message, &paused_gate) {
                    (Some(m), _) => format!("{} asks: {m}", tally.rules.started_by),
                    (None, Some(_)) => format!(
                        "the gate {} is paused: approve to pass it, reject to fail it",
                        cx.label
                    ),
                    (None, None) => format!(
                        "{} asks for approval of {}",
                        tally.rules.started_by, cx.label
                    ),
                };
                for line in paused_gate.iter().flatten() {
                    tally.note(line.clone());
                }
                tally.note(asks);
                if tally.rules.signed.is_none() {
                    tally.note(format!("identities are claimed, not verified: {operator} is who this process says it is (`allowed_signers` proves them)"));
                } else if cx.env.key.is_none() {
                    tally.note("this approval counts only signed answers: answer from another shell with `runbook approve ... --key PATH`, or start the run with --key".into());
                }
                tally.note(format!(
                    "approve as {operator}? type y (or n to reject, optionally followed by a comment) and Enter"
                ));
                // Lines typed before the question are not answers to it.
                if let Ok(mut rx) = stdin_lines().try_lock() {
                    while rx.try_recv().is_ok() {}
                }
            }
            Offer::Tell(text) => {
                for line in text.lines() {
                    tally.note(line.to_string());
                }
            }
        }
    }

    let mut shown = None;
    // Decisions this attempt handled: if marking them consumed fails, they
    // come back, and must not be counted (or journaled) again.
    let mut handled_before: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let pending = if tally.done() {
            Vec::new()
        } else {
            store
                .pending_decisions(&cx.env.run_id, cx.label, cx.env.claim.as_ref())
                .unwrap_or_else(|e| {
                    tally.note(format!("cannot read answers: {e}"));
                    Vec::new()
                })
        };
        let mut handled = Vec::new();
        for (token, decision) in pending {
            if tally.done() {
                break;
            }
            if !handled_before.insert(token.clone()) {
                continue;
            }
            match decision {
                Ok(d) => {
                    tally.decide(d);
                }
                Err(e) => tally.note(format!("ignored {e}")),
            }
            handled.push(token);
        }
        if !handled.is_empty() {
            store.consume_decisions(&cx.env.run_id, cx.label, cx.env.claim.as_ref(), &handled);
        }
        if let Some((by, comment)) = &tally.rejected {
            return Err(StepError::permanent(match comment {
                Some(c) => format!("rejected by {by}: {c}"),
                None => format!("rejected by {by}"),
            }));
        }
        if tally.approved.len() >= tally.rules.required {
            return Ok(tally.approved);
        }
        let on = tally.rules.waiting_on(&tally.approved);
        if shown.as_ref() != Some(&on) {
            let r = &tally.rules;
            cx.bus.note(Event::Waiting {
                step: cx.label.to_string(),
                on: on.clone(),
                detail: Some(WaitingDetail::Approval(AnswerWanted {
                    approvers: r.approvers.clone(),
                    eligible: r.eligible(),
                    required: r.required,
                    approved_by: tally.approved.clone(),
                    started_by: r.started_by.clone(),
                    allow_self_approval: r.allow_self_approval,
                    message: r.message.clone(),
                    deadline: deadline_at.clone(),
                    state_dir: state_dir.clone(),
                    paused_gate: paused_gate.clone(),
                    signed: r.signed.is_some(),
                })),
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
                        tally.decide(own_decision(cx, &operator, approved, comment));
                        prompting = false;
                    }
                    None if line.trim().is_empty() => {}
                    None => tally.note("please answer y or n".into()),
                },
            },
        }
    }
}
