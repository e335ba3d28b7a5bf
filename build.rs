//! Stamps the binary with the commit it was built from, for `--version`
//! (`runbook 0.1.0 (abc1234 2026-12-01)`).
//!
//! Shaped by two constraints. A build from a source tarball (no `.git`, or no
//! `git` installed) must still compile: every failure falls back to
//! "unknown". And the stamp must follow HEAD without rebuilding on every
//! `cargo build`: cargo reruns this script only when a file named in a
//! `rerun-if-changed` line changes, so it names the files git moves on a
//! commit or a checkout (HEAD, the branch ref HEAD points to, packed-refs)
//! and nothing else. `git rev-parse --git-path` finds them, which also works
//! in a linked worktree, where HEAD and the refs live in different places.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git(&manifest_dir, &["rev-parse", "--short", "HEAD"]);
    let date = git(&manifest_dir, &["log", "-1", "--format=%cs", "HEAD"]);
    let stamp = match (commit, &date) {
        (Some(commit), Some(date)) => format!("{commit} {date}"),
        (Some(commit), None) => commit,
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=RUNBOOK_BUILD_COMMIT={stamp}");
    // The commit's date (YYYY-MM-DD), the man page's date; empty when unknown.
    println!(
        "cargo:rustc-env=RUNBOOK_BUILD_DATE={}",
        date.unwrap_or_default()
    );
    for path in watched(&manifest_dir) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The output of a git command run in `dir`, if git ran and succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Where git keeps `name` (`HEAD`, `refs/heads/main`, `packed-refs`), as an
/// absolute path.
fn git_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(dir, &["rev-parse", "--git-path", name])?);
    Some(if path.is_absolute() {
        path
    } else {
        dir.join(path)
    })
}

/// The files whose change means HEAD may name another commit. Only existing
/// files are named: cargo treats a missing one as always changed, which
/// would rebuild every time. A branch whose ref is only in packed-refs gets
/// its refs directory watched instead, so its first loose ref is seen.
fn watched(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(head) = git_path(dir, "HEAD").filter(|p| p.is_file()) else {
        return out;
    };
    out.push(head);
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(reference) = git_path(dir, &branch) {
            if reference.is_file() {
                out.push(reference);
            } else if let Some(parent) = reference.parent().filter(|p| p.is_dir()) {
                out.push(parent.to_path_buf());
            }
        }
    }
    if let Some(packed) = git_path(dir, "packed-refs").filter(|p| p.is_file()) {
        out.push(packed);
    }
    out
}
