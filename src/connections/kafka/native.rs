//! windsock's own Kafka-compatible broker, in process: the `local` profile's embedded broker.
//!
//! It stores what producers send the way Kafka does — each partition an append-only file of
//! record batches exactly as they arrived (only the base offset is set), synced before a produce
//! is acknowledged — so ingest costs a copy and an fsync per request, not work per record. On
//! start it scans the files, truncating a batch a crash left half-written. Consumer group offsets
//! are in `groups.json` (rewritten atomically on each commit).
//!
//! It speaks the part of the protocol windsock's clients (librdkafka) use, at the versions it
//! advertises: ApiVersions, Metadata, CreateTopics, InitProducerId (idempotent producers: a
//! batch resent after a lost acknowledgement is answered with its first offset, not appended
//! again), Produce, Fetch (long-polling), ListOffsets, FindCoordinator, OffsetCommit and
//! OffsetFetch. Consumers assign partitions themselves; group membership (JoinGroup…) is not
//! served. The codec is the kafka-protocol crate.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Notify};

const NODE: i32 = 0;
const BATCH_HEADER: usize = 61;

/// (api key, min version, max version) served.
const VERSIONS: [(ApiKey, i16, i16); 11] = [
    (ApiKey::Produce, 3, 8),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 8),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 5),
    (ApiKey::FindCoordinator, 0, 2),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 4),
    (ApiKey::InitProducerId, 0, 1),
    (ApiKey::DescribeConfigs, 0, 0),
];

mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_TOPIC: i16 = 17;
    pub const OUT_OF_ORDER_SEQUENCE: i16 = 45;
}

struct Batch {
    base: i64,
    last: i64,
    pos: u64,
    len: u32,
    max_ts: i64,
}

struct Partition {
    file: File,
    batches: Vec<Batch>,
    end: u64,
    next: i64,
    /// Per producer id: (base sequence of its last batch, its base offset, next sequence).
    producers: HashMap<i64, (i32, i64, i32)>,
}

struct State {
    dir: PathBuf,
    topics: BTreeMap<String, Vec<Partition>>,
    /// (group, topic, partition) → committed offset.
    groups: BTreeMap<String, BTreeMap<String, BTreeMap<i32, i64>>>,
    next_producer: i64,
}

pub struct Broker {
    state: Mutex<State>,
    appended: Notify,
    shutdown: Notify,
    port: u16,
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

impl Partition {
    fn open(path: &Path) -> std::io::Result<Partition> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut batches = Vec::new();
        let mut pos = 0usize;
        while pos + BATCH_HEADER <= data.len() {
            let len = i32_at(&data, pos + 8);
            let total = 12 + len.max(0) as usize;
            if len < 49 || pos + total > data.len() {
                break;
            }
            let base = i64_at(&data, pos);
            let last = base + i64::from(i32_at(&data, pos + 23));
            batches.push(Batch {
                base,
                last,
                pos: pos as u64,
                len: total as u32,
                max_ts: i64_at(&data, pos + 35),
            });
            pos += total;
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

    /// Appends the batches of one produce request; returns the first offset, or an error code.
    fn append(&mut self, records: &[u8]) -> Result<i64, i16> {
        let mut out = BytesMut::with_capacity(records.len());
        let mut first = None;
        let mut pos = 0usize;
        let mut added = Vec::new();
        let mut next = self.next;
        while pos < records.len() {
            if pos + BATCH_HEADER > records.len() {
                return Err(code::CORRUPT_MESSAGE);
            }
            let len = i32_at(records, pos + 8);
            let total = 12 + len.max(0) as usize;
            if len < 49 || pos + total > records.len() || records[pos + 16] != 2 {
                return Err(code::CORRUPT_MESSAGE);
            }
            let batch = &records[pos..pos + total];
            let delta = i64::from(i32_at(batch, 23));
            let producer = i64_at(batch, 43);
            let sequence = i32_at(batch, 53);
            let count = i32_at(batch, 57);
            if producer >= 0 {
                match self.producers.get(&producer) {
                    // The same batch again (its acknowledgement was lost): not appended twice.
                    Some((last_seq, last_base, _)) if *last_seq == sequence => {
                        first.get_or_insert(*last_base);
                        pos += total;
                        continue;
                    }
                    Some((_, _, expected)) if *expected != sequence => {
                        return Err(code::OUT_OF_ORDER_SEQUENCE);
                    }
                    _ => {}
                }
            }
            let base = next;
            first.get_or_insert(base);
            let start = out.len();
            out.put_i64(base);
            out.extend_from_slice(&batch[8..]);
            added.push((
                base,
                base + delta,
                start,
                total,
                i64_at(batch, 35),
                producer,
                sequence,
                count,
            ));
            next = base + delta + 1;
            pos += total;
        }
        if !out.is_empty() {
            self.file
                .write_all(&out)
                .and_then(|_| self.file.sync_data())
                .map_err(|_| code::CORRUPT_MESSAGE)?;
            for (base, last, start, total, max_ts, producer, sequence, count) in added {
                self.batches.push(Batch {
                    base,
                    last,
                    pos: self.end + start as u64,
                    len: total as u32,
                    max_ts,
                });
                if producer >= 0 {
                    self.producers
                        .insert(producer, (sequence, base, sequence.wrapping_add(count)));
                }
            }
            self.end += out.len() as u64;
            self.next = next;
        }
        Ok(first.unwrap_or(self.next))
    }

    /// Batches from the one holding `offset`, at least one, up to about `max` bytes.
    fn read(&self, offset: i64, max: usize) -> std::io::Result<Bytes> {
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

    fn offset_for_time(&self, ts: i64) -> i64 {
        match ts {
            -1 => self.next,
            -2 => self.batches.first().map_or(0, |b| b.base),
            ts => self
                .batches
                .iter()
                .find(|b| b.max_ts >= ts)
                .map_or(self.next, |b| b.base),
        }
    }
}

fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl State {
    fn open(dir: &Path) -> std::io::Result<State> {
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir)?;
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(meta) = std::fs::read_to_string(entry.path().join("partitions")) else {
                continue;
            };
            let n: i32 = meta.trim().parse().unwrap_or(0);
            let mut parts = Vec::new();
            for p in 0..n {
                parts.push(Partition::open(&entry.path().join(format!("{p}.log")))?);
            }
            topics.insert(name, parts);
        }
        let groups = std::fs::read(dir.join("groups.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(State {
            dir: dir.to_path_buf(),
            topics,
            groups,
            next_producer: chrono::Utc::now().timestamp_micros(),
        })
    }

