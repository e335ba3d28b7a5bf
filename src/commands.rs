//! `validate` and `plan`: a file read, checked and previewed. Nothing here
//! runs a step or touches the state dir.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::diagnostics::{Code, Diagnostic, Severity};
use crate::error::{Done, Error, Result};
use crate::plan::{self, Format, ResolvedParams};
use crate::runbook::Runbook;
use crate::spec::Span;

/// A runbook file as read and validated, with its text (for diagnostics and
/// the fingerprint).
pub struct Loaded {
    pub runbook: Arc<Runbook>,
    pub text: String,
    pub name: String,
}

/// A file that could not be taken as a runbook: the diagnostic, and the
/// text to show it against when there is one (a non-UTF-8 file, lossily).
struct Unread {
    diagnostic: Diagnostic,
    text: Option<String>,
}

fn read(path: &Path) -> std::result::Result<String, Box<Unread>> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        Box::new(Unread {
            diagnostic: Diagnostic::new(
                Code::Io,
                Span::point(1, 1),
                format!("cannot read {name}: {e}"),
            ),
            text: None,
        })
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        Box::new(Unread {
            diagnostic: not_utf8(bytes, at),
            text: Some(String::from_utf8_lossy(bytes).into_owned()),
        })
    })
}

/// Where the first invalid byte of `bytes` (at `at`) sits, as a line and a
/// column in characters of the valid text before it.
fn not_utf8(bytes: &[u8], at: usize) -> Diagnostic {
    let before = String::from_utf8_lossy(&bytes[..at]);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    let mut d = Diagnostic::new(
        Code::NotUtf8,
        Span::point(
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(col).unwrap_or(u32::MAX),
        ),
        format!(
            "the file is not UTF-8: byte 0x{:02x} at offset {at}",
            bytes[at]
        ),
    );
    d.help = Some("save the runbook as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)".into());
    d
}

/// Reads and validates a file; its diagnostics are the error (warnings are printed).
pub fn load(path: &Path) -> Result<Loaded> {
    let name = path.display().to_string();
    let text = match read(path).map_err(|u| *u) {
        Ok(t) => t,
        Err(Unread {
            diagnostic,
            text: Some(text),
        }) => {
            return Err(Error::Diagnostics {
                file: name,
                text,
                items: vec![diagnostic],
            })
        }
        Err(Unread { diagnostic: d, .. }) => return Err(Error::Coded(vec![(d.code, d.message)])),
    };
    let loaded = load_text(name, text)?;
    if let Err(items) = signers_of(&loaded.runbook, path) {
        return Err(Error::Diagnostics {
            file: loaded.name,
            text: loaded.text,
            items,
        });
    }
    Ok(loaded)
}

/// The allowed-signers files of the runbook at `path`, read relative to it.
pub fn signers_of(
    rb: &Runbook,
    path: &Path,
) -> std::result::Result<crate::approvals::RunSigners, Vec<Diagnostic>> {
    let base = path.parent().unwrap_or(Path::new("."));
    crate::approvals::RunSigners::load(rb, base)
}

/// The runbook a journal recorded, validated again (the one place that
/// does): `None` when this version of runbook no longer accepts it.
pub fn journaled_runbook(rec: &crate::journal::Recorded) -> Option<Arc<Runbook>> {
    crate::validate::validate(crate::spec::load(&rec.header.source))
        .runbook
        .map(Arc::new)
}

/// Validates a runbook's text (from a file), printing its warnings.
pub fn load_text(name: String, text: String) -> Result<Loaded> {
    let v = crate::validate::validate(crate::spec::load(&text));
    match v.runbook {
        Some(rb) => {
            print_warnings(&name, &text, &v.diagnostics);
            Ok(Loaded {
                runbook: Arc::new(rb),
                text,
                name,
            })
        }
        None => Err(Error::Diagnostics {
            file: name,
            text,
            items: v.diagnostics,
        }),
    }
}

fn print_warnings(name: &str, text: &str, ds: &[Diagnostic]) {
    let color = crate::view::color_stderr();
    let mut err = std::io::stderr().lock();
    for d in ds.iter().filter(|d| d.severity != Severity::Error) {
        let _ = writeln!(err, "{}", d.render(name, text, color));
    }
}

/// Params resolved against the runbook; bad ones are the error.
pub fn params(rb: &Runbook, given: &[(String, String)]) -> Result<ResolvedParams> {
    coded(plan::resolve_params(rb, given), None)
}

/// The params of a preview: required ones may be missing.
fn preview_params(
    rb: &Runbook,
    given: &[(String, String)],
    base: Option<&str>,
) -> Result<ResolvedParams> {
    coded(plan::resolve_params_for_preview(rb, given), base)
}

fn coded(
    resolved: std::result::Result<ResolvedParams, Vec<(Code, String)>>,
    base: Option<&str>,
) -> Result<ResolvedParams> {
    resolved.map_err(|errors| {
        Error::Coded(
            errors
                .into_iter()
                .map(|(code, e)| match base {
                    Some(b) => (code, format!("base {b}: {e}")),
                    None => (code, e),
                })
                .collect(),
        )
    })
}

/// Pre-flight errors are the file's diagnostics.
pub fn preflight_errors(loaded: &Loaded, items: Vec<Diagnostic>) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    Err(Error::Diagnostics {
        file: loaded.name.clone(),
        text: loaded.text.clone(),
        items,
    })
}

