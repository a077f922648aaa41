//! Event-time tumbling windows over raw events, with a watermark: per partition the highest event
//! time seen, the lowest of those over the partitions (each partition is in event-time order; the
//! topic as a whole, read a batch per partition at a time, is not), less the allowed lateness. A window is emitted once the watermark passes its end. An event
//! for a window already emitted is late: it is counted (`late_events`) and folded in, and the
//! window is emitted again with the corrected figures, so nothing is lost; the landing table
//! keeps the last emission of each window. Emitted windows are kept for `retention` of event
//! time for such corrections; a late event for a window older than that is counted as dropped.
//!
//! Each window counts an event once, by `event_id`: a month streamed twice aggregates as once.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One window length, e.g. `1m` → 60,000 ms.
#[derive(Debug, Clone)]
pub(crate) struct WindowSpec {
    pub(crate) label: String,
    pub(crate) size_ms: i64,
}

/// The fields of an event the aggregates need.
#[derive(Debug, Clone)]
pub(crate) struct Event<'a> {
    pub(crate) time_ms: i64,
    pub(crate) event_type: &'a str,
    pub(crate) category_l1: Option<&'a str>,
    pub(crate) product_id: i64,
    pub(crate) price: f64,
    pub(crate) user_id: i64,
    pub(crate) session: Option<&'a str>,
    /// A hash of `event_id`, to count each event once.
    pub(crate) id: u64,
    /// When it was produced (the Kafka timestamp, ms), for latency.
    pub(crate) produced_ms: Option<i64>,
    /// Where it was read: (partition, offset), so that the consumer knows what it may commit.
    pub(crate) position: Option<(i32, i64)>,
}

#[derive(Debug, Default, Clone)]
struct Figures {
    events: i64,
    views: i64,
    carts: i64,
    purchases: i64,
    revenue: f64,
    users: HashSet<i64>,
    sessions: HashSet<u64>,
}

#[derive(Debug, Default)]
struct WindowState {
    seen: HashSet<u64>,
    /// (dimension index, value) → figures.
    dims: HashMap<(u8, String), Figures>,
    views: HashMap<i64, i64>,
    purchases: HashMap<i64, i64>,
    late: i64,
    emitted: bool,
    dirty: bool,
    /// The lowest offset per partition among events not yet emitted.
    pending_from: HashMap<i32, i64>,
}

pub(crate) const DIMENSIONS: [&str; 2] = ["event_type", "category_l1"];
/// The value of `category_l1` for events without a category.
pub(crate) const NO_CATEGORY: &str = "(none)";

/// One row of `window_aggregate.avsc`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AggregateRow {
    pub(crate) window_size: String,
    pub(crate) window_start: i64,
    pub(crate) window_end: i64,
    pub(crate) dimension: &'static str,
    pub(crate) dimension_value: String,
    pub(crate) events: i64,
    pub(crate) views: i64,
    pub(crate) carts: i64,
    pub(crate) purchases: i64,
    pub(crate) revenue: f64,
    pub(crate) distinct_users: i64,
    pub(crate) distinct_sessions: i64,
    pub(crate) view_to_cart: Option<f64>,
    pub(crate) cart_to_purchase: Option<f64>,
    pub(crate) late_events: i64,
}

/// One row of `trending_product.avsc`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrendingRow {
    pub(crate) window_size: String,
    pub(crate) window_start: i64,
    pub(crate) window_end: i64,
    pub(crate) ranking: &'static str,
    pub(crate) rank: i64,
    pub(crate) product_id: i64,
    pub(crate) events: i64,
}

/// What one drain emits, with the produce time of the event that closed the windows.
#[derive(Debug, Default)]
pub(crate) struct Emission {
    pub(crate) aggregates: Vec<AggregateRow>,
    pub(crate) trending: Vec<TrendingRow>,
    pub(crate) trigger_produced_ms: Option<i64>,
}

/// Counters over the whole stream.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct WindowStats {
    pub(crate) events: u64,
    pub(crate) duplicates: u64,
    pub(crate) late_events: u64,
    pub(crate) dropped_late: u64,
    pub(crate) windows_emitted: u64,
}

