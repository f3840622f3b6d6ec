//! `POST /api/threads/{key}/comments`: every row of the contract's posting table.

mod common;

use axum::http::{StatusCode, header};
use common::*;
use serde_json::json;
use server::ThreadSpec;
use server::config::Config;

const PATH: &str = "/api/threads/t1/comments";

#[tokio::test]
async fn a_valid_comment_is_published_with_201_and_its_html() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let r = app
        .post_comment(
            "t1",
            json!({"name": "Ann", "email": "ann@example.org", "url": "https://ann.example",
                   "title": "Hello", "body": "Some **bold** text"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["action"], "post");
    assert_eq!(v["thread"], "t1");
    assert_eq!(v["threaded"], true);
    assert_eq!(v["awaiting_moderation"], false);
    assert_eq!(v["errors"], json!({}));
    assert!(v["comment_id"].as_i64().unwrap() > 0);
    assert!(
        v.get("is_moderated").is_none(),
        "staff-only field sent to a reader"
    );
    let html = v["html"].as_str().unwrap();
    assert!(html.contains("<strong>bold</strong>"), "{html}");
    assert!(html.contains("Hello"), "{html}");
    assert!(
        !r.text.contains("ann@example.org"),
        "email leaked: {}",
        r.text
    );

    let comments = app.comments("t1").await;
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0]["author_name"], "Ann");
    assert_eq!(comments[0]["author_url"], "https://ann.example/");
    assert_eq!(comments[0]["title"], "Hello");
    assert!(comments[0].get("status").is_none());
    assert!(comments[0].get("moderation").is_none());
}

#[tokio::test]
async fn a_preview_returns_the_rendering_and_stores_nothing() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let r = app
        .post_json(
            PATH,
            &json!({"name": "Ann", "body": "*hi* <b>x</b>", "preview": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["action"], "preview");
    assert_eq!(v["success"], true);
    let html = v["html"].as_str().unwrap();
    assert!(html.contains("<em>hi</em> &lt;b&gt;x&lt;/b&gt;"), "{html}");
    assert_eq!(v["comment_id"], json!(null));
    assert_eq!(app.count_rows("comments").await, 0);

    // The preview's body is byte for byte what posting stores.
    let id = app.publish("t1", "Ann", "*hi* <b>x</b>", None).await;
    let stored = &app.comments("t1").await[0];
    assert_eq!(stored["id"], id);
    assert!(html.contains(stored["body_html"].as_str().unwrap()));
}

#[tokio::test]
async fn invalid_fields_get_422_with_errors_per_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let r = app
        .post_comment(
            "t1",
            json!({"name": "", "email": "nope", "url": "javascript:alert(1)", "body": "  "}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let v = r.json();
    assert_eq!(v["success"], false);
    for field in ["name", "email", "url", "body"] {
        assert!(v["errors"][field].is_string(), "no error for {field}: {v}");
    }
    assert_eq!(app.count_rows("comments").await, 0);
}

#[tokio::test]
async fn the_body_limit_counts_characters() {
    let mut config = Config::default();
    config.comments.max_length = 10;
    let app = spawn_app_with(config).await;
    app.thread("t1").await;
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "ééééééééééé"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.json()["errors"]["body"]
            .as_str()
            .unwrap()
            .contains("at most 10")
    );
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "éééééééééé"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_name_over_100_characters_is_refused() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let r = app
        .post_comment("t1", json!({"name": "n".repeat(101), "body": "hi"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["errors"]["name"].is_string());
}

#[tokio::test]
async fn nul_characters_are_refused() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "a\u{0}b"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["errors"]["body"].as_str().unwrap().contains("NUL"));
    assert_eq!(app.count_rows("comments").await, 0);
}

#[tokio::test]
async fn invalid_utf8_is_refused_with_400() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let mut body = br#"{"name":"A","body":"x"#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(br#""}"#);
    let r = app.post_raw(PATH, "application/json", body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["errors"]["__all__"]
            .as_str()
            .unwrap()
            .contains("UTF-8")
    );
    assert_eq!(app.count_rows("comments").await, 0);
}

#[tokio::test]
async fn malformed_json_is_refused_with_400() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let r = app.post_raw(PATH, "application/json", "{\"name\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["success"], false);
}

