//! Live updates end to end: a real server on a loopback port, real WebSocket clients.

mod common;

use app::live::{ClientMessage, ServerMessage};
use axum::http::StatusCode;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server::config::Config;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Live {
    app: TestApp,
    addr: SocketAddr,
}

async fn serve(config: Config) -> Live {
    let app = spawn_app_with(config).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    // The accept loop `moderato serve` runs, so the upgrade path is the production one.
    let limits = server::http::ServeLimits {
        header_timeout: std::time::Duration::from_secs(10),
        max_connections: 1000,
        shutdown_grace: std::time::Duration::from_secs(1),
    };
    tokio::spawn(server::http::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    Live { app, addr }
}

impl Live {
    async fn connect_with(&self, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
        self.connect_to("/ws", headers).await
    }

    async fn connect_to(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tungstenite::Error> {
        let mut req = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }

    async fn connect(&self) -> Ws {
        self.connect_with(&[]).await.expect("connect")
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(tungstenite::Message::Text(v.to_string().into()))
        .await
        .unwrap();
}

/// The next message as JSON (for assertions on the wire shape), skipping pings; panics after
/// a few seconds, or when the message is not one of the typed protocol's `ServerMessage`s.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .expect("no error");
        match msg {
            tungstenite::Message::Text(t) => {
                if let Err(e) = ServerMessage::parse(&t) {
                    panic!("not a protocol message ({e}): {t}");
                }
                return serde_json::from_str(&t).unwrap();
            }
            tungstenite::Message::Close(c) => {
                return json!({"type": "closed", "code": c.map(|c| u16::from(c.code))});
            }
            _ => continue,
        }
    }
}

/// Nothing arrives for a while.
async fn silent(ws: &mut Ws) {
    if let Ok(Some(Ok(tungstenite::Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(400), ws.next()).await
    {
        panic!("unexpected message: {t}");
    }
}

async fn subscribe(ws: &mut Ws, thread: &str, since: Option<i64>) -> Vec<Value> {
    let msg = ClientMessage::Subscribe {
        thread: thread.into(),
        since,
    };
    ws.send(tungstenite::Message::Text(msg.encode().into()))
        .await
        .unwrap();
    let mut before = Vec::new();
    loop {
        let m = next(ws).await;
        if m["type"] == "subscribed" {
            return before;
        }
        before.push(m);
    }
}

/// Posts `fields` to thread `key` with a fresh form token, sending `headers`.
async fn post_with(live: &Live, key: &str, mut fields: Value, headers: &[(&str, &str)]) -> Reply {
    fields["form_token"] = json!(live.app.token(key).await);
    live.app
        .send_with(
            "POST",
            &format!("/api/threads/{key}/comments"),
            headers,
            Some(&fields),
        )
        .await
}

#[tokio::test]
async fn a_post_reaches_every_subscriber_as_an_event() {
    let live = serve(Config::default()).await;
    live.app.thread("t").await;
    let mut a = live.connect().await;
    let mut b = live.connect().await;
    subscribe(&mut a, "t", None).await;
    subscribe(&mut b, "t", None).await;
    let id = live.app.publish("t", "Ann", "Live *hello*", None).await;
    for ws in [&mut a, &mut b] {
        let m = next(ws).await;
        assert_eq!(m["type"], "event");
        assert_eq!(m["thread"], "t");
        assert!(m["id"].as_i64().unwrap() > 0);
        assert_eq!(m["event"]["kind"], "comment_posted");
        assert_eq!(m["event"]["comment"]["id"], id);
        assert_eq!(
            m["event"]["comment"]["body_html"],
            "<p>Live <em>hello</em></p>\n"
        );
        assert!(m["event"]["comment"].get("status").is_none());
    }
}

#[tokio::test]
async fn a_held_comment_reaches_staff_but_not_readers_and_approval_reaches_readers() {
    let live = serve(Config::parse("[moderation]\npre_moderation = \"all\"\n").unwrap()).await;
    live.app.thread("t").await;
    let cookie = live.app.sign_in_as("mod", true).await;
    let mut staff = live.connect_with(&[("cookie", &cookie)]).await.unwrap();
    let mut reader = live.connect().await;
    subscribe(&mut staff, "t", None).await;
    subscribe(&mut staff, "moderation", None).await;
    subscribe(&mut reader, "t", None).await;

    let r = live
        .app
        .post_comment(
            "t",
            json!({"name": "Ann", "email": "ann@x.org", "body": "secret until approved"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let id = r.json()["comment_id"].as_i64().unwrap();

    let mut staff_kinds = Vec::new();
    for _ in 0..3 {
        let m = next(&mut staff).await;
        staff_kinds.push(m["event"]["kind"].as_str().unwrap().to_owned());
        if m["event"]["kind"] == "comment_posted" {
            assert_eq!(m["event"]["comment"]["status"], "held");
            assert_eq!(m["event"]["comment"]["moderation"]["flagged"], true);
        }
        if m["event"]["kind"] == "moderation_update" {
            assert_eq!(m["event"]["in_queue"], true);
            assert_eq!(m["event"]["moderator"], "pre_moderation");
        }
    }
    staff_kinds.sort();
    assert_eq!(
        staff_kinds,
        ["comment_posted", "moderation_update", "stats_update"]
    );
    silent(&mut reader).await; // nothing of the held comment reaches a reader

    let r = live
        .app
        .send_with(
            "POST",
            &format!("/api/comments/{id}/moderate"),
            &[("cookie", &cookie)],
            Some(&json!({"action": "approve"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let m = next(&mut reader).await;
    assert_eq!(m["event"]["kind"], "comment_status_changed");
    assert_eq!(m["event"]["visible"], true);
    assert_eq!(
        m["event"]["comment"]["body_html"],
        "<p>secret until approved</p>\n"
    );
    assert!(!m.to_string().contains("ann@x.org"));

    // Removal makes it disappear for readers.
    live.app
        .send_with(
            "POST",
            &format!("/api/comments/{id}/moderate"),
            &[("cookie", &cookie)],
            Some(&json!({"action": "remove"})),
        )
        .await;
    let m = next(&mut reader).await;
    assert_eq!(m["event"]["visible"], false);
    assert_eq!(m["event"]["comment_id"], id);
    assert!(m["event"].get("comment").is_none());
}

#[tokio::test]
async fn the_author_sees_their_own_held_comment_as_awaiting_moderation() {
    let live = serve(Config::parse("[moderation]\npre_moderation = \"all\"\n").unwrap()).await;
    live.app.thread("t").await;
    // The first post sets the author cookie.
    let r = post_with(&live, "t", json!({"name": "Ann", "body": "first"}), &[]).await;
    let set = r
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let author = set.split(';').next().unwrap().to_owned();
    assert!(author.starts_with("moderato_author="), "{set}");

    let mut mine = live.connect_with(&[("cookie", &author)]).await.unwrap();
    let mut other = live.connect().await;
    subscribe(&mut mine, "t", None).await;
    subscribe(&mut other, "t", None).await;
    let r = post_with(
        &live,
        "t",
        json!({"name": "Ann", "body": "second"}),
        &[("cookie", &author)],
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let m = next(&mut mine).await;
    assert_eq!(m["event"]["kind"], "comment_posted");
    assert_eq!(m["event"]["awaiting_moderation"], true);
    assert!(m["event"]["comment"].get("status").is_none());
    silent(&mut other).await;
}

/// A framed page whose browser blocks third-party cookies keeps the author token itself
/// (from `X-Moderato-Author`) and names it on the socket instead.
#[tokio::test]
async fn without_cookies_the_author_token_in_the_socket_url_shows_their_held_comment() {
    let live = serve(Config::parse("[moderation]\npre_moderation = \"all\"\n").unwrap()).await;
    live.app.thread("t").await;
    let r = post_with(&live, "t", json!({"name": "Ann", "body": "first"}), &[]).await;
    let author = r
        .headers
        .get("x-moderato-author")
        .expect("the author token is returned")
        .to_str()
        .unwrap()
        .to_owned();

    let mut mine = live
        .connect_to(&format!("/ws?author={author}"), &[])
        .await
        .unwrap();
    // A token that is not well formed is ignored, not trusted.
    let mut forged = live
        .connect_to("/ws?author=../../etc&author=", &[])
        .await
        .unwrap();
    let mut other = live.connect().await;
    for ws in [&mut mine, &mut forged, &mut other] {
        subscribe(ws, "t", None).await;
    }
    let r = post_with(
        &live,
        "t",
        json!({"name": "Ann", "body": "second"}),
        &[("x-moderato-author", &author)],
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let m = next(&mut mine).await;
    assert_eq!(m["event"]["kind"], "comment_posted");
    assert_eq!(m["event"]["awaiting_moderation"], true);
    assert_eq!(m["event"]["comment"]["body_html"], "<p>second</p>\n");
    silent(&mut forged).await;
    silent(&mut other).await;
}

/// What staff removed stays removed in every replay: a reader (or the author) catching up
/// from before the removal gets nothing of the comment, while staff still get it all.
#[tokio::test]
async fn a_catch_up_never_hands_readers_a_comment_that_was_removed() {
    let live = serve(Config::default()).await;
    live.app.thread("t").await;
    let cookie = live.app.sign_in_as("mod", true).await;
    let kept = live.app.publish("t", "Ann", "this one stays", None).await;
    let r = post_with(
        &live,
        "t",
        json!({"name": "Bob", "body": "regrettable words"}),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let removed = r.json()["comment_id"].as_i64().unwrap();
    let author = r.headers["x-moderato-author"].to_str().unwrap().to_owned();
    let moderate = |action: &'static str| {
        let cookie = cookie.clone();
        let app = &live.app;
        async move {
            let r = app
                .send_with(
                    "POST",
                    &format!("/api/comments/{removed}/moderate"),
                    &[("cookie", &cookie)],
                    Some(&json!({ "action": action })),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
    };
    moderate("remove").await;

    let mut reader = live.connect().await;
    let mut the_author = live
        .connect_to(&format!("/ws?author={author}"), &[])
        .await
        .unwrap();
    let mut staff = live.connect_with(&[("cookie", &cookie)]).await.unwrap();
    for ws in [&mut reader, &mut the_author] {
        let replay = subscribe(ws, "t", Some(0)).await;
        let text = serde_json::to_string(&replay).unwrap();
        assert!(!text.contains("regrettable"), "{text}");
        // The comment that stays is replayed as usual.
        assert!(
            replay
                .iter()
                .any(|m| m["event"]["comment"]["id"] == kept
                    && m["event"]["kind"] == "comment_posted"),
            "{text}"
        );
    }
    let staff_replay = serde_json::to_string(&subscribe(&mut staff, "t", Some(0)).await).unwrap();
    assert!(staff_replay.contains("regrettable"), "{staff_replay}");
    // Approved again, it is public again, live and in later replays.
    moderate("approve").await;
    let m = next(&mut reader).await;
    assert_eq!(
        m["event"]["comment"]["body_html"], "<p>regrettable words</p>\n",
        "{m}"
    );
}

#[tokio::test]
async fn a_reconnect_with_since_replays_exactly_the_missed_events() {
    let live = serve(Config::default()).await;
    live.app.thread("t").await;
    let mut ws = live.connect().await;
    subscribe(&mut ws, "t", None).await;
    live.app.publish("t", "A", "one", None).await;
    let seen = next(&mut ws).await["id"].as_i64().unwrap();
    drop(ws);

    let missed = [
        live.app.publish("t", "A", "two", None).await,
        live.app.publish("t", "A", "three", None).await,
    ];
    let mut ws = live.connect().await;
    let replayed = subscribe(&mut ws, "t", Some(seen)).await;
    let ids: Vec<i64> = replayed
        .iter()
        .map(|m| m["event"]["comment"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, missed, "exactly the missed comments, in order");
    let event_ids: Vec<i64> = replayed.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(event_ids, [seen + 1, seen + 2]);
    // Then live, with no duplicate.
    let four = live.app.publish("t", "A", "four", None).await;
    let m = next(&mut ws).await;
    assert_eq!(m["event"]["comment"]["id"], four);
    assert_eq!(m["id"], seen + 3);

    // A cursor the server cannot replay gets reset.
    let mut ws = live.connect().await;
    send(
        &mut ws,
        json!({"type": "subscribe", "thread": "t", "since": 999_999}),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "reset");
}

#[tokio::test]
async fn the_page_gives_the_cursor_to_subscribe_from() {
    let live = serve(Config::default()).await;
    live.app.thread("t").await;
    live.app.publish("t", "A", "before", None).await;
    let page = live.app.get("/api/threads/t/page").await.json();
    let since = page["data"]["last_event_id"].as_i64().unwrap();
    assert!(since > 0);
    let after = live.app.publish("t", "A", "after the page", None).await;
    let mut ws = live.connect().await;
    let replayed = subscribe(&mut ws, "t", Some(since)).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["event"]["comment"]["id"], after);
}

/// A socket opened as staff stops being staff with the session: at sign-out, and when a
/// password change (or demotion) ends the user's sessions.
#[tokio::test]
async fn a_staff_socket_loses_its_staff_view_when_its_session_ends() {
    let live = serve(Config::default()).await;
    live.app.thread("t").await;
    let cookie = live.app.sign_in_as("mod", true).await;
    let mut staff = live.connect_with(&[("cookie", &cookie)]).await.unwrap();
    subscribe(&mut staff, "moderation", None).await;

    let r = live
        .app
        .send_with("DELETE", "/api/session", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let notice = next(&mut staff).await;
    assert_eq!(notice["event"]["kind"], "system_notification", "{notice}");
    assert_eq!(
        next(&mut staff).await,
        json!({"type": "closed", "code": 1000})
    );
    // Coming back with the old cookie is coming back as a reader.
    let mut again = live.connect_with(&[("cookie", &cookie)]).await.unwrap();
    send(
        &mut again,
        json!({"type": "subscribe", "thread": "moderation"}),
    )
    .await;
    assert_eq!(next(&mut again).await["code"], "forbidden");

    // A new password signs the user out everywhere, live sockets included.
    let cookie = live.app.sign_in_as("mod2", true).await;
    let mut staff = live.connect_with(&[("cookie", &cookie)]).await.unwrap();
    subscribe(&mut staff, "moderation", None).await;
    let mut reader = live.connect().await;
    subscribe(&mut reader, "t", None).await;
    live.app
        .engine
        .set_password(&server::Staff::operator(), "mod2", "another password")
        .await
        .unwrap();
    assert_eq!(
        next(&mut staff).await["event"]["kind"],
        "system_notification"
    );
    assert_eq!(
        next(&mut staff).await,
        json!({"type": "closed", "code": 1000})
    );
    // Readers are not touched.
    send(&mut reader, json!({"type": "ping"})).await;
    assert_eq!(next(&mut reader).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let live = serve(Config::default()).await;
    let host = live.addr.to_string();
    let err = live
        .connect_with(&[("origin", "https://evil.example"), ("host", &host)])
        .await
        .expect_err("refused");
    match err {
        tungstenite::Error::Http(resp) => assert_eq!(resp.status(), StatusCode::FORBIDDEN),
        other => panic!("{other:?}"),
    }
    let own = format!("http://{host}");
    assert!(
        live.connect_with(&[("origin", &own), ("host", &host)])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn readers_cannot_watch_the_moderation_room() {
    let live = serve(Config::default()).await;
    let mut ws = live.connect().await;
    send(
        &mut ws,
        json!({"type": "subscribe", "thread": "moderation"}),
    )
    .await;
    let m = next(&mut ws).await;
    assert_eq!(m["type"], "error");
    assert_eq!(m["code"], "forbidden");
}

#[tokio::test]
async fn the_limits_hold() {
    let live = serve(
        Config::parse(
            "[live]\nmax_subscriptions = 2\nmax_message_bytes = 200\nmax_messages_per_minute = 5\n",
        )
        .unwrap(),
    )
    .await;
    // Subscriptions.
    let mut ws = live.connect().await;
    subscribe(&mut ws, "a", None).await;
    subscribe(&mut ws, "b", None).await;
    send(&mut ws, json!({"type": "subscribe", "thread": "c"})).await;
    assert_eq!(next(&mut ws).await["code"], "too_many_subscriptions");
    assert_eq!(next(&mut ws).await["code"], 1008);
    // Message size.
    let mut ws = live.connect().await;
    send(
        &mut ws,
        json!({"type": "subscribe", "thread": "x".repeat(300)}),
    )
    .await;
    assert_eq!(next(&mut ws).await["code"], "message_too_large");
    assert_eq!(next(&mut ws).await["code"], 1008);
    // Messages per minute, on a server of its own: the budget is per address and outlives
    // a connection, so the messages above would count.
    let live = serve(Config::parse("[live]\nmax_messages_per_minute = 5\n").unwrap()).await;
    let mut ws = live.connect().await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        // The server may close as soon as the limit is passed; later sends can fail.
        let _ = ws
            .send(tungstenite::Message::Text(
                json!({"type": "ping"}).to_string().into(),
            ))
            .await;
    }
    for _ in 0..7 {
        let m = next(&mut ws).await;
        codes.push(m["type"].as_str().unwrap().to_owned());
        if m["type"] == "closed" {
            assert_eq!(m["code"], 1008);
            break;
        }
        if m["type"] == "error" {
            assert_eq!(m["code"], "rate_limited");
        }
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "pong").count(),
        5,
        "{codes:?}"
    );
    assert!(codes.contains(&"error".to_owned()), "{codes:?}");
    // Reconnecting does not refill the budget.
    let mut ws = live.connect().await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["code"], "rate_limited");
    assert_eq!(next(&mut ws).await["code"], 1008);
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let live = serve(Config::parse("[live]\nmax_connections_per_ip = 2\n").unwrap()).await;
    let _one = live.connect().await;
    let _two = live.connect().await;
    let mut three = live.connect().await;
    assert_eq!(next(&mut three).await["code"], "too_many_connections");
    assert_eq!(next(&mut three).await["code"], 1008);
}

#[tokio::test]
async fn stats_update_counts_follow_posts_and_moderation() {
    let config = "[moderation]\npre_moderation = \"all\"\n[limits]\nposts_per_minute = 0\n";
    let live = serve(Config::parse(config).unwrap()).await;
    live.app.thread("t").await;
    let cookie = live.app.sign_in_as("mod", true).await;
    let mut staff = live.connect_with(&[("cookie", &cookie)]).await.unwrap();
    subscribe(&mut staff, "moderation", None).await;
    async fn next_stats(ws: &mut Ws) -> Value {
        loop {
            let m = next(ws).await;
            if m["event"]["kind"] == "stats_update" {
                return m["event"].clone();
            }
        }
    }
    // One post at a time: each is followed by a stats event that counts it.
    let mut ids = Vec::new();
    for (n, body) in ["one", "two", "three"].into_iter().enumerate() {
        let r = live
            .app
            .post_comment("t", json!({"name": "Ann", "body": body}))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        ids.push(r.json()["comment_id"].as_i64().unwrap());
        let stats = next_stats(&mut staff).await;
        assert_eq!(stats["counts"], json!({"held": n + 1}));
        assert_eq!(stats["total"], n + 1);
    }
    // Each change brings its own, in its transaction (the repeated "spam" changes nothing).
    for (id, action) in [(ids[0], "approve"), (ids[1], "spam"), (ids[1], "spam")] {
        let r = live
            .app
            .send_with(
                "POST",
                &format!("/api/comments/{id}/moderate"),
                &[("cookie", &cookie)],
                Some(&json!({ "action": action })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let stats = next_stats(&mut staff).await;
    assert_eq!(stats["counts"], json!({"held": 2, "published": 1}));
    let last = next_stats(&mut staff).await;
    assert_eq!(
        last["counts"],
        json!({"held": 1, "published": 1, "spam": 1})
    );
    assert_eq!(last["total"], 3);
    assert!((last["rates"]["spam"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    silent(&mut staff).await;

    // Many posts at once: a stats event may count several of them (or repeat the counts of
    // the one before), the counts never go down, and they end up counting every post; never
    // more stats events than posts.
    let posts = (0..16).map(|i| {
        live.app
            .post_comment("t", json!({"name": "Bo", "body": format!("burst {i}")}))
    });
    for r in futures_util::future::join_all(posts).await {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    let (mut held, mut events) = (1, 0);
    while held < 17 {
        let stats = next_stats(&mut staff).await;
        let n = stats["counts"]["held"].as_i64().unwrap();
        assert!(n >= held, "held went from {held} to {n}");
        held = n;
        events += 1;
    }
    // A last one may repeat those counts (asked for while the one before was being written);
    // then nothing more. The burst's own moderation updates may still come: posts committed
    // in one batch publish their events from their own tasks, so one can reach the hub after
    // a stats event numbered later (the cursor a client keeps is the highest id it saw).
    while let Ok(Some(Ok(tungstenite::Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(400), staff.next()).await
    {
        let m: Value = serde_json::from_str(&t).unwrap();
        if m["event"]["kind"] == "moderation_update" {
            assert!(
                m["event"]["comment"]["body_html"]
                    .as_str()
                    .is_some_and(|b| b.contains("burst")),
                "{t}"
            );
            continue;
        }
        assert_eq!(m["event"]["kind"], "stats_update", "{t}");
        assert_eq!(m["event"]["counts"]["held"], 17, "{t}");
        events += 1;
    }
    println!("stats events for 16 posts at once: {events}");
    assert!(events <= 16, "{events} stats events for 16 posts");
}
