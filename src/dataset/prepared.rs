//! Reading a prepared month back: the folder `prepare_events` writes, one
//! `event_date=YYYY-MM-DD/` folder of Parquet parts per day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::Error;

/// The prepared month's files by day (`YYYY-MM-DD`), in day order.
pub(crate) fn day_files(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, Error> {
    let pattern = format!("{}/event_date=*/*.parquet", dir.display());
    let mut by_day: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for p in glob::glob(&pattern)
        .map_err(|e| Error::fatal(format!("bad input `{pattern}`: {e}")))?
        .filter_map(Result::ok)
    {
        let day = p
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("event_date="))
            .unwrap_or_default()
            .to_string();
        by_day.entry(day).or_default().push(p);
    }
    if by_day.is_empty() {
        return Err(Error::fatal(format!(
            "no prepared data in {} (expected event_date=YYYY-MM-DD/*.parquet, as prepare_events writes)",
            dir.display()
        )));
    }
    for files in by_day.values_mut() {
        files.sort();
    }
    Ok(by_day.into_iter().collect())
}

/// One day's events in event-time order (ties keep file order), the first `limit` of them.
pub(crate) fn read_day(files: &[PathBuf], limit: u64) -> Result<DataFrame, Error> {
    let df = crate::parquet::read_all(files).map_err(Error::fatal)?;
    if df.height() == 0 {
        return Ok(df);
    }
    let first = files
        .first()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    df.sort(
        ["event_time"],
        SortMultipleOptions::default().with_maintain_order(true),
    )
    .map(|d| d.head(Some(usize::try_from(limit).unwrap_or(usize::MAX))))
    .map_err(|e| Error::fatal(format!("{first}: {e}")))
}
