//! Shell completion scripts and manual pages, generated from the same clap
//! definition ([`crate::cli::Cli`]) the parser uses, so neither can fall
//! behind a new flag or subcommand.
//!
//! Both are rendered into memory first and written with one call: the
//! generators write piecemeal and `clap_complete` panics on a write error,
//! while here a failed write (a full disk under `> file`) is an ordinary
//! error. A broken pipe never gets that far: these commands die by SIGPIPE
//! like `cat` ([`crate::broken_pipe`]).

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{Done, Error, Result};

/// `runbook completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "runbook", &mut script);
    write_stdout(&script, "completion script")
}

/// `runbook man [COMMAND]`: runbook(1), or a subcommand's page
/// (`runbook-plan(1)`), as roff on stdout.
pub fn man(command: Option<&str>) -> Result {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building names the subcommands as their pages are titled
    // (`runbook-plan`) and makes their usage read `runbook plan ...`.
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
                return Err(Error::invalid(format!(
                    "there is no command `{name}`; commands: {}",
                    names.join(", ")
                )));
            }
        },
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .date(env!("RUNBOOK_BUILD_DATE"))
        .source(format!("runbook {}", crate::cli::VERSION))
        .render(&mut roff)
        .map_err(|e| Error::cannot_start(format!("cannot render the manual page: {e}")))?;
    write_stdout(&roff, "manual page")
}

fn write_stdout(bytes: &[u8], what: &str) -> Result {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::cannot_start(format!("cannot write the {what} to stdout: {e}")))?;
    Ok(Done::Ok)
}
