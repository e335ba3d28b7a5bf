//! Journals as JSON-lines files: `<state dir>/runs/<run id>/journal.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value as Json;

use super::{timed_event, Header, HeaderLine, Recorded, RunStore, Tail, Timed};
use crate::events::{Event, Recorder};

pub struct FileStore {
    runs: PathBuf,
}

impl FileStore {
    pub fn new(state_dir: &std::path::Path) -> FileStore {
        FileStore {
            runs: state_dir.join("runs"),
        }
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs.join(run_id)
    }

    fn path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    crash: super::crash::Point,
    written: usize,
    /// Whether records were written since the last sync.
    unsynced: bool,
    /// The directory of a journal this process created, until its first sync.
    new_in: Option<PathBuf>,
}

impl Writer {
    fn new(file: File, path: PathBuf) -> Writer {
        Writer {
            file,
            path,
            crash: super::crash::Point::from_env(),
            written: 0,
            unsynced: false,
            new_in: None,
        }
    }
}

impl Writer {
    /// Appends one record; durable after the next [`Recorder::sync`].
    fn write_line(&mut self, record: &impl serde::Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.unsynced = true;
        self.crash.written(&line);
        self.file.write_all(&line)
    }

    fn failed(&self, e: &std::io::Error) -> String {
        format!("cannot write the journal {}: {e}", self.path.display())
    }
}

impl Recorder for Writer {
    fn record(&mut self, at: SystemTime, event: &Event) -> Result<(), String> {
        let line = Timed {
            event,
            at: humantime::format_rfc3339_millis(at).to_string(),
        };
        // Crash points count the records the engine acts on; a `spawned`
        // record only remembers a child, so the crash tests' numbering
        // stays what it was before it existed.
        let counted = !matches!(event, Event::Spawned { .. });
        if counted {
            self.written += 1;
            self.crash.check(true, self.written);
        }
        let result = self.write_line(&line);
        if counted {
            self.crash.check(false, self.written);
        }
        result.map_err(|e| self.failed(&e))
    }

    fn sync(&mut self) -> Result<(), String> {
        if !self.unsynced {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| self.failed(&e))?;
        self.crash.synced();
        // A new journal's directory entry, after its first records: a
        // power loss cannot leave the file's name without its header.
        if let Some(dir) = self.new_in.take() {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        self.unsynced = false;
        Ok(())
    }
}

/// Reads a journal as it grows: whole lines only, from where it stopped.
struct FileTail {
    file: File,
    partial: Vec<u8>,
}

impl Tail for FileTail {
    fn next_events(&mut self) -> std::io::Result<Vec<(String, Event)>> {
        use std::io::Read;
        let mut buf = Vec::new();
        self.file.read_to_end(&mut buf)?;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let mut out = Vec::new();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(value) = serde_json::from_slice::<Json>(line) else {
                continue;
            };
            if value.get("record").and_then(Json::as_str) == Some("header") {
                continue;
            }
            if let Ok(e) = timed_event(value) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

impl RunStore for FileStore {
    fn tail(&self, run_id: &str) -> std::io::Result<Box<dyn Tail>> {
        if !super::valid_run_id(run_id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{run_id}` is not a run id"),
            ));
        }
        Ok(Box::new(FileTail {
            file: File::open(self.path(run_id))?,
            partial: Vec::new(),
        }))
    }

    fn create(&self, header: &Header) -> std::io::Result<Box<dyn Recorder>> {
        std::fs::create_dir_all(self.run_dir(&header.run_id))?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.path(&header.run_id))?;
        let mut w = Writer::new(file, self.path(&header.run_id));
        // Durable with the first record the engine acts on.
        w.write_line(&HeaderLine {
            header,
            record: "header",
        })?;
        w.new_in = Some(self.run_dir(&header.run_id));
        Ok(Box::new(w))
    }

    fn append(&self, run_id: &str) -> std::io::Result<Box<dyn Recorder>> {
        let path = self.path(run_id);
        // Cut a torn last record so new records start on a line of their own.
        let text = std::fs::read(&path)?;
        if let Some(last_nl) = text.iter().rposition(|&b| b == b'\n') {
            if last_nl + 1 < text.len() {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(last_nl as u64 + 1)?;
                f.sync_data()?;
            }
        }
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Box::new(Writer::new(file, self.path(run_id))))
    }

    fn read(&self, run_id: &str) -> std::io::Result<Recorded> {
        if !super::valid_run_id(run_id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{run_id}` is not a run id"),
            ));
        }
        let file = File::open(self.path(run_id))?;
        let mut lines = Vec::new();
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut torn = false;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            if buf.last() != Some(&b'\n') {
                torn = true;
                break;
            }
            lines.push(String::from_utf8_lossy(&buf).into_owned());
        }
        let mut header = None;
        let mut events = Vec::new();
        let count = lines.len();
        for (i, line) in lines.iter().enumerate() {
            let value: Json = match serde_json::from_str(line) {
                Ok(v) => v,
                // Only the last record may be damaged (a crash mid-write).
                Err(_) if i + 1 == count => {
                    torn = true;
                    break;
                }
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "journal line {} is damaged: {e}",
                        i + 1
                    )))
                }
            };
            if value.get("record").and_then(Json::as_str) == Some("header") {
                header =
                    Some(serde_json::from_value::<Header>(value).map_err(std::io::Error::other)?);
                continue;
            }
            match timed_event(value) {
                Ok(e) => events.push(e),
                Err(_) if i + 1 == count => torn = true,
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "journal line {} is not an event: {e}",
                        i + 1
                    )))
                }
            }
        }
        let header = header.ok_or_else(|| std::io::Error::other("the journal has no header"))?;
        Ok(Recorded {
            header,
            events,
            torn,
        })
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        let mut runs: Vec<(SystemTime, String)> = Vec::new();
        let entries = match std::fs::read_dir(&self.runs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let journal = entry.path().join("journal.jsonl");
            if let Ok(meta) = std::fs::metadata(&journal) {
                let created = meta
                    .created()
                    .or_else(|_| meta.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                runs.push((created, entry.file_name().to_string_lossy().into_owned()));
            }
        }
        runs.sort();
        Ok(runs.into_iter().map(|(_, id)| id).collect())
    }
}
