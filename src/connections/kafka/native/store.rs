//! The broker's data directory: a folder per topic (its partition count in `partitions`, one log
//! file per partition) and the consumer groups' committed offsets in `groups.json`, replaced
//! atomically on each commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::log::Partition;
use crate::sys;

/// Committed offsets: group → topic → partition → offset.
pub(super) type Offsets = BTreeMap<String, BTreeMap<String, BTreeMap<i32, i64>>>;

pub(super) struct Store {
    dir: PathBuf,
    pub(super) topics: BTreeMap<String, Vec<Partition>>,
    pub(super) groups: Offsets,
}

/// Kafka's rule for topic names.
pub(super) fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Store {
    pub(super) fn open(dir: &Path) -> std::io::Result<Store> {
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir)?;
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            // A folder without its partition count is a topic whose creation did not finish.
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
        Ok(Store {
            dir: dir.to_path_buf(),
            topics,
            groups,
        })
    }

    pub(super) fn create(&mut self, name: &str, partitions: i32) -> std::io::Result<()> {
        let dir = self.dir.join("topics").join(name);
        std::fs::create_dir_all(&dir)?;
        let mut parts = Vec::new();
        for p in 0..partitions {
            parts.push(Partition::open(&dir.join(format!("{p}.log")))?);
        }
        sys::sync_dir(&dir)?;
        // Written last: a topic exists once its partition count is on disk.
        sys::write_atomic(&dir.join("partitions"), partitions.to_string().as_bytes())?;
        self.topics.insert(name.to_string(), parts);
        Ok(())
    }

    pub(super) fn partition(&self, topic: &str, index: i32) -> Option<&Partition> {
        let i = usize::try_from(index).ok()?;
        self.topics.get(topic)?.get(i)
    }

    pub(super) fn partition_mut(&mut self, topic: &str, index: i32) -> Option<&mut Partition> {
        let i = usize::try_from(index).ok()?;
        self.topics.get_mut(topic)?.get_mut(i)
    }

    pub(super) fn save_groups(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.groups).map_err(std::io::Error::other)?;
        sys::write_atomic(&self.dir.join("groups.json"), &bytes)
    }
}