/// How `validate` reports what it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagnosticsFormat {
    /// Rendered diagnostics with the source line, on stderr.
    Text,
    /// One JSON array on stdout, an entry per file.
    Json,
    /// GitHub Actions workflow commands on stdout, one per diagnostic.
    Github,
}

/// `runbook validate PATH...`: each file named, and the runbooks found in
/// each directory named (see [`crate::runbook_files`]). Every file is
/// checked and reported; any invalid one, or a directory with no runbook,
/// fails the command.
pub fn validate(paths: &[std::path::PathBuf], format: DiagnosticsFormat, color: bool) -> Result {
    use crate::runbook_files::Entry;
    let github = format == DiagnosticsFormat::Github;
    // A path as printed: on a GitHub runner a line break in a file name
    // would start a workflow command of its own.
    let shown = |path: &Path| {
        let name = path.display().to_string();
        if github {
            crate::github::escape_data(&name)
        } else {
            name
        }
    };
    let mut ok = true;
    let mut out = Vec::new();
    for entry in crate::runbook_files::entries(paths) {
        let (f, unread) = match entry {
            Entry::Check(f) => (f, None),
            Entry::Skipped(f) => {
                eprintln!(
                    "note: skipped {}: not a runbook (no top-level version: and steps:)",
                    shown(&f)
                );
                continue;
            }
            Entry::NoRunbooks(dir) => {
                let message = format!(
                    "no runbook in {}: no *.yaml or *.yml file under it has top-level version: and steps:",
                    dir.display()
                );
                if github {
                    println!("{}", crate::github::error("runbook validate", &message));
                } else {
                    eprintln!("error: {message}");
                }
                ok = false;
                continue;
            }
            Entry::Unreadable(dir, why) => {
                let name = dir.display();
                let d = Diagnostic::new(
                    Code::Io,
                    Span::point(1, 1),
                    format!("cannot read directory {name}: {why}"),
                );
                let unread = Unread {
                    diagnostic: d,
                    text: None,
                };
                (dir, Some(unread))
            }
        };
        let name = f.display().to_string();
        let read = match unread {
            Some(u) => Err(u),
            None => read(&f).map_err(|u| *u),
        };
        let (valid, diags) = match read {
            Err(Unread { diagnostic, text }) => {
                if format == DiagnosticsFormat::Text {
                    match text {
                        Some(text) => eprintln!("{}", diagnostic.render(&name, &text, color)),
                        None => eprintln!(
                            "error[{}]: {}",
                            diagnostic.code.as_str(),
                            diagnostic.message
                        ),
                    }
                }
                (None, vec![diagnostic])
            }
            Ok(text) => {
                let mut v = crate::validate::validate(crate::spec::load(&text));
                if let Some(rb) = &v.runbook {
                    if let Err(items) = signers_of(rb, &f) {
                        v.diagnostics.extend(items);
                        v.runbook = None;
                    }
                }
                if format == DiagnosticsFormat::Text {
                    let mut err = std::io::stderr().lock();
                    for d in &v.diagnostics {
                        let _ = writeln!(err, "{}", d.render(&name, &text, color));
                    }
                }
                (v.runbook.map(|rb| rb.steps.len()), v.diagnostics)
            }
        };
        if github {
            let mut stdout = std::io::stdout().lock();
            for d in &diags {
                let _ = writeln!(stdout, "{}", crate::github::annotation(&name, d));
            }
        }
        let errors = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        if format != DiagnosticsFormat::Json {
            match valid {
                Some(n) => println!("ok: {} ({n} steps)", shown(&f)),
                None => {
                    let plural = if errors == 1 { "" } else { "s" };
                    eprintln!("invalid: {} ({errors} error{plural})", shown(&f));
                }
            }
        }
        ok &= valid.is_some();
        out.push(
            serde_json::json!({ "file": name, "valid": valid.is_some(), "diagnostics": diags }),
        );
    }
    if format == DiagnosticsFormat::Json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    if ok {
        Ok(Done::Ok)
    } else {
        Err(Error::InvalidFiles)
    }
}

pub fn plan(
    file: &Path,
    given: &[(String, String)],
    format: Format,
    diff: Option<&Path>,
    fail_on_risk: bool,
) -> Result {
    let loaded = load(file)?;
    let resolved = preview_params(&loaded.runbook, given, None)?;
    let (problems, plan) =
        plan::check_and_build(&loaded.runbook, &loaded.text, &resolved).map_err(Error::Invalid)?;
    preflight_errors(&loaded, problems)?;
    let Some(base_file) = diff else {
        print!("{}", plan::render(&plan, format));
        return Ok(Done::Ok);
    };
    let base = load(base_file)?;
    // The base may not know a param the change added: give it only those it declares.
    let base_params: Vec<(String, String)> = given
        .iter()
        .filter(|(k, _)| base.runbook.params.iter().any(|p| &p.name == k))
        .cloned()
        .collect();
    let base_name = base_file.display().to_string();
    let base_resolved = preview_params(&base.runbook, &base_params, Some(&base_name))?;
    let d = plan::diff(
        &plan::build_batched(&base.runbook, &base.text, &base_resolved).map_err(Error::Invalid)?,
        &plan,
    );
    print!("{}", plan::render_diff(&d, format));
    if fail_on_risk && !d.risks.is_empty() {
        return Ok(Done::RiskFound);
    }
    Ok(Done::Ok)
}
