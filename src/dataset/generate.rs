//! A generator of realistic months of the e-commerce dataset, in its exact file format.
//!
//! Deterministic for a seed, exactly `rows_per_day` lines for every day. Events come from
//! simulated sessions: a user views products (category and product popularity are skewed, and a
//! session tends to stay in one category), sometimes puts one in the cart and buys it; a few
//! purchases come straight after the view. Traffic follows a daily cycle and buying a weekly one.
//! About a third of the events are in categories without a code, and about 14 % have no brand, as
//! in the real files. On request it adds the dirt real files have: exact duplicate lines, rows
//! without a session, and malformed lines of four kinds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Serialize;

use super::catalog::{BRANDS, CODED_CATEGORIES, UNCODED_MEDIAN_PRICE, UNCODED_WEIGHT};
use super::{HEADER, month_file_name};
use crate::spec::Month;

/// Dirt to inject, as rates per line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Dirt {
    /// Lines that are an exact copy of the line before.
    pub(crate) duplicate_rate: f64,
    /// Malformed lines (bad timestamp, non-numeric price, unknown event type, wrong column count,
    /// in equal shares).
    pub(crate) malformed_rate: f64,
    /// Sessions whose rows have an empty `user_session` (valid rows, as in the real files).
    pub(crate) empty_session_rate: f64,
}

impl Dirt {
    /// The same rate for each kind of dirt.
    pub(crate) fn at(rate: f64) -> Dirt {
        Dirt {
            duplicate_rate: rate,
            malformed_rate: rate,
            empty_session_rate: rate,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Options {
    pub(crate) rows_per_day: u64,
    pub(crate) seed: u64,
    pub(crate) dirt: Option<Dirt>,
}

/// What was written, including exactly how much dirt of each kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Stats {
    pub(crate) path: PathBuf,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) views: u64,
    pub(crate) carts: u64,
    pub(crate) purchases: u64,
    pub(crate) duplicates: u64,
    pub(crate) empty_session_rows: u64,
    /// Malformed lines by the reason `prepare_events` reports for them.
    pub(crate) malformed: BTreeMap<String, u64>,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.rows += other.rows;
        self.views += other.views;
        self.carts += other.carts;
        self.purchases += other.purchases;
        self.duplicates += other.duplicates;
        self.empty_session_rows += other.empty_session_rows;
        for (k, v) in &other.malformed {
            *self.malformed.entry(k.clone()).or_default() += v;
        }
    }
}

/// Reasons for malformed lines, as `prepare_events` names them.
pub(crate) const MALFORMED_KINDS: [&str; 4] = [
    "bad_timestamp",
    "bad_price",
    "unknown_event_type",
    "wrong_column_count",
];

const VIEW: u8 = 0;
const CART: u8 = 1;
const PURCHASE: u8 = 2;
const TYPE_NAMES: [&str; 3] = ["view", "cart", "purchase"];

/// Share of traffic per UTC hour (the store's evening peak is mid-afternoon UTC).
const HOURLY: [f64; 24] = [
    0.35, 0.25, 0.20, 0.25, 0.45, 0.75, 1.00, 1.20, 1.30, 1.35, 1.40, 1.45, 1.50, 1.55, 1.60, 1.65,
    1.60, 1.50, 1.35, 1.20, 1.00, 0.80, 0.60, 0.45,
];

/// Per view: chance of a cart, of a purchase after a cart, and of a purchase without one.
/// Gives about 94 % views, 4.5 % carts and 1.6 % purchases, 80 % of purchases after a cart.
const P_CART: f64 = 0.0455;
const P_BUY_AFTER_CART: f64 = 0.30;
const P_BUY_DIRECT: f64 = 0.0035;
/// More buying at weekends.
const WEEKEND_BUYING: f64 = 1.15;
/// Mean views per session, and the chance the next view stays in the same category.
const MEAN_VIEWS: f64 = 3.4;
const P_SAME_CATEGORY: f64 = 0.7;

struct Product {
    id: u32,
    category: u16,
    brand: &'static str,
    price_cents: u32,
}

struct Category {
    id: u64,
    code: &'static str,
    first_product: usize,
    /// Cumulative popularity of its products (Zipf).
    cdf: Vec<f32>,
}