pub(crate) struct Aggregator {
    specs: Vec<WindowSpec>,
    lateness_ms: i64,
    retention_ms: i64,
    top_n: usize,
    /// (spec index, window start) → state.
    windows: BTreeMap<(usize, i64), WindowState>,
    /// The highest event time per partition.
    max_time: BTreeMap<i32, i64>,
    /// Partitions that must have been seen before there is a watermark.
    expected: Vec<i32>,
    trigger_produced_ms: Option<i64>,
    pub(crate) stats: WindowStats,
}

impl Aggregator {
    pub(crate) fn new(
        specs: Vec<WindowSpec>,
        lateness_ms: i64,
        retention_ms: i64,
        top_n: usize,
    ) -> Self {
        Aggregator {
            specs,
            lateness_ms,
            retention_ms,
            top_n,
            windows: BTreeMap::new(),
            max_time: BTreeMap::new(),
            expected: Vec::new(),
            trigger_produced_ms: None,
            stats: WindowStats::default(),
        }
    }

    /// Partitions with data to come: until each has shown an event there is no watermark.
    pub(crate) fn expect_partitions(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.expected = partitions.into_iter().collect();
    }

    /// The watermark: no event older than this is expected any more.
    pub(crate) fn watermark(&self) -> Option<i64> {
        if self.expected.iter().any(|p| !self.max_time.contains_key(p)) {
            return None;
        }
        self.max_time.values().min().map(|t| t - self.lateness_ms)
    }

    pub(crate) fn add(&mut self, e: &Event<'_>) {
        self.stats.events += 1;
        let watermark = self.watermark();
        let mut duplicate = true;
        let mut late = false;
        for (i, spec) in self.specs.iter().enumerate() {
            let start = e.time_ms.div_euclid(spec.size_ms) * spec.size_ms;
            let end = start + spec.size_ms;
            let closed = watermark.is_some_and(|w| end <= w);
            if closed && watermark.is_some_and(|w| end + self.retention_ms <= w) {
                // Too old even for a correction; it is in the topic, and in this count.
                if !self.windows.contains_key(&(i, start)) {
                    self.stats.dropped_late += 1;
                    duplicate = false;
                    continue;
                }
            }
            let w = self.windows.entry((i, start)).or_default();
            if !w.seen.insert(e.id) {
                continue;
            }
            duplicate = false;
            if closed {
                w.late += 1;
                late = true;
            }
            w.dirty = true;
            if let Some((p, off)) = e.position {
                let lowest = w.pending_from.entry(p).or_insert(off);
                *lowest = (*lowest).min(off);
            }
            let value = |d: usize| -> String {
                match d {
                    0 => e.event_type.to_string(),
                    _ => e.category_l1.unwrap_or(NO_CATEGORY).to_string(),
                }
            };
            for d in 0..DIMENSIONS.len() {
                let f = w.dims.entry((d as u8, value(d))).or_default();
                f.events += 1;
                match e.event_type {
                    "view" => f.views += 1,
                    "cart" => f.carts += 1,
                    "purchase" => {
                        f.purchases += 1;
                        f.revenue += e.price;
                    }
                    _ => {}
                }
                f.users.insert(e.user_id);
                if let Some(s) = e.session {
                    f.sessions.insert(xxhash_rust::xxh3::xxh3_64(s.as_bytes()));
                }
            }
            match e.event_type {
                "view" => *w.views.entry(e.product_id).or_default() += 1,
                "purchase" => *w.purchases.entry(e.product_id).or_default() += 1,
                _ => {}
            }
        }
        if duplicate {
            self.stats.duplicates += 1;
            return;
        }
        if late {
            self.stats.late_events += 1;
        }
        let partition = e.position.map_or(0, |(p, _)| p);
        let before = self.watermark();
        let m = self.max_time.entry(partition).or_insert(e.time_ms);
        *m = (*m).max(e.time_ms);
        if self.watermark() > before {
            self.trigger_produced_ms = e.produced_ms;
        }
    }

