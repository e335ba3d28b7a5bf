//! The terminal prompt: the operator answers a waiting approval with `y` or
//! `n`. Apart because stdin is process-wide: one reader thread serves every
//! prompt, whichever step asks, and whatever was typed but never read is
//! discarded when the run ends ([`discard_typed_input`]), so keys pressed at
//! the spinner do not reach the shell after it.
//!
//! Whether to ask at all is [`offer`], a pure function of the rules: a
//! prompt for someone whose answer would not count only invites an answer
//! that is then ignored, so it tells who can answer and how instead.

use std::io::{BufRead, IsTerminal};
use std::sync::OnceLock;

use tokio::sync::mpsc;

/// Lines typed on the terminal, read by one thread for the whole process so
/// two prompts never compete for stdin.
pub(crate) fn stdin_lines() -> &'static tokio::sync::Mutex<mpsc::UnboundedReceiver<String>> {
    static LINES: OnceLock<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        tokio::sync::Mutex::new(rx)
    })
}

/// The next line typed, `None` once stdin is closed.
pub(crate) async fn next_line() -> Option<String> {
    stdin_lines().lock().await.recv().await
}

/// What the prompt does for the operator of a waiting approval.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Ask: the operator's approval would count.
    Ask,
    /// Do not read answers; print this instead (who can answer, and how).
    Tell(String),
}

/// Whether the prompt offers `operator` to answer: only when they may
/// approve (listed, and not the starter unless self approval is allowed) and
/// have not approved already. `command` is the command that answers.
pub(crate) fn offer(
    rules: &super::Rules,
    operator: &str,
    approved: &[String],
    command: &str,
) -> Offer {
    if approved.iter().any(|a| a == operator) {
        return Offer::Tell(format!(
            "{operator} has approved; {}",
            rules.waiting_on(approved)
        ));
    }
    match rules.may_approve(operator) {
        Ok(()) => Offer::Ask,
        Err(why) => Offer::Tell(format!(
            "not asking you: {why}\nto answer: {command} (or --reject)"
        )),
    }
}

/// Discards what was typed on the terminal and not read (keys pressed at
/// the spinner), so it does not reach the shell after the run: `y: command
/// not found`. Only when stdin is a terminal.
pub(crate) fn discard_typed_input() {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let _ = rustix::termios::tcflush(&stdin, rustix::termios::QueueSelector::IFlush);
    }
}

/// Parses a prompt answer: `y`/`yes` or `n`/`no`, optionally with a comment.
pub(crate) fn parse_answer(line: &str) -> Option<(bool, Option<String>)> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let approved = match word.to_ascii_lowercase().as_str() {
        "y" | "yes" => true,
        "n" | "no" => false,
        _ => return None,
    };
    let rest = rest.trim();
    Some((approved, (!rest.is_empty()).then(|| rest.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer("y"), Some((true, None)));
        assert_eq!(parse_answer(" YES "), Some((true, None)));
        assert_eq!(
            parse_answer("n error rate too high"),
            Some((false, Some("error rate too high".into())))
        );
        assert_eq!(parse_answer("maybe"), None);
    }

    fn rules(approvers: Option<&[&str]>, allow_self: bool) -> super::super::Rules {
        super::super::Rules {
            step: "gate".into(),
            approvers: approvers.map(|l| l.iter().map(ToString::to_string).collect()),
            required: 1,
            allow_self_approval: allow_self,
            started_by: "dave".into(),
            message: None,
            pid: 0,
            signed: None,
        }
    }

    #[test]
    fn the_prompt_asks_only_whose_answer_counts() {
        const CMD: &str = "runbook approve r1 gate --as NAME";
        /// (approvers, allow_self_approval, operator, already approved, asks, told)
        type Case<'a> = (
            Option<&'a [&'a str]>,
            bool,
            &'a str,
            &'a [&'a str],
            bool,
            &'a str,
        );
        let cases: &[Case<'_>] = &[
            (Some(&["alice", "bob"]), false, "alice", &[], true, ""),
            (
                Some(&["alice", "bob"]),
                false,
                "dave",
                &[],
                false,
                "not an approver",
            ),
            (
                Some(&["dave", "bob"]),
                false,
                "dave",
                &[],
                false,
                "started this run",
            ),
            (Some(&["dave", "bob"]), true, "dave", &[], true, ""),
            (None, false, "dave", &[], false, "started this run"),
            (None, false, "zed", &[], true, ""),
            (
                Some(&["alice"]),
                false,
                "alice",
                &["alice"],
                false,
                "alice has approved",
            ),
        ];
        for (approvers, allow, op, approved, asks, told) in cases {
            let approved: Vec<String> = approved.iter().map(ToString::to_string).collect();
            let got = offer(&rules(*approvers, *allow), op, &approved, CMD);
            match got {
                Offer::Ask => assert!(asks, "{approvers:?} {op}: asked"),
                Offer::Tell(text) => {
                    assert!(!asks, "{approvers:?} {op}: not asked: {text}");
                    assert!(text.contains(told), "{approvers:?} {op}: {text}");
                    if told != &"alice has approved" {
                        assert!(text.contains(CMD), "{text}");
                    }
                }
            }
        }
    }
}
