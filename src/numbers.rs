//! Numbers for people: a gate's value, a p-value, a change in percent.
//! Six significant digits, so a rate of 0.0999999999 reads 0.1 and
//! 1 - 0.98 reads 0.02; records and outputs keep the exact number.

/// `v` to six significant digits, without trailing zeros.
pub fn human(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    // |v| is finite and non-zero, so its log10 is within ±400.
    #[allow(clippy::cast_possible_truncation)]
    let magnitude = v.abs().log10().floor() as i32;
    let Ok(decimals) = usize::try_from(5 - magnitude) else {
        return v.to_string();
    };
    if decimals > 15 {
        return v.to_string();
    }
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_well() {
        assert_eq!(human(0.099_999_999_9), "0.1");
        assert_eq!(human(0.002), "0.002");
        assert_eq!(human(0.004_123_456_7), "0.00412346");
        assert_eq!(human(12.5), "12.5");
        assert_eq!(human(1.0), "1");
        assert_eq!(human(0.0), "0");
        assert_eq!(human(123_456_789.0), "123456789");
        assert_eq!(human(1e-9), "0.000000001");
        assert_eq!(human(f64::INFINITY), "inf");
    }
}
