//! Live events: what each change tells each audience, written in the change's transaction
//! and read back for catch-up. Payloads are documented in the README ("Live updates").

use crate::comment::{Viewer, to_public};
use crate::live::{self, EventSource, MODERATION_ROOM, ReplayError};
use crate::store::{CommentRow, Store, StoreError, now_ms};
use serde_json::{Value, json};
use sqlx::Any;

/// An event not yet numbered: numbered and stored by [`write`].
#[derive(Clone, Debug)]
pub struct PendingEvent {
    pub room: String,
    pub reader: Option<Value>,
    pub staff: Value,
    pub author: Option<(String, Value)>,
}

fn staff_view() -> Viewer {
    Viewer::Staff {
        id: 0,
        name: String::new(),
    }
}

/// A comment was stored: readers get it if it is public, its author gets it either way
/// (held: "awaiting moderation"), staff get it with its flag; a held one enters the queue.
pub fn comment_posted(
    row: &CommentRow,
    thread: &str,
    author_token: Option<&str>,
) -> Vec<PendingEvent> {
    let public = row.status == "published";
    let reader_comment = to_public(row, &Viewer::Reader);
    let staff_comment = to_public(row, &staff_view());
    let mut out = vec![PendingEvent {
        room: thread.to_owned(),
        reader: public.then(|| json!({"kind": "comment_posted", "comment": reader_comment})),
        staff: json!({"kind": "comment_posted", "comment": staff_comment}),
        author: author_token.map(|t| {
            (
                t.to_owned(),
                json!({"kind": "comment_posted", "comment": reader_comment, "awaiting_moderation": !public}),
            )
        }),
    }];
    if !public {
        out.push(queue_event(row, thread, None));
    }
    out
}

/// Staff changed a comment's status.
pub fn status_changed(before: &str, row: &CommentRow, thread: &str) -> Vec<PendingEvent> {
    let was_public = before == "published";
    let is_public = row.status == "published";
    let reader = match (was_public, is_public) {
        (false, true) => Some(json!({
            "kind": "comment_status_changed",
            "comment_id": row.id,
            "visible": true,
            "comment": to_public(row, &Viewer::Reader),
        })),
        (true, false) => Some(json!({
            "kind": "comment_status_changed",
            "comment_id": row.id,
            "visible": false,
        })),
        _ => None,
    };
    vec![
        PendingEvent {
            room: thread.to_owned(),
            reader,
            staff: json!({
                "kind": "comment_status_changed",
                "comment_id": row.id,
                "status_before": before,
                "comment": to_public(row, &staff_view()),
            }),
            author: None,
        },
        queue_event(row, thread, Some(before)),
    ]
}

fn queue_event(row: &CommentRow, thread: &str, before: Option<&str>) -> PendingEvent {
    let in_queue = matches!(row.status.as_str(), "held" | "spam");
    PendingEvent {
        room: MODERATION_ROOM.to_owned(),
        reader: None,
        staff: json!({
            "kind": "moderation_update",
            "comment_id": row.id,
            "thread": thread,
            "status": row.status,
            "status_before": before,
            "in_queue": in_queue,
            "moderator": row.moderator,
            "reason": row.reason,
            "score": row.score,
            "comment": to_public(row, &staff_view()),
        }),
        author: None,
    }
}

/// The staff-only stats event: comment totals and shares by status.
pub fn stats(counts: &[(String, i64)]) -> PendingEvent {
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let by_status: serde_json::Map<String, Value> =
        counts.iter().map(|(s, n)| (s.clone(), json!(n))).collect();
    let rates: serde_json::Map<String, Value> = counts
        .iter()
        .map(|(s, n)| {
            let rate = if total == 0 {
                0.0
            } else {
                *n as f64 / total as f64
            };
            (s.clone(), json!(rate))
        })
        .collect();
    PendingEvent {
        room: MODERATION_ROOM.to_owned(),
        reader: None,
        staff: json!({"kind": "stats_update", "total": total, "counts": by_status, "rates": rates}),
        author: None,
    }
}

/// The spam filter was retrained (staff only).
pub fn filter_retrained(training: &app::model::SpamTraining) -> PendingEvent {
    PendingEvent {
        room: MODERATION_ROOM.to_owned(),
        reader: None,
        staff: json!({"kind": "filter_retrained", "training": training}),
        author: None,
    }
}

