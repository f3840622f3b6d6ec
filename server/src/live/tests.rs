//! Tests of the hub through channel-backed connections: no socket, no database.

use super::*;
use app::live::ClientMessage;
use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(3);

/// A sink over a channel, or one that never accepts anything (a stalled socket).
struct TestSink {
    tx: mpsc::UnboundedSender<Message>,
    stalled: bool,
}

impl Sink<Message> for TestSink {
    type Error = ();

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.stalled {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), ()> {
        self.tx.send(item).map_err(|_| ())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

/// Client frames, as the server's stream half.
struct TestStream(mpsc::UnboundedReceiver<Message>);

impl Stream for TestStream {
    type Item = Result<Message, ()>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|m| m.map(Ok))
    }
}

/// One test connection.
struct Client {
    to_server: Option<mpsc::UnboundedSender<Message>>,
    from_server: mpsc::UnboundedReceiver<Message>,
    task: JoinHandle<()>,
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

fn reader(tokens: &[&str]) -> Identity {
    Identity {
        staff: false,
        author_tokens: tokens.iter().map(|t| t.to_string()).collect(),
        ip: ip(1),
    }
}

fn staff() -> Identity {
    Identity {
        staff: true,
        author_tokens: Vec::new(),
        ip: ip(2),
    }
}

impl Client {
    fn connect(hub: &Hub, identity: Identity) -> Client {
        Self::connect_with(hub, identity, false)
    }

    fn connect_with(hub: &Hub, identity: Identity, stalled: bool) -> Client {
        let admission = hub.try_admit(identity.ip).expect("admitted");
        let (to_server, server_in) = mpsc::unbounded_channel();
        let (server_out, from_server) = mpsc::unbounded_channel();
        let hub = hub.clone();
        let task = tokio::spawn(async move {
            let sink = TestSink {
                tx: server_out,
                stalled,
            };
            hub.serve(sink, TestStream(server_in), identity, admission)
                .await;
        });
        Client {
            to_server: Some(to_server),
            from_server,
            task,
        }
    }

    fn send(&self, v: Value) {
        self.send_msg(Message::Text(v.to_string().into()));
    }

    fn send_msg(&self, m: Message) {
        if let Some(tx) = &self.to_server {
            let _ = tx.send(m);
        }
    }

    /// The next frame, skipping server pings.
    async fn frame(&mut self) -> Message {
        loop {
            let m = timeout(WAIT, self.from_server.recv())
                .await
                .expect("a server message in time")
                .expect("the connection is open");
            if !matches!(m, Message::Ping(_)) {
                return m;
            }
        }
    }

