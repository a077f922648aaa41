//! A YAML tree that remembers where every node came from.
//!
//! `serde_yaml_ng` reports only the first error and keeps no positions, but validation must report
//! every problem with its line and column. So pipeline files are parsed with yaml-rust2's event
//! parser into [`Node`]s carrying positions, and typed structs are read from that tree with the
//! serde deserializer in [`super::de`].

use std::collections::HashMap;
use std::path::Path;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diagnostic, Diagnostics, Pos};

/// How a scalar was written, which decides how it may be typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `foo`, `12`, `true`: typed by YAML 1.2 core rules when the target asks for "any".
    Plain,
    /// `"12"`, `'x'`, `|` or `>` blocks: always a string.
    Quoted,
    /// Produced by rendering a template: a string that may be read as a number or a bool when the
    /// typed config asks for one (`rows_per_day: "{{ params.rows_per_day }}"`).
    Rendered,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    Null,
    Scalar(String, Style),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) pos: Pos,
}

impl Node {
    pub(crate) fn null(pos: Pos) -> Self {
        Node {
            kind: NodeKind::Null,
            pos,
        }
    }

    pub(crate) fn string(s: impl Into<String>, pos: Pos) -> Self {
        Node {
            kind: NodeKind::Scalar(s.into(), Style::Quoted),
            pos,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
            || matches!(&self.kind, NodeKind::Scalar(s, Style::Plain) if is_null_literal(s))
    }

    /// The scalar's text, if this is a scalar.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// The entry for `key`, if this is a mapping holding it.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node for `key`.
    pub(crate) fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub(crate) fn items(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Seq(items) => items,
            _ => &[],
        }
    }

    /// The node at a path as [`Node::walk_strings`] names them, relative to this node: the first
    /// segment is this node's own name (`with.kafka_lag.topic`, `with.files[1]`).
    pub(crate) fn find_path(&self, path: &str) -> Option<&Node> {
        let mut at = self;
        let mut rest = path.split_once('.').map_or("", |(_, r)| r);
        if let Some(i) = path.find('[').filter(|i| !path[..*i].contains('.')) {
            rest = &path[i..];
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let (index, tail) = after.split_once(']')?;
                at = at.items().get(index.parse::<usize>().ok()?)?;
                rest = tail.strip_prefix('.').unwrap_or(tail);
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                at = at.get(&rest[..end])?;
                rest = &rest[end..];
                rest = rest.strip_prefix('.').unwrap_or(rest);
            }
        }
        Some(at)
    }

    /// What kind of YAML value this is, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Null => "nothing (null)".into(),
            NodeKind::Scalar(s, Style::Plain) if is_null_literal(s) => "nothing (null)".into(),
            NodeKind::Scalar(s, _) => format!("`{s}`"),
            NodeKind::Seq(_) => "a list".into(),
            NodeKind::Map(_) => "a mapping".into(),
        }
    }

    /// Every string scalar below this node (values only, not keys), with its path.
    pub(crate) fn walk_strings<'a>(
        &'a self,
        path: &str,
        f: &mut dyn FnMut(&str, &'a Node, &'a str),
    ) {
        match &self.kind {
            NodeKind::Scalar(s, _) => f(path, self, s),
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.walk_strings(&format!("{path}[{i}]"), f);
                }
            }
            NodeKind::Map(entries) => {
                for (k, v) in entries {
                    let key = k.as_str().unwrap_or("?");
                    v.walk_strings(&format!("{path}.{key}"), f);
                }
            }
            NodeKind::Null => {}
        }
    }

    /// A copy with every string value passed through `f` (keys are left alone).
    pub(crate) fn map_strings<E>(&self, path: &str, f: &mut MapStrings<'_, E>) -> Result<Node, E> {
        let kind = match &self.kind {
            NodeKind::Scalar(s, style) => match f(path, s)? {
                Some(rendered) => NodeKind::Scalar(rendered, Style::Rendered),
                None => NodeKind::Scalar(s.clone(), *style),
            },
            NodeKind::Seq(items) => NodeKind::Seq(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.map_strings(&format!("{path}[{i}]"), f))
                    .collect::<Result<_, _>>()?,
            ),
            NodeKind::Map(entries) => NodeKind::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = k.as_str().unwrap_or("?");
                        Ok((k.clone(), v.map_strings(&format!("{path}.{key}"), f)?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            NodeKind::Null => NodeKind::Null,
        };
        Ok(Node {
            kind,
            pos: self.pos,
        })
    }
}

