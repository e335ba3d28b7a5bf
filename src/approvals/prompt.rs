//! The terminal prompt: the operator answers a waiting approval with `y` or
//! `n`. Apart because stdin is process-wide: one reader thread serves every
//! prompt, whichever step asks.

use std::io::BufRead;
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
}
