//! SQL identifiers that windsock splices into statements it writes itself (table, key and sort
//! columns; column names from message schemas). Only plain names pass, so no value from a
//! pipeline or a schema can change a statement's meaning.

/// Whether `s` is a plain identifier: ASCII letters, digits and `_`, not starting with a digit.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Splits `SCHEMA.TABLE`, checking both are plain identifiers.
pub(crate) fn split_table(table: &str) -> Result<(&str, &str), String> {
    match table.split_once('.') {
        Some((s, t)) if plain(s) && plain(t) => Ok((s, t)),
        _ => Err(format!(
            "`table` must be SCHEMA.TABLE with letters, digits and `_`, not `{table}`"
        )),
    }
}

/// Checks a column name.
pub(crate) fn check_column(c: &str) -> Result<&str, String> {
    if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        Ok(c)
    } else {
        Err(format!("invalid column name `{c}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        assert_eq!(split_table("RAW.EVENTS"), Ok(("RAW", "EVENTS")));
        assert!(split_table("RAW").is_err());
        assert!(split_table("RAW.EVENTS; DROP TABLE x").is_err());
        assert!(split_table("1RAW.EVENTS").is_err());
        assert_eq!(check_column("event_id"), Ok("event_id"));
        assert!(check_column("a b").is_err());
        assert!(check_column("").is_err());
    }
}
