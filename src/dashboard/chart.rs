//! Charts as SVG, drawn by charts-rs on the server: no script, no font or style fetched, so a
//! dashboard file opens anywhere, offline. Values are labelled with thousands separators; axes
//! carry their unit.

use serde_json::{Value, json};

const WIDTH: f64 = 640.0;
const COLORS: [&str; 6] = [
    "#2f6fde", "#e8833a", "#3aa55b", "#c43d5b", "#7a4cc2", "#6b7280",
];

/// Options every chart shares.
fn base(height: f64, categories: &[String], series: Vec<Value>, unit: &str) -> Value {
    json!({
        "width": WIDTH,
        "height": height,
        "margin": { "left": 10, "top": 10, "right": 20, "bottom": 10 },
        "font_family": "Roboto",
        "legend_show": series.len() > 1,
        "legend_align": "right",
        "x_axis_data": categories,
        "x_axis_font_size": 12,
        "x_axis_label_overflow": "ellipsis",
        "series_label_formatter": "{t}",
        "series_label_font_size": 11,
        "series_colors": COLORS,
        "y_axis_configs": [{ "axis_formatter": "{t}", "axis_font_size": 12, "axis_title": unit }],
        "series_list": series,
        "empty_text": "no data",
    })
}

fn finish(svg: Result<String, charts_rs::Error>) -> Option<String> {
    match svg {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("a dashboard chart could not be drawn: {e}");
            None
        }
    }
}

/// A horizontal bar chart, first category on top (a ranking).
pub(crate) fn horizontal_bars(categories: &[String], values: &[f64], unit: &str) -> Option<String> {
    let height = 60.0 + 28.0 * categories.len().max(3) as f64;
    // charts-rs draws the first category at the bottom: reverse, so the largest is on top.
    let cats: Vec<String> = categories.iter().rev().cloned().collect();
    let vals: Vec<f64> = values.iter().rev().copied().collect();
    let mut opts = base(
        height,
        &cats,
        vec![json!({ "name": unit, "data": vals, "label_show": true })],
        unit,
    );
    opts["x_axis_title"] = json!(unit);
    opts["series_label_position"] = json!("right");
    let chart = charts_rs::HorizontalBarChart::from_json(&opts.to_string());
    finish(chart.and_then(|c| c.svg()))
}

/// A vertical bar chart.
pub(crate) fn bars(categories: &[String], values: &[f64], unit: &str) -> Option<String> {
    let mut opts = base(
        380.0,
        categories,
        vec![json!({ "name": unit, "data": values, "label_show": true })],
        unit,
    );
    opts["x_axis_label_overflow"] = json!("rotate");
    let chart = charts_rs::BarChart::from_json(&opts.to_string());
    finish(chart.and_then(|c| c.svg()))
}

/// A funnel of stages (largest first), each labelled with its count.
pub(crate) fn funnel(stages: &[(String, f64)]) -> Option<String> {
    let series: Vec<Value> = stages
        .iter()
        .map(|(name, n)| json!({ "name": name, "data": [n] }))
        .collect();
    let mut opts = base(300.0, &[], series, "Events");
    if let Some(o) = opts.as_object_mut() {
        o.remove("y_axis_configs");
        o.remove("x_axis_data");
        o.remove("x_axis_font_size");
        o.remove("x_axis_label_overflow");
    }
    opts["legend_show"] = json!(false);
    opts["series_label_formatter"] = json!("{a}: {t}");
    opts["series_label_position"] = json!("inside");
    opts["min_width"] = json!(120);
    let chart = charts_rs::FunnelChart::from_json(&opts.to_string());
    finish(chart.and_then(|c| c.svg()))
}

/// A line chart of one or more series over the categories (days, minutes).
pub(crate) fn line(
    categories: &[String],
    series: &[(&str, Vec<f64>)],
    unit: &str,
) -> Option<String> {
    let list: Vec<Value> = series
        .iter()
        .map(|(name, data)| json!({ "name": name, "data": data }))
        .collect();
    let mut opts = base(360.0, categories, list, unit);
    opts["series_smooth"] = json!(false);
    opts["x_axis_label_overflow"] = json!("thin");
    let chart = charts_rs::LineChart::from_json(&opts.to_string());
    finish(chart.and_then(|c| c.svg()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_readable_labels() {
        let cats = vec![
            "electronics.smartphone".to_string(),
            "<b>odd</b>".to_string(),
        ];
        let svg = horizontal_bars(&cats, &[1_234_567.0, 20_000.0], "Revenue ($)").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("electronics.smartphone"));
        assert!(
            svg.contains("1,234,567"),
            "values carry thousands separators"
        );
        assert!(!svg.contains("<b>odd</b>"), "labels are escaped");
        let svg = line(
            &["2019-11-01".into(), "2019-11-02".into()],
            &[("Revenue", vec![10.0, 20.0])],
            "Revenue ($)",
        )
        .unwrap();
        assert!(svg.contains("Revenue ($)"), "the axis names its unit");
        assert!(bars(&["a".into()], &[1.0], "Events").is_some());
        let svg = funnel(&[("Viewed".into(), 281_784.0), ("Carted".into(), 13_255.0)]).unwrap();
        assert!(svg.contains("Viewed: 281,784"), "{svg}");
    }
}
