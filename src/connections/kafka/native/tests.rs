//! The broker's protocol surface, in process: every advertised version decodes, requests that
//! are garbage never panic it, and whatever arrives, its log only ever holds valid batches.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;

use super::log::tests::batch;
use super::*;

/// Encodes `T::default()` at `version` and decodes it back.
fn round_trip<T: Encodable + Decodable + Default>(version: i16) -> Result<(), String> {
    let mut buf = BytesMut::new();
    T::default()
        .encode(&mut buf, version)
        .map_err(|e| format!("encode: {e}"))?;
    T::decode(&mut buf.freeze(), version)
        .map(|_| ())
        .map_err(|e| format!("decode: {e}"))
}

#[test]
fn every_advertised_version_decodes() {
    for (api, lo, hi) in VERSIONS {
        for v in lo..=hi {
            let r = match api {
                ApiKey::Produce => round_trip::<ProduceRequest>(v),
                ApiKey::Fetch => round_trip::<FetchRequest>(v),
                ApiKey::ListOffsets => round_trip::<ListOffsetsRequest>(v),
                ApiKey::Metadata => round_trip::<MetadataRequest>(v),
                ApiKey::OffsetCommit => round_trip::<OffsetCommitRequest>(v),
                ApiKey::OffsetFetch => round_trip::<OffsetFetchRequest>(v),
                ApiKey::FindCoordinator => round_trip::<FindCoordinatorRequest>(v),
                ApiKey::JoinGroup => round_trip::<JoinGroupRequest>(v),
                ApiKey::Heartbeat => round_trip::<HeartbeatRequest>(v),
                ApiKey::LeaveGroup => round_trip::<LeaveGroupRequest>(v),
                ApiKey::SyncGroup => round_trip::<SyncGroupRequest>(v),
                ApiKey::DescribeGroups => round_trip::<DescribeGroupsRequest>(v),
                ApiKey::ListGroups => round_trip::<ListGroupsRequest>(v),
                ApiKey::ApiVersions => round_trip::<ApiVersionsRequest>(v),
                ApiKey::CreateTopics => round_trip::<CreateTopicsRequest>(v),
                ApiKey::DeleteTopics => round_trip::<DeleteTopicsRequest>(v),
                ApiKey::InitProducerId => round_trip::<InitProducerIdRequest>(v),
                ApiKey::DescribeConfigs => round_trip::<DescribeConfigsRequest>(v),
                ApiKey::CreatePartitions => round_trip::<CreatePartitionsRequest>(v),
                other => Err(format!("{other:?} is advertised but not dispatched")),
            };
            assert!(r.is_ok(), "{api:?} v{v}: {r:?}");
        }
    }
}

/// A request frame (without the length prefix), as a client sends it.
fn frame<R: Encodable>(api: ApiKey, version: i16, body: &R) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn produce(topic: &str, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ])
}

/// Valid requests of most kinds: what the fuzzer mutates.
fn seeds() -> Vec<Bytes> {
    let topic = |n: &str| TopicName(StrBytes::from_string(n.to_string()));
    vec![
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        frame(
            ApiKey::Metadata,
            8,
            &MetadataRequest::default()
                .with_allow_auto_topic_creation(true)
                .with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(topic("t"))),
                ])),
        ),
        frame(ApiKey::Produce, 8, &produce("t", batch(-1, -1, 3, 40))),
        frame(ApiKey::Produce, 3, &produce("fuzzed", batch(9, 0, 2, 10))),
        frame(
            ApiKey::Fetch,
            11,
            &FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(topic("t"))
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]),
        ),
        frame(
            ApiKey::ListOffsets,
            5,
            &ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                    ]),
            ]),
        ),
        frame(
            ApiKey::CreateTopics,
            4,
            &CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic("made"))
                    .with_num_partitions(2)
                    .with_replication_factor(1),
            ]),
        ),
        frame(
            ApiKey::OffsetCommit,
            7,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        frame(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(None),
        ),
        frame(
            ApiKey::Heartbeat,
            3,
            &HeartbeatRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))),
        ),
        frame(ApiKey::ListGroups, 3, &ListGroupsRequest::default()),
        frame(
            ApiKey::DescribeConfigs,
            2,
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t")),
            ]),
        ),
    ]
}

