//! The lexer of a rendered script: it walks the shell's contexts (commands,
//! quotes, comments, heredocs, arithmetic, `[[ ]]`) far enough to know what
//! each placeholder sits in, and writes the reference that context reads
//! as one plain string, or refuses the value.
//!
//! Apart from the rendering so all that knows shell syntax is in one file,
//! the one to read (and fuzz) when a context is missed.

use minijinja::{Error, ErrorKind};

use super::{Script, CLOSE, OPEN, VAR_PREFIX};

/// What a context makes of a value besides reading it.
enum Need {
    /// A plain string: written as a reference.
    Data,
    /// Evaluated as arithmetic: only a whole number is safe.
    Integer(&'static str),
    /// Read as a variable's name: only a plain name is safe.
    Name(&'static str),
}

/// Where the lexer is.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// Commands: the top level, `$( )`, `( )`, backticks, `${ }`.
    Cmd {
        close: Close,
        depth: usize,
    },
    DQuote,
    SQuote,
    AnsiC,
    Comment,
    /// `$(( ))` or `(( ))`.
    Arith {
        depth: usize,
    },
    /// `[[ ]]`.
    Test,
    Heredoc(Heredoc),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Close {
    Top,
    Paren,
    Backtick,
    Brace,
}

#[derive(Debug, Clone, PartialEq)]
struct Heredoc {
    delim: String,
    quoted: bool,
    strip_tabs: bool,
}

pub(super) struct Lexer<'a> {
    src: Vec<char>,
    pos: usize,
    nonce: &'a str,
    values: &'a [String],
    stack: Vec<Frame>,
    /// Where in `text` each open `${` began.
    braces: Vec<usize>,
    /// Heredocs whose bodies start after the current line.
    pending: Vec<Heredoc>,
    text: String,
    display: String,
    used: Vec<(String, String)>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn is_integer(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `"…"`-safe text for display: what a reader sees inside double quotes.
fn dq_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        if matches!(ch, '"' | '$' | '`' | '\\') {
            s.push('\\');
        }
        s.push(ch);
    }
    s
}

impl<'a> Lexer<'a> {
    pub(super) fn new(rendered: &str, nonce: &'a str, values: &'a [String]) -> Lexer<'a> {
        Lexer {
            src: rendered.chars().collect(),
            pos: 0,
            nonce,
            values,
            stack: vec![Frame::Cmd {
                close: Close::Top,
                depth: 0,
            }],
            braces: Vec::new(),
            pending: Vec::new(),
            text: String::with_capacity(rendered.len()),
            display: String::with_capacity(rendered.len()),
            used: Vec::new(),
        }
    }

    fn peek(&self, k: usize) -> Option<char> {
        self.src.get(self.pos + k).copied()
    }

