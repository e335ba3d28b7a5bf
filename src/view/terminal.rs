//! The live view on a terminal: an overall bar, one spinner line per running
//! step (elapsed, attempt n/m, what it waits on), step output printed above
//! the bars, and a summary table at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Event, Listener, StepStatus, Stream};

pub struct Terminal {
    multi: MultiProgress,
    overall: ProgressBar,
    running: HashMap<String, ProgressBar>,
    rows: Vec<(String, String, u32, Option<Duration>, String)>,
    started: HashMap<String, Instant>,
    color: bool,
    /// The closing line: how the run ended and how to look at it again.
    ending: Option<String>,
    run_id: String,
}

impl Terminal {
    pub fn new(total: usize, color: bool) -> Terminal {
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
            rows: Vec::new(),
            started: HashMap::new(),
            color,
            ending: None,
            run_id: String::new(),
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
}

impl Listener for Terminal {
    fn on(&mut self, _at: SystemTime, event: &Event) {
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
                let b = self.bar(step);
                b.set_message(if *attempts > 1 {
                    format!("attempt {attempt}/{attempts}")
                } else {
                    String::new()
                });
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
            Event::Waiting { step, on } => {
                let b = self.bar(step);
                b.set_message(format!("waiting on {on}"));
            }
            Event::StepFinished {
                step,
                status,
                attempts,
                error,
                ..
            } => {
                let took = self.started.get(step).map(Instant::elapsed);
                self.done(step);
                self.overall.inc(1);
                let mark = match status {
                    StepStatus::Succeeded => self.paint("32", "ok"),
                    StepStatus::Failed => self.paint("31", "FAILED"),
                    other => other.as_str().to_string(),
                };
                let took_text = took.map_or(String::new(), |d| format!(" in {}", super::short(d)));
                let err = error.as_ref().map_or(String::new(), |e| format!(": {e}"));
                let _ = self.multi.println(format!("{mark} {step}{took_text}{err}"));
                self.rows.push((
                    step.clone(),
                    status.as_str().to_string(),
                    *attempts,
                    took,
                    String::new(),
                ));
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
                if let Some(row) = self.rows.iter_mut().find(|r| &r.0 == step) {
                    row.4 = status.as_str().to_string();
                }
            }
            Event::RunStarted { run_id, .. } => {
                self.run_id = run_id.clone();
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
                let text = format!(
                    "run {} {} in {}",
                    self.run_id,
                    status.as_str(),
                    super::short(Duration::from_millis(*duration_ms))
                );
                self.ending = Some(format!(
                    "{}  (details: runbook status {})",
                    self.paint(code, &text),
                    self.run_id
                ));
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
        let width = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!(
            "\n{:width$}  {:11}  {:>8}  {:>8}  rollback",
            "step", "status", "attempts", "time"
        );
        for (id, status, attempts, took, rollback) in &self.rows {
            let took = took.map_or("-".to_string(), super::short);
            println!("{id:width$}  {status:11}  {attempts:>8}  {took:>8}  {rollback}");
        }
        if let Some(end) = self.ending.take() {
            println!("\n{end}");
        }
    }
}
