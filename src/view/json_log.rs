//! `--log-format json`: every event as a tracing event, formatted as one JSON
//! line by tracing-subscriber.

use std::time::SystemTime;

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

impl Listener for JsonLog {
    fn on(&mut self, _at: SystemTime, event: &Event) {
        let data = serde_json::to_value(event).unwrap_or_default();
        let kind = data
            .get("event")
            .and_then(|v| v.as_str())
            .unwrap_or("event")
            .to_string();
        let step = data
            .get("step")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let message = super::plain::describe(event).unwrap_or_else(|| match event {
            Event::Output { line, .. } => line.clone(),
            _ => String::new(),
        });
        tracing::info!(target: "runbook", event = %kind, step = %step, data = %data, "{message}");
    }
}
