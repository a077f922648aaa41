//! A serde deserializer over positioned YAML [`Node`]s.
//!
//! It does three things serde_yaml cannot:
//! - every error carries the line and column of the node it is about;
//! - unknown keys of a struct are all reported (to [`DeCtx::diags`]) with a "did you mean", rather
//!   than failing on the first one, and are then skipped so the rest of the struct is still checked;
//! - in [`Mode::Validate`], a templated string (`"{{ params.n }}"`) stands in for a number or a
//!   bool, because its value is only known when the task runs. After rendering, such strings are
//!   [`Style::Rendered`] and are parsed into the type the config asks for.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::yaml::{Node, NodeKind, Plain, Style, resolve_plain};
use crate::diag::{Diagnostic, Diagnostics, Pos, closest, list_names};

/// Whether template expressions are still unrendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Checking a pipeline file: template strings are accepted wherever a scalar is expected.
    Validate,
    /// Reading a rendered config: values must have their final types.
    Runtime,
}

/// Shared state of one deserialization: where diagnostics go.
pub(crate) struct DeCtx {
    pub(crate) file: PathBuf,
    pub(crate) mode: Mode,
    pub(crate) diags: RefCell<Diagnostics>,
}

impl DeCtx {
    pub(crate) fn new(file: &Path, mode: Mode) -> Self {
        DeCtx {
            file: file.to_path_buf(),
            mode,
            diags: RefCell::new(Diagnostics::default()),
        }
    }

    /// Reads a `T` from `node`. Type errors and unknown keys become diagnostics; `None` when any
    /// problem was found.
    pub(crate) fn read<T: de::DeserializeOwned>(&self, node: &Node, path: &str) -> Option<T> {
        let before = self.diags.borrow().len();
        match self.try_read(node, path) {
            Ok(v) if self.diags.borrow().len() == before => Some(v),
            _ => None,
        }
    }

    /// Reads a `T` from `node`, recording problems as diagnostics. Unlike [`DeCtx::read`], a value
    /// is returned even when unknown keys were reported; on a type error, the error's path
    /// (`schedule`, `tasks.a.retries`) is returned so the caller can skip that key and go on.
    pub(crate) fn try_read<T: de::DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<T, String> {
        let result = T::deserialize(NodeDe {
            node,
            ctx: self,
            path: path.to_string(),
        });
        result.map_err(|e| {
            let failed_at = e.path.clone().unwrap_or_else(|| path.to_string());
            self.push_error(e, node.pos, path);
            failed_at
        })
    }

    fn push_error(&self, e: Error, fallback: Pos, fallback_path: &str) {
        let pos = e.pos.unwrap_or(fallback);
        let path = e.path.as_deref().unwrap_or(fallback_path);
        let msg = if path.is_empty() {
            e.msg
        } else {
            format!("{}: {}", path, e.msg)
        };
        let mut d = Diagnostic::new(&self.file, pos, msg);
        if let Some(h) = e.hint {
            d = d.with_hint(h);
        }
        self.diags.borrow_mut().push(d);
    }

    pub(crate) fn into_diags(self) -> Diagnostics {
        self.diags.into_inner()
    }
}

/// A deserialization error, positioned once it has passed through the node it is about.
#[derive(Debug, Clone)]
pub(crate) struct Error {
    pub(crate) msg: String,
    pub(crate) hint: Option<String>,
    pub(crate) pos: Option<Pos>,
    pub(crate) path: Option<String>,
}

impl Error {
    fn at(mut self, pos: Pos, path: &str) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
            self.path = Some(path.to_string());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            msg: msg.to_string(),
            hint: None,
            pos: None,
            path: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        <Error as de::Error>::custom(format_args!("missing required key `{field}`"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut e = <Error as de::Error>::custom(format_args!(
            "unknown value `{variant}`, expected one of {}",
            list_names(expected.iter().copied())
        ));
        if let Some(c) = closest(variant, expected.iter().copied()) {
            e.hint = Some(format!("did you mean `{c}`?"));
        }
        e
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        <Error as de::Error>::custom(format_args!("expected {exp}, found {unexp}"))
    }
}

/// Whether a string still holds template syntax.
pub(crate) fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

struct NodeDe<'a> {
    node: &'a Node,
    ctx: &'a DeCtx,
    path: String,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: String) -> NodeDe<'a> {
        NodeDe {
            node,
            ctx: self.ctx,
            path,
        }
    }

    fn err(&self, msg: impl fmt::Display) -> Error {
        <Error as de::Error>::custom(msg).at(self.node.pos, &self.path)
    }

    /// A scalar that may be typed from its text: plain, or rendered from a template.
    fn typed_scalar(&self) -> Option<(&'a str, bool)> {
        match &self.node.kind {
            NodeKind::Scalar(s, Style::Plain | Style::Rendered) => Some((s, false)),
            NodeKind::Scalar(s, Style::Quoted) if self.template_placeholder() => Some((s, true)),
            _ => None,
        }
    }

    /// In validation, a template string may stand in for any scalar type.
    fn template_placeholder(&self) -> bool {
        self.ctx.mode == Mode::Validate && self.node.as_str().is_some_and(is_template)
    }

    fn unexpected(&self) -> de::Unexpected<'a> {
        match &self.node.kind {
            NodeKind::Null => de::Unexpected::Unit,
            NodeKind::Scalar(s, _) => de::Unexpected::Str(s),
            NodeKind::Seq(_) => de::Unexpected::Seq,
            NodeKind::Map(_) => de::Unexpected::Map,
        }
    }

    fn int<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        let pos = self.node.pos;
        let path = self.path.clone();
        let r: Result<V::Value, Error> = match self.typed_scalar() {
            Some((_, true)) => visitor.visit_u64(1),
            Some((s, false)) => match resolve_plain(s.trim()) {
                Plain::Int(i) if i >= 0 => visitor.visit_u64(i as u64),
                Plain::Int(i) => visitor.visit_i64(i),
                _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            },
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        };
        r.map_err(|e| e.at(pos, &path))
    }

    fn float<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        let pos = self.node.pos;
        let path = self.path.clone();
        let r: Result<V::Value, Error> = match self.typed_scalar() {
            Some((_, true)) => visitor.visit_f64(1.0),
            Some((s, false)) => match resolve_plain(s.trim()) {
                Plain::Int(i) => visitor.visit_f64(i as f64),
                Plain::Float(f) => visitor.visit_f64(f),
                _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            },
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        };
        r.map_err(|e| e.at(pos, &path))
    }
}