    async fn json(&mut self) -> Value {
        match self.frame().await {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, thread: &str, since: Option<i64>) -> Value {
        let mut msg = json!({"type": "subscribe", "thread": thread});
        if let Some(s) = since {
            msg["since"] = json!(s);
        }
        self.send(msg);
        let v = self.json().await;
        assert_eq!(v["type"], "subscribed", "{v}");
        v
    }

    /// The id of the next event (asserting the next message is one), and its payload.
    async fn event(&mut self) -> (i64, Value) {
        let v = self.json().await;
        assert_eq!(v["type"], "event", "{v}");
        (v["id"].as_i64().unwrap(), v["event"].clone())
    }

    /// Asserts nothing but pings arrives for a while.
    async fn silent(&mut self, ms: u64) {
        let end = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(end, self.from_server.recv()).await {
                Err(_) => return,
                Ok(Some(Message::Ping(_))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Asserts an error with `code`, then a close frame with `close`.
    async fn expect_error_then_close(&mut self, code: &str, close: u16) {
        let v = self.json().await;
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], code, "{v}");
        self.expect_close(close).await;
    }

    async fn expect_close(&mut self, close: u16) {
        match self.frame().await {
            Message::Close(Some(f)) => assert_eq!(f.code, close, "{f:?}"),
            other => panic!("expected close {close}, got {other:?}"),
        }
    }

    /// Drops the client side and waits for the server task to end.
    async fn hang_up(mut self) {
        self.to_server = None;
        timeout(WAIT, self.task).await.expect("ended").unwrap();
    }
}

/// An in-memory event store that can hold replays at a gate.
#[derive(Default)]
struct MemorySource {
    events: Mutex<Vec<Event>>,
    /// `since` below this is too old.
    oldest_since: Mutex<i64>,
    gate: Option<Arc<Semaphore>>,
    replay_started: Arc<Notify>,
    /// Catch-up queries started so far.
    queries: AtomicUsize,
    fail: AtomicBool,
}

impl MemorySource {
    fn gated() -> (Self, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let source = MemorySource {
            gate: Some(gate.clone()),
            ..Default::default()
        };
        (source, gate)
    }

    fn store(&self, e: &Event) {
        self.events.lock().unwrap().push(e.clone());
    }
}

#[async_trait::async_trait]
impl EventSource for Arc<MemorySource> {
    async fn events_since(
        &self,
        room: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Event>, ReplayError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ReplayError::Other("database down".into()));
        }
        if since < *self.oldest_since.lock().unwrap() {
            return Err(ReplayError::TooOld);
        }
        // The snapshot is taken now, like a query; the gate holds the answer back.
        let mut snapshot: Vec<Event> = self
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.room == room && e.id > since)
            .cloned()
            .collect();
        snapshot.sort_by_key(|e| e.id);
        snapshot.truncate(limit);
        self.queries.fetch_add(1, Ordering::SeqCst);
        self.replay_started.notify_one();
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(snapshot)
    }

    async fn last_id(&self, room: &str) -> Result<i64, ReplayError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ReplayError::Other("database down".into()));
        }
        let events = self.events.lock().unwrap();
        Ok(events
            .iter()
            .filter(|e| e.room == room)
            .map(|e| e.id)
            .max()
            .unwrap_or(0))
    }
}

fn hub_with(limits: Limits) -> (Hub, Arc<MemorySource>) {
    let source = Arc::new(MemorySource::default());
    (Hub::new(limits, Arc::new(source.clone())), source)
}

fn hub() -> (Hub, Arc<MemorySource>) {
    hub_with(Limits::default())
}

fn posted(id: i64, body: &str, status: Option<app::model::Status>, awaiting: bool) -> Payload {
    Payload::CommentPosted {
        comment: app::model::Comment {
            id,
            parent_id: None,
            depth: 0,
            author_name: "Ann".into(),
            author_url: None,
            title: None,
            body_html: body.into(),
            created_at: "2026-11-21T10:00:00Z".into(),
            status,
            moderation: None,
        },
        awaiting_moderation: awaiting,
    }
}

fn comment(room: &str, id: i64) -> Event {
    Event::public(room, id, posted(id, "hello", None, false))
}

/// A held comment: staff see it, its author sees "awaiting moderation", readers nothing.
fn held(room: &str, id: i64, author: &str) -> Event {
    Event {
        room: room.into(),
        id,
        reader: None,
        staff: posted(id, "secret", Some(app::model::Status::Held), false),
        author: Some((author.into(), posted(id, "secret", None, true))),
    }
}

#[tokio::test]
async fn events_reach_only_their_room_until_unsubscribed() {
    let (hub, _) = hub();
    let mut a = Client::connect(&hub, reader(&[]));
    let mut b = Client::connect(&hub, reader(&[]));
    assert_eq!(a.subscribe("t1", None).await["last_id"], 0);
    b.subscribe("t2", None).await;
    assert_eq!(hub.subscriber_count("t1"), 1);

    hub.publish(comment("t1", 1));
    assert_eq!(a.event().await.0, 1);
    b.silent(50).await;
    hub.publish(comment("t2", 1));
    assert_eq!(b.event().await.0, 1);
    a.silent(50).await;

    a.send(json!({"type": "unsubscribe", "thread": "t1"}));
    assert_eq!(
        a.json().await,
        json!({"type": "unsubscribed", "thread": "t1"})
    );
    assert_eq!(hub.subscriber_count("t1"), 0);
    hub.publish(comment("t1", 2));
    a.silent(50).await;

    assert_eq!(hub.connection_count(), 2);
    a.hang_up().await;
    b.hang_up().await;
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(hub.subscriber_count("t2"), 0);
}

