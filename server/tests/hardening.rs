//! What a hostile or careless client meets: security headers on every answer, per-viewer
//! answers that no cache may keep, and a server that slow clients cannot hold.

mod common;

use axum::http::StatusCode;
use common::*;
use server::config::Config;
use server::http::ServeLimits;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    for path in ["/", "/login"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            header(&r, "cache-control"),
            Some("private, no-store"),
            "{path}"
        );
    }
    // A thread's anonymous view is the same for every reader (tests/cache.rs): the browser
    // may keep it but must ask again each time, and no shared cache may keep it.
    for path in ["/t/t", "/api/threads/t"] {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            header(&r, "cache-control"),
            Some("private, no-cache"),
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

/// Serves `app` with `limits` on a free loopback port; completing the sender shuts it down.
async fn served(
    app: &TestApp,
    limits: ServeLimits,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app.router.clone();
    let task = tokio::spawn(server::http::serve(listener, router, limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

fn limits(header_secs: u64, max_connections: usize) -> ServeLimits {
    ServeLimits {
        header_timeout: Duration::from_secs(header_secs),
        max_connections,
        shutdown_grace: Duration::from_secs(1),
    }
}

/// What the server sends before it closes, or within `wait`.
async fn read_until_close(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None, // still open
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn get_health(addr: SocketAddr, wait: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_close(&mut s, wait).await
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    let app = spawn_app().await;
    let (addr, _stop, _task) = served(&app, limits(1, 100)).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_until_close(&mut slow, Duration::from_secs(5)).await;
    assert!(
        answer.is_some(),
        "the slow connection is still open after 5 s"
    );
    assert!(!answer.unwrap().contains("200 OK"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Others are served as usual.
    let ok = get_health(addr, Duration::from_secs(5)).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let app = spawn_app().await;
    let (addr, _stop, _task) = served(&app, limits(30, 2)).await;
    let idle_a = TcpStream::connect(addr).await.unwrap();
    let _idle_b = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third client is not served while two sockets are held...
    let third = tokio::spawn(get_health(addr, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!third.is_finished(), "served over the connection cap");
    // ...and is as soon as one of them goes away.
    drop(idle_a);
    let answer = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served after a slot freed")
        .unwrap()
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_slow_client() {
    let app = spawn_app().await;
    let (addr, stop, task) = served(&app, limits(600, 100)).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /api/threads/t/comments HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server stopped")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_writes_nothing() {
    let mut config = Config::default();
    config.limits.body_timeout_secs = 1;
    let app = spawn_app_with(config).await;
    app.thread("t").await;
    let (addr, _stop, _task) = served(&app, limits(30, 100)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /api/threads/t/comments HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"name\": \"A\",",
    )
    .await
    .unwrap();
    let answer = read_until_close(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed within 5 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.count_rows("comments").await, 0);
}

/// Posts to thread `t` as a connection from `peer` carrying `forwarded_for`, if any.
async fn post_from(app: &TestApp, peer: &str, forwarded_for: Option<&str>) -> StatusCode {
    let token = app.token("t").await;
    let mut req = axum::http::Request::post("/api/threads/t/comments")
        .header("content-type", "application/json");
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    let mut req = req
        .body(axum::body::Body::from(
            serde_json::json!({"name": "A", "body": "hello there", "form_token": token})
                .to_string(),
        ))
        .unwrap();
    let peer: std::net::IpAddr = peer.parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::new(peer, 5000)));
    app.send(req).await.status
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_count_the_client_it_names_and_no_one_else_can_pick_one() {
    let config = Config::parse(
        "[limits]\nposts_per_minute = 1\n[site]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let app = spawn_app_with(config).await;
    app.thread("t").await;
    // Two clients behind the proxy: one post each.
    assert_eq!(
        post_from(&app, "10.0.0.2", Some("203.0.113.1")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        post_from(&app, "10.0.0.2", Some("203.0.113.2")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        post_from(&app, "10.0.0.2", Some("203.0.113.1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A client prepending a fake hop is still itself.
    assert_eq!(
        post_from(&app, "10.0.0.2", Some("198.51.100.99, 203.0.113.2")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A direct client cannot escape its limit by sending the header itself.
    assert_eq!(
        post_from(&app, "192.0.2.7", Some("203.0.113.50")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        post_from(&app, "192.0.2.7", Some("203.0.113.51")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The stored address is the client's.
    let ips: Vec<(String,)> = sqlx::query_as("SELECT ip FROM comments ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let ips: Vec<&str> = ips.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ips, ["203.0.113.1", "203.0.113.2", "192.0.2.7"]);
}

#[tokio::test]
async fn an_ipv6_client_is_limited_per_64_not_per_address() {
    let config = Config::parse("[limits]\nposts_per_minute = 1\n").unwrap();
    let app = spawn_app_with(config).await;
    app.thread("t").await;
    assert_eq!(
        post_from(&app, "2001:db8:1:2::1", None).await,
        StatusCode::CREATED
    );
    assert_eq!(
        post_from(&app, "2001:db8:1:2::ffff", None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        post_from(&app, "2001:db8:1:3::1", None).await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn pages_allow_only_their_own_and_nonced_scripts() {
    let app = spawn_app().await;
    app.thread("t").await;
    for path in ["/", "/t/t", "/login", "/embed/t/t", "/no/such/page"] {
        let r = app.get(path).await;
        let csp = header(&r, "content-security-policy")
            .unwrap_or("")
            .to_owned();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src "))
            .unwrap_or_else(|| panic!("{path}: no script-src in {csp:?}"));
        assert!(!script_src.contains("unsafe-inline"), "{path}: {csp}");
        let nonce = script_src
            .split_whitespace()
            .find_map(|s| s.strip_prefix("'nonce-")?.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{path}: no nonce in {csp}"));
        // Every inline script of the page carries it; a fresh page gets a fresh one.
        for (i, _) in r.text.match_indices("<script") {
            let tag = &r.text[i..i + r.text[i..].find('>').unwrap()];
            assert!(
                tag.contains(" src=") || tag.contains(&format!("nonce=\"{nonce}\"")),
                "{path}: {tag}"
            );
        }
        let again = app.get(path).await;
        assert!(
            !header(&again, "content-security-policy")
                .unwrap_or("")
                .contains(nonce),
            "{path}: the nonce was reused"
        );
        for directive in [
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'self'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing in {csp}"
            );
        }
    }
}

#[tokio::test]
async fn housekeeping_forgets_old_addresses_expired_sessions_and_old_audit_entries() {
    let config = Config::parse("[privacy]\nkeep_ip_days = 30\nkeep_audit_days = 90\n").unwrap();
    let app = spawn_app_with(config).await;
    app.thread("t").await;
    let old = app.publish("t", "Old", "from long ago", None).await;
    let new = app.publish("t", "New", "from today", None).await;
    let day = 86_400_000i64;
    let now = server::now_ms();
    // Back-date one comment and one audit entry, and let one session expire.
    sqlx::query("UPDATE comments SET created_at = $1, ip = '192.0.2.1' WHERE id = $2")
        .bind(now - 31 * day)
        .bind(old)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE comments SET ip = '192.0.2.2' WHERE id = $1")
        .bind(new)
        .execute(&app.db)
        .await
        .unwrap();
    for (at, actor) in [(now - 91 * day, "old-mod"), (now - day, "new-mod")] {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, thread_id, status_after, detail) \
             VALUES ($1, $2, 'reject', NULL, 'rejected', 'x')",
        )
        .bind(at)
        .bind(actor)
        .execute(&app.db)
        .await
        .unwrap();
    }
    for (id, expires) in [("gone", now - 1000), ("live", now + day)] {
        sqlx::query("INSERT INTO sessions (id, data, expires_at) VALUES ($1, '{}', $2)")
            .bind(id)
            .bind(expires)
            .execute(&app.db)
            .await
            .unwrap();
    }

    app.engine.housekeeping().await;

    let ips: Vec<(i64, Option<String>)> = sqlx::query_as("SELECT id, ip FROM comments ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(ips, [(old, None), (new, Some("192.0.2.2".to_owned()))]);
    let actors: Vec<(String,)> = sqlx::query_as("SELECT actor FROM audit_log ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(actors, [("new-mod".to_owned(),)]);
    let sessions: Vec<(String,)> = sqlx::query_as("SELECT id FROM sessions")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, [("live".to_owned(),)]);
    // The comments themselves stay.
    assert_eq!(app.comments("t").await.len(), 2);
}

/// A small deterministic generator, so a failure here is reproducible from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

#[tokio::test]
async fn random_posts_get_a_clear_answer_and_only_acknowledged_ones_are_stored() {
    let mut config = Config::default();
    config.limits.posts_per_minute = 0;
    let app = spawn_app_with(config).await;
    app.thread("t").await;
    app.thread("other").await;
    let foreign = app.publish("other", "Ann", "elsewhere", None).await;
    let strings: Vec<serde_json::Value> = vec![
        serde_json::json!(""),
        serde_json::json!("   "),
        serde_json::json!("Ann"),
        serde_json::json!("x".repeat(20_000)),
        serde_json::json!("\u{202e}evil\u{202c}"),
        serde_json::json!("zero\u{200b}width"),
        serde_json::json!("nul\u{0}byte"),
        serde_json::json!("bell\u{7}"),
        serde_json::json!("<script>alert(1)</script>"),
        serde_json::json!("javascript:alert(1)"),
        serde_json::json!("https://example.org/a?b=c#d"),
        serde_json::json!("a@b.example"),
        serde_json::json!("not an email"),
        serde_json::json!("日本語のコメント 👍🏽"),
        serde_json::json!("**bold** [link](javascript:x) ![img](http://x/y.png)"),
        serde_json::json!(42),
        serde_json::json!(-1),
        serde_json::json!(1e300),
        serde_json::json!(i64::MAX),
        serde_json::json!(null),
        serde_json::json!(true),
        serde_json::json!([1, 2]),
        serde_json::json!({"nested": "object"}),
        serde_json::json!(foreign),
    ];
    let fields = [
        "name",
        "email",
        "url",
        "body",
        "title",
        "parent_id",
        "notify",
        "honeypot",
        "extra",
    ];
    let raw_bodies: [&[u8]; 5] = [
        b"",
        b"{",
        b"[]",
        b"\xff\xfe{}",
        b"name=A&body=form+encoded+as+json",
    ];
    let mut rng = Lcg(20261202);
    let (mut acknowledged, mut refused) = (0i64, 0u32);
    for round in 0..300 {
        let r = if rng.below(10) == 0 {
            let body = raw_bodies[rng.below(raw_bodies.len())];
            app.post_raw("/api/threads/t/comments", "application/json", body.to_vec())
                .await
        } else {
            let mut post = serde_json::json!({});
            for field in fields {
                if rng.below(3) > 0 {
                    post[field] = strings[rng.below(strings.len())].clone();
                }
            }
            // Most rounds are otherwise plausible, so the checks past the first are reached.
            if rng.below(2) == 0 {
                post["name"] = serde_json::json!("Reader");
                post["body"] = serde_json::json!(format!("comment {round}"));
            }
            app.post_comment("t", post).await
        };
        match r.status {
            StatusCode::CREATED | StatusCode::ACCEPTED => {
                assert!(r.json()["comment_id"].as_i64().is_some(), "{}", r.text);
                acknowledged += 1;
            }
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                let errors = r.json()["errors"].clone();
                let messages = errors.as_object().unwrap_or_else(|| {
                    panic!("round {round}: {} without errors: {}", r.status, r.text)
                });
                assert!(
                    !messages.is_empty() && messages.values().all(|m| m.is_string()),
                    "round {round}: {}",
                    r.text
                );
                refused += 1;
            }
            other => panic!("round {round}: unexpected {other}: {}", r.text),
        }
    }
    // Nothing refused was written; the one comment elsewhere is the one published above.
    assert_eq!(app.count_rows("comments").await, acknowledged + 1);
    assert!(
        acknowledged > 0 && refused > 0,
        "{acknowledged} accepted, {refused} refused: one kind is missing"
    );
    for path in ["/t/t", "/api/threads/t"] {
        assert_eq!(app.get(path).await.status, StatusCode::OK, "{path}");
    }
}
