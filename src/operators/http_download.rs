//! `http_download`: fetches a URL (or a `file://` path) into a folder.
//!
//! Streams to `NAME.part` and renames when complete, so a half-written file is never taken for a
//! whole one; resumes a `.part` left by a dropped connection with an HTTP Range request; retries
//! network errors, 429 and 5xx with backoff; checks size and SHA-256 when known; skips the
//! download when the complete file is already there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult, Unit,
};
use crate::spec::is_template;

/// Config of `http_download`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpDownloadConfig {
    /// `http://`, `https://` or `file://` URL, e.g.
    /// `https://data.rees46.com/datasets/marketplace/{{ partition.name }}.csv.gz`.
    pub(crate) url: String,
    /// The folder to download into.
    pub(crate) output: PathBuf,
    /// The file name (default: the URL's last path segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) filename: Option<String>,
    /// Expected size in bytes, checked after the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    /// Expected SHA-256 (hex), checked after the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
    /// Attempts within one try for network errors, 429 and 5xx (the task's retries come on top).
    #[serde(default = "default_attempts")]
    pub(crate) attempts: u32,
}

fn default_attempts() -> u32 {
    5
}

impl OperatorConfig for HttpDownloadConfig {
    const NAME: &'static str = "http_download";
    const SUMMARY: &'static str = "downloads a URL into a folder, resuming and verifying it";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !is_template(&self.url)
            && !["http://", "https://", "file://"]
                .iter()
                .any(|p| self.url.starts_with(p))
        {
            out.push(ConfigProblem::at(
                "url",
                format!(
                    "`url` must start with http://, https:// or file://, not `{}`",
                    self.url
                ),
            ));
        }
        if let Some(h) = &self.sha256
            && !is_template(h)
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            out.push(ConfigProblem::at(
                "sha256",
                "`sha256` must be 64 hexadecimal digits",
            ));
        }
        if self.attempts == 0 {
            out.push(ConfigProblem::at(
                "attempts",
                "`attempts` must be at least 1",
            ));
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(run(self, ctx))
    }
}

async fn run(cfg: &HttpDownloadConfig, ctx: &TaskContext) -> Result<TaskResult, Error> {
    let name = match &cfg.filename {
        Some(n) => n.clone(),
        None => cfg
            .url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::fatal(format!(
                    "cannot tell a file name from `{}`; set `filename`",
                    cfg.url
                ))
            })?,
    };
    let dir = ctx.resolve(&cfg.output);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::transient(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(&name);
    let part = dir.join(format!("{name}.part"));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::fatal(format!("cannot build the HTTP client: {e}")))?;

    if let Ok(meta) = tokio::fs::metadata(&path).await {
        let expected = match cfg.size {
            Some(s) => Some(s),
            None => remote_size(&client, &cfg.url).await,
        };
        let complete = expected.is_none_or(|s| s == meta.len())
            && match &cfg.sha256 {
                Some(h) => sha256_of(&path)
                    .await
                    .is_ok_and(|d| d.eq_ignore_ascii_case(h)),
                None => true,
            };
        if complete {
            ctx.log
                .info(&format!("{} is already complete; skipped", path.display()));
            return Ok(TaskResult::Success(serde_json::json!({
                "path": path.display().to_string(), "bytes": meta.len(), "skipped": true,
            })));
        }
    }

    let mut attempt = 0;
    loop {
        attempt += 1;
        match fetch(&client, cfg, &part, ctx).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && attempt < cfg.attempts => {
                let delay = Duration::from_millis(500 * (1 << (attempt - 1).min(5)));
                ctx.log.info(&format!(
                    "attempt {attempt} of {}: {e}; retrying in {:.1}s",
                    cfg.attempts,
                    delay.as_secs_f64()
                ));
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
    let bytes = tokio::fs::metadata(&part)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if let Some(size) = cfg.size
        && size != bytes
    {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(Error::transient(format!(
            "downloaded {bytes} bytes, expected {size}"
        )));
    }
    if let Some(h) = &cfg.sha256 {
        let digest = sha256_of(&part)
            .await
            .map_err(|e| Error::transient(format!("reading {}: {e}", part.display())))?;
        if !digest.eq_ignore_ascii_case(h) {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(Error::transient(format!(
                "checksum mismatch: SHA-256 is {digest}, expected {h}"
            )));
        }
    }
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| Error::transient(format!("cannot rename {}: {e}", part.display())))?;
    ctx.log
        .info(&format!("downloaded {} ({bytes} bytes)", path.display()));
    Ok(TaskResult::Success(serde_json::json!({
        "path": path.display().to_string(), "bytes": bytes, "skipped": false,
    })))
}

