//! `--log-format json`: every event as one JSON line on stdout.
//!
//! A line is `{"timestamp", "level", "message", "event", "step", "data",
//! "target"}`, where `data` is the event itself as a nested JSON object (the
//! same shape as a journal line), so `jq '.data.attempt'` works without
//! decoding a string. The lines are written here with serde_json rather than
//! through tracing, whose JSON formatter can only record a field as a string.
//! The tracing subscriber is still installed so the few `tracing` messages
//! the engine logs come out as JSON lines too.

use std::io::Write;
use std::time::SystemTime;

use serde_json::{json, Value as Json};

use crate::events::{Event, Listener};

pub struct JsonLog;

impl JsonLog {
    /// Installs the JSON subscriber (stdout) and returns the listener.
    pub fn install() -> JsonLog {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .try_init();
        JsonLog
    }
}

/// The JSON log line for `event`, which happened at `at`.
fn line(at: SystemTime, event: &Event) -> Json {
    let data = serde_json::to_value(event).unwrap_or_default();
    let kind = data
        .get("event")
        .and_then(Json::as_str)
        .unwrap_or("event")
        .to_string();
    let step = data
        .get("step")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    let message = super::plain::describe(event).unwrap_or_else(|| match event {
        Event::Output { line, .. } => line.clone(),
        _ => String::new(),
    });
    // Microseconds, as tracing-subscriber wrote them.
    let timestamp = jiff::Timestamp::try_from(at)
        .map(|t| format!("{t:.6}"))
        .unwrap_or_default();
    json!({
        "timestamp": timestamp,
        "level": "INFO",
        "message": message,
        "event": kind,
        "step": step,
        "data": data,
        "target": "runbook",
    })
}

impl Listener for JsonLog {
    fn on(&mut self, at: SystemTime, event: &Event) {
        let mut text = line(at, event).to_string();
        text.push('\n');
        // One write per line, so lines from tracing never interleave with ours.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }

    fn finish(&mut self) {
        crate::approvals::discard_typed_input();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn data_is_nested_json_not_a_string() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let event = Event::StepStarted {
            step: "deploy".into(),
            attempt: 2,
            attempts: 3,
        };
        let v = line(at, &event);
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["event"], "step_started");
        assert_eq!(v["step"], "deploy");
        assert_eq!(v["data"]["event"], "step_started");
        assert_eq!(v["data"]["attempt"], 2);
        assert_eq!(v["target"], "runbook");
    }
}
