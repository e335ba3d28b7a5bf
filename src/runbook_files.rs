//! Which files `runbook validate PATH...` checks: a file named on the
//! command line always; a directory walked for the runbooks in it.
//!
//! A repository keeps other YAML beside its runbooks (CI workflows, compose
//! files, Kubernetes manifests), so a walk takes a `*.yaml`/`*.yml` file only
//! when it looks like a runbook: a line starting `version:` and one starting
//! `steps:`, i.e. both as top-level keys in block style. That is a cheap
//! look at the bytes, not a parse; a file it passes over is reported as
//! [`Entry::Skipped`] so nothing is dropped silently, and one it takes is
//! then validated in full. A file named explicitly is never judged so.
//!
//! The walk is deterministic: entries sorted by name, depth first. It does
//! not enter hidden directories (`.git`, `.runbook`), `target` or
//! `node_modules`, nor follow a symlink to a directory (no loops); a
//! symlink to a file counts as that file.

use std::fs;
use std::path::{Path, PathBuf};

/// One thing `validate` reports, in the order the arguments and the walk give them.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// A file to validate.
    Check(PathBuf),
    /// A YAML file a walk passed over: no top-level `version:` and `steps:`.
    Skipped(PathBuf),
    /// A directory that could not be read, with the reason.
    Unreadable(PathBuf, String),
    /// A directory argument under which no runbook was found.
    NoRunbooks(PathBuf),
}

/// The entries for the command-line paths, each argument's in turn.
pub fn entries(paths: &[PathBuf]) -> Vec<Entry> {
    let mut out = Vec::new();
    for path in paths {
        if !fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            out.push(Entry::Check(path.clone()));
            continue;
        }
        let before = out.len();
        walk(path, &mut out);
        if !out[before..].iter().any(|e| matches!(e, Entry::Check(_))) {
            out.push(Entry::NoRunbooks(path.clone()));
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<Entry>) {
    let mut children: Vec<(PathBuf, bool)> = match fs::read_dir(dir) {
        Ok(read) => read
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                // A symlink is followed for files only (`path.is_dir()`
                // would follow one to a directory too).
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                (path, is_dir)
            })
            .collect(),
        Err(e) => {
            out.push(Entry::Unreadable(dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    children.sort();
    for (path, is_dir) in children {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if is_dir {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                walk(&path, out);
            }
            continue;
        }
        let yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
        if !yaml || !path.is_file() {
            continue;
        }
        // An unreadable file is checked, so it is reported (E001).
        match fs::read(&path) {
            Ok(bytes) if !looks_like_a_runbook(&bytes) => out.push(Entry::Skipped(path)),
            _ => out.push(Entry::Check(path)),
        }
    }
}

/// A line starting `version:` and a line starting `steps:`.
pub fn looks_like_a_runbook(bytes: &[u8]) -> bool {
    let mut version = false;
    let mut steps = false;
    for line in bytes.split(|b| *b == b'\n') {
        version |= line.starts_with(b"version:");
        steps |= line.starts_with(b"steps:");
        if version && steps {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::looks_like_a_runbook;

    #[test]
    fn top_level_version_and_steps_make_a_runbook() {
        let cases: &[(&str, bool)] = &[
            ("version: 1\nname: a\nsteps:\n  - id: a\n", true),
            ("steps: []\r\nversion: 1\r\n", true),
            ("version: 1\n", false),
            ("name: ci\non: push\njobs:\n  steps:\n", false),
            ("  version: 1\n  steps: []\n", false),
            ("# version: 1\n# steps:\n", false),
            ("{version: 1, steps: []}\n", false),
            ("", false),
        ];
        for (text, want) in cases {
            assert_eq!(looks_like_a_runbook(text.as_bytes()), *want, "{text:?}");
        }
    }
}
