//! Load-time limits, checked on tokens before minijinja parses a template.
//!
//! Apart from rendering because they must run first: minijinja's parser
//! recurses on the expression tree, so a template over a limit never reaches
//! it. The budgets themselves live in [`super::budget`].

use minijinja::{Error, ErrorKind};

use super::{budget, has_stray_variable_end, is_template};

/// A template that breaks a load-time limit: too large, nested or chained too
/// deep, or loading another template. Found by scanning tokens, before
/// minijinja parses (its parser and compiler recurse on the expression tree,
/// so a long enough chain would overflow the stack there).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitError {
    /// `include`, `import`, `extends` or `from`: the template loads another one.
    pub loads_template: bool,
    pub message: String,
    /// 1-based line and column inside the template, when known.
    pub at: Option<(usize, usize)>,
}

impl LimitError {
    /// The message with where in the template, e.g. `... (line 1, column 9 of the template)`.
    pub fn describe(&self) -> String {
        match self.at {
            Some((l, c)) => format!("{} (line {l}, column {c} of the template)", self.message),
            None => self.message.clone(),
        }
    }

    pub(super) fn into_error(self) -> Error {
        Error::new(ErrorKind::SyntaxError, self.describe())
    }
}

/// Checks a template (or, with `expression`, a bare expression) against the
/// load-time budgets in [`budget`] and refuses `include`/`import`/`extends`.
pub fn check_limits(source: &str, expression: bool) -> Result<(), LimitError> {
    use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
    use minijinja::syntax::SyntaxConfig;
    if source.len() > budget::MAX_SOURCE_BYTES {
        return Err(LimitError {
            loads_template: false,
            message: format!(
                "template is {} bytes, over the limit of {} bytes",
                source.len(),
                budget::MAX_SOURCE_BYTES
            ),
            at: None,
        });
    }
    if !expression && !is_template(source) {
        return Ok(());
    }
    if expression && has_stray_variable_end(source) {
        // minijinja's lexer panics on it; compiling reports the syntax error.
        return Ok(());
    }
    let (mut depth, mut chain) = (0usize, 0usize);
    let mut after_block_start = false;
    let tokens = tokenize(
        source,
        expression,
        SyntaxConfig,
        WhitespaceConfig::default(),
    );
    for (token, span) in tokens.map_while(Result::ok) {
        let at = Some((span.start_line as usize, span.start_col as usize + 1));
        let block_start = matches!(token, Token::BlockStart);
        match token {
            Token::VariableStart | Token::BlockStart | Token::VariableEnd | Token::BlockEnd => {
                (depth, chain) = (0, 0);
            }
            Token::Ident(name @ ("include" | "import" | "extends" | "from"))
                if after_block_start =>
            {
                return Err(LimitError {
                    loads_template: true,
                    message: format!(
                        "`{{% {name} %}}` loads another template, and a runbook has none to load"
                    ),
                    at,
                });
            }
            Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => {
                depth += 1;
                chain += 1;
                if depth > budget::MAX_NESTING {
                    return Err(LimitError {
                        loads_template: false,
                        message: format!(
                            "expression nests brackets more than {} deep",
                            budget::MAX_NESTING
                        ),
                        at,
                    });
                }
            }
            Token::ParenClose | Token::BracketClose | Token::BraceClose => {
                depth = depth.saturating_sub(1);
            }
            Token::Pipe
            | Token::Dot
            | Token::Tilde
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::FloorDiv
            | Token::Pow
            | Token::Mod
            | Token::Eq
            | Token::Ne
            | Token::Gt
            | Token::Gte
            | Token::Lt
            | Token::Lte
            | Token::Ident("and" | "or" | "not" | "is" | "in" | "if" | "else") => chain += 1,
            _ => {}
        }
        if chain > budget::MAX_CHAIN {
            return Err(LimitError {
                loads_template: false,
                message: format!(
                    "expression chains more than {} operators, filters or lookups",
                    budget::MAX_CHAIN
                ),
                at,
            });
        }
        after_block_start = block_start;
    }
    Ok(())
}

/// The source with every slice `x[a:b:c]` written as an item lookup
/// `x[a~b~c]` (an empty bound as `0`), or `None` when it has no slice.
///
/// Only for finding what a template reads: minijinja's
/// `undeclared_variables` does not look inside the sliced expression, so
/// `secrets.tok[0:6]` or `steps.b.stdout[1:]` would read nothing; an item
/// lookup it does follow, with the bounds' own reads kept.
pub(super) fn slices_as_items(source: &str, expression: bool) -> Option<String> {
    use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
    use minijinja::syntax::SyntaxConfig;
    if !source.contains(':') {
        return None;
    }
    // (byte offset, text to put there instead of the `:`), in order.
    let mut edits: Vec<(usize, &str)> = Vec::new();
    // What each open bracket is: `true` for `[`.
    let mut open: Vec<bool> = Vec::new();
    let tokens = tokenize(
        source,
        expression,
        SyntaxConfig,
        WhitespaceConfig::default(),
    );
    let tokens: Vec<_> = tokens.map_while(Result::ok).collect();
    for (i, (token, span)) in tokens.iter().enumerate() {
        match token {
            Token::BracketOpen => open.push(true),
            Token::ParenOpen | Token::BraceOpen => open.push(false),
            Token::BracketClose | Token::ParenClose | Token::BraceClose => {
                open.pop();
            }
            Token::VariableStart | Token::BlockStart => open.clear(),
            Token::Colon if open.last() == Some(&true) => {
                let before_empty = i
                    .checked_sub(1)
                    .and_then(|j| tokens.get(j))
                    .is_some_and(|(t, _)| matches!(t, Token::BracketOpen | Token::Colon));
                let after_empty =
                    matches!(tokens.get(i + 1).map(|(t, _)| t), Some(Token::BracketClose));
                let text = match (before_empty, after_empty) {
                    (true, true) => "0~0",
                    (true, false) => "0~",
                    (false, true) => "~0",
                    (false, false) => "~",
                };
                edits.push((span.start_offset as usize, text));
            }
            _ => {}
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(source.len() + edits.len() * 2);
    let mut at = 0;
    for (offset, text) in edits {
        out.push_str(source.get(at..offset)?);
        out.push_str(text);
        at = offset + 1;
    }
    out.push_str(source.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::slices_as_items;

    #[test]
    fn slices_become_item_lookups_for_reads() {
        let cases = [
            ("{{ a[1:2] }}", Some("{{ a[1~2] }}")),
            ("{{ a[:2] }}", Some("{{ a[0~2] }}")),
            ("{{ a[1:] }}", Some("{{ a[1~0] }}")),
            ("{{ a[::2] }}", Some("{{ a[0~0~2] }}")),
            ("{{ a[b.c:] }}", Some("{{ a[b.c~0] }}")),
            // Map and string colons are not slices.
            ("{{ [{'k': 1}] }} {{ 'x:y' }}", None),
            ("{{ a }}", None),
        ];
        for (source, want) in cases {
            assert_eq!(slices_as_items(source, false).as_deref(), want, "{source}");
        }
        assert_eq!(slices_as_items("x[1:]", true).as_deref(), Some("x[1~0]"));
    }
}
