//! The OpenSSH allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS) and the
//! check of a signature against it.
//!
//! A subset of the format, on purpose: what would widen "who may approve"
//! beyond a list of names and keys one can read (certificate authorities,
//! wildcard or negated principals) is refused when the file is read, with
//! the line, rather than honoured or skipped.

use std::time::SystemTime;

use jiff::Timestamp;
use ssh_key::{Algorithm, PublicKey, SshSig};

use super::{fingerprint, NAMESPACE};

/// The options this reader honours, for the "unknown option" message.
const KNOWN_OPTIONS: &str = "namespaces, valid-after, valid-before";

/// The entries of an allowed-signers file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    entries: Vec<Entry>,
}

/// One line: these principals may sign with this key.
#[derive(Debug, Clone)]
struct Entry {
    /// 1-based, for messages.
    line: usize,
    principals: Vec<String>,
    /// `namespaces="..."`: patterns as OpenSSH matches them (`*`, `?`, `!`);
    /// `None` is every namespace.
    namespaces: Option<Vec<String>>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
    key: PublicKey,
}

/// The options of one line.
#[derive(Default)]
struct Options {
    namespaces: Option<Vec<String>>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
}

impl AllowedSigners {
    /// The OpenSSH allowed-signers format (ssh-keygen(1), ALLOWED SIGNERS):
    /// one entry a line, `principals [options] keytype base64 [comment]`;
    /// `#` comments and blank lines ignored; principals comma-separated
    /// (the field may be quoted).
    ///
    /// Options honoured (names case-insensitive, values quoted or not; a
    /// quoted value may hold commas and `\"`):
    /// - `namespaces="a,b"`: the entry only counts for a signature when it
    ///   lists `runbook` (the list is matched as OpenSSH does, so `*` and
    ///   `!git` patterns work as they do for `ssh-keygen -Y verify`);
    /// - `valid-after=` / `valid-before=`: `YYYYMMDD`, `YYYYMMDDHHMM` or
    ///   `YYYYMMDDHHMMSS`, with an optional trailing `Z` for UTC. **Without
    ///   `Z` the time is read as UTC too**, where ssh-keygen reads it in the
    ///   local time zone: the engine's verdict must not depend on the zone of
    ///   the machine that checks it. Write the `Z` to mean the same to both.
    ///   A key is valid from `valid-after` to `valid-before` inclusive, to
    ///   the second.
    ///
    /// Refused, with a message for the line: `cert-authority` (certificates
    /// are not supported), a certificate key type, principals with wildcards
    /// `*`/`?` or negation `!` (and empty ones), unknown or repeated
    /// options, `valid-before` not after `valid-after`, a key that does not
    /// parse, anything else that is not an entry.
    ///
    /// Err is every bad line: (1-based line number, message); the message
    /// does not repeat the number.
    pub fn parse(text: &str) -> Result<AllowedSigners, Vec<(usize, String)>> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let number = i + 1;
            let raw = if i == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok((principals, options, key)) => entries.push(Entry {
                    line: number,
                    principals,
                    namespaces: options.namespaces,
                    valid_after: options.valid_after,
                    valid_before: options.valid_before,
                    key,
                }),
                Err(message) => errors.push((number, message)),
            }
        }
        if errors.is_empty() {
            Ok(AllowedSigners { entries })
        } else {
            Err(errors)
        }
    }

    /// Whether some entry names `principal` (whatever its validity window or
    /// namespaces).
    pub fn has_principal(&self, principal: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.principals.iter().any(|p| p == principal))
    }

    /// Verifies the signature of a decision the journal holds, at the time
    /// it was journaled (`at`, RFC 3339): a key that has expired since still
    /// proves what it signed then. As [`AllowedSigners::verify`] otherwise.
    pub fn verify_journaled(
        &self,
        principal: &str,
        statement: &super::Statement<'_>,
        signature: &str,
        at: &str,
    ) -> Result<String, String> {
        let when = humantime::parse_rfc3339_weak(at).unwrap_or_else(|_| SystemTime::now());
        self.verify(principal, &statement.bytes(), signature, when)
    }

    /// Verifies an armored SSH signature (`-----BEGIN SSH SIGNATURE-----`)
    /// over `message`, namespace `runbook`, by a key allowed for `principal`
    /// at `now` (namespaces and validity window applied).
    ///
    /// Ok: the key's fingerprint (`SHA256:...`). Err: one sentence saying
    /// why.
    pub fn verify(
        &self,
        principal: &str,
        message: &[u8],
        signature: &str,
        now: SystemTime,
    ) -> Result<String, String> {
        let armored = signature.trim().replace("\r\n", "\n");
        if !armored.starts_with("-----BEGIN SSH SIGNATURE-----") {
            return Err(
                "this is not an SSH signature: expected an armored block beginning `-----BEGIN SSH SIGNATURE-----`"
                    .to_string(),
            );
        }
        let sig = SshSig::from_pem(&armored).map_err(|e| {
            format!("this is not an SSH signature: its armored block does not decode ({e})")
        })?;
        if sig.namespace() != NAMESPACE {
            return Err(format!(
                "the signature was made for namespace `{}`, not `{NAMESPACE}` (sign with `ssh-keygen -Y sign -n {NAMESPACE}`)",
                sig.namespace()
            ));
        }
        let key = PublicKey::from(sig.public_key().clone());
        let fp = fingerprint(&key);

        let named: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.principals.iter().any(|p| p == principal))
            .collect();
        if named.is_empty() {
            return Err(format!(
                "the allowed-signers file has no key for `{principal}`"
            ));
        }
        let with_key: Vec<&Entry> = named
            .into_iter()
            .filter(|e| e.key.key_data() == sig.public_key())
            .collect();
        let Some(first) = with_key.first() else {
            return Err(format!(
                "the signature was made by key {fp}, which the allowed-signers file does not allow for `{principal}`"
            ));
        };
        let in_namespace: Vec<&Entry> = with_key
            .iter()
            .copied()
            .filter(|e| {
                e.namespaces
                    .as_ref()
                    .is_none_or(|n| pattern_list_matches(NAMESPACE, n))
            })
            .collect();
        let Some(first_in_namespace) = in_namespace.first().copied() else {
            return Err(format!(
                "key {fp} is allowed for `{principal}` only for namespaces `{}` (allowed-signers line {}), not `{NAMESPACE}`",
                first
                    .namespaces
                    .as_ref()
                    .map(|n| n.join(","))
                    .unwrap_or_default(),
                first.line
            ));
        };
        let now = Timestamp::try_from(now)
            .map_err(|e| format!("the clock reads a time that cannot be compared ({e})"))?
            .as_second();
        let valid = in_namespace.iter().any(|e| {
            e.valid_after.is_none_or(|t| now >= t.as_second())
                && e.valid_before.is_none_or(|t| now <= t.as_second())
        });
        if !valid {
            // Every entry is outside its window: tell of the first.
            let e = first_in_namespace;
            return Err(match (e.valid_after, e.valid_before) {
                (Some(after), _) if now < after.as_second() => format!(
                    "key {fp} is not valid for `{principal}` yet: valid-after {after} (allowed-signers line {})",
                    e.line
                ),
                (_, Some(before)) => format!(
                    "key {fp} is no longer valid for `{principal}`: valid-before {before} (allowed-signers line {})",
                    e.line
                ),
                _ => format!(
                    "key {fp} is not valid for `{principal}` now (allowed-signers line {})",
                    e.line
                ),
            });
        }
        match key.verify(NAMESPACE, message, &sig) {
            Ok(()) => Ok(fp),
            Err(ssh_key::Error::AlgorithmUnsupported { algorithm }) => Err(format!(
                "the signature by key {fp} uses algorithm `{algorithm}`, which cannot be checked here"
            )),
            Err(_) => Err(format!(
                "the signature by key {fp} does not verify: it was made over other content (another run, step, decision, comment or plan fingerprint)"
            )),
        }
    }
}

