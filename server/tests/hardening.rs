//! What a hostile or careless client meets: security headers on every answer, and
//! per-viewer answers that no cache may keep.

mod common;

use axum::http::StatusCode;
use common::*;

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_answer_forbids_sniffing_and_limits_the_referrer() {
    let app = spawn_app().await;
    app.thread("t").await;
    for path in [
        "/",
        "/t/t",
        "/api/threads/t",
        "/api/threads/t/form",
        "/no/such/page",
        "/health",
        "/embed.js",
    ] {
        let r = app.get(path).await;
        assert_eq!(
            header(&r, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header(&r, "referrer-policy"),
            Some("strict-origin-when-cross-origin"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn pages_and_json_that_differ_per_viewer_are_never_stored_but_scripts_are_cached() {
    let app = spawn_app().await;
    app.thread("t").await;
    for path in ["/", "/t/t", "/api/threads/t", "/login"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            header(&r, "cache-control"),
            Some("private, no-store"),
            "{path}"
        );
    }
    // The form token says no-store itself; the scripts keep their own long caching.
    assert_eq!(
        header(&app.get("/api/threads/t/form").await, "cache-control"),
        Some("no-store")
    );
    let script = app.get("/embed.js").await;
    assert!(
        header(&script, "cache-control").is_some_and(|c| c.starts_with("public")),
        "{:?}",
        header(&script, "cache-control")
    );
}
