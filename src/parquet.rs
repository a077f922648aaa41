//! Parquet files in and out, the way every part of windsock writes and reads them: Snappy, a
//! large write buffer, errors naming the file.

use std::path::{Path, PathBuf};

use polars::prelude::*;

/// Writes `df` to `path`.
pub(crate) fn write(path: &Path, df: &mut DataFrame) -> Result<(), String> {
    let file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    ParquetWriter::new(std::io::BufWriter::with_capacity(1 << 20, file))
        .with_compression(ParquetCompression::Snappy)
        .finish(df)
        .map(|_| ())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads `files` into one frame, in order (an empty frame for no files).
pub(crate) fn read_all(files: &[PathBuf]) -> Result<DataFrame, String> {
    let mut all: Option<DataFrame> = None;
    for p in files {
        let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
        let file = std::fs::File::open(p).map_err(|e| bad(&e))?;
        let df = ParquetReader::new(file).finish().map_err(|e| bad(&e))?;
        match all.as_mut() {
            None => all = Some(df),
            Some(acc) => {
                acc.vstack_mut(&df).map_err(|e| bad(&e))?;
            }
        }
    }
    Ok(all.unwrap_or_default())
}

/// The number of rows in a file, from its footer.
pub(crate) fn row_count(path: &Path) -> Result<u64, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    ParquetReader::new(file)
        .num_rows()
        .map(|n| n as u64)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_concatenate_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, values) in [[1i64, 2], [3, 4]].iter().enumerate() {
            let mut df = DataFrame::new(
                2,
                vec![
                    Int64Chunked::from_slice("n".into(), values)
                        .into_series()
                        .into(),
                ],
            )
            .unwrap();
            let p = dir.path().join(format!("{i}.parquet"));
            write(&p, &mut df).unwrap();
            assert_eq!(row_count(&p).unwrap(), 2);
            paths.push(p);
        }
        let all = read_all(&paths).unwrap();
        let n: Vec<i64> = all
            .column("n")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(n, [1, 2, 3, 4]);
        assert!(
            read_all(&[dir.path().join("missing.parquet")])
                .unwrap_err()
                .contains("missing")
        );
    }
}
