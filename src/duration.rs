//! Durations as authors write them: `250ms`, `30s`, `5m`, `2h`, `1d`, and
//! compounds such as `1h30m`. One parser for validation, plans and the engine.

use std::time::Duration;

/// Parses a duration; the error says what was wrong.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. `30s`, `5m`, `2h`".into());
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration; write e.g. `30s`, `5m`, `2h`, `1d`"
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" if rest.is_empty() => {
                return Err(format!("`{text}` has no unit; write e.g. `{n}s` or `{n}m`"))
            }
            "" => {
                return Err(format!(
                    "`{text}` is not a duration; write e.g. `30s`, `5m`, `2h`, `1d`"
                ))
            }
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{text}`; units are ms, s, m, h, d"
                ))
            }
        };
        total = total
            .checked_add(
                n.checked_mul(ms)
                    .ok_or_else(|| format!("`{text}` is too large"))?,
            )
            .ok_or_else(|| format!("`{text}` is too large"))?;
    }
    // A century is a generous ceiling and keeps arithmetic on deadlines safe.
    if total > 100 * 365 * 86_400_000 {
        return Err(format!("`{text}` is longer than a century"));
    }
    Ok(Duration::from_millis(
        u64::try_from(total).map_err(|_| format!("`{text}` is too large"))?,
    ))
}

/// Formats a duration the way it would be written: `1h30m`, `250ms`.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse("10").is_err());
        assert!(parse("5 minutes").is_err());
        assert!(parse("m").is_err());
        assert!(parse("99999999999999999999999d").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["250ms", "30s", "1h30m", "2d", "1m5s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
