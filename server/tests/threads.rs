//! Reading threads: the JSON API, the server-rendered page, paging, health, the CLI.

mod common;

use axum::http::StatusCode;
use common::*;
use server::config::Config;

#[tokio::test]
async fn health_answers_ok_when_the_database_does() {
    let app = spawn_app().await;
    let r = app.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
    app.engine.close().await;
    assert_eq!(
        app.get("/health").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn comments_come_in_tree_order_depth_first_oldest_first() {
    let app = spawn_app().await;
    app.thread("t").await;
    let a = app.publish("t", "A", "a", None).await;
    let b = app.publish("t", "B", "b", None).await;
    let a1 = app.publish("t", "A1", "a1", Some(a)).await;
    let b1 = app.publish("t", "B1", "b1", Some(b)).await;
    let a2 = app.publish("t", "A2", "a2", Some(a)).await;
    let a1x = app.publish("t", "A1x", "a1x", Some(a1)).await;

    let r = app.get("/api/threads/t").await;
    let v = r.json();
    assert_eq!(v["threaded"], true);
    assert_eq!(v["thread"]["key"], "t");
    assert_eq!(v["thread"]["title"], "Thread t");
    assert_eq!(v["thread"]["kind"], "page");
    assert_eq!(v["thread"]["comments_open"], true);
    assert_eq!(v["thread"]["comment_count"], 6);
    let ids: Vec<i64> = v["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [a, a1, a1x, a2, b, b1]);
    let depths: Vec<i64> = v["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["depth"].as_i64().unwrap())
        .collect();
    assert_eq!(depths, [0, 1, 2, 1, 0, 1]);
    let first = &v["comments"][0];
    for key in [
        "id",
        "parent_id",
        "depth",
        "author_name",
        "author_url",
        "title",
        "body_html",
        "created_at",
    ] {
        assert!(first.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["comments"][2]["parent_id"], a1);
}

#[tokio::test]
async fn replies_deeper_than_max_depth_are_kept_at_the_cap_and_still_name_their_parent() {
    let mut config = Config::default();
    config.comments.max_depth = 2;
    config.limits.posts_per_minute = 0;
    let app = spawn_app_with(config).await;
    app.thread("t").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            app.publish("t", "A", &format!("level {i}"), ids.last().copied())
                .await,
        );
    }
    let comments = app.comments("t").await;
    let seen: Vec<(i64, i64, Option<i64>)> = comments
        .iter()
        .map(|c| {
            (
                c["id"].as_i64().unwrap(),
                c["depth"].as_i64().unwrap(),
                c["parent_id"].as_i64(),
            )
        })
        .collect();
    // Reply order is kept, each names whom it answers, and nothing is deeper than 2.
    let expected: Vec<(i64, i64, Option<i64>)> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, (i as i64).min(2), i.checked_sub(1).map(|p| ids[p])))
        .collect();
    assert_eq!(seen, expected);
    let paths: Vec<(String,)> = sqlx::query_as("SELECT path FROM comments ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(paths.iter().all(|(p,)| p.len() <= 30), "{paths:?}");
}

#[tokio::test]
async fn a_thousand_deep_reply_chain_renders_with_bounded_nesting() {
    let mut config = Config::default();
    config.limits.posts_per_minute = 0;
    config.comments.page_max_comments = 2000;
    let app = spawn_app_with(config).await;
    app.thread("deep").await;
    let mut parent = None;
    for i in 0..1000 {
        parent = Some(
            app.publish("deep", "A", &format!("reply {i}"), parent)
                .await,
        );
    }
    let page = app.get("/t/deep").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("reply 999"));
    // At most max_depth (8) levels of nested articles, whatever the chain's length.
    let mut open = 0usize;
    let mut deepest = 0usize;
    for (i, _) in page.text.match_indices("article") {
        if page.text[..i].ends_with("</") {
            open = open.saturating_sub(1);
        } else if page.text[..i].ends_with('<') {
            open += 1;
            deepest = deepest.max(open);
        }
    }
    assert!(deepest <= 9, "articles nested {deepest} deep");
}

#[tokio::test]
async fn a_big_thread_is_served_in_pages_that_continue_where_they_stopped() {
    let mut config = Config::default();
    config.comments.page_size = 3;
    config.comments.page_max_comments = 4;
    config.limits.posts_per_minute = 0;
    let app = spawn_app_with(config).await;
    app.thread("t").await;
    let mut all = Vec::new();
    for i in 0..4 {
        let top = app.publish("t", "T", &format!("top {i}"), None).await;
        all.push(top);
        for j in 0..2 {
            all.push(
                app.publish("t", "R", &format!("reply {i}.{j}"), Some(top))
                    .await,
            );
        }
    }
    // Page 1: four comments (the comment cap cuts the second subtree).
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            None => "/api/threads/t".to_owned(),
            Some(c) => format!("/api/threads/t?after={c}"),
        };
        let v = app.get(&url).await.json();
        let page: Vec<i64> = v["comments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect();
        assert!(page.len() <= 4);
        seen.extend(page);
        pages += 1;
        match v["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert_eq!(v["remaining_top_level"], 0);
                break;
            }
        }
    }
    assert_eq!(
        seen, all,
        "pages joined give the whole thread, in order, once"
    );
    assert_eq!(pages, 3);
    // The whole thread at once is for staff only.
    let r = app.get("/api/threads/t?all=1").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let cookie = app.sign_in_as("mod", true).await;
    let r = app
        .send_with("GET", "/api/threads/t?all=1", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.json()["comments"].as_array().unwrap().len(), 12);
    assert!(r.json().get("next").is_none());
}

