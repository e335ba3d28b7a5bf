//! Secret values and the masker that keeps them out of every byte we write.
//!
//! Secrets are read once at run start (from the environment or a file) and
//! live only in the template context. Everything that leaves the engine
//! (terminal, logs, report, journal) goes through the event bus, which masks
//! with [`Masker`] before any listener sees it; child processes' output is
//! masked the same way, line by line.

use serde_json::Value as Json;

use crate::runbook::{Runbook, SecretSource};

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
            .filter(|v| v.trim().chars().count() >= 3)
            .collect();
        let trimmed: Vec<String> = values
            .iter()
            .map(|v| v.trim().to_string())
            .filter(|v| v.chars().count() >= 3)
            .collect();
        values.extend(trimmed);
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
        for v in &self.values {
            if s.contains(v.as_str()) {
                *s = s.replace(v.as_str(), "***");
            }
        }
    }

    pub fn mask_json(&self, j: &mut Json) {
        if self.values.is_empty() {
            return;
        }
        match j {
            Json::String(s) => self.mask_in_place(s),
            Json::Array(items) => items.iter_mut().for_each(|i| self.mask_json(i)),
            Json::Object(map) => map.values_mut().for_each(|v| self.mask_json(v)),
            _ => {}
        }
    }
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
