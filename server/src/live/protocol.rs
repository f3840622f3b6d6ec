//! The JSON messages of `/ws`: what clients send, and how server messages are encoded.
//!
//! Server messages are encoded straight to [`Utf8Bytes`] so one encoding can be shared by
//! every subscriber of the same role (cloning `Utf8Bytes` only bumps a reference count).

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest thread key accepted in a client message.
pub const MAX_THREAD_KEY_BYTES: usize = 512;

/// A message from the client.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Start receiving a room's events; with `since`, first replay those after it.
    Subscribe {
        /// A thread key, or [`crate::live::MODERATION_ROOM`] (staff only).
        thread: String,
        /// The newest event id the client has; events after it are replayed.
        #[serde(default)]
        since: Option<i64>,
    },
    /// Stop receiving a room's events.
    Unsubscribe {
        /// The room to leave.
        thread: String,
    },
    /// Application-level ping (browsers cannot send WebSocket pings): answered by `pong`.
    Ping,
}

impl ClientMessage {
    /// Parses one text message; the error is a sentence for the client.
    pub fn parse(text: &str) -> Result<Self, String> {
        let msg: ClientMessage =
            serde_json::from_str(text).map_err(|e| format!("Invalid message: {e}"))?;
        match &msg {
            ClientMessage::Subscribe { thread, .. } | ClientMessage::Unsubscribe { thread } => {
                if thread.is_empty() || thread.len() > MAX_THREAD_KEY_BYTES {
                    return Err(format!(
                        "A thread key must be 1 to {MAX_THREAD_KEY_BYTES} bytes long."
                    ));
                }
            }
            ClientMessage::Ping => {}
        }
        Ok(msg)
    }
}

/// A message from the server (see `docs/live.md` for each).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// One event of a subscribed room.
    Event {
        /// The event id; 0 only for system notifications, which are not stored and must
        /// not be used as a catch-up cursor.
        id: i64,
        /// The room; `None` (JSON null) only for system notifications.
        thread: Option<&'a str>,
        /// The payload for this viewer's role.
        event: &'a Value,
    },
    /// The subscription is live.
    Subscribed {
        /// The room.
        thread: &'a str,
        /// The room's newest event id (0 when none): a valid `since` for a later reconnect.
        last_id: i64,
    },
    /// The subscription is gone.
    Unsubscribed {
        /// The room.
        thread: &'a str,
    },
    /// Something went wrong.
    Error {
        /// One of [`error_code`].
        code: &'a str,
        /// A sentence for people.
        message: &'a str,
        /// The room concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        thread: Option<&'a str>,
    },
    /// The answer to a client `ping`.
    Pong,
    /// `since` cannot be replayed: refetch the thread, then carry on with live events.
    Reset {
        /// The room to refetch.
        thread: &'a str,
    },
}

impl ServerMessage<'_> {
    /// The JSON text of this message.
    pub fn encode(&self) -> Utf8Bytes {
        match serde_json::to_string(self) {
            Ok(s) => Utf8Bytes::from(s),
            // Unreachable with string-keyed JSON values; still, never panic on a socket path.
            Err(_) => Utf8Bytes::from_static(
                r#"{"type":"error","code":"internal","message":"encoding failed"}"#,
            ),
        }
    }

    /// This message as a WebSocket text frame.
    pub fn to_message(&self) -> Message {
        Message::Text(self.encode())
    }
}

/// Error codes sent in `error` messages.
pub mod error_code {
    /// The message is not JSON, has an unknown `type`, or a bad field.
    pub const BAD_MESSAGE: &str = "bad_message";
    /// A reader asked for the moderation room.
    pub const FORBIDDEN: &str = "forbidden";
    /// Over [`crate::live::Limits::max_messages_per_minute`]; the connection closes (1008).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// Over [`crate::live::Limits::max_subscriptions`]; the connection closes (1008).
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    /// Over [`crate::live::Limits::max_message_bytes`]; the connection closes (1008).
    pub const MESSAGE_TOO_LARGE: &str = "message_too_large";
    /// Over [`crate::live::Limits::max_connections_per_ip`]; the connection closes (1008).
    pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
    /// The send queue overflowed; the connection closes (1008). Reconnect with `since`.
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// Stored events could not be read; the subscription is dropped, retry later.
    pub const REPLAY_FAILED: &str = "replay_failed";
}

/// A close frame with a code and a short reason.
pub fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_messages_parse() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"subscribe","thread":"a","since":4}"#),
            Ok(ClientMessage::Subscribe {
                thread: "a".into(),
                since: Some(4)
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"subscribe","thread":"a"}"#),
            Ok(ClientMessage::Subscribe {
                thread: "a".into(),
                since: None
            })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping","extra":1}"#),
            Ok(ClientMessage::Ping)
        );
        assert!(ClientMessage::parse(r#"{"type":"subscribe","thread":""}"#).is_err());
        assert!(ClientMessage::parse(r#"{"type":"nope"}"#).is_err());
        assert!(ClientMessage::parse("not json").is_err());
    }

    #[test]
    fn server_messages_encode() {
        let v = json!({"kind":"comment_created"});
        let e = ServerMessage::Event {
            id: 3,
            thread: Some("t"),
            event: &v,
        };
        assert_eq!(
            e.encode().as_str(),
            r#"{"type":"event","id":3,"thread":"t","event":{"kind":"comment_created"}}"#
        );
        let err = ServerMessage::Error {
            code: "x",
            message: "y",
            thread: None,
        };
        assert_eq!(
            err.encode().as_str(),
            r#"{"type":"error","code":"x","message":"y"}"#
        );
        assert_eq!(ServerMessage::Pong.encode().as_str(), r#"{"type":"pong"}"#);
    }
}