/// A function from (path, string) to a replacement string, or `None` to keep the original.
pub(crate) type MapStrings<'a, E> = dyn FnMut(&str, &str) -> Result<Option<String>, E> + 'a;

pub(crate) fn is_null_literal(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// What a plain scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

pub(crate) fn resolve_plain(s: &str) -> Plain {
    if is_null_literal(s) {
        return Plain::Null;
    }
    match s {
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Plain::Int(i);
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Plain::Int(i);
        }
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Plain::Int(i);
        }
    }
    let looks_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_float {
        if let Ok(f) = s.parse::<f64>() {
            return Plain::Float(f);
        }
    }
    Plain::Str
}

/// Parses one YAML document. Syntax errors and duplicate keys are returned as diagnostics.
pub(crate) fn parse(file: &Path, source: &str) -> Result<Node, Diagnostics> {
    let mut builder = Builder {
        file,
        end: end_of(source),
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        diags: Diagnostics::default(),
    };
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, true) {
        let mut pos = pos_of(e.marker());
        let mut message = format!("YAML syntax error: {}", e.info());
        // The scanner reports an unexpected end on the line after the last one: point at the
        // file's end instead, a place an editor can show.
        let (lines, last_len) = builder.end;
        if pos.line > lines {
            pos = Pos::new(lines, last_len + 1);
            message = format!("YAML syntax error at the end of the file: {}", e.info());
        }
        let mut diags = Diagnostics::default();
        diags.push(Diagnostic::new(file, pos, message));
        return Err(diags);
    }
    if !builder.diags.is_empty() {
        return Err(builder.diags);
    }
    match builder.root {
        Some(root) if !root.is_null() => Ok(root),
        _ => {
            let mut diags = Diagnostics::default();
            diags.push(Diagnostic::new(
                file,
                Pos::new(1, 1),
                "the file is empty; a pipeline needs at least `dag` and `tasks`",
            ));
            Err(diags)
        }
    }
}

/// The number of lines of `source` as YAML counts them (`\n`, `\r\n` or `\r` end one), and the
/// length in characters of the last.
pub(crate) fn end_of(source: &str) -> (u32, u32) {
    let mut lines = 1u32;
    let mut last = 0u32;
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                lines += 1;
                last = 0;
            }
            _ => last += 1,
        }
    }
    (lines, last)
}

fn pos_of(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos::new(m.line() as u32, m.col() as u32 + 1)
}

enum Frame {
    Seq(Vec<Node>, Pos, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Pos, usize),
}

struct Builder<'f> {
    file: &'f Path,
    /// The source's last line and its length: where a node found at the very end is placed.
    end: (u32, u32),
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    diags: Diagnostics,
}