macro_rules! forward_int {
    ($($m:ident)*) => {$(
        fn $m<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> { self.int(visitor) }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (pos, path) = (self.node.pos, self.path.clone());
        let r: Result<V::Value, Error> = match &self.node.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Scalar(s, Style::Quoted) => visitor.visit_str(s),
            NodeKind::Scalar(s, _) => match resolve_plain(s) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Int(i) if i >= 0 => visitor.visit_u64(i as u64),
                Plain::Int(i) => visitor.visit_i64(i),
                Plain::Float(f) => visitor.visit_f64(f),
                Plain::Str => visitor.visit_str(s),
            },
            NodeKind::Seq(_) => return self.deserialize_seq(visitor),
            NodeKind::Map(_) => return self.deserialize_map(visitor),
        };
        r.map_err(|e| e.at(pos, &path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (pos, path) = (self.node.pos, self.path.clone());
        let r: Result<V::Value, Error> = match self.typed_scalar() {
            Some((_, true)) => visitor.visit_bool(false),
            Some((s, false)) => match resolve_plain(s.trim()) {
                Plain::Bool(b) => visitor.visit_bool(b),
                _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            },
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        };
        r.map_err(|e| e.at(pos, &path))
    }

    forward_int!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
                 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.float(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.float(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (pos, path) = (self.node.pos, self.path.clone());
        let r: Result<V::Value, Error> = match &self.node.kind {
            NodeKind::Scalar(s, _) => visitor.visit_str(s),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        };
        r.map_err(|e| e.at(pos, &path))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor.visit_unit()
        } else {
            Err(de::Error::invalid_type(self.unexpected(), &visitor))
                .map_err(|e: Error| e.at(self.node.pos, &self.path))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == super::raw::RAW_TOKEN {
            super::raw::stash(self.node.clone());
            return visitor.visit_unit();
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (pos, path) = (self.node.pos, self.path.clone());
        match &self.node.kind {
            NodeKind::Seq(items) => visitor
                .visit_seq(Seq {
                    de: &self,
                    items: items.iter().enumerate(),
                })
                .map_err(|e| e.at(pos, &path)),
            _ if self.template_placeholder() => {
                Err(self.err("a template can only stand for a single value here, not a list"))
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor))
                .map_err(|e: Error| e.at(pos, &path)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (pos, path) = (self.node.pos, self.path.clone());
        match &self.node.kind {
            NodeKind::Map(entries) => visitor
                .visit_map(Map {
                    de: &self,
                    entries: entries.iter().collect::<Vec<_>>().into_iter(),
                    value: None,
                })
                .map_err(|e| e.at(pos, &path)),
            NodeKind::Null => visitor
                .visit_map(Map {
                    de: &self,
                    entries: Vec::new().into_iter(),
                    value: None,
                })
                .map_err(|e| e.at(pos, &path)),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor))
                .map_err(|e: Error| e.at(pos, &path)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (pos, path) = (self.node.pos, self.path.clone());
        let entries: Vec<&(Node, Node)> = match &self.node.kind {
            NodeKind::Map(entries) => entries.iter().collect(),
            NodeKind::Null => Vec::new(),
            _ => {
                return Err(de::Error::invalid_type(self.unexpected(), &visitor))
                    .map_err(|e: Error| e.at(pos, &path));
            }
        };
        // Report every unknown key now, then hide them so the derived code checks the rest.
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = entry.0.as_str().unwrap_or_default();
            if fields.contains(&key) {
                known.push(entry);
                continue;
            }
            let place = if path.is_empty() {
                String::new()
            } else {
                format!(" in `{path}`")
            };
            let mut d = Diagnostic::new(
                &self.ctx.file,
                entry.0.pos,
                format!("unknown key `{key}`{place}"),
            );
            d = match closest(key, fields.iter().copied()) {
                Some(c) => d.with_hint(format!("did you mean `{c}`?")),
                None if fields.is_empty() => d.with_hint("no keys are accepted here"),
                None => d.with_hint(format!(
                    "accepted keys here: {}",
                    list_names(fields.iter().copied())
                )),
            };
            self.ctx.diags.borrow_mut().push(d);
        }
        visitor
            .visit_map(Map {
                de: &self,
                entries: known.into_iter(),
                value: None,
            })
            .map_err(|e| e.at(pos, &path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (pos, path) = (self.node.pos, self.path.clone());
        match &self.node.kind {
            NodeKind::Scalar(_, _) if self.template_placeholder() && !variants.is_empty() => {
                visitor.visit_enum(variants[0].into_deserializer())
            }
            NodeKind::Scalar(s, _) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
        .map_err(|e: Error| e.at(pos, &path))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct Seq<'a, 'b> {
    de: &'b NodeDe<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'a> SeqAccess<'a> for Seq<'a, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => {
                let path = format!("{}[{i}]", self.de.path);
                seed.deserialize(self.de.child(node, path.clone()))
                    .map(Some)
                    .map_err(|e| e.at(node.pos, &path))
            }
        }
    }
}

struct Map<'a, 'b> {
    de: &'b NodeDe<'a>,
    entries: std::vec::IntoIter<&'a (Node, Node)>,
    value: Option<&'a (Node, Node)>,
}

impl<'a> MapAccess<'a> for Map<'a, '_> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            None => Ok(None),
            Some(entry) => {
                self.value = Some(entry);
                let path = self.de.path.clone();
                seed.deserialize(self.de.child(&entry.0, path)).map(Some)
            }
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let entry = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("value requested before key"))?;
        let key = entry.0.as_str().unwrap_or("?");
        let path = if self.de.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.de.path)
        };
        seed.deserialize(self.de.child(&entry.1, path.clone()))
            .map_err(|e| e.at(entry.1.pos, &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        topic: String,
        rows: u32,
        #[serde(default)]
        fast: bool,
    }

    fn read(src: &str, mode: Mode) -> (Option<Cfg>, Diagnostics) {
        let node = parse(Path::new("t.yaml"), src).unwrap();
        let ctx = DeCtx::new(Path::new("t.yaml"), mode);
        let v = ctx.read::<Cfg>(&node, "with");
        (v, ctx.into_diags())
    }

    #[test]
    fn reads_typed_values() {
        let (v, d) = read("topic: t\nrows: 10\nfast: true\n", Mode::Runtime);
        assert!(d.is_empty(), "{d}");
        assert_eq!(
            v,
            Some(Cfg {
                topic: "t".into(),
                rows: 10,
                fast: true
            })
        );
    }

    #[test]
    fn reports_every_unknown_key_with_a_suggestion() {
        let (v, d) = read("topik: t\nrows: 1\nbogus: 2\n", Mode::Runtime);
        assert!(v.is_none());
        let text = d.to_string();
        assert!(
            text.contains("t.yaml:1:1: unknown key `topik` in `with`"),
            "{text}"
        );
        assert!(text.contains("did you mean `topic`?"), "{text}");
        assert!(text.contains("t.yaml:3:1: unknown key `bogus`"), "{text}");
        // The missing `topic` is reported too, since the typo hid it.
        assert!(text.contains("missing required key `topic`"), "{text}");
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let (_, d) = read("topic: t\nrows: lots\n", Mode::Runtime);
        assert_eq!(d.0[0].pos, Pos::new(2, 7));
        assert!(d.0[0].message.contains("with.rows"), "{d}");
        assert!(d.0[0].message.contains("expected u32"), "{d}");
    }

    #[test]
    fn templates_stand_in_for_numbers_only_while_validating() {
        let (v, d) = read("topic: t\nrows: \"{{ params.n }}\"\n", Mode::Validate);
        assert!(d.is_empty(), "{d}");
        assert!(v.is_some());
        let (_, d) = read("topic: t\nrows: \"{{ params.n }}\"\n", Mode::Runtime);
        assert!(!d.is_empty());
    }

    #[test]
    fn rendered_strings_are_parsed_into_numbers() {
        let node = parse(Path::new("t.yaml"), "topic: t\nrows: \"{{ n }}\"\n").unwrap();
        let rendered = node
            .map_strings::<()>("", &mut |_, s| {
                Ok(is_template(s).then(|| "10000".to_string()))
            })
            .unwrap();
        let ctx = DeCtx::new(Path::new("t.yaml"), Mode::Runtime);
        let v = ctx.read::<Cfg>(&rendered, "with").unwrap();
        assert_eq!(v.rows, 10000);
    }
}
