//! One partition's log on disk: segment files of record batches exactly as producers sent them
//! (only the base offset is set), each named by the offset of its first record
//! (`00000000000000000000.log`), with an in-memory index of where each batch starts.
//!
//! Appends are checked (magic, CRC-32C, record count, size), written and synced before they are
//! acknowledged. A write or sync that fails backs the file out to its last good end and fails
//! the partition: it answers KAFKA_STORAGE_ERROR until the broker restarts, and never appends
//! after bytes that were not acknowledged. On open, segments are scanned batch header by batch
//! header (never read whole into memory); the active segment's batches have their CRCs checked;
//! a half-written tail, or a batch that breaks the offsets' continuity, is cut, and every cut is
//! logged with the partition, offset and bytes dropped.
//!
//! A damaged batch (its CRC fails, its length still leads to the next batch) is never served:
//! found on open in the active segment, or on read anywhere (every batch is checked before it
//! goes out), it is left out of the index and logged, and the batches around it are served as
//! usual: consumers see a gap in the offsets, as on a compacted topic.
//!
//! Idempotent producers: the last five batches of each producer are remembered (rebuilt from the
//! log on open), so a batch resent after a lost acknowledgement — even across a restart — is
//! answered with its first offset instead of being appended twice, with up to five requests in
//! flight.
//!
//! Retention: a segment rolls at `segment_bytes`; whole segments older than `retention` or
//! beyond `retention_bytes` are deleted (never the active one), moving the log start offset.
//!
//! One file because it is one piece of state: appends, recovery on open, damage handling,
//! idempotence and retention all read and move the same segments and batch index.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};

use super::code;
use crate::sys;

/// The record batch header (magic 2): where each field sits, in bytes from the batch's start.
pub(super) mod header {
    pub(crate) const BASE_OFFSET: usize = 0;
    /// The length of the rest of the batch, after this field.
    pub(crate) const BATCH_LENGTH: usize = 8;
    pub(crate) const MAGIC: usize = 16;
    pub(crate) const CRC: usize = 17;
    /// The CRC covers everything from the attributes to the end of the batch.
    pub(crate) const ATTRIBUTES: usize = 21;
    pub(crate) const LAST_OFFSET_DELTA: usize = 23;
    pub(crate) const MAX_TIMESTAMP: usize = 35;
    pub(crate) const PRODUCER_ID: usize = 43;
    pub(crate) const PRODUCER_EPOCH: usize = 51;
    pub(crate) const BASE_SEQUENCE: usize = 53;
    pub(crate) const RECORDS_COUNT: usize = 57;
    /// The whole header; records follow.
    pub(crate) const SIZE: usize = 61;
    /// What the length field counts beyond itself for a batch without records.
    pub(crate) const MIN_LENGTH: i32 = (SIZE - BATCH_LENGTH - 4) as i32;
}

/// Batches an idempotent producer may have in flight, and so the ones remembered per producer.
const PRODUCER_BATCHES: usize = 5;

/// How a partition's log is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogConfig {
    /// The largest produce request accepted for one partition (MESSAGE_TOO_LARGE beyond).
    pub(crate) max_batch_bytes: usize,
    /// A segment is closed and a new one started past this size.
    pub(crate) segment_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub(crate) retention_ms: Option<i64>,
    /// Oldest segments are deleted while the partition is larger than this.
    pub(crate) retention_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_batch_bytes: 16 << 20,
            segment_bytes: 256 << 20,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
        }
    }
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

/// The header fields the broker acts on, read from a batch as received or stored.
#[derive(Debug, Clone, Copy)]
struct BatchHeader {
    /// The batch's whole size in bytes, header included.
    size: usize,
    magic: u8,
    crc: u32,
    last_offset_delta: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: i32,
}

impl BatchHeader {
    /// The header at the start of `b` (at least [`header::SIZE`] bytes), if its length is sane.
    fn read(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < header::SIZE {
            return None;
        }
        let length = i32_at(b, header::BATCH_LENGTH);
        if length < header::MIN_LENGTH {
            return None;
        }
        Some(BatchHeader {
            size: header::BATCH_LENGTH + 4 + length as usize,
            magic: b[header::MAGIC],
            crc: u32_at(b, header::CRC),
            last_offset_delta: i64::from(i32_at(b, header::LAST_OFFSET_DELTA)),
            max_timestamp: i64_at(b, header::MAX_TIMESTAMP),
            producer_id: i64_at(b, header::PRODUCER_ID),
            producer_epoch: i16_at(b, header::PRODUCER_EPOCH),
            base_sequence: i32_at(b, header::BASE_SEQUENCE),
            records: i32_at(b, header::RECORDS_COUNT),
        })
    }