async fn remote_size(client: &reqwest::Client, url: &str) -> Option<u64> {
    if let Some(p) = url.strip_prefix("file://") {
        return tokio::fs::metadata(p).await.ok().map(|m| m.len());
    }
    let resp = client.head(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// One attempt: appends to `part` from where it ends.
async fn fetch(
    client: &reqwest::Client,
    cfg: &HttpDownloadConfig,
    part: &PathBuf,
    ctx: &TaskContext,
) -> Result<(), Error> {
    let have = tokio::fs::metadata(part)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if let Some(src) = cfg.url.strip_prefix("file://") {
        // A pipeline reads files of its own project or state directory, never the machine's.
        let asked = ctx.resolve(Path::new(src));
        let Some(src) = crate::sys::inside(&asked, &[&ctx.project_dir, &ctx.home]) else {
            return Err(Error::fatal(if asked.exists() {
                format!(
                    "`url`: {} is outside the project folder ({}) and the state directory ({}); \
                     a file:// download reads only files inside them",
                    asked.display(),
                    ctx.project_dir.display(),
                    ctx.home.display()
                )
            } else {
                format!("`url`: cannot open {}: no such file", asked.display())
            }));
        };
        let src = src.display().to_string();
        let mut input = tokio::fs::File::open(&src)
            .await
            .map_err(|e| Error::fatal(format!("cannot open {src}: {e}")))?;
        let mut out = tokio::fs::File::create(part)
            .await
            .map_err(|e| Error::transient(format!("cannot write {}: {e}", part.display())))?;
        tokio::io::copy(&mut input, &mut out)
            .await
            .map_err(|e| Error::transient(format!("copying {src}: {e}")))?;
        out.sync_all()
            .await
            .map_err(|e| Error::transient(format!("writing {}: {e}", part.display())))?;
        return Ok(());
    }
    let mut req = client.get(&cfg.url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| Error::transient(format!("requesting {}: {e}", cfg.url)))?;
    let status = resp.status();
    if status.as_u16() == 429 || status.is_server_error() {
        return Err(Error::transient(format!("{} answered {status}", cfg.url)));
    }
    if status.as_u16() == 416 && have > 0 {
        // The part already holds everything the server has.
        return Ok(());
    }
    if !status.is_success() {
        return Err(Error::fatal(format!("{} answered {status}", cfg.url)));
    }
    let resuming = have > 0 && status.as_u16() == 206;
    if have > 0 && !resuming {
        ctx.log
            .info("the server does not support ranges; starting over");
    } else if resuming {
        ctx.log.info(&format!("resuming at byte {have}"));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(resuming)
        .write(true)
        .truncate(!resuming)
        .open(part)
        .await
        .map_err(|e| Error::transient(format!("cannot write {}: {e}", part.display())))?;
    let total = resp
        .content_length()
        .map(|l| l + if resuming { have } else { 0 });
    let mut done = if resuming { have } else { 0 };
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::transient(format!("downloading {}: {e}", cfg.url)))?
    {
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::transient(format!("writing {}: {e}", part.display())))?;
        done += chunk.len() as u64;
        ctx.progress.report(done, total, Unit::Bytes);
    }
    file.sync_all()
        .await
        .map_err(|e| Error::transient(format!("writing {}: {e}", part.display())))?;
    let now = tokio::fs::metadata(part)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if let Some(t) = total
        && now < t
    {
        return Err(Error::transient(format!(
            "the connection closed after {now} of {t} bytes"
        )));
    }
    Ok(())
}