/// A deterministic catalog of categories and products.
struct Catalog {
    categories: Vec<Category>,
    cdf: Vec<f64>,
    products: Vec<Product>,
}

fn cdf_of(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    let mut v: Vec<f64> = weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect();
    for x in &mut v {
        *x /= acc;
    }
    v
}

fn pick(cdf: &[f64], r: f64) -> usize {
    cdf.partition_point(|&c| c < r).min(cdf.len() - 1)
}

fn pick32(cdf: &[f32], r: f32) -> usize {
    cdf.partition_point(|&c| c < r).min(cdf.len() - 1)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Catalog {
    fn new(seed: u64) -> Catalog {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x00C0_FFEE);
        const UNCODED: usize = 120;
        const PRODUCTS: f64 = 40_000.0;
        // (code, weight, median price): coded categories as measured, then uncoded ones sharing
        // the uncoded weight with a Zipf skew.
        let zipf_total: f64 = (1..=UNCODED).map(|i| 1.0 / i as f64).sum();
        let mut specs: Vec<(&'static str, f64, u32)> = CODED_CATEGORIES
            .iter()
            .map(|(c, w, p)| (*c, f64::from(*w), *p))
            .collect();
        for i in 1..=UNCODED {
            let price = (f64::from(UNCODED_MEDIAN_PRICE) * (0.8 * normal(&mut rng)).exp()) as u32;
            specs.push((
                "",
                f64::from(UNCODED_WEIGHT) / i as f64 / zipf_total,
                price.max(100),
            ));
        }
        let total: f64 = specs.iter().map(|s| s.1).sum();
        let brand_cdf = cdf_of((1..=BRANDS.len()).map(|i| 1.0 / i as f64));
        let mut categories = Vec::with_capacity(specs.len());
        let mut products = Vec::new();
        let mut next_id: u32 = 1_000_000;
        for (ci, (code, weight, median)) in specs.iter().enumerate() {
            let n = ((PRODUCTS * (weight / total).powf(0.7)).ceil() as usize).clamp(5, 5000);
            let first = products.len();
            for _ in 0..n {
                next_id += 1 + rng.u32(0..700);
                let brand = if rng.f64() < 0.144 {
                    ""
                } else {
                    BRANDS[pick(&brand_cdf, rng.f64())]
                };
                let price =
                    (f64::from(*median) * (0.6 * normal(&mut rng)).exp()).clamp(50.0, 257_407.0);
                products.push(Product {
                    id: next_id,
                    category: ci as u16,
                    brand,
                    price_cents: price as u32,
                });
            }
            let cdf = cdf_of((1..=n).map(|i| (i as f64).powf(-1.1)))
                .into_iter()
                .map(|x| x as f32)
                .collect();
            categories.push(Category {
                id: 2_053_013_552_226_107_603 + rng.u64(0..3_000_000_000_000_000),
                code,
                first_product: first,
                cdf,
            });
        }
        let cdf = cdf_of(specs.iter().map(|s| s.1));
        Catalog {
            categories,
            cdf,
            products,
        }
    }

    fn product_in(&self, category: usize, rng: &mut fastrand::Rng) -> usize {
        let c = &self.categories[category];
        c.first_product + pick32(&c.cdf, rng.f32())
    }
}

#[derive(Clone, Copy)]
struct Event {
    second: u32,
    seq: u32,
    kind: u8,
    product: u32,
    user: u32,
    session: u128,
    no_session: bool,
}

/// A user id in the dataset's range, distinct for each index (an odd multiplier is a bijection
/// modulo a power of two).
fn user_id(index: u32) -> u64 {
    512_000_000 + u64::from(index.wrapping_mul(2_654_435_761) & ((1 << 26) - 1))
}

/// The clean events of one day, sorted by time.
fn day_events(
    catalog: &Catalog,
    rng: &mut fastrand::Rng,
    count: usize,
    users: u32,
    weekday: Weekday,
    empty_session_rate: f64,
    hour_cdf: &[f64],
) -> Vec<Event> {
    let buying = if matches!(weekday, Weekday::Sat | Weekday::Sun) {
        WEEKEND_BUYING
    } else {
        1.0
    };
    let (p_cart, p_direct) = (P_CART * buying, P_BUY_DIRECT * buying);
    let mut events: Vec<Event> = Vec::with_capacity(count + 16);
    let mut seq = 0u32;
    'sessions: while events.len() < count {
        let hour = pick(hour_cdf, rng.f64()) as u32;
        let mut t = hour * 3600 + rng.u32(0..3600);
        let user = rng.u32(0..users);
        let session = rng.u128(..);
        let no_session = rng.f64() < empty_session_rate;
        let mut category = pick(&catalog.cdf, rng.f64());
        // Geometric number of views with the wanted mean.
        let mut views = 1;
        while rng.f64() < 1.0 - 1.0 / MEAN_VIEWS {
            views += 1;
        }
        let mut push = |t: u32, kind: u8, product: usize, events: &mut Vec<Event>| -> bool {
            if t >= 86_400 || events.len() >= count {
                return false;
            }
            events.push(Event {
                second: t,
                seq,
                kind,
                product: product as u32,
                user,
                session,
                no_session,
            });
            seq += 1;
            true
        };
        for _ in 0..views {
            if rng.f64() > P_SAME_CATEGORY {
                category = pick(&catalog.cdf, rng.f64());
            }
            let product = catalog.product_in(category, rng);
            if !push(t, VIEW, product, &mut events) {
                continue 'sessions;
            }
            let r = rng.f64();
            if r < p_cart {
                t += 5 + rng.u32(0..55);
                if !push(t, CART, product, &mut events) {
                    continue 'sessions;
                }
                if rng.f64() < P_BUY_AFTER_CART {
                    t += 10 + rng.u32(0..110);
                    if !push(t, PURCHASE, product, &mut events) {
                        continue 'sessions;
                    }
                }
            } else if r < p_cart + p_direct {
                t += 10 + rng.u32(0..110);
                if !push(t, PURCHASE, product, &mut events) {
                    continue 'sessions;
                }
            }
            // Strictly later than the previous event: no two events of a session are identical.
            t += 1 + (rng.f64().max(1e-9).ln() * -40.0) as u32;
        }
    }
    events.sort_unstable_by_key(|e| (e.second, e.seq));
    events
}

