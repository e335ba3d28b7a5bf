//! The live view on a terminal: an overall bar, one spinner line per running
//! step (elapsed, attempt n/m, what it waits on), step output printed above
//! the bars, and a summary table at the end.
//!
//! It reads the run's [`crate::state::RunState`] (seeded with every step of
//! the runbook, or the journal's state on resume), so what it shows of a
//! waiting approval, the closing summary (steps that never started
//! included) and the last line (tolerated failures counted) come from the
//! same state `status` and the report read.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::RunView;
use crate::events::{Event, Listener, StepStatus, Stream};

pub struct Terminal {
    multi: MultiProgress,
    overall: ProgressBar,
    running: HashMap<String, ProgressBar>,
    started: HashMap<String, Instant>,
    /// How long each step took in this process.
    took: HashMap<String, Duration>,
    color: bool,
    /// The closing line: how the run ended and how to look at it again.
    ending: Option<String>,
    state: RunView,
    /// The last approval text printed per label, so it is printed once per change.
    told: super::Told,
}

impl Terminal {
    /// `state`: every step of the runbook not started (a fresh run), or the
    /// journal's state (resume, rollback).
    pub fn new(state: RunView, color: bool) -> Terminal {
        let total = state
            .read()
            .steps
            .values()
            .filter(|s| s.phase == "steps")
            .count();
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {pos}/{len} steps  {elapsed_precise}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("run");
        overall.enable_steady_tick(Duration::from_millis(200));
        Terminal {
            multi,
            overall,
            running: HashMap::new(),
            started: HashMap::new(),
            took: HashMap::new(),
            color,
            ending: None,
            state,
            told: super::Told::default(),
        }
    }

    fn bar(&mut self, step: &str) -> ProgressBar {
        if let Some(b) = self.running.get(step) {
            return b.clone();
        }
        let b = self.multi.add(ProgressBar::new_spinner());
        b.set_style(
            ProgressStyle::with_template("  {spinner} {prefix:20} {elapsed:>5} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_prefix(step.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        self.running.insert(step.to_string(), b.clone());
        self.started.insert(step.to_string(), Instant::now());
        b
    }

    fn done(&mut self, step: &str) {
        if let Some(b) = self.running.remove(step) {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Prints who may answer a waiting approval and how, once per change.
    fn tell_answers(&mut self, label: &str) {
        let lines = self.told.news(&self.state.read(), label);
        if !lines.is_empty() {
            let text = lines
                .iter()
                .map(|l| format!("  {label}: {l}"))
                .collect::<Vec<_>>()
                .join("\n");
            let _ = self.multi.println(text);
        }
    }
}

impl Listener for Terminal {
    fn on(&mut self, at: SystemTime, event: &Event) {
        self.state.apply(at, event);
        match event {
            Event::Output { step, stream, line } => {
                let tag = match stream {
                    Stream::Stdout => self.paint("36", &format!("[{step}]")),
                    Stream::Stderr => self.paint("33", &format!("[{step}]")),
                };
                let _ = self
                    .multi
                    .println(format!("{tag} {}", super::printable(line)));
            }
            Event::StepStarted {
                step,
                attempt,
                attempts,
            } => {
                let title = super::title(&self.state.read(), step);
                let b = self.bar(step);
                let of = if *attempts > 1 {
                    format!(" attempt {attempt}/{attempts}")
                } else {
                    String::new()
                };
                b.set_message(format!("{}{of}", title.trim_start()));
            }
            Event::RollbackStarted {
                step,
                body,
                attempt,
                attempts,
            } => {
                let b = self.bar(&format!("{step} (rollback)"));
                let of = if *attempts > 1 {
                    format!(" attempt {attempt}/{attempts}")
                } else {
                    String::new()
                };
                b.set_message(format!("undoing, body {}{of}", body + 1));
            }
            Event::Waiting { step, on, detail } => {
                let text = super::waiting_text(on, detail.as_ref(), SystemTime::now());
                let title = super::title(&self.state.read(), step);
                let b = self.bar(step);
                let lead = if title.is_empty() {
                    String::new()
                } else {
                    format!("{} ", title.trim_start())
                };
                b.set_message(format!("{lead}waiting on {text}"));
                self.tell_answers(step);
            }
            Event::StepFinished {
                step,
                status,
                error,
                ..
            } => {
                let took = self.started.get(step).map(Instant::elapsed);
                if let Some(d) = took {
                    self.took.insert(step.clone(), d);
                }
                self.done(step);
                self.overall.inc(1);
                let mark = match status {
                    StepStatus::Succeeded => self.paint("32", "ok"),
                    StepStatus::Failed => self.paint("31", "FAILED"),
                    other => other.as_str().to_string(),
                };
                let took_text = took.map_or(String::new(), |d| format!(" in {}", super::short(d)));
                let err = error.as_ref().map_or(String::new(), |e| format!(": {e}"));
                let title = super::title(&self.state.read(), step);
                let _ = self
                    .multi
                    .println(format!("{mark} {step}{title}{took_text}{err}"));
            }
            Event::RollbackFinished {
                step,
                status,
                error,
                ..
            } => {
                self.done(&format!("{step} (rollback)"));
                let err = error.as_ref().map_or(String::new(), |e| format!(": {e}"));
                let _ = self
                    .multi
                    .println(format!("rollback of {step}: {}{err}", status.as_str()));
            }
            Event::RunStarted { .. } => {
                if let Some(text) = super::plain::describe(event) {
                    let _ = self.multi.println(text);
                }
            }
            Event::RunFinished {
                status,
                duration_ms,
            } => {
                let code = match status {
                    crate::events::RunStatus::Succeeded => "1;32",
                    _ => "1;31",
                };
                let state = self.state.read();
                let text = format!(
                    "run {} {}{} in {}",
                    state.run_id,
                    status.as_str(),
                    state.tolerated_note(),
                    super::short(Duration::from_millis(*duration_ms))
                );
                let ending = format!(
                    "{}  (details: runbook status {})",
                    self.paint(code, &text),
                    state.run_id
                );
                drop(state);
                self.ending = Some(ending);
            }
            Event::UnwindStarted { reason, .. } => {
                let _ = self
                    .multi
                    .println(self.paint("1;31", &format!("unwinding: {reason}")));
            }
            other => {
                if let Some(text) = super::plain::describe(other) {
                    let _ = self.multi.println(text);
                }
            }
        }
    }

    fn finish(&mut self) {
        for (_, b) in self.running.drain() {
            b.finish_and_clear();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
        crate::broken_pipe::print_line(&format!(
            "\n{}",
            super::summary(&self.state.read(), &self.took)
        ));
        if let Some(end) = self.ending.take() {
            crate::broken_pipe::print_line(&format!("\n{end}"));
        }
        crate::approvals::discard_typed_input();
    }
}