#[tokio::test]
async fn the_thread_page_is_rendered_on_the_server_without_staff_data() {
    let app = spawn_app().await;
    app.thread("t").await;
    let r = app
        .post_comment(
            "t",
            serde_json::json!({"name": "Ann <3", "email": "secret@example.org", "body": "Hello *there*"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let page = app.get("/t/t").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Hello <em>there</em>"), "{}", page.text);
    assert!(page.text.contains("Ann &lt;3"), "name escaped");
    assert!(
        page.text.contains(r#"name="form_token""#),
        "form token embedded"
    );
    assert!(
        !page.text.contains("secret@example.org"),
        "email leaked into the page"
    );
    assert!(!page.text.contains("127.0.0.1"), "IP leaked into the page");
}

#[tokio::test]
async fn readers_get_the_light_client_and_staff_the_whole_app() {
    let mut app = spawn_app().await;
    app.thread("t").await;
    // A site built without the reader client (cargo leptos): readers get the whole app.
    let page = app.get("/t/t").await;
    assert!(page.text.contains("moderato_bg"), "{}", page.text);
    assert!(!page.text.contains("reader_bg"));

    // The site scripts/build.sh makes has it.
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    std::fs::write(site.path().join("pkg/reader_bg.wasm"), b"\0asm").unwrap();
    app.router = server::http::router(
        app.engine.clone(),
        server::http::leptos_options(&site.path().to_string_lossy()),
    );
    let reader = app.get("/t/t").await;
    assert_eq!(reader.status, StatusCode::OK);
    // The light client, loaded as a module with its wasm hinted; not the Leptos app.
    assert!(
        reader.text.contains(r#"href="/pkg/reader.js""#),
        "{}",
        reader.text
    );
    assert!(reader.text.contains(r#"href="/pkg/reader_bg.wasm""#));
    assert!(reader.text.contains(r#"import init from "/pkg/reader.js""#));
    assert!(!reader.text.contains("moderato_bg"), "{}", reader.text);
    assert!(!reader.text.contains("hydrate()"));
    // Nothing hydrates it, so no resource data is serialized into it for hydration.
    assert!(
        !reader.text.contains("__RESOLVED_RESOURCES["),
        "{}",
        reader.text
    );
    // What the client reads from the page besides the markup.
    for attr in [
        r#"data-count="0""#,
        r#"data-last-event="#,
        r#"data-max-depth="8""#,
        r#"data-open="true""#,
    ] {
        assert!(reader.text.contains(attr), "{attr}");
    }

    // Staff get the whole app on the same page, and everyone on other pages.
    let cookie = app.sign_in_as("mod", true).await;
    let staff = app
        .send_with("GET", "/t/t", &[("cookie", &cookie)], None)
        .await;
    assert!(staff.text.contains("moderato_bg"), "{}", staff.text);
    assert!(staff.text.contains("__RESOLVED_RESOURCES["));
    assert!(!staff.text.contains("reader_bg"));
    for path in ["/", "/login"] {
        let page = app.get(path).await;
        assert!(page.text.contains("moderato_bg"), "{path}");
        assert!(!page.text.contains("reader_bg"), "{path}");
    }
    // A signed-in user who is not staff reads like anyone else.
    let user = app.sign_in_as("ann", false).await;
    let page = app
        .send_with("GET", "/t/t", &[("cookie", &user)], None)
        .await;
    assert!(page.text.contains("reader_bg"));
}

#[tokio::test]
async fn a_closed_thread_page_says_so_and_has_no_form() {
    let app = spawn_app().await;
    app.thread_with(server::ThreadSpec {
        key: "t".into(),
        comments_enabled: Some(false),
        ..Default::default()
    })
    .await;
    let page = app.get("/t/t").await;
    assert!(page.text.contains("Comments are disabled for this thread."));
    assert!(!page.text.contains("<form"));
}

#[tokio::test]
async fn an_unknown_thread_page_is_404() {
    let app = spawn_app().await;
    assert_eq!(app.get("/t/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/threads/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_home_page_lists_threads() {
    let app = spawn_app().await;
    app.thread("alpha").await;
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains(r#"href="/t/alpha""#), "{}", page.text);
    assert!(page.text.contains("Thread alpha"));
}

#[tokio::test]
async fn the_thread_list_comes_a_page_at_a_time() {
    let app = spawn_app().await;
    for i in 0..55 {
        app.thread(&format!("n{i:02}")).await;
    }
    let keys = |r: &Reply| -> Vec<String> {
        r.json()["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = app.get("/api/threads").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["total"], 55);
    assert_eq!(first.json()["page"], 1);
    let mut seen = keys(&first);
    assert_eq!(seen.len(), 50);
    // Newest first.
    assert_eq!(seen[0], "n54");
    let second = app.get("/api/threads?page=2").await;
    seen.extend(keys(&second));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 55, "every thread once over the two pages");
    assert!(keys(&app.get("/api/threads?page=3").await).is_empty());
    for bad in ["0", "-1", "two"] {
        let r = app.get(&format!("/api/threads?page={bad}")).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert!(r.json()["errors"]["page"].is_string(), "{}", r.text);
    }
    // The home page pages the same way, with links both ways.
    let home = app.get("/").await.text;
    assert!(home.contains(r#"href="/t/n54""#) && !home.contains(r#"href="/t/n00""#));
    assert!(home.contains(r#"href="/?page=2""#), "{home}");
    let older = app.get("/?page=2").await.text;
    assert!(older.contains(r#"href="/t/n00""#) && !older.contains(r#"href="/t/n54""#));
    assert!(older.contains(r#"href="/?page=1""#), "{older}");
}

#[tokio::test]
async fn the_demo_seeds_a_welcome_thread_once() {
    let app = spawn_app().await;
    assert!(app.engine.seed_demo().await.unwrap());
    assert!(!app.engine.seed_demo().await.unwrap());
    let comments = app.comments("welcome").await;
    assert!(comments.len() >= 5);
    assert!(
        comments.iter().any(|c| c["depth"].as_i64().unwrap() >= 2),
        "replies nest"
    );
}

#[tokio::test]
async fn thread_set_creates_and_updates_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database_url(dir.path()).await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_moderato"))
            .args(args)
            .env("DATABASE_URL", &db)
            .env_remove("MODERATO_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&[
        "thread",
        "set",
        "news-1",
        "--kind",
        "post",
        "--title",
        "News",
        "--published-at",
        "2026-11-01T09:00:00Z",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["thread", "set", "news-1", "--comments-enabled", "false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db).await.unwrap();
    let t: (String, String, i64, Option<i64>) = sqlx::query_as(
        "SELECT kind, title, comments_enabled, published_at FROM threads WHERE key = 'news-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((t.0.as_str(), t.1.as_str(), t.2), ("post", "News", 0));
    assert_eq!(t.3, Some(1_793_523_600_000));

    // Bad input: non-zero exit and one line of error.
    for bad in [
        vec!["thread", "set", "bad key"],
        vec!["thread", "set", "k", "--published-at", "yesterday"],
        vec!["thread", "set", "k", "--comments-enabled", "maybe"],
    ] {
        let out = run(&bad);
        assert!(!out.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{bad:?}");
    }
    let out = run(&["thread", "set", "bad key"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}
