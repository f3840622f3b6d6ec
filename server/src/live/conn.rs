//! One connection's loop: client messages, queued frames, catch-up replays, heartbeats, limits.
//!
//! Everything a connection does runs in the one task that awaits [`serve`] (axum's upgrade
//! task), so an idle connection costs one task, one small queue and its socket buffers.
//!
//! Catch-up without gaps or duplicates: on `subscribe`, the connection joins the room first
//! (live events start queueing), then reads the stored events. Live events of that room that
//! arrive meanwhile are buffered. When the replay is back, the connection sends the replayed
//! events, then `subscribed`, then the buffered live events minus any whose id was replayed
//! or is at or below `since`. An event committed before the replay query is in the replay; one
//! committed after it is published after the join, so it is queued live: none is missed.
//! Duplicates are recognized by membership in the replayed set rather than by `id <= last
//! replayed id`, because `publish` calls from concurrent requests can arrive out of id order.

use super::hub::{Frame, Inner, Peer, signal};
use super::protocol::{ClientMessage, ErrorCode, ServerMessage, ToFrame, close_message};
use super::{Admission, Event, EventSource, Identity, MODERATION_ROOM, ReplayError, close_code};
use axum::extract::ws::Message;
use futures_util::future::BoxFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// How long a closing connection reads on, waiting for the client's close frame: closing a
/// socket with unread client data makes the kernel send a reset, which can destroy our close
/// frame before the client reads it.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// How long a slow consumer gets to take its error and close frame before it is cut off.
const KILL_GRACE: Duration = Duration::from_millis(500);
/// How long a replayed event's id is remembered to drop its live copy. `publish` runs right
/// after commit, so a live copy arrives within milliseconds; this is a wide margin.
const DEDUPE_WINDOW: Duration = Duration::from_secs(30);
/// Most queued frames written before one flush.
const BATCH: usize = 64;
/// Timer deadline used when heartbeats and idle timeouts are both off.
const FAR: Duration = Duration::from_secs(86_400);

/// Why a connection's loop ended; decides what is sent before the socket is dropped.
#[derive(Debug)]
enum End {
    /// The socket failed or ended: nothing more can be sent.
    Gone,
    /// The client sent a close frame.
    PeerClosed,
    /// A limit was exceeded: `error` with this code and message, then close 1008.
    Violation(ErrorCode, String),
    /// The send queue overflowed or a write stalled.
    Slow,
    /// No client frame for the idle timeout.
    Idle,
    /// The hub is shutting down with this message.
    Shutdown(Arc<str>),
    /// The staff rights the connection was opened with ended (see [`super::Hub::serve_staff`]).
    StaffEnded,
}

/// One room subscription of this connection.
#[derive(Debug)]
enum Sub {
    /// Waiting for the stored events; live frames are buffered (`None`: the buffer overflowed
    /// and the client will get `reset` instead).
    Pending {
        token: u64,
        since: Option<i64>,
        buffer: Option<Vec<Arc<Frame>>>,
    },
    /// Delivering live frames, except ids at or below `floor` and ids replayed `at`.
    Live {
        floor: i64,
        replayed: Box<[i64]>,
        at: Instant,
    },
}

/// The connection's subscriptions; leaves every room when dropped, even if the connection's
/// future is cancelled.
///
/// A small vector rather than a map: a connection has a handful of rooms (at most
/// [`super::Limits::max_subscriptions`]), one entry costs 72 bytes instead of a hash table's
/// minimum of four, and a frame's room is found by pointer (frames share the room key).
struct Subs {
    inner: Arc<Inner>,
    peer_id: u64,
    list: Vec<(Arc<str>, Sub)>,
}

impl Subs {
    fn position(&self, room: &str) -> Option<usize> {
        self.list.iter().position(|(k, _)| &**k == room)
    }

    /// The subscription a frame belongs to.
    fn for_frame(&mut self, room: &Arc<str>) -> Option<&mut Sub> {
        let i = match self.list.iter().position(|(k, _)| Arc::ptr_eq(k, room)) {
            Some(i) => Some(i),
            None => self.position(room),
        }?;
        Some(&mut self.list[i].1)
    }

