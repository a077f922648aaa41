//! windsock's own Kafka-compatible broker, in process: the `local` profile's embedded broker,
//! one node, made to be pointed at with the usual tools (kcat, the console clients, any client's
//! `subscribe()`) on a laptop.
//!
//! Storage ([`log`], [`store`]): each partition a folder of segment files holding record
//! batches exactly as producers sent them (only the base offset is set), checked (CRC-32C,
//! record count, size) and synced before a produce is acknowledged, with retention by age and
//! size. Consumer groups' committed offsets in `groups.json`. Membership ([`groups`]): the
//! classic group protocol, the group's leader computing assignments as in Kafka.
//!
//! Protocol, through the kafka-protocol crate, at the versions in [`VERSIONS`] (each checked to
//! decode by a test): ApiVersions, Metadata (creating unknown topics when asked, as Kafka's
//! `auto.create.topics.enable`), CreateTopics, DeleteTopics, DescribeConfigs, InitProducerId,
//! Produce, Fetch (long-polling), ListOffsets, FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, OffsetCommit and OffsetFetch. A request for anything
//! else is logged with its API's name and the connection is closed, as Kafka does.
//!
//! The data directory is locked for the broker's lifetime (one broker per directory); stopping
//! closes the listener and every connection.
//!
//! This file is the protocol layer and nothing else: the connection loop, the version table and
//! one handler per API over the same state lock. Storage and membership live in their own
//! modules; the handlers stay together because they share the request plumbing and are read
//! side by side.

mod groups;
mod log;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Notify, Semaphore, watch};

use groups::{Coordinator, JoinRequest, Reply};
pub(crate) use log::LogConfig;
use store::{Committed, Store, valid_topic};

const NODE: i32 = 0;

/// (api key, min version, max version) served.
const VERSIONS: [(ApiKey, i16, i16); 19] = [
    (ApiKey::Produce, 3, 8),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 5),
    (ApiKey::Metadata, 1, 8),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::DescribeGroups, 0, 4),
    (ApiKey::ListGroups, 0, 3),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 4),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::InitProducerId, 0, 1),
    (ApiKey::DescribeConfigs, 1, 2),
    (ApiKey::CreatePartitions, 0, 3),
];

/// The Kafka error codes the broker answers with.
mod code {
    pub(crate) const NONE: i16 = 0;
    pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub(crate) const CORRUPT_MESSAGE: i16 = 2;
    pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub(crate) const MESSAGE_TOO_LARGE: i16 = 10;
    pub(crate) const INVALID_TOPIC: i16 = 17;
    pub(crate) const ILLEGAL_GENERATION: i16 = 22;
    pub(crate) const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub(crate) const INVALID_GROUP_ID: i16 = 24;
    pub(crate) const UNKNOWN_MEMBER_ID: i16 = 25;
    pub(crate) const REBALANCE_IN_PROGRESS: i16 = 27;
    pub(crate) const UNSUPPORTED_VERSION: i16 = 35;
    pub(crate) const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub(crate) const INVALID_PARTITIONS: i16 = 37;
    pub(crate) const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub(crate) const OUT_OF_ORDER_SEQUENCE: i16 = 45;
    pub(crate) const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub(crate) const KAFKA_STORAGE_ERROR: i16 = 56;
    pub(crate) const MEMBER_ID_REQUIRED: i16 = 79;
    pub(crate) const INVALID_RECORD: i16 = 87;
}

/// How the broker behaves: see [`BrokerConfig::from_env`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrokerConfig {
    /// Create a topic on first use (Metadata that allows it, Produce).
    pub(crate) auto_create: bool,
    /// Partitions of a topic created on first use.
    pub(crate) default_partitions: i32,
    /// The largest request frame read; a connection sending a larger one is closed.
    pub(crate) max_frame_bytes: usize,
    /// The most a Fetch answers with, whatever it asks for.
    pub(crate) max_fetch_bytes: usize,
    /// Connections served at once; more are closed at once.
    pub(crate) max_connections: usize,
    /// A connection that sends no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`).
    pub(crate) idle_timeout: Duration,
    /// A request whose length has arrived must arrive whole within this.
    pub(crate) request_timeout: Duration,
    pub(crate) log: LogConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            auto_create: true,
            default_partitions: 1,
            max_frame_bytes: 100 << 20,
            max_fetch_bytes: 64 << 20,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            log: LogConfig::default(),
        }
    }
}

