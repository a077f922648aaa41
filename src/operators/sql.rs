//! `sql`: runs Jinja-templated SQL on the profile's warehouse — inline `sql:` or files under
//! `sql/` (globs allowed, run in name order), each possibly several statements. Each file (or
//! the inline script) runs in one transaction; a failing statement is named by file, statement
//! number and line within the rendered SQL. The rendered SQL is logged with every try.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::connections::warehouse::{self, ScriptError, split::split};
use crate::spec::is_template;

/// What a `fetch` returns to downstream templates (`tasks.NAME.output.rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Fetch {
    /// The first row of the last statement, as an object.
    One,
    /// Every row of the last statement (keep it small).
    All,
}

/// Config of `sql`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlConfig {
    /// Inline SQL (one or more statements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sql: Option<String>,
    /// Files or globs relative to the project's `sql/` folder, e.g. `reporting/*.sql`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) files: Vec<String>,
    /// A named warehouse connection (default: the profile's warehouse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection: Option<String>,
    /// Return the result of the last statement to downstream templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fetch: Option<Fetch>,
}

/// The files a config names, in name order, or a message naming the missing one.
fn resolve_files(project: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let root = project.join("sql");
    let mut out = Vec::new();
    for pattern in patterns {
        let escapes = Path::new(pattern).components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir
                    | std::path::Component::RootDir
                    | std::path::Component::Prefix(_)
            )
        });
        if escapes {
            return Err(format!(
                "`files`: `{pattern}` leaves the project's sql/ folder; name files inside it"
            ));
        }
        let full = root.join(pattern);
        let mut found: Vec<PathBuf> = Vec::new();
        for p in glob::glob(&full.to_string_lossy())
            .map_err(|e| format!("bad file pattern `{pattern}`: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
        {
            // A symbolic link inside sql/ may point anywhere: only what stays inside is read.
            if crate::sys::inside(&p, &[&root]).is_none() {
                return Err(format!(
                    "`files`: {} leads outside the project's sql/ folder",
                    p.display()
                ));
            }
            found.push(p);
        }
        if found.is_empty() {
            return Err(format!(
                "`files`: no file matches `{pattern}` under {}",
                root.display()
            ));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

impl OperatorConfig for SqlConfig {
    const NAME: &'static str = "sql";

    fn uses_warehouse(_with: &crate::spec::Node) -> bool {
        true
    }
    const SUMMARY: &'static str = "runs templated SQL on the warehouse";

    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.sql.is_none() && self.files.is_empty() {
            out.push(ConfigProblem::whole("`sql` needs inline `sql` or `files`"));
        }
        let literal: Vec<String> = self
            .files
            .iter()
            .filter(|f| !is_template(f))
            .cloned()
            .collect();
        match resolve_files(cx.project_dir, &literal) {
            Err(e) => out.push(ConfigProblem::at("files", e)),
            Ok(files) => {
                for f in files {
                    let source = std::fs::read_to_string(&f).unwrap_or_default();
                    if let Err(e) = cx.templates.check(&source) {
                        out.push(ConfigProblem::at(
                            "files",
                            format!("{}:{}: {}", f.display(), e.line.unwrap_or(1), e.message),
                        ));
                    }
                }
            }
        }
        out.extend(super::check_connection(self.connection.as_deref()));
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(run(self, ctx))
    }

    fn rendered_extras(
        &self,
        cx: &super::RenderExtras<'_>,
    ) -> Result<Vec<(String, String)>, String> {
        rendered_files(cx.project_dir, &self.files, cx.templates, cx.context)
    }
}

/// Each file of `patterns`, rendered: (path, SQL).
fn rendered_files(
    project: &Path,
    patterns: &[String],
    templates: &crate::template::Templates,
    context: &minijinja::Value,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for f in resolve_files(project, patterns)? {
        let source =
            std::fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let rendered = templates
            .render(&source, context)
            .map_err(|e| format!("{}:{}: {}", f.display(), e.line.unwrap_or(1), e.message))?;
        out.push((f.display().to_string(), rendered));
    }
    Ok(out)
}

async fn run(cfg: &SqlConfig, ctx: &TaskContext) -> Result<TaskResult, Error> {
    let wh = warehouse::open(ctx.profile, &ctx.home, Some(&ctx.query_tag()))?;
    // (name for messages, rendered SQL)
    let mut scripts: Vec<(String, String)> = Vec::new();
    if let Some(sql) = &cfg.sql {
        scripts.push(("inline sql".into(), sql.clone()));
    }
    scripts.extend(
        rendered_files(
            &ctx.project_dir,
            &cfg.files,
            &ctx.templates,
            &ctx.template_context,
        )
        .map_err(Error::fatal)?,
    );
    let mut statements_run = 0;
    let mut rows_affected: u64 = 0;
    let mut last = None;
    for (name, sql) in &scripts {
        ctx.log
            .info(&format!("rendered SQL of {name}:\n{}", sql.trim_end()));
        let parts = split(sql);
        let texts: Vec<String> = parts.iter().map(|s| s.sql.clone()).collect();
        let results = wh
            .script(&texts)
            .await
            .map_err(|ScriptError { statement, error }| {
                let line = parts.get(statement).map_or(1, |p| p.line);
                error.context(format_args!(
                    "{name}, statement {} (line {line} of the rendered SQL)",
                    statement + 1
                ))
            })?;
        statements_run += results.len();
        for r in &results {
            if r.columns.len() == 1 && r.columns[0] == "Count" {
                rows_affected += r.rows.first().and_then(|row| row[0].as_u64()).unwrap_or(0);
            }
        }
        last = results.into_iter().last();
    }
    ctx.log.info(&format!(
        "{statements_run} statements run, {rows_affected} rows affected"
    ));
    let mut out = serde_json::json!({
        "statements": statements_run,
        "rows_affected": rows_affected,
    });
    if let (Some(fetch), Some(r)) = (cfg.fetch, last) {
        let rows: Vec<serde_json::Value> = r
            .rows
            .iter()
            .map(|row| {
                serde_json::Value::Object(
                    r.columns.iter().cloned().zip(row.iter().cloned()).collect(),
                )
            })
            .collect();
        out["rows"] = match fetch {
            Fetch::One => rows.into_iter().next().unwrap_or(serde_json::Value::Null),
            Fetch::All => serde_json::Value::Array(rows),
        };
    }
    Ok(TaskResult::Success(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_outside_the_sql_folder_are_refused() {
        let project = tempfile::tempdir().unwrap();
        let sql = project.path().join("sql");
        std::fs::create_dir_all(sql.join("reporting")).unwrap();
        std::fs::write(sql.join("reporting/a.sql"), "select 1").unwrap();
        std::fs::write(project.path().join("secret.sql"), "select 2").unwrap();
        let found = resolve_files(project.path(), &["reporting/*.sql".into()]).unwrap();
        assert_eq!(found, vec![sql.join("reporting/a.sql")]);
        for pattern in ["../secret.sql", "reporting/../../*.sql", "/etc/*"] {
            let e = resolve_files(project.path(), &[pattern.into()]).unwrap_err();
            assert!(
                e.contains("leaves the project's sql/ folder"),
                "{pattern}: {e}"
            );
        }
        // A link inside sql/ to a file outside it.
        std::os::unix::fs::symlink(project.path().join("secret.sql"), sql.join("link.sql"))
            .unwrap();
        let e = resolve_files(project.path(), &["*.sql".into()]).unwrap_err();
        assert!(e.contains("leads outside"), "{e}");
    }
}