    fn get_mut(&mut self, room: &str) -> Option<&mut Sub> {
        let i = self.position(room)?;
        Some(&mut self.list[i].1)
    }

    /// The shared key of a room this connection is subscribed to.
    fn key(&self, room: &str) -> Option<Arc<str>> {
        self.position(room).map(|i| self.list[i].0.clone())
    }

    fn insert(&mut self, room: Arc<str>, sub: Sub) {
        match self.position(&room) {
            Some(i) => self.list[i].1 = sub,
            None => self.list.push((room, sub)),
        }
    }

    /// Forgets a subscription and leaves its room; false if there was none.
    fn remove(&mut self, room: &str) -> bool {
        let Some(i) = self.position(room) else {
            return false;
        };
        let (key, _) = self.list.swap_remove(i);
        self.inner.leave(&key, self.peer_id);
        true
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn leave_all(&mut self) {
        for (room, _) in &self.list {
            self.inner.leave(room, self.peer_id);
        }
        self.list = Vec::new();
    }
}

impl Drop for Subs {
    fn drop(&mut self) {
        self.leave_all();
    }
}

/// Keeps the connection in the hub's registry (for shutdown and
/// [`super::Hub::connection_count`]) until it ends, even if its future is dropped.
struct Registration {
    inner: Arc<Inner>,
    peer_id: u64,
}

impl Registration {
    fn new(inner: Arc<Inner>, peer: &Arc<Peer>) -> Self {
        inner.register(peer);
        Registration {
            inner,
            peer_id: peer.id,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.unregister(self.peer_id);
    }
}

/// What the event source answered for one subscribe.
enum Fetched {
    /// No `since`: just the newest id.
    Fresh { last_id: i64 },
    /// The events after `since`.
    Replay { last_id: i64, events: Vec<Event> },
    /// `since` cannot be replayed: too old, too many events, or unknown to this database.
    Reset { last_id: i64 },
}

/// A finished replay, matched to its subscription by `token`.
struct Replayed {
    room: Arc<str>,
    token: u64,
    result: Result<Fetched, ReplayError>,
}

/// Reads what a subscribe needs from the event source.
async fn fetch(
    source: &dyn EventSource,
    room: &str,
    since: Option<i64>,
    limit: usize,
) -> Result<Fetched, ReplayError> {
    let Some(since) = since else {
        return Ok(Fetched::Fresh {
            last_id: source.last_id(room).await?,
        });
    };
    if limit == 0 {
        return Ok(Fetched::Reset {
            last_id: source.last_id(room).await?,
        });
    }
    // Ask for one more than the limit to tell "exactly the limit" from "too many".
    let (events, last_id) = futures_util::future::join(
        source.events_since(room, since, limit.saturating_add(1)),
        source.last_id(room),
    )
    .await;
    let last_id = last_id?;
    match events {
        Err(ReplayError::TooOld) => Ok(Fetched::Reset { last_id }),
        Err(e) => Err(e),
        Ok(events) if events.len() > limit => Ok(Fetched::Reset { last_id }),
        // A cursor beyond the newest event comes from another database (a restore, a
        // reinstall): what the client holds cannot be trusted.
        Ok(_) if since > last_id => Ok(Fetched::Reset { last_id }),
        Ok(mut events) => {
            // The source promises this; a wrong row must still not leak into the room.
            events.retain(|e| e.room == room && e.id > since);
            events.sort_by_key(|e| e.id);
            Ok(Fetched::Replay { last_id, events })
        }
    }
}

/// A token bucket: bursts up to `capacity`, refilled at `capacity` per minute. When a
/// connection ends, its bucket is parked in the hub under the client's address (see
/// `Inner::park_budget`), so hanging up and reconnecting does not refill it.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    capacity: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Option<Self> {
        (per_minute > 0).then(|| Bucket {
            tokens: f64::from(per_minute),
            capacity: f64::from(per_minute),
            last: now,
        })
    }