/// `principals [options] key`: the parts of one (trimmed, non-comment) line.
fn parse_line(line: &str) -> Result<(Vec<String>, Options, PublicKey), String> {
    const SHAPE: &str = "expected `principals [options] keytype base64 [comment]`";
    let (principals_field, rest) = split_field(line)?;
    if rest.is_empty() {
        return Err(format!("no key after the principals: {SHAPE}"));
    }
    let (second, after) = split_field(rest)?;
    let (options, key_text) = if is_key_type(second) {
        (Options::default(), rest)
    } else {
        let next = after.split_whitespace().next().unwrap_or("");
        if !is_key_type(next) && !looks_like_options(second) {
            return Err(format!("not an allowed-signers entry: {SHAPE}"));
        }
        let options = parse_options(second)?;
        if after.is_empty() {
            return Err(format!("no key after the options: {SHAPE}"));
        }
        (options, after)
    };
    let principals = parse_principals(principals_field)?;
    let key = parse_key(key_text)?;
    Ok((principals, options, key))
}

/// The field up to the first whitespace outside double quotes, and the rest
/// (trimmed at its start). Inside quotes a backslash escapes the next
/// character.
fn split_field(s: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c.is_whitespace() {
            return Ok((&s[..i], s[i..].trim_start()));
        }
    }
    if quoted {
        Err("a quote is not closed".to_string())
    } else {
        Ok((s, ""))
    }
}

