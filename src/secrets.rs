//! Secret values and the masker that keeps them out of every byte we write.
//!
//! Secrets are read once at run start (from the environment or a file) and
//! live only in the template context. Everything that leaves the engine
//! (terminal, logs, report, journal) goes through the event bus, which masks
//! with [`Masker`] before any listener sees it; child processes' output is
//! masked the same way, line by line.
//!
//! A secret can leave in another form than the one it was read in: a line
//! of a multi-line key printed on its own, percent-encoded in a URL,
//! JSON-escaped in an error, base64 in a header, shell-quoted, upper-cased by
//! a filter. The masker knows each of those forms of each value ([`forms`]),
//! and masks numbers equal to a secret too.

use serde_json::Value as Json;

use crate::runbook::{Runbook, SecretSource};

const REF_OPEN: char = '\u{E002}';
const REF_CLOSE: char = '\u{E003}';

/// Replaces every known secret value with `***`.
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        // Very short values would mask ordinary text everywhere; they are
        // still kept out of reports as values of `secrets.*`, but not matched
        // inside arbitrary text.
        let mut values: Vec<String> = values
            .into_iter()
            .flat_map(|v| forms(&v))
            .filter(|v| v.trim().chars().count() >= 3)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn mask(&self, s: &str) -> String {
        let mut out = s.to_string();
        self.mask_in_place(&mut out);
        out
    }

    pub fn mask_in_place(&self, s: &mut String) {
        if self.values.is_empty() {
            return;
        }
        replace_all(s, &self.values);
        replace_all(s, &derived());
    }

    /// Masks only values derived from secrets (what [`Masker::refs_json`]
    /// cannot reference: they are not read again on resume).
    pub fn mask_derived_json(&self, j: &mut Json) {
        mask_json_with(j, &[&derived()]);
    }

    /// Text cut short, masked: whole values, and a start of one the text
    /// ends with (the rest of it was cut off).
    pub fn mask_cut(&self, s: &str) -> String {
        let mut out = self.mask(s);
        self.mask_partial_tail(&mut out);
        out
    }

    /// After a cut: hides a start of a secret the text ends with (the rest
    /// of it was cut off, so whole-value masking cannot see it).
    pub fn mask_partial_tail(&self, s: &mut String) {
        let derived = derived();
        let longest = self
            .values
            .iter()
            .chain(derived.iter())
            .filter_map(|v| {
                (1..v.len())
                    .rev()
                    .filter(|&n| v.is_char_boundary(n))
                    .find(|&n| s.ends_with(&v[..n]))
            })
            .max();
        if let Some(n) = longest {
            s.truncate(s.len() - n);
            s.push_str("***");
        }
    }

    /// Replaces each secret form with a reference to it (`\u{E002}N\u{E003}`)
    /// instead of `***`: what the journal keeps of a flag's previous value,
    /// so a restore after a crash can put back the exact bytes
    /// ([`Masker::resolve_refs`]) without the journal holding a secret.
    pub fn refs_json(&self, j: &mut Json) {
        match j {
            Json::String(s) => {
                for (i, v) in self.values.iter().enumerate() {
                    if s.contains(v.as_str()) {
                        *s = s.replace(v.as_str(), &format!("{REF_OPEN}{i}{REF_CLOSE}"));
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|i| self.refs_json(i)),
            Json::Object(map) => map.values_mut().for_each(|v| self.refs_json(v)),
            _ => {}
        }
    }

    /// Puts the secret forms back into what [`Masker::refs_json`] wrote. The
    /// masker must be built from the same secrets (read again on resume).
    pub fn resolve_refs(&self, j: &mut Json) {
        match j {
            Json::String(s) if s.contains(REF_OPEN) => {
                let mut out = String::with_capacity(s.len());
                let mut rest = s.as_str();
                while let Some(at) = rest.find(REF_OPEN) {
                    out.push_str(&rest[..at]);
                    let after = &rest[at + REF_OPEN.len_utf8()..];
                    match after.split_once(REF_CLOSE) {
                        Some((n, tail)) => {
                            match n.parse::<usize>().ok().and_then(|i| self.values.get(i)) {
                                Some(v) => out.push_str(v),
                                None => out.push_str("***"),
                            }
                            rest = tail;
                        }
                        None => {
                            out.push_str(&rest[at..]);
                            rest = "";
                        }
                    }
                }
                out.push_str(rest);
                *s = out;
            }
            Json::Array(items) => items.iter_mut().for_each(|i| self.resolve_refs(i)),
            Json::Object(map) => map.values_mut().for_each(|v| self.resolve_refs(v)),
            _ => {}
        }
    }

    pub fn mask_json(&self, j: &mut Json) {
        if self.values.is_empty() {
            return;
        }
        mask_json_with(j, &[&self.values, &derived()]);
    }
}

/// Replaces every one of `values` in `s` with `***`, in order.
fn replace_all(s: &mut String, values: &[String]) {
    for v in values {
        if s.contains(v.as_str()) {
            *s = s.replace(v.as_str(), "***");
        }
    }
}

/// Masks every string in `j` with each list in turn, and turns a number
/// equal to a value into `***`.
fn mask_json_with(j: &mut Json, lists: &[&[String]]) {
    match j {
        Json::String(s) => lists.iter().for_each(|l| replace_all(s, l)),
        Json::Number(n) => {
            let text = n.to_string();
            if lists.iter().any(|l| l.contains(&text)) {
                *j = Json::String("***".into());
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|i| mask_json_with(i, lists)),
        Json::Object(map) => map.values_mut().for_each(|v| mask_json_with(v, lists)),
        _ => {}
    }
}

/// The values derived from secrets so far.
fn derived() -> std::sync::RwLockReadGuard<'static, Vec<String>> {
    match DERIVED.read() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    }
}