/// Adds `delta` to the running count of comments with `status`, inside the transaction
/// that inserts the comment or changes its status (see `counts_in`).
pub async fn count_status(
    tx: &mut sqlx::Transaction<'_, Any>,
    status: &str,
    delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO comment_counts (status, n) VALUES ($1, $2) \
         ON CONFLICT (status) DO UPDATE SET n = comment_counts.n + $2",
    )
    .bind(status)
    .bind(delta)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts per status (the running counts of `count_status`), read inside a transaction.
pub async fn counts_in(
    tx: &mut sqlx::Transaction<'_, Any>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        status: String,
        n: i64,
    }
    Ok(
        sqlx::query_as::<_, Row>(
            "SELECT status, n FROM comment_counts WHERE n > 0 ORDER BY status",
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.status, r.n))
        .collect(),
    )
}

/// Numbers and stores events inside the caller's transaction; publish them after commit.
pub async fn write(
    tx: &mut sqlx::Transaction<'_, Any>,
    pending: Vec<PendingEvent>,
) -> Result<Vec<live::Event>, sqlx::Error> {
    let now = now_ms();
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO event_rooms (room, last_id, pruned_through) VALUES ($1, 1, 0) \
             ON CONFLICT (room) DO UPDATE SET last_id = event_rooms.last_id + 1 RETURNING last_id",
        )
        .bind(&p.room)
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (room, id, created_at, reader, staff, author_token, author) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p.room)
        .bind(id)
        .bind(now)
        .bind(p.reader.as_ref().map(Value::to_string))
        .bind(p.staff.to_string())
        .bind(p.author.as_ref().map(|(t, _)| t.clone()))
        .bind(p.author.as_ref().map(|(_, v)| v.to_string()))
        .execute(&mut **tx)
        .await?;
        out.push(live::Event {
            room: p.room,
            id,
            reader: p.reader,
            staff: p.staff,
            author: p.author,
        });
    }
    Ok(out)
}

/// The newest event id of a room (0 when none).
pub async fn last_id(store: &Store, room: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT last_id FROM event_rooms WHERE room = $1")
            .bind(room)
            .fetch_optional(&store.pool)
            .await?
            .unwrap_or(0),
    )
}

/// Forgets events older than `older_than` (Unix ms), remembering per room how far it pruned
/// so that older cursors get "reset" instead of a silent gap.
pub async fn prune(store: &Store, older_than: i64) -> Result<u64, StoreError> {
    let mut tx = store.pool.begin().await?;
    sqlx::query(
        "UPDATE event_rooms SET pruned_through = COALESCE((SELECT MAX(e.id) FROM events e \
         WHERE e.room = event_rooms.room AND e.created_at < $1), pruned_through)",
    )
    .bind(older_than)
    .execute(&mut *tx)
    .await?;
    let n = sqlx::query("DELETE FROM events WHERE created_at < $1")
        .bind(older_than)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Catch-up reads for the hub, from the `events` table.
pub struct DbEventSource {
    pub store: Store,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    reader: Option<String>,
    staff: String,
    author_token: Option<String>,
    author: Option<String>,
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
        #[derive(sqlx::FromRow)]
        struct RoomRow {
            last_id: i64,
            pruned_through: i64,
        }
        let r = sqlx::query_as::<_, RoomRow>(
            "SELECT last_id, pruned_through FROM event_rooms WHERE room = $1",
        )
        .bind(room)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(other)?;
        let (last, pruned) = r.map(|r| (r.last_id, r.pruned_through)).unwrap_or((0, 0));
        // A cursor from before the retention window, or from another database.
        if since < pruned || since > last {
            return Err(ReplayError::TooOld);
        }
        let rows = sqlx::query_as::<_, EventRow>(
            "SELECT id, reader, staff, author_token, author FROM events \
             WHERE room = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(room)
        .bind(since)
        .bind(limit.min(100_000) as i64)
        .fetch_all(&self.store.pool)
        .await
        .map_err(other)?;
        rows.into_iter()
            .map(|r| {
                let parse = |s: &str| serde_json::from_str::<Value>(s).map_err(other);
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
            })
            .collect()
    }

    async fn last_id(&self, room: &str) -> Result<i64, ReplayError> {
        last_id(&self.store, room).await.map_err(other)
    }
}
