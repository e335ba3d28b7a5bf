//! The files through which another process answers a waiting approval:
//! `<run dir>/approvals/<step>/waiting.json` (the rules, while a step waits),
//! one decision file per answer, and `done/` for the ones consumed.
//!
//! One file for the layout on disk, so the writer (`runbook approve`) and
//! the reader (the executor) cannot disagree on names or atomicity.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One decision file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub by: String,
    pub approved: bool,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub at: Option<String>,
    /// The armored SSH signature over the decision's statement
    /// ([`crate::signing::Statement`]), where signatures are required.
    #[serde(default)]
    pub signature: Option<String>,
    /// The deciding process's OS user and host.
    #[serde(default)]
    pub os_user: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

/// `<run dir>/approvals/<step>`.
pub(crate) fn approvals_dir(run_dir: &Path, step: &str) -> PathBuf {
    run_dir.join("approvals").join(step)
}

/// A file name part made of safe characters only.
pub(crate) fn file_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// Writes `value` as JSON to `path` atomically: a hidden temp file beside it,
/// fsync'd, renamed over, the directory fsync'd.
/// Writes JSON whole or not at all: a reader never sees half a decision.
pub(crate) fn write_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(path, &text, crate::fsutil::PRIVATE)
}

/// Decision files not consumed yet, oldest first.
pub(crate) fn pending_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    !n.starts_with('.') && n != "waiting.json"
                })
        })
        .collect();
    files.sort();
    files
}

/// Moves a consumed decision file into `done/`.
pub(crate) fn consume(dir: &Path, file: &Path) {
    let done = dir.join("done");
    let _ = std::fs::create_dir_all(&done);
    if let Some(name) = file.file_name() {
        if std::fs::rename(file, done.join(name)).is_err() {
            let _ = std::fs::remove_file(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_safe("../x y"), "___x_y");
        assert_eq!(file_safe(""), "_");
    }
}
