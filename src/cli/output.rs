//! Text for people: aligned tables, counted nouns, times.

/// `1 run`, `3 runs`: a count with its noun, plural when it is not one.
pub(super) fn plural(n: usize, noun: &str) -> String {
    format!("{n} {}", plural_noun(n, noun))
}

/// The noun alone, plural when `n` is not one (`problem` / `problems`).
pub(super) fn plural_noun(n: usize, noun: &str) -> String {
    if n == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    }
}

/// A time as `2019-10-01 12:00:00`, or `-`.
pub(super) fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Milliseconds as `1.2s`, or `-`.
pub(super) fn millis(ms: Option<i64>) -> String {
    ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Rows as aligned columns under a header, as one string.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// Prints [`table`] to stdout.
pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(header, rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_nouns_count() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["x".into(), "1".into()],
                vec!["wide cell".into(), "2".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nx          1\nwide cell  2\n");
        assert_eq!(plural(1, "run"), "1 run");
        assert_eq!(plural(0, "run"), "0 runs");
        assert_eq!(millis(Some(1240)), "1.2s");
        assert_eq!(time(None), "-");
    }
}