/// A key type this file may name (certificate types included, so they are
/// refused as such).
fn is_key_type(token: &str) -> bool {
    is_certificate_type(token)
        || matches!(token.parse::<Algorithm>(), Ok(a) if !matches!(a, Algorithm::Other(_)))
}

fn is_certificate_type(token: &str) -> bool {
    token.ends_with("-cert-v01@openssh.com")
}

/// Whether a field that is not a key type was meant as options.
fn looks_like_options(field: &str) -> bool {
    field.contains('=')
        || field.split(',').any(|o| {
            let o = o.trim().to_ascii_lowercase();
            o == "cert-authority" || o == "namespaces" || o == "valid-after" || o == "valid-before"
        })
}

fn parse_principals(field: &str) -> Result<Vec<String>, String> {
    let inner = match field.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .ok_or_else(|| format!("the principals `{field}` have an unbalanced quote"))?,
        None => field,
    };
    let mut out = Vec::new();
    for p in inner.split(',') {
        let p = p.trim();
        if p.is_empty() {
            return Err(format!("the principals `{field}` hold an empty name"));
        }
        if p.contains(['*', '?', '!']) {
            return Err(format!(
                "principal `{p}` uses a wildcard or negation (`*`, `?`, `!`), which is not supported: list each principal by name"
            ));
        }
        out.push(p.to_string());
    }
    Ok(out)
}