    fn starts(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(k, c)| self.peek(k) == Some(c))
    }

    fn emit(&mut self, s: &str) {
        self.text.push_str(s);
        self.display.push_str(s);
    }

    fn take(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(c) = self.peek(0) {
                self.text.push(c);
                self.display.push(c);
                self.pos += 1;
            }
        }
    }

    /// A backslash and what it escapes, unless that is a placeholder.
    fn escape(&mut self) {
        if self.peek(1) == Some(OPEN) {
            self.take(1);
        } else {
            self.take(2);
        }
    }

    fn top(&self) -> &Frame {
        // The stack never empties: the top-level frame is never popped.
        self.stack.last().unwrap_or(&Frame::Cmd {
            close: Close::Top,
            depth: 0,
        })
    }

    /// Whether the last character written starts a word here (so `#` is a comment, `[[` a test).
    fn at_word_start(&self) -> bool {
        match self.text.chars().last() {
            None => true,
            Some(c) => c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '{' | '}'),
        }
    }

    /// The placeholder at `pos`, if any: its value's index.
    fn placeholder_at(&self) -> Option<(usize, usize)> {
        if self.peek(0) != Some(OPEN) {
            return None;
        }
        let rest: String = self.src[self.pos + 1..]
            .iter()
            .take(self.nonce.len() + 24)
            .collect();
        let body = rest.strip_prefix(self.nonce)?.strip_prefix('.')?;
        let end = body.find(CLOSE)?;
        let n: usize = body[..end].parse().ok()?;
        let len = 1 + self.nonce.len() + 1 + end + 1;
        Some((n.checked_sub(1)?, len))
    }

    fn value(&self, i: usize) -> Result<&'a str, Error> {
        let v = self
            .values
            .get(i)
            .ok_or_else(|| err("a template value was lost while rendering"))?;
        if v.contains('\0') {
            return Err(err(
                "a template value holds a NUL byte, which no shell can receive",
            ));
        }
        Ok(v)
    }

    fn reference(&mut self, i: usize) -> Result<String, Error> {
        let value = self.value(i)?.to_string();
        let name = format!("{VAR_PREFIX}{}", i + 1);
        if !self.used.iter().any(|(n, _)| n == &name) {
            self.used.push((name.clone(), value));
        }
        Ok(name)
    }

    /// What the shell will do with a value here, beyond reading it.
    fn need(&self) -> Need {
        let frame = self.top().clone();
        match frame {
            Frame::Arith { .. } => return Need::Integer("arithmetic"),
            Frame::Heredoc(_) | Frame::Comment => return Need::Data,
            Frame::Cmd {
                close: Close::Brace,
                ..
            } => return self.brace_need(),
            Frame::Test => {
                if self.arith_operand() {
                    return Need::Integer("an arithmetic comparison");
                }
                if matches!(self.word_before(), "-v" | "-R") {
                    return Need::Name("`[[ -v ]]`");
                }
            }
            _ => {}
        }
        if self.in_subscript() {
            return Need::Integer("an array subscript");
        }
        self.command_need()
    }

    /// Inside `${…}`: a name, a subscript or an offset are read as code.
    fn brace_need(&self) -> Need {
        let start = self.braces.last().copied().unwrap_or(self.text.len());
        let t = &self.text[start.min(self.text.len())..];
        if t.starts_with('!') {
            return Need::Name("an indirect reference `${!…}`");
        }
        let t = t.strip_prefix('#').unwrap_or(t);
        let name_len = t
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(t.len(), |(k, _)| k);
        let name_len = if name_len == 0 && t.starts_with(['@', '*', '?', '$', '-']) {
            1
        } else {
            name_len
        };
        let rest = &t[name_len..];
        if rest.is_empty() {
            return Need::Name("a parameter name `${…}`");
        }
        if rest.starts_with('[') && !rest.contains(']') {
            return Need::Integer("an array subscript");
        }
        if let Some(a) = rest.strip_prefix(':') {
            if !a.starts_with(['-', '=', '+', '?']) {
                return Need::Integer("a substring offset `${x:…}`");
            }
        }
        Need::Data
    }

    /// Commands that read a word as arithmetic or as a variable's name.
    fn command_need(&self) -> Need {
        let words = self.command_words();
        let mut it = words
            .iter()
            .map(String::as_str)
            .skip_while(|w| w.contains('=') && !w.starts_with('-'));
        let Some(first) = it.next() else {
            return Need::Data;
        };
        let args: Vec<&str> = it.collect();
        let before = self.word_before();
        match first {
            "let" => Need::Integer("`let`"),
            "declare" | "typeset" | "local" | "export" | "readonly" => {
                let flags: String = args
                    .iter()
                    .filter(|a| a.starts_with('-'))
                    .flat_map(|a| a.chars())
                    .collect();
                if flags.contains('n') {
                    Need::Name("a `declare -n` reference")
                } else if flags.contains('i') {
                    Need::Integer("`declare -i`")
                } else {
                    Need::Data
                }
            }
            "printf" | "test" | "[" if before == "-v" || before == "-R" => {
                Need::Name("a variable name (`-v`)")
            }
            "unset" => Need::Name("`unset`"),
            "read" | "mapfile" | "readarray"
                if !matches!(
                    before,
                    "-p" | "-d" | "-n" | "-N" | "-t" | "-u" | "-i" | "-C" | "-c" | "-s" | "-O"
                ) =>
            {
                Need::Name("a variable name")
            }
            _ => Need::Data,
        }
    }

    /// The words of the simple command being written (quotes removed).
    fn command_words(&self) -> Vec<String> {
        let start = self
            .text
            .rfind(['\n', ';', '&', '|', '(', '`', '{', '}'])
            .map_or(0, |k| k + 1);
        self.text[start..]
            .split_whitespace()
            .map(|w| w.replace(['"', '\''], ""))
            .collect()
    }

    /// The whole word before the one being written.
    fn word_before(&self) -> &str {
        let t = self.text.trim_end_matches(|c: char| !c.is_whitespace());
        t.split_whitespace().last().unwrap_or_default()
    }

    /// Writes the reference (and the display form) for value `i` in the current context.
    fn substitute(&mut self, i: usize) -> Result<(), Error> {
        let value = self.value(i)?;
        match self.need() {
            Need::Integer(what) => return self.integer(value, what),
            Need::Name(what) => return self.name(value, what),
            Need::Data => {}
        }
        match self.top().clone() {
            Frame::Cmd { .. } | Frame::Test => {
                let name = self.reference(i)?;
                self.text.push_str(&format!("\"${{{name}}}\""));
                self.display.push_str(&crate::template::shell_quote(value));
            }
            Frame::DQuote | Frame::Comment => {
                let name = self.reference(i)?;
                self.text.push_str(&format!("${{{name}}}"));
                if self.top() == &Frame::Comment {
                    self.display.push_str(&value.replace('\n', "\\n"));
                } else {
                    self.display.push_str(&dq_escape(value));
                }
            }
            Frame::SQuote => {
                let name = self.reference(i)?;
                self.text.push_str(&format!("'\"${{{name}}}\"'"));
                self.display.push_str(&value.replace('\'', "'\\''"));
            }
            Frame::AnsiC => {
                let name = self.reference(i)?;
                self.text.push_str(&format!("'\"${{{name}}}\"$'"));
                self.display
                    .push_str(&format!("'{}$'", crate::template::shell_quote(value)));
            }
            Frame::Arith { .. } => self.integer(value, "arithmetic")?,
            Frame::Heredoc(h) if !h.quoted => {
                let name = self.reference(i)?;
                self.text.push_str(&format!("${{{name}}}"));
                self.display.push_str(value);
            }
            Frame::Heredoc(_) => {
                // A quoted heredoc expands nothing: the value goes in as is;
                // the line it lands on is checked when the line ends.
                self.emit(value);
            }
        }
        Ok(())
    }

    /// A whole number, written in decimal (so `010` is ten, not octal eight).
    fn integer(&mut self, value: &str, what: &str) -> Result<(), Error> {
        let parsed = is_integer(value.trim())
            .then(|| value.trim().parse::<i64>().ok())
            .flatten();
        let Some(n) = parsed else {
            return Err(err(format!(
                "a template value in {what} must be a whole number (the shell would evaluate anything else as an expression), not {}",
                crate::template::shell_quote(value)
            )));
        };
        self.emit(&n.to_string());
        Ok(())
    }

    /// A plain variable name (no subscript: bash would evaluate one).
    fn name(&mut self, value: &str, what: &str) -> Result<(), Error> {
        let ok = value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(err(format!(
                "a template value used as {what} must be a plain variable name (the shell would evaluate anything else), not {}",
                crate::template::shell_quote(value)
            )));
        }
        self.emit(value);
        Ok(())
    }

    /// Whether the current word is `NAME[...` with the `[` still open.
    fn in_subscript(&self) -> bool {
        let word: String = self
            .text
            .chars()
            .rev()
            .take_while(|c| !c.is_whitespace() && !matches!(c, ';' | '&' | '|' | '(' | ')'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let Some(open) = word.find('[') else {
            return false;
        };
        // `a=([key]=v)`: a compound assignment's subscript.
        if open == 0 && !word.starts_with("[[") {
            return !word.contains(']');
        }
        let name = &word[..open];
        let name = name.strip_prefix("${").unwrap_or(name);
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !word[open..].contains(']')
    }

    /// In `[[ ]]`: whether the word before or after this one is `-eq` and the like.
    fn arith_operand(&self) -> bool {
        const OPS: [&str; 6] = ["-eq", "-ne", "-lt", "-le", "-gt", "-ge"];
        let before = self.text.split_whitespace().last().unwrap_or_default();
        let mut after = String::new();
        let mut k = self.placeholder_at().map_or(0, |(_, len)| len);
        while self.peek(k).is_some_and(char::is_whitespace) {
            k += 1;
        }
        while let Some(c) = self.peek(k).filter(|c| !c.is_whitespace()) {
            after.push(c);
            k += 1;
        }
        OPS.contains(&before) || OPS.contains(&after.as_str())
    }

    pub(super) fn run(mut self) -> Result<Script, Error> {
        while self.pos < self.src.len() {
            if let Frame::Heredoc(h) = self.top().clone() {
                // A body is read a line at a time, values included.
                self.heredoc_line(&h)?;
                continue;
            }
            if let Some((i, len)) = self.placeholder_at() {
                self.pos += len;
                self.substitute(i)?;
                continue;
            }
            if self.peek(0) == Some(OPEN) {
                return Err(err(
                    "a filter changed a template value's placeholder (e.g. `| reverse` of a macro's output); render the value on its own",
                ));
            }
            match self.top().clone() {
                Frame::Cmd { close, depth } => self.command(close, depth)?,
                Frame::DQuote => self.double_quoted(),
                Frame::SQuote => {
                    if self.peek(0) == Some('\'') {
                        self.stack.pop();
                    }
                    self.take(1);
                }
                Frame::AnsiC => match self.peek(0) {
                    Some('\\') => self.escape(),
                    Some('\'') => {
                        self.stack.pop();
                        self.take(1);
                    }
                    _ => self.take(1),
                },
                Frame::Comment => {
                    if self.peek(0) == Some('\n') {
                        self.stack.pop();
                        self.newline()?;
                    } else {
                        self.take(1);
                    }
                }
                Frame::Arith { depth } => self.arith(depth),
                Frame::Test => {
                    if self.starts("]]") {
                        self.stack.pop();
                        self.take(2);
                    } else {
                        self.quotes_or_take()?;
                    }
                }
                Frame::Heredoc(_) => {}
            }
        }
        if let Some(h) = self.pending.first() {
            return Err(err(format!("the heredoc `{}` is never ended", h.delim)));
        }
        Ok(Script {
            text: self.text,
            values: self.used,
            display: self.display,
        })
    }

    /// Quotes and expansions, shared by command-like contexts.
    fn quotes_or_take(&mut self) -> Result<(), Error> {
        match self.peek(0) {
            Some('\\') => self.escape(),
            Some('\'') => {
                self.stack.push(Frame::SQuote);
                self.take(1);
            }
            Some('"') => {
                self.stack.push(Frame::DQuote);
                self.take(1);
            }
            Some('$') if self.peek(1) == Some('\'') => {
                self.stack.push(Frame::AnsiC);
                self.take(2);
            }
            Some('$') => self.dollar(),
            Some('`') => {
                self.stack.push(Frame::Cmd {
                    close: Close::Backtick,
                    depth: 0,
                });
                self.take(1);
            }
            Some('\n') => self.newline()?,
            _ => self.take(1),
        }
        Ok(())
    }

    /// `$(( `, `$( `, `${ `, or a plain `$`.
    fn dollar(&mut self) {
        if self.starts("$((") {
            self.stack.push(Frame::Arith { depth: 0 });
            self.take(3);
        } else if self.starts("$(") {
            self.stack.push(Frame::Cmd {
                close: Close::Paren,
                depth: 0,
            });
            self.take(2);
        } else if self.starts("${") {
            self.stack.push(Frame::Cmd {
                close: Close::Brace,
                depth: 0,
            });
            self.take(2);
            self.braces.push(self.text.len());
        } else if self.starts("$[") {
            // The old form of `$(( ))`.
            self.stack.push(Frame::Arith { depth: 0 });
            self.take(2);
        } else {
            self.take(1);
        }
    }

    fn set_depth(&mut self, new: usize) {
        if let Some(Frame::Cmd { depth, .. } | Frame::Arith { depth }) = self.stack.last_mut() {
            *depth = new;
        }
    }

    fn command(&mut self, close: Close, depth: usize) -> Result<(), Error> {
        let c = self.peek(0);
        match c {
            Some('#') if close != Close::Brace && self.at_word_start() => {
                self.stack.push(Frame::Comment);
                self.take(1);
            }
            Some('(') if self.starts("((") && self.at_word_start() && close != Close::Brace => {
                self.stack.push(Frame::Arith { depth: 0 });
                self.take(2);
            }
            // Inside `${…}` bash reads a word: no `[[`, no redirections.
            Some('[') if self.starts("[[") && self.at_word_start() && close != Close::Brace => {
                self.stack.push(Frame::Test);
                self.take(2);
            }
            Some('(') => {
                self.set_depth(depth + 1);
                self.take(1);
            }
            Some(')') if close == Close::Paren && depth == 0 => {
                self.stack.pop();
                self.take(1);
            }
            Some(')') => {
                self.set_depth(depth.saturating_sub(1));
                self.take(1);
            }
            Some('`') if close == Close::Backtick => {
                self.stack.pop();
                self.take(1);
            }
            Some('{') if close == Close::Brace => {
                self.set_depth(depth + 1);
                self.take(1);
            }
            Some('}') if close == Close::Brace => {
                if depth == 0 {
                    self.stack.pop();
                    self.braces.pop();
                } else {
                    self.set_depth(depth - 1);
                }
                self.take(1);
            }
            // A here-string: a word follows, not a heredoc.
            Some('<') if self.starts("<<<") => self.take(3),
            Some('<') if self.starts("<<") && close != Close::Brace => self.heredoc_start()?,
            _ => self.quotes_or_take()?,
        }
        Ok(())
    }

    fn double_quoted(&mut self) {
        match self.peek(0) {
            Some('\\') => self.escape(),
            Some('"') => {
                self.stack.pop();
                self.take(1);
            }
            Some('$') => self.dollar(),
            Some('`') => {
                self.stack.push(Frame::Cmd {
                    close: Close::Backtick,
                    depth: 0,
                });
                self.take(1);
            }
            _ => self.take(1),
        }
    }

    fn arith(&mut self, depth: usize) {
        match self.peek(0) {
            Some(']') if depth == 0 && self.in_old_arith() => {
                self.stack.pop();
                self.take(1);
            }
            Some('(') => {
                self.set_depth(depth + 1);
                self.take(1);
            }
            Some(')') if depth == 0 && self.peek(1) == Some(')') => {
                self.stack.pop();
                self.take(2);
            }
            Some(')') => {
                self.set_depth(depth.saturating_sub(1));
                self.take(1);
            }
            Some('$') => self.dollar(),
            _ => self.take(1),
        }
    }

    /// Whether the innermost arithmetic was opened by `$[`.
    fn in_old_arith(&self) -> bool {
        match (self.text.rfind("$[("), self.text.rfind("$[")) {
            (_, None) => false,
            (p, Some(o)) => p.is_none_or(|p| o > p) && self.text.rfind("$((").is_none_or(|p| o > p),
        }
    }

    /// `<<WORD`, `<<-WORD`, `<<'WORD'`, `<<"WORD"`, `<<\WORD`: the body starts on the next line.
    fn heredoc_start(&mut self) -> Result<(), Error> {
        self.take(2);
        let strip_tabs = self.peek(0) == Some('-');
        if strip_tabs {
            self.take(1);
        }
        while matches!(self.peek(0), Some(' ' | '\t')) {
            self.take(1);
        }
        let mut delim = String::new();
        let mut quoted = false;
        loop {
            if self.placeholder_at().is_some() {
                return Err(err("a template value cannot be a heredoc's delimiter"));
            }
            match self.peek(0) {
                Some(q @ ('\'' | '"')) => {
                    quoted = true;
                    self.take(1);
                    while let Some(c) = self.peek(0).filter(|&c| c != q) {
                        if self.placeholder_at().is_some() {
                            return Err(err("a template value cannot be a heredoc's delimiter"));
                        }
                        delim.push(c);
                        self.take(1);
                    }
                    self.take(1);
                }
                Some('\\') => {
                    quoted = true;
                    self.take(1);
                }
                // `$'EOF'` and `$"EOF"` quote the delimiter too.
                Some('$') if matches!(self.peek(1), Some('\'' | '"')) => self.take(1),
                Some(c)
                    if !c.is_whitespace()
                        && !matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')') =>
                {
                    delim.push(c);
                    self.take(1);
                }
                _ => break,
            }
        }
        if !delim.is_empty() {
            self.pending.push(Heredoc {
                delim,
                quoted,
                strip_tabs,
            });
        }
        Ok(())
    }

    /// A newline in a command context: pending heredoc bodies start here.
    fn newline(&mut self) -> Result<(), Error> {
        self.take(1);
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            // Bodies follow one another; the first is read first.
            for h in pending.into_iter().rev() {
                self.stack.push(Frame::Heredoc(h));
            }
        }
        Ok(())
    }

    /// One line of a heredoc body (up to and including its newline).
    fn heredoc_line(&mut self, h: &Heredoc) -> Result<(), Error> {
        let line_start = self.text.len();
        let mut had_value = false;
        loop {
            match self.peek(0) {
                None => break,
                Some('\n') => break,
                _ => {}
            }
            if let Some((i, len)) = self.placeholder_at() {
                self.pos += len;
                had_value = true;
                self.substitute(i)?;
                continue;
            }
            if !h.quoted {
                match self.peek(0) {
                    Some('\\') => {
                        self.escape();
                        continue;
                    }
                    Some('$') if self.starts("$(") || self.starts("${") => {
                        // An expansion inside the body: lex it as a command.
                        let before = self.stack.len();
                        self.dollar();
                        while self.stack.len() > before && self.pos < self.src.len() {
                            if let Some((i, len)) = self.placeholder_at() {
                                self.pos += len;
                                had_value = true;
                                self.substitute(i)?;
                                continue;
                            }
                            match self.top().clone() {
                                Frame::Cmd { close, depth } => self.command(close, depth)?,
                                Frame::DQuote => self.double_quoted(),
                                Frame::Arith { depth } => self.arith(depth),
                                Frame::SQuote => {
                                    if self.peek(0) == Some('\'') {
                                        self.stack.pop();
                                    }
                                    self.take(1);
                                }
                                _ => self.take(1),
                            }
                        }
                        continue;
                    }
                    Some('`') => {
                        self.take(1);
                        while let Some(c) = self.peek(0).filter(|&c| c != '`') {
                            if let Some((i, len)) = self.placeholder_at() {
                                self.pos += len;
                                had_value = true;
                                let name = self.reference(i)?;
                                let value = self.value(i)?;
                                self.text.push_str(&format!("\"${{{name}}}\""));
                                self.display.push_str(&crate::template::shell_quote(value));
                                continue;
                            }
                            let _ = c;
                            self.take(1);
                        }
                        self.take(1);
                        continue;
                    }
                    _ => {}
                }
            }
            self.take(1);
        }
        let line = &self.text[line_start..];
        let ends = |l: &str| {
            let l = if h.strip_tabs {
                l.trim_start_matches('\t')
            } else {
                l
            };
            l == h.delim
        };
        let end_of_body = !had_value && ends(line);
        if had_value && line.split('\n').any(ends) {
            return Err(err(format!(
                "a template value would end the heredoc `{}` early",
                h.delim
            )));
        }
        if end_of_body {
            self.stack.pop();
        }
        if self.peek(0) == Some('\n') {
            self.take(1);
        }
        Ok(())
    }
}
