//! One partition's log on disk: an append-only file of record batches exactly as producers sent
//! them (only the base offset is set), with an in-memory index of where each batch starts.
//! Appends are synced before they are acknowledged; on open, a batch a crash left half-written
//! is cut off (it was never acknowledged).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};

use super::code;

/// The record batch header (magic 2): where each field sits, in bytes from the batch's start.
pub(super) mod header {
    pub(crate) const BASE_OFFSET: usize = 0;
    /// The length of the rest of the batch, after this field.
    pub(crate) const BATCH_LENGTH: usize = 8;
    pub(crate) const MAGIC: usize = 16;
    pub(crate) const LAST_OFFSET_DELTA: usize = 23;
    pub(crate) const MAX_TIMESTAMP: usize = 35;
    pub(crate) const PRODUCER_ID: usize = 43;
    pub(crate) const BASE_SEQUENCE: usize = 53;
    pub(crate) const RECORDS_COUNT: usize = 57;
    /// The whole header; records follow.
    pub(crate) const SIZE: usize = 61;
    /// What the length field counts beyond itself for a batch without records.
    pub(crate) const MIN_LENGTH: i32 = (SIZE - BATCH_LENGTH - 4) as i32;
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

/// The header fields the broker acts on, read from a batch as received or stored.
#[derive(Debug, Clone, Copy)]
struct BatchHeader {
    /// The batch's whole size in bytes, header included.
    size: usize,
    last_offset_delta: i64,
    max_timestamp: i64,
    producer_id: i64,
    base_sequence: i32,
    records: i32,
}

impl BatchHeader {
    /// The header of the batch at the start of `b`, if `b` holds a whole batch.
    fn read(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < header::SIZE {
            return None;
        }
        let length = i32_at(b, header::BATCH_LENGTH);
        if length < header::MIN_LENGTH {
            return None;
        }
        let size = header::BATCH_LENGTH + 4 + length as usize;
        if size > b.len() {
            return None;
        }
        Some(BatchHeader {
            size,
            last_offset_delta: i64::from(i32_at(b, header::LAST_OFFSET_DELTA)),
            max_timestamp: i64_at(b, header::MAX_TIMESTAMP),
            producer_id: i64_at(b, header::PRODUCER_ID),
            base_sequence: i32_at(b, header::BASE_SEQUENCE),
            records: i32_at(b, header::RECORDS_COUNT),
        })
    }
}

/// Where a stored batch is and what it holds.
struct Batch {
    base: i64,
    last: i64,
    pos: u64,
    len: u32,
    max_ts: i64,
}

/// What an idempotent producer last wrote to this partition.
#[derive(Debug, Clone, Copy)]
struct ProducerState {
    /// The base sequence of its last batch, and the offset that batch got.
    last_sequence: i32,
    last_base: i64,
    /// The sequence its next batch must start at.
    next_sequence: i32,
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
    file: File,
    batches: Vec<Batch>,
    /// The file's length: where the next batch goes.
    end: u64,
    /// The offset the next record gets (the high watermark).
    pub(super) next: i64,
    producers: HashMap<i64, ProducerState>,
}

impl Partition {
    /// Opens (creating) a partition's file and indexes its batches, cutting a torn tail.
    pub(super) fn open(path: &Path) -> std::io::Result<Partition> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut batches = Vec::new();
        let mut pos = 0usize;
        while let Some(h) = BatchHeader::read(&data[pos..]) {
            let base = i64_at(&data, pos + header::BASE_OFFSET);
            batches.push(Batch {
                base,
                last: base + h.last_offset_delta,
                pos: pos as u64,
                len: h.size as u32,
                max_ts: h.max_timestamp,
            });
            pos += h.size;
        }
        if pos < data.len() {
            // A batch a crash left half-written: it was never acknowledged.
            file.set_len(pos as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::End(0))?;
        let next = batches.last().map_or(0, |b| b.last + 1);
        Ok(Partition {
            file,
            batches,
            end: pos as u64,
            next,
            producers: HashMap::new(),
        })
    }

    /// The first offset still in the log.
    pub(super) fn start(&self) -> i64 {
        self.batches.first().map_or(0, |b| b.base)
    }

