//! The broker's data directory: a folder per topic (its partition count in `partitions`, a
//! folder of segment files per partition) and the consumer groups' committed offsets in
//! `groups.json`, replaced atomically on each commit. Directories are synced after files are
//! created, renamed or removed in them, so what was acknowledged survives a power loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::log::{LogConfig, Partition};
use crate::sys;

/// Committed offsets: group → topic → partition → the commit.
pub(super) type Offsets = BTreeMap<String, BTreeMap<String, BTreeMap<i32, Committed>>>;

/// A committed offset with the metadata string its client committed with it (OffsetFetch gives
/// both back). Written as the bare offset when there is no metadata, as files of earlier
/// windsock versions hold it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "CommittedRepr", into = "CommittedRepr")]
pub(super) struct Committed {
    pub(super) offset: i64,
    pub(super) metadata: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum CommittedRepr {
    Offset(i64),
    WithMetadata { offset: i64, metadata: String },
}

impl From<CommittedRepr> for Committed {
    fn from(r: CommittedRepr) -> Self {
        match r {
            CommittedRepr::Offset(offset) => Committed {
                offset,
                metadata: String::new(),
            },
            CommittedRepr::WithMetadata { offset, metadata } => Committed { offset, metadata },
        }
    }
}

impl From<Committed> for CommittedRepr {
    fn from(c: Committed) -> Self {
        if c.metadata.is_empty() {
            CommittedRepr::Offset(c.offset)
        } else {
            CommittedRepr::WithMetadata {
                offset: c.offset,
                metadata: c.metadata,
            }
        }
    }
}

pub(super) struct Store {
    dir: PathBuf,
    config: LogConfig,
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
    pub(super) fn open(dir: &Path, config: LogConfig) -> std::io::Result<Store> {
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir)?;
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                // A topic whose deletion a crash interrupted.
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            // A folder without its partition count is a topic whose creation did not finish.
            let Ok(meta) = std::fs::read_to_string(entry.path().join("partitions")) else {
                continue;
            };
            let n: i32 = meta.trim().parse().unwrap_or(0);
            let mut parts = Vec::new();
            for p in 0..n {
                let pdir = entry.path().join(p.to_string());
                migrate_single_file(&entry.path(), p, &pdir)?;
                parts.push(Partition::open(&pdir, &format!("{name}-{p}"), config)?);
            }
            topics.insert(name, parts);
        }
        // Missing: no group has committed yet. Unreadable or damaged: refused, since starting
        // without them would send every group back to its reset position without a word.
        let path = dir.join("groups.json");
        let groups = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Offsets::default(),
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "cannot read the consumer groups' committed offsets in {}: {e}",
                    path.display()
                )));
            }
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "the consumer groups' committed offsets in {} are damaged ({e}); restore the file, or move it aside to start with none (every group then reads from its `auto.offset.reset` position)",
                    path.display()
                ))
            })?,
        };
        Ok(Store {
            dir: dir.to_path_buf(),
            config,
            topics,
            groups,
        })
    }

    pub(super) fn create(&mut self, name: &str, partitions: i32) -> std::io::Result<()> {
        let dir = self.dir.join("topics").join(name);
        std::fs::create_dir_all(&dir)?;
        let parts = self.open_partitions(name, 0..partitions)?;
        sys::sync_dir(&dir)?;
        // Written last: a topic exists once its partition count is on disk.
        sys::write_atomic(&dir.join("partitions"), partitions.to_string().as_bytes())?;
        sys::sync_dir(&self.dir.join("topics"))?;
        self.topics.insert(name.to_string(), parts);
        Ok(())
    }

    /// Opens (creating) the folders of a topic's partitions `range`.
    fn open_partitions(
        &self,
        name: &str,
        range: std::ops::Range<i32>,
    ) -> std::io::Result<Vec<Partition>> {
        let dir = self.dir.join("topics").join(name);
        range
            .map(|p| {
                Partition::open(
                    &dir.join(p.to_string()),
                    &format!("{name}-{p}"),
                    self.config,
                )
            })
            .collect()
    }

    /// Grows a topic to `partitions` (more than it has): the new partitions' folders first,
    /// then the count, so a crash half-way leaves the topic as it was.
    pub(super) fn add_partitions(&mut self, name: &str, partitions: i32) -> std::io::Result<()> {
        let dir = self.dir.join("topics").join(name);
        let have = self.topics.get(name).map_or(0, Vec::len) as i32;
        let added = self.open_partitions(name, have..partitions)?;
        sys::sync_dir(&dir)?;
        sys::write_atomic(&dir.join("partitions"), partitions.to_string().as_bytes())?;
        if let Some(parts) = self.topics.get_mut(name) {
            parts.extend(added);
        }
        Ok(())
    }

    /// Deletes a topic and its data; its groups' committed offsets go too.
    pub(super) fn delete(&mut self, name: &str) -> std::io::Result<bool> {
        if self.topics.remove(name).is_none() {
            return Ok(false);
        }
        let topics = self.dir.join("topics");
        // Renamed first, so a crash half-way leaves a hidden folder that the next open removes,
        // never a topic with some of its partitions.
        let doomed = topics.join(format!(".deleted-{name}-{}", std::process::id()));
        std::fs::rename(topics.join(name), &doomed)?;
        sys::sync_dir(&topics)?;
        std::fs::remove_dir_all(&doomed)?;
        let mut changed = false;
        for offsets in self.groups.values_mut() {
            changed |= offsets.remove(name).is_some();
        }
        if changed {
            self.save_groups()?;
        }
        Ok(true)
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

    /// Applies retention to every partition.
    pub(super) fn enforce_retention(&mut self) {
        let now = chrono::Utc::now().timestamp_millis();
        for parts in self.topics.values_mut() {
            for p in parts {
                p.enforce_retention(now);
            }
        }
    }
}

