//! `runbook verify RUN_ID`: every decision the journal holds, checked
//! again, offline, against the allowed signers the run started with (kept in
//! the journal's header) or a file given now. What `status` shows as
//! verified can be proven again later, by anyone with the journal. Against
//! the header's copy it proves the journal is consistent; only
//! `--allowed-signers TRUSTED_FILE` makes it independent of the journal (a
//! person who can rewrite the journal can rewrite its header too).

use std::path::Path;

use crate::approvals::RunSigners;
use crate::error::{Done, Error, Result};
use crate::events::Event;
use crate::signing::{AllowedSigners, Statement};
use crate::store::Store;

pub fn verify(store: &dyn Store, run_id: &str, file: Option<&Path>) -> Result {
    let rec = store
        .read(run_id)
        .map_err(|e| Error::invalid(format!("cannot read run `{run_id}`: {e}")))?;
    let header = &rec.header;
    let given = match file {
        None => None,
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", f.display())))?;
            Some(AllowedSigners::parse(&text).map_err(|e| {
                let lines: Vec<String> = e.iter().map(|(l, m)| format!("line {l}: {m}")).collect();
                Error::invalid(format!(
                    "{} is not an allowed-signers file: {}",
                    f.display(),
                    lines.join("; ")
                ))
            })?)
        }
    };
    let journaled = RunSigners::from_texts(&header.allowed_signers).map_err(Error::invalid)?;
    let mut out = Vec::new();
    let mut failed = 0;
    // A header stripped of its signers must not turn signed approvals
    // into claimed ones: the runbook it keeps says whether they were.
    let declares = crate::commands::journaled_runbook(&rec).is_some_and(|rb| {
        rb.allowed_signers.is_some()
            || rb.steps.iter().chain(&rb.on_failure).chain(&rb.finally).any(|s| {
                matches!(&s.action.kind, crate::runbook::ActionKind::Approval(a) if a.allowed_signers.is_some())
            })
    });
    if declares && !journaled.any() && given.is_none() {
        failed += 1;
        out.push(
            "FAILED    the runbook declares allowed_signers but the journal's header holds none: check against a trusted file with --allowed-signers".to_string(),
        );
    }
    let mut checked = 0;
    for (at, event) in &rec.events {
        match event {
            Event::Approval {
                step,
                by,
                approved,
                comment,
                proof,
            } => {
                let verb = if *approved { "approved" } else { "rejected" };
                let what = format!("{step} {verb} by {by} at {at}");
                let signers = given
                    .as_ref()
                    .or_else(|| journaled.for_label(step).map(|f| &f.signers));
                let signature = proof.as_ref().and_then(|p| p.signature.as_deref());
                let whence = proof
                    .as_ref()
                    .map(|p| {
                        format!(
                            " (OS user {}, host {})",
                            p.os_user.as_deref().unwrap_or("?"),
                            p.host.as_deref().unwrap_or("?")
                        )
                    })
                    .unwrap_or_default();
                match (signers, signature) {
                    (None, _) => out.push(format!(
                        "claimed   {what}{whence}: the run takes identities as claimed (no allowed_signers)"
                    )),
                    (Some(_), None) => {
                        failed += 1;
                        out.push(format!("UNSIGNED  {what}{whence}"));
                    }
                    (Some(signers), Some(sig)) => {
                        checked += 1;
                        let statement = Statement::for_decision(
                            &header.run_id,
                            step,
                            *approved,
                            comment.as_deref(),
                            &header.fingerprint,
                        );
                        match signers.verify_journaled(by, &statement, sig, at) {
                            Ok(key) => out.push(format!("verified  {what}{whence}: key {key}")),
                            Err(why) => {
                                failed += 1;
                                out.push(format!("FAILED    {what}{whence}: {why}"));
                            }
                        }
                    }
                }
            }
            Event::ApprovalRefused {
                step,
                by,
                approved,
                why,
            } => {
                let verb = if *approved { "approval" } else { "rejection" };
                out.push(format!(
                    "refused   {step} {verb} by {by} at {at} (did not count): {why}"
                ));
            }
            _ => {}
        }
    }
    println!(
        "run {run_id} (plan {}): {checked} signed decision(s) checked, {failed} failed",
        header.fingerprint
    );
    for line in out {
        println!("{}", crate::view::printable(&line));
    }
    Ok(if failed > 0 {
        Done::Unverified
    } else {
        Done::Ok
    })
}
