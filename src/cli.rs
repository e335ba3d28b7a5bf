//! The command line: clap arguments -> resolved settings -> library calls
//! -> an exit code.
//!
//! Exit codes are decided here and only here ([`exit_code`]), so the
//! contract in the spec (0, 1, 2, 3, 4, 130) has one home; library code
//! returns [`Done`] or [`Error`] and never sees clap's types.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::error::{Done, Error};
use crate::events::RunStatus;
use crate::plan::Format;
use crate::runner::{Output, RunSettings};
use crate::view::color_stderr;

#[derive(Parser, Debug)]
#[command(
    name = "runbook",
    version,
    about = "Validate, preview and run declarative runbooks"
)]
pub struct Cli {
    /// Where runs, locks, approvals and the default flag file live
    /// (default: $RUNBOOK_STATE_DIR, else $XDG_STATE_HOME/runbook, else
    /// ~/.local/state/runbook).
    #[arg(long, global = true, env = "RUNBOOK_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check runbook files and print every problem with its position. A
    /// directory is searched (recursively) for runbooks: `*.yaml`/`*.yml`
    /// files with top-level `version:` and `steps:`.
    Validate {
        #[arg(required = true, value_name = "FILE_OR_DIR")]
        files: Vec<PathBuf>,
        /// `text` (rendered on stderr), `json` (one array, an entry per
        /// file) or `github` (GitHub Actions annotations).
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
        /// With --diff: exit 1 when any risk is found (for CI).
        #[arg(long, requires = "diff")]
        fail_on_risk: bool,
    },
    /// Run a runbook.
    Run(RunArgs),
    /// Continue a run after the engine died (crash, kill -9, power loss).
    Resume {
        run_id: String,
        /// A secret parameter given at the start, `name=value` (secrets are never journaled).
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Bring an ended run to rolled_back: unwind a succeeded run (an
    /// emergency rollback), or run the rollbacks a failed or cut-short unwind
    /// left.
    Rollback {
        run_id: String,
        /// Do not ask before rolling back (asked only on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// A secret parameter given at the start, `name=value` (secrets are never journaled).
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
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
        format: StatusFormat,
    },
    /// Print a run's output and events so far, read from its journal (from
    /// any directory); with --follow, until the run ends. Exits with the
    /// run's exit code once it has ended.
    Logs {
        /// The run's id, as `run` printed it.
        run_id: String,
        /// Keep printing until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Ask the engine running a run to unwind, as Ctrl-C at its terminal
    /// would (the run ends `interrupted`, exit 130); works from any process
    /// and directory.
    Cancel {
        /// The run's id, as `run` printed it.
        run_id: String,
    },
    /// Print the JSON Schema of the runbook format.
    Schema {
        /// The schema of `plan --format json` instead.
        #[arg(long)]
        plan: bool,
    },
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
    /// Run in the background, detached from the terminal; print the run id
    /// and exit. Follow it with `runbook logs RUN_ID --follow`.
    #[arg(long)]
    pub detach: bool,
    /// The background process of `--detach` (set by runbook itself).
    #[arg(long, hide = true)]
    pub detached_child: bool,
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

/// `validate --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagFormat {
    Text,
    Json,
    Github,
}

/// `status --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
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
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let result = dispatch(cli);
    if let Err(e) = &result {
        print_error(e);
    }
    exit_code(&result)
}

/// The one map from a command's result to the contract's exit codes.
pub fn exit_code(result: &crate::error::Result) -> i32 {
    match result {
        Ok(Done::Ok) => 0,
        Ok(Done::RiskFound) => 1,
        Ok(Done::Run(status)) => match status {
            RunStatus::Succeeded => 0,
            RunStatus::RolledBack => 1,
            RunStatus::RollbackFailed | RunStatus::UnwindIncomplete => 3,
            RunStatus::Interrupted => 130,
        },
        // `runbook rollback`: 0 once every rollback has succeeded.
        Ok(Done::Rollback(status)) => match status {
            RunStatus::Succeeded | RunStatus::RolledBack => 0,
            RunStatus::RollbackFailed | RunStatus::UnwindIncomplete => 3,
            RunStatus::Interrupted => 130,
        },
        Err(
            Error::Invalid(_) | Error::Coded(_) | Error::Diagnostics { .. } | Error::InvalidFiles,
        ) => 2,
        Err(Error::NeedsPerson(_)) => 3,
        Err(Error::CannotStart(_) | Error::StillRunning(_)) => 4,
        Err(Error::Exited(code)) => *code,
    }
}

fn print_error(e: &Error) {
    let mut err = std::io::stderr().lock();
    match e {
        Error::Diagnostics { file, text, items } => {
            let color = color_stderr();
            for d in items {
                let _ = writeln!(err, "{}", d.render(file, text, color));
            }
            let n = items
                .iter()
                .filter(|d| d.severity == crate::diagnostics::Severity::Error)
                .count();
            let plural = if n == 1 { "" } else { "s" };
            let _ = writeln!(err, "invalid: {file} ({n} error{plural})");
        }
        Error::InvalidFiles | Error::Exited(_) => {}
        Error::Coded(list) => {
            for (code, msg) in list {
                let _ = writeln!(err, "error[{}]: {msg}", code.as_str());
            }
        }
        other => {
            let _ = writeln!(err, "error: {other}");
        }
    }
}

/// `--as NAME`: trimmed, and never empty (`"alice "` is alice, not a
/// second approver; `""` is nobody).
fn checked_identity(flag: Option<&String>) -> Result<Option<String>, Error> {
    match flag.map(|s| s.trim()) {
        None => Ok(None),
        Some("") => Err(Error::invalid("--as needs a name")),
        Some(name) => Ok(Some(name.to_string())),
    }
}

fn output(view: &ViewArgs) -> Result<Output, Error> {
    Ok(Output {
        approve: view.approve.clone(),
        identity: checked_identity(view.identity.as_ref())?,
        report: view.report.clone(),
        json_log: view.log_format == LogFormat::Json,
    })
}

fn dispatch(cli: Cli) -> crate::error::Result {
    let state_dir = match cli.state_dir {
        Some(dir) => dir,
        None => crate::state_dir::from_env().map_err(Error::cannot_start)?,
    };
    match cli.command {
        Command::Validate { files, format } => {
            let format = match format {
                DiagFormat::Text => commands::DiagnosticsFormat::Text,
                DiagFormat::Json => commands::DiagnosticsFormat::Json,
                DiagFormat::Github => commands::DiagnosticsFormat::Github,
            };
            commands::validate(&files, format, color_stderr())
        }
        Command::Plan {
            file,
            params,
            format,
            diff,
            fail_on_risk,
        } => commands::plan(&file, &params, format, diff.as_deref(), fail_on_risk),
        Command::Run(args) => crate::runner::run(RunSettings {
            state_dir,
            file: args.file,
            params: args.params,
            run_id: args.run_id,
            output: output(&args.view)?,
            detach: if args.detached_child {
                crate::runner::Detach::Child
            } else if args.detach {
                crate::runner::Detach::Parent
            } else {
                crate::runner::Detach::No
            },
        }),
        Command::Resume {
            run_id,
            params,
            view,
        } => crate::runner::resume(&state_dir, &run_id, &params, output(&view)?),
        Command::Rollback {
            run_id,
            yes,
            params,
            view,
        } => crate::runner::rollback(&state_dir, &run_id, &params, output(&view)?, yes),
        Command::Approve {
            run_id,
            step,
            identity,
            reject,
            comment,
        } => crate::approvals::submit(
            &state_dir,
            &run_id,
            &step,
            checked_identity(identity.as_ref())?.as_deref(),
            reject,
            comment.as_deref(),
        ),
        Command::Status { run_id, format } => {
            crate::status::show(&state_dir, run_id.as_deref(), format == StatusFormat::Json)
        }
        Command::Logs { run_id, follow } => crate::operate::logs(&state_dir, &run_id, follow),
        Command::Cancel { run_id } => crate::operate::cancel(&state_dir, &run_id),
        Command::Schema { plan } => {
            print!(
                "{}",
                if plan {
                    crate::schema::plan_json()
                } else {
                    crate::schema::json()
                }
            );
            Ok(Done::Ok)
        }
    }
}
