//! The anonymous view of a thread is kept in memory between changes (`http/cache.rs`):
//! what a reader observes of it.

mod common;

use axum::http::{StatusCode, header};
use common::*;
use serde_json::json;

fn etag(r: &Reply) -> String {
    r.headers
        .get(header::ETAG)
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_owned()
}

fn nonce(r: &Reply) -> String {
    let policy = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy")
        .to_owned()
}

/// The form token the page's no-JS form carries.
fn page_token(html: &str) -> String {
    let at = html
        .find("name=\"form_token\"")
        .expect("a form token input");
    let tag_start = html[..at].rfind('<').unwrap();
    let tag = &html[tag_start..at + html[at..].find('>').unwrap()];
    let value = tag
        .split("value=\"")
        .nth(1)
        .expect("a value")
        .split('"')
        .next();
    value.unwrap().to_owned()
}

async fn post_with(app: &TestApp, key: &str, token: &str, body: &str) -> Reply {
    app.post_json(
        &format!("/api/threads/{key}/comments"),
        &json!({"name": "Ann", "body": body, "form_token": token}),
    )
    .await
}

#[tokio::test]
async fn every_reader_gets_the_kept_page_with_their_own_nonce_and_token() {
    let app = spawn_app().await;
    app.thread("c").await;
    app.publish("c", "Ann", "First words", None).await;

    let a = app.get("/t/c").await;
    let b = app.get("/t/c").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(b.status, StatusCode::OK);
    assert!(a.text.contains("First words") && b.text.contains("First words"));
    assert_eq!(etag(&a), etag(&b), "one version, one tag");
    assert_eq!(
        a.headers[header::CACHE_CONTROL],
        "private, no-cache",
        "a browser keeps it but asks again"
    );
    // A nonce anyone could read off a kept page would let an injected script run.
    let (na, nb) = (nonce(&a), nonce(&b));
    assert_ne!(na, nb);
    assert!(b.text.contains(&nb) && !b.text.contains(&na));
    // Each response's token is its own and works once.
    let (ta, tb) = (page_token(&a.text), page_token(&b.text));
    assert_ne!(ta, tb);
    assert_eq!(
        post_with(&app, "c", &tb, "From page b").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        post_with(&app, "c", &ta, "From page a").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        post_with(&app, "c", &ta, "Again").await.status,
        StatusCode::BAD_REQUEST,
        "a spliced token is still single-use"
    );
}

#[tokio::test]
async fn a_browser_revalidating_gets_304_until_the_thread_changes() {
    let app = spawn_app().await;
    app.thread("c").await;
    let id = app.publish("c", "Ann", "Soon removed", None).await;
    for path in ["/t/c", "/api/threads/c", "/embed/t/c"] {
        let first = app.get(path).await;
        assert_eq!(first.status, StatusCode::OK, "{path}");
        let tag = etag(&first);
        let again = app
            .send_with("GET", path, &[("if-none-match", &tag)], None)
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.text.is_empty());
        assert!(
            !again.headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "the kept page's policy (its nonce) stays"
        );
    }
    let page = app.get("/t/c").await;
    let json = app.get("/api/threads/c").await;

    // A new comment: a new version, served at once.
    app.publish("c", "Bob", "Fresh reply", Some(id)).await;
    for (path, before) in [("/t/c", &page), ("/api/threads/c", &json)] {
        let r = app
            .send_with("GET", path, &[("if-none-match", &etag(before))], None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.text.contains("Fresh reply"), "{path}");
        assert_ne!(etag(&r), etag(before));
    }

    // Removed by staff: gone from the kept views at once.
    let staff = app.sign_in_as("mia", true).await;
    let r = app
        .send_with(
            "POST",
            &format!("/api/comments/{id}/moderate"),
            &[("cookie", &staff)],
            Some(&json!({"action": "remove"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for path in ["/t/c", "/api/threads/c", "/embed/t/c"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            !r.text.contains("Soon removed"),
            "{path} shows a removed comment"
        );
    }
}

#[tokio::test]
async fn staff_get_their_own_view_never_the_kept_one() {
    let app = spawn_app().await;
    app.thread("c").await;
    app.get("/t/c").await;
    let staff = app.sign_in_as("mia", true).await;
    let r = app
        .send_with("GET", "/t/c", &[("cookie", &staff)], None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.headers.contains_key(header::ETAG),
        "a personal view is not kept"
    );
    assert_eq!(r.headers[header::CACHE_CONTROL], "private, no-store");
    let reader = app.get("/t/c").await;
    assert!(reader.headers.contains_key(header::ETAG));
}

#[tokio::test]
async fn a_thread_whose_settings_change_is_rendered_again() {
    let app = spawn_app().await;
    app.thread("c").await;
    let open = app.get("/t/c").await;
    assert!(open.text.contains("name=\"form_token\""));
    // Closed from the command line: no event, but the thread row changes.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.engine
        .set_thread(&server::ThreadSpec {
            key: "c".into(),
            comments_enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let closed = app.get("/t/c").await;
    assert_ne!(etag(&open), etag(&closed));
    assert!(
        !closed.text.contains("name=\"form_token\""),
        "closed: no form"
    );
}
