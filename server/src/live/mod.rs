//! The live-update hub behind `GET /ws`: rooms, role filtering, catch-up and limits.
//!
//! The hub knows nothing about the database, HTTP or authentication. The server gives it:
//! an [`EventSource`] to replay stored events from, an [`Identity`] per connection, and every
//! committed [`Event`] through [`Hub::publish`]. The protocol, the payload conventions and the
//! limits are described in `docs/live.md`.
//!
//! Layout: [`protocol`] holds the JSON messages, `hub` the shared state (rooms, admission,
//! fan-out), `conn` one connection's loop.
//!
//! Message type: the hub speaks [`axum::extract::ws::Message`] directly, so the route passes
//! the two halves of `WebSocket::split()` to [`Hub::serve`]; tests pass channels instead.

mod conn;
mod hub;
pub mod protocol;
#[cfg(test)]
mod tests;

pub use hub::{Admission, Hub};

use std::net::IpAddr;
use std::time::Duration;

pub use app::live::MODERATION_ROOM;

/// What one audience hears of an event (defined once, in [`app::live`]).
pub type Payload = app::live::Event;

/// The WebSocket close codes the hub sends.
pub mod close_code {
    /// Idle timeout (no client frame for [`super::Limits::idle_timeout`]).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down ([`super::Hub::shutdown`]).
    pub const GOING_AWAY: u16 = 1001;
    /// A limit was exceeded; an `error` message with the reason precedes it.
    pub const POLICY: u16 = 1008;
}

/// Per-connection and per-IP limits (see `docs/live.md`).
///
/// 0 turns off `max_connections_per_ip`, `max_messages_per_minute`, `max_subscriptions` and
/// `max_message_bytes`, and a zero duration turns off `heartbeat`, `idle_timeout` and
/// `write_timeout` (for load tests, not production). `send_queue` is at least 1;
/// `max_replay = 0` replays nothing (every `since` gets `reset`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per client IP (per /64 for IPv6), enforced by [`Hub::try_admit`].
    pub max_connections_per_ip: u32,
    /// Client frames (text, binary, ping) per connection per minute; a token bucket, so
    /// bursts up to this many.
    pub max_messages_per_minute: u32,
    /// Rooms one connection may be subscribed to at once.
    pub max_subscriptions: u32,
    /// Largest client message, in bytes; the route should also cap frames (see `docs/live.md`).
    pub max_message_bytes: usize,
    /// Frames waiting for one socket; a connection whose queue is full is dropped.
    pub send_queue: usize,
    /// How often the server pings.
    pub heartbeat: Duration,
    /// A connection that sent no frame (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Most events replayed for one `subscribe` with `since`; more missed events get `reset`
    /// (refetching the page is cheaper than streaming a long backlog).
    pub max_replay: usize,
    /// Longest a single write to a socket may take before the connection is dropped.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_ip: 10,
            max_messages_per_minute: 100,
            max_subscriptions: 50,
            max_message_bytes: 4096,
            send_queue: 256,
            heartbeat: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_replay: 256,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Who is on the other end of one connection, as the server authenticated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Staff see every event's `staff` payload and may subscribe to [`MODERATION_ROOM`].
    pub staff: bool,
    /// The author tokens this reader holds (from their cookie): events about their own
    /// comments carry an author payload for them.
    pub author_tokens: Vec<String>,
    /// The client's address (for logs; admission is decided by [`Hub::try_admit`]).
    pub ip: IpAddr,
}

/// One committed change, as stored in the `events` table and published after commit.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// A thread key, or [`MODERATION_ROOM`].
    pub room: String,
    /// Assigned by the database; increases within each room (see `docs/live.md` on ordering).
    pub id: i64,
    /// What readers get; `None`: readers get nothing (e.g. a held comment).
    pub reader: Option<Payload>,
    /// What staff get, always.
    pub staff: Payload,
    /// `(author token, payload)`: the comment's own author gets this instead of `reader`.
    pub author: Option<(String, Payload)>,
}

impl Event {
    /// An event everyone sees the same way.
    pub fn public(room: impl Into<String>, id: i64, payload: Payload) -> Self {
        Event {
            room: room.into(),
            id,
            reader: Some(payload.clone()),
            staff: payload,
            author: None,
        }
    }

    /// The payload this viewer gets, or `None` when they get nothing.
    pub fn payload_for(&self, staff: bool, author_tokens: &[String]) -> Option<&Payload> {
        if staff {
            return Some(&self.staff);
        }
        // Belt and braces: even a mis-built event for the moderation room never reaches a reader.
        if self.room == MODERATION_ROOM {
            return None;
        }
        if let Some((token, payload)) = &self.author
            && author_tokens.iter().any(|t| t == token)
        {
            return Some(payload);
        }
        self.reader.as_ref()
    }
}

/// Why stored events could not be replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// `since` is older than the retention window: the client must refetch.
    TooOld,
    /// Anything else (the database is down...); the client may retry later.
    Other(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::TooOld => f.write_str("events older than the retention window"),
            ReplayError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Stored events, for catch-up after a reconnect. Implemented by the server over its
/// `events` table.
#[async_trait::async_trait]
pub trait EventSource: Send + Sync + 'static {
    /// Events of `room` with id > since, oldest first, at most `limit`; Err(TooOld) when
    /// `since` is older than the retention window.
    async fn events_since(
        &self,
        room: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Event>, ReplayError>;

    /// The newest event id of a room (0 when none), for the "subscribed" message.
    async fn last_id(&self, room: &str) -> Result<i64, ReplayError>;
}