    /// Why a whole batch (`b`, exactly `size` bytes) cannot be stored, as a Kafka error code.
    fn check(&self, b: &[u8]) -> Result<(), i16> {
        if self.magic != 2 {
            return Err(code::UNSUPPORTED_FOR_MESSAGE_FORMAT);
        }
        if self.records < 1 || self.last_offset_delta != i64::from(self.records) - 1 {
            return Err(code::INVALID_RECORD);
        }
        if crc32c::crc32c(&b[header::ATTRIBUTES..self.size]) != self.crc {
            return Err(code::CORRUPT_MESSAGE);
        }
        Ok(())
    }
}

/// Where a stored batch is and what it holds.
#[derive(Debug, Clone, Copy)]
struct Batch {
    base: i64,
    last: i64,
    pos: u64,
    len: u32,
    max_ts: i64,
}

/// One segment file.
struct Segment {
    /// The offset its file is named by (its first batch's base offset when written).
    base: i64,
    path: PathBuf,
    file: File,
    batches: Vec<Batch>,
    /// The file's length: where the next batch goes.
    end: u64,
}

impl Segment {
    fn max_ts(&self) -> i64 {
        self.batches
            .iter()
            .map(|b| b.max_ts)
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// A batch an idempotent producer wrote.
#[derive(Debug, Clone, Copy)]
struct SentBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

/// What an idempotent producer last wrote to this partition.
#[derive(Debug, Clone, Default)]
struct ProducerState {
    epoch: i16,
    /// Its last batches, oldest first, at most [`PRODUCER_BATCHES`].
    recent: VecDeque<SentBatch>,
}

impl ProducerState {
    fn remember(&mut self, epoch: i16, b: SentBatch) {
        if epoch != self.epoch {
            self.recent.clear();
            self.epoch = epoch;
        }
        self.recent.push_back(b);
        while self.recent.len() > PRODUCER_BATCHES {
            self.recent.pop_front();
        }
    }
}

/// What one produce request does to a producer's sequence.
enum Sequenced {
    /// New: append it.
    Append,
    /// Sent before (its acknowledgement was lost): answer with where it went.
    Duplicate(i64),
}

fn segment_name(base: i64) -> String {
    format!("{base:020}.log")
}

/// A batch accepted by [`Partition::append`], waiting for the write to be durable.
struct Accepted {
    base: i64,
    last: i64,
    /// Where it starts in the bytes being written.
    start: usize,
    header: BatchHeader,
}

pub(super) struct Partition {
    /// For messages: `topic-partition`.
    name: String,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    /// The offset the next record gets (the high watermark).
    pub(super) next: i64,
    producers: HashMap<i64, ProducerState>,
    /// A write failed: nothing is appended until the broker restarts.
    failed: bool,
}

impl Partition {
    /// Opens (creating) the partition in `dir`, recovering its log.
    pub(super) fn open(dir: &Path, name: &str, config: LogConfig) -> std::io::Result<Partition> {
        std::fs::create_dir_all(dir)?;
        let mut bases: Vec<i64> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut p = Partition {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            config,
            segments: Vec::new(),
            next: 0,
            producers: HashMap::new(),
            failed: false,
        };
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let path = dir.join(segment_name(base));
            let active = i + 1 == count;
            let seg = p.recover(base, &path, active)?;
            p.segments.push(seg);
        }
        if p.segments.is_empty() {
            p.roll(0)?;
        }
        Ok(p)
    }

    /// Indexes one segment from its batch headers, cutting what does not belong: a torn or
    /// corrupt tail, or a batch whose offsets do not follow the previous one's.
    fn recover(&mut self, base: i64, path: &Path, active: bool) -> std::io::Result<Segment> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let mut batches = Vec::new();
        let mut pos = 0u64;
        let mut head = [0u8; header::SIZE];
        let mut cut: Option<&str> = None;
        // Where the damaged batches since the last good one start, if any.
        let mut damaged_before: Option<u64> = None;
        while pos < len {
            if len - pos < header::SIZE as u64 {
                cut = Some("a half-written batch header");
                break;
            }
            file.read_exact_at(&mut head, pos)?;
            let Some(h) = BatchHeader::read(&head) else {
                cut = Some("a batch with an impossible length");
                break;
            };
            if pos + h.size as u64 > len {
                cut = Some("a half-written batch");
                break;
            }
            let batch_base = i64_at(&head, header::BASE_OFFSET);
            let expected = batches
                .last()
                .map_or(if self.next > 0 { self.next } else { base }, |b: &Batch| {
                    b.last + 1
                });
            // After a damaged batch (whose offsets cannot be trusted) the next may skip ahead.
            let follows = batch_base == expected
                || (damaged_before.is_some() && batch_base > expected)
                || (batches.is_empty() && self.next == 0);
            if !follows {
                cut = Some("a batch whose offsets do not follow the previous one");
                break;
            }
            if active {
                // Only the active segment can hold bytes not yet synced when the broker died.
                let mut whole = vec![0u8; h.size];
                file.read_exact_at(&mut whole, pos)?;
                if h.check(&whole).is_err() {
                    self.report_damage(batch_base, batch_base + h.last_offset_delta, h.size, path);
                    damaged_before.get_or_insert(pos);
                    pos += h.size as u64;
                    continue;
                }
            }
            damaged_before = None;
            let b = Batch {
                base: batch_base,
                last: batch_base + h.last_offset_delta,
                pos,
                len: h.size as u32,
                max_ts: h.max_timestamp,
            };
            if h.producer_id >= 0 {
                self.producers.entry(h.producer_id).or_default().remember(
                    h.producer_epoch,
                    SentBatch {
                        first_sequence: h.base_sequence,
                        last_sequence: h.base_sequence.wrapping_add(h.records - 1),
                        base_offset: b.base,
                    },
                );
            }
            batches.push(b);
            pos += h.size as u64;
        }
        if let Some(first) = damaged_before {
            // Damaged batches with nothing good after them are the torn tail: cut them too.
            cut.get_or_insert("a batch that fails its CRC or record count");
            pos = first;
        }
        if let Some(why) = cut {
            let at = batches.last().map_or(base, |b| b.last + 1);
            tracing::warn!(
                partition = %self.name,
                offset = at,
                bytes_dropped = len - pos,
                segment = %path.display(),
                "cut the log at offset {at}: {why} ({} byte(s) dropped; never acknowledged)",
                len - pos
            );
            file.set_len(pos)?;
            file.sync_data()?;
        }
        if let Some(last) = batches.last() {
            self.next = last.last + 1;
        } else if self.next == 0 {
            self.next = base;
        }
        Ok(Segment {
            base,
            path: path.to_path_buf(),
            file,
            batches,
            end: pos,
        })
    }