    /// Emits the windows the watermark has passed that changed since they were last emitted.
    pub(crate) fn drain_ready(&mut self) -> Emission {
        match self.watermark() {
            Some(w) => self.drain(w),
            None => Emission::default(),
        }
    }

    /// Emits every window that changed (the end of a bounded input: nothing more will come).
    pub(crate) fn drain_all(&mut self) -> Emission {
        self.drain(i64::MAX)
    }

    fn drain(&mut self, watermark: i64) -> Emission {
        let mut out = Emission {
            trigger_produced_ms: self.trigger_produced_ms,
            ..Default::default()
        };
        for (&(i, start), w) in self.windows.iter_mut() {
            let spec = &self.specs[i];
            let end = start + spec.size_ms;
            if end > watermark || !w.dirty {
                continue;
            }
            w.dirty = false;
            w.emitted = true;
            w.pending_from.clear();
            self.stats.windows_emitted += 1;
            let mut dims: Vec<(&(u8, String), &Figures)> = w.dims.iter().collect();
            dims.sort_by(|a, b| a.0.cmp(b.0));
            for ((d, value), f) in dims {
                out.aggregates.push(AggregateRow {
                    window_size: spec.label.clone(),
                    window_start: start,
                    window_end: end,
                    dimension: DIMENSIONS[*d as usize],
                    dimension_value: value.clone(),
                    events: f.events,
                    views: f.views,
                    carts: f.carts,
                    purchases: f.purchases,
                    revenue: f.revenue,
                    distinct_users: f.users.len() as i64,
                    distinct_sessions: f.sessions.len() as i64,
                    view_to_cart: (f.views > 0).then(|| f.carts as f64 / f.views as f64),
                    cart_to_purchase: (f.carts > 0).then(|| f.purchases as f64 / f.carts as f64),
                    late_events: w.late,
                });
            }
            for (ranking, counts) in [("views", &w.views), ("purchases", &w.purchases)] {
                let mut top: Vec<(i64, i64)> = counts.iter().map(|(p, n)| (*p, *n)).collect();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                for (rank, (product_id, events)) in top.into_iter().take(self.top_n).enumerate() {
                    out.trending.push(TrendingRow {
                        window_size: spec.label.clone(),
                        window_start: start,
                        window_end: end,
                        ranking,
                        rank: rank as i64 + 1,
                        product_id,
                        events,
                    });
                }
            }
        }
        // Forget emitted windows older than the retention.
        let retention = self.retention_ms;
        let specs = &self.specs;
        self.windows.retain(|&(i, start), w| {
            !(w.emitted && !w.dirty && start + specs[i].size_ms + retention <= watermark)
        });
        out
    }

    /// Per partition, the lowest offset of an event whose window has not been emitted yet: a
    /// consumer may commit up to there (and must not commit past it).
    pub(crate) fn pending_from(&self) -> HashMap<i32, i64> {
        let mut out: HashMap<i32, i64> = HashMap::new();
        for w in self.windows.values().filter(|w| w.dirty) {
            for (p, off) in &w.pending_from {
                let e = out.entry(*p).or_insert(*off);
                *e = (*e).min(*off);
            }
        }
        out
    }
}

