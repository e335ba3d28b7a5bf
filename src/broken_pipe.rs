//! What a command does when the reader of its output goes away
//! (`runbook status | head -1`): see docs/decisions.md, "Broken pipes".
//!
//! Rust starts every program with SIGPIPE ignored, so a write to a closed
//! pipe fails with EPIPE and `println!` panics ("failed printing to
//! stdout"). Commands that only print (validate, plan, status, schema,
//! completions, man) put SIGPIPE back to its default before they start and
//! so die of it silently, like `cat` or `grep`: a shell shows exit 141, and
//! a pipeline's reader sees the output it asked for and nothing else.
//!
//! Commands that run or answer steps (run, resume, rollback, approve) keep
//! it ignored. A run outlives the terminal that started it; losing the pipe
//! its progress goes to must not kill the engine between two journal
//! records, so their output ignores write errors instead and the run ends
//! as it would have. Their steps are unaffected either way: std (and tokio,
//! which spawns through it) resets SIGPIPE to its default in every child.
//!
//! This is the crate's third `unsafe` place (the others: reading the login
//! name, the template allocator).

/// Restores SIGPIPE's default action (terminate) for this process. Call it
/// before any thread is started.
#[allow(unsafe_code)]
pub fn die_on_broken_pipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler, so no code of ours
    // runs in signal context; it is called once, at startup, before the
    // process has other threads that could race on the disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Writes `line` and a newline to stdout, ignoring a failed write: for the
/// commands that keep SIGPIPE ignored, whose output must never stop them.
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// [`print_line`] for stderr: a run's notes and messages must not panic
/// the engine when the pipe they go to is gone (`runbook run x 2>&1 | head`).
pub fn eprint_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// As [`eprint_line`], without the newline (a prompt).
pub fn eprint_text(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{text}");
    let _ = err.flush();
}