impl BrokerConfig {
    /// The defaults, with `WINDSOCK_BROKER_*` variables over them:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `WINDSOCK_BROKER_AUTO_CREATE` | create topics on first use | `true` |
    /// | `WINDSOCK_BROKER_PARTITIONS` | partitions of such a topic | 1 |
    /// | `WINDSOCK_BROKER_RETENTION` | delete segments older than this (`7d`, `12h`; `forever`) | `7d` |
    /// | `WINDSOCK_BROKER_RETENTION_BYTES` | delete the oldest segments beyond this many bytes a partition | none |
    /// | `WINDSOCK_BROKER_SEGMENT_BYTES` | roll a partition's segment at this size | 256 MiB |
    /// | `WINDSOCK_BROKER_MAX_CONNECTIONS` | connections served at once | 1024 |
    /// | `WINDSOCK_BROKER_IDLE_TIMEOUT` | close a connection silent this long | `10m` |
    /// | `WINDSOCK_BROKER_REQUEST_TIMEOUT` | close a connection whose request does not arrive whole within this | `30s` |
    pub(crate) fn from_env() -> Result<BrokerConfig, String> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let mut c = BrokerConfig::default();
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("{name} is `{v}`, which is not a whole number"))
        }
        if let Some(v) = var("WINDSOCK_BROKER_AUTO_CREATE") {
            c.auto_create = match v.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(format!(
                        "WINDSOCK_BROKER_AUTO_CREATE is `{v}`: use true or false"
                    ));
                }
            };
        }
        if let Some(v) = var("WINDSOCK_BROKER_PARTITIONS") {
            c.default_partitions = num("WINDSOCK_BROKER_PARTITIONS", &v)?;
            if !(1..=1024).contains(&c.default_partitions) {
                return Err(format!(
                    "WINDSOCK_BROKER_PARTITIONS is {v}: it must be between 1 and 1024"
                ));
            }
        }
        if let Some(v) = var("WINDSOCK_BROKER_RETENTION") {
            c.log.retention_ms = match v.trim() {
                "forever" | "none" => None,
                d => Some(
                    d.parse::<crate::spec::Duration>()
                        .map_err(|e| format!("WINDSOCK_BROKER_RETENTION: {e}"))?
                        .std()
                        .as_millis() as i64,
                ),
            };
        }
        if let Some(v) = var("WINDSOCK_BROKER_RETENTION_BYTES") {
            c.log.retention_bytes = Some(num("WINDSOCK_BROKER_RETENTION_BYTES", &v)?);
        }
        if let Some(v) = var("WINDSOCK_BROKER_SEGMENT_BYTES") {
            c.log.segment_bytes = num("WINDSOCK_BROKER_SEGMENT_BYTES", &v)?;
            if c.log.segment_bytes < 1 << 20 {
                return Err(format!(
                    "WINDSOCK_BROKER_SEGMENT_BYTES is {v}: use at least 1 MiB (1048576)"
                ));
            }
        }
        if let Some(v) = var("WINDSOCK_BROKER_MAX_CONNECTIONS") {
            c.max_connections = num("WINDSOCK_BROKER_MAX_CONNECTIONS", &v)?;
        }
        let duration = |name: &str, v: &str| {
            v.parse::<crate::spec::Duration>()
                .map(|d| d.std())
                .map_err(|e| format!("{name}: {e}"))
        };
        if let Some(v) = var("WINDSOCK_BROKER_IDLE_TIMEOUT") {
            c.idle_timeout = duration("WINDSOCK_BROKER_IDLE_TIMEOUT", &v)?;
        }
        if let Some(v) = var("WINDSOCK_BROKER_REQUEST_TIMEOUT") {
            c.request_timeout = duration("WINDSOCK_BROKER_REQUEST_TIMEOUT", &v)?;
        }
        Ok(c)
    }
}

