//! Embedding on other sites over HTTP: frame rules per route, CORS on the read endpoints
//! only, which requests may create a thread, the counts, the HTML fragment, the scripts, the
//! author cookie's attributes and the snippet command.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use serde_json::json;
use server::config::Config;
use tower::ServiceExt;

const HOST: &str = "http://127.0.0.1:9001";
const EVIL: &str = "http://127.0.0.1:9666";

async fn embed_app(extra: &str) -> TestApp {
    let toml = format!("[embed]\nallowed_origins = [\"{HOST}\"]\n{extra}");
    spawn_app_with(Config::parse(&toml).unwrap()).await
}

fn header_of<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

fn csp_of(r: &Reply) -> &str {
    header_of(r, "content-security-policy").unwrap_or("")
}

/// What a browser sends when a page of `origin` frames `path`.
async fn framed(app: &TestApp, path: &str, origin: &str) -> Reply {
    app.send_with(
        "GET",
        path,
        &[
            ("referer", &format!("{origin}/")),
            ("sec-fetch-dest", "iframe"),
            ("sec-fetch-site", "cross-site"),
        ],
        None,
    )
    .await
}

fn embed_path(key: &str, origin: &str, page: &str, title: &str) -> String {
    format!(
        "/embed/t/{key}?{}",
        serde_urlencoded::to_string([("origin", origin), ("url", page), ("title", title)]).unwrap()
    )
}

#[tokio::test]
async fn embed_pages_may_be_framed_by_allowed_origins_and_other_pages_only_by_this_site() {
    let app = embed_app("").await;
    app.thread("post").await;
    for path in ["/embed/t/post", "/embed/t/post.html"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(
            csp_of(&r).ends_with(&format!("; frame-ancestors 'self' {HOST}")),
            "{path}: {}",
            csp_of(&r)
        );
        assert_eq!(header_of(&r, "x-frame-options"), None, "{path}");
    }
    for path in ["/", "/t/post", "/login", "/moderation", "/no/such/page"] {
        let r = app.get(path).await;
        let csp = csp_of(&r);
        assert!(
            csp == "frame-ancestors 'self'" || csp.ends_with("; frame-ancestors 'self'"),
            "{path}: {csp}"
        );
        assert_eq!(
            header_of(&r, "x-frame-options"),
            Some("SAMEORIGIN"),
            "{path}"
        );
    }
    // The framed page is the thread view without the site's header.
    let page = app.get("/embed/t/post").await;
    assert!(page.text.contains("data-moderato-embed"), "{}", page.text);
    assert!(!page.text.contains("site-header"));
    assert!(app.get("/t/post").await.text.contains("site-header"));
}