/// Parses `1m`, `1h`, `30s`, `1d` into milliseconds.
pub(crate) fn parse_window(s: &str) -> Result<i64, String> {
    let d = s.parse::<crate::spec::Duration>()?.std();
    let ms = d.as_millis() as i64;
    if ms <= 0 || 86_400_000 % ms != 0 {
        return Err(format!(
            "window `{s}` must divide a day evenly (1m, 5m, 1h, …) so windows align across days"
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, ty: &'static str, id: u64) -> Event<'static> {
        Event {
            time_ms: t,
            event_type: ty,
            category_l1: Some("electronics"),
            product_id: 10 + (id % 3) as i64,
            price: 2.5,
            user_id: id as i64 % 2,
            session: Some("s"),
            id,
            produced_ms: Some(1000 + t),
            position: Some((0, id as i64)),
        }
    }

    fn agg() -> Aggregator {
        Aggregator::new(
            vec![WindowSpec {
                label: "1m".into(),
                size_ms: 60_000,
            }],
            5_000,
            3_600_000,
            2,
        )
    }

    #[test]
    fn windows_close_on_the_watermark_and_count_once() {
        let mut a = agg();
        a.add(&ev(1_000, "view", 1));
        a.add(&ev(2_000, "cart", 2));
        a.add(&ev(3_000, "purchase", 3));
        a.add(&ev(3_000, "purchase", 3)); // the same event again
        assert!(a.drain_ready().aggregates.is_empty());
        // 64 s: watermark 59 s, window [0, 60 s) still open.
        a.add(&ev(64_000, "view", 4));
        assert!(a.drain_ready().aggregates.is_empty());
        a.add(&ev(65_000, "view", 5));
        let out = a.drain_ready();
        let by_type: Vec<_> = out
            .aggregates
            .iter()
            .filter(|r| r.dimension == "event_type")
            .map(|r| (r.dimension_value.as_str(), r.events))
            .collect();
        assert_eq!(by_type, [("cart", 1), ("purchase", 1), ("view", 1)]);
        let cat = out
            .aggregates
            .iter()
            .find(|r| r.dimension == "category_l1")
            .unwrap();
        assert_eq!((cat.views, cat.carts, cat.purchases), (1, 1, 1));
        assert_eq!(cat.revenue, 2.5);
        assert_eq!(cat.distinct_users, 2);
        assert_eq!(cat.view_to_cart, Some(1.0));
        assert_eq!(out.trigger_produced_ms, Some(66_000));
        assert_eq!(out.trending.len(), 2);
        assert_eq!(a.stats.duplicates, 1);
    }

    #[test]
    fn a_late_event_is_counted_and_corrects_the_window() {
        let mut a = agg();
        a.add(&ev(1_000, "view", 1));
        a.add(&ev(70_000, "view", 2));
        assert_eq!(a.drain_ready().aggregates.len(), 2);
        // Window [60 s, 120 s) is still open: its event's offset may not be committed.
        assert_eq!(a.pending_from().get(&0), Some(&2));
        a.add(&ev(30_000, "purchase", 3)); // window [0, 60 s) was emitted
        assert_eq!(a.stats.late_events, 1);
        let out = a.drain_ready();
        let cat = out
            .aggregates
            .iter()
            .find(|r| r.dimension == "category_l1")
            .unwrap();
        assert_eq!((cat.events, cat.purchases, cat.late_events), (2, 1, 1));
        // Nothing changed since: nothing emitted.
        assert!(a.drain_ready().aggregates.is_empty());
        let rest = a.drain_all();
        assert!(rest.aggregates.iter().all(|r| r.window_start == 60_000));
    }

    #[test]
    fn the_watermark_waits_for_the_slowest_partition() {
        let mut a = agg();
        a.expect_partitions([0, 1]);
        let at = |t: i64, id: u64, p: i32| Event {
            position: Some((p, id as i64)),
            ..ev(t, "view", id)
        };
        // Partition 0 races ahead; partition 1 has not been seen: no watermark yet.
        a.add(&at(1_000, 1, 0));
        a.add(&at(200_000, 2, 0));
        assert_eq!(a.watermark(), None);
        a.add(&at(2_000, 3, 1));
        assert_eq!(a.watermark(), Some(2_000 - 5_000));
        // Partition 1 catches up: its old events were on time, not late.
        a.add(&at(90_000, 4, 1));
        assert_eq!(a.stats.late_events, 0);
        let out = a.drain_ready();
        let first = out
            .aggregates
            .iter()
            .find(|r| r.dimension == "category_l1")
            .unwrap();
        assert_eq!((first.window_start, first.events), (0, 2));
    }

    #[test]
    fn windows_must_divide_a_day() {
        assert_eq!(parse_window("1m").unwrap(), 60_000);
        assert_eq!(parse_window("1h").unwrap(), 3_600_000);
        assert!(parse_window("7m").is_err());
    }
}
