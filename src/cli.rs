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

/// `--version`: the package version and the commit it was built from
/// (`0.1.0 (abc1234 2026-12-01)`, or `(unknown)` outside a git checkout;
/// see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RUNBOOK_BUILD_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "runbook",
    version = VERSION,
    about = "Validate, preview and run declarative runbooks",
    after_help = "Examples:
  runbook validate runbooks/
  runbook plan deploy.yaml --param version=1.4.2
  runbook run deploy.yaml --param version=1.4.2
  runbook status"
)]
pub struct Cli {
    /// Where runs, locks, approvals and the default flag file live: a
    /// directory, or a PostgreSQL URL (postgres://user@host:port/db) shared
    /// by a team (default: $RUNBOOK_STATE_DIR, else
    /// $XDG_STATE_HOME/runbook, else ~/.local/state/runbook).
    #[arg(long, global = true, env = "RUNBOOK_STATE_DIR", value_name = "DIR|URL")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check runbook files and print every problem with its position. A
    /// directory is searched (recursively) for runbooks: `*.yaml`/`*.yml`
    /// files with top-level `version:` and `steps:`.
    #[command(after_help = "Examples:
  runbook validate deploy.yaml
  runbook validate runbooks/ --format github")]
    Validate {
        /// A runbook file, or a directory to search for runbooks.
        #[arg(required = true, value_name = "FILE_OR_DIR")]
        files: Vec<PathBuf>,
        /// `text` (rendered on stderr), `json` (one array, an entry per
        /// file) or `github` (GitHub Actions annotations).
        #[arg(long, value_enum, default_value = "text")]
        format: DiagFormat,
    },
    /// Preview what a run would do; executes nothing, contacts nothing.
    #[command(after_help = "Examples:
  runbook plan deploy.yaml --param version=1.4.2
  runbook plan deploy.yaml --format markdown > plan.md
  runbook plan deploy.yaml --diff old/deploy.yaml --fail-on-risk")]
    Plan {
        /// The runbook to preview.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// A parameter value, `name=value`.
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        /// How to print the plan.
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
    #[command(after_help = "Examples:
  runbook run deploy.yaml --param version=1.4.2
  runbook run deploy.yaml --run-id deploy-42 --report report.json
  runbook run deploy.yaml --approve go-live --as alice
  runbook run production-rollout.yaml --param revision=v2 --detach")]
    Run(RunArgs),
    /// Continue a run after the engine died (crash, kill -9, power loss).
    #[command(after_help = "Examples:
  runbook resume 20261201-093000-1a2b
  runbook resume 20261201-0930 --param token=$TOKEN")]
    Resume {
        /// The run to continue (a unique prefix of its id is enough).
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// A secret parameter given at the start, `name=value` (secrets are never journaled).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Bring an ended run to rolled_back: unwind a succeeded run (an
    /// emergency rollback), or run the rollbacks a failed or cut-short unwind
    /// left.
    #[command(after_help = "Examples:
  runbook rollback 20261201-093000-1a2b
  runbook rollback deploy-42 --yes")]
    Rollback {
        /// The ended run to roll back (a unique prefix of its id is enough).
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// Do not ask before rolling back (asked only on a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        /// A secret parameter given at the start, `name=value` (secrets are never journaled).
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Answer a waiting approval of a run from another process.
    #[command(after_help = "Examples:
  runbook approve 20261201-093000-1a2b go-live --as alice
  runbook approve deploy-42 go-live --as bob --reject --comment \"error rate too high\"")]
    Approve {
        /// The running run (a unique prefix of its id is enough).
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// The approval step to answer (`status RUN_ID` lists the waiting ones).
        #[arg(value_name = "STEP")]
        step: String,
        /// Who approves (default: $RUNBOOK_USER, else the login name).
        #[arg(long = "as", value_name = "NAME")]
        identity: Option<String>,
        /// Reject instead of approving: the step fails and the run unwinds.
        #[arg(long)]
        reject: bool,
        /// A note kept in the journal with the decision.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Sign the decision with this SSH key (a private key, or a public
        /// key whose private half is in ssh-agent): required where the
        /// runbook has `allowed_signers`.
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
    },
    /// Serve the runs as web pages and JSON, with Approve/Reject for
    /// waiting steps (identity from a trusted proxy's header).
    #[command(after_help = "Examples:
  runbook serve
  runbook serve --listen 127.0.0.1:8080 --auth-header X-Forwarded-User")]
    Serve {
        /// Address to listen on; loopback unless you say otherwise.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The request header in which the authenticating reverse proxy
        /// names the user; without it the pages are read-only.
        #[arg(long, value_name = "NAME")]
        auth_header: Option<String>,
    },
    /// Check every signed decision of a run again, offline.
    #[command(after_help = "Examples:
  runbook verify 20261201-093000-1a2b
  runbook verify deploy-42 --allowed-signers team/allowed_signers")]
    Verify {
        /// The run whose decisions to check (a unique prefix of its id is enough).
        #[arg(value_name = "RUN_ID")]
        run_id: String,
        /// Check against this allowed-signers file instead of the one the
        /// run started with.
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
    },
    /// List runs, or show one run's steps.
    #[command(after_help = "Examples:
  runbook status
  runbook status 20261201-0930
  runbook status deploy-42 --format json")]
    Status {
        /// The run to show (a unique prefix of its id is enough); without
        /// it, every run is listed.
        #[arg(value_name = "RUN_ID")]
        run_id: Option<String>,
        /// `text` for people, `json` for scripts.
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
    /// Print a run's output and events so far, read from its journal (from
    /// any directory); with --follow, until the run ends. Exits with the
    /// run's exit code once it has ended.
    #[command(after_help = "Examples:
  runbook logs 20261201-093000-ab12
  runbook logs 20261201-0930 --follow")]
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
    #[command(after_help = "Examples:
  runbook cancel 20261201-093000-ab12
  runbook cancel 20261201-0930 && runbook logs 20261201-0930 --follow")]
    Cancel {
        /// The run's id, as `run` printed it.
        run_id: String,
        /// Signal even a run that is already unwinding: its unwind stops at
        /// once and ends `unwind_incomplete` (as a second Ctrl-C would).
        #[arg(long)]
        force: bool,
    },
    /// Print the JSON Schema of the runbook format.
    #[command(after_help = "Examples:
  runbook schema > runbook.schema.json
  runbook schema --plan > plan.schema.json")]
    Schema {
        /// The schema of `plan --format json` instead.
        #[arg(long)]
        plan: bool,
    },
    /// Print a shell's completion script for runbook.
    #[command(after_help = "Examples:
  source <(runbook completions bash)
  runbook completions zsh > \"${fpath[1]}/_runbook\"
  runbook completions fish > ~/.config/fish/completions/runbook.fish")]
    Completions {
        /// The shell to complete in.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), of runbook or of one of its commands.
    #[command(
        hide = true,
        after_help = "Examples:
  runbook man | man -l -
  runbook man plan > runbook-plan.1"
    )]
    Man {
        /// A command whose page to print instead of runbook's.
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The runbook to run.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// A parameter value, `name=value`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// The run's id (default: generated and printed at start).
    #[arg(long, value_name = "ID")]
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
    #[arg(long = "approve", value_name = "STEP")]
    pub approve: Vec<String>,
    /// Identity of the person running (default: $RUNBOOK_USER, else the login name).
    #[arg(long = "as", value_name = "NAME")]
    pub identity: Option<String>,
    /// Prove `--as` with this SSH key (private key, or a public key held in
    /// ssh-agent) against the runbook's `allowed_signers`; it also signs
    /// `--approve` and the prompt's answers.
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Write a JSON report of the run to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// `text` (live view or plain lines) or `json` (one JSON object per line).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// With a database as the state dir: how long this engine's hold on
    /// the run lasts unless renewed (it renews every third of it); after
    /// its host dies, `resume` from anywhere takes over once it ends.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_lease)]
    pub lease: std::time::Duration,
}

fn parse_lease(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::duration::parse(s)?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than the shortest lease, 1s"));
    }
    Ok(d)
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

impl Command {
    /// Whether the command only prints (no step runs, nothing is decided),
    /// so it may die of SIGPIPE when its reader goes away; see
    /// [`crate::broken_pipe`]. Every command must choose: no `_` arm.
    pub fn only_prints(&self) -> bool {
        match self {
            Command::Validate { .. }
            | Command::Plan { .. }
            | Command::Status { .. }
            | Command::Logs { .. }
            | Command::Schema { .. }
            | Command::Completions { .. }
            | Command::Man { .. } => true,
            Command::Run(_)
            | Command::Resume { .. }
            | Command::Rollback { .. }
            | Command::Approve { .. }
            | Command::Verify { .. }
            | Command::Serve { .. }
            | Command::Cancel { .. } => false,
        }
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not name=value"))
}

pub fn main() -> i32 {
    // An empty `RUNBOOK_STATE_DIR=` means unset, as for `XDG_STATE_HOME`
    // (clap would take it for a missing value). Before any thread starts.
    if std::env::var_os("RUNBOOK_STATE_DIR").is_some_and(|v| v.is_empty()) {
        std::env::remove_var("RUNBOOK_STATE_DIR");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if cli.command.only_prints() {
        crate::broken_pipe::die_on_broken_pipe();
    }
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
        Ok(Done::RiskFound | Done::Unverified) => 1,
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
        key: view.key.clone(),
        report: view.report.clone(),
        lease: view.lease,
        json_log: view.log_format == LogFormat::Json,
    })
}

fn dispatch(cli: Cli) -> crate::error::Result {
    // Commands that never read runs need no state dir (nor a HOME for one).
    let stateless = matches!(
        cli.command,
        Command::Validate { .. }
            | Command::Plan { .. }
            | Command::Schema { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
    );
    let store = if stateless {
        None
    } else {
        let given = match cli.state_dir {
            Some(dir) => dir,
            None => crate::state_dir::from_env().map_err(Error::cannot_start)?,
        };
        let cwd = std::env::current_dir()
            .map_err(|e| Error::cannot_start(format!("cannot read the working directory: {e}")))?;
        Some(crate::store::open(given.as_os_str(), &cwd)?)
    };
    // Only the stateless commands above go without one.
    let store = || store.clone().ok_or_else(|| Error::invalid("no state dir"));
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
            store: store()?,
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
        } => {
            let store = store()?;
            let run_id = crate::run_id::resolve(store.as_ref(), &run_id)?;
            crate::runner::resume(&store, &run_id, &params, output(&view)?)
        }
        Command::Rollback {
            run_id,
            yes,
            params,
            view,
        } => {
            let store = store()?;
            let run_id = crate::run_id::resolve(store.as_ref(), &run_id)?;
            crate::runner::rollback(&store, &run_id, &params, output(&view)?, yes)
        }
        Command::Approve {
            run_id,
            step,
            identity,
            reject,
            comment,
            key,
        } => {
            let store = store()?;
            let run_id = crate::run_id::resolve(store.as_ref(), &run_id)?;
            let identity = checked_identity(identity.as_ref())?;
            crate::approvals::submit(
                store.as_ref(),
                &crate::approvals::Answer {
                    run_id: &run_id,
                    step: &step,
                    identity: identity.as_deref(),
                    reject,
                    comment: comment.as_deref(),
                    key: key.as_deref(),
                },
            )
        }
        Command::Serve {
            listen,
            auth_header,
        } => crate::serve::serve(crate::serve::ServeSettings {
            store: store()?,
            listen,
            auth_header,
        }),
        Command::Verify {
            run_id,
            allowed_signers,
        } => {
            let store = store()?;
            let run_id = crate::run_id::resolve(store.as_ref(), &run_id)?;
            crate::approvals::verify(store.as_ref(), &run_id, allowed_signers.as_deref())
        }
        Command::Status { run_id, format } => {
            let store = store()?;
            let run_id = run_id
                .map(|id| crate::run_id::resolve(store.as_ref(), &id))
                .transpose()?;
            crate::status::show(
                store.as_ref(),
                run_id.as_deref(),
                format == StatusFormat::Json,
            )
        }
        Command::Logs { run_id, follow } => {
            let store = store()?;
            let run_id = crate::run_id::resolve(store.as_ref(), &run_id)?;
            crate::operate::logs(store.as_ref(), &run_id, follow)
        }
        Command::Cancel { run_id, force } => {
            let store = store()?;
            let run_id = crate::run_id::resolve(store.as_ref(), &run_id)?;
            crate::operate::cancel(store.as_ref(), &run_id, force)
        }
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
        Command::Completions { shell } => crate::cli_generate::completions(shell),
        Command::Man { command } => crate::cli_generate::man(command.as_deref()),
    }
}