#[tokio::test]
async fn the_event_message_has_the_documented_shape() {
    let (hub, _) = hub();
    let mut a = Client::connect(&hub, reader(&[]));
    a.subscribe("t", None).await;
    hub.publish(comment("t", 7));
    assert_eq!(
        a.json().await,
        json!({"type": "event", "id": 7, "thread": "t",
               "event": {"kind": "comment_posted", "comment": {
                   "id": 7, "parent_id": null, "depth": 0, "author_name": "Ann",
                   "author_url": null, "title": null, "body_html": "hello",
                   "created_at": "2026-11-21T10:00:00Z"}}})
    );
}

#[tokio::test]
async fn held_content_never_reaches_readers_staff_and_author_get_theirs() {
    let (hub, _) = hub();
    let mut plain = Client::connect(&hub, reader(&["someone-else"]));
    let mut author = Client::connect(&hub, reader(&["tok-a"]));
    let mut mod_ = Client::connect(&hub, staff());
    for c in [&mut plain, &mut author, &mut mod_] {
        c.subscribe("t", None).await;
    }

    hub.publish(held("t", 1, "tok-a"));
    let (id, p) = mod_.event().await;
    assert_eq!((id, p["comment"]["status"].as_str()), (1, Some("held")));
    let (id, p) = author.event().await;
    assert_eq!((id, p["awaiting_moderation"].as_bool()), (1, Some(true)));

    // The next thing the reader sees is the next public event: nothing about comment 1.
    hub.publish(comment("t", 2));
    let (id, _) = plain.event().await;
    assert_eq!(id, 2, "readers see a gap in ids, never the held comment");
    assert_eq!(author.event().await.0, 2);
    assert_eq!(mod_.event().await.0, 2);
}

#[tokio::test]
async fn replay_applies_the_same_role_filtering() {
    let (hub, source) = hub();
    for e in [comment("t", 1), held("t", 2, "tok-a"), comment("t", 3)] {
        source.store(&e);
    }
    let mut plain = Client::connect(&hub, reader(&[]));
    plain.send(json!({"type": "subscribe", "thread": "t", "since": 0}));
    assert_eq!(plain.event().await.0, 1);
    assert_eq!(plain.event().await.0, 3);
    assert_eq!(
        plain.json().await,
        json!({"type": "subscribed", "thread": "t", "last_id": 3})
    );

    let mut author = Client::connect(&hub, reader(&["tok-a"]));
    author.send(json!({"type": "subscribe", "thread": "t", "since": 1}));
    let (id, p) = author.event().await;
    assert_eq!((id, p["awaiting_moderation"].as_bool()), (2, Some(true)));
    assert_eq!(author.event().await.0, 3);

    let mut mod_ = Client::connect(&hub, staff());
    mod_.send(json!({"type": "subscribe", "thread": "t", "since": 1}));
    let (id, p) = mod_.event().await;
    assert_eq!(
        (id, p["comment"]["body_html"].as_str()),
        (2, Some("secret"))
    );
}

#[tokio::test]
async fn replay_then_live_has_no_gap_and_no_duplicate() {
    let (source, gate) = MemorySource::gated();
    let source = Arc::new(source);
    let hub = Hub::new(Limits::default(), Arc::new(source.clone()));
    for id in 1..=5 {
        source.store(&comment("t", id));
    }
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "t", "since": 2}));
    // The replay query has its snapshot (3, 4, 5) and is held at the gate.
    timeout(WAIT, source.replay_started.notified())
        .await
        .unwrap();

    // Event 5 was committed before the snapshot but its publish comes late: a duplicate.
    hub.publish(comment("t", 5));
    // Event 6 commits after the snapshot: only the live path has it.
    source.store(&comment("t", 6));
    hub.publish(comment("t", 6));
    gate.add_permits(1);

    let mut ids = Vec::new();
    loop {
        let v = c.json().await;
        match v["type"].as_str() {
            Some("event") => ids.push(v["id"].as_i64().unwrap()),
            Some("subscribed") => {
                assert!(v["last_id"].as_i64().unwrap() >= 5, "{v}");
                ids.push(-1);
            }
            other => panic!("unexpected {other:?}"),
        }
        if ids.len() == 5 {
            break;
        }
    }
    assert_eq!(ids, vec![3, 4, 5, -1, 6]);
    c.silent(50).await;

    hub.publish(comment("t", 7));
    assert_eq!(c.event().await.0, 7);
    // A second late copy of a replayed event is still recognized.
    hub.publish(comment("t", 4));
    c.silent(50).await;
}

