//! `windsock validate` on one fixture per kind of error: each problem is reported with the right
//! line and column, every problem is reported, and nothing else is.

use crate::common::*;

#[test]
fn each_broken_fixture_reports_its_problems_at_the_right_place() {
    let fixtures = repo().join("tests/fixtures/validate");
    let mut files: Vec<_> = std::fs::read_dir(fixtures.join("bad"))
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "expected a fixture per error kind");
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read fixture");
        let expected: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` lines",
            file.display()
        );
        let out = run(windsock(&fixtures, &fixtures.join(".home"))
            .arg("validate")
            .arg(&file));
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {stdout}{stderr}",
            file.display()
        );
        let name = file.display().to_string();
        // One record per problem: its line plus any `hint:` lines under it.
        let mut reported: Vec<String> = Vec::new();
        for line in stdout.lines() {
            match reported.last_mut() {
                Some(last) if line.starts_with("  hint: ") => last.push_str(line),
                _ => reported.push(line.to_string()),
            }
        }
        for want in &expected {
            let (pos, msg) = want.split_once(": ").expect("`L:C: message`");
            let found = reported
                .iter()
                .any(|l| l.starts_with(&format!("{name}:{pos}: ")) && l.contains(msg));
            assert!(found, "{name}: expected `{pos}: {msg}` in:\n{stdout}");
        }
        // Nothing beyond what the fixture expects (several expectations may share one line).
        for line in &reported {
            assert!(
                expected.iter().any(|w| {
                    let (pos, msg) = w.split_once(": ").unwrap_or_default();
                    line.starts_with(&format!("{name}:{pos}: ")) && line.contains(msg)
                }),
                "{name}: unexpected problem reported: {line}"
            );
        }
        assert!(!stdout.contains("panicked") && !stderr.contains("panicked"));
    }
}

#[test]
fn a_valid_project_passes_and_the_default_is_pipelines_dir() {
    let fixtures = repo().join("tests/fixtures/validate");
    let out = run(windsock(&fixtures, &fixtures.join(".home")).arg("validate"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok: 1 pipeline valid (ok)"), "{stdout}");
}

#[test]
fn shipped_pipelines_validate() {
    let out = run(windsock(&repo(), &repo().join("target/.validate-home")).arg("validate"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
}

#[test]
fn duplicate_dag_ids_across_files_are_reported() {
    let body = "dag: same\ntasks:\n  a: {operator: noop}\n";
    let dir = project(&[("pipelines/one.yaml", body), ("pipelines/two.yaml", body)]);
    let out = run(windsock(dir.path(), &dir.path().join(".home")).arg("validate"));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("two.yaml:1:6: dag id `same` is already used by"),
        "{stdout}"
    );
}

#[test]
fn broken_macro_files_in_templates_are_reported() {
    let dir = project(&[
        (
            "pipelines/p.yaml",
            "dag: p\ntasks:\n  a: {operator: noop}\n",
        ),
        (
            "templates/bad.j2",
            "line one\n{% macro x() %}{{ 1 + }}{% endmacro %}\n",
        ),
    ]);
    let out = run(windsock(dir.path(), &dir.path().join(".home")).arg("validate"));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("bad.j2:2:1: template syntax error"),
        "{stdout}"
    );
}

#[test]
fn schema_file_is_in_sync_with_the_types() {
    let out = run(windsock(&repo(), &repo().join("target/.validate-home")).arg("schema"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let shipped = std::fs::read_to_string(repo().join("schemas/pipeline.schema.json"))
        .expect("schemas/pipeline.schema.json");
    assert_eq!(
        shipped, stdout,
        "schemas/pipeline.schema.json is stale: run `windsock schema > schemas/pipeline.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let ops = &schema["definitions"]["TaskSpec"]["properties"]["operator"]["enum"];
    assert!(
        ops.as_array()
            .is_some_and(|a| a.iter().any(|o| o == "shell")),
        "{ops}"
    );
    assert!(schema["properties"]["tasks"].is_object());
}
