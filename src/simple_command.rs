//! Which shell scripts are one simple command that needs no shell: make's
//! rule, adapted to bash. `true`, `sleep 0.01`, `/usr/bin/rsync -a src dst`
//! are run without starting bash first (a process and ~0.5 ms a step);
//! anything a shell would interpret goes to the interpreter as written.
//!
//! A script qualifies only when every character is one a shell takes
//! literally inside a word (letters, digits, `-_./:,+@%` and non-ASCII) or
//! a blank between words, on one line, and its first word is not a shell
//! builtin or keyword (a builtin can behave unlike the program of the same
//! name: `echo`, `test`, `printf`). `true`, `false` and `exit [N]` are
//! decided without any process, as bash's builtins would. The decision is
//! made once, at validation, for scripts without templates and with the
//! default interpreter; an `interpreter:` set by the author always runs.
//! What the engine then does with a word list (PATH lookup, falling back to
//! the interpreter when that finds no program) is in `steps/shell.rs`.

/// A script that needs no shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimpleCommand {
    /// Run this program with these arguments (the first word is the program).
    Exec(Vec<String>),
    /// `true`, `false`, `exit N`: the status, with no process at all.
    Status(i32),
}

/// Bash's builtins and reserved words: as a first word, the shell runs them.
const SHELL_WORDS: &[&str] = &[
    ".",
    ":",
    "[",
    "[[",
    "]]",
    "{",
    "}",
    "!",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
];

/// The simple command a script is, if it is one.
pub fn parse(script: &str) -> Option<SimpleCommand> {
    let line = script.trim_end_matches(['\n', ' ', '\t']);
    if line.contains('\n') {
        return None;
    }
    let literal = |c: char| {
        c.is_ascii_alphanumeric() || "-_./:,+@%".contains(c) || (!c.is_ascii() && !c.is_control())
    };
    if !line.chars().all(|c| literal(c) || c == ' ' || c == '\t') {
        return None;
    }
    let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let (&first, rest) = words.split_first()?;
    // `%1` is a job; a word with `=` would be an assignment (already refused).
    if first.starts_with('%') {
        return None;
    }
    match (first, rest) {
        ("true", _) => return Some(SimpleCommand::Status(0)),
        ("false", _) => return Some(SimpleCommand::Status(1)),
        ("exit", []) => return Some(SimpleCommand::Status(0)),
        ("exit", [n]) => {
            // Bash takes the status modulo 256; leave anything unusual to it.
            return n
                .parse::<u8>()
                .ok()
                .filter(|_| !n.starts_with('+') && (n.len() == 1 || !n.starts_with('0')))
                .map(|n| SimpleCommand::Status(i32::from(n)));
        }
        _ => {}
    }
    if SHELL_WORDS.contains(&first) {
        return None;
    }
    Some(SimpleCommand::Exec(
        words.iter().map(ToString::to_string).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_and_what_a_shell_must_run() {
        let exec = |w: &[&str]| {
            Some(SimpleCommand::Exec(
                w.iter().map(ToString::to_string).collect(),
            ))
        };
        let cases: &[(&str, Option<SimpleCommand>)] = &[
            ("true", Some(SimpleCommand::Status(0))),
            ("true --help\n", Some(SimpleCommand::Status(0))),
            ("false", Some(SimpleCommand::Status(1))),
            ("exit", Some(SimpleCommand::Status(0))),
            ("exit 3", Some(SimpleCommand::Status(3))),
            ("exit 300", None),
            ("exit 03", None),
            ("exit x", None),
            ("exit 1 2", None),
            ("sleep 0.01", exec(&["sleep", "0.01"])),
            ("  /bin/true  a\tb \n\n", exec(&["/bin/true", "a", "b"])),
            (
                "rsync -a src/ user@host:/dst",
                exec(&["rsync", "-a", "src/", "user@host:/dst"]),
            ),
            ("dd if=/dev/zero", None),
            ("a=b cmd", None),
            ("echo hi", None),
            ("test -f x", None),
            ("cd /tmp", None),
            ("[ -f x ]", None),
            ("ls *.txt", None),
            ("ls ~", None),
            ("cmd $HOME", None),
            ("cmd 'a b'", None),
            ("cmd \"a\"", None),
            ("cmd a\\ b", None),
            ("cmd # comment", None),
            ("a; b", None),
            ("a && b", None),
            ("a | b", None),
            ("a > f", None),
            ("a &", None),
            ("a\nb", None),
            ("{a,b}", None),
            ("cmd `x`", None),
            ("cmd !x", None),
            ("%1", None),
            ("", None),
            ("   \n", None),
            ("café --ünï", exec(&["café", "--ünï"])),
        ];
        for (script, want) in cases {
            assert_eq!(&parse(script), want, "{script:?}");
        }
    }
}