#[tokio::test]
async fn an_event_published_out_of_id_order_during_replay_is_not_lost() {
    let (source, gate) = MemorySource::gated();
    let source = Arc::new(source);
    let hub = Hub::new(Limits::default(), Arc::new(source.clone()));
    // Event 4 is still uncommitted when the replay runs; 5 is committed.
    source.store(&comment("t", 3));
    source.store(&comment("t", 5));
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "t", "since": 2}));
    timeout(WAIT, source.replay_started.notified())
        .await
        .unwrap();
    hub.publish(comment("t", 5));
    source.store(&comment("t", 4));
    hub.publish(comment("t", 4));
    gate.add_permits(1);

    assert_eq!(c.event().await.0, 3);
    assert_eq!(c.event().await.0, 5);
    assert_eq!(c.json().await["type"], "subscribed");
    assert_eq!(
        c.event().await.0,
        4,
        "below the newest replayed id, yet not a duplicate"
    );
    c.silent(50).await;
}

#[tokio::test]
async fn live_events_at_or_below_since_are_dropped() {
    let (hub, source) = hub();
    for id in 1..=3 {
        source.store(&comment("t", id));
    }
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "t", "since": 3}));
    assert_eq!(
        c.json().await,
        json!({"type": "subscribed", "thread": "t", "last_id": 3})
    );
    hub.publish(comment("t", 3));
    hub.publish(comment("t", 4));
    assert_eq!(c.event().await.0, 4);
}

#[tokio::test]
async fn a_since_older_than_retention_gets_reset() {
    let (hub, source) = hub();
    for id in 1..=10 {
        source.store(&comment("t", id));
    }
    *source.oldest_since.lock().unwrap() = 5;
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "t", "since": 2}));
    assert_eq!(c.json().await, json!({"type": "reset", "thread": "t"}));
    assert_eq!(
        c.json().await,
        json!({"type": "subscribed", "thread": "t", "last_id": 10})
    );
    hub.publish(comment("t", 11));
    assert_eq!(c.event().await.0, 11);
}

#[tokio::test]
async fn too_many_missed_events_or_a_foreign_cursor_get_reset() {
    let (hub, source) = hub_with(Limits {
        max_replay: 3,
        ..Limits::default()
    });
    for id in 1..=10 {
        source.store(&comment("t", id));
    }
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "t", "since": 5}));
    assert_eq!(c.json().await["type"], "reset");
    assert_eq!(c.json().await["type"], "subscribed");

    // Exactly the limit still replays.
    c.send(json!({"type": "subscribe", "thread": "t", "since": 7}));
    assert_eq!(c.event().await.0, 8);
    assert_eq!(c.event().await.0, 9);
    assert_eq!(c.event().await.0, 10);
    assert_eq!(c.json().await["type"], "subscribed");

    // A cursor from the future (another database) cannot be trusted.
    c.send(json!({"type": "subscribe", "thread": "t", "since": 99}));
    assert_eq!(c.json().await["type"], "reset");
    assert_eq!(c.json().await["last_id"], 10);
}

#[tokio::test]
async fn a_failing_source_gives_replay_failed_and_no_subscription() {
    let (hub, source) = hub();
    source.fail.store(true, Ordering::SeqCst);
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "t", "since": 1}));
    let v = c.json().await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str(), v["thread"].as_str()),
        (Some("error"), Some("replay_failed"), Some("t"))
    );
    assert_eq!(hub.subscriber_count("t"), 0);
    hub.publish(comment("t", 1));
    c.silent(50).await;
}

