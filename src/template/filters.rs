//! Our own filters (`quote`, `safe`) and the questions `validate` asks about
//! filters and tests (which a template applies, whether the environment
//! knows one).
//!
//! Apart from the environment because they are about names, not rendering:
//! minijinja looks filters up only when it renders, so an unknown one would
//! otherwise pass until a run reached it.

use std::sync::OnceLock;

use minijinja::value::Value;
use minijinja::ErrorKind;

use super::environment;

/// Shell-quotes a value. In a shell script every value is already data, so
/// there it is the value itself (one word, exactly as given).
pub(super) fn quote_filter(v: Value) -> Value {
    if crate::shell_values::collecting() {
        return v;
    }
    Value::from_safe_string(match v.as_str() {
        Some(s) => shell_quote(s),
        None => shell_quote(&v.to_string()),
    })
}

/// `| safe`: in a shell script, the one way to write a value as code.
pub(super) fn safe_filter(v: &Value) -> Value {
    let text = match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    };
    if crate::shell_values::collecting() {
        Value::from_object(crate::shell_values::Code(text))
    } else {
        Value::from_safe_string(text)
    }
}

/// POSIX shell single-quoting: the result is always one word, never code.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_' | b'.' | b'/' | b':' | b'=' | b',' | b'@' | b'+' | b'%'
                )
        })
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The filters and tests a template (or expression) applies, by name:
/// `(name, is_test)`. minijinja looks them up only when it renders, so an
/// unknown one passes compilation; this lets `validate` name it.
pub fn filters_and_tests(source: &str, expression: bool) -> Vec<(String, bool)> {
    use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
    use minijinja::syntax::SyntaxConfig;
    let tokens: Vec<Token<'_>> = tokenize(
        source,
        expression,
        SyntaxConfig,
        WhitespaceConfig::default(),
    )
    .map_while(Result::ok)
    .map(|(t, _)| t)
    .collect();
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let next = |k: usize| match tokens.get(i + k) {
            Some(Token::Ident(n)) => Some(*n),
            _ => None,
        };
        match t {
            Token::Pipe => found.extend(next(1).map(|n| (n.to_string(), false))),
            Token::Ident("filter")
                if matches!(tokens.get(i.wrapping_sub(1)), Some(Token::BlockStart)) =>
            {
                found.extend(next(1).map(|n| (n.to_string(), false)));
            }
            Token::Ident("is") => {
                let name = match next(1) {
                    Some("not") => next(2),
                    other => other,
                };
                found.extend(name.map(|n| (n.to_string(), true)));
            }
            _ => {}
        }
    }
    found
}

/// Whether the environment knows a filter (`is_test`: a test) of this name.
pub fn knows(name: &str, is_test: bool) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: OnceLock<Mutex<HashMap<(String, bool), bool>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let key = (name.to_string(), is_test);
    if let Some(&k) = seen.lock().ok().as_ref().and_then(|m| m.get(&key)) {
        return k;
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return false;
    }
    // Asking the environment is the only public lookup: an unknown name
    // fails with its own error kind, whatever the arguments.
    let probe = if is_test {
        format!("{{{{ none is {name} }}}}")
    } else {
        format!("{{{{ none | {name} }}}}")
    };
    let unknown = ErrorKind::UnknownFilter;
    let known = match environment().render_str(&probe, ()) {
        Ok(_) => true,
        Err(e) => !(e.kind() == unknown || e.kind() == ErrorKind::UnknownTest),
    };
    if let Ok(mut m) = seen.lock() {
        m.insert(key, known);
    }
    known
}