    /// Appends the batches of one produce request; returns the first offset, or an error code.
    pub(super) fn append(&mut self, records: &[u8]) -> Result<i64, i16> {
        let mut out = BytesMut::with_capacity(records.len());
        let mut first = None;
        let mut pos = 0usize;
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut next = self.next;
        while pos < records.len() {
            let Some(h) = BatchHeader::read(&records[pos..]) else {
                return Err(code::CORRUPT_MESSAGE);
            };
            if records[pos + header::MAGIC] != 2 {
                return Err(code::CORRUPT_MESSAGE);
            }
            let batch = &records[pos..pos + h.size];
            if h.producer_id >= 0 {
                match self.producers.get(&h.producer_id) {
                    // The same batch again (its acknowledgement was lost): not appended twice.
                    Some(p) if p.last_sequence == h.base_sequence => {
                        first.get_or_insert(p.last_base);
                        pos += h.size;
                        continue;
                    }
                    Some(p) if p.next_sequence != h.base_sequence => {
                        return Err(code::OUT_OF_ORDER_SEQUENCE);
                    }
                    _ => {}
                }
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
        if !out.is_empty() {
            self.file
                .write_all(&out)
                .and_then(|_| self.file.sync_data())
                .map_err(|_| code::CORRUPT_MESSAGE)?;
            for a in accepted {
                self.batches.push(Batch {
                    base: a.base,
                    last: a.last,
                    pos: self.end + a.start as u64,
                    len: a.header.size as u32,
                    max_ts: a.header.max_timestamp,
                });
                if a.header.producer_id >= 0 {
                    self.producers.insert(
                        a.header.producer_id,
                        ProducerState {
                            last_sequence: a.header.base_sequence,
                            last_base: a.base,
                            next_sequence: a.header.base_sequence.wrapping_add(a.header.records),
                        },
                    );
                }
            }
            self.end += out.len() as u64;
            self.next = next;
        }
        Ok(first.unwrap_or(self.next))
    }

    /// Batches from the one holding `offset`, at least one, up to about `max` bytes.
    pub(super) fn read(&self, offset: i64, max: usize) -> std::io::Result<Bytes> {
        let i = self.batches.partition_point(|b| b.last < offset);
        let mut end = i;
        let mut size = 0usize;
        while end < self.batches.len() && (end == i || size + self.batches[end].len as usize <= max)
        {
            size += self.batches[end].len as usize;
            end += 1;
        }
        if end == i {
            return Ok(Bytes::new());
        }
        let mut buf = vec![0u8; size];
        self.file.read_exact_at(&mut buf, self.batches[i].pos)?;
        Ok(Bytes::from(buf))
    }

    /// The offset for a ListOffsets timestamp: -1 the end, -2 the start, else the first batch
    /// whose newest record is at or after it.
    pub(super) fn offset_for_time(&self, ts: i64) -> i64 {
        match ts {
            -1 => self.next,
            -2 => self.start(),
            ts => self
                .batches
                .iter()
                .find(|b| b.max_ts >= ts)
                .map_or(self.next, |b| b.base),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A record batch header (magic 2) with `count` records and a body of `body` bytes.
    pub(crate) fn batch(producer: i64, sequence: i32, count: i32, body: usize) -> Vec<u8> {
        let len = header::MIN_LENGTH + body as i32;
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset, set by the broker
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc (not checked here)
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
        b.extend_from_slice(&1_000i64.to_be_bytes()); // base timestamp
        b.extend_from_slice(&2_000i64.to_be_bytes()); // max timestamp
        b.extend_from_slice(&producer.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes()); // producer epoch
        b.extend_from_slice(&sequence.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend(std::iter::repeat_n(7u8, body));
        b
    }

    #[test]
    fn batches_get_offsets_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut p = Partition::open(&path).unwrap();
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
        assert_eq!(p.offset_for_time(-2), 0);
        assert_eq!(p.offset_for_time(-1), 9);
        drop(p);
        // A crash in the middle of a write leaves part of a batch: it was never acknowledged.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&batch(-1, -1, 1, 50)[..30]).unwrap();
        drop(f);
        let p = Partition::open(&path).unwrap();
        assert_eq!(p.next, 9);
        assert_eq!(p.batches.len(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), p.end);
    }

    #[test]
    fn an_idempotent_batch_sent_again_is_not_appended_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Partition::open(&dir.path().join("0.log")).unwrap();
        assert_eq!(p.append(&batch(42, 0, 5, 1)).unwrap(), 0);
        assert_eq!(p.append(&batch(42, 5, 5, 1)).unwrap(), 5);
        // Its acknowledgement was lost; the producer resends it.
        assert_eq!(p.append(&batch(42, 5, 5, 1)).unwrap(), 5);
        assert_eq!(p.next, 10);
        // A gap in the sequence is refused.
        assert_eq!(
            p.append(&batch(42, 20, 1, 1)),
            Err(code::OUT_OF_ORDER_SEQUENCE)
        );
        assert_eq!(p.append(&[1, 2, 3]), Err(code::CORRUPT_MESSAGE));
    }
}
