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

mod log;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Notify};

use store::{Store, valid_topic};

const NODE: i32 = 0;

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

/// The Kafka error codes the broker answers with.
mod code {
    pub(crate) const NONE: i16 = 0;
    pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub(crate) const CORRUPT_MESSAGE: i16 = 2;
    pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub(crate) const UNSUPPORTED_VERSION: i16 = 35;
    pub(crate) const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub(crate) const INVALID_PARTITIONS: i16 = 37;
    pub(crate) const INVALID_TOPIC: i16 = 17;
    pub(crate) const OUT_OF_ORDER_SEQUENCE: i16 = 45;
}

/// The broker's state behind one lock: the data, and the producer ids handed out.
struct State {
    store: Store,
    next_producer: i64,
}

pub(crate) struct Broker {
    state: Mutex<State>,
    appended: Notify,
    shutdown: Notify,
    port: u16,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Broker {
    /// Opens the data in `dir` and serves it on 127.0.0.1 (`port`, or any free one).
    pub(crate) async fn start(dir: &Path, port: u16) -> std::io::Result<Arc<Broker>> {
        let state = State {
            store: Store::open(dir)?,
            next_producer: chrono::Utc::now().timestamp_micros(),
        };
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

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting connections (the next user of the data starts a broker of its own).
    pub(crate) fn stop(&self) {
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
            None => st.store.topics.keys().cloned().collect(),
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
                match st.store.topics.get(&name) {
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
            } else if st.store.topics.contains_key(&name) {
                code::TOPIC_ALREADY_EXISTS
            } else if n == 0 || n > 1024 {
                code::INVALID_PARTITIONS
            } else if req.validate_only {
                code::NONE
            } else {
                match st.store.create(&name, n) {
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
                let result = match st.store.partition_mut(&name, p.index) {
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
                parts.push(match st.store.partition(&name, p.partition) {
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
                            .with_log_start_offset(part.start())
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
                        match st.store.partition(&name, p.partition_index) {
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
                st.store
                    .groups
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
        let error = if st.store.save_groups().is_ok() {
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
        let group = st.store.groups.get(req.group_id.0.as_str());
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
