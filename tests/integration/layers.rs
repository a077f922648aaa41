//! The layering rules of the architecture (README, "Layout"), checked on the source: data flows
//! one way, and no module reaches back up.
//!
//! - Files under `src/connections/`, `src/stream/`, `src/dataset/`, `src/state/`, `src/spec/`,
//!   `src/graph/` and `src/template/` never use `crate::operators`, `crate::executor`,
//!   `crate::scheduler` or `crate::cli`.
//! - No file under `src/operators/` uses another operator's file (shared code moves down a
//!   layer, into `connections`, `stream` or `dataset`).

use std::path::{Path, PathBuf};

const LOW: &[&str] = &[
    "connections",
    "stream",
    "dataset",
    "state",
    "spec",
    "graph",
    "template",
];
const HIGH: &[&str] = &["operators", "executor", "scheduler", "cli"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments (a doc comment may name anything).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `code` uses module `name` under `root` (`crate`, `super`): `root::name::…`,
/// `root::name;` or inside a grouped `use root::{…, name, …}`.
fn uses(code: &str, root: &str, name: &str) -> bool {
    let direct = format!("{root}::{name}");
    let mut rest = code;
    while let Some(i) = rest.find(&direct) {
        let after = rest[i + direct.len()..].chars().next();
        let before = rest[..i].chars().last();
        let starts = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        if starts && after.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
            return true;
        }
        rest = &rest[i + direct.len()..];
    }
    let group = format!("{root}::{{");
    let mut rest = code;
    while let Some(i) = rest.find(&group) {
        let body = &rest[i + group.len()..];
        // The group up to its matching brace.
        let mut depth = 1;
        let mut end = body.len();
        for (j, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let top: Vec<&str> = split_top(&body[..end]);
        if top.iter().any(|item| {
            let head = item.trim().split("::").next().unwrap_or("").trim();
            let head = head.split_whitespace().next().unwrap_or("");
            head == name
        }) {
            return true;
        }
        rest = &body[end..];
    }
    false
}

/// The comma-separated items of a `use` group at its top level.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Every breach of the rules under `src`, as `file: what`.
fn violations(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for low in LOW {
        let mut files = Vec::new();
        rust_files(&src.join(low), &mut files);
        for f in files {
            let c = code(&std::fs::read_to_string(&f).unwrap_or_default());
            for high in HIGH {
                if uses(&c, "crate", high) {
                    out.push(format!("{}: uses crate::{high}", f.display()));
                }
            }
        }
    }
    let ops = src.join("operators");
    let names: Vec<String> = std::fs::read_dir(&ops)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.strip_suffix(".rs")
                .filter(|s| *s != "mod")
                .map(str::to_string)
        })
        .collect();
    for name in &names {
        let f = ops.join(format!("{name}.rs"));
        let c = code(&std::fs::read_to_string(&f).unwrap_or_default());
        for other in names.iter().filter(|o| *o != name) {
            let by_crate = uses(&c, "crate::operators", other);
            let by_super = uses(&c, "super", other);
            // `use crate::{operators::{kafka_produce, …}}` and the like.
            let grouped = uses(&c, "operators", other);
            if by_crate || by_super || grouped {
                out.push(format!("{}: uses the operator `{other}`", f.display()));
            }
        }
    }
    out
}

#[test]
fn lower_layers_never_reach_up_and_operators_never_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_each_kind_of_breach() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, body: &str| {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    write("operators/mod.rs", "pub mod a;\npub mod b;\n");
    write("operators/a.rs", "use super::{b::helper, Unit};\n");
    write(
        "operators/b.rs",
        "// mentions crate::operators::a in a comment only\nfn f() {}\n",
    );
    write("state/x.rs", "use crate::executor::Executor;\n");
    write("spec/y.rs", "use crate::{diag::Pos, scheduler};\n");
    write("graph/z.rs", "use crate::executors_like_name::X;\n");
    let found = violations(src);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found
            .iter()
            .any(|v| v.ends_with("a.rs: uses the operator `b`"))
    );
    assert!(
        found
            .iter()
            .any(|v| v.ends_with("x.rs: uses crate::executor"))
    );
    assert!(
        found
            .iter()
            .any(|v| v.ends_with("y.rs: uses crate::scheduler"))
    );
}