    /// Adds what has refilled since it was last used.
    fn refill(&mut self, now: Instant) {
        let refill = now.duration_since(self.last).as_secs_f64() * self.capacity / 60.0;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.last = now;
    }

    /// Whether a minute has passed since its last use: it is full again, and need not be kept.
    pub(super) fn is_full_by(&self, now: Instant) -> bool {
        now.duration_since(self.last) >= Duration::from_secs(60)
    }

    /// The emptier of two buckets of one address (two of its connections ended).
    pub(super) fn emptier(mut self, mut other: Bucket, now: Instant) -> Bucket {
        self.refill(now);
        other.refill(now);
        if other.tokens < self.tokens {
            other
        } else {
            self
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a raised signal means for the connection.
fn signalled(inner: &Inner, bits: u8) -> End {
    match inner.shutdown.get() {
        Some(message) if bits & signal::SHUTDOWN != 0 => End::Shutdown(message.clone()),
        _ => End::Slow,
    }
}

/// Runs a sink operation; gives up when the connection is signalled (slow consumer,
/// shutdown) or the write takes longer than `limit` (zero: no limit).
async fn io<F, T, E>(inner: &Inner, peer: &Peer, fut: F) -> Result<(), End>
where
    F: Future<Output = Result<T, E>> + Send,
{
    let mut fut = pin!(fut);
    // Fast path, with no timer: a socket with room in its buffer accepts at once.
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(r) => r.map(|_| ()).map_err(|_| End::Gone),
        // The slow path is boxed so its timer does not enlarge every connection's future.
        Poll::Pending => Box::pin(stalled(inner, peer, fut)).await,
    }
}

/// The slow path of [`io`].
async fn stalled<F, T, E>(inner: &Inner, peer: &Peer, fut: std::pin::Pin<&mut F>) -> Result<(), End>
where
    F: Future<Output = Result<T, E>>,
{
    let limit = inner.limits.write_timeout;
    let bounded = async {
        if limit.is_zero() {
            Some(fut.await)
        } else {
            tokio::time::timeout(limit, fut).await.ok()
        }
    };
    tokio::select! {
        r = bounded => match r {
            Some(Ok(_)) => Ok(()),
            Some(Err(_)) => Err(End::Gone),
            None => Err(End::Slow),
        },
        bits = std::future::poll_fn(|cx| peer.poll_signal(cx)) => Err(signalled(inner, bits)),
    }
}

/// Completes with `fut`; pending for ever without one.
async fn until(fut: &mut Option<BoxFuture<'static, ()>>) {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The replay in flight, once finished; pending while there is none.
async fn next_replay(replay: &mut Option<BoxFuture<'static, Replayed>>) -> Replayed {
    match replay {
        Some(r) => r.await,
        None => std::future::pending().await,
    }
}

/// The next client message; `None` when the socket ended or failed (the error itself is
/// dropped here so it is never held across an await).
async fn next_message<R, E>(stream: &mut R) -> Option<Message>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    match stream.next().await {
        Some(Ok(m)) => Some(m),
        _ => None,
    }
}

/// Sends a last message, bounded in time, ignoring failure (the socket is going away).
async fn send_last<S>(sink: &mut S, msg: Message, limit: Duration) -> bool
where
    S: Sink<Message> + Unpin,
{
    matches!(
        tokio::time::timeout(limit, sink.send(msg)).await,
        Ok(Ok(()))
    )
}

/// The message a shutdown sends before closing.
fn system_notification(message: &str) -> Message {
    ServerMessage::system_notification(message).to_message()
}

/// The longest a final message may take: the write timeout, but never unbounded.
fn final_write_limit(inner: &Inner) -> Duration {
    let w = inner.limits.write_timeout;
    if w.is_zero() {
        CLOSE_LINGER
    } else {
        w.min(CLOSE_LINGER * 5)
    }
}

/// Refuses a connection that was not admitted (see [`super::Hub::refuse`]).
pub(crate) async fn refuse<S>(inner: &Inner, mut sink: S)
where
    S: Sink<Message> + Unpin + Send,
{
    let limit = final_write_limit(inner);
    if let Some(message) = inner.shutdown.get() {
        if send_last(&mut sink, system_notification(message), limit).await {
            send_last(
                &mut sink,
                close_message(close_code::GOING_AWAY, "server shutting down"),
                limit,
            )
            .await;
        }
        return;
    }
    let error = ServerMessage::Error {
        code: ErrorCode::TooManyConnections,
        message: "Too many connections from your address.".into(),
        thread: None,
    };
    if send_last(&mut sink, error.to_message(), limit).await {
        send_last(
            &mut sink,
            close_message(close_code::POLICY, "too many connections"),
            limit,
        )
        .await;
    }
}

/// Serves one connection (see [`super::Hub::serve`]).
pub(crate) async fn serve<S, R, E>(
    inner: Arc<Inner>,
    sink: S,
    stream: R,
    identity: Identity,
    admission: Admission,
    staff_ends: Option<BoxFuture<'static, ()>>,
) where
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
{
    // Held until the connection ends: dropping it frees the IP's slot.
    let budget_key = admission.key();
    let peer = Arc::new(Peer::new(
        inner.next_peer_id(),
        &identity,
        inner.limits.send_queue,
    ));
    let _registration = Registration::new(inner.clone(), &peer);
    let now = Instant::now();
    let mut conn = Conn {
        subs: Subs {
            inner: inner.clone(),
            peer_id: peer.id,
            list: Vec::new(),
        },
        // An address that hung up within the last minute gets back the budget it left with.
        bucket: inner
            .take_budget(budget_key)
            .or_else(|| Bucket::new(inner.limits.max_messages_per_minute, now)),
        next_ping: now + inner.limits.heartbeat,
        last_seen: now,
        inner,
        peer,
        sink,
        stream,
        replay: None,
        waiting: VecDeque::new(),
        staff_ends: staff_ends.filter(|_| identity.staff),
        next_token: 0,
    };
    let end = conn.run().await;
    tracing::debug!(ip = %identity.ip, staff = identity.staff, reason = ?end, "live connection ends");
    if let Some(bucket) = conn.bucket.take() {
        conn.inner.park_budget(budget_key, bucket);
    }
    // Boxed: the goodbye is needed once, the memory of an idle connection always.
    Box::pin(conn.finish(end)).await;
    drop(admission);
}

/// One connection's state.
struct Conn<S, R> {
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    sink: S,
    stream: R,
    subs: Subs,
    /// The one catch-up query in flight: a client cannot make the database run many at once
    /// by subscribing to many rooms or re-subscribing in a loop.
    replay: Option<BoxFuture<'static, Replayed>>,
    /// Rooms whose pending subscribe waits for its query, each at most once (a re-subscribe
    /// while waiting only updates the pending `since`).
    waiting: VecDeque<Arc<str>>,
    /// Completes when a staff connection's rights end.
    staff_ends: Option<BoxFuture<'static, ()>>,
    bucket: Option<Bucket>,
    last_seen: Instant,
    next_ping: Instant,
    next_token: u64,
}

impl<S, R, E> Conn<S, R>
where
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
{
    async fn run(&mut self) -> End {
        let mut timer = pin!(tokio::time::sleep_until(self.deadline()));
        loop {
            tokio::select! {
                () = std::future::poll_fn(|cx| self.peer.poll_mail(cx)) => {
                    let bits = self.peer.signals();
                    if bits != 0 {
                        return signalled(&self.inner, bits);
                    }
                    if let Err(end) = self.deliver().await {
                        return end;
                    }
                }
                msg = next_message(&mut self.stream) => {
                    let Some(msg) = msg else { return End::Gone };
                    self.last_seen = Instant::now();
                    // Boxed, like every rare path: see `serve`.
                    if let Err(end) = Box::pin(self.on_client(msg)).await {
                        return end;
                    }
                }
                done = next_replay(&mut self.replay) => {
                    self.replay = None;
                    if let Err(end) = Box::pin(self.on_replayed(done)).await {
                        return end;
                    }
                    self.start_replay();
                }
                () = until(&mut self.staff_ends) => return End::StaffEnded,
                () = &mut timer => {
                    if let Err(end) = Box::pin(self.on_timer()).await {
                        return end;
                    }
                    timer.as_mut().reset(self.deadline());
                }
            }
        }
    }

    /// The next time the timer must wake: a ping or the idle limit, whichever comes first.
    /// The idle limit moves with every client frame; the timer re-checks when it wakes.
    fn deadline(&self) -> Instant {
        let limits = &self.inner.limits;
        let mut at = Instant::now() + FAR;
        if !limits.heartbeat.is_zero() {
            at = at.min(self.next_ping);
        }
        if !limits.idle_timeout.is_zero() {
            at = at.min(self.last_seen + limits.idle_timeout);
        }
        at
    }

    async fn on_timer(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let limits = &self.inner.limits;
        if !limits.idle_timeout.is_zero() && now >= self.last_seen + limits.idle_timeout {
            return Err(End::Idle);
        }
        for (_, sub) in &mut self.subs.list {
            if let Sub::Live { replayed, at, .. } = sub
                && !replayed.is_empty()
                && now.duration_since(*at) >= DEDUPE_WINDOW
            {
                *replayed = Box::default();
            }
        }
        if !limits.heartbeat.is_zero() && now >= self.next_ping {
            self.next_ping = now + limits.heartbeat;
            self.send(Message::Ping(Default::default())).await?;
        }
        Ok(())
    }

    async fn send(&mut self, msg: Message) -> Result<(), End> {
        io(&self.inner, &self.peer, self.sink.send(msg)).await
    }

    async fn feed(&mut self, msg: Message) -> Result<(), End> {
        io(&self.inner, &self.peer, self.sink.feed(msg)).await
    }

    async fn flush(&mut self) -> Result<(), End> {
        io(&self.inner, &self.peer, self.sink.flush()).await
    }

    async fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        thread: Option<&str>,
    ) -> Result<(), End> {
        let msg = ServerMessage::Error {
            code,
            message: message.to_owned(),
            thread: thread.map(str::to_owned),
        };
        self.send(msg.to_message()).await
    }

    /// Whether a queued frame goes out now; buffers it while its room is replaying.
    fn admit(&mut self, frame: &Arc<Frame>) -> bool {
        let cap = self.inner.limits.send_queue.max(1);
        match self.subs.for_frame(&frame.room) {
            // Unsubscribed after the frame was queued.
            None => false,
            Some(Sub::Pending { buffer, .. }) => {
                match buffer {
                    Some(b) if b.len() < cap => b.push(frame.clone()),
                    // Too much happened during the replay: the client will get `reset`.
                    _ => *buffer = None,
                }
                false
            }
            Some(Sub::Live {
                floor, replayed, ..
            }) => frame.id > *floor && replayed.binary_search(&frame.id).is_err(),
        }
    }

    /// Writes queued frames (up to a batch, so client messages get their turn), then
    /// flushes once.
    async fn deliver(&mut self) -> Result<(), End> {
        let mut written = 0usize;
        for _ in 0..BATCH {
            let Some(frame) = self.peer.pop() else {
                break;
            };
            if self.admit(&frame) {
                self.feed(Message::Text(frame.text.clone())).await?;
                written += 1;
            }
        }
        if written > 0 {
            self.flush().await?;
        }
        Ok(())
    }

    fn check_size(&self, len: usize) -> Result<(), End> {
        let max = self.inner.limits.max_message_bytes;
        if max != 0 && len > max {
            return Err(End::Violation(
                ErrorCode::MessageTooLarge,
                format!("Messages are limited to {max} bytes."),
            ));
        }
        Ok(())
    }

    fn check_rate(&mut self) -> Result<(), End> {
        if let Some(bucket) = &mut self.bucket
            && !bucket.take(Instant::now())
        {
            let max = self.inner.limits.max_messages_per_minute;
            return Err(End::Violation(
                ErrorCode::RateLimited,
                format!("At most {max} messages per minute."),
            ));
        }
        Ok(())
    }

    async fn on_client(&mut self, msg: Message) -> Result<(), End> {
        match msg {
            Message::Text(text) => {
                self.check_size(text.len())?;
                self.check_rate()?;
                match ClientMessage::parse(text.as_str()) {
                    Ok(m) => self.on_message(m).await,
                    Err(e) => self.send_error(ErrorCode::BadMessage, &e, None).await,
                }
            }
            Message::Binary(data) => {
                self.check_size(data.len())?;
                self.check_rate()?;
                self.send_error(
                    ErrorCode::BadMessage,
                    "Only JSON text messages are accepted.",
                    None,
                )
                .await
            }
            Message::Ping(_) => {
                self.check_rate()?;
                // The WebSocket layer queued the pong; make sure it goes out now.
                self.flush().await
            }
            Message::Pong(_) => Ok(()),
            Message::Close(_) => Err(End::PeerClosed),
        }
    }

    async fn on_message(&mut self, msg: ClientMessage) -> Result<(), End> {
        match msg {
            ClientMessage::Ping => self.send(ServerMessage::Pong.to_message()).await,
            ClientMessage::Subscribe { thread, since } => self.subscribe(thread, since).await,
            ClientMessage::Unsubscribe { thread } => {
                self.subs.remove(&thread);
                let msg = ServerMessage::Unsubscribed { thread };
                self.send(msg.to_message()).await
            }
        }
    }

    async fn subscribe(&mut self, thread: String, since: Option<i64>) -> Result<(), End> {
        if thread == MODERATION_ROOM && !self.peer.staff {
            return self
                .send_error(
                    ErrorCode::Forbidden,
                    "Only staff may subscribe to the moderation room.",
                    Some(&thread),
                )
                .await;
        }
        let existing = self.subs.key(&thread);
        let room = match existing {
            // Subscribing again (e.g. with a newer `since`) keeps the room membership, so no
            // live event can slip through between the two.
            Some(room) => room,
            None => {
                let max = self.inner.limits.max_subscriptions;
                if max != 0 && self.subs.len() >= max as usize {
                    return Err(End::Violation(
                        ErrorCode::TooManySubscriptions,
                        format!("At most {max} subscriptions per connection."),
                    ));
                }
                // Join before reading stored events: see the module documentation.
                self.inner.join(&thread, &self.peer)
            }
        };
        self.next_token += 1;
        let token = self.next_token;
        self.subs.insert(
            room.clone(),
            Sub::Pending {
                token,
                since,
                buffer: Some(Vec::new()),
            },
        );
        if !self.waiting.contains(&room) {
            self.waiting.push_back(room);
        }
        self.start_replay();
        Ok(())
    }

    /// Starts the next waiting room's catch-up query unless one is in flight. A room that
    /// was unsubscribed meanwhile is skipped; a room re-subscribed while its query ran is
    /// waiting again, and the finished query's answer is ignored as stale.
    fn start_replay(&mut self) {
        while self.replay.is_none() {
            let Some(room) = self.waiting.pop_front() else {
                return;
            };
            let Some(&mut Sub::Pending { token, since, .. }) = self.subs.get_mut(&room) else {
                continue;
            };
            let source = self.inner.source.clone();
            let limit = self.inner.limits.max_replay;
            self.replay = Some(Box::pin(async move {
                let result = fetch(&*source, &room, since, limit).await;
                Replayed {
                    room,
                    token,
                    result,
                }
            }));
        }
    }

    async fn on_replayed(&mut self, done: Replayed) -> Result<(), End> {
        let Some(Sub::Pending {
            token,
            since,
            buffer,
        }) = self.subs.get_mut(&done.room)
        else {
            // Unsubscribed meanwhile.
            return Ok(());
        };
        if *token != done.token {
            // Subscribed again meanwhile; the newer replay decides.
            return Ok(());
        }
        let since = *since;
        let buffer = buffer.take();
        let room = done.room;
        let fetched = match done.result {
            Ok(f) => f,
            Err(e) => {
                self.subs.remove(&room);
                tracing::warn!(room = %room, error = %e, "live catch-up failed");
                return self
                    .send_error(
                        ErrorCode::ReplayFailed,
                        "Live updates are unavailable right now; subscribe again later.",
                        Some(&room),
                    )
                    .await;
            }
        };
        let (last_id, events, reset) = match fetched {
            Fetched::Fresh { last_id } => (last_id, Vec::new(), buffer.is_none()),
            // An overflowed buffer lost live events: the client must refetch anyway.
            Fetched::Replay { last_id, .. } if buffer.is_none() => (last_id, Vec::new(), true),
            Fetched::Replay { last_id, events } => (last_id, events, false),
            Fetched::Reset { last_id } => (last_id, Vec::new(), true),
        };
        if reset {
            let msg = ServerMessage::Reset {
                thread: room.to_string(),
            };
            self.feed(msg.to_message()).await?;
        }
        let mut ids = Vec::with_capacity(events.len());
        for event in &events {
            ids.push(event.id);
            if let Some(payload) = event.payload_for(self.peer.staff, &self.peer.author_tokens) {
                let msg = ServerMessage::Event {
                    id: event.id,
                    thread: Some(room.to_string()),
                    event: payload.clone(),
                };
                self.feed(msg.to_message()).await?;
            }
        }
        let last_id = ids.last().map_or(last_id, |&newest| newest.max(last_id));
        let msg = ServerMessage::Subscribed {
            thread: room.to_string(),
            last_id,
        };
        self.feed(msg.to_message()).await?;
        let floor = match since {
            Some(since) if !reset => since,
            _ => i64::MIN,
        };
        self.subs.insert(
            room,
            Sub::Live {
                floor,
                replayed: ids.into_boxed_slice(),
                at: Instant::now(),
            },
        );
        for frame in buffer.into_iter().flatten() {
            if self.admit(&frame) {
                self.feed(Message::Text(frame.text.clone())).await?;
            }
        }
        self.flush().await
    }

    /// Says goodbye as `end` requires, then lets the socket drop.
    async fn finish(mut self, end: End) {
        // Leave the rooms first so publishers stop queueing for a connection that is going.
        self.subs.leave_all();
        let limit = final_write_limit(&self.inner);
        let goodbye = match end {
            End::Gone => return,
            End::PeerClosed => {
                // Sends the close reply the WebSocket layer queued.
                let _ = tokio::time::timeout(limit, self.sink.flush()).await;
                return;
            }
            End::Slow => {
                // The socket is likely stalled: a short grace, no lingering.
                let error = ServerMessage::Error {
                    code: ErrorCode::SlowConsumer,
                    message: "Too far behind; reconnect with since.".into(),
                    thread: None,
                };
                if send_last(&mut self.sink, error.to_message(), KILL_GRACE).await {
                    send_last(
                        &mut self.sink,
                        close_message(close_code::POLICY, "slow consumer"),
                        KILL_GRACE,
                    )
                    .await;
                }
                return;
            }
            End::Violation(code, message) => {
                let error = ServerMessage::Error {
                    code,
                    message,
                    thread: None,
                };
                if !send_last(&mut self.sink, error.to_message(), limit).await {
                    return;
                }
                close_message(close_code::POLICY, code.as_str())
            }
            End::Idle => close_message(close_code::NORMAL, "idle timeout"),
            End::StaffEnded => {
                let notice = system_notification("Your session ended; reconnecting as a reader.");
                if !send_last(&mut self.sink, notice, limit).await {
                    return;
                }
                close_message(close_code::NORMAL, "session ended")
            }
            End::Shutdown(message) => {
                if !send_last(&mut self.sink, system_notification(&message), limit).await {
                    return;
                }
                close_message(close_code::GOING_AWAY, "server shutting down")
            }
        };
        if !send_last(&mut self.sink, goodbye, limit).await {
            return;
        }
        // Wait briefly for the client's close frame (see CLOSE_LINGER).
        let stream = &mut self.stream;
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(msg) = next_message(stream).await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
