//! Numbers for people: `$1,234,567.89`, `12,345`, `3.4 %`.

/// Digits grouped by thousands: `1234567` → `1,234,567`.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A whole number with thousands separators.
pub(crate) fn count(n: f64) -> String {
    let sign = if n < 0.0 { "-" } else { "" };
    format!("{sign}{}", group(&format!("{:.0}", n.abs())))
}

/// Dollars and cents with thousands separators.
pub(crate) fn money(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "" };
    let cents = format!("{:.2}", v.abs());
    let (whole, frac) = cents.split_once('.').unwrap_or((&cents, "00"));
    format!("{sign}${}.{frac}", group(whole))
}

/// A ratio (0.123) as a percentage (`12.3 %`).
pub(crate) fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_a_report() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1000.0), "1,000");
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(money(1234567.891), "$1,234,567.89");
        assert_eq!(money(5.0), "$5.00");
        assert_eq!(money(-1500.5), "-$1,500.50");
        assert_eq!(percent(0.1234), "12.3 %");
    }
}
