//! The web UI through a real browser (headless Chromium driven by playwright-core: `.ci/run`
//! installs both) and over plain HTTP for its security rules.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The browser and its driver, from the environment `.ci/run` sets (or the usual places).
fn browser() -> (String, String) {
    let chromium =
        std::env::var("WINDSOCK_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = std::env::var("WINDSOCK_PLAYWRIGHT").unwrap_or_else(|_| {
        std::env::var("HOME").unwrap_or_default()
            + "/.cache/windsock-ci/browser/node_modules/playwright-core"
    });
    assert!(
        Path::new(&chromium).exists() && Path::new(&playwright).exists(),
        "the UI test needs Chromium ({chromium}: apt-get install chromium) and playwright-core \
         ({playwright}: npm install playwright-core); .ci/run installs both"
    );
    (chromium, playwright)
}

fn query(home: &Path, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let v = json(windsock(&repo(), home).args(["query", "--format", "json", sql]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().values().cloned().collect())
        .collect()
}

/// A value as the page's `data-value` carries it.
fn as_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn same_number(page: &str, db: &serde_json::Value) -> bool {
    match (page.parse::<f64>(), as_text(db).parse::<f64>()) {
        (Ok(a), Ok(b)) => (a - b).abs() < 1e-9,
        _ => page == as_text(db),
    }
}

/// Rows of a tile (as the page shows them) against rows of a query, cell by cell.
fn assert_tile(tiles: &serde_json::Value, tile: &str, rows: &[Vec<serde_json::Value>]) {
    let page = tiles[tile]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no tile {tile}: {tiles}"));
    assert_eq!(page.len(), rows.len(), "{tile}: {page:?} vs {rows:?}");
    assert!(!rows.is_empty(), "{tile} has no rows");
    for (p, r) in page.iter().zip(rows) {
        for (i, want) in r.iter().enumerate() {
            let got = p[i].as_str().unwrap_or_default();
            assert!(
                same_number(got, want),
                "{tile}: `{got}` vs {want} in {p:?} / {r:?}"
            );
        }
    }
    assert_eq!(tiles[tile]["chart"], true, "{tile} draws a chart");
}

#[test]
fn the_ui_in_a_browser_shows_runs_logs_triggers_and_the_dashboard() {
    let (chromium, playwright) = browser();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = run(windsock(&repo(), h).args(["run", "ecommerce_batch", "--partition", "2019-12"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    assert!(
        stderr.contains("dashboard: ") && stderr.contains("windsock scheduler --ui"),
        "{stderr}"
    );

    let (_ui, addr) = ui(&repo(), h, "127.0.0.1:0", None);
    let driven = Command::new("node")
        .arg(repo().join("tests/ui/drive.cjs"))
        .env("PLAYWRIGHT", &playwright)
        .env("CHROMIUM", &chromium)
        .env("UI_URL", format!("http://{addr}"))
        .env("DAG", "ecommerce_batch")
        .env("RUN_ID", &run_id)
        .env("TASK", "prepare")
        .env("TRIGGER_PARTITION", "2020-01")
        .output()
        .expect("run node");
    let (found, err) = text(&driven);
    assert!(driven.status.success(), "the browser driver failed: {err}");
    let found: serde_json::Value = serde_json::from_str(&found).expect("driver JSON");

    // The DAGs page lists the shipped pipelines.
    for dag in ["ecommerce_batch", "ecommerce_stream", "hello_partitions"] {
        assert!(
            found["dags"].as_array().unwrap().iter().any(|d| d == dag),
            "{}",
            found["dags"]
        );
    }
    // The grid shows every task of the run, as the state database has it.
    let tis = json(windsock(&repo(), h).args(["tasks", &run_id, "--json"]));
    let cells: Vec<&serde_json::Value> = found["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["run"] == run_id.as_str())
        .collect();
    assert_eq!(cells.len(), tis.as_array().unwrap().len(), "{cells:?}");
    for t in tis.as_array().unwrap() {
        let cell = cells.iter().find(|c| c["task"] == t["task"]).unwrap();
        assert_eq!(cell["state"], t["state"], "{cell} vs {t}");
        assert_eq!(cell["state"], "success");
    }
    // Clicking the cell opened the try and its log.
    assert!(
        found["task_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/runs/{run_id}/tasks/prepare")),
        "{}",
        found["task_url"]
    );
    let log = found["log"].as_str().unwrap();
    let file = json(windsock(&repo(), h).args(["logs", &run_id, "prepare", "--json"]));
    assert_eq!(
        log,
        file["log"].as_str().unwrap(),
        "the page shows the try's log"
    );
    assert!(log.contains("preparing 1 file(s)"), "{log}");
    assert!(
        found["rendered"]
            .as_str()
            .unwrap_or_default()
            .contains("rows_per_day: 10000"),
        "{}",
        found["rendered"]
    );
    // The trigger made a queued run that appeared in the page without a reload.
    assert_eq!(found["not_reloaded"], true);
    let triggered = found["triggered"].as_array().unwrap();
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    let new_run = triggered[0]["run"].as_str().unwrap();
    assert!(new_run.contains("2020-01"), "{new_run}");
    let runs = json(windsock(&repo(), h).args(["runs", "ecommerce_batch", "--json"]));
    let rec = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == new_run)
        .unwrap();
    assert_eq!(
        (rec["state"].as_str(), rec["trigger"].as_str()),
        (Some("queued"), Some("manual"))
    );
    assert!(
        found["flash"].as_str().unwrap().contains(new_run),
        "{}",
        found["flash"]
    );

    // The dashboard's tiles hold the REPORTING tables' values.
    let tiles = &found["tiles"];
    assert_tile(
        tiles,
        "top-categories",
        &query(
            h,
            "SELECT category_code, revenue, purchases FROM REPORTING.TOP_CATEGORIES_BY_REVENUE ORDER BY revenue DESC, category_code LIMIT 15",
        ),
    );
    assert_tile(
        tiles,
        "top-brands",
        &query(
            h,
            "SELECT brand, revenue, units FROM REPORTING.TOP_BRANDS ORDER BY revenue DESC, brand LIMIT 15",
        ),
    );
    let daily = query(
        h,
        "SELECT event_date, revenue, purchases FROM REPORTING.DAILY_REVENUE ORDER BY event_date",
    );
    assert_eq!(daily.len(), 31);
    assert_tile(tiles, "daily-revenue", &daily);
    assert!(tiles["funnel"]["missing"].is_null() && tiles["abandoned-carts"]["missing"].is_null());
    // The batch DAG fills no PROCESSED tables: those tiles say so rather than fail.
    assert!(
        tiles["events-per-minute"]["missing"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no data yet")
    );
}

#[test]
fn a_ui_on_another_address_needs_its_token_and_actions_need_the_forgery_guard() {
    let dir = project(&[(
        "pipelines/p.yaml",
        "dag: p\ndescription: \"<script>alert('dag')</script>\"\ntasks:\n  echo:\n    operator: shell\n    with: { command: \"echo '<img src=x onerror=alert(1)>'\" }\n",
    )]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "p"]));
    assert!(out.status.success(), "{:?}", text(&out));
    let run_id = text(&out).0.lines().next().unwrap().trim().to_string();

    // No token on an address other machines can reach: it does not start, and says why.
    let out = run(windsock(dir.path(), &home)
        .args(["ui", "--bind", "0.0.0.0:0"])
        .env_remove("WINDSOCK_UI_TOKEN"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs") || stderr.contains("access token"),
        "{stderr}"
    );
    assert!(stderr.contains("WINDSOCK_UI_TOKEN"), "{stderr}");

    let (_ui, addr) = ui(dir.path(), &home, "0.0.0.0:0", Some("s3cret-token"));
    let port = addr.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    // Every request without the token is refused.
    for path in [
        "/",
        "/dags/p",
        "/dashboard",
        "/static/app.js",
        &format!("/runs/{run_id}/tasks/echo"),
    ] {
        let (status, _, _) = http(&local, "GET", path, &[], "");
        assert_eq!(status, 401, "{path}");
    }
    let (status, _, _) = http(&local, "GET", "/", &[("Authorization", "Bearer wrong")], "");
    assert_eq!(status, 401);
    // The token opens it: as a bearer header, or once in the address (which sets a cookie).
    let (status, _, page) = http(
        &local,
        "GET",
        "/",
        &[("Authorization", "Bearer s3cret-token")],
        "",
    );
    assert_eq!(status, 200);
    let (status, head, _) = http(&local, "GET", "/?token=s3cret-token", &[], "");
    assert_eq!(status, 303, "{head}");
    assert!(
        head.contains("windsock_ui_token=s3cret-token") && head.contains("HttpOnly"),
        "{head}"
    );
    let cookie = "windsock_ui_token=s3cret-token";
    let (status, _, _) = http(&local, "GET", "/dags/p", &[("Cookie", cookie)], "");
    assert_eq!(status, 200);
    // User data is escaped: the description and the log's markup are text, not markup.
    assert!(
        !page.contains("<script>alert") && page.contains("&lt;script&gt;"),
        "{page}"
    );
    let (_, _, task_page) = http(
        &local,
        "GET",
        &format!("/runs/{run_id}/tasks/echo"),
        &[("Cookie", cookie)],
        "",
    );
    assert!(
        task_page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{task_page}"
    );
    assert!(!task_page.contains("<img src=x"), "{task_page}");

    // Actions: without the page's anti-forgery header, or from another site, refused.
    let csrf = page
        .split("name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries its anti-forgery value")
        .to_string();
    let auth = [
        ("Cookie", cookie),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (status, _, _) = http(&local, "POST", "/dags/p/pause", &auth, "");
    assert_eq!(status, 403, "no anti-forgery header");
    let (status, _, _) = http(
        &local,
        "POST",
        "/dags/p/pause",
        &[auth[0], auth[1], ("X-Windsock-CSRF", "guess")],
        "",
    );
    assert_eq!(status, 403, "a wrong one");
    let evil = [
        auth[0],
        auth[1],
        ("X-Windsock-CSRF", csrf.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let (status, _, _) = http(&local, "POST", "/dags/p/pause", &evil, "");
    assert_eq!(status, 403, "from another site");
    let (status, _, _) = http(&local, "GET", "/dags/p/pause", &[auth[0]], "");
    assert_eq!(status, 405, "actions are POSTs only");
    let dags = json(windsock(dir.path(), &home).args(["dags", "--json"]));
    assert_eq!(dags[0]["paused"], false, "nothing refused took effect");
    // With the token, the header and the UI's own origin, it acts.
    let origin = format!("http://{local}");
    let good = [
        auth[0],
        auth[1],
        ("X-Windsock-CSRF", csrf.as_str()),
        ("Origin", origin.as_str()),
    ];
    let (status, _, body) = http(&local, "POST", "/dags/p/pause", &good, "");
    assert_eq!(status, 200, "{body}");
    let dags = json(windsock(dir.path(), &home).args(["dags", "--json"]));
    assert_eq!(dags[0]["paused"], true);
}

/// `windsock scheduler --ui`: the daemon serves the UI itself, and its runs show there.
#[test]
fn the_scheduler_serves_the_ui_with_its_own_runs() {
    let dir = project(&[(
        "pipelines/tick.yaml",
        "dag: tick\nschedule: \"* * * * * *\"\ntasks:\n  hello:\n    operator: shell\n    with: { command: \"echo hello from the daemon\" }\n",
    )]);
    let home = dir.path().join(".windsock");
    let (_daemon, addr) = serving(
        windsock(dir.path(), &home)
            .args(["scheduler", "--ui", "--bind", "127.0.0.1:0"])
            .stderr(std::process::Stdio::null()),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _, page) = http(&addr, "GET", "/dags/tick", &[], "");
        assert_eq!(status, 200);
        if page.contains(r#"data-task="hello""#) && page.contains(r#"data-state="success""#) {
            assert!(
                !page.contains("no scheduler running"),
                "the page knows its daemon"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no successful run shown: {page}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A page of another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) names its
/// own host: the token-less loopback UI refuses it, reads and actions alike, and answers its
/// own address, `localhost` and the names given with `--allowed-host`.
#[test]
fn a_request_naming_another_host_is_refused() {
    let dir = project(&[(
        "pipelines/p.yaml",
        "dag: p\ntasks:\n  echo:\n    operator: shell\n    with: { command: \"echo hi\" }\n",
    )]);
    let home = dir.path().join(".windsock");
    let (_ui, addr) = ui_with(
        dir.path(),
        &home,
        "127.0.0.1:0",
        None,
        &["--allowed-host", "windsock.internal"],
    );
    let port = addr.rsplit(':').next().unwrap().to_string();
    let (status, _, page) = http(&addr, "GET", "/", &[], "");
    assert_eq!(status, 200);
    let csrf = page
        .split("name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries its anti-forgery value")
        .to_string();
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil_host}");
    for path in ["/", "/dags/p", "/dashboard"] {
        let (status, _, body) = http(&addr, "GET", path, &[("Host", &evil_host)], "");
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("evil.example"), "{body}");
    }
    // What a rebound page would send: its own host and origin, the anti-forgery value it read.
    let (status, _, _) = http(
        &addr,
        "POST",
        "/dags/p/pause",
        &[
            ("Host", &evil_host),
            ("Origin", &evil_origin),
            ("X-Windsock-CSRF", &csrf),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "",
    );
    assert_eq!(status, 403);
    let dags = json(windsock(dir.path(), &home).args(["dags", "--json"]));
    assert_eq!(dags[0]["paused"], false, "the refused action took effect");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "windsock.internal".to_string(),
    ] {
        let (status, _, _) = http(&addr, "GET", "/", &[("Host", &host)], "");
        assert_eq!(status, 200, "{host}");
    }
}

/// Connections left half-open (slowloris: up to 2,000, as many as the server lets in) with the
/// process's open files limited to 1,024: the UI caps what it serves at once and drops heads
/// that do not arrive within seconds, so it answers again, and the scheduler beside it, whose
/// tasks need files, keeps scheduling (it used to take connections until no file could be
/// opened, and keep them for ever).
#[test]
fn half_open_connections_starve_neither_the_ui_nor_the_scheduler() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let dir = project(&[(
        "pipelines/tick.yaml",
        "dag: tick\nschedule: \"* * * * * *\"\ntasks:\n  hello:\n    operator: shell\n    with: { command: \"echo hello\" }\n",
    )]);
    let home = dir.path().join(".windsock");
    let mut cmd = windsock(dir.path(), &home);
    cmd.args(["scheduler", "--ui", "--bind", "127.0.0.1:0"])
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (_daemon, addr) = serving(&mut cmd);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let successes = || {
        json(windsock(dir.path(), &home).args(["runs", "--limit", "100000", "--json"]))
            .as_array()
            .map(|a| a.iter().filter(|r| r["state"] == "success").count())
            .unwrap_or(0)
    };
    let before = successes();
    // This test process holds the 2,000 connections.
    // SAFETY: raising our own soft limit to the hard one.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let mut held = Vec::new();
    let mut refused_in_a_row = 0;
    // Up to 2,000; past the server's places and its listen queue, connections are not answered
    // at all: stop trying after a run of those.
    while held.len() < 2000 && refused_in_a_row < 20 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
                held.push(s);
                refused_in_a_row = 0;
            }
            Err(_) => refused_in_a_row += 1,
        }
    }
    // At least every place the server has (half of 1,024 open files, less a reserve).
    assert!(held.len() >= 384, "only {} connections opened", held.len());
    eprintln!("{} half-open connections held", held.len());
    let attacked = Instant::now();
    // The UI answers (the half-open heads time out and free their places)...
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answered = std::thread::spawn(move || {
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            let mut s = s;
            s.write_all(b"GET /dags/tick HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut head = [0u8; 12];
            std::io::Read::read_exact(&mut s, &mut head).ok()?;
            Some(String::from_utf8_lossy(&head).into_owned())
        })
        .join()
        .unwrap();
        if answered.is_some_and(|h| h.contains(" 200")) {
            break;
        }
        assert!(Instant::now() < deadline, "the UI stopped answering");
    }
    eprintln!("answered {:?} into the attack", attacked.elapsed());
    // ...and the scheduler goes on running a DAG every second.
    let during = Instant::now();
    while successes() < before + 5 {
        assert!(
            during.elapsed() < Duration::from_secs(30),
            "the scheduler stalled under the attack"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(held);
}

/// Secrets a pipeline uses — read with `env()` under a secret-looking name, listed under
/// `secrets:`, passed to a command — and windsock's own (the UI token) appear nowhere: not in the
/// task's log, the daemon's log, the state database, any command's output or any page; and a
/// task's process does not inherit windsock's own credentials.
#[test]
fn secrets_used_by_a_pipeline_are_masked_everywhere() {
    let pipeline = r#"
dag: creds
secrets: [VENDOR_DSN]
tasks:
  show:
    operator: shell
    with:
      command: "echo pw={{ env('SNOWFLAKE_PASSWORD') }} dsn={{ env('VENDOR_DSN') }}; echo inherited=$WINDSOCK_UI_TOKEN$SNOWFLAKE_PASSWORD; echo passed=$PASSED"
      env: { PASSED: "{{ env('MY_API_TOKEN') }}" }
  broken:
    operator: shell
    depends_on: [show]
    with: { command: "echo {{ env('MY_API_TOKEN') }} >&2; exit 3" }
"#;
    let dir = project(&[("pipelines/creds.yaml", pipeline)]);
    let home = dir.path().join(".windsock");
    let secrets = [
        ("SNOWFLAKE_PASSWORD", "sf-pass-7731x"),
        ("VENDOR_DSN", "vendor-dsn-5512q"),
        ("MY_API_TOKEN", "api-token-99k1"),
        ("WINDSOCK_UI_TOKEN", "ui-token-44z9w"),
    ];
    let daemon_log = dir.path().join("daemon.log");
    let mut cmd = windsock(dir.path(), &home);
    cmd.args(["scheduler", "--ui", "--bind", "127.0.0.1:0"])
        .env("WINDSOCK_LOG", "debug")
        .stderr(std::fs::File::create(&daemon_log).unwrap());
    for (k, v) in secrets {
        cmd.env(k, v);
    }
    let (daemon, addr) = serving(&mut cmd);
    let with_secrets = |c: &mut std::process::Command| {
        for (k, v) in secrets {
            c.env(k, v);
        }
    };
    let mut trigger = windsock(dir.path(), &home);
    with_secrets(&mut trigger);
    let out = run(trigger.args(["trigger", "creds"]));
    assert!(out.status.success(), "{:?}", text(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let run_id = loop {
        let rs = json(windsock(dir.path(), &home).args(["runs", "--json"]));
        if rs[0]["state"] == "failed" {
            break rs[0]["run_id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "{rs}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut shown = String::new();
    for args in [
        vec!["logs", run_id.as_str(), "show"],
        vec!["logs", run_id.as_str(), "broken"],
        vec!["tasks", run_id.as_str(), "--json"],
        vec!["runs", "--json"],
    ] {
        let mut c = windsock(dir.path(), &home);
        with_secrets(&mut c);
        let out = run(c.args(&args));
        let (o, e) = text(&out);
        shown.push_str(&o);
        shown.push_str(&e);
    }
    let log = run(windsock(dir.path(), &home).args(["logs", &run_id, "show"]));
    let log = text(&log).0;
    assert!(log.contains("pw=*** dsn=***"), "{log}");
    assert!(
        log.contains("inherited=\n") || log.contains("inherited=\r"),
        "{log}"
    );
    assert!(log.contains("passed=***"), "{log}");
    let bearer = format!("Bearer {}", secrets[3].1);
    for path in [
        "/".to_string(),
        "/dags/creds".to_string(),
        format!("/runs/{run_id}/tasks/show"),
        format!("/runs/{run_id}/tasks/broken"),
        format!("/api/log?run={run_id}&task=show&try=1"),
        format!("/api/log?run={run_id}&task=broken&try=1"),
    ] {
        let (status, _, body) = http(&addr, "GET", &path, &[("Authorization", &bearer)], "");
        assert_eq!(status, 200, "{path}: {body}");
        shown.push_str(&body);
    }
    drop(daemon);
    shown.push_str(&read(&daemon_log));
    for (name, value) in secrets {
        assert!(!shown.contains(value), "{name} shown: {shown}");
    }
    let mut files = vec![daemon_log.clone()];
    let mut dirs = vec![home.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("state.db")));
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for (name, value) in secrets {
            let hit = bytes.windows(value.len()).any(|w| w == value.as_bytes());
            assert!(!hit, "{name} written to {}", f.display());
        }
    }
}