/// Data from windsock before segments: one `<p>.log` file per partition becomes the first
/// segment of the partition's folder.
fn migrate_single_file(topic_dir: &Path, p: i32, pdir: &Path) -> std::io::Result<()> {
    let old = topic_dir.join(format!("{p}.log"));
    if old.is_file() {
        std::fs::create_dir_all(pdir)?;
        std::fs::rename(&old, pdir.join(format!("{:020}.log", 0)))?;
        sys::sync_dir(pdir)?;
        sys::sync_dir(topic_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_offsets_keep_their_metadata_and_older_files_still_open() {
        let dir = tempfile::tempdir().unwrap();
        // As earlier versions wrote it: bare offsets.
        std::fs::write(dir.path().join("groups.json"), r#"{"g":{"t":{"0":42}}}"#).unwrap();
        let mut store = Store::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(
            store.groups["g"]["t"][&0],
            Committed {
                offset: 42,
                metadata: String::new()
            }
        );
        store
            .groups
            .entry("g".into())
            .or_default()
            .entry("t".into())
            .or_default()
            .insert(
                1,
                Committed {
                    offset: 7,
                    metadata: "checkpoint-7".into(),
                },
            );
        store.save_groups().unwrap();
        drop(store);
        let store = Store::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(store.groups["g"]["t"][&0].offset, 42);
        assert_eq!(store.groups["g"]["t"][&1].metadata, "checkpoint-7");
    }

    #[test]
    fn damaged_committed_offsets_refuse_to_start_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("groups.json"), b"{\"g\": {\"t\": {\"0\": 4").unwrap();
        let e = Store::open(dir.path(), LogConfig::default())
            .err()
            .expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("groups.json") && msg.contains("damaged"),
            "{msg}"
        );
        // Unreadable (a directory where the file should be): refused too.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("groups.json")).unwrap();
        let e = Store::open(dir.path(), LogConfig::default())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
