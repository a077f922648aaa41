//! Splitting a SQL script into statements: on `;`, but not inside quotes, comments or `$$` blocks.

/// One statement of a script, with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) line: usize,
}

/// The statements of `script`, empty ones (only whitespace or comments) left out.
pub(crate) fn split(script: &str) -> Vec<Statement> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut start, mut line, mut start_line) = (0, 0, 1, 1);
    let push = |from: usize, to: usize, at: usize, out: &mut Vec<Statement>| {
        let text = &script[from..to];
        if has_code(text) {
            let lead = text.len() - text.trim_start().len();
            let line = at + text[..lead].matches('\n').count();
            out.push(Statement {
                sql: text.trim().to_string(),
                line,
            });
        }
    };
    while i < b.len() {
        match b[i] {
            b'\n' => line += 1,
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    if b[i] == q {
                        if i + 1 < b.len() && b[i + 1] == q {
                            i += 1; // doubled quote: an escaped one
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' if b.get(i + 1) == Some(&b'$') => {
                i += 2;
                while i < b.len() && !(b[i] == b'$' && b.get(i + 1) == Some(&b'$')) {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                push(start, i, start_line, &mut out);
                start = i + 1;
                start_line = line;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        push(start, b.len(), start_line, &mut out);
    }
    out
}

/// Whether text holds anything but whitespace and comments.
fn has_code(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once('\n')
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r
                .split_once("*/")
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else {
            return !rest.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_around_strings_comments_and_dollar_blocks() {
        let script = "-- header; not a statement\nCREATE TABLE a (x TEXT);\nINSERT INTO a VALUES ('it''s; fine'), (\"q;\");\n/* a; comment */\nCREATE FUNCTION f() AS $$ SELECT 1; SELECT 2; $$;\n\nSELECT 1 -- trailing; comment\n;\n  ;  \n";
        let s = split(script);
        let lines: Vec<usize> = s.iter().map(|x| x.line).collect();
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(
            s[0].sql,
            "-- header; not a statement\nCREATE TABLE a (x TEXT)"
        );
        assert!(s[1].sql.ends_with("(\"q;\")"), "{}", s[1].sql);
        assert!(
            s[2].sql.contains("$$ SELECT 1; SELECT 2; $$"),
            "{}",
            s[2].sql
        );
        assert_eq!(lines, vec![1, 3, 4, 7]);
    }

    #[test]
    fn a_last_statement_without_semicolon_counts() {
        let s = split("SELECT 1;\nSELECT 2");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].line, 2);
    }
}
