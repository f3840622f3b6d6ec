//! Live events: what each change tells each audience. The use cases in [`crate::engine`]
//! build these from the rows they changed, write them with [`write`] in the change's own
//! transaction (the outbox), and publish them after commit. Replays read them back through
//! [`DbEventSource`]. The payloads are the typed [`app::live::Event`]; nothing here touches
//! SQL: the `events` table belongs to the store.

use crate::comment::{Audience, to_public};
use crate::live::{self, EventSource, MODERATION_ROOM, Payload, ReplayError};
use crate::store::{CommentRow, EventRow, NewEventRow, Store, StoreError, Tx};
use app::model::{SpamTraining, Status};

/// An event not yet numbered: numbered and stored by [`write`].
#[derive(Clone, Debug)]
pub(crate) struct PendingEvent {
    pub room: String,
    /// The comment a thread event is about.
    pub comment_id: Option<i64>,
    /// The comment just left `published`: earlier events about it stop carrying it for
    /// readers and authors before this one is stored.
    pub hides_comment: bool,
    pub reader: Option<Payload>,
    pub staff: Payload,
    pub author: Option<(String, Payload)>,
}

/// A comment was stored: readers get it if it is public, its author gets it either way
/// (held: "awaiting moderation"), staff get it with its flag; a held one enters the queue.
pub(crate) fn comment_posted(
    row: &CommentRow,
    thread: &str,
    author_token: Option<&str>,
) -> Vec<PendingEvent> {
    let public = row.status == Status::Published.as_str();
    let reader_comment = to_public(row, Audience::Reader);
    let mut out = vec![PendingEvent {
        room: thread.to_owned(),
        comment_id: Some(row.id),
        hides_comment: false,
        reader: public.then(|| Payload::CommentPosted {
            comment: reader_comment.clone(),
            awaiting_moderation: false,
        }),
        staff: Payload::CommentPosted {
            comment: to_public(row, Audience::Staff),
            awaiting_moderation: false,
        },
        author: author_token.map(|t| {
            (
                t.to_owned(),
                Payload::CommentPosted {
                    comment: reader_comment,
                    awaiting_moderation: !public,
                },
            )
        }),
    }];
    if !public {
        out.push(queue_event(row, thread, None));
    }
    out
}

/// Staff changed a comment's status.
pub(crate) fn status_changed(before: &str, row: &CommentRow, thread: &str) -> Vec<PendingEvent> {
    let published = Status::Published.as_str();
    let was_public = before == published;
    let is_public = row.status == published;
    let reader = match (was_public, is_public) {
        (false, true) => Some(Payload::CommentStatusChanged {
            comment_id: row.id,
            visible: Some(true),
            status_before: None,
            comment: Some(to_public(row, Audience::Reader)),
        }),
        (true, false) => Some(Payload::CommentStatusChanged {
            comment_id: row.id,
            visible: Some(false),
            status_before: None,
            comment: None,
        }),
        _ => None,
    };
    vec![
        PendingEvent {
            room: thread.to_owned(),
            comment_id: Some(row.id),
            hides_comment: was_public && !is_public,
            reader,
            staff: Payload::CommentStatusChanged {
                comment_id: row.id,
                visible: None,
                status_before: Status::parse(before),
                comment: Some(to_public(row, Audience::Staff)),
            },
            author: None,
        },
        queue_event(row, thread, Some(before)),
    ]
}

fn queue_event(row: &CommentRow, thread: &str, before: Option<&str>) -> PendingEvent {
    let comment = to_public(row, Audience::Staff);
    PendingEvent {
        room: MODERATION_ROOM.to_owned(),
        comment_id: None,
        hides_comment: false,
        reader: None,
        staff: Payload::ModerationUpdate {
            comment_id: row.id,
            thread: thread.to_owned(),
            status: comment.status.unwrap_or(Status::Held),
            status_before: before.and_then(Status::parse),
            in_queue: matches!(row.status.as_str(), "held" | "spam"),
            moderator: row.moderator.clone(),
            reason: row.reason.clone(),
            score: row.score,
            comment,
        },
        author: None,
    }
}

