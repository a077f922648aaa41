//! Messages into typed columns, and out as a Parquet file for the warehouse loader (which both
//! backends already read), with the Kafka metadata of each row beside its columns — like the
//! Snowflake connector's RECORD_METADATA, as typed columns so they can be keys.

use polars::prelude::*;

use super::schema::{Column as SchemaColumn, ColumnType};

/// The metadata columns every landed row carries.
pub(crate) const META_COLUMNS: [&str; 5] = [
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "kafka_key",
];

/// Where a message came from.
#[derive(Debug, Clone)]
pub(crate) struct Meta<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Milliseconds since the epoch, if the message has a timestamp.
    pub(crate) timestamp: Option<i64>,
    pub(crate) key: Option<&'a [u8]>,
}

/// A field value on its way into a column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Timestamp(i64),
    Date(i32),
}

enum Builder {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Str(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
    Timestamp(Vec<Option<i64>>),
    Date(Vec<Option<i32>>),
}

/// Rows being collected for one load.
pub(crate) struct RowBatch {
    columns: Vec<SchemaColumn>,
    builders: Vec<Builder>,
    topic: Vec<String>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    timestamp: Vec<Option<i64>>,
    key: Vec<Option<String>>,
}

impl RowBatch {
    pub(crate) fn new(columns: &[SchemaColumn]) -> RowBatch {
        let builders = columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Int => Builder::Int(Vec::new()),
                ColumnType::Float => Builder::Float(Vec::new()),
                ColumnType::Str => Builder::Str(Vec::new()),
                ColumnType::Bool => Builder::Bool(Vec::new()),
                ColumnType::Timestamp => Builder::Timestamp(Vec::new()),
                ColumnType::Date => Builder::Date(Vec::new()),
            })
            .collect();
        RowBatch {
            columns: columns.to_vec(),
            builders,
            topic: Vec::new(),
            partition: Vec::new(),
            offset: Vec::new(),
            timestamp: Vec::new(),
            key: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.offset.len()
    }

    /// Adds a row: one cell per schema column, in order. A cell of the wrong type is an error
    /// naming the column, and the batch is left unchanged.
    pub(crate) fn push(&mut self, cells: Vec<Cell>, meta: &Meta<'_>) -> Result<(), String> {
        if cells.len() != self.columns.len() {
            return Err(format!(
                "{} values for {} columns",
                cells.len(),
                self.columns.len()
            ));
        }
        // Check every cell before touching a builder.
        for (cell, col) in cells.iter().zip(&self.columns) {
            let ok = matches!(
                (cell, col.ty),
                (Cell::Null, _)
                    | (Cell::Int(_), ColumnType::Int | ColumnType::Float)
                    | (Cell::Float(_), ColumnType::Float)
                    | (Cell::Str(_), ColumnType::Str)
                    | (Cell::Bool(_), ColumnType::Bool)
                    | (Cell::Timestamp(_), ColumnType::Timestamp)
                    | (Cell::Date(_), ColumnType::Date)
            );
            if !ok {
                return Err(format!("`{}`: {cell:?} is not a {:?}", col.name, col.ty));
            }
        }
        for (cell, b) in cells.into_iter().zip(&mut self.builders) {
            match (b, cell) {
                (Builder::Int(v), Cell::Int(x)) => v.push(Some(x)),
                (Builder::Int(v), _) => v.push(None),
                (Builder::Float(v), Cell::Float(x)) => v.push(Some(x)),
                (Builder::Float(v), Cell::Int(x)) => v.push(Some(x as f64)),
                (Builder::Float(v), _) => v.push(None),
                (Builder::Str(v), Cell::Str(x)) => v.push(Some(x)),
                (Builder::Str(v), _) => v.push(None),
                (Builder::Bool(v), Cell::Bool(x)) => v.push(Some(x)),
                (Builder::Bool(v), _) => v.push(None),
                (Builder::Timestamp(v), Cell::Timestamp(x)) => v.push(Some(x)),
                (Builder::Timestamp(v), _) => v.push(None),
                (Builder::Date(v), Cell::Date(x)) => v.push(Some(x)),
                (Builder::Date(v), _) => v.push(None),
            }
        }
        self.topic.push(meta.topic.to_string());
        self.partition.push(meta.partition);
        self.offset.push(meta.offset);
        self.timestamp.push(meta.timestamp);
        self.key
            .push(meta.key.map(|k| String::from_utf8_lossy(k).into_owned()));
        Ok(())
    }

