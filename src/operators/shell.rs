//! `shell`: runs a command with `sh -c`.
//!
//! The command runs in its own process group so that a timeout or a cancelled run kills
//! everything it started, not just the shell. Its stdout and stderr go to the try's log; the
//! output is the exit code and the last lines of stdout.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};

/// How many trailing stdout lines the output keeps.
const TAIL_LINES: usize = 20;

/// Config of `shell`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShellConfig {
    /// The command line, run with `sh -c`. A non-zero exit fails the try.
    pub(crate) command: String,
    /// Extra environment variables for the command.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub(crate) env: IndexMap<String, String>,
    /// The working directory, relative to the project folder (default: the project folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) workdir: Option<PathBuf>,
}

impl OperatorConfig for ShellConfig {
    const NAME: &'static str = "shell";
    const SUMMARY: &'static str = "runs a command with `sh -c`";

    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.command.trim().is_empty() {
            out.push(ConfigProblem::at("command", "`command` is empty"));
        }
        if let Some(dir) = &self.workdir
            && !crate::spec::is_template(&dir.to_string_lossy())
        {
            let full = cx.project_dir.join(dir);
            if !full.is_dir() {
                out.push(ConfigProblem::at(
                    "workdir",
                    format!("`workdir` {} is not a directory", full.display()),
                ));
            }
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(run(self, ctx))
    }
}

async fn run(cfg: &ShellConfig, ctx: &TaskContext) -> Result<TaskResult, Error> {
    let workdir = cfg
        .workdir
        .as_ref()
        .map(|d| ctx.resolve(d))
        .unwrap_or_else(|| ctx.project_dir.clone());
    ctx.log.info(&format!("$ {}", cfg.command));
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&cfg.command)
        .current_dir(&workdir)
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .envs(&cfg.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // windsock's own credentials stay with windsock, unless the task passes one on by name.
    for name in crate::secrets::withheld_from_tasks() {
        if !cfg.env.contains_key(name) {
            cmd.env_remove(name);
        }
    }
    // If windsock dies (even by SIGKILL), the kernel kills the shell too, so a crashed
    // scheduler never leaves a task running unsupervised.
    let mut child = crate::sys::spawn_tied(cmd, libc::SIGKILL)
        .await
        .map_err(|e| Error::fatal(format!("cannot start `sh` in {}: {e}", workdir.display())))?;
    let _guard = crate::sys::GroupGuard::new(child.id());
    if let Some(pid) = child.id() {
        (ctx.on_process)(pid);
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let log = ctx.log.clone();
    let read_stdout = async move {
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        if let Some(out) = stdout {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.raw(&line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        tail
    };
    let log = ctx.log.clone();
    let read_stderr = async move {
        if let Some(err) = stderr {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.raw(&line);
            }
        }
    };
    let (tail, (), status) = tokio::join!(read_stdout, read_stderr, child.wait());
    let status = status.map_err(|e| Error::transient(format!("waiting for the command: {e}")))?;
    let stdout: Vec<String> = tail.into_iter().collect();
    match status.code() {
        Some(0) => Ok(TaskResult::Success(serde_json::json!({
            "exit_code": 0,
            "stdout": stdout.join("\n"),
        }))),
        Some(code) => Err(Error::transient(format!("command exited with code {code}"))),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let sig = status.signal().unwrap_or_default();
            Err(Error::transient(format!(
                "command was killed by signal {sig}"
            )))
        }
    }
}