/// Appends `n` in decimal.
fn num(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn two(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

fn uuid(out: &mut Vec<u8>, v: u128) {
    // Version 4, RFC 4122 variant, like the dataset's sessions.
    let v = (v & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = b"0123456789abcdef";
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push(b'-');
        }
        out.push(hex[((v >> (124 - 4 * i)) & 0xF) as usize]);
    }
}

fn price(out: &mut Vec<u8>, cents: u32) {
    num(out, cents / 100);
    out.push(b'.');
    two(out, cents % 100);
}

/// Writes one event as a CSV line (without the newline).
fn line(out: &mut Vec<u8>, day: &[u8], catalog: &Catalog, e: &Event) {
    let p = &catalog.products[e.product as usize];
    let c = &catalog.categories[p.category as usize];
    out.extend_from_slice(day);
    out.push(b' ');
    two(out, e.second / 3600);
    out.push(b':');
    two(out, e.second / 60 % 60);
    out.push(b':');
    two(out, e.second % 60);
    out.extend_from_slice(b" UTC,");
    out.extend_from_slice(TYPE_NAMES[e.kind as usize].as_bytes());
    out.push(b',');
    num(out, p.id);
    out.push(b',');
    num(out, c.id);
    out.push(b',');
    out.extend_from_slice(c.code.as_bytes());
    out.push(b',');
    out.extend_from_slice(p.brand.as_bytes());
    out.push(b',');
    price(out, p.price_cents);
    out.push(b',');
    num(out, user_id(e.user));
    out.push(b',');
    if !e.no_session {
        uuid(out, e.session);
    }
}

/// Turns a well-formed line into a malformed one of the given kind.
fn corrupt(clean: &[u8], kind: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    let text = String::from_utf8_lossy(clean);
    let mut fields: Vec<String> = text.split(',').map(str::to_string).collect();
    match kind {
        0 => {
            const BAD: [&str; 4] = [
                "2019-13-45 25:61:00 UTC",
                "not a timestamp",
                "2019-10-01T12:00:00",
                "",
            ];
            fields[0] = BAD[rng.usize(0..BAD.len())].to_string();
        }
        1 => {
            const BAD: [&str; 4] = ["12,99", "n/a", "", "$45.00"];
            fields[6] = BAD[rng.usize(0..BAD.len())].to_string();
            if fields[6].contains(',') {
                // Quote it so the column count stays right: the price itself is what is wrong.
                fields[6] = format!("\"{}\"", fields[6]);
            }
        }
        2 => {
            const BAD: [&str; 3] = ["click", "wishlist", "VIEW"];
            fields[1] = BAD[rng.usize(0..BAD.len())].to_string();
        }
        _ => {
            if rng.bool() {
                fields.pop();
            } else {
                fields.push("extra".to_string());
            }
        }
    }
    fields.join(",").into_bytes()
}

/// Generates one month into `out_dir`, named as the dataset names it. The file appears
/// atomically (written aside, then renamed).
pub(crate) fn write_month(month: Month, opts: &Options, out_dir: &Path) -> std::io::Result<Stats> {
    write_month_until(
        month,
        opts,
        out_dir,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

/// As [`write_month`], stopping between days once `cancel` turns true (no file is left).
pub(crate) fn write_month_until(
    month: Month,
    opts: &Options,
    out_dir: &Path,
    cancel: &std::sync::atomic::AtomicBool,
) -> std::io::Result<Stats> {
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join(month_file_name(month));
    let tmp = out_dir.join(format!(".{}.partial", month_file_name(month)));
    let file = std::fs::File::create(&tmp)?;
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        flate2::Compression::fast(),
    );
    let catalog = Catalog::new(opts.seed);
    let hour_cdf = cdf_of(HOURLY.iter().copied());
    let days = month.days();
    let users = ((opts.rows_per_day * u64::from(days)) / 14).clamp(2_000, 60_000_000) as u32;
    let mut stats = Stats {
        path: path.clone(),
        ..Stats::default()
    };
    gz.write_all(HEADER.as_bytes())?;
    gz.write_all(b"\n")?;

    // Generation and compression overlap: a second thread compresses day d while day d+1 is
    // generated (compression is the larger half of the work).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let writer = std::thread::spawn(move || -> std::io::Result<_> {
        for buf in rx {
            gz.write_all(&buf)?;
        }
        gz.finish()?.into_inner().map_err(|e| e.into_error())
    });
    let mut result = Ok(());
    for d in 0..days {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            result = Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled",
            ));
            break;
        }
        let date = month.first_day() + chrono::Duration::days(i64::from(d));
        let (buf, day_stats) = day(&catalog, opts, date, users, &hour_cdf);
        stats.add(&day_stats);
        if tx.send(buf).is_err() {
            result = Err(std::io::Error::other("the compressing thread stopped"));
            break;
        }
    }
    drop(tx);
    let written = writer
        .join()
        .map_err(|_| std::io::Error::other("the compressing thread panicked"))?;
    let file = written?;
    if let Err(e) = result {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    stats.bytes = std::fs::metadata(&path)?.len();
    Ok(stats)
}