    fn create(&mut self, name: &str, partitions: i32) -> std::io::Result<()> {
        let dir = self.dir.join("topics").join(name);
        std::fs::create_dir_all(&dir)?;
        let mut parts = Vec::new();
        for p in 0..partitions {
            parts.push(Partition::open(&dir.join(format!("{p}.log")))?);
        }
        // Written last: a topic exists once its partition count is on disk.
        let tmp = dir.join("partitions.tmp");
        std::fs::write(&tmp, partitions.to_string())?;
        std::fs::rename(&tmp, dir.join("partitions"))?;
        self.topics.insert(name.to_string(), parts);
        Ok(())
    }

    fn save_groups(&self) -> std::io::Result<()> {
        let tmp = self.dir.join("groups.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&self.groups).unwrap_or_default())?;
        f.sync_data()?;
        std::fs::rename(&tmp, self.dir.join("groups.json"))
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Broker {
    /// Opens the data in `dir` and serves it on 127.0.0.1 (`port`, or any free one).
    pub async fn start(dir: &Path, port: u16) -> std::io::Result<Arc<Broker>> {
        let state = State::open(dir)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let broker = Arc::new(Broker {
            state: Mutex::new(state),
            appended: Notify::new(),
            shutdown: Notify::new(),
            port,
        });
        let b = broker.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = b.shutdown.notified() => break,
                };
                let Ok((socket, _)) = accepted else { break };
                let _ = socket.set_nodelay(true);
                let b = b.clone();
                tokio::spawn(async move {
                    if let Err(e) = b.serve(socket).await {
                        tracing::debug!(error = %e, "broker connection closed");
                    }
                });
            }
        });
        Ok(broker)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting connections (the next user of the data starts a broker of its own).
    pub fn stop(&self) {
        self.shutdown.notify_waiters();
    }

    async fn serve(&self, mut socket: tokio::net::TcpStream) -> std::io::Result<()> {
        loop {
            let len = match socket.read_i32().await {
                Ok(n) if (0..=256 << 20).contains(&n) => n as usize,
                Ok(_) => return Ok(()),
                Err(_) => return Ok(()),
            };
            let mut frame = vec![0u8; len];
            socket.read_exact(&mut frame).await?;
            let response = self.handle(Bytes::from(frame)).await;
            match response {
                Some(r) if r.is_empty() => {}
                Some(r) => {
                    socket.write_i32(r.len() as i32).await?;
                    socket.write_all(&r).await?;
                }
                // A request it cannot read or does not serve: the connection is closed, as Kafka
                // does.
                None => return Ok(()),
            }
        }
    }