/// Sizes of every segment file below `dir`.
fn segment_sizes(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                out.push((p, len));
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
}

fn mutations() -> impl Strategy<Value = (usize, Vec<Mutation>)> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        any::<usize>().prop_map(Mutation::Cut),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ];
    (any::<usize>(), proptest::collection::vec(one, 1..6))
}

fn mutate(seed: &[u8], ms: &[Mutation]) -> Bytes {
    let mut b = seed.to_vec();
    for m in ms {
        let n = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if let Some(v) = b.get_mut(i % n) {
                    *v ^= x;
                }
            }
            Mutation::Cut(i) => b.truncate(i % n),
            Mutation::Insert(i, bytes) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Replace(i, x) => {
                if let Some(v) = b.get_mut(i % n) {
                    *v = *x;
                }
            }
        }
    }
    let mut out = BytesMut::with_capacity(b.len());
    out.put_slice(&b);
    out.freeze()
}

#[test]
fn mutated_requests_never_panic_the_broker_nor_corrupt_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("native");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = rt
        .block_on(Broker::start(&data, 0, BrokerConfig::default()))
        .unwrap();
    let seeds = seeds();
    // Every seed is answered as it is.
    for s in &seeds {
        let r = rt.block_on(broker.handle(s.clone(), "127.0.0.1"));
        assert!(r.is_some(), "a valid request was refused");
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&mutations(), |(pick, ms)| {
        let f = mutate(&seeds[pick % seeds.len()], &ms);
        // A request may wait (a JoinGroup for its rebalance); it must not panic.
        let handled = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), broker.handle(f, "127.0.0.1")).await
        });
        drop(handled);
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
    // What the log holds after all that is only whole, valid batches: reopening cuts nothing.
    broker.stop();
    drop(broker);
    rt.shutdown_timeout(Duration::from_secs(5));
    let before = segment_sizes(&data);
    assert!(!before.is_empty());
    let store = Store::open(&data, LogConfig::default()).unwrap();
    assert_eq!(
        segment_sizes(&data),
        before,
        "reopening had to cut something"
    );
    let t = &store.topics["t"][0];
    assert!(t.next >= 3, "the seed's batch is there");
}

/// A client that announces a request and sends only part of it, or connects and says nothing,
/// is cut off (request and idle timeouts), and holds no frame-sized buffer meanwhile.
#[test]
fn half_sent_requests_and_silent_connections_are_closed() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = BrokerConfig {
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..BrokerConfig::default()
    };
    let broker = rt
        .block_on(Broker::start(&dir.path().join("data"), 0, config))
        .unwrap();
    let addr = ("127.0.0.1", broker.port());
    let closed = |mut s: std::net::TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 1];
        matches!(s.read(&mut buf), Ok(0))
    };
    // 100 MiB announced, 10 bytes sent.
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    half.write_all(&(100i32 << 20).to_be_bytes()).unwrap();
    half.write_all(&[0u8; 10]).unwrap();
    assert!(
        closed(half, Duration::from_secs(5)),
        "a half-sent request kept its connection"
    );
    // Nothing sent at all.
    let silent = std::net::TcpStream::connect(addr).unwrap();
    assert!(
        closed(silent, Duration::from_secs(5)),
        "a silent connection stayed open"
    );
    broker.stop();
}

/// The README lists the APIs and versions the broker serves: each as served.
#[test]
fn the_readme_lists_the_apis_as_served() {
    let readme = include_str!("../../../../README.md");
    for (api, lo, hi) in VERSIONS {
        let row = format!("| {api:?} | {lo}–{hi} |");
        assert!(readme.contains(&row), "the README lacks `{row}`");
    }
}
