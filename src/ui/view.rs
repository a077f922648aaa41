//! Pages from templates (minijinja, HTML-escaping every value: a task name, a log line or a SQL
//! statement can never become markup), and the assets they use, all compiled into the binary.

use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

const TEMPLATES: [(&str, &str); 7] = [
    ("base.html", include_str!("templates/base.html")),
    ("dags.html", include_str!("templates/dags.html")),
    ("grid.html", include_str!("templates/grid.html")),
    ("task.html", include_str!("templates/task.html")),
    ("graph.html", include_str!("templates/graph.html")),
    ("partitions.html", include_str!("templates/partitions.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// The stylesheet and the script, served from `/static/`.
pub(super) const ASSETS: [(&str, &str, &str); 2] = [
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| crate::html::environment(&TEMPLATES));

/// A page: `template` rendered with `ctx`, or an error page saying why it could not be.
pub(super) fn page(template: &str, ctx: &impl Serialize) -> Response {
    match crate::html::render(&ENV, template, ctx) {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(e) => {
            tracing::error!("the UI page {template} failed to render: {e:#}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page could not be drawn (a bug in windsock; the daemon's log has the details)",
            )
        }
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// An error page with one sentence.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    let ctx = serde_json::json!({ "status": status.as_u16(), "message": message });
    let html = crate::html::render(&ENV, "error.html", &ctx)
        .unwrap_or_else(|_| minijinja::HtmlEscape(message).to_string());
    html_response(status, html)
}