/// The broker's data behind one lock: the store, and the producer ids handed out.
struct State {
    store: Store,
    next_producer: i64,
}

pub(crate) struct Broker {
    state: Mutex<State>,
    groups: Coordinator,
    appended: Notify,
    stop: watch::Sender<bool>,
    port: u16,
    config: BrokerConfig,
    connections: Arc<Semaphore>,
    /// The data directory is this broker's for its lifetime.
    _lock: crate::sys::FileLock,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("API key {key}"))
}

impl Broker {
    /// Takes the data in `dir` (locked while the broker lives) and serves it on 127.0.0.1
    /// (`port`, or any free one).
    pub(crate) async fn start(
        dir: &Path,
        port: u16,
        config: BrokerConfig,
    ) -> std::io::Result<Arc<Broker>> {
        std::fs::create_dir_all(dir)?;
        let mut lock = match crate::sys::FileLock::try_acquire(&dir.join("lock"))? {
            Ok(lock) => lock,
            Err(holder) => {
                return Err(std::io::Error::other(format!(
                    "another broker (pid {holder}) serves {}",
                    dir.display()
                )));
            }
        };
        lock.set_note(&std::process::id().to_string())?;
        // A write past a file-size limit fails with an error the log handles, rather than a
        // signal that kills the process.
        crate::sys::ignore_file_size_signal();
        let state = State {
            store: Store::open(dir, config.log)?,
            next_producer: chrono::Utc::now().timestamp_micros(),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let (stop, _) = watch::channel(false);
        let broker = Arc::new(Broker {
            state: Mutex::new(state),
            groups: Coordinator::default(),
            appended: Notify::new(),
            stop,
            port,
            config,
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            _lock: lock,
        });
        let b = broker.clone();
        let mut stopping = broker.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopping.changed() => break,
                };
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, or a client gone before it was accepted: the
                        // listener stays; a moment later it accepts again.
                        tracing::warn!("the embedded broker cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = b.connections.clone().try_acquire_owned() else {
                    tracing::warn!(
                        %peer,
                        max = b.config.max_connections,
                        "too many connections to the embedded broker; this one is closed"
                    );
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let b = b.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = b.serve(socket, peer.ip().to_string()).await {
                        tracing::debug!(error = %e, "broker connection closed");
                    }
                });
            }
        });
        // Groups move on without requests (session timeouts, initial delays); retention runs
        // now and then.
        let b = Arc::downgrade(&broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let Some(b) = b.upgrade() else { break };
                if *b.stop.borrow() {
                    break;
                }
                b.groups.tick();
                n += 1;
                if n % 600 == 1 {
                    b.state.lock().await.store.enforce_retention();
                }
            }
        });
        Ok(broker)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Stops: the listener closes, and so does every connection (its request in progress ends
    /// first).
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    async fn serve(
        &self,
        mut socket: tokio::net::TcpStream,
        client_host: String,
    ) -> std::io::Result<()> {
        let mut stopping = self.stop.subscribe();
        loop {
            let len = tokio::select! {
                n = tokio::time::timeout(self.config.idle_timeout, socket.read_i32()) => match n {
                    Ok(n) => n,
                    Err(_) => {
                        tracing::debug!(client = %client_host, "an idle connection is closed");
                        return Ok(());
                    }
                },
                _ = stopping.changed() => return Ok(()),
            };
            let len = match len {
                Ok(n) if n >= 0 && (n as usize) <= self.config.max_frame_bytes => n as usize,
                Ok(n) => {
                    tracing::warn!(
                        bytes = n,
                        max = self.config.max_frame_bytes,
                        "a request frame over the broker's limit; the connection is closed"
                    );
                    return Ok(());
                }
                Err(_) => return Ok(()),
            };
            // Read as it arrives, not allocated whole on a client's word: a client announcing
            // large frames it never sends holds no memory, and its connection is closed when
            // the request does not arrive in time.
            let mut frame = Vec::with_capacity(len.min(64 << 10));
            let mut body = (&mut socket).take(len as u64);
            let read = body.read_to_end(&mut frame);
            match tokio::time::timeout(self.config.request_timeout, read).await {
                Ok(Ok(n)) if n == len => {}
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    tracing::warn!(
                        client = %client_host,
                        bytes = len,
                        received = frame.len(),
                        "a request did not arrive whole in time; the connection is closed"
                    );
                    return Ok(());
                }
            }
            let response = self.handle(Bytes::from(frame), &client_host).await;
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

    /// One request frame to its response frame (`Some(empty)` for none wanted), or `None` to
    /// close the connection.
    async fn handle(&self, mut frame: Bytes, client_host: &str) -> Option<Bytes> {
        if frame.len() < 8 {
            tracing::warn!("a request too short to have a header; the connection is closed");
            return None;
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let supported = VERSIONS
            .iter()
            .any(|(k, lo, hi)| *k as i16 == key && (*lo..=*hi).contains(&version));
        if key == ApiKey::ApiVersions as i16 && !supported {
            // Answer an unknown ApiVersions version at v0 with our ranges, as Kafka does.
            let r = self.api_versions(code::UNSUPPORTED_VERSION);
            return encode(correlation, ApiKey::ApiVersions, 0, &r);
        }
        let Ok(api) = ApiKey::try_from(key) else {
            tracing::warn!(
                api = key,
                "a request for an API key Kafka does not have; the connection is closed"
            );
            return None;
        };
        if !supported {
            tracing::warn!(
                "the embedded broker does not serve {} version {version}; the connection is closed",
                api_name(key)
            );
            return None;
        }
        let header = match RequestHeader::decode(&mut frame, api.request_header_version(version)) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(
                    "a {} request header that does not decode ({e}); the connection is closed",
                    api_name(key)
                );
                return None;
            }
        };
        macro_rules! req {
            ($t:ty) => {
                match <$t>::decode(&mut frame, version) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(
                            "a {} request v{version} that does not decode ({e}); the connection is closed",
                            api_name(key)
                        );
                        return None;
                    }
                }
            };
        }
        let client_id = header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        match api {
            ApiKey::ApiVersions => {
                encode(correlation, api, version, &self.api_versions(code::NONE))
            }
            ApiKey::Metadata => {
                let r = self.metadata(req!(MetadataRequest), version).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::CreateTopics => {
                let r = self.create_topics(req!(CreateTopicsRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::DeleteTopics => {
                let r = self.delete_topics(req!(DeleteTopicsRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::CreatePartitions => {
                let r = self.create_partitions(req!(CreatePartitionsRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::DescribeConfigs => {
                let r = self.describe_configs(req!(DescribeConfigsRequest)).await;
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
            ApiKey::JoinGroup => {
                let r = self
                    .join_group(req!(JoinGroupRequest), version, client_id, client_host)
                    .await;
                encode(correlation, api, version, &r)
            }
            ApiKey::SyncGroup => {
                let r = self.sync_group(req!(SyncGroupRequest)).await;
                encode(correlation, api, version, &r)
            }
            ApiKey::Heartbeat => {
                let req = req!(HeartbeatRequest);
                let error = self.groups.heartbeat(
                    req.group_id.as_str(),
                    req.member_id.as_str(),
                    req.generation_id,
                );
                encode(
                    correlation,
                    api,
                    version,
                    &HeartbeatResponse::default().with_error_code(error),
                )
            }
            ApiKey::LeaveGroup => {
                let r = self.leave_group(req!(LeaveGroupRequest), version);
                encode(correlation, api, version, &r)
            }
            ApiKey::ListGroups => {
                let r = self.list_groups().await;
                encode(correlation, api, version, &r)
            }
            ApiKey::DescribeGroups => {
                let r = self.describe_groups(req!(DescribeGroupsRequest));
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
            other => {
                tracing::warn!(
                    "the embedded broker does not serve {other:?}; the connection is closed"
                );
                None
            }
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

    /// Creates `name` with the default partitions when the broker creates topics on first use.
    fn auto_create(&self, st: &mut State, name: &str) -> bool {
        if !self.config.auto_create || !valid_topic(name) {
            return false;
        }
        match st.store.create(name, self.config.default_partitions) {
            Ok(()) => {
                tracing::info!(
                    topic = name,
                    partitions = self.config.default_partitions,
                    "created a topic on first use"
                );
                true
            }
            Err(e) => {
                tracing::error!(topic = name, "cannot create a topic: {e}");
                false
            }
        }
    }

    async fn metadata(&self, req: MetadataRequest, version: i16) -> MetadataResponse {
        let mut st = self.state.lock().await;
        let names: Vec<String> = match &req.topics {
            None => st.store.topics.keys().cloned().collect(),
            Some(ts) => ts
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
        };
        // Before v4 a Metadata request always allowed creation.
        let may_create = version < 4 || req.allow_auto_topic_creation;
        let topics = names
            .into_iter()
            .map(|name| {
                if may_create && !st.store.topics.contains_key(&name) {
                    self.auto_create(&mut st, &name);
                }
                let t = metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(TopicName(s(&name))));
                match st.store.topics.get(&name) {
                    None if !valid_topic(&name) => t.with_error_code(code::INVALID_TOPIC),
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
                self.config.default_partitions
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
                    Err(e) => {
                        tracing::error!(topic = %name, "cannot create a topic: {e}");
                        code::KAFKA_STORAGE_ERROR
                    }
                }
            };
            results.push(
                create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(error)
                    .with_num_partitions(n),
            );
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    /// Grows topics to the partition counts asked for, as Kafka does: never shrinks one, and
    /// takes no explicit replica assignment (one node).
    async fn create_partitions(&self, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
        let mut st = self.state.lock().await;
        let mut results = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let (error, message) = match st.store.topics.get(&name).map(Vec::len) {
                None => (code::UNKNOWN_TOPIC_OR_PARTITION, None),
                Some(have) if t.count as usize <= have => (
                    code::INVALID_PARTITIONS,
                    Some(format!(
                        "topic `{name}` has {have} partitions; the count can only grow"
                    )),
                ),
                Some(_) if t.count > 1024 => (
                    code::INVALID_PARTITIONS,
                    Some("at most 1024 partitions".to_string()),
                ),
                Some(_) if req.validate_only => (code::NONE, None),
                Some(_) => match st.store.add_partitions(&name, t.count) {
                    Ok(()) => {
                        tracing::info!(topic = %name, partitions = t.count, "added partitions to a topic");
                        (code::NONE, None)
                    }
                    Err(e) => {
                        tracing::error!(topic = %name, "cannot add partitions: {e}");
                        (code::KAFKA_STORAGE_ERROR, Some(e.to_string()))
                    }
                },
            };
            results.push(
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(error)
                    .with_error_message(message.map(StrBytes::from_string)),
            );
        }
        CreatePartitionsResponse::default().with_results(results)
    }

    async fn delete_topics(&self, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut st = self.state.lock().await;
        let names: Vec<TopicName> = if req.topic_names.is_empty() {
            req.topics.into_iter().filter_map(|t| t.name).collect()
        } else {
            req.topic_names
        };
        let responses = names
            .into_iter()
            .map(|name| {
                let error = match st.store.delete(name.as_str()) {
                    Ok(true) => {
                        tracing::info!(topic = %name.as_str(), "deleted a topic");
                        code::NONE
                    }
                    Ok(false) => code::UNKNOWN_TOPIC_OR_PARTITION,
                    Err(e) => {
                        tracing::error!(topic = %name.as_str(), "cannot delete a topic: {e}");
                        code::KAFKA_STORAGE_ERROR
                    }
                };
                delete_topics_response::DeletableTopicResult::default()
                    .with_name(Some(name))
                    .with_error_code(error)
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    }

    /// Topics have no settings of their own here: each is answered with the broker-wide ones
    /// that matter to a client.
    async fn describe_configs(&self, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
        const TOPIC: i8 = 2;
        const BROKER: i8 = 4;
        let st = self.state.lock().await;
        let config = |name: &str, value: String| {
            describe_configs_response::DescribeConfigsResourceResult::default()
                .with_name(s(name))
                .with_value(Some(s(&value)))
                .with_read_only(true)
        };
        let log = self.config.log;
        let settings = vec![
            config("retention.ms", log.retention_ms.unwrap_or(-1).to_string()),
            config(
                "retention.bytes",
                log.retention_bytes.map_or(-1, |b| b as i64).to_string(),
            ),
            config("segment.bytes", log.segment_bytes.to_string()),
            config("max.message.bytes", log.max_batch_bytes.to_string()),
            config("cleanup.policy", "delete".into()),
        ];
        let results = req
            .resources
            .into_iter()
            .map(|r| {
                let known = match r.resource_type {
                    TOPIC => st.store.topics.contains_key(r.resource_name.as_str()),
                    BROKER => true,
                    _ => false,
                };
                let result = describe_configs_response::DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name);
                if known {
                    result.with_configs(settings.clone())
                } else {
                    result.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                }
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    async fn produce(&self, req: ProduceRequest) -> ProduceResponse {
        let mut st = self.state.lock().await;
        let mut responses = Vec::new();
        for t in req.topic_data {
            let name = t.name.0.to_string();
            if !st.store.topics.contains_key(&name) {
                self.auto_create(&mut st, &name);
            }
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
        let mut stopping = self.stop.subscribe();
        loop {
            let waiter = self.appended.notified();
            let (response, bytes) = self.fetch_once(&req).await;
            if bytes > 0 || tokio::time::Instant::now() >= deadline || *stopping.borrow() {
                return response;
            }
            tokio::select! {
                r = tokio::time::timeout_at(deadline, waiter) => {
                    if r.is_err() {
                        return self.fetch_once(&req).await.0;
                    }
                }
                _ = stopping.changed() => return response,
            }
        }
    }

    async fn fetch_once(&self, req: &FetchRequest) -> (FetchResponse, usize) {
        let mut st = self.state.lock().await;
        let mut budget = (req.max_bytes.max(1) as usize).min(self.config.max_fetch_bytes);
        let mut total = 0usize;
        let mut responses = Vec::new();
        for t in &req.topics {
            let name = t.topic.0.to_string();
            let mut parts = Vec::new();
            for p in &t.partitions {
                let r = fetch_response::PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_aborted_transactions(Some(Vec::new()));
                parts.push(match st.store.partition_mut(&name, p.partition) {
                    None => r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(part) if part.failed() => r.with_error_code(code::KAFKA_STORAGE_ERROR),
                    Some(part) if p.fetch_offset > part.next || p.fetch_offset < part.start() => r
                        .with_error_code(code::OFFSET_OUT_OF_RANGE)
                        .with_high_watermark(part.next)
                        .with_last_stable_offset(part.next)
                        .with_log_start_offset(part.start()),
                    Some(part) => {
                        let max = (p.partition_max_bytes.max(1) as usize).min(budget.max(1));
                        let records = match part.read(p.fetch_offset, max) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::error!(topic = %name, partition = p.partition, "cannot read the log: {e}");
                                Bytes::new()
                            }
                        };
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
                            // As Kafka: no record at or after the time is offset -1.
                            Some(part) => {
                                let (offset, timestamp) = part.offset_for_time(p.timestamp);
                                r.with_offset(offset).with_timestamp(timestamp)
                            }
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

    async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: &str,
    ) -> JoinGroupResponse {
        let member_id = req.member_id.to_string();
        let error = |e: i16| {
            JoinGroupResponse::default()
                .with_error_code(e)
                .with_generation_id(-1)
                .with_member_id(req.member_id.clone())
        };
        if req.group_id.as_str().is_empty() {
            return error(code::INVALID_GROUP_ID);
        }
        let reply = self.groups.join(JoinRequest {
            group: req.group_id.to_string(),
            member_id,
            client_id,
            client_host: format!("/{client_host}"),
            session_timeout: Duration::from_millis(req.session_timeout_ms.max(1) as u64),
            rebalance_timeout: Duration::from_millis(
                req.rebalance_timeout_ms.max(req.session_timeout_ms).max(1) as u64,
            ),
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            id_required: version >= 4,
        });
        let joined = match reply {
            Reply::Now(j) => j,
            Reply::Later(rx) => match tokio::time::timeout(groups::MAX_WAIT, rx).await {
                Ok(Ok(j)) => j,
                _ => return error(code::REBALANCE_IN_PROGRESS),
            },
        };
        JoinGroupResponse::default()
            .with_error_code(joined.error)
            .with_generation_id(joined.generation)
            .with_protocol_type(Some(s(&joined.protocol_type)))
            .with_protocol_name(Some(s(&joined.protocol)))
            .with_leader(s(&joined.leader))
            .with_member_id(s(&joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|(id, meta)| {
                        join_group_response::JoinGroupResponseMember::default()
                            .with_member_id(s(&id))
                            .with_metadata(meta)
                    })
                    .collect(),
            )
    }

    async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let reply = self.groups.sync(
            req.group_id.as_str(),
            req.member_id.as_str(),
            req.generation_id,
            req.assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
        );
        let synced = match reply {
            Reply::Now(s) => s,
            Reply::Later(rx) => match tokio::time::timeout(groups::MAX_WAIT, rx).await {
                Ok(Ok(s)) => s,
                _ => {
                    return SyncGroupResponse::default()
                        .with_error_code(code::REBALANCE_IN_PROGRESS);
                }
            },
        };
        SyncGroupResponse::default()
            .with_error_code(synced.error)
            .with_protocol_type(Some(s(&synced.protocol_type)))
            .with_protocol_name(Some(s(&synced.protocol)))
            .with_assignment(synced.assignment)
    }

    fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let group = req.group_id.to_string();
        if version < 3 {
            let codes = self.groups.leave(&group, &[req.member_id.to_string()]);
            return LeaveGroupResponse::default()
                .with_error_code(codes.first().copied().unwrap_or(code::NONE));
        }
        let ids: Vec<String> = req
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect();
        let codes = self.groups.leave(&group, &ids);
        LeaveGroupResponse::default().with_members(
            req.members
                .into_iter()
                .zip(codes)
                .map(|(m, c)| {
                    leave_group_response::MemberResponse::default()
                        .with_member_id(m.member_id)
                        .with_error_code(c)
                })
                .collect(),
        )
    }

    /// Groups with members, and groups known only by their committed offsets (simple
    /// consumers such as windsock's own).
    async fn list_groups(&self) -> ListGroupsResponse {
        let mut groups: std::collections::BTreeMap<String, (String, &'static str)> = self
            .groups
            .list()
            .into_iter()
            .map(|(name, ty, state)| (name, (ty, state)))
            .collect();
        let st = self.state.lock().await;
        for name in st.store.groups.keys() {
            groups
                .entry(name.clone())
                .or_insert((String::new(), "Empty"));
        }
        ListGroupsResponse::default().with_groups(
            groups
                .into_iter()
                .map(|(name, (ty, state))| {
                    list_groups_response::ListedGroup::default()
                        .with_group_id(GroupId(s(&name)))
                        .with_protocol_type(s(&ty))
                        .with_group_state(s(state))
                })
                .collect(),
        )
    }

    fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let described = describe_groups_response::DescribedGroup::default();
                match self.groups.describe(g.as_str()) {
                    None => described.with_group_id(g).with_group_state(s("Dead")),
                    Some(v) => described
                        .with_group_id(g)
                        .with_group_state(s(v.state))
                        .with_protocol_type(s(&v.protocol_type))
                        .with_protocol_data(s(&v.protocol))
                        .with_members(
                            v.members
                                .into_iter()
                                .map(|m| {
                                    describe_groups_response::DescribedGroupMember::default()
                                        .with_member_id(s(&m.member_id))
                                        .with_client_id(s(&m.client_id))
                                        .with_client_host(s(&m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        ),
                }
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    async fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = req.group_id.to_string();
        // Members of a group commit for their generation; assign() consumers (no member,
        // generation -1) always may.
        let allowed = self.groups.may_commit(
            &group,
            req.member_id.as_str(),
            req.generation_id_or_member_epoch,
        );
        let mut st = self.state.lock().await;
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in &t.partitions {
                // As Kafka: a commit for a partition that does not exist is refused.
                let known = st.store.partition(&name, p.partition_index).is_some();
                if allowed == code::NONE && known {
                    st.store
                        .groups
                        .entry(group.clone())
                        .or_default()
                        .entry(name.clone())
                        .or_default()
                        .insert(
                            p.partition_index,
                            Committed {
                                offset: p.committed_offset,
                                metadata: p
                                    .committed_metadata
                                    .as_ref()
                                    .map(|m| m.to_string())
                                    .unwrap_or_default(),
                            },
                        );
                }
                parts.push(
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(if known {
                            code::NONE
                        } else {
                            code::UNKNOWN_TOPIC_OR_PARTITION
                        }),
                );
            }
            topics.push(
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        let error = if allowed != code::NONE {
            allowed
        } else {
            match st.store.save_groups() {
                Ok(()) => code::NONE,
                Err(e) => {
                    tracing::error!(group = %group, "cannot save committed offsets: {e}");
                    code::KAFKA_STORAGE_ERROR
                }
            }
        };
        for t in &mut topics {
            for p in &mut t.partitions {
                if p.error_code == code::NONE {
                    p.error_code = error;
                }
            }
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    async fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let st = self.state.lock().await;
        let group = st.store.groups.get(req.group_id.as_str());
        let partition = |index: i32, committed: Option<&Committed>| {
            offset_fetch_response::OffsetFetchResponsePartition::default()
                .with_partition_index(index)
                .with_committed_offset(committed.map_or(-1, |c| c.offset))
                .with_metadata(Some(s(committed.map_or("", |c| c.metadata.as_str()))))
        };
        let topics = match req.topics {
            // Every topic the group has committed offsets for.
            None => group
                .map(|g| {
                    g.iter()
                        .map(|(topic, offsets)| {
                            offset_fetch_response::OffsetFetchResponseTopic::default()
                                .with_name(TopicName(s(topic)))
                                .with_partitions(
                                    offsets
                                        .iter()
                                        .map(|(p, c)| partition(*p, Some(c)))
                                        .collect(),
                                )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Some(topics) => topics
                .into_iter()
                .map(|t| {
                    let committed = group.and_then(|g| g.get(t.name.0.as_str()));
                    let parts = t
                        .partition_indexes
                        .iter()
                        .map(|p| partition(*p, committed.and_then(|c| c.get(p))))
                        .collect();
                    offset_fetch_response::OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(parts)
                })
                .collect(),
        };
        OffsetFetchResponse::default().with_topics(topics)
    }
}

fn encode<R: Encodable>(correlation: i32, api: ApiKey, version: i16, body: &R) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    if let Err(e) = ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|_| body.encode(&mut buf, version))
    {
        tracing::error!(
            "cannot encode a {api:?} v{version} response ({e}); the connection is closed"
        );
        return None;
    }
    Some(buf.freeze())
}

#[cfg(test)]
mod tests;
