//! Plain lines, one per event worth a person's attention, each timestamped:
//! what CI logs and pipes get.
//!
//! Most lines are the event alone ([`describe`], which the JSON log shares);
//! the few that need the run so far (step names, who may answer a waiting
//! approval, tolerated failures at the end) read the view's own fold of the
//! stream, the same [`RunState`] `status` reads.

use std::io::Write;
use std::time::{Duration, SystemTime};

use super::RunView;
use crate::events::{Event, Listener, Stream};

pub struct Plain {
    color: bool,
    state: RunView,
    /// What was last said of each waiting approval, so it is said once per change.
    told: super::Told,
}

impl Plain {
    pub fn new(state: RunView, color: bool) -> Plain {
        Plain {
            color,
            state,
            told: super::Told::default(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

pub(crate) fn describe(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            run_id,
            runbook,
            steps,
            ..
        } => format!("run {run_id} of {runbook} started ({steps} steps)"),
        Event::StepStarted {
            step,
            attempt,
            attempts,
        } if *attempts > 1 => format!("{step}: started (attempt {attempt}/{attempts})"),
        Event::StepStarted { step, .. } => format!("{step}: started"),
        Event::Waiting { step, on, .. } => format!("{step}: waiting on {on}"),
        Event::FlagPrevious {
            step,
            flag,
            previous,
            value,
        } => {
            let shown = |v: &Option<serde_json::Value>| crate::providers::exact::shown(v.as_ref());
            match step.strip_suffix(".restore") {
                Some(id) => format!(
                    "{id}: restoring flag {flag} to {} (it is {})",
                    shown(value),
                    shown(previous)
                ),
                None => format!("{step}: flag {flag} was {}", shown(previous)),
            }
        }
        Event::AttemptFailed {
            step,
            attempt,
            error,
            retry_in_ms,
        } => match retry_in_ms {
            Some(ms) => format!(
                "{step}: attempt {attempt} failed: {error}; retrying in {}",
                super::short(Duration::from_millis(*ms))
            ),
            None => format!("{step}: attempt {attempt} failed: {error}"),
        },
        Event::StepFinished {
            step,
            status,
            error,
            ..
        } => match error {
            Some(e) => format!("{step}: {} ({e})", status.as_str()),
            None => format!("{step}: {}", status.as_str()),
        },
        Event::UnwindStarted { reason, .. } => format!("unwinding: {reason}"),
        Event::Signal { message, .. } => message.clone(),
        Event::RollbackStarted {
            step,
            body,
            attempt,
            attempts,
        } => {
            let of = if *attempts > 1 {
                format!(" (attempt {attempt}/{attempts})")
            } else {
                String::new()
            };
            format!("{step}: rollback {} started{of}", body + 1)
        }
        Event::RollbackFinished {
            step,
            status,
            error,
            ..
        } => match error {
            Some(e) => format!("{step}: rollback {} ({e})", status.as_str()),
            None => format!("{step}: rollback {}", status.as_str()),
        },
        Event::PhaseStarted { phase } => format!("running {phase} steps"),
        Event::Resumed { mode, by, pid } => {
            format!("run taken up again ({mode} by {by}, process {pid})")
        }
        Event::RunFinished {
            status,
            duration_ms,
        } => format!(
            "run {} in {}",
            status.as_str(),
            super::short(Duration::from_millis(*duration_ms))
        ),
        Event::ApprovalRefused {
            step,
            by,
            approved,
            why,
        } => format!(
            "{step}: {} by {by} refused: {why}",
            if *approved { "approval" } else { "rejection" }
        ),
        Event::Approval {
            step,
            by,
            approved,
            comment,
            ..
        } => format!(
            "{step}: {} by {by}{}",
            if *approved { "approved" } else { "rejected" },
            comment
                .as_ref()
                .map_or(String::new(), |c| format!(" ({c})"))
        ),
        Event::Output { .. } | Event::GateSample { .. } | Event::Spawned { .. } => return None,
    })
}

impl Listener for Plain {
    fn on(&mut self, at: SystemTime, event: &Event) {
        self.state.apply(at, event);
        let state = self.state.read();
        let ts = humantime::format_rfc3339_seconds(at);
        let mut more = Vec::new();
        let line = match event {
            Event::Waiting { step, on, detail } => {
                more = self.told.news(&state, step);
                let text = super::waiting_text(on, detail.as_ref(), at);
                format!(
                    "{ts} ==> {step}{}: waiting on {text}",
                    super::title(&state, step)
                )
            }
            Event::StepStarted { step, .. } => {
                let text = describe(event).unwrap_or_default();
                let title = super::title(&state, step);
                format!(
                    "{ts} ==> {}",
                    text.replacen(step.as_str(), &format!("{step}{title}"), 1)
                )
            }
            Event::RunFinished {
                status,
                duration_ms,
            } => format!(
                "{ts} ==> run {}{} in {}",
                status.as_str(),
                state.tolerated_note(),
                super::short(Duration::from_millis(*duration_ms))
            ),
            Event::Output { step, stream, line } => {
                let tag = format!("[{step}]");
                let tag = match stream {
                    Stream::Stdout => self.paint("36", &tag),
                    Stream::Stderr => self.paint("33", &tag),
                };
                format!("{ts} {tag} {}", super::printable(line))
            }
            other => match describe(other) {
                Some(text) => {
                    let text = match other {
                        Event::StepFinished { status, .. }
                        | Event::RollbackFinished { status, .. } => match status {
                            crate::events::StepStatus::Failed => self.paint("31", &text),
                            crate::events::StepStatus::Succeeded => self.paint("32", &text),
                            _ => text,
                        },
                        Event::UnwindStarted { .. } => self.paint("1;31", &text),
                        _ => text,
                    };
                    format!("{ts} ==> {text}")
                }
                None => return,
            },
        };
        drop(state);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        for l in more {
            let _ = writeln!(out, "{ts}     {l}");
        }
        let _ = out.flush();
    }

    fn finish(&mut self) {
        crate::approvals::discard_typed_input();
    }
}
