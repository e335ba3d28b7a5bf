//! `kind: command` metric provider: the query is a shell command (under the
//! step's interpreter, `bash -eo pipefail -c` by default) that prints one
//! number on stdout.
//!
//! Each evaluation runs in a process group of its own; the group is killed
//! (SIGKILL) when the evaluation ends or is abandoned (the step is stopped),
//! so nothing the command started outlives it. Empty output is "no data";
//! anything else that is not a number is an error. The evaluation time, when
//! the step sets `at`, is passed as `$RUNBOOK_METRIC_AT` (unix seconds).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{BoxFuture, MetricSource};
use crate::process_group::ProcessGroup;

/// Most output kept from a command (stdout or stderr).
const MAX_OUTPUT: u64 = 64 * 1024;

/// How long to wait for output after the command exited (a background
/// process may hold the pipes open).
const DRAIN: Duration = Duration::from_millis(300);

pub struct CommandMetric {
    /// Program and leading arguments; the query is appended.
    pub interpreter: Vec<String>,
    /// The whole environment of the command.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Per-evaluation limit (the provider's `timeout`), if any.
    pub timeout: Option<Duration>,
}

impl CommandMetric {
    async fn run(&self, query: &str, at: Option<SystemTime>) -> Result<Option<f64>, String> {
        let (program, args) = self
            .interpreter
            .split_first()
            .ok_or_else(|| "empty interpreter".to_string())?;
        let mut cmd = Command::new(program);
        cmd.args(args).arg(query);
        cmd.env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(at) = at {
            cmd.env("RUNBOOK_METRIC_AT", super::prometheus::format_time(at)?);
        }
        cmd.current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{program}` in {}: {e}", self.cwd.display()))?;
        let _group = ProcessGroup::of(&child);
        let stdout = read(child.stdout.take());
        let stderr = read(child.stderr.take());
        let outputs = async { tokio::join!(stdout, stderr) };
        tokio::pin!(outputs);

        let work = async {
            let mut collected = None;
            let status = loop {
                tokio::select! {
                    s = child.wait() => break s.map_err(|e| format!("waiting for the command: {e}"))?,
                    o = &mut outputs, if collected.is_none() => collected = Some(o),
                }
            };
            let (out, err) = match collected {
                Some(o) => o,
                None => tokio::time::timeout(DRAIN, &mut outputs)
                    .await
                    .unwrap_or_default(),
            };
            Ok::<_, String>((status, out, err))
        };
        let (status, out, err) = match self.timeout {
            Some(t) => tokio::time::timeout(t, work).await.map_err(|_| {
                format!("the command timed out after {}", crate::duration::format(t))
            })??,
            None => work.await?,
        };
        if !status.success() {
            let how = match status.code() {
                Some(c) => format!("exit code {c}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("signal {}", status.signal().unwrap_or(0))
                }
            };
            let tail = tail(&err, 5);
            return Err(if tail.is_empty() {
                format!("the command failed ({how})")
            } else {
                format!("the command failed ({how}): {tail}")
            });
        }
        parse_number(&out)
    }
}

impl MetricSource for CommandMetric {
    fn query<'a>(
        &'a self,
        query: &'a str,
        at: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<Option<f64>, String>> {
        Box::pin(self.run(query, at))
    }
}

fn read<R: AsyncRead + Unpin + Send + 'static>(stream: Option<R>) -> BoxFuture<'static, String> {
    Box::pin(async move {
        let mut buf = Vec::new();
        if let Some(s) = stream {
            let _ = s.take(MAX_OUTPUT).read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The last `n` non-empty lines, joined with ` | `.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// What the command printed -> the number; empty or NaN is no data.
pub fn parse_number(stdout: &str) -> Result<Option<f64>, String> {
    let text = stdout.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_nan() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(_) => {
            let mut shown: String = text.chars().take(200).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            let hint = if text.lines().count() > 1 {
                " (print only the number on stdout; send anything else to stderr)"
            } else {
                ""
            };
            Err(format!("the command printed `{shown}`, not a number{hint}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn numbers_empty_and_garbage() {
        assert_eq!(parse_number(" 0.004\n"), Ok(Some(0.004)));
        assert_eq!(parse_number("-3"), Ok(Some(-3.0)));
        assert_eq!(parse_number("1e-3"), Ok(Some(0.001)));
        assert_eq!(parse_number("\n"), Ok(None));
        assert_eq!(parse_number("NaN"), Ok(None));
        let e = parse_number("hello").unwrap_err();
        assert_eq!(e, "the command printed `hello`, not a number");
        let e = parse_number("log line\n0.5").unwrap_err();
        assert!(e.contains("print only the number"), "{e}");
    }
}
