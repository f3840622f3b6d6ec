//! The live protocol of `GET /ws`, defined once: what clients send, what the server sends,
//! and the events it carries.
//!
//! The hub, the server's event builders, the browser client, the integration tests and the
//! load tool all use these types, so a change to a message or an event is a compile error
//! everywhere it matters. `docs/live.md` documents them; a test checks that every event kind
//! it lists exists here and the other way round.

use crate::model::{Comment, CommentId, SpamTraining, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The room only staff may subscribe to: the moderation queue.
pub const MODERATION_ROOM: &str = "moderation";

/// Longest thread key accepted in a client message.
pub const MAX_THREAD_KEY_BYTES: usize = 512;

/// A message from the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Start receiving a room's events; with `since`, first replay those after it.
    Subscribe {
        /// A thread key, or [`MODERATION_ROOM`] (staff only).
        thread: String,
        /// The newest event id the client has; events after it are replayed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
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

    /// The JSON text of this message.
    pub fn encode(&self) -> String {
        // Only string keys and plain values: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// One event of a subscribed room, in the form for this viewer's role.
    Event {
        /// The event id; 0 only for system notifications, which are not stored and must
        /// not be used as a catch-up cursor.
        id: i64,
        /// The room; `None` (JSON null) only for system notifications.
        thread: Option<String>,
        /// The payload for this viewer's role.
        event: Event,
    },
    /// The subscription is live.
    Subscribed {
        /// The room.
        thread: String,
        /// The room's newest event id (0 when none): a valid `since` for a later reconnect.
        last_id: i64,
    },
    /// The subscription is gone.
    Unsubscribed {
        /// The room.
        thread: String,
    },
    /// Something went wrong.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// A sentence for people.
        message: String,
        /// The room concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
    },
    /// The answer to a client `ping`.
    Pong,
    /// `since` cannot be replayed: refetch the thread, then carry on with live events.
    Reset {
        /// The room to refetch.
        thread: String,
    },
}

impl ServerMessage {
    /// The JSON text of this message.
    pub fn encode(&self) -> String {
        // Only string keys and finite numbers reach here (scores and rates are finite).
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_owned()
        })
    }

    /// Parses one text message from the server.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// A notice to everyone, not tied to a room and not stored (id 0).
    pub fn system_notification(message: impl Into<String>) -> Self {
        ServerMessage::Event {
            id: 0,
            thread: None,
            event: Event::SystemNotification {
                message: message.into(),
            },
        }
    }
}

/// Error codes of `error` messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message is not JSON, has an unknown `type`, or a bad field. The connection stays.
    BadMessage,
    /// A reader asked for the moderation room. The connection stays.
    Forbidden,
    /// Over the per-connection message budget; the connection closes (1008).
    RateLimited,
    /// Over the subscription limit; the connection closes (1008).
    TooManySubscriptions,
    /// A message over the size limit; the connection closes (1008).
    MessageTooLarge,
    /// Over the connections allowed per address; the connection closes (1008).
    TooManyConnections,
    /// The send queue overflowed; the connection closes (1008). Reconnect with `since`.
    SlowConsumer,
    /// Stored events could not be read; the subscription is dropped, retry later.
    ReplayFailed,
    /// The server could not encode a message (never expected).
    Internal,
}

impl ErrorCode {
    /// The wire name (also the reason of the close frame that follows a limit).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ReplayFailed => "replay_failed",
            ErrorCode::Internal => "internal",
        }
    }
}

