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
    use std::io::BufRead;
    let dir = project(&[(
        "pipelines/tick.yaml",
        "dag: tick\nschedule: \"* * * * * *\"\ntasks:\n  hello:\n    operator: shell\n    with: { command: \"echo hello from the daemon\" }\n",
    )]);
    let home = dir.path().join(".windsock");
    let mut child = windsock(dir.path(), &home)
        .args(["scheduler", "--ui", "--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _daemon = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
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
