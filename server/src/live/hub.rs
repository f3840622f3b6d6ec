//! The hub's shared state: rooms and their subscribers, fan-out, per-IP admission, shutdown.
//!
//! Fan-out design: each room holds a list of subscribed connections (`Arc<Peer>`), each with a
//! bounded queue of `Arc<Frame>`. Publishing encodes an event's JSON at most once per role
//! (staff, reader, author) and pushes a reference-counted copy into each subscriber's queue
//! without waiting for any socket: a full queue marks that connection as a slow consumer, and
//! the connection drops itself. Holding the rooms' read lock while doing so is short (a lock,
//! a push and a wake per subscriber) and lets publishes run in parallel.

use super::conn::{self, Bucket};
use super::protocol::{ServerMessage, ToFrame};
use super::{Event, EventSource, Identity, Limits};
use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::future::BoxFuture;
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// One event as encoded for one role: shared by every subscriber of that role.
#[derive(Debug)]
pub(crate) struct Frame {
    /// The room, to route it and check it against the connection's subscription.
    pub room: Arc<str>,
    /// The event id, to drop duplicates of replayed events.
    pub id: i64,
    /// The complete `{"type":"event",...}` message.
    pub text: Utf8Bytes,
}

impl Frame {
    /// Encodes `payload` as the event message for `room`.
    pub fn new(room: Arc<str>, id: i64, payload: &app::live::Event) -> Self {
        let text = ServerMessage::Event {
            id,
            thread: Some(room.to_string()),
            event: payload.clone(),
        }
        .encode_bytes();
        Frame { room, id, text }
    }
}

/// Signal bits a connection is woken with.
pub(crate) mod signal {
    /// The queue overflowed: a slow consumer.
    pub const KILL: u8 = 1;
    /// The hub is shutting down.
    pub const SHUTDOWN: u8 = 2;
}

/// What the hub knows of one connection, and its mailbox: a bounded queue of frames plus
/// signal bits, with one waker.
///
/// Why not a tokio mpsc channel: it allocates a 32-slot block and a semaphore up front for
/// every connection, idle or not (about 600 bytes), and waiting on a `Notify` or `watch` for
/// the kill and shutdown signals registers and unregisters a waiter under a lock on every
/// loop turn. An empty `VecDeque` allocates nothing, and the `AtomicWaker` is lock-free.
pub(crate) struct Peer {
    pub id: u64,
    pub staff: bool,
    pub author_tokens: Box<[String]>,
    capacity: usize,
    queue: Mutex<VecDeque<Arc<Frame>>>,
    signals: AtomicU8,
    waker: AtomicWaker,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("staff", &self.staff)
            .finish_non_exhaustive()
    }
}

