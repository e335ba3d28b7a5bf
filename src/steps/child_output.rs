//! What a child process prints, read with bounded memory whatever it prints.
//!
//! A step's output is shown live and journaled line by line, and its stdout
//! is kept for `steps.<id>.stdout`. A child may print gigabytes, or one line
//! without a newline, or NUL bytes (six journal bytes each as JSON), so every
//! one of those has a cap:
//!
//! - a line longer than [`MAX_LINE`] is emitted at the cap, marked as cut, and
//!   the rest of it up to the next newline is dropped (counted);
//! - the journal holds at most [`MAX_JOURNALED`] bytes of one attempt's output
//!   (both streams together); past that, lines are still shown live but not
//!   journaled, and one marker line says so;
//! - `steps.<id>.stdout` keeps the first [`MAX_STDOUT`] bytes.
//!
//! The reader works on fixed-size chunks (`fill_buf`), never on a whole line,
//! so memory stays flat however long a line is.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::events::{Bus, Event, Stream};
use crate::providers::BoxFuture;

/// Longest line emitted, in bytes; the rest of a longer line is dropped.
pub(super) const MAX_LINE: usize = 64 * 1024;
/// Most bytes of one attempt's output lines the journal holds.
pub(super) const MAX_JOURNALED: usize = 1 << 20;
/// What a journal line costs beyond its text (time, step, stream, JSON).
const LINE_OVERHEAD: usize = 128;
/// Most bytes of stdout kept for `steps.<id>.stdout`.
pub(super) const MAX_STDOUT: usize = 1 << 20;

/// The journal budget one attempt's streams share.
#[derive(Default)]
pub(super) struct JournalBudget {
    used: AtomicUsize,
}

impl JournalBudget {
    /// Takes `n` bytes; `None` when they are within the budget, else whether
    /// this is the first time the budget ran out (the marker is due).
    fn take(&self, n: usize) -> Option<bool> {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) <= MAX_JOURNALED {
            None
        } else {
            Some(before <= MAX_JOURNALED)
        }
    }
}

/// Where one stream's lines go.
pub(super) struct Sink<'a> {
    pub(super) bus: &'a Bus,
    pub(super) label: &'a str,
    pub(super) stream: Stream,
    pub(super) budget: &'a JournalBudget,
    /// Whether to keep the text (stdout, for `steps.<id>.stdout`).
    pub(super) keep: bool,
}

impl Sink<'_> {
    fn line(&self, bytes: &[u8], cut: bool, kept: &mut String) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches(['\n', '\r']);
        let masker = self.bus.masker();
        let line = if cut {
            // A secret the cut went through would show its first part.
            format!(
                "{} [line cut at {} KiB]",
                masker.mask_cut(text),
                MAX_LINE / 1024
            )
        } else {
            text.to_string()
        };
        if self.keep && kept.len() < MAX_STDOUT {
            let room = MAX_STDOUT - kept.len();
            let mut end = text.len().min(room);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            if end < text.len() {
                kept.push_str(&masker.mask_cut(&text[..end]));
            } else {
                kept.push_str(text);
            }
            if kept.len() < MAX_STDOUT {
                kept.push('\n');
            }
        }
        // What the line costs as JSON: control characters (NUL) take six
        // bytes, replacement characters for bad bytes three.
        let cost = line.len() + line.chars().filter(|c| c.is_control()).count() * 5;
        let event = Event::Output {
            step: self.label.to_string(),
            stream: self.stream,
            line,
        };
        match self.budget.take(cost + LINE_OVERHEAD) {
            None => self.bus.note(event),
            Some(first) => {
                if first {
                    self.bus.note(Event::Output {
                        step: self.label.to_string(),
                        stream: self.stream,
                        line: format!(
                            "[runbook: this attempt printed over {} MiB; further output is shown but not journaled]",
                            MAX_JOURNALED >> 20
                        ),
                    });
                }
                self.bus.show(event);
            }
        }
    }
}

/// Reads `stream` to its end, emitting each line; returns the stdout kept
/// (empty unless `sink.keep`).
pub(super) fn pump<'a, R: AsyncRead + Unpin + Send + 'a>(
    stream: R,
    sink: Sink<'a>,
) -> BoxFuture<'a, String> {
    Box::pin(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut kept = String::new();
        let mut line: Vec<u8> = Vec::new();
        // The current line passed the cap: drop the rest of it.
        let mut cut = false;
        loop {
            let chunk = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(c) => c,
            };
            let (end, newline) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !cut {
                let room = MAX_LINE - line.len();
                if end - usize::from(newline) <= room {
                    line.extend_from_slice(&chunk[..end]);
                } else {
                    line.extend_from_slice(&chunk[..room]);
                    // Shown at once: a line this long may never end.
                    sink.line(&line, true, &mut kept);
                    line.clear();
                    cut = true;
                }
            }
            reader.consume(end);
            if newline {
                if !cut {
                    sink.line(&line, false, &mut kept);
                }
                line.clear();
                cut = false;
            }
        }
        if !line.is_empty() {
            sink.line(&line, false, &mut kept);
        }
        kept
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_budget_runs_out_once() {
        let b = JournalBudget::default();
        assert_eq!(b.take(MAX_JOURNALED - 1), None);
        assert_eq!(b.take(1), None);
        assert_eq!(b.take(1), Some(true));
        assert_eq!(b.take(1), Some(false));
    }
}