/// What happened, as one audience may hear it. Each stored event carries one of these per
/// audience (readers, staff, the comment's author); readers' copies never carry a comment's
/// `status` or `moderation`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A comment was stored. Readers hear of it only when it is published; its author hears
    /// of it either way (with `awaiting_moderation` while held); staff always, with its flag.
    CommentPosted {
        /// The comment as this audience may see it.
        comment: Comment,
        /// Author's copy only: the comment is held for moderation.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        awaiting_moderation: bool,
    },
    /// Staff changed a comment's status. Readers hear of it only when the comment became
    /// visible (`visible: true` with the comment) or stopped being visible (`visible: false`,
    /// no comment); staff hear of every change, with `status_before` and the comment.
    CommentStatusChanged {
        /// The comment concerned.
        comment_id: CommentId,
        /// Readers' copy: whether the comment is now shown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visible: Option<bool>,
        /// Staff copy: the status before the change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_before: Option<Status>,
        /// Staff: always; readers: only when it became visible.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<Comment>,
    },
    /// The moderation queue changed (room [`MODERATION_ROOM`], staff only).
    ModerationUpdate {
        /// The comment concerned.
        comment_id: CommentId,
        /// Its thread key.
        thread: String,
        /// Its status now.
        status: Status,
        /// Its status before (none for a newly posted comment).
        status_before: Option<Status>,
        /// Whether it is now in the queue (held or spam).
        in_queue: bool,
        /// The moderator that held it, if one did.
        moderator: Option<String>,
        /// That moderator's reason.
        reason: Option<String>,
        /// The spam filter's score, when it ran.
        score: Option<f64>,
        /// The comment, as staff see it.
        comment: Comment,
    },
    /// Comment totals and shares by status (room [`MODERATION_ROOM`], staff only).
    StatsUpdate {
        /// All comments.
        total: i64,
        /// Comments per status name.
        counts: BTreeMap<String, i64>,
        /// Share of the total per status name (0 to 1).
        rates: BTreeMap<String, f64>,
    },
    /// The spam filter was retrained (room [`MODERATION_ROOM`], staff only).
    FilterRetrained {
        /// The new training and its metrics.
        training: SpamTraining,
    },
    /// A notice to everyone on the socket (e.g. the server is restarting); id 0, not stored.
    SystemNotification {
        /// A sentence for people.
        message: String,
    },
}

impl Event {
    /// Every event kind, as `kind` names them on the wire.
    pub const KINDS: [&'static str; 6] = [
        "comment_posted",
        "comment_status_changed",
        "moderation_update",
        "stats_update",
        "filter_retrained",
        "system_notification",
    ];

