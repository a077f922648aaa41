//! Preparation of raw monthly files into clean Parquet partitioned by day (what the seed did with
//! PySpark), built on polars.
//!
//! Memory stays bounded whatever the input size, and the work is pipelined on two cores: one
//! thread inflates the gzip stream (a gzip stream inflates on one core only), the other parses,
//! cleans and hands finished blocks to polars for Parquet. polars' own CSV reader is not used for
//! the raw text because it cannot stream a gzip file (it inflates it whole into memory) and it
//! cannot say why a row is bad; every row that cannot be parsed goes to a quarantine file with
//! its reason instead of being dropped.
//!
//! Exact duplicates: the real files are in event-time order, so duplicates share one
//! `event_time`, and a set of the current second's events finds them without a month-wide hash
//! table. Days whose rows arrive out of order are deduplicated, sorted and limited again per day
//! with polars after the pass (one day in memory at a time), so unordered input stays correct.
//!
//! One file: one streaming pass over a month and the per-day finishing that follows it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::{COLUMNS, EVENT_TYPES, HEADER};

#[derive(Debug, thiserror::Error)]
pub(crate) enum PrepareError {
    #[error("cancelled")]
    Cancelled,
    #[error("no input file matches `{0}`")]
    NoInput(String),
    #[error(
        "{file} is not gzip-compressed (its name ends in .gz but it does not start with the gzip magic bytes)"
    )]
    NotGzip { file: String },
    #[error(
        "{file} is truncated or corrupt: the gzip stream ends unexpectedly after line {line} ({detail})"
    )]
    Truncated {
        file: String,
        line: u64,
        detail: String,
    },
    #[error("{file}:1: unexpected header `{found}`; expected `{HEADER}`")]
    BadHeader { file: String, found: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing Parquet to {path}: {message}")]
    Parquet { path: String, message: String },
}

/// A bad input file stays bad on a retry; a failed write (a full disk, say) may not.
impl From<PrepareError> for crate::error::Error {
    fn from(e: PrepareError) -> Self {
        use crate::error::{Class, Error};
        let class = match e {
            PrepareError::NotGzip { .. }
            | PrepareError::BadHeader { .. }
            | PrepareError::Truncated { .. }
            | PrepareError::NoInput(_)
            | PrepareError::Cancelled => Class::Fatal,
            PrepareError::Io { .. } | PrepareError::Parquet { .. } => Class::Transient,
        };
        Error::new(class, e.to_string())
    }
}

fn io(file: &Path) -> impl FnOnce(std::io::Error) -> PrepareError + '_ {
    move |source| PrepareError::Io {
        file: file.display().to_string(),
        source,
    }
}

/// What `prepare_events` did: the task's output.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct Report {
    pub(crate) rows_read: u64,
    pub(crate) rows_written: u64,
    pub(crate) duplicates_removed: u64,
    /// Rejected rows by reason; each is in the quarantine file with its line.
    pub(crate) rejected: BTreeMap<String, u64>,
    /// Clean rows beyond `rows_per_day` of their day.
    pub(crate) rows_over_limit: u64,
    pub(crate) days: usize,
    pub(crate) output: String,
    pub(crate) quarantine: Option<String>,
    pub(crate) files: usize,
}

/// Why a row was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    WrongColumnCount,
    BadTimestamp,
    UnknownEventType,
    BadId,
    BadPrice,
}

impl Reject {
    fn name(self) -> &'static str {
        match self {
            Reject::WrongColumnCount => "wrong_column_count",
            Reject::BadTimestamp => "bad_timestamp",
            Reject::UnknownEventType => "unknown_event_type",
            Reject::BadId => "bad_id",
            Reject::BadPrice => "bad_price",
        }
    }
}