/// `opt[,opt...]`, each `name` or `name=value`, commas inside quoted values
/// kept.
fn parse_options(field: &str) -> Result<Options, String> {
    let mut options = Options::default();
    for option in split_options(field) {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(dequote(v)?)),
            None => (option, None),
        };
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), value) {
            ("cert-authority", _) => {
                return Err(
                    "`cert-authority`: certificates are not supported; list each signer's own public key"
                        .to_string(),
                )
            }
            ("namespaces", Some(v)) => {
                if options.namespaces.is_some() {
                    return Err("`namespaces` is given twice".to_string());
                }
                let list: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                if list.is_empty() {
                    return Err("`namespaces` is empty".to_string());
                }
                options.namespaces = Some(list);
            }
            ("valid-after", Some(v)) => {
                if options.valid_after.is_some() {
                    return Err("`valid-after` is given twice".to_string());
                }
                options.valid_after = Some(parse_time("valid-after", &v)?);
            }
            ("valid-before", Some(v)) => {
                if options.valid_before.is_some() {
                    return Err("`valid-before` is given twice".to_string());
                }
                options.valid_before = Some(parse_time("valid-before", &v)?);
            }
            ("namespaces" | "valid-after" | "valid-before", None) => {
                return Err(format!("option `{name}` needs a value (`{name}=\"...\"`)"));
            }
            _ => {
                return Err(format!(
                    "unknown option `{name}` (known: {KNOWN_OPTIONS})"
                ))
            }
        }
    }
    if let (Some(after), Some(before)) = (options.valid_after, options.valid_before) {
        if before <= after {
            return Err(format!(
                "`valid-before` ({before}) is not after `valid-after` ({after})"
            ));
        }
    }
    Ok(options)
}

/// Splits options at commas outside double quotes.
fn split_options(field: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in field.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c == ',' {
            out.push(&field[start..i]);
            start = i + 1;
        }
    }
    out.push(&field[start..]);
    out
}

/// A value, quoted (`"..."`, `\"` for a quote) or bare.
fn dequote(value: &str) -> Result<String, String> {
    let Some(inner) = value.strip_prefix('"') else {
        if value.contains('"') {
            return Err(format!("the value `{value}` has a stray quote"));
        }
        return Ok(value.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => break,
            },
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(out)
                } else {
                    Err(format!(
                        "the value `{value}` goes on after its closing quote"
                    ))
                };
            }
            c => out.push(c),
        }
    }
    Err(format!("the value `{value}` has no closing quote"))
}

/// `YYYYMMDD[HHMM[SS]][Z]`, read as UTC with or without the `Z`.
fn parse_time(option: &str, value: &str) -> Result<Timestamp, String> {
    let bad = || {
        format!(
            "`{option}={value}` is not a time: expected YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, optionally ending in Z"
        )
    };
    let digits = value
        .strip_suffix('Z')
        .or_else(|| value.strip_suffix('z'))
        .unwrap_or(value);
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i16, String> {
        match digits.get(range) {
            Some("") | None => Ok(0),
            Some(s) => s.parse::<i16>().map_err(|_| bad()),
        }
    };
    let small = |range: std::ops::Range<usize>| -> Result<i8, String> {
        i8::try_from(num(range)?).map_err(|_| bad())
    };
    let dt = jiff::civil::DateTime::new(
        num(0..4)?,
        small(4..6)?,
        small(6..8)?,
        small(8..10)?,
        small(10..12)?,
        small(12..14)?,
        0,
    )
    .map_err(|_| bad())?;
    jiff::tz::Offset::UTC.to_timestamp(dt).map_err(|_| bad())
}

/// `keytype base64 [comment]`.
fn parse_key(text: &str) -> Result<PublicKey, String> {
    let mut fields = text.split_whitespace();
    let key_type = fields.next().unwrap_or("");
    if is_certificate_type(key_type) {
        return Err(format!(
            "`{key_type}` is a certificate; certificates are not supported: list the signer's own public key"
        ));
    }
    if !is_key_type(key_type) {
        return Err(format!(
            "`{key_type}` is not a key type (such as ssh-ed25519 or ecdsa-sha2-nistp256)"
        ));
    }
    let Some(base64) = fields.next() else {
        return Err(format!("the {key_type} key has no base64 data"));
    };
    PublicKey::from_openssh(&format!("{key_type} {base64}"))
        .map_err(|e| format!("the {key_type} key does not parse ({e})"))
}

/// OpenSSH's `match_pattern_list`: whether `name` matches the comma list
/// of patterns (`*`, `?`), a matching `!pattern` refusing it outright.
fn pattern_list_matches(name: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for p in patterns {
        match p.strip_prefix('!') {
            Some(negated) => {
                if glob(negated.as_bytes(), name.as_bytes()) {
                    return false;
                }
            }
            None => matched |= glob(p.as_bytes(), name.as_bytes()),
        }
    }
    matched
}

