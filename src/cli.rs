//! The command line: clap arguments -> library calls -> an exit code.
//!
//! Exit codes are decided here and only here ([`Exit`]), so the contract in
//! the spec (0, 1, 2, 3, 4, 130) has one home.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::diagnostics::{Diagnostic, Severity};
use crate::plan::{self, Format, Plan};
use crate::runbook::Runbook;
use crate::validate;

/// The process exit codes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Succeeded = 0,
    Failed = 1,
    Invalid = 2,
    RollbackFailed = 3,
    CannotStart = 4,
    Interrupted = 130,
}

#[derive(Parser, Debug)]
#[command(
    name = "runbook",
    version,
    about = "Validate, preview and run declarative runbooks"
)]
pub struct Cli {
    /// Where runs keep their journals (default: $RUNBOOK_STATE_DIR, else .runbook).
    #[arg(
        long,
        global = true,
        env = "RUNBOOK_STATE_DIR",
        default_value = ".runbook"
    )]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check runbook files and print every problem with its position.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print diagnostics as JSON (one array per file).
        #[arg(long, value_enum, default_value = "text")]
        format: DiagFormat,
    },
    /// Preview what a run would do; executes nothing, contacts nothing.
    Plan {
        file: PathBuf,
        /// A parameter value, `name=value`.
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Show what changed against the plan of this base version of the runbook.
        #[arg(long, value_name = "BASE_FILE")]
        diff: Option<PathBuf>,
    },
    /// Run a runbook.
    Run(RunArgs),
    /// Continue a run after the engine died (crash, kill -9, power loss).
    Resume {
        run_id: String,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Unwind a finished, succeeded run (an emergency rollback).
    Rollback {
        run_id: String,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Answer a waiting approval of a run from another process.
    Approve {
        run_id: String,
        step: String,
        /// Who approves (default: $RUNBOOK_USER, else the login name).
        #[arg(long = "as")]
        identity: Option<String>,
        /// Reject instead of approving: the step fails and the run unwinds.
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        comment: Option<String>,
    },
    /// List runs, or show one run's steps.
    Status {
        run_id: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: DiagFormat,
    },
    /// Print the JSON Schema of the runbook format.
    Schema,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    pub file: PathBuf,
    /// A parameter value, `name=value`.
    #[arg(long = "param", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// The run's id (default: generated and printed at start).
    #[arg(long)]
    pub run_id: Option<String>,
    #[command(flatten)]
    pub view: ViewArgs,
}

/// Options every command that runs steps takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ViewArgs {
    /// Approve this approval step as the identity running the command.
    #[arg(long = "approve")]
    pub approve: Vec<String>,
    /// Identity of the person running (default: $RUNBOOK_USER, else the login name).
    #[arg(long = "as")]
    pub identity: Option<String>,
    /// Write a JSON report of the run to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// `text` (live view or plain lines) or `json` (one JSON object per line).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagFormat {
    Text,
    Json,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not name=value"))
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Invalid as i32
            } else {
                0
            };
        }
    };
    run(cli) as i32
}

pub(crate) fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Reads, loads and validates a file, printing its diagnostics to stderr.
pub fn load_runbook(path: &Path) -> Result<Runbook, Exit> {
    let (runbook, _) = check_file(path, DiagFormat::Text);
    runbook.ok_or(Exit::Invalid)
}

fn check_file(path: &Path, format: DiagFormat) -> (Option<Runbook>, Vec<Diagnostic>) {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let d = Diagnostic::new(
                crate::diagnostics::Code::Io,
                crate::spec::Span::point(1, 1),
                format!("cannot read {name}: {e}"),
            );
            if format == DiagFormat::Text {
                eprintln!("error[E001]: {}", d.message);
            }
            return (None, vec![d]);
        }
    };
    let v = validate::validate(crate::spec::load(&text));
    if format == DiagFormat::Text {
        let color = color_stderr();
        let mut err = std::io::stderr().lock();
        for d in &v.diagnostics {
            let _ = writeln!(err, "{}", d.render(&name, &text, color));
        }
    }
    (v.runbook, v.diagnostics)
}

pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Validate { files, format } => {
            let mut ok = true;
            let mut json = Vec::new();
            for f in &files {
                let (rb, diags) = check_file(f, format);
                let errors = diags
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                match (&rb, format) {
                    (Some(rb), DiagFormat::Text) => {
                        println!("ok: {} ({} steps)", f.display(), rb.steps.len())
                    }
                    (None, DiagFormat::Text) => {
                        let plural = if errors == 1 { "" } else { "s" };
                        eprintln!("invalid: {} ({errors} error{plural})", f.display());
                    }
                    _ => {}
                }
                ok &= rb.is_some();
                json.push(serde_json::json!({ "file": f.display().to_string(), "valid": rb.is_some(), "diagnostics": diags }));
            }
            if format == DiagFormat::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json).unwrap_or_default()
                );
            }
            if ok {
                Exit::Succeeded
            } else {
                Exit::Invalid
            }
        }
        Command::Plan {
            file,
            params,
            format,
            diff,
        } => {
            let rb = match load_runbook(&file) {
                Ok(rb) => rb,
                Err(e) => return e,
            };
            let resolved = match plan::resolve_params(&rb, &params) {
                Ok(p) => p,
                Err(errors) => {
                    for (code, e) in errors {
                        eprintln!("error[{code}]: {e}");
                    }
                    return Exit::Invalid;
                }
            };
            let plan = Plan::build(&rb, &resolved);
            let Some(base_file) = diff else {
                print!("{}", plan::render(&plan, format));
                return Exit::Succeeded;
            };
            let base = match load_runbook(&base_file) {
                Ok(b) => b,
                Err(e) => return e,
            };
            // The base may not know a param the change added: give it only those it declares.
            let base_params: Vec<(String, String)> = params
                .iter()
                .filter(|(k, _)| base.params.iter().any(|p| &p.name == k))
                .cloned()
                .collect();
            let base_resolved = match plan::resolve_params(&base, &base_params) {
                Ok(p) => p,
                Err(errors) => {
                    for (code, e) in errors {
                        eprintln!("error[{code}]: base {}: {e}", base_file.display());
                    }
                    return Exit::Invalid;
                }
            };
            let d = plan::diff(&Plan::build(&base, &base_resolved), &plan);
            print!("{}", plan::render_diff(&d, format));
            Exit::Succeeded
        }
        Command::Run(args) => crate::run::run(&cli.state_dir, args),
        Command::Resume { run_id, view } => crate::run::resume(&cli.state_dir, &run_id, view),
        Command::Rollback { run_id, view } => crate::run::rollback(&cli.state_dir, &run_id, view),
        Command::Approve {
            run_id,
            step,
            identity,
            reject,
            comment,
        } => crate::steps::approval::submit(
            &cli.state_dir,
            &run_id,
            &step,
            identity.as_deref(),
            reject,
            comment.as_deref(),
        ),
        Command::Status { run_id, format } => crate::status::show(
            &cli.state_dir,
            run_id.as_deref(),
            format == DiagFormat::Json,
        ),
        Command::Schema => {
            print!("{}", crate::schema::json());
            Exit::Succeeded
        }
    }
}
