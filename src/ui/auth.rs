//! The UI's gates: the Host a request names (the UI's own address, `localhost`, or a name given
//! with `--allowed-host`: a page of another site whose name was made to point at the UI's
//! address — DNS rebinding — names its own host and is refused); the access token (when one is
//! set: always on an address other machines can reach) on every request; and for
//! state-changing POSTs the anti-forgery header and the UI's own origin, so that a page on
//! another site cannot make a logged-in browser act.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::Ui;

/// The cookie that carries the access token once `/?token=…` has been opened.
const COOKIE: &str = "windsock_ui_token";
/// The header a POST carries with the page's anti-forgery value.
pub(crate) const CSRF_HEADER: &str = "x-windsock-csrf";

/// Compares without stopping at the first difference, so timing says nothing about the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn refused(status: StatusCode, why: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>windsock</title><p>{}</p>",
        minijinja::HtmlEscape(why)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Whether a state-changing request comes from the UI's own pages.
fn same_origin(headers: &HeaderMap) -> bool {
    // Browsers say where a request comes from; a cross-site one is refused whatever it carries.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            origin_host.is_some() && origin_host == host
        }
    }
}

/// Whether the UI answers to `host` (a Host header's value, port included or not) when it
/// listens on `bind`: `localhost`, the address itself (any loopback address when it listens on
/// loopback, any address when on all of them), or one of `allowed` (lowercase names).
pub(super) fn host_allowed(host: &str, bind: Option<SocketAddr>, allowed: &[String]) -> bool {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || allowed.contains(&name) {
        return true;
    }
    match (name.parse::<IpAddr>(), bind) {
        (Ok(ip), Some(bind)) => {
            let at = bind.ip();
            ip == at || at.is_unspecified() || (at.is_loopback() && ip.is_loopback())
        }
        (Ok(_), None) => true,
        (Err(_), _) => false,
    }
}

pub(super) async fn guard(State(ui): State<Arc<Ui>>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !host_allowed(host, ui.bind, &ui.allowed_hosts) {
            return refused(
                StatusCode::FORBIDDEN,
                &format!(
                    "Refused: this windsock UI answers to the address it listens on and to localhost, not to `{host}` (start it with --allowed-host {} if that name is yours, such as a proxy's).",
                    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
                ),
            );
        }
    }
    if let Some(token) = &ui.token {
        let headers = req.headers();
        let carried = bearer(headers).or_else(|| cookie(headers, COOKIE));
        if !carried.is_some_and(|t| same(t, token)) {
            // Opening the UI once with `?token=…` sets the cookie and drops it from the address.
            let query_token = req.uri().query().and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == "token")
                    .map(|(_, v)| v.to_string())
            });
            return match query_token {
                Some(t) if req.method() == Method::GET && same(&t, token) => {
                    let path = req.uri().path().to_string();
                    let mut resp = Redirect::to(&path).into_response();
                    let cookie = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
                    if let Ok(v) = cookie.parse() {
                        resp.headers_mut().insert(header::SET_COOKIE, v);
                    }
                    resp
                }
                _ => refused(
                    StatusCode::UNAUTHORIZED,
                    "This windsock UI needs its access token: open it once as /?token=<the token>, or send `Authorization: Bearer <the token>`.",
                ),
            };
        }
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let headers = req.headers();
        let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !csrf.is_some_and(|c| same(c, &ui.csrf)) || !same_origin(headers) {
            return refused(
                StatusCode::FORBIDDEN,
                "Refused: actions must come from the windsock UI's own pages (the anti-forgery header is missing or wrong, or the request came from another site).",
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly_and_cookies_are_found() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; windsock_ui_token=s3cret".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("s3cret"));
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
    }

    #[test]
    fn only_the_uis_own_hosts_are_answered() {
        let lo: Option<SocketAddr> = Some("127.0.0.1:8080".parse().unwrap());
        let allowed = vec!["windsock.internal".to_string()];
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST.",
            "[::1]:8080",
            "windsock.internal",
            "Windsock.Internal:443",
        ] {
            assert!(host_allowed(ok, lo, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.5:8080",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!host_allowed(bad, lo, &allowed), "{bad}");
        }
        let any: Option<SocketAddr> = Some("0.0.0.0:8080".parse().unwrap());
        assert!(host_allowed("10.0.0.5:8080", any, &[]));
        assert!(!host_allowed("evil.example", any, &[]));
        let one: Option<SocketAddr> = Some("10.0.0.5:8080".parse().unwrap());
        assert!(host_allowed("10.0.0.5:8080", one, &[]));
        assert!(!host_allowed("10.0.0.6:8080", one, &[]));
    }
}
