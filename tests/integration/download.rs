//! `http_download` against a real local HTTP server that misbehaves: it answers 503 first, then
//! drops the connection half-way through the file; the download resumes with a Range request and
//! the file appears whole, verified, under its final name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::common::*;
use sha2::Digest;

/// Serves `body` at any path: request 1 gets a 503, request 2 is cut after `cut` bytes, later
/// requests honour `Range`. Returns the port and the log of request lines and Range headers.
fn flaky_server(body: Vec<u8>, cut: usize) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let mut range: Option<usize> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if request.is_empty() {
                    request = line.trim().to_string();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse().ok();
                }
            }
            seen.lock()
                .unwrap()
                .push(format!("{request} range={range:?}"));
            let head = request.starts_with("HEAD");
            if n == 0 {
                let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let start = range.unwrap_or(0);
            let rest = &body[start..];
            let status = if range.is_some() {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            let mut headers = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
                rest.len()
            );
            if range.is_some() {
                headers.push_str(&format!(
                    "Content-Range: bytes {start}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                ));
            }
            headers.push_str("\r\n");
            let _ = stream.write_all(headers.as_bytes());
            if head {
                continue;
            }
            if n == 1 {
                let _ = stream.write_all(&rest[..cut]);
                let _ = stream.flush();
                drop(stream); // the connection drops mid-file
                continue;
            }
            let _ = stream.write_all(rest);
        }
    });
    (port, log)
}

#[test]
fn resumes_after_a_dropped_connection_and_verifies_the_file() {
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest: String = sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (port, log) = flaky_server(body.clone(), 1_000_000);
    let pipeline = format!(
        "dag: dl\ntasks:\n  get:\n    operator: http_download\n    with:\n      url: http://127.0.0.1:{port}/datasets/2019-Oct.csv.gz\n      output: downloads\n      size: {}\n      sha256: {digest}\n",
        body.len()
    );
    let dir = project(&[("pipelines/dl.yaml", &pipeline)]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "dl"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let path = dir.path().join("downloads/2019-Oct.csv.gz");
    let mut got = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, body);
    assert!(!dir.path().join("downloads/2019-Oct.csv.gz.part").exists());
    let requests = log.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET") && r.ends_with("range=Some(1000000)")),
        "{requests:?}"
    );
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    assert_eq!(tis[0]["output"]["bytes"], body.len());
    assert_eq!(tis[0]["output"]["skipped"], false);
    let log_text = text(&run(
        windsock(dir.path(), &home).args(["logs", &run_id, "get"])
    ))
    .0;
    assert!(log_text.contains("503"), "{log_text}");
    assert!(log_text.contains("resuming at byte 1000000"), "{log_text}");

    // A second run finds the complete file and skips it.
    let out = run(windsock(dir.path(), &home).args(["run", "dl"]));
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    assert_eq!(tis[0]["output"]["skipped"], true);
}

#[test]
fn a_checksum_mismatch_fails_and_leaves_no_file() {
    let body = vec![7u8; 10_000];
    let dir = project(&[]);
    let src = dir.path().join("inbox/source.bin");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::write(&src, &body).unwrap();
    let pipeline = format!(
        "dag: dl\ntasks:\n  get:\n    operator: http_download\n    with:\n      url: file://{}\n      output: downloads\n      filename: x.bin\n      sha256: {}\n",
        src.display(),
        "0".repeat(64)
    );
    std::fs::write(dir.path().join("pipelines/dl.yaml"), &pipeline).unwrap();
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "dl"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(!dir.path().join("downloads/x.bin").exists());
}

/// A pipeline reads files of its own project and state directory only: `file:///etc/passwd` (or
/// a relative path climbing out) fails at once, without retries, and copies nothing.
#[test]
fn file_downloads_from_outside_the_project_are_refused() {
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), b"not yours").unwrap();
    for url in [
        format!("file://{}", outside.path().display()),
        "file://../../../../../../etc/hostname".to_string(),
    ] {
        let pipeline = format!(
            "dag: dl\ntasks:\n  get:\n    operator: http_download\n    retries: 3\n    with:\n      url: {url}\n      output: downloads\n      filename: x.bin\n"
        );
        let dir = project(&[("pipelines/dl.yaml", &pipeline)]);
        let home = dir.path().join(".windsock");
        let out = run(windsock(dir.path(), &home).args(["run", "dl"]));
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("is outside the project folder"),
            "{url}: {stderr}"
        );
        assert!(!dir.path().join("downloads/x.bin").exists());
        let runs = json(windsock(dir.path(), &home).args(["runs", "dl", "--json"]));
        let tis = json(windsock(dir.path(), &home).args([
            "tasks",
            runs[0]["run_id"].as_str().unwrap(),
            "--json",
        ]));
        assert_eq!(tis[0]["try_number"], 1, "a refusal is not retried");
    }
}