impl Peer {
    pub fn new(id: u64, identity: &Identity, capacity: usize) -> Self {
        Peer {
            id,
            staff: identity.staff,
            author_tokens: identity.author_tokens.clone().into_boxed_slice(),
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            signals: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Frame>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame without waiting; a full queue marks the connection a slow consumer.
    fn offer(&self, frame: Arc<Frame>) {
        let mut queue = self.queue();
        if queue.len() >= self.capacity {
            drop(queue);
            self.signal(signal::KILL);
            return;
        }
        queue.push_back(frame);
        drop(queue);
        self.waker.wake();
    }

    /// The oldest queued frame.
    pub fn pop(&self) -> Option<Arc<Frame>> {
        let mut queue = self.queue();
        let frame = queue.pop_front();
        // Give a burst's memory back once it is written: idle connections stay small.
        if queue.is_empty() && queue.capacity() > 8 {
            queue.shrink_to_fit();
        }
        frame
    }

    /// Raises signal bits and wakes the connection.
    pub fn signal(&self, bits: u8) {
        self.signals.fetch_or(bits, Ordering::AcqRel);
        self.waker.wake();
    }

    /// The signal bits raised so far.
    pub fn signals(&self) -> u8 {
        self.signals.load(Ordering::Acquire)
    }

    /// Ready when a signal is raised or a frame is queued.
    pub fn poll_mail(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Register first, then look: a frame queued in between still wakes us.
        self.waker.register(cx.waker());
        if self.signals() != 0 || !self.queue().is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Ready with the bits when a signal is raised (frames do not count).
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<u8> {
        self.waker.register(cx.waker());
        match self.signals() {
            0 => Poll::Pending,
            bits => Poll::Ready(bits),
        }
    }
}

/// Per-event lazy encodings, one per role, each made at most once.
struct Encodings<'e> {
    event: &'e Event,
    room: Arc<str>,
    staff: Option<Arc<Frame>>,
    reader: Option<Arc<Frame>>,
    author: Option<Arc<Frame>>,
}

impl<'e> Encodings<'e> {
    fn new(event: &'e Event, room: Arc<str>) -> Self {
        Encodings {
            event,
            room,
            staff: None,
            reader: None,
            author: None,
        }
    }

    /// The frame this peer gets, or `None` when it gets nothing.
    fn for_peer(&mut self, peer: &Peer) -> Option<Arc<Frame>> {
        let ev = self.event;
        let payload = ev.payload_for(peer.staff, &peer.author_tokens)?;
        // Identify which role's encoding `payload` is, by address: payload_for returns a
        // reference into the event, so this cannot confuse two equal payloads of other roles.
        let slot = if std::ptr::eq(payload, &ev.staff) {
            &mut self.staff
        } else if ev
            .author
            .as_ref()
            .is_some_and(|(_, p)| std::ptr::eq(payload, p))
        {
            &mut self.author
        } else {
            &mut self.reader
        };
        let room = &self.room;
        Some(
            slot.get_or_insert_with(|| Arc::new(Frame::new(room.clone(), ev.id, payload)))
                .clone(),
        )
    }
}

pub(crate) struct Inner {
    pub limits: Limits,
    pub source: Arc<dyn EventSource>,
    rooms: RwLock<HashMap<Arc<str>, Vec<Arc<Peer>>>>,
    ips: Mutex<HashMap<IpAddr, u32>>,
    /// Message budgets of connections that ended less than a minute ago, by address (see
    /// [`Inner::park_budget`]).
    budgets: Mutex<Budgets>,
    /// Every connection being served, to reach them all on shutdown.
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    next_peer: AtomicU64,
    /// Set once by [`Hub::shutdown`]: the message for everyone.
    pub shutdown: OnceLock<Arc<str>>,
    /// Woken when the last connection ends.
    idle: Notify,
}

/// Parked message budgets, pruned of full ones whenever the map has doubled since the last
/// pruning, so memory follows the addresses of the last minute, not all ever seen.
#[derive(Default)]
struct Budgets {
    map: HashMap<IpAddr, Bucket>,
    prune_at: usize,
}

/// Parked budgets kept before the first pruning.
const BUDGETS_PRUNE_MIN: usize = 1024;

impl Inner {
    /// Keeps an ended connection's message budget for its address (a limit key: IPv6 per
    /// /64), so a client cannot refill its budget by reconnecting; if another connection of
    /// the address parked one already, the emptier is kept.
    pub fn park_budget(&self, key: IpAddr, bucket: Bucket) {
        let now = tokio::time::Instant::now();
        if bucket.is_full_by(now) {
            return;
        }
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = match budgets.map.remove(&key) {
            Some(parked) => parked.emptier(bucket, now),
            None => bucket,
        };
        budgets.map.insert(key, kept);
        if budgets.map.len() >= budgets.prune_at.max(BUDGETS_PRUNE_MIN) {
            budgets.map.retain(|_, b| !b.is_full_by(now));
            budgets.prune_at = budgets.map.len() * 2;
        }
    }

    /// The budget a connection of this address left behind, if it is not full again yet.
    pub fn take_budget(&self, key: IpAddr) -> Option<Bucket> {
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = budgets.map.remove(&key)?;
        (!bucket.is_full_by(tokio::time::Instant::now())).then_some(bucket)
    }

    pub fn next_peer_id(&self) -> u64 {
        self.next_peer.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a peer to a room (idempotent) and returns the room's shared key.
    pub fn join(&self, room: &str, peer: &Arc<Peer>) -> Arc<str> {
        let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
        let key = rooms.get_key_value(room).map(|(k, _)| k.clone());
        if let Some(key) = key {
            if let Some(subs) = rooms.get_mut(room)
                && !subs.iter().any(|p| p.id == peer.id)
            {
                subs.push(peer.clone());
            }
            return key;
        }
        let key: Arc<str> = Arc::from(room);
        rooms.insert(key.clone(), vec![peer.clone()]);
        key
    }

    /// Removes a peer from a room; an empty room is forgotten.
    pub fn leave(&self, room: &str, peer_id: u64) {
        let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
        let Some(subs) = rooms.get_mut(room) else {
            return;
        };
        if let Some(i) = subs.iter().position(|p| p.id == peer_id) {
            subs.swap_remove(i);
        }
        if subs.is_empty() {
            rooms.remove(room);
        } else if subs.capacity() > 64 && subs.len() < subs.capacity() / 4 {
            // Give memory back after a crowd leaves a hot thread.
            subs.shrink_to(subs.len() * 2);
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Peer>>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection in; it sees a shutdown that started before or after this.
    pub fn register(&self, peer: &Arc<Peer>) {
        self.peers().insert(peer.id, peer.clone());
        // Shutdown sets the message before signalling the registered peers: a peer
        // registered after that pass finds the message here.
        if self.shutdown.get().is_some() {
            peer.signal(signal::SHUTDOWN);
        }
    }

    pub fn unregister(&self, peer_id: u64) {
        let mut peers = self.peers();
        peers.remove(&peer_id);
        if peers.is_empty() {
            self.idle.notify_waiters();
        }
    }
}

/// A slot for one connection from one IP, from [`Hub::try_admit`]; dropping it frees the slot.
/// [`Hub::serve`] holds it for the life of the connection.
pub struct Admission {
    inner: Arc<Inner>,
    key: IpAddr,
}

impl Admission {
    /// The address this slot counts against (an IPv6 client's /64).
    pub(crate) fn key(&self) -> IpAddr {
        self.key
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("ip", &self.key).finish()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut ips = self
            .inner
            .ips
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = ips.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                ips.remove(&self.key);
            }
        }
    }
}

/// The live-update hub; cheap to clone (all clones share one state).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("limits", &self.inner.limits)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with these limits, replaying stored events from `source`.
    pub fn new(limits: Limits, source: Arc<dyn EventSource>) -> Self {
        Hub {
            inner: Arc::new(Inner {
                limits,
                source,
                rooms: RwLock::new(HashMap::new()),
                ips: Mutex::new(HashMap::new()),
                budgets: Mutex::new(Budgets::default()),
                peers: Mutex::new(HashMap::new()),
                next_peer: AtomicU64::new(1),
                shutdown: OnceLock::new(),
                idle: Notify::new(),
            }),
        }
    }

    /// The limits this hub enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Delivers a committed event to the subscribers of its room, each in its role's form.
    /// Never waits: a subscriber whose queue is full is dropped as a slow consumer.
    pub fn publish(&self, event: Event) {
        let rooms = self
            .inner
            .rooms
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some((room, subs)) = rooms.get_key_value(event.room.as_str()) else {
            return;
        };
        let mut encodings = Encodings::new(&event, room.clone());
        for peer in subs {
            if let Some(frame) = encodings.for_peer(peer) {
                peer.offer(frame);
            }
        }
    }

    /// Reserves a connection slot for `ip`; `None` when the IP (or IPv6 /64) is at
    /// [`Limits::max_connections_per_ip`] or the hub is shutting down.
    pub fn try_admit(&self, ip: IpAddr) -> Option<Admission> {
        if self.is_shutting_down() {
            return None;
        }
        let key = crate::net::limit_key(ip);
        let max = self.inner.limits.max_connections_per_ip;
        let mut ips = self
            .inner
            .ips
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = ips.entry(key).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Admission {
            inner: self.inner.clone(),
            key,
        })
    }

    /// Politely refuses a connection that [`Hub::try_admit`] turned down, after the upgrade:
    /// an `error` (`too_many_connections`) then close 1008, or close 1001 when shutting down.
    /// Browsers cannot see an HTTP status on a failed upgrade, but they do see a close code.
    pub async fn refuse<S>(&self, sink: S)
    where
        S: Sink<Message> + Unpin + Send,
    {
        conn::refuse(&self.inner, sink).await;
    }

    /// Runs one connection until it ends: reads client messages from `stream`, writes to
    /// `sink`. Holds `admission` until then. Generic so tests need no socket; the `/ws` route
    /// passes the halves of `axum::extract::ws::WebSocket::split()`.
    pub async fn serve<S, R, E>(&self, sink: S, stream: R, identity: Identity, admission: Admission)
    where
        S: Sink<Message> + Unpin + Send,
        R: Stream<Item = Result<Message, E>> + Unpin + Send,
    {
        conn::serve(self.inner.clone(), sink, stream, identity, admission, None).await;
    }

    /// [`Hub::serve`] for a staff connection whose rights may end while it is open (a
    /// sign-out, a demotion): when `staff_ends` completes, the connection gets a `system`
    /// notice and closes (1000, "session ended"), and the client reconnects as what it is now.
    pub async fn serve_staff<S, R, E>(
        &self,
        sink: S,
        stream: R,
        identity: Identity,
        admission: Admission,
        staff_ends: BoxFuture<'static, ()>,
    ) where
        S: Sink<Message> + Unpin + Send,
        R: Stream<Item = Result<Message, E>> + Unpin + Send,
    {
        let inner = self.inner.clone();
        conn::serve(inner, sink, stream, identity, admission, Some(staff_ends)).await;
    }

    /// Connections being served right now.
    pub fn connection_count(&self) -> usize {
        self.inner.peers().len()
    }

    /// Subscribers of a room right now (for metrics and tests).
    pub fn subscriber_count(&self, room: &str) -> usize {
        let rooms = self
            .inner
            .rooms
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        rooms.get(room).map_or(0, Vec::len)
    }

    /// Sends every connection a `{"kind":"system_notification","message":..}` event, then
    /// closes it (1001); refuses new connections from now on. Returns at once: await
    /// [`Hub::wait_closed`] to give the sockets time to close.
    /// Only the first call's message is used.
    pub fn shutdown(&self, message: &str) {
        let _ = self.inner.shutdown.set(Arc::from(message));
        for peer in self.inner.peers().values() {
            peer.signal(signal::SHUTDOWN);
        }
    }

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.get().is_some()
    }

    /// Waits until no connection is served, or `timeout`; true when none is left.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.inner.idle.notified();
            if self.connection_count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.connection_count() == 0;
            }
        }
    }
}