/// Splits a CSV line into at most 10 fields (quotes honoured). `None` when it has 10 or more.
fn split(line: &str) -> Result<[&str; 9], usize> {
    let mut out = [""; 9];
    let mut n = 0;
    if !line.contains('"') {
        for f in line.split(',') {
            if n == 9 {
                return Err(line.split(',').count());
            }
            out[n] = f;
            n += 1;
        }
    } else {
        let bytes = line.as_bytes();
        let (mut start, mut quoted) = (0, false);
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    if n == 9 {
                        return Err(n + 1);
                    }
                    out[n] = line[start..i].trim_matches('"');
                    n += 1;
                    start = i + 1;
                }
                _ => {}
            }
        }
        if n == 9 {
            return Err(n + 1);
        }
        out[n] = line[start..].trim_matches('"');
        n += 1;
    }
    if n == 9 { Ok(out) } else { Err(n) }
}

/// `2019-10-01 00:00:04 UTC` → (days since 1970-01-01, seconds since the epoch).
fn parse_time(s: &str, cache: &mut (Vec<u8>, i32)) -> Option<(i32, i64)> {
    let b = s.as_bytes();
    if b.len() != 23 || &b[19..] != b" UTC" || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let d2 = |i: usize| -> Option<u32> {
        let (x, y) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
        (x < 10 && y < 10).then(|| u32::from(x) * 10 + u32::from(y))
    };
    let (h, m, sec) = (d2(11)?, d2(14)?, d2(17)?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let day = if cache.0 == b[..10] {
        cache.1
    } else {
        let y = d2(0)? * 100 + d2(2)?;
        let date = chrono::NaiveDate::from_ymd_opt(y as i32, d2(5)?, d2(8)?)?;
        let day = (date - chrono::NaiveDate::default()).num_days() as i32;
        cache.0.clear();
        cache.0.extend_from_slice(&b[..10]);
        cache.1 = day;
        day
    };
    Some((
        day,
        i64::from(day) * 86_400 + i64::from(h * 3600 + m * 60 + sec),
    ))
}

fn parse_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_price(s: &str) -> Option<f64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    s.parse::<f64>().ok().filter(|p| p.is_finite())
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type KeySet = HashSet<u128, BuildHasherDefault<Prehashed>>;

/// Clean rows of one day, column by column.
struct DayRows {
    time: Vec<i64>,
    event_type: StringChunkedBuilder,
    product: Vec<i64>,
    category: Vec<i64>,
    code: StringChunkedBuilder,
    brand: StringChunkedBuilder,
    price: Vec<f64>,
    user: Vec<i64>,
    session: StringChunkedBuilder,
    l1: StringChunkedBuilder,
    l2: StringChunkedBuilder,
    event_id: StringChunkedBuilder,
}

const FLUSH_ROWS: usize = 1 << 20;

impl DayRows {
    fn new() -> DayRows {
        let s = |name: &str| StringChunkedBuilder::new(name.into(), 1024);
        DayRows {
            time: Vec::new(),
            event_type: s("event_type"),
            product: Vec::new(),
            category: Vec::new(),
            code: s("category_code"),
            brand: s("brand"),
            price: Vec::new(),
            user: Vec::new(),
            session: s("user_session"),
            l1: s("category_l1"),
            l2: s("category_l2"),
            event_id: s("event_id"),
        }
    }

    fn len(&self) -> usize {
        self.time.len()
    }

    fn frame(self, day: i32) -> PolarsResult<DataFrame> {
        let n = self.time.len();
        let time = Int64Chunked::from_vec("event_time".into(), self.time)
            .into_datetime(TimeUnit::Microseconds, None)
            .into_series();
        let date = Int32Chunked::from_vec("event_date".into(), vec![day; n])
            .into_date()
            .into_series();
        let cols: Vec<Column> = vec![
            time.into(),
            self.event_type.finish().into_series().into(),
            Int64Chunked::from_vec("product_id".into(), self.product)
                .into_series()
                .into(),
            Int64Chunked::from_vec("category_id".into(), self.category)
                .into_series()
                .into(),
            self.code.finish().into_series().into(),
            self.brand.finish().into_series().into(),
            Float64Chunked::from_vec("price".into(), self.price)
                .into_series()
                .into(),
            Int64Chunked::from_vec("user_id".into(), self.user)
                .into_series()
                .into(),
            self.session.finish().into_series().into(),
            date.into(),
            self.l1.finish().into_series().into(),
            self.l2.finish().into_series().into(),
            self.event_id.finish().into_series().into(),
        ];
        DataFrame::new(n, cols)
    }
}

/// Options of one preparation.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) inputs: Vec<PathBuf>,
    pub(crate) output: PathBuf,
    pub(crate) rows_per_day: Option<u64>,
}

