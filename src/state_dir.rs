//! Where runs live when `--state-dir` and `$RUNBOOK_STATE_DIR` say nothing:
//! one directory per user, `$XDG_STATE_HOME/runbook`, else
//! `~/.local/state/runbook` (spec rev 2), so `status`, `approve`, `resume`
//! and `cancel` find a run from any working directory, a `lock:` holds
//! across directories, and the default flag file is one file.
//!
//! A pure function of the environment, apart from the CLI that calls it,
//! so the rule is tested without touching a real home directory.

use std::path::PathBuf;

/// The per-user default from `XDG_STATE_HOME` and `HOME` as given.
///
/// The XDG base directory spec ignores a relative `XDG_STATE_HOME`; so do
/// we. Without a usable `HOME` there is no default, and the error says how
/// to name one.
pub fn default_state_dir(
    xdg_state_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, String> {
    if let Some(x) = xdg_state_home.map(PathBuf::from) {
        if x.is_absolute() {
            return Ok(x.join("runbook"));
        }
    }
    match home.map(PathBuf::from) {
        Some(h) if h.is_absolute() => Ok(h.join(".local/state/runbook")),
        _ => Err(
            "no state dir: neither $XDG_STATE_HOME nor $HOME is an absolute path; \
             pass --state-dir DIR or set RUNBOOK_STATE_DIR"
                .into(),
        ),
    }
}

/// The state dir from this process's environment.
pub fn from_env() -> Result<PathBuf, String> {
    default_state_dir(
        std::env::var_os("XDG_STATE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// ` --state-dir DIR` for a command printed for a person to run next, or
/// nothing when DIR is the default they would get anyway.
pub fn flag_for(dir: &std::path::Path) -> String {
    if from_env().is_ok_and(|d| d == dir) {
        return String::new();
    }
    format!(
        " --state-dir {}",
        crate::template::shell_quote(&dir.display().to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn xdg_first_then_home_and_relative_paths_ignored() {
        // (XDG_STATE_HOME, HOME, the state dir; "" for none).
        let cases = [
            (Some("/x/state"), Some("/home/a"), "/x/state/runbook"),
            (None, Some("/home/a"), "/home/a/.local/state/runbook"),
            (Some(""), Some("/home/a"), "/home/a/.local/state/runbook"),
            (Some("rel"), Some("/home/a"), "/home/a/.local/state/runbook"),
            (None, None, ""),
            (None, Some("relative-home"), ""),
        ];
        for (xdg, home, want) in cases {
            let got = default_state_dir(xdg.map(OsStr::new), home.map(OsStr::new));
            match want {
                "" => assert!(got.is_err(), "{xdg:?} {home:?}"),
                p => assert_eq!(got, Ok(PathBuf::from(p)), "{xdg:?} {home:?}"),
            }
        }
    }
}