impl Builder<'_> {
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Some(k) = key.as_str() {
                        if let Some((first, _)) =
                            entries.iter().find(|(other, _)| other.as_str() == Some(k))
                        {
                            let first_line = first.pos.line;
                            // The mapping under the root's `tasks:` key holds the task names.
                            let what = match self.stack.first() {
                                Some(Frame::Map(_, Some(parent), _, _))
                                    if self.stack.len() == 2
                                        && parent.as_str() == Some("tasks") =>
                                {
                                    "task"
                                }
                                _ => "key",
                            };
                            self.diags.push(Diagnostic::new(
                                self.file,
                                key.pos,
                                format!(
                                    "duplicate {what} `{k}` (first defined at line {first_line})"
                                ),
                            ));
                            return;
                        }
                    }
                    entries.push((key, node));
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let mut pos = pos_of(&mark);
        if pos.line > self.end.0 {
            // An empty value at the end of the file is reported as on the line after it.
            pos = Pos::new(self.end.0, self.end.1 + 1);
        }
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.diags.push(Diagnostic::new(
                        self.file,
                        pos,
                        "a pipeline file holds one YAML document; found a second one (`---`)",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let style = match style {
                    TScalarStyle::Plain => Style::Plain,
                    _ => Style::Quoted,
                };
                // `!!str 12` forces a string, like a quoted scalar.
                let style = match tag {
                    Some(t) if t.suffix == "str" => Style::Quoted,
                    _ => style,
                };
                let kind = if style == Style::Plain && is_null_literal(&value) {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar(value, style)
                };
                self.finish(Node { kind, pos }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(Vec::new(), pos, anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(Vec::new(), None, pos, anchor))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, start, anchor)) = self.stack.pop() {
                    self.finish(
                        Node {
                            kind: NodeKind::Seq(items),
                            pos: start,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(entries, _, start, anchor)) = self.stack.pop() {
                    // A block mapping's start marker sits on its first key; keep that.
                    let pos = entries.first().map(|(k, _)| k.pos).unwrap_or(start);
                    self.finish(
                        Node {
                            kind: NodeKind::Map(entries),
                            pos,
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => Node {
                        kind: n.kind.clone(),
                        pos,
                    },
                    None => {
                        self.diags.push(Diagnostic::new(
                            self.file,
                            pos,
                            "alias refers to an unknown anchor",
                        ));
                        Node::null(pos)
                    }
                };
                self.finish(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Node, Diagnostics> {
        parse(Path::new("t.yaml"), src)
    }

    #[test]
    fn find_path_follows_keys_and_indexes() {
        let root = p("with:\n  kafka_lag:\n    topic: raw\n  files: [a, b]\n").unwrap();
        let with = root.get("with").unwrap();
        assert_eq!(
            with.find_path("with.kafka_lag.topic")
                .and_then(Node::as_str),
            Some("raw")
        );
        assert_eq!(
            with.find_path("with.files[1]").and_then(Node::as_str),
            Some("b")
        );
        assert_eq!(with.find_path("with.files[1]").unwrap().pos.line, 4);
        assert!(with.find_path("with.nope").is_none());
        assert!(std::ptr::eq(with.find_path("with").unwrap(), with));
    }

    #[test]
    fn positions_are_one_based() {
        let n = p("dag: x\ntasks:\n  a:\n    operator: noop\n").unwrap();
        let (k, v) = n.entry("tasks").unwrap();
        assert_eq!(k.pos, Pos::new(2, 1));
        let op = v.get("a").unwrap().get("operator").unwrap();
        assert_eq!(op.pos, Pos::new(4, 15));
        assert_eq!(op.as_str(), Some("noop"));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = p("dag: x\ntasks: [a, b\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e.0[0].message.starts_with("YAML syntax error"), "{e}");
        assert!(e.0[0].pos.line >= 2);
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second() {
        let e = p("dag: x\ntasks:\n  a: {operator: noop}\n  a: {operator: noop}\n").unwrap_err();
        assert_eq!(e.0[0].pos, Pos::new(4, 3));
        assert!(
            e.0[0]
                .message
                .contains("duplicate task `a` (first defined at line 3)"),
            "{e}"
        );
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_1_2() {
        assert_eq!(resolve_plain("12"), Plain::Int(12));
        assert_eq!(resolve_plain("-3"), Plain::Int(-3));
        assert_eq!(resolve_plain("1.5"), Plain::Float(1.5));
        assert_eq!(resolve_plain("true"), Plain::Bool(true));
        assert_eq!(resolve_plain("2019-10"), Plain::Str);
        assert_eq!(resolve_plain("30s"), Plain::Str);
        assert_eq!(resolve_plain("~"), Plain::Null);
        assert_eq!(resolve_plain("yes"), Plain::Str);
    }

    #[test]
    fn anchors_and_aliases_copy_nodes() {
        let n = p("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(n.get("b").unwrap().get("k").unwrap().as_str(), Some("1"));
    }
}