#[tokio::test]
async fn too_many_live_events_during_a_replay_give_reset_not_a_gap() {
    let (source, gate) = MemorySource::gated();
    let source = Arc::new(source);
    let hub = Hub::new(
        Limits {
            send_queue: 4,
            ..Limits::default()
        },
        Arc::new(source.clone()),
    );
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "t", "since": 0}));
    timeout(WAIT, source.replay_started.notified())
        .await
        .unwrap();
    for id in 1..=10 {
        source.store(&comment("t", id));
        hub.publish(comment("t", id));
        // Let the connection drain its queue into the replay buffer.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.add_permits(1);
    assert_eq!(c.json().await["type"], "reset");
    assert_eq!(c.json().await["type"], "subscribed");
    hub.publish(comment("t", 11));
    assert_eq!(c.event().await.0, 11);
}

#[tokio::test]
async fn over_messages_per_minute_gives_error_then_close_1008() {
    let (hub, _) = hub_with(Limits {
        max_messages_per_minute: 3,
        ..Limits::default()
    });
    let mut c = Client::connect(&hub, reader(&[]));
    for _ in 0..3 {
        c.send(json!({"type": "ping"}));
        assert_eq!(c.json().await, json!({"type": "pong"}));
    }
    c.send(json!({"type": "ping"}));
    c.expect_error_then_close("rate_limited", close_code::POLICY)
        .await;
    c.hang_up().await;
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test]
async fn hanging_up_and_reconnecting_does_not_refill_the_message_budget() {
    let (hub, _) = hub_with(Limits {
        max_messages_per_minute: 3,
        ..Limits::default()
    });
    let mut first = Client::connect(&hub, reader(&[]));
    for _ in 0..2 {
        first.send(json!({"type": "ping"}));
        assert_eq!(first.json().await, json!({"type": "pong"}));
    }
    first.hang_up().await;
    // The same address gets the one message it had left, not a fresh three.
    let mut again = Client::connect(&hub, reader(&[]));
    again.send(json!({"type": "ping"}));
    assert_eq!(again.json().await, json!({"type": "pong"}));
    again.send(json!({"type": "ping"}));
    again
        .expect_error_then_close("rate_limited", close_code::POLICY)
        .await;
    again.hang_up().await;
    // Another address is not affected.
    let mut other = Client::connect(&hub, staff());
    for _ in 0..3 {
        other.send(json!({"type": "ping"}));
        assert_eq!(other.json().await, json!({"type": "pong"}));
    }
    other.hang_up().await;
}