/// Expands a path or a glob (`data/raw/*.csv.gz`) into the files it names, sorted.
pub(crate) fn expand(pattern: &str) -> Result<Vec<PathBuf>, PrepareError> {
    let mut files: Vec<PathBuf> = if pattern.contains(['*', '?', '[']) {
        glob::glob(pattern)
            .map_err(|e| PrepareError::NoInput(format!("{pattern} ({e})")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else if Path::new(pattern).is_file() {
        vec![PathBuf::from(pattern)]
    } else {
        Vec::new()
    };
    files.sort();
    if files.is_empty() {
        return Err(PrepareError::NoInput(pattern.to_string()));
    }
    Ok(files)
}

struct State {
    report: Report,
    rows_per_day: Option<u64>,
    days: BTreeMap<i32, DayRows>,
    kept: HashMap<i32, u64>,
    unordered: BTreeSet<i32>,
    parts: BTreeMap<i32, Vec<PathBuf>>,
    staging: PathBuf,
    second: i64,
    seen_this_second: KeySet,
    quarantine: Option<BufWriter<File>>,
    key: Vec<u8>,
    time_cache: (Vec<u8>, i32),
    lower: String,
    last_day: Option<i32>,
}

impl State {
    fn reject(
        &mut self,
        file: &Path,
        line_no: u64,
        reason: Reject,
        line: &str,
    ) -> Result<(), PrepareError> {
        *self
            .report
            .rejected
            .entry(reason.name().to_string())
            .or_default() += 1;
        if self.quarantine.is_none() {
            let path = self.staging.join("_quarantine.csv");
            let mut w = BufWriter::new(File::create(&path).map_err(io(&path))?);
            writeln!(w, "file,line,reason,raw").map_err(io(&path))?;
            self.quarantine = Some(w);
        }
        let q = self.quarantine.as_mut().expect("created above");
        let raw = line.replace('"', "\"\"");
        writeln!(
            q,
            "{},{line_no},{},\"{raw}\"",
            file.display(),
            reason.name()
        )
        .map_err(io(&self.staging))
    }

    fn row(&mut self, file: &Path, line_no: u64, line: &str) -> Result<(), PrepareError> {
        self.report.rows_read += 1;
        let f = match split(line) {
            Ok(f) => f,
            Err(_) => return self.reject(file, line_no, Reject::WrongColumnCount, line),
        };
        let Some((day, secs)) = parse_time(f[0], &mut self.time_cache) else {
            return self.reject(file, line_no, Reject::BadTimestamp, line);
        };
        let event_type = f[1].trim();
        if !EVENT_TYPES.contains(&event_type) {
            return self.reject(file, line_no, Reject::UnknownEventType, line);
        }
        let (Some(product), Some(category), Some(user)) = (
            parse_id(f[2].trim()),
            parse_id(f[3].trim()),
            parse_id(f[7].trim()),
        ) else {
            return self.reject(file, line_no, Reject::BadId, line);
        };
        let Some(price) = parse_price(f[6].trim()) else {
            return self.reject(file, line_no, Reject::BadPrice, line);
        };
        let code = Some(f[4].trim()).filter(|s| !s.is_empty());
        let brand_raw = f[5].trim();
        let brand = if brand_raw.bytes().any(|b| b.is_ascii_uppercase()) {
            self.lower.clear();
            self.lower.push_str(&brand_raw.to_lowercase());
            Some(self.lower.as_str())
        } else {
            Some(brand_raw).filter(|s| !s.is_empty())
        };
        let session = Some(f[8].trim()).filter(|s| !s.is_empty());

        // The cleaned event, as bytes: its identity for dedupe and for `event_id`.
        self.key.clear();
        self.key.extend_from_slice(&secs.to_le_bytes());
        for part in [
            event_type,
            f[2].trim(),
            f[3].trim(),
            code.unwrap_or(""),
            brand.unwrap_or(""),
            f[6].trim(),
            f[7].trim(),
            session.unwrap_or(""),
        ] {
            self.key.extend_from_slice(part.as_bytes());
            self.key.push(0x1f);
        }
        let fingerprint = xxhash_rust::xxh3::xxh3_128(&self.key);

        if secs != self.second {
            if secs < self.second {
                // Out of order: this day is checked again, whole, after the pass.
                self.unordered.insert(day);
            }
            self.second = secs;
            self.seen_this_second.clear();
        }
        if !self.seen_this_second.insert(fingerprint) {
            self.report.duplicates_removed += 1;
            return Ok(());
        }
        if let Some(limit) = self.rows_per_day {
            let kept = self.kept.entry(day).or_default();
            if *kept >= limit && !self.unordered.contains(&day) {
                self.report.rows_over_limit += 1;
                return Ok(());
            }
            *kept += 1;
        }

        let rows = self.days.entry(day).or_insert_with(DayRows::new);
        rows.time.push(secs * 1_000_000);
        rows.event_type.append_value(event_type);
        rows.product.push(product);
        rows.category.push(category);
        rows.code.append_option(code);
        rows.brand.append_option(brand);
        rows.price.push(price);
        rows.user.push(user);
        rows.session.append_option(session);
        let mut levels = code.unwrap_or("").split('.');
        rows.l1
            .append_option(levels.next().filter(|s| !s.is_empty()));
        rows.l2.append_option(levels.next());
        let id = xxhash_rust::xxh3::xxh3_64(&self.key);
        let mut hex = [0u8; 16];
        for (i, b) in hex.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xF) as usize];
        }
        rows.event_id
            .append_value(std::str::from_utf8(&hex).unwrap_or_default());
        if rows.len() >= FLUSH_ROWS {
            self.flush_day(day)?;
        }
        // Ordered input closes a day when the next begins; unordered input keeps a few open.
        if self.last_day.is_some_and(|prev| day > prev) {
            let prev = self.last_day.unwrap_or(day);
            self.flush_day(prev)?;
        }
        self.last_day = Some(day);
        if self.days.len() > 4 {
            let oldest = *self.days.keys().next().unwrap_or(&day);
            self.flush_day(oldest)?;
        }
        Ok(())
    }

    fn flush_day(&mut self, day: i32) -> Result<(), PrepareError> {
        let Some(rows) = self.days.remove(&day) else {
            return Ok(());
        };
        if rows.len() == 0 {
            return Ok(());
        }
        let dir = self.staging.join(day_dir(day));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let parts = self.parts.entry(day).or_default();
        let path = dir.join(format!("part-{:05}.parquet", parts.len()));
        let mut df = rows.frame(day).map_err(|e| parquet_err(&path, e))?;
        write_parquet(&path, &mut df)?;
        parts.push(path);
        Ok(())
    }
}

