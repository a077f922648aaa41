//! The business dashboard: the tiles of the Metabase dashboard the seed pipeline ended in (top 15
//! categories by revenue, top-selling brands, daily revenue) and what it lacked (the conversion
//! funnel, average order value by day, abandoned carts, and from the PROCESSED layer events per
//! minute and trending products), read from the warehouse and drawn as SVG on the server
//! ([`chart`]), in one self-contained HTML page ([`page`]): nothing is fetched from anywhere.
//!
//! The `dashboard` operator writes the page to a file at the end of a pipeline; the web UI serves
//! the same page at `/dashboard`, live. A tile whose table does not exist yet (no run has filled
//! it) says so instead of failing the page.

pub(crate) mod chart;
pub(crate) mod format;
pub(crate) mod page;

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;

use crate::connections::warehouse::{QueryResult, Warehouse};
use crate::spec::Month;

/// The dates a dashboard covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    /// Everything in the warehouse.
    All,
    /// One calendar month.
    Month(Month),
    /// The last N days of data (up to the newest date in the warehouse, not today: the dataset
    /// is from 2019-2020).
    LastDays(u32),
}

impl FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Period, String> {
        let bad = || format!("unknown period `{s}`: use `all`, a month (`2019-11`) or days (`7d`)");
        match s {
            "" | "all" => Ok(Period::All),
            _ => match s.strip_suffix('d') {
                Some(n) => n
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Period::LastDays)
                    .ok_or_else(bad),
                None => s.parse::<Month>().map(Period::Month).map_err(|_| bad()),
            },
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::All => f.write_str("all"),
            Period::Month(m) => write!(f, "{m}"),
            Period::LastDays(n) => write!(f, "{n}d"),
        }
    }
}

impl Period {
    /// For people: `all time`, `2019-Nov`, `the last 7 days of data`.
    pub(crate) fn label(&self) -> String {
        match self {
            Period::All => "all time".into(),
            Period::Month(m) => m.name(),
            Period::LastDays(n) => format!("the last {n} days of data"),
        }
    }
}

/// How a column's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Date,
    Count,
    Money,
    Percent,
}

impl Kind {
    /// A value as people read it (the raw value stays in the page beside it).
    pub(crate) fn show(self, v: &Value) -> String {
        let num = || number(v);
        match (self, v) {
            (_, Value::Null) => "–".into(),
            (Kind::Count, _) => num().map(format::count).unwrap_or_else(|| text(v)),
            (Kind::Money, _) => num().map(format::money).unwrap_or_else(|| text(v)),
            (Kind::Percent, _) => num().map(format::percent).unwrap_or_else(|| text(v)),
            (Kind::Text | Kind::Date, _) => text(v),
        }
    }
}

/// A table of a tile: the exact values the chart draws.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub(crate) columns: Vec<(String, Kind)>,
    pub(crate) rows: Vec<Vec<Value>>,
}

/// A headline figure (`Abandoned carts: 1,234`).
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) label: String,
    pub(crate) value: Value,
    pub(crate) kind: Kind,
}

/// One tile of the dashboard.
#[derive(Debug, Clone)]
pub(crate) struct Tile {
    /// A stable id for the page (`top-categories`).
    pub(crate) id: &'static str,
    pub(crate) title: String,
    /// What it shows and from where (`REPORTING.DAILY_REVENUE, all time`).
    pub(crate) note: String,
    pub(crate) figures: Vec<Figure>,
    /// The chart, as SVG.
    pub(crate) chart: Option<String>,
    pub(crate) table: Table,
    /// Why there is nothing to show (a table no run has filled yet).
    pub(crate) missing: Option<String>,
}

impl Tile {
    fn new(id: &'static str, title: &str, note: String) -> Tile {
        Tile {
            id,
            title: title.to_string(),
            note,
            figures: Vec::new(),
            chart: None,
            table: Table::default(),
            missing: None,
        }
    }
}