    /// Starts a new active segment at `base`.
    fn roll(&mut self, base: i64) -> std::io::Result<()> {
        let path = self.dir.join(segment_name(base));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        sys::sync_dir(&self.dir)?;
        self.segments.push(Segment {
            base,
            path,
            file,
            batches: Vec::new(),
            end: 0,
        });
        Ok(())
    }

    /// The first offset still in the log.
    pub(super) fn start(&self) -> i64 {
        self.segments
            .iter()
            .find_map(|s| s.batches.first().map(|b| b.base))
            .unwrap_or(self.next)
    }

    /// Whether a write failed (the partition answers KAFKA_STORAGE_ERROR).
    pub(super) fn failed(&self) -> bool {
        self.failed
    }

    /// The bytes the partition keeps.
    pub(super) fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.end).sum()
    }

    fn sequence(&self, h: &BatchHeader) -> Result<Sequenced, i16> {
        if h.producer_id < 0 {
            return Ok(Sequenced::Append);
        }
        let Some(state) = self.producers.get(&h.producer_id) else {
            // A producer this partition has not seen (or whose batches retention removed).
            return Ok(Sequenced::Append);
        };
        if h.producer_epoch < state.epoch {
            return Err(code::INVALID_PRODUCER_EPOCH);
        }
        if h.producer_epoch > state.epoch {
            return Ok(Sequenced::Append);
        }
        if let Some(b) = state
            .recent
            .iter()
            .find(|b| b.first_sequence == h.base_sequence)
        {
            return Ok(Sequenced::Duplicate(b.base_offset));
        }
        let expected = state
            .recent
            .back()
            .map_or(0, |b| b.last_sequence.wrapping_add(1));
        if h.base_sequence != expected {
            return Err(code::OUT_OF_ORDER_SEQUENCE);
        }
        Ok(Sequenced::Append)
    }

    /// Appends the batches of one produce request; returns the first offset, or an error code.
    pub(super) fn append(&mut self, records: &[u8]) -> Result<i64, i16> {
        if self.failed {
            return Err(code::KAFKA_STORAGE_ERROR);
        }
        if records.len() > self.config.max_batch_bytes {
            return Err(code::MESSAGE_TOO_LARGE);
        }
        let mut out = BytesMut::with_capacity(records.len());
        let mut first = None;
        let mut pos = 0usize;
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut next = self.next;
        while pos < records.len() {
            let h = BatchHeader::read(&records[pos..]).ok_or(code::CORRUPT_MESSAGE)?;
            if pos + h.size > records.len() {
                return Err(code::CORRUPT_MESSAGE);
            }
            let batch = &records[pos..pos + h.size];
            h.check(batch)?;
            match self.sequence(&h)? {
                Sequenced::Duplicate(at) => {
                    first.get_or_insert(at);
                    pos += h.size;
                    continue;
                }
                Sequenced::Append => {}
            }
            let base = next;
            first.get_or_insert(base);
            let start = out.len();
            out.put_i64(base);
            out.extend_from_slice(&batch[header::BATCH_LENGTH..]);
            accepted.push(Accepted {
                base,
                last: base + h.last_offset_delta,
                start,
                header: h,
            });
            next = base + h.last_offset_delta + 1;
            pos += h.size;
        }
        if out.is_empty() {
            return Ok(first.unwrap_or(self.next));
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.end > 0 && s.end + out.len() as u64 > self.config.segment_bytes)
            && let Err(e) = self.roll(self.next)
        {
            return Err(self.fail(&e));
        }
        let Some(seg) = self.segments.last_mut() else {
            return Err(code::KAFKA_STORAGE_ERROR);
        };
        if let Err(e) = seg.file.write_all(&out).and_then(|_| seg.file.sync_data()) {
            // Back out to the last good end: the next append must follow acknowledged bytes.
            let end = seg.end;
            let _ = seg.file.set_len(end).and_then(|_| seg.file.sync_data());
            return Err(self.fail(&e));
        }
        for a in accepted {
            seg.batches.push(Batch {
                base: a.base,
                last: a.last,
                pos: seg.end + a.start as u64,
                len: a.header.size as u32,
                max_ts: a.header.max_timestamp,
            });
            if a.header.producer_id >= 0 {
                self.producers
                    .entry(a.header.producer_id)
                    .or_default()
                    .remember(
                        a.header.producer_epoch,
                        SentBatch {
                            first_sequence: a.header.base_sequence,
                            last_sequence: a
                                .header
                                .base_sequence
                                .wrapping_add(a.header.records - 1),
                            base_offset: a.base,
                        },
                    );
            }
        }
        seg.end += out.len() as u64;
        self.next = next;
        Ok(first.unwrap_or(self.next))
    }

    fn fail(&mut self, e: &std::io::Error) -> i16 {
        tracing::error!(
            partition = %self.name,
            "cannot write the partition's log ({e}); it refuses produce requests until the broker restarts"
        );
        self.failed = true;
        code::KAFKA_STORAGE_ERROR
    }

    /// Batches from the one holding `offset`, at least one, up to about `max` bytes (from one
    /// segment).
    pub(super) fn read(&mut self, offset: i64, max: usize) -> std::io::Result<Bytes> {
        loop {
            let (seg, first, buf) = self.read_unchecked(offset, max)?;
            // Every batch is checked before it goes out: a damaged one is dropped from the index
            // and what precedes it is served (or, if it came first, the read starts again).
            let mut at = 0usize;
            let mut damaged = None;
            while at < buf.len() {
                let Some(h) = BatchHeader::read(&buf[at..]) else {
                    damaged = Some(at);
                    break;
                };
                if at + h.size > buf.len() || h.check(&buf[at..at + h.size]).is_err() {
                    damaged = Some(at);
                    break;
                }
                at += h.size;
            }
            let Some(bad_at) = damaged else {
                return Ok(buf);
            };
            let Some(seg) = seg else {
                return Ok(buf.slice(..bad_at));
            };
            let segment = &mut self.segments[seg];
            let index = first
                + segment.batches[first..]
                    .iter()
                    .scan(0usize, |sum, b| {
                        let here = *sum;
                        *sum += b.len as usize;
                        Some(here)
                    })
                    .take_while(|&start| start < bad_at)
                    .count();
            let bad = segment.batches.remove(index);
            let path = segment.path.clone();
            self.report_damage(bad.base, bad.last, bad.len as usize, &path);
            if bad_at > 0 {
                return Ok(buf.slice(..bad_at));
            }
        }
    }

    /// Logs a batch left out because it is damaged.
    fn report_damage(&self, base: i64, last: i64, bytes: usize, path: &Path) {
        tracing::warn!(
            partition = %self.name,
            offset = base,
            bytes,
            segment = %path.display(),
            "skipped a damaged batch at offsets {base}..={last} ({bytes} byte(s) fail their CRC); \
             it is never served"
        );
    }

    /// The bytes of whole batches from the one holding `offset`, up to about `max` (at least one
    /// batch), with the segment and batch index they start at.
    fn read_unchecked(
        &self,
        offset: i64,
        max: usize,
    ) -> std::io::Result<(Option<usize>, usize, Bytes)> {
        let Some(si) = self
            .segments
            .iter()
            .rposition(|s| s.batches.first().is_some_and(|b| b.base <= offset))
            .or_else(|| self.segments.iter().position(|s| !s.batches.is_empty()))
        else {
            return Ok((None, 0, Bytes::new()));
        };
        let seg = &self.segments[si];
        let i = seg.batches.partition_point(|b| b.last < offset);
        let mut end = i;
        let mut size = 0usize;
        // Batches next to each other in the file only (a damaged one left out is a hole).
        while end < seg.batches.len()
            && (end == i
                || (size + seg.batches[end].len as usize <= max
                    && seg.batches[end].pos == seg.batches[i].pos + size as u64))
        {
            size += seg.batches[end].len as usize;
            end += 1;
        }
        if end == i {
            // Past this segment's end: the next one holds it, if any.
            return match self.segments.get(si + 1) {
                Some(next) if next.batches.first().is_some_and(|b| b.base > offset) => {
                    self.read_unchecked(next.base, max)
                }
                _ => Ok((None, 0, Bytes::new())),
            };
        }
        let mut buf = vec![0u8; size];
        seg.file.read_exact_at(&mut buf, seg.batches[i].pos)?;
        Ok((Some(si), i, Bytes::from(buf)))
    }

    /// The answer to a ListOffsets timestamp, (offset, timestamp): -1 the end and -2 the start
    /// (timestamp -1), else the first batch whose newest record is at or after the time, with
    /// that newest record's timestamp, or (-1, -1) when no record is that new (as Kafka).
    /// Batches are not opened, so the offset is the batch's first: a consumer seeking there
    /// may see records of the batch a little older than the time.
    pub(super) fn offset_for_time(&self, ts: i64) -> (i64, i64) {
        match ts {
            -1 => (self.next, -1),
            -2 => (self.start(), -1),
            ts => self
                .segments
                .iter()
                .flat_map(|s| &s.batches)
                .find(|b| b.max_ts >= ts)
                .map_or((-1, -1), |b| (b.base, b.max_ts)),
        }
    }

    /// Deletes whole segments past the retention (never the active one). Returns how many.
    pub(super) fn enforce_retention(&mut self, now_ms: i64) -> usize {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_old = self
                .config
                .retention_ms
                .is_some_and(|r| !oldest.batches.is_empty() && oldest.max_ts() < now_ms - r);
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|limit| self.size() > limit);
            if !(too_old || too_big) {
                break;
            }
            let seg = self.segments.remove(0);
            tracing::info!(
                partition = %self.name,
                segment = %seg.path.display(),
                "retention: deleted a segment ({} byte(s), offsets up to {})",
                seg.end,
                seg.batches.last().map_or(seg.base, |b| b.last)
            );
            drop(seg.file);
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::warn!(segment = %seg.path.display(), "cannot delete a segment: {e}");
            }
            removed += 1;
        }
        if removed > 0 {
            let _ = sys::sync_dir(&self.dir);
        }
        removed
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A record batch (magic 2) with `count` records and a body of `body` bytes, with its CRC.
    pub(crate) fn batch(producer: i64, sequence: i32, count: i32, body: usize) -> Vec<u8> {
        batch_at(producer, 0, sequence, count, body, 2_000)
    }

    pub(crate) fn batch_at(
        producer: i64,
        epoch: i16,
        sequence: i32,
        count: i32,
        body: usize,
        max_ts: i64,
    ) -> Vec<u8> {
        let len = header::MIN_LENGTH + body as i32;
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset, set by the broker
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
        b.extend_from_slice(&1_000i64.to_be_bytes()); // base timestamp
        b.extend_from_slice(&max_ts.to_be_bytes()); // max timestamp
        b.extend_from_slice(&producer.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&sequence.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend(std::iter::repeat_n(7u8, body));
        let crc = crc32c::crc32c(&b[header::ATTRIBUTES..]);
        b[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn open(dir: &Path, config: LogConfig) -> Partition {
        Partition::open(&dir.join("0"), "t-0", config).unwrap()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("0"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn batches_get_offsets_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = open(dir.path(), LogConfig::default());
        assert_eq!(p.append(&batch(-1, -1, 3, 10)).unwrap(), 0);
        let two = [batch(-1, -1, 2, 5), batch(-1, -1, 4, 5)].concat();
        assert_eq!(p.append(&two).unwrap(), 3);
        assert_eq!(p.next, 9);
        // From offset 4 (inside the second batch): that batch and the rest.
        let read = p.read(4, 1 << 20).unwrap();
        assert_eq!(read.len(), two.len());
        assert_eq!(i64_at(&read, 0), 3);
        assert_eq!(i64_at(&read, batch(-1, -1, 2, 5).len()), 5);
        assert!(p.read(9, 1 << 20).unwrap().is_empty());
        assert_eq!(p.offset_for_time(-2), (0, -1));
        assert_eq!(p.offset_for_time(-1), (9, -1));
        // By time: the first batch with a record that new, and that record's time; none: -1.
        assert_eq!(p.offset_for_time(1_500), (0, 2_000));
        assert_eq!(p.offset_for_time(2_001), (-1, -1));
        let size = p.size();
        drop(p);
        // A crash in the middle of a write leaves part of a batch: it was never acknowledged.
        let file = segment_files(dir.path())[0].clone();
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&batch(-1, -1, 1, 50)[..30]).unwrap();
        drop(f);
        let mut p = open(dir.path(), LogConfig::default());
        assert_eq!((p.next, p.size()), (9, size));
        assert_eq!(std::fs::metadata(&file).unwrap().len(), size);
        // The next append follows the acknowledged bytes.
        assert_eq!(p.append(&batch(-1, -1, 1, 1)).unwrap(), 9);
    }

    #[test]
    fn bad_batches_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = open(
            dir.path(),
            LogConfig {
                max_batch_bytes: 1000,
                ..LogConfig::default()
            },
        );
        let mut flipped = batch(-1, -1, 2, 20);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(p.append(&flipped), Err(code::CORRUPT_MESSAGE));
        let mut wrong_count = batch(-1, -1, 2, 20);
        wrong_count[header::RECORDS_COUNT + 3] = 5;
        let crc = crc32c::crc32c(&wrong_count[header::ATTRIBUTES..]);
        wrong_count[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(p.append(&wrong_count), Err(code::INVALID_RECORD));
        assert_eq!(
            p.append(&batch(-1, -1, 1, 2000)),
            Err(code::MESSAGE_TOO_LARGE)
        );
        assert_eq!(p.append(&[1, 2, 3]), Err(code::CORRUPT_MESSAGE));
        // A good batch after a bad one in the same request: none of the request is stored.
        let mixed = [batch(-1, -1, 1, 1), flipped].concat();
        assert_eq!(p.append(&mixed), Err(code::CORRUPT_MESSAGE));
        assert_eq!((p.next, p.size()), (0, 0));
    }

    #[test]
    fn idempotent_batches_are_stored_once_with_five_in_flight_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = open(dir.path(), LogConfig::default());
        // Five batches of 5 records in flight.
        for i in 0..5 {
            assert_eq!(p.append(&batch(42, i * 5, 5, 1)).unwrap(), i64::from(i) * 5);
        }
        // The third one's acknowledgement was lost: resent, it is answered, not appended.
        assert_eq!(p.append(&batch(42, 10, 5, 1)).unwrap(), 10);
        assert_eq!(p.next, 25);
        // A gap in the sequence is refused.
        assert_eq!(
            p.append(&batch(42, 40, 1, 1)),
            Err(code::OUT_OF_ORDER_SEQUENCE)
        );
        drop(p);
        // After a restart the producer's last batches are known again, from the log.
        let mut p = open(dir.path(), LogConfig::default());
        assert_eq!(p.append(&batch(42, 20, 5, 1)).unwrap(), 20);
        assert_eq!(p.append(&batch(42, 25, 5, 1)).unwrap(), 25);
        assert_eq!(p.next, 30);
        // An older epoch is fenced; a newer one starts over.
        assert_eq!(
            p.append(&batch_at(42, -1, 30, 1, 1, 2_000)),
            Err(code::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(p.append(&batch_at(42, 1, 0, 1, 1, 2_000)).unwrap(), 30);
    }

    /// Flips one byte inside the records of the batch at `pos` in `file`.
    fn rot(file: &Path, pos: u64) {
        let f = OpenOptions::new().write(true).open(file).unwrap();
        f.write_all_at(&[0xff], pos + header::SIZE as u64 + 2)
            .unwrap();
    }

    #[test]
    fn a_damaged_batch_is_left_out_on_open_and_the_batches_around_it_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = open(dir.path(), LogConfig::default());
        for _ in 0..4 {
            p.append(&batch(-1, -1, 2, 8)).unwrap();
        }
        let one = batch(-1, -1, 2, 8).len() as u64;
        drop(p);
        let file = segment_files(dir.path())[0].clone();
        // A bit rots in the second batch; the fourth (the tail) is torn.
        rot(&file, one);
        let f = OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(4 * one - 7).unwrap();
        drop(f);
        let mut p = open(dir.path(), LogConfig::default());
        // The torn tail is cut; the damaged batch stays on disk but out of the index.
        assert_eq!(p.next, 6);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 * one);
        let first = p.read(0, 1 << 20).unwrap();
        assert_eq!((first.len() as u64, i64_at(&first, 0)), (one, 0));
        // Asked for an offset of the damaged batch, the next good one answers.
        let third = p.read(2, 1 << 20).unwrap();
        assert_eq!((third.len() as u64, i64_at(&third, 0)), (one, 4));
        // Appends go on after the last good batch, and survive another open.
        assert_eq!(p.append(&batch(-1, -1, 1, 8)).unwrap(), 6);
        drop(p);
        let p = open(dir.path(), LogConfig::default());
        assert_eq!(p.next, 7);
    }

    #[test]
    fn a_damaged_batch_in_an_older_segment_is_found_on_read_and_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(-1, -1, 1, 100).len() as u64;
        let config = LogConfig {
            segment_bytes: one * 3,
            ..LogConfig::default()
        };
        let mut p = open(dir.path(), config);
        for _ in 0..6 {
            p.append(&batch(-1, -1, 1, 100)).unwrap();
        }
        drop(p);
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 2);
        rot(&files[0], one);
        let mut p = open(dir.path(), config);
        // Offsets 0..=2 sit in the older segment, whose CRCs are not read on open.
        let read = p.read(0, 1 << 20).unwrap();
        assert_eq!((read.len() as u64, i64_at(&read, 0)), (one, 0));
        let read = p.read(1, 1 << 20).unwrap();
        assert_eq!((read.len() as u64, i64_at(&read, 0)), (one, 2));
        assert_eq!(p.read(3, 1 << 20).map(|b| i64_at(&b, 0)).unwrap(), 3);
    }

    #[test]
    fn segments_roll_and_retention_deletes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(-1, -1, 1, 100).len() as u64;
        let config = LogConfig {
            segment_bytes: one * 2,
            retention_ms: None,
            retention_bytes: Some(one * 4),
            ..LogConfig::default()
        };
        let mut p = open(dir.path(), config);
        for _ in 0..8 {
            p.append(&batch(-1, -1, 1, 100)).unwrap();
        }
        assert_eq!(segment_files(dir.path()).len(), 4);
        assert_eq!(p.read(5, 1 << 20).map(|b| i64_at(&b, 0)).unwrap(), 5);
        assert_eq!(p.enforce_retention(0), 2);
        assert_eq!(segment_files(dir.path()).len(), 2);
        assert_eq!((p.start(), p.next), (4, 8));
        drop(p);
        let p = open(dir.path(), config);
        assert_eq!((p.start(), p.next), (4, 8));
        // By age: everything but the active segment goes once old enough.
        let mut p = open(
            dir.path(),
            LogConfig {
                retention_ms: Some(1_000),
                retention_bytes: None,
                ..config
            },
        );
        assert_eq!(p.enforce_retention(10_000), 1);
        assert_eq!(p.start(), 6);
    }
}
