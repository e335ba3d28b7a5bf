//! Listeners that show or record a run: the live terminal view (indicatif),
//! plain timestamped lines for CI and pipes, JSON log lines, and the report.

mod json_log;
mod plain;
mod report;
mod terminal;

pub use json_log::JsonLog;
pub use plain::Plain;
pub use report::Report;
pub use terminal::Terminal;

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;

use crate::events::{Event, WaitingDetail};
use crate::state::{RunState, Shared};

/// The run so far, as a view reads it: the live state that
/// [`crate::state::Follow`] keeps (it hears each event before the views, so
/// one copy of the run serves them all), or a fold of the view's own when
/// nothing else folds the events it is shown (`logs`).
pub enum RunView {
    Live(Shared),
    Own(Box<RunState>),
}

impl RunView {
    /// Folds `event` in, unless the live state already has it.
    fn apply(&mut self, at: SystemTime, event: &Event) {
        if let RunView::Own(s) = self {
            s.apply(&humantime::format_rfc3339_millis(at).to_string(), event);
        }
    }

    fn read(&self) -> Read<'_> {
        match self {
            RunView::Live(s) => Read::Live(match s.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            }),
            RunView::Own(s) => Read::Own(s),
        }
    }
}

enum Read<'a> {
    Live(std::sync::MutexGuard<'a, RunState>),
    Own(&'a RunState),
}

impl std::ops::Deref for Read<'_> {
    type Target = RunState;
    fn deref(&self) -> &RunState {
        match self {
            Read::Live(g) => g,
            Read::Own(s) => s,
        }
    }
}

/// A line from a child or a param as a terminal can show it: control
/// characters (CR, ESC, ...) are written as `\r`, `\u{1b}`, so nothing a
/// step prints can move the cursor, rewrite a line or recolour the view.
pub(crate) fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut s = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    std::borrow::Cow::Owned(s)
}

/// Whether what goes to stderr may be coloured: a terminal, and no `NO_COLOR`.
pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

pub(crate) fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        crate::duration::format(Duration::from_secs(d.as_secs()))
    }
}

/// An RFC 3339 time with how far it is from `now`: `T (in 3h59m)`, `T (2m ago)`.
pub(crate) fn from_now(t: &str, now: SystemTime) -> String {
    let Ok(at) = humantime::parse_rfc3339_weak(t) else {
        return t.to_string();
    };
    let whole = |d: Duration| crate::duration::format(Duration::from_secs(d.as_secs()));
    match at.duration_since(now) {
        Ok(d) => format!("{t} (in {})", whole(d)),
        Err(e) => format!("{t} ({} ago)", whole(e.duration())),
    }
}

/// A waiting step's line: `on`, and for a gate the next sample's absolute
/// time and a countdown after the interval.
pub(crate) fn waiting_text(on: &str, detail: Option<&WaitingDetail>, now: SystemTime) -> String {
    match detail {
        // The interval as the gate said it, then when that is and how long till then.
        Some(WaitingDetail::Gate(g)) => match &g.next_at {
            Some(t) if on.contains("; next sample in") => format!("{on}, at {}", from_now(t, now)),
            Some(t) => format!("{on}; next sample at {}", from_now(t, now)),
            None => on.to_string(),
        },
        _ => on.to_string(),
    }
}

/// What `status` and the live view print under a step waiting for people
/// (one entry of [`crate::state::RunState::waiting_json`]), indented.
/// What a view last said of each waiting approval, so it says who may
/// answer and how once per change (the times in the lines move on; who and
/// what do not, until they change).
#[derive(Default)]
pub(crate) struct Told(std::collections::HashMap<String, String>);

impl Told {
    /// The lines to show under the waiting step `label`: [`answer_lines`]
    /// when who may answer or the command changed since last told, else none.
    pub(crate) fn news(&mut self, state: &RunState, label: &str) -> Vec<String> {
        let Some(w) = state
            .waiting_json(None)
            .into_iter()
            .find(|w| w["label"] == label)
        else {
            return Vec::new();
        };
        let key = format!("{}|{}", w["waiting_on"], w["approve_command"]);
        if self.0.get(label) == Some(&key) {
            return Vec::new();
        }
        self.0.insert(label.to_string(), key);
        answer_lines(&w, SystemTime::now())
    }
}

pub(crate) fn answer_lines(w: &Json, now: SystemTime) -> Vec<String> {
    let text = |k: &str| w[k].as_str().unwrap_or("").to_string();
    let names = |k: &str| -> Option<String> {
        w[k].as_array().map(|l| {
            let v: Vec<&str> = l.iter().filter_map(Json::as_str).collect();
            if v.is_empty() {
                "nobody".to_string()
            } else {
                v.join(", ")
            }
        })
    };
    let mut out = Vec::new();
    let who = match names("may_approve") {
        Some(list) => list,
        None if w["allow_self_approval"] == true => "anyone".to_string(),
        None => format!("anyone but {}", text("started_by")),
    };
    let approved = names("approved_by").filter(|n| n != "nobody");
    out.push(format!(
        "may approve: {who} ({} of {} required{})",
        w["approved_by"].as_array().map_or(0, Vec::len),
        w["required"],
        approved.map_or(String::new(), |a| format!(": {a}"))
    ));
    let since = text("waiting_since");
    let waited = w["waited_ms"].as_u64().map_or(String::new(), |ms| {
        format!(" ({})", short(Duration::from_millis(ms)))
    });
    match w["deadline"].as_str() {
        Some(d) => out.push(format!(
            "waiting since {since}{waited}; times out at {}",
            from_now(d, now)
        )),
        None => out.push(format!("waiting since {since}{waited}; no timeout")),
    }
    out.push(format!("approve: {}", text("approve_command")));
    out.push(format!("reject:  {}", text("reject_command")));
    out
}

/// What shows beside a step's id: ` (Deploy web, stage canary)`, or nothing.
pub(crate) fn title(state: &RunState, id: &str) -> String {
    let Some(st) = state.steps.get(id.split(".rollback.").next().unwrap_or(id)) else {
        return String::new();
    };
    match (&st.more().name, &st.more().stage) {
        (Some(n), Some(s)) => format!(" ({}, stage {})", printable(n), printable(s)),
        (Some(n), None) => format!(" ({})", printable(n)),
        (None, Some(s)) => format!(" (stage {})", printable(s)),
        (None, None) => String::new(),
    }
}

/// The table at the end of a run: every main step (those that never
/// started too), then the `on_failure` and `finally` steps that ran.
/// `took`: times measured in this process, else the recorded ones.
pub(crate) fn summary(
    state: &RunState,
    took: &std::collections::HashMap<String, Duration>,
) -> String {
    let rows: Vec<(&String, &crate::state::StepState)> = state
        .steps
        .iter()
        .filter(|(_, s)| {
            s.phase == "steps" || s.record.status != crate::events::StepStatus::NotStarted
        })
        .collect();
    let width = rows
        .iter()
        .map(|(id, _)| id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:width$}  {:11}  {:>8}  {:>8}  rollback",
        "step", "status", "attempts", "time"
    );
    for (id, s) in rows {
        let time = took
            .get(id)
            .copied()
            .or_else(|| {
                s.finished_at
                    .is_some()
                    .then(|| Duration::from_millis(s.record.duration_ms))
            })
            .map_or("-".to_string(), short);
        let rollback = s.record.rollback.as_ref().map_or("", |r| r.status.as_str());
        out.push_str(&format!(
            "\n{:width$}  {:11}  {:>8}  {:>8}  {rollback}",
            id,
            s.display_status(),
            s.record.attempts,
            time
        ));
    }
    out
}
