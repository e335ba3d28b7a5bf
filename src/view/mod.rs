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

use std::time::Duration;

pub(crate) fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        crate::duration::format(Duration::from_secs(d.as_secs()))
    }
}