    /// The rows as a frame: schema columns, then [`META_COLUMNS`]. Rows with the same `key`
    /// values keep only the one with the highest offset (a message sent twice lands once).
    pub(crate) fn into_frame(self, key: &[String]) -> PolarsResult<DataFrame> {
        let n = self.offset.len();
        let mut out: Vec<Column> = Vec::with_capacity(self.columns.len() + 5);
        for (c, b) in self.columns.iter().zip(self.builders) {
            let name: PlSmallStr = c.name.as_str().into();
            let s = match b {
                Builder::Int(v) => {
                    Int64Chunked::from_iter_options(name, v.into_iter()).into_series()
                }
                Builder::Float(v) => {
                    Float64Chunked::from_iter_options(name, v.into_iter()).into_series()
                }
                Builder::Str(v) => {
                    StringChunked::from_iter_options(name, v.into_iter()).into_series()
                }
                Builder::Bool(v) => {
                    BooleanChunked::from_iter_options(name, v.into_iter()).into_series()
                }
                Builder::Timestamp(v) => Int64Chunked::from_iter_options(name, v.into_iter())
                    .into_datetime(TimeUnit::Microseconds, None)
                    .into_series(),
                Builder::Date(v) => Int32Chunked::from_iter_options(name, v.into_iter())
                    .into_date()
                    .into_series(),
            };
            out.push(s.into());
        }
        out.push(
            StringChunked::from_iter_values("kafka_topic".into(), self.topic.into_iter())
                .into_series()
                .into(),
        );
        out.push(
            Int32Chunked::from_vec("kafka_partition".into(), self.partition)
                .into_series()
                .into(),
        );
        out.push(
            Int64Chunked::from_vec("kafka_offset".into(), self.offset)
                .into_series()
                .into(),
        );
        out.push(
            Int64Chunked::from_iter_options("kafka_timestamp".into(), self.timestamp.into_iter())
                .into_datetime(TimeUnit::Milliseconds, None)
                .into_series()
                .into(),
        );
        out.push(
            StringChunked::from_iter_options("kafka_key".into(), self.key.into_iter())
                .into_series()
                .into(),
        );
        let df = DataFrame::new(n, out)?;
        if key.is_empty() {
            return Ok(df);
        }
        // Last write wins within the batch, as it would across batches.
        df.sort(
            ["kafka_topic", "kafka_partition", "kafka_offset"],
            SortMultipleOptions::default(),
        )?
        .unique_stable(Some(key), UniqueKeepStrategy::Last, None)
    }
}

/// Reads a JSON object into cells for `columns`. A missing property is null; a value of the
/// wrong type is an error naming it.
pub(crate) fn json_cells(
    v: &serde_json::Value,
    columns: &[SchemaColumn],
) -> Result<Vec<Cell>, String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    columns
        .iter()
        .map(|c| {
            let Some(x) = obj.get(&c.name).filter(|x| !x.is_null()) else {
                return Ok(Cell::Null);
            };
            let bad = || format!("`{}`: {x} is not a {:?}", c.name, c.ty);
            Ok(match c.ty {
                ColumnType::Int => Cell::Int(x.as_i64().ok_or_else(bad)?),
                ColumnType::Float => Cell::Float(x.as_f64().ok_or_else(bad)?),
                ColumnType::Str => Cell::Str(x.as_str().ok_or_else(bad)?.to_string()),
                ColumnType::Bool => Cell::Bool(x.as_bool().ok_or_else(bad)?),
                ColumnType::Timestamp => {
                    let s = x.as_str().ok_or_else(bad)?;
                    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| bad())?;
                    Cell::Timestamp(t.timestamp_micros())
                }
                ColumnType::Date => {
                    let s = x.as_str().ok_or_else(bad)?;
                    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
                    Cell::Date(days_since_epoch(d))
                }
            })
        })
        .collect()
}

