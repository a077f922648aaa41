//! A DAG drawn as SVG, left to right: each task in the column of its longest path from a task
//! without upstreams, coloured by its state in a run, an arrow per dependency. Small DAGs (tens of
//! tasks) are what windsock pipelines are, so a layered layout reads well without a layout engine.

use std::collections::HashMap;
use std::fmt::Write;

use crate::graph::TaskGraph;
use crate::spec::{Pipeline, Profile};
use crate::state::TaskState;

const NODE_H: f64 = 46.0;
const GAP_X: f64 = 60.0;
const GAP_Y: f64 = 18.0;
const PAD: f64 = 12.0;

/// The fill of a state (the grid's squares use the same colours through CSS classes).
pub(super) fn color(state: Option<TaskState>) -> &'static str {
    match state {
        None => "#ffffff",
        Some(TaskState::Queued) => "#d9dee5",
        Some(TaskState::Running) => "#9ec5fe",
        Some(TaskState::Success) => "#7fd29b",
        Some(TaskState::Failed) => "#f28b8b",
        Some(TaskState::UpForRetry) => "#fbd38d",
        Some(TaskState::Deferred) => "#c5b3f0",
        Some(TaskState::UpstreamFailed) => "#f6b4a0",
        Some(TaskState::Skipped) => "#f1c8e8",
    }
}

fn escape(s: &str) -> String {
    minijinja::HtmlEscape(s).to_string()
}

/// The SVG of `graph`, tasks coloured by `states` (a run's), each linking to `link(task)`.
pub(super) fn svg(
    p: &Pipeline,
    profile: Profile,
    graph: &TaskGraph,
    states: &HashMap<String, TaskState>,
    link: &dyn Fn(&str) -> Option<String>,
) -> String {
    // Column of each task: one past the furthest of its upstreams (the order is topological).
    let mut column: HashMap<&str, usize> = HashMap::new();
    for name in graph.order() {
        let c = graph
            .upstream(name)
            .iter()
            .filter_map(|u| column.get(u.as_str()))
            .map(|c| c + 1)
            .max()
            .unwrap_or(0);
        column.insert(name.as_str(), c);
    }
    let columns = column.values().max().map_or(0, |m| m + 1);
    let mut rows: Vec<Vec<&str>> = vec![Vec::new(); columns];
    for name in graph.order() {
        rows[column[name.as_str()]].push(name.as_str());
    }
    let operator = |name: &str| p.task(name).map_or("", |t| t.for_profile(profile).0);
    let width_of = |name: &str| {
        let op = operator(name).len();
        (name.len().max(op) as f64 * 7.4 + 24.0).max(110.0)
    };
    let col_w: Vec<f64> = rows
        .iter()
        .map(|r| r.iter().map(|n| width_of(n)).fold(0.0, f64::max))
        .collect();
    let mut x_at = vec![PAD; columns];
    for c in 1..columns {
        x_at[c] = x_at[c - 1] + col_w[c - 1] + GAP_X;
    }
    let tallest = rows.iter().map(Vec::len).max().unwrap_or(1);
    let height = PAD * 2.0 + tallest as f64 * (NODE_H + GAP_Y) - GAP_Y;
    let width = x_at.last().copied().unwrap_or(PAD) + col_w.last().copied().unwrap_or(0.0) + PAD;
    // Each column is centred vertically.
    let mut pos: HashMap<&str, (f64, f64, f64)> = HashMap::new();
    for (c, r) in rows.iter().enumerate() {
        let used = r.len() as f64 * (NODE_H + GAP_Y) - GAP_Y;
        let top = (height - used) / 2.0;
        for (i, name) in r.iter().enumerate() {
            pos.insert(name, (x_at[c], top + i as f64 * (NODE_H + GAP_Y), col_w[c]));
        }
    }
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="dag-graph" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="system-ui, sans-serif" font-size="13"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#7b8794"/></marker></defs>"##
    );
    for name in graph.order() {
        let Some(&(x2, y2, _)) = pos.get(name.as_str()) else {
            continue;
        };
        for up in graph.upstream(name) {
            let Some(&(x1, y1, w1)) = pos.get(up.as_str()) else {
                continue;
            };
            let (sx, sy, ex, ey) = (x1 + w1, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
            let mid = (sx + ex) / 2.0;
            let _ = write!(
                out,
                r##"<path d="M {sx:.1} {sy:.1} C {mid:.1} {sy:.1}, {mid:.1} {ey:.1}, {ex:.1} {ey:.1}" fill="none" stroke="#7b8794" stroke-width="1.4" marker-end="url(#arrow)"/>"##
            );
        }
    }
    for name in graph.order() {
        let Some(&(x, y, w)) = pos.get(name.as_str()) else {
            continue;
        };
        let state = states.get(name).copied();
        let op = operator(name);
        let title = match state {
            Some(s) => format!("{name}: {s}"),
            None => format!("{name}: not run"),
        };
        let node = format!(
            r##"<g class="task" data-task="{n}"><title>{t}</title><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{NODE_H}" rx="6" fill="{fill}" stroke="#52606d"/><text x="{tx:.1}" y="{ny:.1}" font-weight="600">{n}</text><text x="{tx:.1}" y="{oy:.1}" fill="#52606d" font-size="11">{o}</text></g>"##,
            n = escape(name),
            t = escape(&title),
            fill = color(state),
            tx = x + 10.0,
            ny = y + 19.0,
            oy = y + 36.0,
            o = escape(op),
        );
        match link(name) {
            Some(href) => {
                let _ = write!(out, r#"<a href="{}">{node}</a>"#, escape(&href));
            }
            None => out.push_str(&node),
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_sit_in_the_column_of_their_longest_path_and_are_escaped() {
        let src = "dag: d\ntasks:\n  a: {operator: noop}\n  b: {operator: noop, depends_on: [a]}\n  c: {operator: noop, depends_on: [a, b]}\n";
        let (p, d) = crate::spec::load_str(std::path::Path::new("d.yaml"), src);
        assert!(d.is_empty(), "{d}");
        let p = p.unwrap();
        let g = TaskGraph::build(&p).unwrap();
        let states = HashMap::from([("a".to_string(), TaskState::Success)]);
        let svg = svg(&p, Profile::Local, &g, &states, &|t| {
            Some(format!("/t/{t}?x=1&y=<2>"))
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // a → b and a, b → c: three arrows; c is in the third column.
        assert_eq!(svg.matches("marker-end").count(), 3);
        assert!(
            svg.contains("<title>a: success</title>") && svg.contains("<title>c: not run</title>")
        );
        assert!(svg.contains("&lt;2&gt;") && !svg.contains("<2>"));
        let x_of = |t: &str| {
            let at = svg.find(&format!(r#"data-task="{t}""#)).unwrap();
            let rect = &svg[at..];
            let x = rect
                .split("x=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            x.parse::<f64>().unwrap()
        };
        assert!(x_of("a") < x_of("b") && x_of("b") < x_of("c"));
    }
}