#[tokio::test]
async fn bodies_over_64_kib_get_413_before_parsing() {
    let app = spawn_app().await;
    app.thread("t1").await;
    // Not even JSON: it must be refused for its size alone.
    let r = app
        .post_raw(PATH, "application/json", vec![b'x'; 65537])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    // Exactly at the limit it is read (and then refused for what it is).
    let r = app
        .post_raw(PATH, "application/json", vec![b'x'; 65536])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count_rows("comments").await, 0);
}

#[tokio::test]
async fn the_parent_must_exist_on_the_same_thread() {
    let app = spawn_app().await;
    app.thread("t1").await;
    app.thread("t2").await;
    let other = app.publish("t2", "B", "elsewhere", None).await;
    for parent in [other, 999_999] {
        let r = app
            .post_comment(
                "t1",
                json!({"name": "A", "body": "hi", "parent_id": parent}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert!(r.json()["errors"]["parent_id"].is_string());
    }
    assert_eq!(app.count_rows("comments").await, 1);
}

#[tokio::test]
async fn the_parent_must_be_published() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let id = app.publish("t1", "A", "soon hidden", None).await;
    sqlx::query("UPDATE comments SET status = 'held' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    let r = app
        .post_comment("t1", json!({"name": "B", "body": "reply", "parent_id": id}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
}

#[tokio::test]
async fn a_missing_bad_or_foreign_token_gets_400() {
    let app = spawn_app().await;
    app.thread("t1").await;
    app.thread("t2").await;
    let foreign = app.token("t2").await;
    let good = app.token("t1").await;
    let tampered = format!("{}x", &good[..good.len() - 1]);
    for token in [
        None,
        Some("garbage".to_owned()),
        Some(tampered),
        Some(foreign),
    ] {
        let r = app
            .post_json(
                PATH,
                &json!({"name": "A", "body": "hi", "form_token": token}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{token:?}: {}", r.text);
        let v = r.json();
        assert_eq!(v["success"], false);
        assert!(v["errors"]["form"].is_string(), "{v}");
    }
    assert_eq!(app.count_rows("comments").await, 0);
}

#[tokio::test]
async fn an_expired_token_gets_400() {
    let mut config = Config::default();
    config.comments.form_token_minutes = 0;
    let app = spawn_app_with(config).await;
    app.thread("t1").await;
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "hi"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["errors"]["form"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn a_token_is_accepted_once() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let token = app.token("t1").await;
    let body = json!({"name": "A", "body": "hi", "form_token": token});
    assert_eq!(app.post_json(PATH, &body).await.status, StatusCode::CREATED);
    let r = app.post_json(PATH, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["errors"]["form"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    assert_eq!(app.count_rows("comments").await, 1);
}

/// Many posts with one token at once: exactly one is stored, and the others see what a
/// reuse sees. Nothing looks the token up before the comment's INSERT spends it: that
/// statement lets only one through (with its unique violation taken for an internal error,
/// this fails), on PostgreSQL among concurrent transactions, on SQLite among the writer's
/// batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_posted_many_times_at_once_is_accepted_once() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let token = app.token("t1").await;
    let posts = (0..8).map(|i| {
        let body = json!({"name": "A", "body": format!("copy {i}"), "form_token": token});
        let app = &app;
        async move { app.post_json(PATH, &body).await }
    });
    let answers = futures_util::future::join_all(posts).await;
    let created = answers
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        created,
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(
            r.json()["errors"]["form"]
                .as_str()
                .unwrap()
                .contains("already used"),
            "{}",
            r.text
        );
    }
    assert_eq!(app.count_rows("comments").await, 1);
}

#[tokio::test]
async fn a_token_survives_a_validation_error() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let token = app.token("t1").await;
    let r = app
        .post_json(
            PATH,
            &json!({"name": "", "body": "hi", "form_token": token}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .post_json(
            PATH,
            &json!({"name": "A", "body": "hi", "form_token": token}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_filled_honeypot_gets_400_and_nothing_is_published() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let r = app
        .post_comment(
            "t1",
            json!({"name": "Bot", "body": "buy now", "honeypot": "http://spam"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["errors"]["form"].is_string());
    assert!(app.comments("t1").await.is_empty());
}

#[tokio::test]
async fn a_thread_with_comments_disabled_answers_403_with_the_reason() {
    let app = spawn_app().await;
    app.thread_with(ThreadSpec {
        key: "t1".into(),
        comments_enabled: Some(false),
        ..Default::default()
    })
    .await;
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "hi"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let v = r.json();
    assert_eq!(v["success"], false);
    assert_eq!(
        v["errors"]["__all__"], "Comments are disabled for this thread.",
        "{v}"
    );
    assert_eq!(app.count_rows("comments").await, 0);
    let thread = app.get("/api/threads/t1").await.json();
    assert_eq!(thread["thread"]["comments_open"], false);
}

#[tokio::test]
async fn posts_to_a_closed_thread_write_nothing_until_they_pass_the_limit_and_the_token() {
    let mut config = Config::default();
    config.limits.posts_per_minute = 3;
    let app = spawn_app_with(config).await;
    app.thread_with(ThreadSpec {
        key: "t1".into(),
        comments_enabled: Some(false),
        ..Default::default()
    })
    .await;
    // Empty bodies and forged tokens: told the thread is closed, nothing logged.
    for body in [
        json!({}),
        json!({"name": "A", "body": "hi", "form_token": "forged"}),
    ] {
        let r = app.post_json("/api/threads/t1/comments", &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
    assert_eq!(app.count_rows("audit_log").await, 0);
    // A real form is a real attempt: logged once.
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "hi"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(app.count_rows("audit_log").await, 1);
    // Past the limit: 429 before anything else, and still nothing more is written.
    for _ in 0..5 {
        let r = app
            .post_comment("t1", json!({"name": "A", "body": "hi"}))
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    }
    assert_eq!(app.count_rows("audit_log").await, 1);
    assert_eq!(app.count_rows("comments").await, 0);
}

#[tokio::test]
async fn the_global_switch_closes_every_thread() {
    let mut config = Config::default();
    config.comments.enabled = false;
    let app = spawn_app_with(config).await;
    app.thread("t1").await;
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "hi"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["errors"]["__all__"]
            .as_str()
            .unwrap()
            .contains("closed")
    );
}

#[tokio::test]
async fn too_many_posts_get_429_with_retry_after() {
    let mut config = Config::default();
    config.limits.posts_per_minute = 2;
    let app = spawn_app_with(config).await;
    app.thread("t1").await;
    app.publish("t1", "A", "one", None).await;
    app.publish("t1", "A", "two", None).await;
    let r = app
        .post_comment("t1", json!({"name": "A", "body": "three"}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(app.count_rows("comments").await, 2);
}

#[tokio::test]
async fn an_unknown_thread_gets_404_unless_threads_are_auto_created() {
    let app = spawn_app().await;
    let r = app
        .post_json(
            "/api/threads/nope/comments",
            &json!({"name": "A", "body": "hi"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/threads/nope/form").await.status,
        StatusCode::NOT_FOUND
    );

    let mut config = Config::default();
    config.comments.auto_create_threads = true;
    let app = spawn_app_with(config).await;
    // Reading an unknown thread shows it empty and open, but stores nothing.
    for path in ["/api/threads/fresh", "/t/fresh", "/api/threads/fresh/form"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    let t = app.get("/api/threads/fresh").await.json();
    assert_eq!(t["thread"]["comments_open"], true);
    assert_eq!(t["comments"], json!([]));
    assert_eq!(app.count_rows("threads").await, 0, "a GET created a thread");
    // The first post creates it.
    let r = app
        .post_comment("fresh", json!({"name": "A", "body": "hi"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(app.comments("fresh").await.len(), 1);
    assert_eq!(app.count_rows("threads").await, 1);
    // The live protocol's staff room is never a thread, however it is asked for.
    let r = app
        .post_json(
            "/api/threads/moderation/comments",
            &json!({"name": "A", "body": "hi"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/threads/moderation").await.status,
        StatusCode::NOT_FOUND
    );
    let err = app
        .engine
        .set_thread(&ThreadSpec {
            key: "moderation".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert_eq!(app.count_rows("threads").await, 1);
}

#[tokio::test]
async fn a_form_encoded_post_is_redirected_back_to_the_comment() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let token = app.token("t1").await;
    let form = serde_urlencoded::to_string([
        ("name", "No Script"),
        ("email", ""),
        ("url", ""),
        ("title", ""),
        ("body", "Plain & simple"),
        ("parent_id", ""),
        ("honeypot", ""),
        ("form_token", token.as_str()),
    ])
    .unwrap();
    let r = app
        .post_raw(PATH, "application/x-www-form-urlencoded", form)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let location = r.headers[header::LOCATION].to_str().unwrap();
    let comments = app.comments("t1").await;
    assert_eq!(comments.len(), 1);
    assert_eq!(location, format!("/t/t1#c{}", comments[0]["id"]));
    assert_eq!(comments[0]["body_html"], "<p>Plain &amp; simple</p>\n");
}

#[tokio::test]
async fn a_form_encoded_error_is_redirected_to_the_form_with_its_message() {
    let app = spawn_app().await;
    app.thread("t1").await;
    let form = serde_urlencoded::to_string([("name", "A"), ("body", "hi")]).unwrap();
    let r = app
        .post_raw(PATH, "application/x-www-form-urlencoded", form)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = r.headers[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("/t/t1?error="), "{location}");
    assert!(location.ends_with("#comment-form"), "{location}");
    assert_eq!(app.count_rows("comments").await, 0);
}

/// A comment's id is never one used before, even when the newest row is gone (removed by
/// hand); a reply's path is its parent's followed by its own id; and a thread's live events
/// keep counting past events that were pruned, so a cursor never names two events.
#[tokio::test]
async fn ids_paths_and_event_numbers_only_ever_grow() {
    let app = spawn_app().await;
    app.thread("ids").await;
    let last_event = |r: Reply| r.json()["last_event_id"].as_i64().unwrap();
    // A path is the zero-padded ids from the root down (docs/architecture.md).
    let segment = |id: i64| format!("{id:010}");
    let a = app.publish("ids", "Ann", "First of all", None).await;
    let b = app.publish("ids", "Ben", "A reply to that", Some(a)).await;
    let path = |id: i64| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT path FROM comments WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert_eq!(path(a).await, segment(a));
    assert_eq!(path(b).await, format!("{}{}", path(a).await, segment(b)));
    let events_before = last_event(app.get("/api/threads/ids").await);
    assert!(
        events_before >= 2,
        "two comments, two events: {events_before}"
    );

    for sql in ["DELETE FROM comments WHERE id = $1", "DELETE FROM events"] {
        sqlx::query(sql).bind(b).execute(&app.db).await.unwrap();
    }
    let c = app.publish("ids", "Cy", "After the removal", Some(a)).await;
    assert!(c > b, "id {b} was given again as {c}");
    assert_eq!(path(c).await, format!("{}{}", path(a).await, segment(c)));
    let events_after = last_event(app.get("/api/threads/ids").await);
    assert_eq!(events_after, events_before + 1);
}

/// The first comment on a page creates its thread (`auto_create_threads`). Many such first
/// comments at once, beside comments on a thread that exists, are all stored: creating a
/// thread waits for the writer like every other write (it once read first and then failed
/// at once with "not answering" when another write committed in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_comments_on_new_pages_are_stored_while_others_post() {
    let config = "[comments]\nauto_create_threads = true\n[limits]\nposts_per_minute = 0\n";
    let app = spawn_app_with(Config::parse(config).unwrap()).await;
    app.thread("busy").await;
    let posts = (0..24).map(|i| {
        let key = if i % 2 == 0 {
            format!("new-page-{i}")
        } else {
            "busy".to_owned()
        };
        let app = &app;
        async move {
            let r = app
                .post_comment(&key, json!({"name": "Ann", "body": format!("Comment {i}")}))
                .await;
            (key, r)
        }
    });
    for (key, r) in futures_util::future::join_all(posts).await {
        assert_eq!(r.status, StatusCode::CREATED, "{key}: {}", r.text);
    }
    assert_eq!(app.count_rows("comments").await, 24);
    assert_eq!(app.count_rows("threads").await, 13);
}
