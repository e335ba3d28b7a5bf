//! Which allowed-signers file proves the approvers of each approval: the
//! step's own `allowed_signers`, else the runbook's. Read once, when the run
//! starts, and kept in the journal's header: the run is answered by the
//! keys it started with (editing the file mid-run neither adds nor revokes
//! an approver), and `resume` and `runbook verify` need no file.
//!
//! Apart from [`crate::signing`] (the format and the cryptography) because
//! this is the runbook's side: paths relative to the runbook, templates,
//! and the check that every listed approver has a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostics::{Code, Diagnostic};
use crate::runbook::{ActionKind, Approval, Rollback, Runbook, Tpl};
use crate::signing::AllowedSigners;

/// The label of the runbook's own file in [`RunSigners::texts`].
const TOP: &str = "";

/// One allowed-signers file as read.
pub struct SignerFile {
    pub text: String,
    pub signers: AllowedSigners,
}

/// The files a run's approvals are checked against.
#[derive(Default, Clone)]
pub struct RunSigners {
    /// By approval label (`TOP` for the runbook's file).
    files: BTreeMap<String, Arc<SignerFile>>,
}

/// Every approval of the runbook, with its label: main steps, rollback
/// bodies (`step.rollback.N`), `on_failure` and `finally`; paused gates
/// answer under their step's label with the runbook's file.
fn approvals(rb: &Runbook) -> Vec<(String, &Approval)> {
    fn of(kind: &ActionKind) -> Option<&Approval> {
        match kind {
            ActionKind::Approval(a) => Some(a.as_ref()),
            ActionKind::Metric(m) if m.can_pause() => Some(&m.pause),
            _ => None,
        }
    }
    let mut out = Vec::new();
    for s in rb.steps.iter().chain(&rb.on_failure).chain(&rb.finally) {
        if let Some(a) = of(&s.action.kind) {
            out.push((s.id.clone(), a));
        }
        if let Rollback::Bodies(bodies) = &s.rollback {
            for (n, b) in bodies.iter().enumerate() {
                if let Some(a) = of(&b.kind) {
                    out.push((format!("{}.rollback.{}", s.id, n + 1), a));
                }
            }
        }
    }
    out
}

impl RunSigners {
    /// Whether any approval of the run is proven by signatures.
    pub fn any(&self) -> bool {
        !self.files.is_empty()
    }

    /// The file approval `label` is checked against.
    pub fn for_label(&self, label: &str) -> Option<&Arc<SignerFile>> {
        self.files.get(label).or_else(|| self.files.get(TOP))
    }

    /// The runbook's own file (what proves who started the run).
    pub fn top(&self) -> Option<&Arc<SignerFile>> {
        self.files.get(TOP)
    }

    /// The texts as the journal's header keeps them.
    pub fn texts(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(k, v)| (k.clone(), v.text.clone()))
            .collect()
    }

    /// From a journal's header.
    pub fn from_texts(texts: &BTreeMap<String, String>) -> Result<RunSigners, String> {
        let mut files = BTreeMap::new();
        for (label, text) in texts {
            let signers = AllowedSigners::parse(text).map_err(|e| {
                format!(
                    "the allowed signers the run started with no longer parse: {}",
                    problems(&e)
                )
            })?;
            files.insert(
                label.clone(),
                Arc::new(SignerFile {
                    text: text.clone(),
                    signers,
                }),
            );
        }
        Ok(RunSigners { files })
    }

    /// Reads every file the runbook names, relative to `base` (the
    /// runbook's directory). Errors are diagnostics at the
    /// `allowed_signers` field.
    pub fn load(rb: &Runbook, base: &Path) -> Result<RunSigners, Vec<Diagnostic>> {
        let mut files = BTreeMap::new();
        let mut errors = Vec::new();
        let mut read = |label: &str, tpl: &Tpl, errors: &mut Vec<Diagnostic>| {
            // A fixed path: a template would let whoever starts the run
            // (with a param) choose whose keys count.
            if crate::template::is_template(&tpl.text) {
                let mut d = Diagnostic::new(
                    Code::AllowedSigners,
                    tpl.span,
                    "`allowed_signers` must be a fixed path: a template would let whoever starts the run choose whose keys count",
                );
                d.help = Some("name the file as written, relative to the runbook".into());
                errors.push(d);
                return;
            }
            let path = tpl.text.clone();
            let full: PathBuf = base.join(path.trim());
            let text = match std::fs::read_to_string(&full) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(Diagnostic::new(
                        Code::AllowedSigners,
                        tpl.span,
                        format!("cannot read the allowed signers {}: {e}", full.display()),
                    ));
                    return;
                }
            };
            match AllowedSigners::parse(&text) {
                Ok(signers) => {
                    files.insert(label.to_string(), Arc::new(SignerFile { text, signers }));
                }
                Err(e) => errors.push(Diagnostic::new(
                    Code::AllowedSigners,
                    tpl.span,
                    format!(
                        "{} is not an allowed-signers file: {}",
                        full.display(),
                        problems(&e)
                    ),
                )),
            }
        };
        if let Some(top) = &rb.allowed_signers {
            read(TOP, top, &mut errors);
        }
        for (label, a) in approvals(rb) {
            if let Some(own) = &a.allowed_signers {
                read(&label, own, &mut errors);
            }
        }
        let run = RunSigners { files };
        // Every approver named as written must have a key.
        for (label, a) in approvals(rb) {
            let Some(file) = run.for_label(&label) else {
                continue;
            };
            let missing: Vec<&Tpl> = a
                .approvers
                .iter()
                .flatten()
                .filter(|n| !crate::template::is_template(&n.text))
                .filter(|n| !file.signers.has_principal(n.text.trim()))
                .collect();
            if let Some(first) = missing.first() {
                let names: Vec<&str> = missing.iter().map(|n| n.text.trim()).collect();
                let mut d = Diagnostic::new(
                    Code::AllowedSigners,
                    first.span,
                    format!(
                        "approval `{label}`: the allowed signers have no key for {}",
                        names.join(", ")
                    ),
                );
                d.help = Some(
                    "add a line `NAME KEYTYPE BASE64` for each (the approver's public key, e.g. from ~/.ssh/id_ed25519.pub)".into(),
                );
                errors.push(d);
            }
        }
        if errors.is_empty() {
            Ok(run)
        } else {
            Err(errors)
        }
    }
}

fn problems(e: &[(usize, String)]) -> String {
    e.iter()
        .map(|(line, m)| format!("line {line}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}
