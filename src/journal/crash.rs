//! Fault injection for the crash tests, shared by every journal writer
//! (files and PostgreSQL) so a crash point means the same record in both.

/// Compiled only with the
/// `fault-injection` feature (the test build): `RUNBOOK_CRASH_AT=before:N`
/// kills the process with SIGKILL just before the N-th event of this process
/// reaches the journal, `after:N` just after. `RUNBOOK_SYNC_LOG=FILE`
/// appends a line per sync to FILE naming the records it made durable, so
/// tests can see which records share one.
#[cfg(feature = "fault-injection")]
mod active {
    use std::io::Write as _;

    pub(crate) struct Point {
        at: Option<(bool, usize)>,
        sync_log: Option<std::path::PathBuf>,
        unsynced: Vec<String>,
    }

    impl Point {
        pub(crate) fn from_env() -> Point {
            Point {
                at: (|| {
                    let v = std::env::var("RUNBOOK_CRASH_AT").ok()?;
                    let (when, n) = v.split_once(':')?;
                    Some((when == "before", n.parse().ok()?))
                })(),
                sync_log: std::env::var_os("RUNBOOK_SYNC_LOG").map(Into::into),
                unsynced: Vec::new(),
            }
        }

        pub(crate) fn check(&self, before: bool, written: usize) {
            if self.at == Some((before, written)) {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
            }
        }

        pub(crate) fn written(&mut self, line: &[u8]) {
            if self.sync_log.is_some() {
                let record: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
                let kind = record.get("event").or_else(|| record.get("record"));
                self.unsynced
                    .push(kind.and_then(|k| k.as_str()).unwrap_or("?").to_string());
            }
        }

        pub(crate) fn synced(&mut self) {
            let Some(path) = &self.sync_log else { return };
            let line = format!("{}\n", self.unsynced.join(" "));
            self.unsynced.clear();
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod inert {
    pub(crate) struct Point;

    impl Point {
        pub(crate) fn from_env() -> Point {
            Point
        }

        pub(crate) fn check(&self, _before: bool, _written: usize) {}

        pub(crate) fn written(&mut self, _line: &[u8]) {}

        pub(crate) fn synced(&mut self) {}
    }
}

#[cfg(feature = "fault-injection")]
pub(crate) use active::Point;
#[cfg(not(feature = "fault-injection"))]
pub(crate) use inert::Point;