#[tokio::test]
async fn an_embed_for_a_site_that_is_not_allowed_is_refused_with_a_reason() {
    let app = embed_app("").await;
    app.thread("post").await;
    let r = framed(
        &app,
        &embed_path("post", EVIL, &format!("{EVIL}/p"), "P"),
        EVIL,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("allowed_origins"), "{}", r.text);
    // An allowed origin is named in the page for the frame script to post to.
    let r = framed(
        &app,
        &embed_path("post", HOST, &format!("{HOST}/p"), "P"),
        HOST,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains(&format!("data-parent-origin=\"{HOST}\"")),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn cors_is_granted_only_on_the_read_endpoints_and_only_to_allowed_origins() {
    let app = embed_app("").await;
    app.thread("post").await;
    let acao = |r: &Reply| header_of(r, "access-control-allow-origin").map(str::to_owned);
    for path in ["/api/counts?threads=post", "/embed/t/post.html"] {
        let r = app.send_with("GET", path, &[("origin", HOST)], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(acao(&r).as_deref(), Some(HOST), "{path}");
        let r = app.send_with("GET", path, &[("origin", EVIL)], None).await;
        assert_eq!(acao(&r), None, "{path} for a foreign origin");
    }
    for path in [
        "/api/threads/post",
        "/api/threads/post/form",
        "/embed/t/post",
        "/t/post",
    ] {
        let r = app.send_with("GET", path, &[("origin", HOST)], None).await;
        assert_eq!(acao(&r), None, "{path} is not a CORS endpoint");
    }
    // No preflight opens the write endpoints to another site.
    let r = app
        .send_with(
            "OPTIONS",
            "/api/threads/post/comments",
            &[
                ("origin", HOST),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            None,
        )
        .await;
    assert_eq!(acao(&r), None);
    // A cross-site POST from the allowed site itself is still refused.
    let token = app.token("post").await;
    let r = app
        .send_with(
            "POST",
            "/api/threads/post/comments",
            &[("origin", HOST), ("sec-fetch-site", "cross-site")],
            Some(&json!({"name": "A", "body": "from the host page", "form_token": token})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(app.comments("post").await.is_empty());
}

/// A thread's title as stored, or `None` when there is no such thread.
async fn thread_title(app: &TestApp, key: &str) -> Option<String> {
    sqlx::query_scalar::<_, String>("SELECT title FROM threads WHERE key = $1")
        .bind(key)
        .fetch_optional(&app.db)
        .await
        .unwrap()
}

/// The page an embed created a thread for, as stored.
async fn embed_url(app: &TestApp, key: &str) -> Option<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT e.url FROM embed_threads e JOIN threads t ON t.id = e.thread_id WHERE t.key = $1",
    )
    .bind(key)
    .fetch_optional(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_thread_is_created_only_by_a_frame_on_an_allowed_site_for_its_own_page() {
    let app = embed_app("").await;
    let page = format!("{HOST}/2026/hello/?utm=x#top");

    // Framed by the allowed site, for one of its pages: created with the snippet's title.
    let r = framed(&app, &embed_path("hello", HOST, &page, "Hello world"), HOST).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let title = thread_title(&app, "hello").await.expect("created");
    assert_eq!(title, "Hello world");
    assert_eq!(
        embed_url(&app, "hello").await.as_deref(),
        Some(format!("{HOST}/2026/hello/").as_str()),
        "query and fragment dropped"
    );
    // Visiting again with another title changes nothing.
    framed(&app, &embed_path("hello", HOST, &page, "Renamed"), HOST).await;
    assert_eq!(
        thread_title(&app, "hello").await.as_deref(),
        Some("Hello world")
    );

    let refused = [
        // A plain GET: no framing page at all.
        app.get(&embed_path("plain", HOST, &format!("{HOST}/p"), "P"))
            .await,
        // Framed by a foreign page (the origin parameter lies; Referer cannot).
        framed(
            &app,
            &embed_path("foreign", HOST, &format!("{HOST}/p"), "P"),
            EVIL,
        )
        .await,
        // A top-level visit from the allowed site (a link, not a frame).
        app.send_with(
            "GET",
            &embed_path("toplevel", HOST, &format!("{HOST}/p"), "P"),
            &[
                ("referer", &format!("{HOST}/")),
                ("sec-fetch-dest", "document"),
            ],
            None,
        )
        .await,
        // The page URL is on another site than the one framing.
        framed(
            &app,
            &embed_path("elsewhere", HOST, &format!("{EVIL}/p"), "P"),
            HOST,
        )
        .await,
        // No page URL.
        framed(&app, &format!("/embed/t/nourl?origin={HOST}"), HOST).await,
        // A reserved key.
        framed(
            &app,
            &embed_path("moderation", HOST, &format!("{HOST}/p"), "P"),
            HOST,
        )
        .await,
        // A title with control characters.
        framed(
            &app,
            &embed_path("badtitle", HOST, &format!("{HOST}/p"), "a\u{7}b"),
            HOST,
        )
        .await,
    ];
    for (r, key) in refused.iter().zip([
        "plain",
        "foreign",
        "toplevel",
        "elsewhere",
        "nourl",
        "moderation",
        "badtitle",
    ]) {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{key}: {}", r.text);
        assert!(
            thread_title(&app, key).await.is_none(),
            "{key} must not be created"
        );
    }
    // Reading the API or the fragment never creates a thread either.
    assert_eq!(
        app.get("/api/threads/api-read").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/embed/t/frag.html").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.count_rows("threads").await, 1);
}

#[tokio::test]
async fn one_address_may_create_only_a_few_threads_a_minute() {
    let app = embed_app("new_threads_per_minute = 2\n").await;
    for (key, status) in [
        ("one", StatusCode::OK),
        ("two", StatusCode::OK),
        ("three", StatusCode::NOT_FOUND),
    ] {
        let page = format!("{HOST}/{key}");
        let r = framed(&app, &embed_path(key, HOST, &page, key), HOST).await;
        assert_eq!(r.status, status, "{key}");
    }
    assert!(thread_title(&app, "one").await.is_some());
    assert!(thread_title(&app, "two").await.is_some());
    assert_eq!(thread_title(&app, "three").await, None, "over the limit");
    assert_eq!(app.count_rows("threads").await, 2);
    // Threads that exist are still shown to the same address, any number of times.
    for _ in 0..5 {
        let r = framed(
            &app,
            &embed_path("one", HOST, &format!("{HOST}/one"), "one"),
            HOST,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.text.contains("data-moderato-embed"), "{}", r.text);
    }
}

#[tokio::test]
async fn the_trailing_slash_policy_applies_to_the_recorded_page() {
    let app = embed_app("trailing_slash = \"strip\"\n").await;
    framed(
        &app,
        &embed_path("slash", HOST, &format!("{HOST}/a/b/"), "S"),
        HOST,
    )
    .await;
    assert_eq!(
        embed_url(&app, "slash").await.as_deref(),
        Some(format!("{HOST}/a/b").as_str())
    );
}

#[tokio::test]
async fn counts_for_a_hundred_keys_come_in_one_answer_without_held_comments() {
    let app = embed_app("[moderation]\nmax_links = 1\n").await;
    for k in ["a", "b", "c"] {
        app.thread(k).await;
    }
    app.publish("a", "A", "one", None).await;
    let first = app.publish("a", "A", "two", None).await;
    app.publish("a", "A", "a reply", Some(first)).await;
    app.publish("b", "B", "only one", None).await;
    // Held (too many links): not counted.
    let r = app
        .post_comment(
            "b",
            json!({"name": "L", "body": "[x](https://x.example) [y](https://y.example)"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);

    let mut keys: Vec<String> = (0..97).map(|i| format!("unknown-{i}")).collect();
    keys.extend(["a", "b", "c"].map(String::from));
    let r = app
        .get(&format!("/api/counts?threads={}", keys.join(",")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let counts = r.json()["counts"].as_object().unwrap().clone();
    assert_eq!(counts.len(), 100);
    assert_eq!(counts["a"], 3);
    assert_eq!(counts["b"], 1);
    assert_eq!(counts["c"], 0);
    assert_eq!(counts["unknown-42"], 0);
    assert_eq!(
        app.count_rows("threads").await,
        3,
        "counting creates nothing"
    );

    // The same answer again is a 304 for a client that has it.
    let etag = header_of(&r, "etag").expect("an ETag").to_owned();
    let again = app
        .send_with(
            "GET",
            &format!("/api/counts?threads={}", keys.join(",")),
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    // A new comment changes the answer and its ETag.
    app.publish("c", "C", "now one", None).await;
    let changed = app
        .send_with(
            "GET",
            &format!("/api/counts?threads={}", keys.join(",")),
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.json()["counts"]["c"], 1);

    // Bad input: a clear error.
    keys.push("one-too-many".into());
    for path in [
        format!("/api/counts?threads={}", keys.join(",")),
        "/api/counts?threads=".to_owned(),
        "/api/counts".to_owned(),
        "/api/counts?threads=a,not%20a%20key".to_owned(),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(r.json()["error"].as_str().unwrap().starts_with("threads:"));
    }
}

#[tokio::test]
async fn the_fragment_is_the_public_thread_with_no_scripts_and_no_staff_data() {
    let app = embed_app("[moderation]\nmax_links = 1\n").await;
    app.thread("post").await;
    let top = app
        .publish(
            "post",
            "Ann <b>",
            "Visible **words** <script>alert(1)</script>",
            None,
        )
        .await;
    let reply = app
        .publish("post", "Bob", "A visible reply", Some(top))
        .await;
    let r = app
        .post_comment(
            "post",
            json!({"name": "Held", "email": "held@example.org",
                   "body": "secretheld [x](https://x.example) [y](https://y.example)"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let r = app.get("/embed/t/post.html").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        header_of(&r, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = &r.text;
    assert!(html.contains("<strong>words</strong>"), "{html}");
    assert!(html.contains("Ann &lt;b&gt;"), "{html}");
    assert!(html.contains("2 comments"), "{html}");
    assert!(!html.to_lowercase().contains("<script"), "{html}");
    assert!(!html.contains("secretheld") && !html.contains("held@example.org"));
    assert!(!html.contains("moderation") && !html.contains("score"));
    // The reply is nested inside its parent's replies.
    let parent_at = html.find(&format!("id=\"c{top}\"")).unwrap();
    let replies_at = html[parent_at..].find("class=\"replies\"").unwrap() + parent_at;
    let reply_at = html.find(&format!("id=\"c{reply}\"")).unwrap();
    assert!(replies_at < reply_at, "{html}");
    // A link back to the whole thread, absolute (it is shown on another site).
    assert!(html.contains("href=\"http://"), "{html}");

    assert_eq!(
        app.get("/embed/t/nothing.html").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut b = Request::get(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app
        .router
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

#[tokio::test]
async fn the_scripts_are_small_versioned_and_cached() {
    let app = embed_app("").await;
    for path in ["/embed.js", "/count.js", "/embed/frame.js"] {
        let (status, h, plain) = raw(&app, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            h["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert_eq!(h["cache-control"], "public, max-age=3600", "{path}");
        let etag = h["etag"].to_str().unwrap().to_owned();
        let version = etag.trim_matches('"').to_owned();

        let (_, h, gz) = raw(&app, path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(h["content-encoding"], "gzip", "{path}");
        assert!(gz.len() <= 4096, "{path}: {} bytes gzip", gz.len());
        assert!(gz.len() < plain.len());

        let (status, h, _) = raw(&app, &format!("{path}?v={version}"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        let (status, h, _) = raw(&app, &format!("{path}?v=0ld"), &[]).await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(h["location"], format!("?v={version}"));
        let (status, _, body) = raw(&app, path, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
    }
    // The embed page links the frame script under its current version.
    app.thread("post").await;
    let (_, h, _) = raw(&app, "/embed/frame.js", &[]).await;
    let version = h["etag"].to_str().unwrap().trim_matches('"').to_owned();
    let page = app.get("/embed/t/post").await;
    assert!(
        page.text.contains(&format!("/embed/frame.js?v={version}")),
        "{}",
        page.text
    );
}

fn set_cookie(r: &Reply) -> Option<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("moderato_author="))
        .map(str::to_owned)
}

#[tokio::test]
async fn the_author_cookie_works_in_frames_over_https_and_the_token_is_also_returned() {
    let app = embed_app("[site]\npublic_url = \"https://comments.example.org\"\n").await;
    app.thread("post").await;
    let r = app
        .post_comment("post", json!({"name": "A", "body": "first"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let cookie = set_cookie(&r).expect("an author cookie");
    for attr in ["HttpOnly", "SameSite=None", "Secure", "Partitioned"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    let token = header_of(&r, "x-moderato-author")
        .expect("the token")
        .to_owned();
    assert!(cookie.starts_with(&format!("moderato_author={token};")));

    // A frame without cookies sends the token back: no new token is minted.
    let form = app.token("post").await;
    let r = app
        .send_with(
            "POST",
            "/api/threads/post/comments",
            &[("x-moderato-author", &token)],
            Some(&json!({"name": "A", "body": "second", "form_token": form})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(set_cookie(&r), None);
    assert_eq!(header_of(&r, "x-moderato-author"), None);
}

#[tokio::test]
async fn without_https_the_author_cookie_stays_lax() {
    let app = spawn_app().await;
    app.thread("post").await;
    let r = app
        .post_comment("post", json!({"name": "A", "body": "first"}))
        .await;
    let cookie = set_cookie(&r).expect("an author cookie");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure") && !cookie.contains("SameSite=None"));
}

#[test]
fn the_snippet_command_prints_the_snippet_for_the_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("moderato.toml");
    std::fs::write(
        &config,
        "[site]\npublic_url = \"https://comments.example.org\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_moderato"))
            .args(args)
            .env_remove("MODERATO_CONFIG")
            .env("DATABASE_URL", "sqlite://unused.db")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let cfg = config.to_str().unwrap();
    let out = run(&["embed", "snippet", "--thread", "my-post", "--config", cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "<div id=\"moderato-thread\" data-thread=\"my-post\"></div>\n\
         <script src=\"https://comments.example.org/embed.js\" async></script>\n"
    );
    let out = run(&["embed", "snippet", "--thread", "a b", "--config", cfg]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--thread"));
    // Without a public URL there is nothing to point the snippet at.
    let out = run(&["embed", "snippet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_url"));
    assert!(
        !dir.path().join("unused.db").exists(),
        "no database is needed"
    );
}

#[tokio::test]
async fn a_staff_session_started_in_a_frame_is_partitioned_and_a_first_party_one_is_lax() {
    let app = embed_app("[site]\npublic_url = \"https://comments.example.org\"\n").await;
    app.engine
        .add_user(&server::Staff::operator(), "mod", "password123", true)
        .await
        .unwrap();
    let sign_in = |referer: &'static str| {
        let app = &app;
        async move {
            app.send_with(
                "POST",
                "/api/session",
                &[("referer", referer), ("sec-fetch-site", "same-origin")],
                Some(&json!({"username": "mod", "password": "password123"})),
            )
            .await
        }
    };
    let cookie_of = |r: &Reply| {
        r.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(server::http::SESSION_COOKIE))
            .expect("a session cookie")
            .to_owned()
    };
    let framed = sign_in("https://comments.example.org/embed/login?next=/embed/t/x").await;
    assert_eq!(framed.status, StatusCode::OK, "{}", framed.text);
    let c = cookie_of(&framed);
    for attr in ["HttpOnly", "SameSite=None", "Secure", "Partitioned"] {
        assert!(c.contains(attr), "{attr} missing: {c}");
    }
    let first_party = sign_in("https://comments.example.org/login").await;
    let c = cookie_of(&first_party);
    assert!(
        c.contains("SameSite=Lax") && !c.contains("Partitioned"),
        "{c}"
    );
    // The sign-in page for frames is itself a framed page.
    let r = app.get("/embed/login?next=/embed/t/x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Staff sign-in") && r.text.contains("data-moderato-embed"));
    assert!(
        csp_of(&r).ends_with(&format!("; frame-ancestors 'self' {HOST}")),
        "{}",
        csp_of(&r)
    );
}
