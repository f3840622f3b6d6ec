//! The hub's shared state: rooms and their subscribers, fan-out, per-IP admission, shutdown.
//!
//! Fan-out design: each room holds a list of subscribed connections (`Arc<Peer>`), each with a
//! bounded queue of `Arc<Frame>`. Publishing encodes an event's JSON at most once per role
//! (staff, reader, author) and hands every subscriber a reference-counted copy with
//! `try_send`, so it never waits for a socket: a full queue marks that connection as a slow
//! consumer, and the connection drops itself.

use super::conn;
use super::protocol::ServerMessage;
use super::{Event, EventSource, Identity, Limits};
use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{Sink, Stream};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

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
    pub fn new(room: Arc<str>, id: i64, payload: &serde_json::Value) -> Self {
        let text = ServerMessage::Event {
            id,
            thread: Some(&room),
            event: payload,
        }
        .encode();
        Frame { room, id, text }
    }
}

/// What the rooms know of one connection.
#[derive(Debug)]
pub(crate) struct Peer {
    pub id: u64,
    pub staff: bool,
    pub author_tokens: Box<[String]>,
    /// The connection's bounded queue.
    pub tx: mpsc::Sender<Arc<Frame>>,
    /// Signalled when the queue overflowed: the connection must close.
    pub kill: Notify,
    killed: AtomicBool,
}

impl Peer {
    pub fn new(id: u64, identity: &Identity, tx: mpsc::Sender<Arc<Frame>>) -> Self {
        Peer {
            id,
            staff: identity.staff,
            author_tokens: identity.author_tokens.clone().into_boxed_slice(),
            tx,
            kill: Notify::new(),
            killed: AtomicBool::new(false),
        }
    }

    /// Queues a frame without waiting; a full queue drops the connection.
    fn offer(&self, frame: Arc<Frame>) {
        match self.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.overflow(),
            // The connection is on its way out and will leave its rooms itself.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Marks this connection as a slow consumer, once.
    pub fn overflow(&self) {
        if !self.killed.swap(true, Ordering::AcqRel) {
            // notify_one stores a permit, so the signal is not lost if the connection is busy.
            self.kill.notify_one();
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

/// The admission key of an address: the address itself, or its /64 for IPv6 (one host
/// usually owns a whole /64, so per-address counting would be no limit at all).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

pub(crate) struct Inner {
    pub limits: Limits,
    pub source: Arc<dyn EventSource>,
    rooms: RwLock<HashMap<Arc<str>, Vec<Arc<Peer>>>>,
    ips: Mutex<HashMap<IpAddr, u32>>,
    connections: AtomicUsize,
    next_peer: AtomicU64,
    /// `Some(message)` once shutting down; connections watch it.
    pub shutdown: watch::Sender<Option<Arc<str>>>,
    /// Woken when the last connection ends.
    idle: Notify,
}

impl Inner {
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

    pub fn connection_started(&self) {
        self.connections.fetch_add(1, Ordering::AcqRel);
    }

    pub fn connection_ended(&self) {
        if self.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
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
        let (shutdown, _) = watch::channel(None);
        Hub {
            inner: Arc::new(Inner {
                limits,
                source,
                rooms: RwLock::new(HashMap::new()),
                ips: Mutex::new(HashMap::new()),
                connections: AtomicUsize::new(0),
                next_peer: AtomicU64::new(1),
                shutdown,
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
        let key = ip_key(ip);
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
        conn::serve(self.inner.clone(), sink, stream, identity, admission).await;
    }

    /// Connections being served right now.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Acquire)
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
    pub fn shutdown(&self, message: &str) {
        self.inner.shutdown.send_replace(Some(Arc::from(message)));
    }

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.borrow().is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