    async fn handle(&self, mut frame: Bytes) -> Option<Bytes> {
        if frame.len() < 8 {
            return None;
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let api = ApiKey::try_from(key).ok()?;
        let supported = VERSIONS
            .iter()
            .find(|(k, _, _)| *k == api)
            .is_some_and(|(_, lo, hi)| (*lo..=*hi).contains(&version));
        if api == ApiKey::ApiVersions && !supported {
            // Answer an unknown ApiVersions version at v0 with our ranges, as Kafka does.
            let r = self.api_versions(code::UNSUPPORTED_VERSION);
            return encode(correlation, ApiKey::ApiVersions, 0, &r);
        }
        if !supported {
            return None;
        }
        RequestHeader::decode(&mut frame, api.request_header_version(version)).ok()?;
        macro_rules! req {
            ($t:ty) => {
                <$t>::decode(&mut frame, version).ok()?
            };
        }
        match api {
            ApiKey::ApiVersions => {
                encode(correlation, api, version, &self.api_versions(code::NONE))
            }
            ApiKey::Metadata => {
                let r = self.metadata(req!(MetadataRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::CreateTopics => {
                let r = self.create_topics(req!(CreateTopicsRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::InitProducerId => {
                let mut st = self.state.lock().await;
                st.next_producer += 1;
                let r = InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(st.next_producer))
                    .with_producer_epoch(0);
                encode(correlation, api, version, &r)
            }
            ApiKey::Produce => {
                let req = req!(ProduceRequest);
                let acks = req.acks;
                let r = self.produce(req).await;
                if acks == 0 {
                    // No acknowledgement wanted: nothing goes back (an empty frame is skipped).
                    return Some(Bytes::new());
                }
                encode(correlation, api, version, &r)
            }
            ApiKey::Fetch => {
                let r = self.fetch(req!(FetchRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::ListOffsets => {
                let r = self.list_offsets(req!(ListOffsetsRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::FindCoordinator => {
                let r = FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(NODE))
                    .with_host(s("127.0.0.1"))
                    .with_port(i32::from(self.port));
                encode(correlation, api, version, &r)
            }
            ApiKey::OffsetCommit => {
                let r = self.offset_commit(req!(OffsetCommitRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::OffsetFetch => {
                let r = self.offset_fetch(req!(OffsetFetchRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::DescribeConfigs => {
                let req = req!(DescribeConfigsRequest);
                let results = req
                    .resources
                    .iter()
                    .map(|r| {
                        describe_configs_response::DescribeConfigsResult::default()
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                    })
                    .collect();
                let r = DescribeConfigsResponse::default().with_results(results);
                encode(correlation, api, version, &r)
            }
            _ => None,
        }
    }

    fn api_versions(&self, error: i16) -> ApiVersionsResponse {
        ApiVersionsResponse::default()
            .with_error_code(error)
            .with_api_keys(
                VERSIONS
                    .iter()
                    .map(|(k, lo, hi)| {
                        api_versions_response::ApiVersion::default()
                            .with_api_key(*k as i16)
                            .with_min_version(*lo)
                            .with_max_version(*hi)
                    })
                    .collect(),
            )
    }

    async fn metadata(&self, req: MetadataRequest) -> MetadataResponse {
        let st = self.state.lock().await;
        let names: Vec<String> = match &req.topics {
            None => st.topics.keys().cloned().collect(),
            Some(ts) => ts
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
        };
        let topics = names
            .into_iter()
            .map(|name| {
                let t = metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(TopicName(s(&name))));
                match st.topics.get(&name) {
                    None => t.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(parts) => t.with_partitions(
                        (0..parts.len() as i32)
                            .map(|p| {
                                metadata_response::MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(NODE))
                                    .with_replica_nodes(vec![BrokerId(NODE)])
                                    .with_isr_nodes(vec![BrokerId(NODE)])
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        MetadataResponse::default()
            .with_brokers(vec![
                metadata_response::MetadataResponseBroker::default()
                    .with_node_id(BrokerId(NODE))
                    .with_host(s("127.0.0.1"))
                    .with_port(i32::from(self.port)),
            ])
            .with_cluster_id(Some(s("windsock")))
            .with_controller_id(BrokerId(NODE))
            .with_topics(topics)
    }

    async fn create_topics(&self, req: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut st = self.state.lock().await;
        let mut results = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let n = if t.num_partitions < 0 {
                1
            } else {
                t.num_partitions
            };
            let error = if !valid_topic(&name) {
                code::INVALID_TOPIC
            } else if st.topics.contains_key(&name) {
                code::TOPIC_ALREADY_EXISTS
            } else if n == 0 || n > 1024 {
                code::INVALID_PARTITIONS
            } else if req.validate_only {
                code::NONE
            } else {
                match st.create(&name, n) {
                    Ok(()) => code::NONE,
                    Err(_) => code::CORRUPT_MESSAGE,
                }
            };
            results.push(
                create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(error),
            );
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    async fn produce(&self, req: ProduceRequest) -> ProduceResponse {
        let mut st = self.state.lock().await;
        let mut responses = Vec::new();
        for t in req.topic_data {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in t.partition_data {
                let r = produce_response::PartitionProduceResponse::default().with_index(p.index);
                let result = match st
                    .topics
                    .get_mut(&name)
                    .and_then(|ps| ps.get_mut(p.index.max(0) as usize).filter(|_| p.index >= 0))
                {
                    None => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(part) => part.append(p.records.as_deref().unwrap_or_default()),
                };
                parts.push(match result {
                    Ok(base) => r.with_base_offset(base).with_log_append_time_ms(-1),
                    Err(e) => r.with_error_code(e).with_base_offset(-1),
                });
            }
            responses.push(
                produce_response::TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_partition_responses(parts),
            );
        }
        drop(st);
        self.appended.notify_waiters();
        ProduceResponse::default().with_responses(responses)
    }

    async fn fetch(&self, req: FetchRequest) -> FetchResponse {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
        loop {
            let waiter = self.appended.notified();
            let (response, bytes) = self.fetch_once(&req).await;
            if bytes > 0 || tokio::time::Instant::now() >= deadline {
                return response;
            }
            if tokio::time::timeout_at(deadline, waiter).await.is_err() {
                return self.fetch_once(&req).await.0;
            }
        }
    }

    async fn fetch_once(&self, req: &FetchRequest) -> (FetchResponse, usize) {
        let st = self.state.lock().await;
        let mut budget = req.max_bytes.max(1) as usize;
        let mut total = 0usize;
        let mut responses = Vec::new();
        for t in &req.topics {
            let name = t.topic.0.to_string();
            let mut parts = Vec::new();
            for p in &t.partitions {
                let r = fetch_response::PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_aborted_transactions(Some(Vec::new()));
                let part = st.topics.get(&name).and_then(|ps| {
                    ps.get(p.partition.max(0) as usize)
                        .filter(|_| p.partition >= 0)
                });
                parts.push(match part {
                    None => r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(part) if p.fetch_offset > part.next || p.fetch_offset < 0 => r
                        .with_error_code(code::OFFSET_OUT_OF_RANGE)
                        .with_high_watermark(part.next)
                        .with_last_stable_offset(part.next),
                    Some(part) => {
                        let max = (p.partition_max_bytes.max(1) as usize).min(budget.max(1));
                        let records = part.read(p.fetch_offset, max).unwrap_or_default();
                        budget = budget.saturating_sub(records.len());
                        total += records.len();
                        r.with_high_watermark(part.next)
                            .with_last_stable_offset(part.next)
                            .with_log_start_offset(part.batches.first().map_or(0, |b| b.base))
                            .with_records(Some(records))
                    }
                });
            }
            responses.push(
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(parts),
            );
        }
        (FetchResponse::default().with_responses(responses), total)
    }

    async fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
        let st = self.state.lock().await;
        let topics = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = list_offsets_response::ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_timestamp(-1);
                        match st.topics.get(&name).and_then(|ps| {
                            ps.get(p.partition_index.max(0) as usize)
                                .filter(|_| p.partition_index >= 0)
                        }) {
                            None => r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                            Some(part) => r.with_offset(part.offset_for_time(p.timestamp)),
                        }
                    })
                    .collect();
                list_offsets_response::ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(parts)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }

    async fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut st = self.state.lock().await;
        let group = req.group_id.0.to_string();
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in &t.partitions {
                st.groups
                    .entry(group.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_default()
                    .insert(p.partition_index, p.committed_offset);
                parts.push(
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index),
                );
            }
            topics.push(
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        let error = if st.save_groups().is_ok() {
            code::NONE
        } else {
            code::CORRUPT_MESSAGE
        };
        for t in &mut topics {
            for p in &mut t.partitions {
                p.error_code = error;
            }
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    async fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let st = self.state.lock().await;
        let group = st.groups.get(req.group_id.0.as_str());
        let topics = req
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let committed = group.and_then(|g| g.get(t.name.0.as_str()));
                let parts = t
                    .partition_indexes
                    .iter()
                    .map(|p| {
                        offset_fetch_response::OffsetFetchResponsePartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(
                                committed.and_then(|c| c.get(p)).copied().unwrap_or(-1),
                            )
                            .with_metadata(Some(s("")))
                    })
                    .collect();
                offset_fetch_response::OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(parts)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }
}

fn encode<R: Encodable>(correlation: i32, api: ApiKey, version: i16, body: &R) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(&mut buf, api.response_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record batch header (magic 2) with `count` records and a body of `body` bytes.
    fn batch(producer: i64, sequence: i32, count: i32, body: usize) -> Vec<u8> {
        let len = (BATCH_HEADER - 12 + body) as i32;
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
