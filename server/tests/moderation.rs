//! Moderation over HTTP: every outcome of the pipeline, staff access, actions, the audit log.

mod common;

use axum::http::{StatusCode, header};
use common::*;
use serde_json::{Value, json};
use server::config::Config;
use server::{ThreadSpec, now_ms};

const DAY: i64 = 86_400_000;

async fn app_with(toml: &str) -> TestApp {
    spawn_app_with(Config::parse(toml).unwrap()).await
}

async fn staff_get(app: &TestApp, cookie: &str, path: &str) -> Reply {
    app.send_with("GET", path, &[("cookie", cookie)], None)
        .await
}

async fn act(app: &TestApp, cookie: &str, id: i64, action: &str) -> Reply {
    app.send_with(
        "POST",
        &format!("/api/comments/{id}/moderate"),
        &[("cookie", cookie)],
        Some(&json!({ "action": action })),
    )
    .await
}

fn ids(v: &Value) -> Vec<i64> {
    v["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_held_comment_answers_202_and_only_staff_see_it_with_its_reason() {
    let app = app_with("[moderation]\npre_moderation = \"all\"\n").await;
    app.thread("t").await;
    let r = app
        .post_comment(
            "t",
            json!({"name": "Ann", "email": "ann@example.org", "body": "Wait for me"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let v = r.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["awaiting_moderation"], true);
    let id = v["comment_id"].as_i64().unwrap();

    // Readers: not in the JSON, not in the page.
    assert!(app.comments("t").await.is_empty());
    let page = app.get("/t/t").await;
    assert!(!page.text.contains("Wait for me"));
    assert_eq!(
        app.get("/api/threads/t").await.json()["thread"]["comment_count"],
        0
    );

    // Staff: inline, with status and the moderator's reason.
    let cookie = app.sign_in_as("mod", true).await;
    let v = staff_get(&app, &cookie, "/api/threads/t").await.json();
    let c = &v["comments"][0];
    assert_eq!(c["id"], id);
    assert_eq!(c["status"], "held");
    assert_eq!(c["moderation"]["flagged"], true);
    assert!(
        c["moderation"]["reason"]
            .as_str()
            .unwrap()
            .contains("reviewed")
    );
    let page = staff_get(&app, &cookie, "/t/t").await;
    assert!(page.text.contains("Wait for me"));
    assert!(page.text.contains("(moderated)"), "staff flag in the page");
    // Still no email anywhere, even for staff pages.
    assert!(!page.text.contains("ann@example.org"));
}

#[tokio::test]
async fn too_many_links_are_held_with_the_reason() {
    let app = app_with("[moderation]\nmax_links = 1\n").await;
    app.thread("t").await;
    let r = app
        .post_comment(
            "t",
            json!({"name": "A", "body": "[a](https://a.org) and [b](https://b.org)"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let cookie = app.sign_in_as("mod", true).await;
    let q = staff_get(&app, &cookie, "/api/moderation/queue?status=held")
        .await
        .json();
    assert_eq!(
        q["comments"][0]["moderation"]["reason"],
        "Too many links (2 > 1)."
    );
    assert_eq!(q["comments"][0]["thread"], "t");
}

#[tokio::test]
async fn kind_options_close_hold_and_disable() {
    let app = app_with(
        "[moderation.kinds.post]\nenable_field = true\nclose_after_days = 30\nmoderate_after_days = 7\n",
    )
    .await;
    let thread = |key: &str, age_days: i64, enabled: bool| ThreadSpec {
        key: key.into(),
        kind: Some("post".into()),
        comments_enabled: Some(enabled),
        published_at: Some(now_ms() - age_days * DAY),
        ..Default::default()
    };
    app.thread_with(thread("fresh", 1, true)).await;
    app.thread_with(thread("week", 8, true)).await;
    app.thread_with(thread("old", 31, true)).await;
    app.thread_with(thread("off", 1, false)).await;
    app.thread_with(thread("future", -3, true)).await;
    let body = json!({"name": "A", "body": "hi"});

    assert_eq!(
        app.post_comment("fresh", body.clone()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.post_comment("week", body.clone()).await.status,
        StatusCode::ACCEPTED
    );
    let r = app.post_comment("old", body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["errors"]["__all__"], "Comments are closed.");
    let r = app.post_comment("off", body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["errors"]["__all__"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    let r = app.post_comment("future", body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["errors"]["__all__"]
            .as_str()
            .unwrap()
            .contains("future")
    );
    // Closed threads say so to host pages too.
    assert_eq!(
        app.get("/api/threads/old").await.json()["thread"]["comments_open"],
        false
    );
    assert_eq!(
        app.get("/api/threads/fresh").await.json()["thread"]["comments_open"],
        true
    );

    // A thread of an unregistered kind uses the default moderator: age does not matter.
    app.thread_with(ThreadSpec {
        key: "page".into(),
        kind: Some("page".into()),
        published_at: Some(now_ms() - 400 * DAY),
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.post_comment("page", body).await.status,
        StatusCode::CREATED
    );

    // Rejections are recorded with the moderator that decided.
    let cookie = app.sign_in_as("mod", true).await;
    let audit = staff_get(&app, &cookie, "/api/moderation/audit")
        .await
        .json();
    let actors: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(actors.contains(&"moderator:close_after"), "{actors:?}");
    assert!(actors.contains(&"moderator:enable_field"), "{actors:?}");
}

#[tokio::test]
async fn first_comment_pre_moderation_holds_until_one_is_approved() {
    let app = app_with("[moderation]\npre_moderation = \"first\"\n").await;
    app.thread("t").await;
    let cookie = app.sign_in_as("mod", true).await;
    let post =
        |email: Option<&str>, name: &str| json!({"name": name, "email": email, "body": "hello"});
    let r = app.post_comment("t", post(Some("a@x.org"), "Ann")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let first = r.json()["comment_id"].as_i64().unwrap();
    // Still unknown: held again.
    assert_eq!(
        app.post_comment("t", post(Some("a@x.org"), "Ann"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        act(&app, &cookie, first, "approve").await.status,
        StatusCode::OK
    );
    // Known by email now, whatever the name.
    assert_eq!(
        app.post_comment("t", post(Some("a@x.org"), "Annie"))
            .await
            .status,
        StatusCode::CREATED
    );
    // A name alone is anyone's: without an email every comment is held, and the answer is
    // the same for an approved name as for a new one.
    let answer = |r: common::Reply| {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let mut v = r.json();
        for own in ["comment_id", "html", "comment"] {
            v[own] = json!(null);
        }
        v
    };
    let known = answer(app.post_comment("t", post(None, "Ann")).await);
    let unknown = answer(app.post_comment("t", post(None, "Zed")).await);
    assert_eq!(known, unknown);
}

#[tokio::test]
async fn the_switches_close_a_thread_under_every_moderator_configuration() {
    for config in [
        "[moderation]\ndefault = \"none\"\n",
        "[moderation.kinds.page]\nenable_field = false\n",
        "",
    ] {
        let app = app_with(config).await;
        app.thread_with(ThreadSpec {
            key: "off".into(),
            comments_enabled: Some(false),
            ..Default::default()
        })
        .await;
        let r = app
            .post_comment("off", json!({"name": "A", "body": "hello"}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{config:?}: {}", r.text);
        let t = app.get("/api/threads/off").await.json();
        assert_eq!(t["thread"]["comments_open"], false, "{config:?}");
    }
    let app = app_with("[comments]\nenabled = false\n[moderation]\ndefault = \"none\"\n").await;
    app.thread("on").await;
    let r = app
        .post_comment("on", json!({"name": "A", "body": "hello"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(app.count_rows("comments").await, 0);
}

#[tokio::test]
async fn the_null_moderator_publishes_everything() {
    let app =
        app_with("[moderation]\ndefault = \"none\"\nmax_links = 0\npre_moderation = \"all\"\n")
            .await;
    app.thread("t").await;
    let r = app
        .post_comment("t", json!({"name": "A", "body": "[a](https://a.org)"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn staff_endpoints_need_staff() {
    let app = spawn_app().await;
    app.thread("t").await;
    let id = app.publish("t", "A", "hi", None).await;
    // Anonymous: 401.
    assert_eq!(
        app.get("/api/moderation/queue").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post_json(
            &format!("/api/comments/{id}/moderate"),
            &json!({"action": "remove"})
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // Signed in, not staff: 403.
    let user = app.sign_in_as("reader", false).await;
    assert_eq!(
        staff_get(&app, &user, "/api/moderation/queue").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        act(&app, &user, id, "remove").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.comments("t").await.len(), 1, "nothing changed");
    // Staff: 200.
    let staff = app.sign_in_as("mod", true).await;
    assert_eq!(
        staff_get(&app, &staff, "/api/moderation/queue")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(act(&app, &staff, id, "remove").await.status, StatusCode::OK);
    assert!(app.comments("t").await.is_empty());
}

#[tokio::test]
async fn an_api_key_authenticates_staff() {
    let app = spawn_app().await;
    app.thread("t").await;
    let operator = server::Staff::operator();
    app.engine
        .add_user(&operator, "bot", "password123", true)
        .await
        .unwrap();
    let key = app
        .engine
        .create_api_key(&operator, "bot", "ci")
        .await
        .unwrap();
    let bearer = format!("Bearer {key}");
    let r = app
        .send_with(
            "GET",
            "/api/moderation/queue?status=all",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .send_with(
            "GET",
            "/api/moderation/queue",
            &[("authorization", "Bearer mod_wrong")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_revoked_key_stops_working_and_a_new_password_signs_the_user_out_everywhere() {
    let app = spawn_app().await;
    let operator = server::Staff::operator();
    app.engine
        .add_user(&operator, "bot", "password123", true)
        .await
        .unwrap();
    let ci = app
        .engine
        .create_api_key(&operator, "bot", "ci")
        .await
        .unwrap();
    let cron = app
        .engine
        .create_api_key(&operator, "bot", "cron")
        .await
        .unwrap();
    let queue = |key: String| {
        let app = &app;
        async move {
            app.send_with(
                "GET",
                "/api/moderation/queue",
                &[("authorization", &format!("Bearer {key}"))],
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(
        app.engine
            .revoke_api_keys(&operator, "bot", Some("ci"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(queue(ci.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        queue(cron.clone()).await,
        StatusCode::OK,
        "other keys keep working"
    );

    // Two browsers signed in; a new password ends both sessions.
    let first = app.sign_in_as("mod", true).await;
    let r = app
        .post_json(
            "/api/session",
            &json!({"username": "mod", "password": "password123"}),
        )
        .await;
    let second = session_cookie(&r).unwrap();
    let who = |cookie: String| {
        let app = &app;
        async move {
            app.send_with("GET", "/api/session", &[("cookie", &cookie)], None)
                .await
                .json()["name"]
                .clone()
        }
    };
    assert_eq!(who(first.clone()).await, "mod");
    let ended = app
        .engine
        .set_password(&operator, "mod", "a-new-password")
        .await
        .unwrap();
    assert_eq!(ended, 2);
    assert_eq!(who(first).await, Value::Null);
    assert_eq!(who(second).await, Value::Null);
    let old = app
        .post_json(
            "/api/session",
            &json!({"username": "mod", "password": "password123"}),
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = app
        .post_json(
            "/api/session",
            &json!({"username": "mod", "password": "a-new-password"}),
        )
        .await;
    assert_eq!(new.status, StatusCode::OK);
    assert_eq!(new.json()["staff"], true, "rights are kept");
    // The bot's sessions were not touched by mod's new password; its other key still works.
    assert_eq!(queue(cron).await, StatusCode::OK);
}

#[tokio::test]
async fn an_action_is_idempotent_and_audited_once() {
    let app = app_with("[moderation]\npre_moderation = \"all\"\n").await;
    app.thread("t").await;
    let id = app
        .post_comment("t", json!({"name": "A", "body": "hi"}))
        .await
        .json()["comment_id"]
        .as_i64()
        .unwrap();
    let cookie = app.sign_in_as("mod", true).await;
    for _ in 0..2 {
        let r = act(&app, &cookie, id, "approve").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let c = r.json();
        assert_eq!(c["id"], id);
        assert_eq!(c["status"], "published");
        assert_eq!(c["moderation"]["flagged"], false);
    }
    let audit = staff_get(&app, &cookie, "/api/moderation/audit")
        .await
        .json();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["actor"], "mod");
    assert_eq!(entries[0]["action"], "approve");
    assert_eq!(entries[0]["status_before"], "held");
    assert_eq!(entries[0]["status_after"], "published");
    assert_eq!(app.comments("t").await.len(), 1, "approved: readers see it");

    // Every action lands where it should.
    for (action, status) in [
        ("spam", "spam"),
        ("ham", "published"),
        ("reject", "rejected"),
        ("remove", "removed"),
    ] {
        assert_eq!(
            act(&app, &cookie, id, action).await.json()["status"],
            status
        );
    }
    assert_eq!(
        act(&app, &cookie, 424242, "approve").await.status,
        StatusCode::NOT_FOUND
    );
    let bad = act(&app, &cookie, id, "explode").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_queue_filters_by_status_newest_first_and_bulk_actions_apply() {
    let app = app_with("[moderation]\npre_moderation = \"all\"\n").await;
    app.thread("t").await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            app.post_comment("t", json!({"name": "A", "body": format!("c{i}")}))
                .await
                .json()["comment_id"]
                .as_i64()
                .unwrap(),
        );
    }
    let cookie = app.sign_in_as("mod", true).await;
    let q = staff_get(&app, &cookie, "/api/moderation/queue?status=held")
        .await
        .json();
    let mut newest_first = held.clone();
    newest_first.reverse();
    assert_eq!(ids(&q), newest_first);
    assert_eq!(q["counts"]["held"], 3);
    assert_eq!(
        staff_get(&app, &cookie, "/api/moderation/queue?status=bogus")
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let r = app
        .send_with(
            "POST",
            "/api/moderation/bulk",
            &[("cookie", &cookie)],
            Some(&json!({"ids": [held[0], held[1]], "action": "spam"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let spam = staff_get(&app, &cookie, "/api/moderation/queue?status=spam")
        .await
        .json();
    assert_eq!(ids(&spam).len(), 2);
    let all = staff_get(&app, &cookie, "/api/moderation/queue?status=all")
        .await
        .json();
    assert_eq!(ids(&all).len(), 3);
    for c in all["comments"].as_array().unwrap() {
        assert!(c["status"].is_string());
    }
}

#[tokio::test]
async fn signing_in_sets_a_fresh_httponly_lax_session_and_signing_out_ends_it() {
    let app = spawn_app().await;
    app.engine
        .add_user(&server::Staff::operator(), "mod", "password123", true)
        .await
        .unwrap();

    let wrong = app
        .post_json(
            "/api/session",
            &json!({"username": "mod", "password": "nope"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let unknown = app
        .post_json(
            "/api/session",
            &json!({"username": "ghost", "password": "nope"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.json()["error"],
        unknown.json()["error"],
        "no hint which names exist"
    );

    // A session that existed before sign-in (planted, say) is not the one after it.
    let before = app.get("/api/session").await;
    let planted = session_cookie(&before);
    let r = app
        .send_with(
            "POST",
            "/api/session",
            &[("cookie", planted.as_deref().unwrap_or("x=y"))],
            Some(&json!({"username": "mod", "password": "password123"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), json!({"name": "mod", "staff": true}));
    let set_cookie = r
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(
        !set_cookie.contains("Secure"),
        "plain http here: {set_cookie}"
    );
    let cookie = session_cookie(&r).unwrap();
    assert_ne!(Some(cookie.clone()), planted);

    assert_eq!(
        staff_get(&app, &cookie, "/api/session").await.json()["name"],
        "mod"
    );
    let out = app
        .send_with("DELETE", "/api/session", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(
        staff_get(&app, &cookie, "/api/moderation/queue")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sign_in_is_rate_limited() {
    let app = spawn_app().await;
    let mut last = StatusCode::OK;
    for _ in 0..6 {
        last = app
            .post_json("/api/session", &json!({"username": "x", "password": "y"}))
            .await
            .status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let app = spawn_app().await;
    app.thread("t").await;
    let token = app.token("t").await;
    let body = json!({"name": "A", "body": "csrf", "form_token": token});
    for headers in [
        vec![
            ("origin", "https://evil.example"),
            ("host", "comments.example"),
        ],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let r = app
            .send_with("POST", "/api/threads/t/comments", &headers, Some(&body))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    let r = app
        .send_with(
            "POST",
            "/api/session",
            &[("sec-fetch-site", "cross-site")],
            Some(&json!({"username": "a", "password": "b"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(app.comments("t").await.is_empty());
    // The same request from the site itself goes through.
    let r = app
        .send_with(
            "POST",
            "/api/threads/t/comments",
            &[
                ("origin", "http://comments.example"),
                ("host", "comments.example"),
            ],
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_staff_poster_is_told_whether_the_comment_was_moderated() {
    let app = app_with("[moderation]\npre_moderation = \"all\"\n").await;
    app.thread("t").await;
    let cookie = app.sign_in_as("mod", true).await;
    let token = app.token("t").await;
    let r = app
        .send_with(
            "POST",
            "/api/threads/t/comments",
            &[("cookie", &cookie)],
            Some(&json!({"name": "Mod", "body": "staff note", "form_token": token})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["is_moderated"], false);
}
