//! Webhooks against a receiver started here on loopback (a small HTTP/1.1 server that
//! records each request and can answer 500 first): what a delivery carries and how it is
//! signed, which events go where, retries until the receiver takes it, and a receiver that
//! is down at first.

mod common;

use app::model::ModerationAction;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use server::config::Config;
use server::{Engine, Staff, ThreadSpec};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PUBLIC_URL: &str = "https://comments.example.org";
const SECRET: &str = "a webhook s3cret";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    request_line: String,
    /// Lowercased names.
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A receiver on loopback: records every request, answers 500 to the first `fail_first`.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), fail_first)
    }

    fn on(listener: TcpListener, fail_first: usize) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let got = got.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let got = got.clone();
                    tokio::spawn(async move {
                        if let Some(r) = read_request(stream, &got, fail_first).await {
                            got.lock().unwrap().push(r);
                        }
                    });
                }
            })
        };
        Receiver { addr, got, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/moderato?team=1", self.addr)
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `count` requests arrived (10 s at most).
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.requests();
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} requests arrived: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads one request (head and Content-Length body) and answers it: 500 while fewer than
/// `fail_first` requests were recorded, else 200.
async fn read_request(
    mut stream: TcpStream,
    got: &Mutex<Vec<Received>>,
    fail_first: usize,
) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let failing = got.lock().unwrap().len() < fail_first;
    let answer: &[u8] = if failing {
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    };
    stream.write_all(answer).await.ok()?;
    Some(Received {
        request_line,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// One `[[webhooks]]` table.
fn hook(url: &str, events: &[&str]) -> String {
    format!(
        "[[webhooks]]\nurl = \"{url}\"\nevents = {}\nsecret = \"{SECRET}\"\nretry_after_secs = 1\n",
        json!(events)
    )
}

fn config(extra: &str) -> Config {
    Config::parse(&format!("[site]\npublic_url = \"{PUBLIC_URL}/\"\n{extra}")).unwrap()
}

async fn news_thread(app: &TestApp) {
    app.thread_with(ThreadSpec {
        key: "news".into(),
        title: Some("Launch day".into()),
        ..Default::default()
    })
    .await;
}

/// The expected signature header of `body`, computed here independently.
fn expected_signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// (id, event, delivered, dropped, attempts, last_error) of every outbox row, oldest first.
type OutboxRow = (i64, String, bool, Option<String>, i64, Option<String>);

async fn outbox(app: &TestApp) -> Vec<OutboxRow> {
    sqlx::query_as::<
        _,
        (
            i64,
            String,
            Option<i64>,
            Option<String>,
            i64,
            Option<String>,
        ),
    >(
        "SELECT id, event, delivered_at, dropped, attempts, last_error FROM webhook_outbox \
         ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, event, delivered, dropped, attempts, error)| {
        (id, event, delivered.is_some(), dropped, attempts, error)
    })
    .collect()
}

/// Waits until the outbox satisfies `ready` (10 s at most).
async fn wait_for_outbox(app: &TestApp, what: &str, ready: impl Fn(&[OutboxRow]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = outbox(app).await;
        if ready(&rows) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_published_comment_is_posted_signed_with_the_documented_fields() {
    let receiver = Receiver::start(0).await;
    let app = spawn_app_with(config(&hook(
        &receiver.url(),
        &["comment_published", "comment_held"],
    )))
    .await;
    let _worker = app
        .engine
        .spawn_webhooks()
        .expect("webhooks are configured");
    news_thread(&app).await;
    let r = app
        .post_comment(
            "news",
            json!({"name": "Ann <!channel>", "email": "ann@example.org", "body": "Hello **world**"}),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text);
    let id = r.json()["comment_id"].as_i64().unwrap();

    let got = receiver.wait_for(1).await;
    let req = &got[0];
    assert_eq!(req.request_line, "POST /hooks/moderato?team=1 HTTP/1.1");
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.header("x-moderato-event"), "comment_published");
    assert_eq!(req.header("host"), receiver.addr.to_string());
    // The signature is the HMAC of the exact bytes received.
    assert_eq!(
        req.header("x-moderato-signature"),
        expected_signature(&req.body)
    );
    let rows = outbox(&app).await;
    assert_eq!(req.header("x-moderato-delivery"), rows[0].0.to_string());

    let body = req.json();
    let url = format!("{PUBLIC_URL}/t/news#c{id}");
    assert_eq!(body["event"], "comment_published");
    let c = &body["comment"];
    assert_eq!(c["id"], id);
    assert_eq!(c["thread"], "news");
    assert_eq!(c["thread_title"], "Launch day");
    assert_eq!(c["parent_id"], Value::Null);
    assert_eq!(c["author_name"], "Ann <!channel>");
    assert_eq!(c["status"], "published");
    assert!(
        c["body_html"]
            .as_str()
            .unwrap()
            .contains("<strong>world</strong>"),
        "{c}"
    );
    assert!(c["created_at"].as_str().unwrap().ends_with('Z'), "{c}");
    assert_eq!(c["url"], url.as_str());
    assert_eq!(body["previous_status"], Value::Null);
    assert!(body.get("moderation").is_none(), "{body}");
    // The chat line: readable, with the title, the author (unable to ping a channel) and
    // the link.
    let text = body["text"].as_str().unwrap();
    assert_eq!(
        text,
        format!("New comment by Ann &lt;!channel&gt; on \"Launch day\": {url}")
    );
    // Nothing only staff may see.
    assert!(!req.body.contains("ann@example.org"), "{}", req.body);
    assert!(!req.body.contains("127.0.0.1"), "{}", req.body);

    wait_for_outbox(&app, "marked delivered once", |rows| {
        rows.len() == 1 && rows[0].2 && rows[0].4 == 1 && rows[0].5.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1, "delivered once");
}

#[tokio::test]
async fn held_then_approved_and_removed_go_to_the_webhooks_that_listed_them() {
    let queue = Receiver::start(0).await;
    let removals = Receiver::start(0).await;
    let app = spawn_app_with(config(&format!(
        "[moderation]\npre_moderation = \"all\"\n{}{}",
        hook(&queue.url(), &["comment_held", "comment_published"]),
        hook(&removals.url(), &["comment_removed"]),
    )))
    .await;
    let _worker = app.engine.spawn_webhooks().unwrap();
    news_thread(&app).await;
    let r = app
        .post_comment("news", json!({"name": "Bo", "body": "Please approve me."}))
        .await;
    assert_eq!(r.status, axum::http::StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json()["comment_id"].as_i64().unwrap();

    let held = queue.wait_for(1).await[0].clone();
    assert_eq!(held.header("x-moderato-event"), "comment_held");
    let body = held.json();
    assert_eq!(body["event"], "comment_held");
    assert_eq!(body["comment"]["status"], "held");
    let reason = body["moderation"]["reason"].as_str().unwrap();
    assert!(!reason.is_empty(), "{body}");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("Comment by Bo on \"Launch day\" awaits moderation ("),
        "{body}"
    );

    let staff = Staff::operator();
    app.engine
        .moderate(&staff, &[id], ModerationAction::Approve)
        .await
        .unwrap();
    let published = queue.wait_for(2).await[1].clone();
    assert_eq!(published.header("x-moderato-event"), "comment_published");
    assert_eq!(
        published.header("x-moderato-signature"),
        expected_signature(&published.body)
    );
    let body = published.json();
    assert_eq!(body["comment"]["id"], id);
    assert_eq!(body["comment"]["status"], "published");
    assert_eq!(body["previous_status"], "held");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("published by a moderator (was held)"),
        "{body}"
    );
    // Approving again changes nothing, so nothing is sent.
    app.engine
        .moderate(&staff, &[id], ModerationAction::Approve)
        .await
        .unwrap();

    app.engine
        .moderate(&staff, &[id], ModerationAction::Remove)
        .await
        .unwrap();
    let removed = removals.wait_for(1).await[0].clone();
    assert_eq!(removed.header("x-moderato-event"), "comment_removed");
    assert_eq!(removed.json()["previous_status"], "published");

    wait_for_outbox(&app, "three deliveries, all delivered", |rows| {
        rows.len() == 3 && rows.iter().all(|r| r.2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each receiver got only the events it listed.
    assert_eq!(queue.requests().len(), 2);
    assert_eq!(removals.requests().len(), 1);
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_delivery_until_it_takes_it() {
    let receiver = Receiver::start(2).await;
    let app = spawn_app_with(config(&hook(&receiver.url(), &["comment_published"]))).await;
    let _worker = app.engine.spawn_webhooks().unwrap();
    news_thread(&app).await;
    let started = Instant::now();
    app.publish("news", "Cy", "Third time lucky.", None).await;

    let got = receiver.wait_for(3).await;
    // 500, wait 1 s, 500, wait 2 s, 200.
    assert!(started.elapsed() >= Duration::from_secs(3), "{started:?}");
    for r in &got[1..] {
        assert_eq!(r.body, got[0].body, "every try sends the same bytes");
        assert_eq!(
            r.header("x-moderato-delivery"),
            got[0].header("x-moderato-delivery")
        );
        assert_eq!(
            r.header("x-moderato-signature"),
            got[0].header("x-moderato-signature")
        );
    }
    wait_for_outbox(&app, "delivered on the third try", |rows| {
        rows.len() == 1 && rows[0].2 && rows[0].4 == 3
    })
    .await;
    let rows = outbox(&app).await;
    assert!(rows[0].5.as_deref().unwrap().contains("500"), "{rows:?}");
    // Nothing more once delivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_delivery_once_it_is_up() {
    // A port with nothing listening yet (the receiver starts on it later).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = config(&hook(
        &format!("http://{addr}/hooks/moderato?team=1"),
        &["comment_published"],
    ));
    let app = spawn_app_with(config.clone()).await;
    let worker = app.engine.spawn_webhooks().unwrap();
    news_thread(&app).await;
    app.publish("news", "Di", "Posted while the receiver is down.", None)
        .await;
    wait_for_outbox(&app, "a failed try is recorded", |rows| {
        rows.len() == 1 && !rows[0].2 && rows[0].4 >= 1 && rows[0].5.is_some()
    })
    .await;
    let rows = outbox(&app).await;
    assert!(
        rows[0].5.as_deref().unwrap().contains("cannot connect"),
        "{rows:?}"
    );

    let receiver = Receiver::on(TcpListener::bind(addr).await.unwrap(), 0);
    let got = receiver.wait_for(1).await;
    assert!(got[0].body.contains("Posted while the receiver is down."));
    wait_for_outbox(&app, "marked delivered", |rows| rows[0].2).await;

    // A restart: a new engine and worker on the same database deliver nothing again.
    worker.abort();
    let restarted = Arc::new(Engine::open(&app.database_url, config).await.unwrap());
    let _worker = restarted.spawn_webhooks().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.requests().len(), 1, "delivered once");
}

#[tokio::test]
async fn webhooks_that_cannot_work_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let table = hook("https://hooks.example.org/x", &["comment_published"]);

    // Links must be absolute.
    let err = Engine::open(&url, Config::parse(&table).unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("site.public_url"), "{err}");

    let unreadable = config(&table.replace(
        &format!("secret = \"{SECRET}\""),
        "secret_file = \"/nonexistent/webhook-secret\"",
    ));
    let err = Engine::open(&url, unreadable).await.err().unwrap();
    assert!(err.to_string().contains("secret_file"), "{err}");

    // A malformed URL or an unknown event never gets as far as the engine.
    let err = Config::parse(&hook("example.org/x", &["comment_published"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("webhooks") && err.contains("not a URL"),
        "{err}"
    );
    let err = Config::parse(&hook("https://hooks.example.org/x", &["comment_posted"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("comment_posted") && err.contains("comment_published"),
        "{err}"
    );
}
