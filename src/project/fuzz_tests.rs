//! The pipeline loader and validator under mutated YAML (corpus: `tests/fuzz/`): never a panic,
//! and every problem located at a line of the file.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::Project;

/// Fragments that YAML, the pipeline format and the templates give meaning to.
const TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    ": ",
    "- ",
    "? ",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!tag ",
    "\t",
    "'",
    "\"",
    "[",
    "]",
    "{",
    "}",
    "~",
    "null",
    "-1",
    "0",
    "1e400",
    "99999999999999999999",
    "2019-13",
    "2020-02-30",
    "*/0 * * * *",
    "depends_on: [nope]\n",
    "operator: sql\n",
    "operator: kafka_produce\n",
    "with: {}\n",
    "tasks:\n",
    "retries: -3\n",
    "timeout: 0s\n",
    "{{ tasks.x.output.y }}",
    "{{ params.nope }}",
    "{% if %}",
    "\u{0}",
    "é",
    "\u{feff}",
    "\r\n",
    "#",
    "|\n",
    ">-\n",
    "---\n",
    "...\n",
    "\\",
    "%",
    "@",
    "`",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Token(usize, usize),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Mutation::Token(i, t)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), any::<bool>()).prop_map(|(i, more)| Mutation::Indent(i, more)),
    ]
}

fn mutate(seed: &str, ms: &[Mutation]) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for m in ms {
        let n = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if let Some(v) = b.get_mut(i % n) {
                    *v ^= x;
                }
            }
            Mutation::Cut(i) => b.truncate(i % n),
            Mutation::Token(i, t) => {
                let at = i % (b.len() + 1);
                let token = TOKENS[t % TOKENS.len()].as_bytes();
                b.splice(at..at, token.iter().copied());
            }
            _ => {
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
                let k = lines.len();
                match m {
                    Mutation::DeleteLine(i) => {
                        lines.remove(i % k);
                    }
                    Mutation::DuplicateLine(i) => {
                        let l = lines[i % k].clone();
                        lines.insert(i % k, l);
                    }
                    Mutation::SwapLines(a, c) => lines.swap(a % k, c % k),
                    Mutation::Indent(i, true) => lines[i % k].insert_str(0, "  "),
                    Mutation::Indent(i, false) => {
                        let l = &mut lines[i % k];
                        let cut = l.len() - l.trim_start_matches(' ').len();
                        l.replace_range(..cut.min(2), "");
                    }
                    _ => unreachable!("byte mutations are handled above"),
                }
                b = lines.join("\n").into_bytes();
            }
        }
    }
    b
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    v.sort();
    v
}

/// A project holding the repository's `sql/`, `schemas/` and `templates/` (and the validate
/// fixtures' templates), so that unmutated seeds resolve every file they name.
fn project_like_the_repo(into: &Path) -> Project {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (from, to) in [
        ("sql", "sql"),
        ("schemas", "schemas"),
        ("templates", "templates"),
        ("tests/fixtures/validate/templates", "templates"),
    ] {
        copy_tree(&repo.join(from), &into.join(to));
    }
    std::fs::create_dir_all(into.join("pipelines")).expect("mkdir");
    Project::open(into, None)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Validates `bytes` as a pipeline file: no panic (proptest would report it), and every problem
/// names this file at a line it has.
fn check(project: &Project, file: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    std::fs::write(file, bytes).expect("write");
    let (lines, _) = crate::spec::yaml::end_of(&String::from_utf8_lossy(bytes));
    let validated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        project.validate(&[file.to_path_buf()])
    }));
    let Ok((_, diags)) = validated else {
        return Err(TestCaseError::fail(format!(
            "the validator panicked on:\n{}",
            String::from_utf8_lossy(bytes)
        )));
    };
    for d in &diags.0 {
        if d.file.ends_with("pipelines/fuzz.yaml") {
            prop_assert!(
                d.pos.line >= 1 && d.pos.line <= lines,
                "line {} outside the file's {lines}: {d}\n{:?}",
                d.pos.line,
                String::from_utf8_lossy(bytes)
            );
        } else {
            // A problem elsewhere can only be in a template the project holds.
            prop_assert!(d.file.starts_with(&project.dir), "not located: {d}");
        }
        prop_assert!(!d.message.trim().is_empty(), "an empty message at {d}");
    }
    Ok(())
}

#[test]
fn mutated_pipelines_never_panic_the_validator_and_every_problem_is_located() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<String> = Vec::new();
    for dir in [
        repo.join("tests/fuzz/seeds"),
        repo.join("pipelines"),
        repo.join("tests/fixtures/validate/pipelines"),
        repo.join("tests/fixtures/validate/bad"),
    ] {
        for f in yaml_files(&dir) {
            seeds.push(std::fs::read_to_string(&f).expect("read seed"));
        }
    }
    assert!(seeds.len() > 20, "the corpus is missing");
    let dir = tempfile::tempdir().expect("tempdir");
    let project = project_like_the_repo(dir.path());
    let file = dir.path().join("pipelines/fuzz.yaml");

    // The seeds as they are, and every input that once broke the validator.
    let shipped = yaml_files(&repo.join("pipelines"));
    for path in shipped {
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&file, &text).expect("write");
        let (_, diags) = project.validate(std::slice::from_ref(&file));
        assert!(
            diags.is_empty(),
            "{} should validate: {diags}",
            path.display()
        );
    }
    for path in yaml_files(&repo.join("tests/fuzz/found")) {
        let bytes = std::fs::read(&path).expect("read");
        check(&project, &file, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    let cases = std::env::var("WINDSOCK_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (any::<usize>(), proptest::collection::vec(mutation(), 1..6));
    let result = runner.run(&strategy, |(pick, ms)| {
        let bytes = mutate(&seeds[pick % seeds.len()], &ms);
        check(&project, &file, &bytes)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
