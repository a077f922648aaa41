//! Prepared events (a polars frame) as JSON objects for the raw topic, one reused object per
//! frame: the columns are looked up once, and each row overwrites the values in place, so a
//! message costs no allocation beyond the ones its strings need the first time.

use polars::prelude::*;
use serde_json::{Map, Value};

use super::schema::{Column as SchemaColumn, ColumnType};

enum Access<'a> {
    Int(&'a Int64Chunked),
    Float(&'a Float64Chunked),
    Str(&'a StringChunked),
    Bool(&'a BooleanChunked),
    /// Physical values and how many of them make a second.
    Timestamp(&'a Int64Chunked, i64),
    Date(&'a Int32Chunked),
    Missing,
}

/// The rows of a frame, as the message schema's columns.
pub(crate) struct JsonRows<'a> {
    access: Vec<(&'a str, Access<'a>)>,
    object: Value,
}

impl<'a> JsonRows<'a> {
    /// Columns of `df` named like the schema's; a column the frame lacks is null in every
    /// message (the schema then decides whether that is allowed).
    pub(crate) fn new(
        df: &'a DataFrame,
        columns: &'a [SchemaColumn],
    ) -> Result<JsonRows<'a>, String> {
        let mut access = Vec::with_capacity(columns.len());
        let mut object = Map::new();
        for c in columns {
            let a = match df.column(&c.name) {
                Err(_) => Access::Missing,
                Ok(col) => {
                    let s = col.as_materialized_series();
                    let wrong = || {
                        format!(
                            "column `{}` is {} but the schema says {:?}",
                            c.name,
                            s.dtype(),
                            c.ty
                        )
                    };
                    match (c.ty, s.dtype()) {
                        (ColumnType::Int, _) => Access::Int(s.i64().map_err(|_| wrong())?),
                        (ColumnType::Float, _) => Access::Float(s.f64().map_err(|_| wrong())?),
                        (ColumnType::Str, _) => Access::Str(s.str().map_err(|_| wrong())?),
                        (ColumnType::Bool, _) => Access::Bool(s.bool().map_err(|_| wrong())?),
                        (ColumnType::Timestamp, DataType::Datetime(unit, _)) => {
                            let per_sec = match unit {
                                TimeUnit::Milliseconds => 1_000,
                                TimeUnit::Microseconds => 1_000_000,
                                TimeUnit::Nanoseconds => 1_000_000_000,
                            };
                            Access::Timestamp(
                                s.datetime().map_err(|_| wrong())?.physical(),
                                per_sec,
                            )
                        }
                        (ColumnType::Date, DataType::Date) => {
                            Access::Date(s.date().map_err(|_| wrong())?.physical())
                        }
                        _ => return Err(wrong()),
                    }
                }
            };
            object.insert(c.name.clone(), Value::Null);
            access.push((c.name.as_str(), a));
        }
        Ok(JsonRows {
            access,
            object: Value::Object(object),
        })
    }

    /// The object of row `i` (valid until the next call).
    pub(crate) fn row(&mut self, i: usize) -> &Value {
        let Value::Object(map) = &mut self.object else {
            unreachable!("JsonRows holds an object")
        };
        // The object's keys were inserted in the order of `access`: walk both together rather
        // than hash every key of every row.
        for ((_, a), (_, slot)) in self.access.iter().zip(map.iter_mut()) {
            match a {
                Access::Int(c) => set_num(slot, c.get(i).map(Into::into)),
                Access::Float(c) => set_num(slot, c.get(i).and_then(serde_json::Number::from_f64)),
                Access::Str(c) => set_str(slot, c.get(i)),
                Access::Bool(c) => *slot = c.get(i).map_or(Value::Null, Value::Bool),
                Access::Timestamp(c, per_sec) => match c.get(i) {
                    Some(v) => {
                        let mut buf = [0u8; 20];
                        set_str(slot, Some(rfc3339(v.div_euclid(*per_sec), &mut buf)));
                    }
                    None => *slot = Value::Null,
                },
                Access::Date(c) => match c.get(i) {
                    Some(d) => {
                        let mut buf = [0u8; 20];
                        let s = rfc3339(i64::from(d) * 86_400, &mut buf);
                        set_str(slot, Some(&s[..10]));
                    }
                    None => *slot = Value::Null,
                },
                Access::Missing => *slot = Value::Null,
            }
        }
        &self.object
    }
}

fn set_num(slot: &mut Value, n: Option<serde_json::Number>) {
    *slot = n.map_or(Value::Null, Value::Number);
}

fn set_str(slot: &mut Value, s: Option<&str>) {
    match (slot, s) {
        (Value::String(old), Some(s)) => {
            old.clear();
            old.push_str(s);
        }
        (slot, Some(s)) => *slot = Value::String(s.to_string()),
        (slot, None) => *slot = Value::Null,
    }
}

/// `2019-11-01T00:00:04Z` for seconds since the epoch, without a formatter.
pub(crate) fn rfc3339(secs: i64, buf: &mut [u8; 20]) -> &str {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for k in (0..width).rev() {
            buf[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y.clamp(0, 9999), 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, hh, 2);
    put(14, mm, 2);
    put(17, ss, 2);
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    buf[19] = b'Z';
    std::str::from_utf8(&buf[..]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_chrono() {
        for secs in [
            0i64,
            1_572_566_404,
            951_782_400,
            4_102_444_799,
            1_583_020_800,
        ] {
            let mut buf = [0u8; 20];
            let ours = rfc3339(secs, &mut buf).to_string();
            let theirs = chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn rows_become_objects_in_schema_order() {
        let df = df!(
            "price" => [1.5f64, 2.0],
            "event_type" => [Some("view"), None],
            "user_id" => [7i64, 8],
        )
        .unwrap();
        let cols = vec![
            SchemaColumn {
                name: "event_type".into(),
                ty: ColumnType::Str,
            },
            SchemaColumn {
                name: "price".into(),
                ty: ColumnType::Float,
            },
            SchemaColumn {
                name: "absent".into(),
                ty: ColumnType::Str,
            },
        ];
        let mut rows = JsonRows::new(&df, &cols).unwrap();
        assert_eq!(
            rows.row(0).to_string(),
            r#"{"event_type":"view","price":1.5,"absent":null}"#
        );
        assert_eq!(
            rows.row(1).to_string(),
            r#"{"event_type":null,"price":2.0,"absent":null}"#
        );
        let bad = vec![SchemaColumn {
            name: "price".into(),
            ty: ColumnType::Int,
        }];
        let Err(e) = JsonRows::new(&df, &bad) else {
            panic!("an Int column read as Float")
        };
        assert!(e.contains("`price`"), "{e}");
    }
}
