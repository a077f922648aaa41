//! `query`: one statement on the profile's warehouse, rows printed as a table, CSV or JSON.

use std::process::ExitCode;

use crate::cli::args::QueryFormat;
use crate::cli::output::print_table;
use crate::cli::{CliResult, Session, fail};

pub(super) async fn query(
    s: &Session,
    sql: &str,
    connection: &str,
    format: QueryFormat,
) -> CliResult {
    if connection != "warehouse" {
        return Err(fail(format!(
            "unknown connection `{connection}`; this build has `warehouse`"
        )));
    }
    let wh = crate::connections::warehouse::open(s.g.profile, s.home(), Some("windsock query"))?;
    let result = wh.query(sql).await?;
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match format {
        QueryFormat::Json => {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = result
                .rows
                .iter()
                .map(|r| {
                    result
                        .columns
                        .iter()
                        .cloned()
                        .zip(r.iter().cloned())
                        .collect()
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        QueryFormat::Csv => {
            let esc = |s: String| {
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s
                }
            };
            let header: Vec<String> = result.columns.iter().cloned().map(esc).collect();
            println!("{}", header.join(","));
            for r in &result.rows {
                let line: Vec<String> = r.iter().map(|v| esc(cell(v))).collect();
                println!("{}", line.join(","));
            }
        }
        QueryFormat::Table => {
            let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
            let rows: Vec<Vec<String>> = result
                .rows
                .iter()
                .map(|r| r.iter().map(cell).collect())
                .collect();
            print_table(&header, &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