/// A dashboard ready to draw.
#[derive(Debug, Clone)]
pub(crate) struct Dashboard {
    pub(crate) title: String,
    pub(crate) period: Period,
    /// The periods one can pick: all time, each month with data, the last 7 and 30 days.
    pub(crate) periods: Vec<Period>,
    pub(crate) generated_at: DateTime<Utc>,
    pub(crate) tiles: Vec<Tile>,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The date part of a value the warehouse returned for a DATE or TIMESTAMP column.
fn date_of(v: &Value) -> Option<NaiveDate> {
    let s = text(v);
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// `[from, to)` of a period, given the newest date with data.
fn bounds(period: Period, newest: Option<NaiveDate>) -> Option<(NaiveDate, NaiveDate)> {
    match period {
        Period::All => None,
        Period::Month(m) => Some((m.first_day(), m.next().first_day())),
        Period::LastDays(n) => {
            let end = newest? + Duration::days(1);
            Some((end - Duration::days(i64::from(n)), end))
        }
    }
}

/// The SQL condition on `event_date` for a period (`1 = 1` for all time).
fn date_filter(b: Option<(NaiveDate, NaiveDate)>) -> String {
    match b {
        None => "1 = 1".into(),
        Some((from, to)) => format!(
            "event_date >= DATE '{}' AND event_date < DATE '{}'",
            from.format("%Y-%m-%d"),
            to.format("%Y-%m-%d")
        ),
    }
}

/// Runs `sql`; a failure (most often a table no run has made yet) becomes the tile's reason.
async fn fetch(wh: &dyn Warehouse, tile: &mut Tile, sql: &str) -> Option<QueryResult> {
    match wh.query(sql).await {
        Ok(r) => Some(r),
        Err(e) => {
            let first = e.message().lines().next().unwrap_or_default().to_string();
            tile.missing = Some(format!("no data yet ({first})"));
            None
        }
    }
}

fn table(r: &QueryResult, kinds: &[Kind]) -> Table {
    Table {
        columns: r
            .columns
            .iter()
            .cloned()
            .zip(kinds.iter().copied().chain(std::iter::repeat(Kind::Text)))
            .collect(),
        rows: r.rows.clone(),
    }
}

fn column(r: &QueryResult, i: usize) -> Vec<f64> {
    r.rows
        .iter()
        .map(|row| row.get(i).and_then(number).unwrap_or(0.0))
        .collect()
}

fn labels(r: &QueryResult, i: usize) -> Vec<String> {
    r.rows
        .iter()
        .map(|row| row.get(i).map(text).unwrap_or_default())
        .collect()
}

/// Reads every tile for `period` from the warehouse.
pub(crate) async fn collect(wh: &dyn Warehouse, title: &str, period: Period) -> Dashboard {
    let dates = wh
        .query("SELECT DISTINCT event_date FROM REPORTING.DAILY_REVENUE ORDER BY event_date")
        .await
        .map(|r| {
            r.rows
                .iter()
                .filter_map(|row| row.first().and_then(date_of))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let newest = dates.last().copied();
    let mut periods = vec![Period::All, Period::LastDays(7), Period::LastDays(30)];
    for d in &dates {
        let m = Period::Month(Month::of(*d));
        if !periods.contains(&m) {
            periods.push(m);
        }
    }
    let filter = date_filter(bounds(period, newest));
    let label = period.label();
    let tiles = vec![
        top_categories(wh, period, &filter, &label).await,
        top_brands(wh).await,
        daily_revenue(wh, &filter, &label).await,
        funnel(wh, &filter, &label).await,
        average_order_value(wh, &filter, &label).await,
        abandoned_carts(wh).await,
        events_per_minute(wh).await,
        trending_products(wh).await,
    ];
    Dashboard {
        title: title.to_string(),
        period,
        periods,
        generated_at: Utc::now(),
        tiles,
    }
}

async fn top_categories(wh: &dyn Warehouse, period: Period, filter: &str, label: &str) -> Tile {
    let (source, sql) = match period {
        Period::All => (
            "REPORTING.TOP_CATEGORIES_BY_REVENUE",
            "SELECT category_code, revenue, purchases FROM REPORTING.TOP_CATEGORIES_BY_REVENUE \
             ORDER BY revenue DESC, category_code LIMIT 15"
                .to_string(),
        ),
        _ => (
            "REPORTING.CATEGORY_REVENUE_DAILY",
            format!(
                "SELECT category_code, round(sum(revenue), 2) AS revenue, sum(purchases) AS purchases \
                 FROM REPORTING.CATEGORY_REVENUE_DAILY WHERE {filter} \
                 GROUP BY category_code ORDER BY revenue DESC, category_code LIMIT 15"
            ),
        ),
    };
    let mut tile = Tile::new(
        "top-categories",
        "Top 15 categories by revenue",
        format!("{source}, {label}"),
    );
    if let Some(r) = fetch(wh, &mut tile, &sql).await {
        tile.chart = chart::horizontal_bars(&labels(&r, 0), &column(&r, 1), "Revenue ($)");
        tile.table = table(&r, &[Kind::Text, Kind::Money, Kind::Count]);
    }
    tile
}

async fn top_brands(wh: &dyn Warehouse) -> Tile {
    let mut tile = Tile::new(
        "top-brands",
        "Top-selling brands",
        "REPORTING.TOP_BRANDS, all time, the first 15 by revenue".into(),
    );
    let sql = "SELECT brand, revenue, units FROM REPORTING.TOP_BRANDS \
               ORDER BY revenue DESC, brand LIMIT 15";
    if let Some(r) = fetch(wh, &mut tile, sql).await {
        tile.chart = chart::bars(&labels(&r, 0), &column(&r, 1), "Revenue ($)");
        tile.table = table(&r, &[Kind::Text, Kind::Money, Kind::Count]);
    }
    tile
}

async fn daily_revenue(wh: &dyn Warehouse, filter: &str, label: &str) -> Tile {
    let mut tile = Tile::new(
        "daily-revenue",
        "Daily revenue",
        format!("REPORTING.DAILY_REVENUE, {label}"),
    );
    let sql = format!(
        "SELECT event_date, revenue, purchases FROM REPORTING.DAILY_REVENUE \
         WHERE {filter} ORDER BY event_date"
    );
    if let Some(r) = fetch(wh, &mut tile, &sql).await {
        tile.chart = chart::line(&labels(&r, 0), &[("Revenue", column(&r, 1))], "Revenue ($)");
        tile.table = table(&r, &[Kind::Date, Kind::Money, Kind::Count]);
    }
    tile
}

async fn funnel(wh: &dyn Warehouse, filter: &str, label: &str) -> Tile {
    let mut tile = Tile::new(
        "funnel",
        "Conversion funnel: view → cart → purchase",
        format!("REPORTING.DAILY_SUMMARY, {label}"),
    );
    let sql = format!(
        "SELECT sum(views) AS views, sum(carts) AS carts, sum(purchases) AS purchases \
         FROM REPORTING.DAILY_SUMMARY WHERE {filter}"
    );
    if let Some(r) = fetch(wh, &mut tile, &sql).await {
        let v = |i: usize| column(&r, i).first().copied().unwrap_or(0.0);
        let (views, carts, purchases) = (v(0), v(1), v(2));
        let rate = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let stages = [
            ("Viewed", views),
            ("Carted", carts),
            ("Purchased", purchases),
        ];
        tile.chart = chart::funnel(
            &stages
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect::<Vec<_>>(),
        );
        tile.figures = vec![
            Figure {
                label: "View → cart".into(),
                value: rate(carts, views).into(),
                kind: Kind::Percent,
            },
            Figure {
                label: "Drop-off before the cart".into(),
                value: (1.0 - rate(carts, views)).into(),
                kind: Kind::Percent,
            },
            Figure {
                label: "Cart → purchase".into(),
                value: rate(purchases, carts).into(),
                kind: Kind::Percent,
            },
            Figure {
                label: "Drop-off before the purchase".into(),
                value: (1.0 - rate(purchases, carts)).into(),
                kind: Kind::Percent,
            },
        ];
        tile.table = Table {
            columns: vec![("stage".into(), Kind::Text), ("events".into(), Kind::Count)],
            rows: stages
                .iter()
                .map(|(s, n)| vec![Value::from(*s), Value::from(*n)])
                .collect(),
        };
    }
    tile
}

async fn average_order_value(wh: &dyn Warehouse, filter: &str, label: &str) -> Tile {
    let mut tile = Tile::new(
        "average-order-value",
        "Average order value by day",
        format!("REPORTING.AVERAGE_ORDER_VALUE_DAILY, {label}"),
    );
    let sql = format!(
        "SELECT event_date, orders, average_order_value FROM REPORTING.AVERAGE_ORDER_VALUE_DAILY \
         WHERE {filter} ORDER BY event_date"
    );
    if let Some(r) = fetch(wh, &mut tile, &sql).await {
        tile.chart = chart::line(
            &labels(&r, 0),
            &[("Average order value", column(&r, 2))],
            "Order value ($)",
        );
        tile.table = table(&r, &[Kind::Date, Kind::Count, Kind::Money]);
    }
    tile
}

async fn abandoned_carts(wh: &dyn Warehouse) -> Tile {
    let mut tile = Tile::new(
        "abandoned-carts",
        "Abandoned carts",
        "REPORTING.ABANDONED_CART_USERS: users who carted and never bought, all time".into(),
    );
    let totals = "SELECT count(*) AS users, sum(carted_items) AS items, \
                  round(sum(cart_value), 2) AS value FROM REPORTING.ABANDONED_CART_USERS";
    if let Some(r) = fetch(wh, &mut tile, totals).await {
        let cell = |i: usize| r.rows.first().and_then(|row| row.get(i)).cloned();
        tile.figures = vec![
            Figure {
                label: "Users".into(),
                value: cell(0).unwrap_or(Value::Null),
                kind: Kind::Count,
            },
            Figure {
                label: "Items left in carts".into(),
                value: cell(1).unwrap_or(Value::Null),
                kind: Kind::Count,
            },
            Figure {
                label: "Value left in carts".into(),
                value: cell(2).unwrap_or(Value::Null),
                kind: Kind::Money,
            },
        ];
        let top = "SELECT user_id, carted_items, cart_value FROM REPORTING.ABANDONED_CART_USERS \
                   ORDER BY cart_value DESC, user_id LIMIT 10";
        if let Some(r) = fetch(wh, &mut tile, top).await {
            tile.table = table(&r, &[Kind::Text, Kind::Count, Kind::Money]);
        }
    }
    tile
}

async fn events_per_minute(wh: &dyn Warehouse) -> Tile {
    let mut tile = Tile::new(
        "events-per-minute",
        "Events per minute by event type",
        "PROCESSED.WINDOW_AGGREGATES, 1-minute windows, the newest hour of event time".into(),
    );
    let sql = "SELECT window_start, dimension_value AS event_type, events \
               FROM PROCESSED.WINDOW_AGGREGATES \
               WHERE window_size = '1m' AND dimension = 'event_type' \
                 AND window_start > (SELECT max(window_start) FROM PROCESSED.WINDOW_AGGREGATES \
                                    WHERE window_size = '1m') - INTERVAL '60 minutes' \
               ORDER BY window_start, event_type";
    if let Some(r) = fetch(wh, &mut tile, sql).await {
        // One series per event type over the minutes.
        let mut minutes: Vec<String> = Vec::new();
        let mut types: Vec<String> = Vec::new();
        for row in &r.rows {
            let m = row.first().map(text).unwrap_or_default();
            let t = row.get(1).map(text).unwrap_or_default();
            if minutes.last() != Some(&m) {
                minutes.push(m);
            }
            if !types.contains(&t) {
                types.push(t);
            }
        }
        types.sort();
        let series: Vec<(&str, Vec<f64>)> = types
            .iter()
            .map(|t| {
                let values = minutes
                    .iter()
                    .map(|m| {
                        r.rows
                            .iter()
                            .find(|row| {
                                row.first().map(text).as_ref() == Some(m)
                                    && row.get(1).map(text).as_ref() == Some(t)
                            })
                            .and_then(|row| row.get(2).and_then(number))
                            .unwrap_or(0.0)
                    })
                    .collect();
                (t.as_str(), values)
            })
            .collect();
        let axis: Vec<String> = minutes
            .iter()
            .map(|m| m.get(11..16).unwrap_or(m).to_string())
            .collect();
        tile.chart = chart::line(&axis, &series, "Events per minute");
        tile.table = table(&r, &[Kind::Text, Kind::Text, Kind::Count]);
    }
    tile
}

async fn trending_products(wh: &dyn Warehouse) -> Tile {
    let mut tile = Tile::new(
        "trending-products",
        "Trending products",
        "PROCESSED.TRENDING_PRODUCTS, the newest 1-hour window".into(),
    );
    let sql = "SELECT window_start, ranking, rank, product_id, events \
               FROM PROCESSED.TRENDING_PRODUCTS \
               WHERE window_size = '1h' AND window_start = \
                   (SELECT max(window_start) FROM PROCESSED.TRENDING_PRODUCTS WHERE window_size = '1h') \
               ORDER BY ranking DESC, rank";
    if let Some(r) = fetch(wh, &mut tile, sql).await {
        tile.table = table(
            &r,
            &[Kind::Text, Kind::Text, Kind::Count, Kind::Text, Kind::Count],
        );
    }
    tile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_bound_dates() {
        assert_eq!("all".parse::<Period>(), Ok(Period::All));
        assert_eq!("7d".parse::<Period>(), Ok(Period::LastDays(7)));
        let nov: Period = "2019-11".parse().unwrap();
        assert_eq!(nov.to_string(), "2019-11");
        assert!("0d".parse::<Period>().is_err());
        assert!("soon".parse::<Period>().unwrap_err().contains("`soon`"));
        let newest = NaiveDate::from_ymd_opt(2019, 11, 30);
        assert_eq!(
            date_filter(bounds(Period::LastDays(7), newest)),
            "event_date >= DATE '2019-11-24' AND event_date < DATE '2019-12-01'"
        );
        assert_eq!(
            date_filter(bounds(nov, newest)),
            "event_date >= DATE '2019-11-01' AND event_date < DATE '2019-12-01'"
        );
        assert_eq!(date_filter(bounds(Period::All, newest)), "1 = 1");
    }
}