/// Values templates derived from secrets ([`crate::template`] notes them as
/// it renders), in every form, longest first. Process-wide: a process runs
/// one run, and a value noted once stays masked until it exits.
static DERIVED: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Masks `values` from now on, wherever a masker with secrets masks.
pub fn note_derived(values: impl IntoIterator<Item = String>) {
    let mut new: Vec<String> = values
        .into_iter()
        .flat_map(|v| forms(&v))
        .filter(|v| v.trim().chars().count() >= 3)
        .collect();
    if new.is_empty() {
        return;
    }
    let mut d = match DERIVED.write() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    new.retain(|v| !d.contains(v));
    if new.is_empty() {
        return;
    }
    d.extend(new);
    d.sort_by_key(|v| std::cmp::Reverse(v.len()));
    d.dedup();
}

/// Every form of a secret value the engine could write: the value, trimmed,
/// each line of it, and its encodings.
pub fn forms(v: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut out = vec![v.to_string(), v.trim().to_string()];
    if v.contains('\n') {
        out.extend(v.lines().map(|l| l.trim().to_string()));
    }
    out.push(percent_all(v));
    if let Ok(mut u) = reqwest::Url::parse("http://h/") {
        u.set_path(v);
        out.push(u.path().trim_start_matches('/').to_string());
        u.set_query(Some(v));
        out.extend(u.query().map(str::to_string));
        u.query_pairs_mut().clear().append_pair("k", v);
        out.extend(
            u.query()
                .and_then(|q| q.strip_prefix("k="))
                .map(str::to_string),
        );
        if u.set_username(v).is_ok() {
            out.push(u.username().to_string());
        }
    }
    if let Ok(json) = serde_json::to_string(v) {
        out.push(json.trim_matches('"').to_string());
    }
    out.push(base64::engine::general_purpose::STANDARD.encode(v));
    out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v));
    out.push(crate::template::shell_quote(v));
    out.push(v.to_uppercase());
    out.push(v.to_lowercase());
    out.push(v.chars().rev().collect());
    out.sort();
    out.dedup();
    out
}

/// Every byte but the unreserved ones as `%XX`.
fn percent_all(v: &str) -> String {
    let mut s = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Reads every secret of the runbook. An error names the secret, never its value.
pub fn load(rb: &Runbook, base: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for s in &rb.secrets {
        let value = match &s.source {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                format!("secret `{}`: environment variable {var} is not set", s.name)
            })?,
            SecretSource::File(path) => {
                let p = base.join(path);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    format!("secret `{}`: cannot read {}: {e}", s.name, p.display())
                })?;
                text.trim_end_matches(['\n', '\r']).to_string()
            }
        };
        out.push((s.name.clone(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_cut_in_two_is_hidden_at_the_cut() {
        let m = Masker::new(["hunter2-secret".to_string()]);
        let mut s = "token: hunter2-se".to_string();
        m.mask_partial_tail(&mut s);
        assert_eq!(s, "token: ***");
        let mut plain = "nothing to hide".to_string();
        m.mask_partial_tail(&mut plain);
        assert_eq!(plain, "nothing to hide");
    }

    #[test]
    fn masks_longest_first_and_in_json() {
        let m = Masker::new([
            "hunter2".to_string(),
            "hunter2-extended".to_string(),
            "ab".to_string(),
        ]);
        assert_eq!(m.mask("a hunter2-extended b hunter2 ab"), "a *** b *** ab");
        let mut j = serde_json::json!({"x": ["token=hunter2"]});
        m.mask_json(&mut j);
        assert_eq!(j, serde_json::json!({"x": ["token=***"]}));
    }
}