/// Reads an Avro record into cells for `columns`.
pub(crate) fn avro_cells(
    v: &apache_avro::types::Value,
    columns: &[SchemaColumn],
) -> Result<Vec<Cell>, String> {
    use apache_avro::types::Value as V;
    let V::Record(fields) = v else {
        return Err("not an Avro record".into());
    };
    columns
        .iter()
        .map(|c| {
            let mut x = fields
                .iter()
                .find(|(n, _)| *n == c.name)
                .map(|(_, x)| x)
                .unwrap_or(&V::Null);
            if let V::Union(_, inner) = x {
                x = inner;
            }
            Ok(match (x, c.ty) {
                (V::Null, _) => Cell::Null,
                (V::Long(i), ColumnType::Int) => Cell::Int(*i),
                (V::Int(i), ColumnType::Int) => Cell::Int(i64::from(*i)),
                (V::Double(f), ColumnType::Float) => Cell::Float(*f),
                (V::Float(f), ColumnType::Float) => Cell::Float(f64::from(*f)),
                (V::String(s) | V::Enum(_, s), ColumnType::Str) => Cell::Str(s.clone()),
                (V::Boolean(b), ColumnType::Bool) => Cell::Bool(*b),
                (V::TimestampMillis(t), ColumnType::Timestamp) => Cell::Timestamp(t * 1000),
                (V::TimestampMicros(t), ColumnType::Timestamp) => Cell::Timestamp(*t),
                (V::Date(d), ColumnType::Date) => Cell::Date(*d),
                (other, ty) => return Err(format!("`{}`: {other:?} is not a {ty:?}", c.name)),
            })
        })
        .collect()
}

pub(crate) fn days_since_epoch(d: chrono::NaiveDate) -> i32 {
    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<SchemaColumn> {
        vec![
            SchemaColumn {
                name: "id".into(),
                ty: ColumnType::Str,
            },
            SchemaColumn {
                name: "n".into(),
                ty: ColumnType::Int,
            },
        ]
    }

    fn meta(offset: i64) -> Meta<'static> {
        Meta {
            topic: "t",
            partition: 0,
            offset,
            timestamp: Some(1),
            key: Some(b"k"),
        }
    }

    #[test]
    fn a_key_sent_twice_in_one_batch_lands_once_with_the_later_value() {
        let mut b = RowBatch::new(&cols());
        for (off, id, n) in [(0, "a", 1), (1, "b", 2), (2, "a", 3)] {
            b.push(vec![Cell::Str(id.into()), Cell::Int(n)], &meta(off))
                .unwrap();
        }
        let df = b.into_frame(&["id".to_string()]).unwrap();
        assert_eq!(df.height(), 2);
        let ids: Vec<_> = df
            .column("id")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        let ns: Vec<_> = df
            .column("n")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(ns, [2, 3]);
    }

    #[test]
    fn wrong_types_are_named_and_leave_the_batch_unchanged() {
        let mut b = RowBatch::new(&cols());
        let e = json_cells(&serde_json::json!({"id": "x", "n": "seven"}), &cols()).unwrap_err();
        assert!(e.contains("`n`"), "{e}");
        let e = b
            .push(vec![Cell::Int(1), Cell::Int(2)], &meta(0))
            .unwrap_err();
        assert!(e.contains("`id`"), "{e}");
        assert_eq!(b.len(), 0);
    }
}