/// The staff-only stats event: comment totals and shares by status.
pub(crate) fn stats(counts: &[(String, i64)]) -> PendingEvent {
    staff_only(Payload::stats(counts))
}

/// The spam filter was retrained (staff only).
pub(crate) fn filter_retrained(training: &SpamTraining) -> PendingEvent {
    staff_only(Payload::FilterRetrained {
        training: training.clone(),
    })
}

fn staff_only(staff: Payload) -> PendingEvent {
    PendingEvent {
        room: MODERATION_ROOM.to_owned(),
        comment_id: None,
        hides_comment: false,
        reader: None,
        staff,
        author: None,
    }
}

fn json(p: &Payload) -> String {
    // Typed payloads with string keys: serialising cannot fail.
    serde_json::to_string(p).unwrap_or_default()
}

/// Numbers and stores events inside the caller's transaction; publish them after commit.
pub(crate) async fn write(
    tx: &mut Tx,
    pending: Vec<PendingEvent>,
) -> Result<Vec<live::Event>, StoreError> {
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        if let (true, Some(id)) = (p.hides_comment, p.comment_id) {
            tx.forget_public_payloads(&p.room, id).await?;
        }
        let row = NewEventRow {
            room: &p.room,
            comment_id: p.comment_id,
            reader: p.reader.as_ref().map(json),
            staff: json(&p.staff),
            author: p.author.as_ref().map(|(t, a)| (t.as_str(), json(a))),
        };
        let id = tx.append_event(&row).await?;
        out.push(live::Event {
            room: p.room,
            id,
            reader: p.reader,
            staff: p.staff,
            author: p.author,
        });
    }
    // Other instances on the same PostgreSQL hear of these at commit (one announcement per
    // room, with its newest id: they read the rest from the table). Nothing on SQLite.
    for (i, e) in out.iter().enumerate() {
        if !out[i + 1..].iter().any(|later| later.room == e.room) {
            tx.notify(
                crate::engine::cluster::EVENTS_CHANNEL,
                &crate::engine::cluster::event_announcement(&e.room, e.id),
            )
            .await?;
        }
    }
    Ok(out)
}

/// A stored event row as the hub's event (payloads parsed).
pub(crate) fn from_row(room: &str, r: EventRow) -> Result<live::Event, serde_json::Error> {
    let parse = |s: &str| serde_json::from_str::<Payload>(s);
    Ok(live::Event {
        room: room.to_owned(),
        id: r.id,
        reader: r.reader.as_deref().map(parse).transpose()?,
        staff: parse(&r.staff)?,
        author: match (r.author_token, r.author) {
            (Some(t), Some(a)) => Some((t, parse(&a)?)),
            _ => None,
        },
    })
}

/// Catch-up reads for the hub, from the store's `events` table.
pub(crate) struct DbEventSource {
    pub store: Store,
}

fn other(e: impl std::fmt::Display) -> ReplayError {
    tracing::error!(error = %e, "event replay failed");
    ReplayError::Other("replay failed".into())
}

#[async_trait::async_trait]
impl EventSource for DbEventSource {
    async fn events_since(
        &self,
        room: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<live::Event>, ReplayError> {
        let (last, pruned) = self.store.event_room(room).await.map_err(other)?;
        // A cursor from before the retention window, or from another database.
        if since < pruned || since > last {
            return Err(ReplayError::TooOld);
        }
        let rows = self
            .store
            .events_since(room, since, limit.min(100_000))
            .await
            .map_err(other)?;
        // A client keeps the last id it gets as its cursor: only durable ones.
        self.store.durable().await.map_err(other)?;
        rows.into_iter()
            .map(|r| from_row(room, r).map_err(other))
            .collect()
    }

    async fn last_id(&self, room: &str) -> Result<i64, ReplayError> {
        let last = self.store.last_event_id(room).await.map_err(other)?;
        self.store.durable().await.map_err(other)?;
        Ok(last)
    }
}