#[tokio::test]
async fn catch_up_queries_run_one_at_a_time_per_connection() {
    let (source, gate) = MemorySource::gated();
    let source = Arc::new(source);
    let hub = Hub::new(Limits::default(), Arc::new(source.clone()));
    for room in ["a", "b", "c"] {
        source.store(&comment(room, 1));
    }
    let mut c = Client::connect(&hub, reader(&[]));
    for room in ["a", "b", "c"] {
        c.send(json!({"type": "subscribe", "thread": room, "since": 0}));
    }
    // Re-subscribing in a loop while a query runs queues no more queries.
    for _ in 0..5 {
        c.send(json!({"type": "subscribe", "thread": "a", "since": 0}));
    }
    c.send(json!({"type": "ping"}));
    assert_eq!(c.json().await, json!({"type": "pong"}));
    assert_eq!(source.queries.load(Ordering::SeqCst), 1);
    // Each finished query lets the next one start: a's first (stale) answer, then b, c and a.
    let mut subscribed = Vec::new();
    for started in 2..=4 {
        gate.add_permits(1);
        timeout(WAIT, async {
            while source.queries.load(Ordering::SeqCst) < started {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the next query starts");
        assert_eq!(source.queries.load(Ordering::SeqCst), started);
    }
    gate.add_permits(1);
    while subscribed.len() < 3 {
        let m = c.json().await;
        if m["type"] == "subscribed" {
            subscribed.push(m["thread"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(subscribed, ["b", "c", "a"]);
    assert_eq!(source.queries.load(Ordering::SeqCst), 4);
    c.hang_up().await;
}

/// Random frames, valid and not, against one connection: every frame the protocol parser
/// refuses gets its own `bad_message` error, nothing else comes but protocol answers, and the
/// connection stays up.
#[tokio::test]
async fn random_frames_get_protocol_answers_and_the_connection_stays() {
    let (hub, source) = hub_with(Limits {
        max_messages_per_minute: 0,
        max_subscriptions: 0,
        ..Limits::default()
    });
    source.store(&comment("t", 1));
    const PIECES: &[&str] = &[
        r#"{"type":"subscribe","thread":"t"}"#,
        r#"{"type":"subscribe","thread":"t","since":0}"#,
        r#"{"type":"subscribe","thread":"t","since":9223372036854775807}"#,
        r#"{"type":"subscribe","thread":"t","since":-5}"#,
        r#"{"type":"unsubscribe","thread":"t"}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"PING"}"#,
        r#"{"type":"subscribe"}"#,
        r#"{"type":"subscribe","thread":""}"#,
        r#"{"type":"subscribe","thread":null}"#,
        r#"{"type":"subscribe","thread":"t","since":1e400}"#,
        r#"{"type":"subscribe","thread":"\ud800"}"#,
        r#""thread":"moderation""#,
        r#"{"type":"#,
        "{",
        "}",
        "[",
        "]",
        ",",
        "\"",
        "null",
        "true",
        "\u{0}",
        "😀",
        " ",
    ];
    let mut rng = crate::test_rng::Lcg(99);
    let mut c = Client::connect(&hub, reader(&[]));
    let mut refused = 0;
    for round in 0..300 {
        if round % 25 == 0 {
            c.send_msg(Message::Binary(vec![0xff, 0, 1].into()));
            refused += 1;
            continue;
        }
        let text: String = (0..1 + rng.below(3)).map(|_| rng.pick(PIECES)).collect();
        if ClientMessage::parse(&text).is_err() {
            refused += 1;
        }
        c.send_msg(Message::Text(text.into()));
    }
    c.send(json!({"type": "unsubscribe", "thread": "end"}));
    let mut errors = 0;
    loop {
        let m = c.json().await;
        match m["type"].as_str().unwrap() {
            "error" => {
                assert_eq!(m["code"], "bad_message", "{m}");
                errors += 1;
            }
            "unsubscribed" if m["thread"] == "end" => break,
            "pong" | "subscribed" | "unsubscribed" | "reset" | "event" => {}
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert_eq!(errors, refused);
    c.send(json!({"type": "ping"}));
    loop {
        if c.json().await["type"] == "pong" {
            break;
        }
    }
    c.hang_up().await;
}

#[tokio::test]
async fn over_max_subscriptions_gives_error_then_close_1008() {
    let (hub, _) = hub_with(Limits {
        max_subscriptions: 2,
        ..Limits::default()
    });
    let mut c = Client::connect(&hub, reader(&[]));
    c.subscribe("a", None).await;
    c.subscribe("b", None).await;
    // Subscribing again to a room one already has does not count.
    c.subscribe("b", None).await;
    c.send(json!({"type": "subscribe", "thread": "c"}));
    c.expect_error_then_close("too_many_subscriptions", close_code::POLICY)
        .await;
    c.hang_up().await;
    assert_eq!(hub.subscriber_count("a"), 0);
}

#[tokio::test]
async fn over_max_message_bytes_gives_error_then_close_1008() {
    let (hub, _) = hub_with(Limits {
        max_message_bytes: 64,
        ..Limits::default()
    });
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "subscribe", "thread": "x".repeat(100)}));
    c.expect_error_then_close("message_too_large", close_code::POLICY)
        .await;

    let mut c = Client::connect(&hub, reader(&[]));
    c.send_msg(Message::Binary(vec![0u8; 65].into()));
    c.expect_error_then_close("message_too_large", close_code::POLICY)
        .await;
}

#[tokio::test]
async fn over_connections_per_ip_is_refused_with_error_then_close_1008() {
    let (hub, _) = hub_with(Limits {
        max_connections_per_ip: 2,
        ..Limits::default()
    });
    let a = hub.try_admit(ip(9)).unwrap();
    let _b = hub.try_admit(ip(9)).unwrap();
    assert!(hub.try_admit(ip(9)).is_none());
    assert!(
        hub.try_admit(ip(10)).is_some(),
        "other addresses are unaffected"
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    hub.refuse(TestSink { tx, stalled: false }).await;
    let Some(Message::Text(t)) = rx.recv().await else {
        panic!("an error message")
    };
    let v: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(v["code"], "too_many_connections");
    let Some(Message::Close(Some(f))) = rx.recv().await else {
        panic!("a close frame")
    };
    assert_eq!(f.code, close_code::POLICY);

    drop(a);
    assert!(
        hub.try_admit(ip(9)).is_some(),
        "dropping an admission frees it"
    );
}

#[tokio::test]
async fn a_served_connection_holds_its_ip_slot_until_it_ends() {
    let (hub, _) = hub_with(Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    });
    let c = Client::connect(&hub, reader(&[]));
    assert!(hub.try_admit(ip(1)).is_none());
    c.hang_up().await;
    assert!(hub.try_admit(ip(1)).is_some());
}

#[tokio::test]
async fn a_slow_consumer_is_dropped_without_holding_up_others() {
    let (hub, _) = hub_with(Limits {
        send_queue: 4,
        ..Limits::default()
    });
    let mut fast = Client::connect(&hub, reader(&[]));
    fast.subscribe("t", None).await;
    // The stalled client never accepts a byte; subscribe it through the hub directly.
    let slow = Client::connect_with(&hub, reader(&[]), true);
    slow.send(json!({"type": "subscribe", "thread": "t"}));
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.subscriber_count("t") < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let started = std::time::Instant::now();
    for id in 1..=50 {
        hub.publish(comment("t", id));
        // Give the fast client its turn, as real traffic would.
        tokio::task::yield_now().await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "publish never blocks"
    );
    for id in 1..=50 {
        assert_eq!(fast.event().await.0, id);
    }
    // The stalled one was cut off: its task ends and it left the room.
    timeout(WAIT, slow.task).await.expect("dropped").unwrap();
    assert_eq!(hub.subscriber_count("t"), 1);
    assert_eq!(hub.connection_count(), 1);
}

#[tokio::test]
async fn ping_gets_pong_and_heartbeats_and_idle_timeout_work() {
    let (hub, _) = hub_with(Limits {
        heartbeat: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(1000),
        ..Limits::default()
    });
    let mut c = Client::connect(&hub, reader(&[]));
    c.send(json!({"type": "ping"}));
    assert_eq!(c.json().await, json!({"type": "pong"}));

    // The server pings on its own.
    let m = timeout(WAIT, c.from_server.recv()).await.unwrap().unwrap();
    assert!(matches!(m, Message::Ping(_)), "{m:?}");

    // Answering pings keeps the connection open past the idle timeout...
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        if let Ok(Some(Message::Ping(p))) =
            timeout(Duration::from_millis(50), c.from_server.recv()).await
        {
            c.send_msg(Message::Pong(p));
        }
    }
    assert_eq!(hub.connection_count(), 1);
    // ...silence closes it.
    c.expect_close(close_code::NORMAL).await;
    timeout(WAIT, c.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn readers_cannot_subscribe_to_moderation_staff_can() {
    let (hub, _) = hub();
    let mut r = Client::connect(&hub, reader(&[]));
    r.send(json!({"type": "subscribe", "thread": "moderation"}));
    let v = r.json().await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    assert_eq!(hub.subscriber_count(MODERATION_ROOM), 0);
    // The connection stays usable.
    r.send(json!({"type": "ping"}));
    assert_eq!(r.json().await["type"], "pong");

    let mut s = Client::connect(&hub, staff());
    s.subscribe(MODERATION_ROOM, None).await;
    // Even an event mistakenly carrying a reader payload reaches staff only.
    hub.publish(Event::public(
        MODERATION_ROOM,
        1,
        Payload::stats(&[("held".into(), 1)]),
    ));
    assert_eq!(s.event().await.0, 1);
    r.silent(50).await;
}

#[tokio::test]
async fn bad_messages_get_an_error_and_the_connection_stays() {
    let (hub, _) = hub();
    let mut c = Client::connect(&hub, reader(&[]));
    c.send_msg(Message::Text("not json".into()));
    assert_eq!(c.json().await["code"], "bad_message");
    c.send(json!({"type": "dance"}));
    assert_eq!(c.json().await["code"], "bad_message");
    c.send(json!({"type": "subscribe", "thread": ""}));
    assert_eq!(c.json().await["code"], "bad_message");
    c.send(json!({"type": "ping"}));
    assert_eq!(c.json().await["type"], "pong");
}

#[tokio::test]
async fn shutdown_notifies_everyone_then_closes_1001() {
    let (hub, _) = hub();
    let mut a = Client::connect(&hub, reader(&[]));
    let mut b = Client::connect(&hub, staff());
    a.subscribe("t", None).await;
    hub.shutdown("Back in a minute");
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.json().await,
            json!({"type": "event", "id": 0, "thread": null,
                   "event": {"kind": "system_notification", "message": "Back in a minute"}})
        );
        c.expect_close(close_code::GOING_AWAY).await;
    }
    assert!(hub.try_admit(ip(1)).is_none(), "no new connections");
    a.to_server = None;
    b.to_server = None;
    assert!(hub.wait_closed(WAIT).await);
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test]
async fn a_client_close_ends_the_connection() {
    let (hub, _) = hub();
    let mut c = Client::connect(&hub, reader(&[]));
    c.subscribe("t", None).await;
    c.send_msg(Message::Close(None));
    timeout(WAIT, &mut c.task).await.unwrap().unwrap();
    assert_eq!(hub.subscriber_count("t"), 0);
}

#[tokio::test]
async fn fan_out_encodes_once_per_role() {
    let (hub, _) = hub();
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = Client::connect(&hub, if i % 2 == 0 { reader(&[]) } else { staff() });
        c.subscribe("t", None).await;
        clients.push(c);
    }
    hub.publish(held("t", 1, "nobody"));
    hub.publish(comment("t", 2));
    let mut texts = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 1 {
            let Message::Text(t) = c.frame().await else {
                panic!()
            };
            texts.push(t);
        }
        let Message::Text(t) = c.frame().await else {
            panic!()
        };
        assert!(t.as_str().contains("\"id\":2"));
    }
    // Every staff member got the very same bytes (one encoding shared).
    let first = texts[0].as_str().as_ptr();
    assert!(texts.iter().all(|t| t.as_str().as_ptr() == first));
}

/// The per-connection future stays small: it is most of an idle connection's memory.
#[tokio::test]
async fn an_idle_connection_is_small() {
    let (hub, _) = hub();
    let admission = hub.try_admit(ip(1)).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (_in_tx, in_rx) = mpsc::unbounded_channel();
    let fut = hub.serve(
        TestSink { tx, stalled: false },
        TestStream(in_rx),
        reader(&[]),
        admission,
    );
    let size = std::mem::size_of_val(&fut);
    println!("serve future: {size} bytes");
    assert!(size < 2048, "serve future is {size} bytes");
}

/// Compile-time check: serving axum's WebSocket halves is a `Send` future, as
/// `WebSocketUpgrade::on_upgrade` requires.
#[allow(dead_code)]
fn serve_on_axum_websocket_is_send(hub: Hub, ws: axum::extract::ws::WebSocket, a: Admission) {
    use futures_util::StreamExt;
    fn assert_send<T: Send>(_: T) {}
    let (sink, stream) = ws.split();
    assert_send(async move { hub.serve(sink, stream, reader(&[]), a).await });
}
