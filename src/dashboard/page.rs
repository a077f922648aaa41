//! The dashboard as one self-contained HTML document: styles inline, charts as inline SVG, no
//! script. Every value from the warehouse is escaped (the template engine escapes by default);
//! each table cell and figure carries its exact value in `data-value` beside the formatted one.

use std::sync::LazyLock;

use minijinja::Environment;
use serde::Serialize;
use serde_json::Value;

use super::{Dashboard, Kind};

static TEMPLATES: LazyLock<Environment<'static>> =
    LazyLock::new(|| crate::html::environment(&[("dashboard.html", include_str!("page.html"))]));

/// What a page served live (by the web UI) adds: a period picker, a refresh button, a link
/// back, and a reload every `refresh_seconds`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Live {
    /// The page's own path (the picker submits to it).
    pub(crate) path: String,
    pub(crate) back: Option<String>,
    pub(crate) refresh_seconds: u32,
}

#[derive(Serialize)]
struct Cell {
    raw: String,
    shown: String,
    class: &'static str,
}

fn cell(v: &Value, kind: Kind) -> Cell {
    Cell {
        raw: match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        },
        shown: kind.show(v),
        class: match kind {
            Kind::Count | Kind::Money | Kind::Percent => "number",
            Kind::Text | Kind::Date => "",
        },
    }
}

/// The page for `d`.
pub(crate) fn render(d: &Dashboard, live: Option<&Live>) -> String {
    let tiles: Vec<Value> = d
        .tiles
        .iter()
        .map(|t| {
            let rows: Vec<Vec<Cell>> = t
                .table
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(&t.table.columns)
                        .map(|(v, (_, kind))| cell(v, *kind))
                        .collect()
                })
                .collect();
            let figures: Vec<serde_json::Value> = t
                .figures
                .iter()
                .map(|f| {
                    let c = cell(&f.value, f.kind);
                    serde_json::json!({ "label": f.label, "raw": c.raw, "shown": c.shown })
                })
                .collect();
            serde_json::json!({
                "id": t.id,
                "title": t.title,
                "note": t.note,
                "missing": t.missing,
                "figures": figures,
                "chart": t.chart,
                "columns": t.table.columns.iter().map(|(c, _)| c).collect::<Vec<_>>(),
                "rows": serde_json::to_value(rows).unwrap_or_default(),
                // Short tables are open; long ones (a day per row) fold away under the chart.
                "open": t.table.rows.len() <= 15,
            })
        })
        .collect();
    let periods: Vec<Value> = d
        .periods
        .iter()
        .map(|p| {
            serde_json::json!({
                "value": p.to_string(),
                "label": p.label(),
                "selected": *p == d.period,
            })
        })
        .collect();
    let ctx = serde_json::json!({
        "title": d.title,
        "period_label": format!("Period: {}", d.period.label()),
        "generated": d.generated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        "periods": periods,
        "tiles": tiles,
        "live": live,
    });
    match crate::html::render(&TEMPLATES, "dashboard.html", &ctx) {
        Ok(html) => html,
        // Not reachable with the shipped template; still a page, never a panic.
        Err(e) => format!(
            "<!doctype html><title>dashboard</title><p>the dashboard could not be drawn: {}</p>",
            minijinja::HtmlEscape(&e.to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::{Figure, Period, Table, Tile};

    #[test]
    fn values_are_escaped_and_carry_their_exact_value() {
        let d = Dashboard {
            title: "Shop <script>alert(1)</script>".into(),
            period: Period::All,
            periods: vec![Period::All, Period::LastDays(7)],
            generated_at: chrono::Utc::now(),
            tiles: vec![Tile {
                id: "top-brands",
                title: "Top-selling brands".into(),
                note: "REPORTING.TOP_BRANDS".into(),
                figures: vec![Figure {
                    label: "Users".into(),
                    value: 1234.into(),
                    kind: Kind::Count,
                }],
                chart: Some("<svg></svg>".into()),
                table: Table {
                    columns: vec![
                        ("brand".into(), Kind::Text),
                        ("revenue".into(), Kind::Money),
                    ],
                    rows: vec![vec!["<img src=x onerror=alert(1)>".into(), 1234.5.into()]],
                },
                missing: None,
            }],
        };
        let html = render(
            &d,
            Some(&Live {
                path: "/dashboard".into(),
                back: Some("/".into()),
                refresh_seconds: 300,
            }),
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<img src=x"));
        assert!(
            html.contains(r#"data-value="1234.5">$1,234.50</td>"#),
            "{html}"
        );
        assert!(html.contains(r#"data-value="1234">1,234</dd>"#), "{html}");
        assert!(html.contains("<svg></svg>"), "charts are inserted as SVG");
        assert!(html.contains(r#"<meta http-equiv="refresh" content="300">"#));
        assert!(html.contains(r#"<option value="7d">"#));
        let file = render(&d, None);
        assert!(!file.contains("http-equiv") && !file.contains("<form"));
    }
}