    /// This event's wire kind.
    pub fn kind(&self) -> &'static str {
        // Exhaustive, so a new variant must be named here (and in KINDS, which a test checks).
        match self {
            Event::CommentPosted { .. } => Self::KINDS[0],
            Event::CommentStatusChanged { .. } => Self::KINDS[1],
            Event::ModerationUpdate { .. } => Self::KINDS[2],
            Event::StatsUpdate { .. } => Self::KINDS[3],
            Event::FilterRetrained { .. } => Self::KINDS[4],
            Event::SystemNotification { .. } => Self::KINDS[5],
        }
    }

    /// Comment counts per status as a stats event: totals and shares.
    pub fn stats(counts: &[(String, i64)]) -> Event {
        let total: i64 = counts.iter().map(|(_, n)| n).sum();
        Event::StatsUpdate {
            total,
            counts: counts.iter().cloned().collect(),
            rates: counts
                .iter()
                .map(|(s, n)| {
                    let rate = if total == 0 {
                        0.0
                    } else {
                        *n as f64 / total as f64
                    };
                    (s.clone(), rate)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(id: CommentId) -> Comment {
        Comment {
            id,
            parent_id: None,
            depth: 0,
            author_name: "Ann".into(),
            author_url: None,
            title: None,
            body_html: "<p>hi</p>".into(),
            created_at: "2026-11-21T10:00:00Z".into(),
            status: None,
            moderation: None,
        }
    }

    fn one_of_each() -> Vec<Event> {
        vec![
            Event::CommentPosted {
                comment: comment(1),
                awaiting_moderation: true,
            },
            Event::CommentStatusChanged {
                comment_id: 1,
                visible: Some(false),
                status_before: None,
                comment: None,
            },
            Event::ModerationUpdate {
                comment_id: 1,
                thread: "t".into(),
                status: Status::Held,
                status_before: None,
                in_queue: true,
                moderator: Some("links".into()),
                reason: Some("too many links".into()),
                score: None,
                comment: comment(1),
            },
            Event::stats(&[("held".into(), 1), ("published".into(), 3)]),
            Event::FilterRetrained {
                training: SpamTraining {
                    trained_at: "2026-11-21T10:00:00Z".into(),
                    source: "moderated".into(),
                    metrics: None,
                    spam_count: 1,
                    ham_count: 2,
                },
            },
            Event::SystemNotification {
                message: "bye".into(),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_under_its_wire_name() {
        let events = one_of_each();
        assert_eq!(events.len(), Event::KINDS.len());
        for e in events {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["kind"], e.kind(), "{json}");
            let back: Event = serde_json::from_value(json).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn error_code_names_are_their_wire_names() {
        for code in [
            ErrorCode::BadMessage,
            ErrorCode::Forbidden,
            ErrorCode::RateLimited,
            ErrorCode::TooManySubscriptions,
            ErrorCode::MessageTooLarge,
            ErrorCode::TooManyConnections,
            ErrorCode::SlowConsumer,
            ErrorCode::ReplayFailed,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn client_messages_parse_and_refuse_bad_keys() {
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
        let long = format!(
            r#"{{"type":"subscribe","thread":"{}"}}"#,
            "x".repeat(MAX_THREAD_KEY_BYTES + 1)
        );
        assert!(ClientMessage::parse(&long).is_err());
        assert!(ClientMessage::parse(r#"{"type":"nope"}"#).is_err());
        assert!(ClientMessage::parse("not json").is_err());
        let sub = ClientMessage::Subscribe {
            thread: "t".into(),
            since: None,
        };
        assert_eq!(sub.encode(), r#"{"type":"subscribe","thread":"t"}"#);
    }

    #[test]
    fn server_messages_have_their_documented_shape() {
        let e = ServerMessage::Event {
            id: 3,
            thread: Some("t".into()),
            event: Event::SystemNotification {
                message: "m".into(),
            },
        };
        assert_eq!(
            e.encode(),
            r#"{"type":"event","id":3,"thread":"t","event":{"kind":"system_notification","message":"m"}}"#
        );
        let err = ServerMessage::Error {
            code: ErrorCode::TooManyConnections,
            message: "y".into(),
            thread: None,
        };
        assert_eq!(
            err.encode(),
            r#"{"type":"error","code":"too_many_connections","message":"y"}"#
        );
        assert_eq!(ServerMessage::Pong.encode(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerMessage::parse(&ServerMessage::system_notification("x").encode()).unwrap(),
            ServerMessage::system_notification("x")
        );
    }

    #[test]
    fn readers_copies_carry_no_staff_fields() {
        let e = Event::CommentStatusChanged {
            comment_id: 4,
            visible: Some(true),
            status_before: None,
            comment: Some(comment(4)),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("status_before"), "{json}");
        assert!(!json.contains("moderation"), "{json}");
        let posted = Event::CommentPosted {
            comment: comment(5),
            awaiting_moderation: false,
        };
        let json = serde_json::to_string(&posted).unwrap();
        assert!(!json.contains("awaiting_moderation"), "{json}");
    }

    /// docs/live.md lists the event kinds in a table (`| `kind` ...`): the list there and
    /// [`Event::KINDS`] must be the same set.
    #[test]
    fn the_docs_list_exactly_the_event_kinds() {
        let docs = include_str!("../../docs/live.md");
        let section = docs
            .split("## Event payloads")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/live.md has an \"Event payloads\" section");
        let mut documented: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        documented.sort_unstable();
        documented.dedup();
        let mut kinds = Event::KINDS.to_vec();
        kinds.sort_unstable();
        assert_eq!(documented, kinds);
    }
}