/// `*` (any run) and `?` (one byte) glob, iterative (no backtracking blowup).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::signing::testkit::{
        keygen, keygen_fingerprint, keygen_sign, keygen_verify, pub_line,
    };
    use crate::signing::Statement;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::try_from(rfc3339.parse::<Timestamp>().unwrap()).unwrap()
    }

    fn statement(decision: &str) -> Vec<u8> {
        Statement {
            run_id: "r-1",
            step: "deploy",
            decision,
            comment: None,
            fingerprint: "sha256:plan",
        }
        .bytes()
    }

    #[test]
    fn reads_the_format() {
        let text = format!(
            "\u{feff}# team keys\n\
             \n\
             alice {KEY} alice@laptop with spaces\n\
             \"bob,carol\"\t{KEY}\r\n\
             dave,erin namespaces=\"git,runbook\",valid-after=\"20240101\",VALID-BEFORE=20300101123000Z {KEY}\n\
             frank namespaces=\"a b,c\\\"d\" {KEY}\n"
        );
        let signers = AllowedSigners::parse(&text).unwrap();
        for p in ["alice", "bob", "carol", "dave", "erin", "frank"] {
            assert!(signers.has_principal(p), "{p}");
        }
        assert!(!signers.has_principal("mallory"));
        assert!(!signers.has_principal("bob,carol"));
        let dave = &signers.entries[2];
        assert_eq!(dave.line, 5);
        assert_eq!(
            dave.namespaces.as_deref(),
            Some(&["git".to_string(), "runbook".to_string()][..])
        );
        assert_eq!(
            dave.valid_after,
            Some("2024-01-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            dave.valid_before,
            Some("2030-01-01T12:30:00Z".parse().unwrap())
        );
        assert_eq!(
            signers.entries[3].namespaces.as_deref(),
            Some(&["a b".to_string(), "c\"d".to_string()][..])
        );
        assert!(AllowedSigners::parse("").unwrap().entries.is_empty());
    }

    #[test]
    fn refuses_bad_lines_with_their_numbers() {
        let text = format!(
            "# comment\n\
             alice {KEY}\n\
             \n\
             ca cert-authority {KEY}\n\
             *@example.com {KEY}\n\
             this is not a signer\n\
             bob nosuch=\"x\" {KEY}\n\
             carol ssh-ed25519 AAAAnotbase64!!\n\
             !dave {KEY}\n\
             erin ssh-ed25519-cert-v01@openssh.com AAAA\n\
             frank valid-before=\"2020\" {KEY}\n\
             gina namespaces=\"runbook\"\n\
             hal valid-after=\"20300101\",valid-before=\"20200101\" {KEY}\n\
             ivy,,jo {KEY}\n\
             kim namespaces=\"git {KEY}\n"
        );
        let errors = AllowedSigners::parse(&text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            lines,
            [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            "{errors:#?}"
        );
        let message = |n: usize| errors.iter().find(|(l, _)| *l == n).unwrap().1.as_str();
        assert!(
            message(4).contains("certificates are not supported"),
            "{}",
            message(4)
        );
        assert!(message(5).contains("wildcard"), "{}", message(5));
        assert!(
            message(6).contains("not an allowed-signers entry"),
            "{}",
            message(6)
        );
        assert!(
            message(7).contains("unknown option `nosuch`"),
            "{}",
            message(7)
        );
        assert!(message(8).contains("does not parse"), "{}", message(8));
        assert!(message(9).contains("negation"), "{}", message(9));
        assert!(message(10).contains("certificate"), "{}", message(10));
        assert!(message(11).contains("not a time"), "{}", message(11));
        assert!(
            message(12).contains("no key after the options"),
            "{}",
            message(12)
        );
        assert!(message(13).contains("not after"), "{}", message(13));
        assert!(message(14).contains("empty"), "{}", message(14));
        assert!(message(15).contains("quote"), "{}", message(15));
    }

    #[test]
    fn times() {
        let t = |v: &str| parse_time("valid-after", v).map(|t| t.to_string());
        assert_eq!(t("20240229").unwrap(), "2024-02-29T00:00:00Z");
        assert_eq!(t("202402291330").unwrap(), "2024-02-29T13:30:00Z");
        assert_eq!(t("20240229133005Z").unwrap(), "2024-02-29T13:30:05Z");
        assert_eq!(t("20240229133005").unwrap(), t("20240229133005Z").unwrap());
        for bad in [
            "2024022",
            "20230229",
            "20241301",
            "202401011",
            "2024010112345",
            "2024-01-01",
            "",
            "Z",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespace_patterns() {
        let l = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert!(pattern_list_matches("runbook", &l("git,runbook")));
        assert!(pattern_list_matches("runbook", &l("*")));
        assert!(pattern_list_matches("runbook", &l("run*")));
        assert!(pattern_list_matches("runbook", &l("r?nb??k")));
        assert!(!pattern_list_matches("runbook", &l("git")));
        assert!(!pattern_list_matches("runbook", &l("*,!runbook")));
        assert!(!pattern_list_matches("runbook", &l("!runbook,*")));
        assert!(!pattern_list_matches("runbook", &l("runbook?")));
    }

    #[test]
    fn verifies_ssh_keygen_signatures_and_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let alice = keygen(dir.path(), "alice", &["-t", "ed25519"], "");
        let bob = keygen(dir.path(), "bob", &["-t", "ecdsa", "-b", "256"], "");
        let mallory = keygen(dir.path(), "mallory", &["-t", "ed25519"], "");
        let (alice_fp, mallory_fp) = (keygen_fingerprint(&alice), keygen_fingerprint(&mallory));
        let now = SystemTime::now();
        let approve = statement("approve");
        let allowed = format!("alice {}\nbob {}\n", pub_line(&alice), pub_line(&bob));
        let signers = AllowedSigners::parse(&allowed).unwrap();
        let sig = keygen_sign(&alice, "runbook", &approve);

        assert_eq!(
            signers.verify("alice", &approve, &sig, now),
            Ok(alice_fp.clone())
        );
        let bob_sig = keygen_sign(&bob, "runbook", &approve);
        assert_eq!(
            signers.verify("bob", &approve, &bob_sig, now),
            Ok(keygen_fingerprint(&bob))
        );
        // CRLF line endings, surrounding blanks.
        let crlf = format!("\n{}\n", sig.replace('\n', "\r\n"));
        assert_eq!(
            signers.verify("alice", &approve, &crlf, now),
            Ok(alice_fp.clone())
        );

        let refused = |principal: &str, message: &[u8], sig: &str, signers: &AllowedSigners| {
            signers.verify(principal, message, sig, now).unwrap_err()
        };
        // Another principal: alice's signature claimed as bob.
        let err = refused("bob", &approve, &sig, &signers);
        assert!(
            err.contains(&alice_fp) && err.contains("does not allow for `bob`"),
            "{err}"
        );
        // A principal the file does not name.
        let err = refused("carol", &approve, &sig, &signers);
        assert!(err.contains("no key for `carol`"), "{err}");
        // Another key.
        let err = refused(
            "alice",
            &approve,
            &keygen_sign(&mallory, "runbook", &approve),
            &signers,
        );
        assert!(
            err.contains(&mallory_fp) && err.contains("does not allow"),
            "{err}"
        );
        // Another namespace.
        let err = refused(
            "alice",
            &approve,
            &keygen_sign(&alice, "git", &approve),
            &signers,
        );
        assert!(err.contains("namespace `git`"), "{err}");
        // Another message.
        let err = refused("alice", &statement("reject"), &sig, &signers);
        assert!(err.contains("it was made over other content (another run, step, decision, comment or plan fingerprint)"), "{err}");
        // Not a signature.
        for junk in [
            "",
            "hello",
            "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
        ] {
            let err = refused("alice", &approve, junk, &signers);
            assert!(err.contains("not an SSH signature"), "{err}");
        }
        // A signature tampered with inside its armor.
        let body: Vec<&str> = sig.lines().collect();
        let mut tampered = body.clone();
        let last = body.len() - 2;
        let flipped = {
            let l = body[last];
            let c = if l.starts_with('A') { "B" } else { "A" };
            format!("{c}{}", &l[1..])
        };
        tampered[last] = &flipped;
        let err = refused("alice", &approve, &tampered.join("\n"), &signers);
        assert!(
            err.contains("not an SSH signature") || err.contains("does not verify"),
            "{err}"
        );

        // Namespaces: only git.
        let git_only =
            AllowedSigners::parse(&format!("alice namespaces=\"git\" {}", pub_line(&alice)))
                .unwrap();
        let err = refused("alice", &approve, &sig, &git_only);
        assert!(
            err.contains("only for namespaces `git`") && err.contains("line 1"),
            "{err}"
        );
        // git and runbook: accepted, by ssh-keygen too.
        let both = format!("alice namespaces=\"git,runbook\" {}\n", pub_line(&alice));
        assert_eq!(
            AllowedSigners::parse(&both)
                .unwrap()
                .verify("alice", &approve, &sig, now),
            Ok(alice_fp.clone())
        );
        assert!(keygen_verify(&both, "alice", &approve, &sig, None)
            .status
            .success());

        // The validity window, ours and ssh-keygen's.
        let window = format!(
            "# alice's key of 2025\nalice valid-after=\"20250101Z\",valid-before=\"20260101Z\" {}\n",
            pub_line(&alice)
        );
        let windowed = AllowedSigners::parse(&window).unwrap();
        assert_eq!(
            windowed.verify("alice", &approve, &sig, at("2025-06-01T00:00:00Z")),
            Ok(alice_fp.clone())
        );
        assert_eq!(
            windowed.verify("alice", &approve, &sig, at("2026-01-01T00:00:00.5Z")),
            Ok(alice_fp.clone())
        );
        let err = windowed
            .verify("alice", &approve, &sig, at("2026-01-01T00:00:01Z"))
            .unwrap_err();
        assert!(
            err.contains("no longer valid")
                && err.contains("2026-01-01T00:00:00Z")
                && err.contains("line 2"),
            "{err}"
        );
        let err = windowed
            .verify("alice", &approve, &sig, at("2024-12-31T23:59:59Z"))
            .unwrap_err();
        assert!(
            err.contains("not valid for `alice` yet") && err.contains("2025-01-01T00:00:00Z"),
            "{err}"
        );
        assert!(
            keygen_verify(&window, "alice", &approve, &sig, Some("20250601Z"))
                .status
                .success()
        );
        assert!(
            !keygen_verify(&window, "alice", &approve, &sig, Some("20260102Z"))
                .status
                .success()
        );
        // valid-before in the past, at the real now.
        let expired = AllowedSigners::parse(&format!(
            "alice valid-before=\"20200101\" {}",
            pub_line(&alice)
        ))
        .unwrap();
        let err = refused("alice", &approve, &sig, &expired);
        assert!(err.contains("no longer valid"), "{err}");
        // A second, current entry for the same key and principal counts.
        let rotated = AllowedSigners::parse(&format!(
            "alice valid-before=\"20200101\" {0}\nalice namespaces=\"runbook\" {0}\n",
            pub_line(&alice)
        ))
        .unwrap();
        assert_eq!(rotated.verify("alice", &approve, &sig, now), Ok(alice_fp));
    }
}
