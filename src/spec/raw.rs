//! [`Raw`]: a piece of the YAML tree kept as-is during deserialization, to be read later.
//!
//! Tasks and their `with:` blocks are read one by one after the pipeline header so that a problem
//! in one task does not hide the problems in the others, and so that `with:` can be read into the
//! config type of whichever operator the task names.

use std::cell::RefCell;
use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::yaml::Node;

pub(crate) const RAW_TOKEN: &str = "$windsock::Raw";

thread_local! {
    static SLOT: RefCell<Option<Node>> = const { RefCell::new(None) };
}

pub(crate) fn stash(node: Node) {
    SLOT.with(|s| *s.borrow_mut() = Some(node));
}

/// A YAML node to be read as `T` later, schema-described as `T`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Raw<T> {
    pub(crate) node: Node,
    _t: PhantomData<T>,
}

impl<T> Raw<T> {
    pub(crate) fn new(node: Node) -> Self {
        Raw {
            node,
            _t: PhantomData,
        }
    }
}

impl<'de, T> Deserialize<'de> for Raw<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                SLOT.with(|s| s.borrow_mut().take())
                    .ok_or_else(|| E::custom("raw YAML is only available from pipeline files"))
            }
        }
        d.deserialize_newtype_struct(RAW_TOKEN, V).map(Raw::new)
    }
}

impl<T: JsonSchema> JsonSchema for Raw<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}