/// One day's lines: exactly `rows_per_day`, dirt included.
fn day(
    catalog: &Catalog,
    opts: &Options,
    date: NaiveDate,
    users: u32,
    hour_cdf: &[f64],
) -> (Vec<u8>, Stats) {
    let day_seed = opts
        .seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(date.num_days_from_ce() as u64);
    let mut rng = fastrand::Rng::with_seed(day_seed);
    let n = opts.rows_per_day as usize;
    let dirt = opts.dirt.unwrap_or(Dirt::at(0.0));
    // Decide which line slots are dirt first, so that clean + dirt = exactly n lines.
    let mut dups = 0usize;
    let mut bad = [0usize; 4];
    for _ in 0..n {
        let r = rng.f64();
        if r < dirt.duplicate_rate {
            dups += 1;
        } else if r < dirt.duplicate_rate + dirt.malformed_rate {
            bad[rng.usize(0..4)] += 1;
        }
    }
    let bad_total: usize = bad.iter().sum();
    let clean = n - dups - bad_total;
    let events = day_events(
        catalog,
        &mut rng,
        clean,
        users,
        date.weekday(),
        dirt.empty_session_rate,
        hour_cdf,
    );
    // Slots after which a duplicate or a malformed line is inserted.
    let mut extra: Vec<(usize, Option<usize>)> = Vec::with_capacity(dups + bad_total);
    if !events.is_empty() {
        for _ in 0..dups {
            extra.push((rng.usize(0..events.len()), None));
        }
        for (kind, count) in bad.iter().enumerate() {
            for _ in 0..*count {
                extra.push((rng.usize(0..events.len()), Some(kind)));
            }
        }
    }
    extra.sort_unstable();

    let day_text = date.format("%Y-%m-%d").to_string().into_bytes();
    let mut out = Vec::with_capacity(n * 130);
    let mut stats = Stats::default();
    let mut next_extra = extra.iter().peekable();
    let mut current = Vec::with_capacity(160);
    for (i, e) in events.iter().enumerate() {
        current.clear();
        line(&mut current, &day_text, catalog, e);
        out.extend_from_slice(&current);
        out.push(b'\n');
        stats.rows += 1;
        match e.kind {
            VIEW => stats.views += 1,
            CART => stats.carts += 1,
            _ => stats.purchases += 1,
        }
        if e.no_session {
            stats.empty_session_rows += 1;
        }
        while let Some((_, kind)) = next_extra.next_if(|(at, _)| *at == i) {
            match kind {
                None => {
                    out.extend_from_slice(&current);
                    stats.duplicates += 1;
                }
                Some(k) => {
                    out.extend_from_slice(&corrupt(&current, *k, &mut rng));
                    *stats
                        .malformed
                        .entry(MALFORMED_KINDS[*k].to_string())
                        .or_default() += 1;
                }
            }
            out.push(b'\n');
            stats.rows += 1;
        }
    }
    (out, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_gz(path: &Path) -> String {
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    fn generated(
        month: &str,
        rows: u64,
        seed: u64,
        dirt: Option<Dirt>,
    ) -> (tempfile::TempDir, Stats) {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            rows_per_day: rows,
            seed,
            dirt,
        };
        let stats = write_month(month.parse().unwrap(), &opts, dir.path()).unwrap();
        (dir, stats)
    }

    #[test]
    fn exact_name_header_and_rows_per_day() {
        let (dir, stats) = generated("2020-02", 500, 1, None);
        assert_eq!(stats.path, dir.path().join("2020-Feb.csv.gz"));
        let text = read_gz(&stats.path);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let mut per_day: BTreeMap<&str, usize> = BTreeMap::new();
        let mut last = "";
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 9, "{l}");
            assert!(f[0].ends_with(" UTC") && f[0].len() == 23, "{l}");
            assert!(f[0] >= last, "rows in event-time order");
            last = f[0];
            assert!(["view", "cart", "purchase"].contains(&f[1]), "{l}");
            assert!(
                f[2].parse::<u64>().is_ok() && f[3].parse::<u64>().is_ok(),
                "{l}"
            );
            let (units, cents) = f[6].split_once('.').unwrap();
            assert!(units.parse::<u32>().is_ok() && cents.len() == 2, "{l}");
            assert!(f[7].parse::<u64>().is_ok(), "{l}");
            assert_eq!(f[8].len(), 36, "{l}");
            *per_day.entry(&f[0][..10]).or_default() += 1;
        }
        assert_eq!(per_day.len(), 29, "every day of February 2020");
        assert!(per_day.values().all(|&n| n == 500), "{per_day:?}");
        assert_eq!(stats.rows, 29 * 500);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (_a, s1) = generated("2019-10", 300, 42, Some(Dirt::at(0.01)));
        let (_b, s2) = generated("2019-10", 300, 42, Some(Dirt::at(0.01)));
        let (_c, s3) = generated("2019-10", 300, 43, Some(Dirt::at(0.01)));
        assert_eq!(read_gz(&s1.path), read_gz(&s2.path));
        assert_ne!(read_gz(&s1.path), read_gz(&s3.path));
    }

    #[test]
    fn distribution_is_close_to_the_real_data() {
        let (_d, stats) = generated("2019-11", 4000, 7, None);
        let text = read_gz(&stats.path);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        let n = rows.len() as f64;
        let share = |t: &str| rows.iter().filter(|r| r[1] == t).count() as f64 / n;
        let (views, carts, buys) = (share("view"), share("cart"), share("purchase"));
        assert!((0.92..0.96).contains(&views), "views {views}");
        assert!((0.02..0.07).contains(&carts), "carts {carts}");
        assert!((0.010..0.022).contains(&buys), "purchases {buys}");
        let no_code = rows.iter().filter(|r| r[4].is_empty()).count() as f64 / n;
        let no_brand = rows.iter().filter(|r| r[5].is_empty()).count() as f64 / n;
        assert!(
            (0.25..0.40).contains(&no_code),
            "empty category_code {no_code}"
        );
        assert!((0.08..0.22).contains(&no_brand), "empty brand {no_brand}");

        // Every purchase follows a view of the same product in the same session, and most
        // follow a cart too.
        let mut seen: std::collections::HashMap<(&str, &str), (bool, bool)> = Default::default();
        let (mut purchases, mut after_cart) = (0, 0);
        for r in &rows {
            let key = (r[8], r[2]);
            let entry = seen.entry(key).or_default();
            match r[1] {
                "view" => entry.0 = true,
                "cart" => {
                    assert!(entry.0, "cart without a view: {r:?}");
                    entry.1 = true
                }
                _ => {
                    assert!(entry.0, "purchase without a view: {r:?}");
                    purchases += 1;
                    after_cart += entry.1 as usize;
                }
            }
        }
        assert!(
            after_cart as f64 / purchases as f64 > 0.6,
            "{after_cart}/{purchases}"
        );

        // Skewed popularity: the top 1 % of products get a large share of views.
        let mut by_product: std::collections::HashMap<&str, usize> = Default::default();
        for r in rows.iter().filter(|r| r[1] == "view") {
            *by_product.entry(r[2]).or_default() += 1;
        }
        let mut counts: Vec<usize> = by_product.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = counts.iter().take(counts.len() / 100).sum();
        let total: usize = counts.iter().sum();
        assert!(
            top as f64 / total as f64 > 0.15,
            "top 1% products: {}",
            top as f64 / total as f64
        );

        // Daily cycle: afternoons are busier than nights.
        let hour = |h: &str| rows.iter().filter(|r| &r[0][11..13] == h).count();
        assert!(
            hour("15") > 3 * hour("02"),
            "{} vs {}",
            hour("15"),
            hour("02")
        );
        // Prices by category: smartphones cost more than headphones.
        let median = |code: &str| {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| r[4] == code)
                .map(|r| r[6].parse().unwrap())
                .collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        assert!(median("electronics.smartphone") > 2.0 * median("electronics.audio.headphone"));
    }

    #[test]
    fn dirt_is_counted_exactly() {
        let (_d, stats) = generated("2019-10", 2000, 3, Some(Dirt::at(0.01)));
        let text = read_gz(&stats.path);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines.len(), 31 * 2000);
        let dups = lines.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        assert_eq!(dups, stats.duplicates);
        assert!(stats.duplicates > 300, "{stats:?}");
        let wrong_cols = lines
            .iter()
            .filter(|l| l.split(',').count() != 9 && !l.contains('"'))
            .count() as u64;
        assert_eq!(wrong_cols, stats.malformed["wrong_column_count"]);
        let unknown = lines
            .iter()
            .filter(|l| {
                l.split(',')
                    .nth(1)
                    .is_some_and(|t| ["click", "wishlist", "VIEW"].contains(&t))
            })
            .count() as u64;
        assert_eq!(unknown, stats.malformed["unknown_event_type"]);
        assert!(
            MALFORMED_KINDS.iter().all(|k| stats.malformed[*k] > 50),
            "{stats:?}"
        );
        let empty_sessions = lines.iter().filter(|l| l.ends_with(',')).count() as u64;
        assert!(
            empty_sessions >= stats.empty_session_rows,
            "{empty_sessions} {stats:?}"
        );
        assert!(stats.empty_session_rows > 0);
    }
}
