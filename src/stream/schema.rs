//! Message schemas and the warehouse columns they map to.
//!
//! JSON messages are described by a JSON Schema (`schemas/raw_event.schema.json`): it validates
//! every message, and its `properties`, in order, are the landing table's columns. Avro messages
//! are described by an Avro record schema (`schemas/*.avsc`): its fields are the columns.

use std::path::Path;

use crate::diag::ConfigProblem;

/// A column's type in the landing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Int,
    Float,
    Str,
    Bool,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    /// Days since the epoch.
    Date,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: ColumnType,
}

/// A schema file read and compiled.
pub(crate) enum MessageSchema {
    Json {
        columns: Vec<Column>,
        validator: Box<jsonschema::Validator>,
    },
    Avro {
        columns: Vec<Column>,
        schema: Box<apache_avro::Schema>,
        /// The schema's canonical JSON, for a Schema Registry.
        text: String,
    },
}

impl MessageSchema {
    /// Reads `path`: `.avsc` is Avro, anything else JSON Schema.
    pub(crate) fn load(path: &Path) -> Result<MessageSchema, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read schema {}: {e}", path.display()))?;
        if path.extension().is_some_and(|e| e == "avsc") {
            Self::avro(&text).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            Self::json(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
    }

    pub(crate) fn json(text: &str) -> Result<MessageSchema, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&value)
            .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
        let props = value
            .get("properties")
            .and_then(|p| p.as_object())
            .ok_or("a message schema needs `properties`")?;
        let mut columns = Vec::new();
        for (name, prop) in props {
            crate::ident::check_column(name)?;
            columns.push(Column {
                name: name.clone(),
                ty: json_type(prop).map_err(|e| format!("property `{name}`: {e}"))?,
            });
        }
        Ok(MessageSchema::Json {
            columns,
            validator: Box::new(validator),
        })
    }

    pub(crate) fn avro(text: &str) -> Result<MessageSchema, String> {
        let schema =
            apache_avro::Schema::parse_str(text).map_err(|e| format!("not an Avro schema: {e}"))?;
        let apache_avro::Schema::Record(record) = &schema else {
            return Err("the Avro schema must be a record".into());
        };
        let mut columns = Vec::new();
        for f in &record.fields {
            crate::ident::check_column(&f.name)?;
            columns.push(Column {
                name: f.name.clone(),
                ty: avro_type(&f.schema).map_err(|e| format!("field `{}`: {e}", f.name))?,
            });
        }
        // The text as written: the parsing canonical form would drop logical types.
        let text = serde_json::from_str::<serde_json::Value>(text)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| text.to_string());
        Ok(MessageSchema::Avro {
            columns,
            schema: Box::new(schema),
            text,
        })
    }

    pub(crate) fn columns(&self) -> &[Column] {
        match self {
            MessageSchema::Json { columns, .. } | MessageSchema::Avro { columns, .. } => columns,
        }
    }
}

/// The problem with a config key naming a schema file that does not exist or does not parse
/// (relative to the project; a templated path is checked after rendering).
pub(crate) fn check_file(key: &str, path: &str, project_dir: &Path) -> Vec<ConfigProblem> {
    if crate::spec::is_template(path) {
        return Vec::new();
    }
    match MessageSchema::load(&project_dir.join(path)) {
        Ok(_) => Vec::new(),
        Err(e) => vec![ConfigProblem::at(key, e)],
    }
}

/// A JSON Schema violation as one phrase: the message, and where unless it is the whole value.
pub(crate) fn describe(e: jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().to_string();
    if at.is_empty() {
        e.to_string()
    } else {
        format!("{at}: {e}")
    }
}

/// Every way `value` breaks the schema, as one sentence (`None` when it is valid).
pub(crate) fn violations(
    validator: &jsonschema::Validator,
    value: &serde_json::Value,
) -> Option<String> {
    if validator.is_valid(value) {
        return None;
    }
    let all: Vec<String> = validator.iter_errors(value).map(describe).collect();
    Some(all.join("; "))
}

fn json_type(prop: &serde_json::Value) -> Result<ColumnType, String> {
    let types: Vec<&str> = match prop.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.as_str()],
        Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).collect(),
        // An `enum` of strings.
        None if prop
            .get("enum")
            .and_then(|e| e.as_array())
            .is_some_and(|e| e.iter().all(|v| v.is_string() || v.is_null())) =>
        {
            vec!["string"]
        }
        _ => return Err("needs a `type`".into()),
    };
    let non_null: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    match non_null.as_slice() {
        ["integer"] => Ok(ColumnType::Int),
        ["number"] => Ok(ColumnType::Float),
        ["boolean"] => Ok(ColumnType::Bool),
        ["string"] => Ok(match prop.get("format").and_then(|f| f.as_str()) {
            Some("date-time") => ColumnType::Timestamp,
            Some("date") => ColumnType::Date,
            _ => ColumnType::Str,
        }),
        other => Err(format!(
            "type {other:?} has no column type (integer, number, boolean or string)"
        )),
    }
}

fn avro_type(s: &apache_avro::Schema) -> Result<ColumnType, String> {
    use apache_avro::Schema as S;
    match s {
        S::Long | S::Int => Ok(ColumnType::Int),
        S::Double | S::Float => Ok(ColumnType::Float),
        S::String | S::Enum(_) | S::Uuid => Ok(ColumnType::Str),
        S::Boolean => Ok(ColumnType::Bool),
        S::TimestampMillis | S::TimestampMicros => Ok(ColumnType::Timestamp),
        S::Date => Ok(ColumnType::Date),
        S::Union(u) => {
            let inner: Vec<&S> = u.variants().iter().filter(|v| **v != S::Null).collect();
            match inner.as_slice() {
                [one] => avro_type(one),
                _ => Err("only a union of null and one type maps to a column".into()),
            }
        }
        other => Err(format!("{other:?} has no column type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_event_schema_maps_to_typed_columns_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/raw_event.schema.json");
        let s = MessageSchema::load(&path).unwrap();
        let ty = |n: &str| s.columns().iter().find(|c| c.name == n).unwrap().ty;
        assert_eq!(ty("event_time"), ColumnType::Timestamp);
        assert_eq!(ty("event_date"), ColumnType::Date);
        assert_eq!(ty("price"), ColumnType::Float);
        assert_eq!(ty("user_id"), ColumnType::Int);
        assert_eq!(ty("event_type"), ColumnType::Str);
        assert_eq!(ty("brand"), ColumnType::Str);
        let MessageSchema::Json { validator, .. } = &s else {
            panic!()
        };
        let good = serde_json::json!({"event_id": "00112233aabbccdd", "event_time": "2019-11-01T00:00:04Z",
            "event_type": "view", "product_id": 1, "category_id": 2, "category_code": null, "brand": "apple",
            "price": 1.5, "user_id": 3, "user_session": "s", "event_date": "2019-11-01",
            "category_l1": null, "category_l2": null});
        assert!(validator.is_valid(&good));
        let mut bad = good.clone();
        bad["price"] = serde_json::json!(-1);
        assert!(!validator.is_valid(&bad));
        bad = good.clone();
        bad["event_time"] = serde_json::json!("yesterday");
        assert!(!validator.is_valid(&bad));
    }

    #[test]
    fn the_aggregate_schemas_map_to_columns() {
        for f in ["window_aggregate.avsc", "trending_product.avsc"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schemas")
                .join(f);
            let s = MessageSchema::load(&path).unwrap();
            assert!(
                s.columns()
                    .iter()
                    .any(|c| c.name == "window_start" && c.ty == ColumnType::Timestamp),
                "{f}"
            );
        }
    }
}