fn day_dir(day: i32) -> String {
    let date = chrono::NaiveDate::default() + chrono::Duration::days(i64::from(day));
    format!("event_date={}", date.format("%Y-%m-%d"))
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> PrepareError {
    PrepareError::Parquet {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<(), PrepareError> {
    crate::parquet::write(path, df).map_err(|message| PrepareError::Parquet {
        path: path.display().to_string(),
        message,
    })
}

/// Streams a file's text in blocks that end at line ends, inflating on a separate thread.
fn blocks(
    path: &Path,
) -> Result<std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>, PrepareError> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io(path))?;
    let gzip = n == 2 && magic == [0x1f, 0x8b];
    let named_gz = path.extension().is_some_and(|e| e == "gz");
    if named_gz && !gzip {
        return Err(PrepareError::NotGzip {
            file: path.display().to_string(),
        });
    }
    let file = File::open(path).map_err(io(path))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    std::thread::spawn(move || {
        let mut reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::with_capacity(1 << 20, file),
            ))
        } else {
            Box::new(file)
        };
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let mut buf = std::mem::take(&mut carry);
            let start = buf.len();
            buf.resize(start + (4 << 20), 0);
            let mut filled = start;
            // Fill the block as far as the reader goes.
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        buf.truncate(filled);
                        // Hand over the complete lines read so far, then the error.
                        if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
                            buf.truncate(end + 1);
                            let _ = tx.send(Ok(buf));
                        }
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            buf.truncate(filled);
            if filled == start {
                if !buf.is_empty() {
                    let _ = tx.send(Ok(buf));
                }
                return;
            }
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(end) if filled == start + (4 << 20) => {
                    carry = buf[end + 1..].to_vec();
                    buf.truncate(end + 1);
                }
                _ => {}
            }
            if tx.send(Ok(buf)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Prepares the inputs into `output` (replaced as a whole when the preparation succeeds). Stops
/// at the next block of input once `cancel` turns true, leaving the old output as it was.
pub(crate) fn prepare(
    opts: &Options,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Report, PrepareError> {
    let staging = opts.output.with_file_name(format!(
        ".{}.partial-{}",
        opts.output
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("prepared"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let result = run(opts, &staging, cancel);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn run(
    opts: &Options,
    staging: &Path,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Report, PrepareError> {
    let mut st = State {
        report: Report::default(),
        rows_per_day: opts.rows_per_day,
        days: BTreeMap::new(),
        kept: HashMap::new(),
        unordered: BTreeSet::new(),
        parts: BTreeMap::new(),
        staging: staging.to_path_buf(),
        second: i64::MIN,
        seen_this_second: KeySet::default(),
        quarantine: None,
        key: Vec::with_capacity(256),
        time_cache: (Vec::new(), 0),
        lower: String::new(),
        last_day: None,
    };
    for file in &opts.inputs {
        let rx = blocks(file)?;
        let mut line_no: u64 = 0;
        for block in rx {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(PrepareError::Cancelled);
            }
            let block = block.map_err(|e| PrepareError::Truncated {
                file: file.display().to_string(),
                line: line_no,
                detail: e.to_string(),
            })?;
            let text = String::from_utf8_lossy(&block);
            for line in text.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                line_no += 1;
                if line_no == 1 {
                    if line != HEADER {
                        return Err(PrepareError::BadHeader {
                            file: file.display().to_string(),
                            found: line.chars().take(200).collect(),
                        });
                    }
                    continue;
                }
                if line.is_empty() {
                    line_no -= 1;
                    continue;
                }
                st.row(file, line_no, line)?;
            }
        }
        if line_no == 0 {
            return Err(PrepareError::BadHeader {
                file: file.display().to_string(),
                found: String::new(),
            });
        }
    }
    let open: Vec<i32> = st.days.keys().copied().collect();
    for day in open {
        st.flush_day(day)?;
    }
    if let Some(mut q) = st.quarantine.take() {
        q.flush().map_err(io(staging))?;
    }
    // Days that arrived out of order: dedupe, sort and limit them again, one day at a time.
    let unordered: Vec<i32> = st.unordered.iter().copied().collect();
    for day in unordered {
        fix_day(&mut st, day)?;
    }
    let mut report = st.report;
    report.days = st.parts.len();
    report.files = st.parts.values().map(Vec::len).sum();
    report.rows_written = count_rows(&st.parts)?;
    // Swap the finished output in place of the old one.
    let out = &opts.output;
    let old = out.with_file_name(format!(
        ".{}.old-{}",
        out.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("prepared"),
        std::process::id()
    ));
    if out.exists() {
        std::fs::rename(out, &old).map_err(io(out))?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::rename(staging, out).map_err(io(out))?;
    let _ = std::fs::remove_dir_all(&old);
    report.output = out.display().to_string();
    if report.rejected.values().sum::<u64>() > 0 {
        report.quarantine = Some(out.join("_quarantine.csv").display().to_string());
    }
    Ok(report)
}

fn count_rows(parts: &BTreeMap<i32, Vec<PathBuf>>) -> Result<u64, PrepareError> {
    let mut total = 0;
    for path in parts.values().flatten() {
        total += crate::parquet::row_count(path).map_err(|e| parquet_err(path, e))?;
    }
    Ok(total)
}

fn fix_day(st: &mut State, day: i32) -> Result<(), PrepareError> {
    let Some(parts) = st.parts.remove(&day) else {
        return Ok(());
    };
    let dir = st.staging.join(day_dir(day));
    let df = crate::parquet::read_all(&parts).map_err(|e| parquet_err(&dir, e))?;
    for path in &parts {
        std::fs::remove_file(path).map_err(io(path))?;
    }
    let path = dir.join("part-00000.parquet");
    let before = df.height() as u64;
    let subset: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    let unique = df
        .unique_stable(Some(&subset), UniqueKeepStrategy::First, None)
        .map_err(|e| parquet_err(&path, e))?;
    st.report.duplicates_removed += before - unique.height() as u64;
    let sorted = unique
        .sort(
            ["event_time"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .map_err(|e| parquet_err(&path, e))?;
    let mut limited = match st.rows_per_day {
        Some(n) if (sorted.height() as u64) > n => {
            st.report.rows_over_limit += sorted.height() as u64 - n;
            sorted.head(Some(n as usize))
        }
        _ => sorted,
    };
    write_parquet(&path, &mut limited)?;
    st.parts.insert(day, vec![path]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_and_quoted_lines() {
        let f = split("a,b,c,d,e,f,g,h,i").unwrap();
        assert_eq!(f[8], "i");
        assert_eq!(split("a,b,c").unwrap_err(), 3);
        assert_eq!(split("a,b,c,d,e,f,g,h,i,j").unwrap_err(), 10);
        let f = split("a,b,c,d,e,f,\"12,99\",h,i").unwrap();
        assert_eq!(f[6], "12,99");
    }

    #[test]
    fn a_cancelled_preparation_leaves_the_old_output_alone() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::dataset::generate::Options {
            rows_per_day: 50,
            seed: 1,
            dirt: None,
        };
        let stats =
            crate::dataset::generate::write_month("2019-10".parse().unwrap(), &opts, dir.path())
                .unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("old.txt"), "previous output").unwrap();
        let prep = Options {
            inputs: vec![stats.path],
            output: out.clone(),
            rows_per_day: None,
        };
        let cancelled = std::sync::atomic::AtomicBool::new(true);
        assert!(matches!(
            prepare(&prep, &cancelled),
            Err(PrepareError::Cancelled)
        ));
        assert_eq!(
            std::fs::read_to_string(out.join("old.txt")).unwrap(),
            "previous output"
        );
        let done = prepare(&prep, &std::sync::atomic::AtomicBool::new(false)).unwrap();
        assert_eq!(done.rows_written, 31 * 50);
        assert!(
            !out.join("old.txt").exists(),
            "a finished preparation replaces the output"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn parses_the_dataset_timestamp_only() {
        let mut cache = (Vec::new(), 0);
        let (day, secs) = parse_time("2019-10-01 00:00:04 UTC", &mut cache).unwrap();
        assert_eq!(day, 18170);
        assert_eq!(secs, 1_569_888_004);
        for bad in [
            "2019-13-45 25:61:00 UTC",
            "not a timestamp",
            "2019-10-01T12:00:00",
            "",
            "2019-02-30 00:00:00 UTC",
        ] {
            assert!(parse_time(bad, &mut cache).is_none(), "{bad}");
        }
    }
}
