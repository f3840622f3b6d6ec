//! Storage: sqlx over SQLite (default, an embedded file in WAL mode) or PostgreSQL.
//!
//! Both backends are reached through sqlx's `Any` driver with the same SQL (`$N` parameters,
//! BIGINT times and flags), so one test suite checks both. Schema changes live in
//! `migrations/{sqlite,postgres}` and are never edited once landed.

use lite::{Arg, Row, args};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, FromRow};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

pub(crate) mod lite;
mod writer;
pub(crate) use writer::AfterDurable;

/// Which database the URL selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors from the store; the message is for logs, not for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?} (use sqlite://FILE or postgres://...)")]
    BadUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// From SQLite's write connection (`store/lite.rs`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// True when a unique constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlx(sqlx::Error::Database(e)) => e.is_unique_violation(),
            StoreError::Sqlite(e) => lite::is_unique_violation(e),
            _ => false,
        }
    }
}

macro_rules! placeholder_moderator {
    () => {
        "import placeholder"
    };
}

/// The `moderator` of a comment that an import keeps only so that its replies stay in place
/// (deleted at the source, shown as "[deleted]"): published, but nobody's decision, so never
/// spam-filter training data.
pub const PLACEHOLDER_MODERATOR: &str = placeholder_moderator!();

/// SQL that leaves placeholders out (after a `WHERE`).
const NOT_PLACEHOLDER: &str = concat!(
    "AND (moderator IS NULL OR moderator <> '",
    placeholder_moderator!(),
    "')"
);

/// The connection pool and which backend it talks to.
#[derive(Clone, Debug)]
pub struct Store {
    // Crate-visible for `transfer`, whose bulk import and snapshot export need the pool
    // itself (savepoints, a snapshot transaction, one connection with relaxed sync).
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// SQLite's single writer with group commit (`store/writer.rs`); PostgreSQL runs
    /// concurrent transactions from the pool and groups commits itself.
    writer: Option<writer::Writer>,
    /// SQLite's in-thread point reads (`store/lite.rs`).
    readers: Option<std::sync::Arc<lite::Readers>>,
}

/// One write transaction. Every change of a use case (its rows, its audit entries, its events
/// for the outbox) goes through one of these, so they commit together or not at all.
pub struct Tx {
    tx: TxConn,
    /// Changes to the running counts per status, applied just before they are read or the
    /// transaction commits: on PostgreSQL their rows are the hottest of all (every post
    /// touches one), so their locks are taken as late as possible.
    counts: Vec<(String, i64)>,
    /// `NOTIFY`s queued on PostgreSQL (channel, payload), sent with the counts in the last
    /// statement before COMMIT: one round trip for both.
    notices: Vec<(String, String)>,
}

enum TxConn {
    /// PostgreSQL: a transaction of its own on a pooled connection.
    Pool(sqlx::Transaction<'static, Any>),
    /// SQLite: a savepoint in the writer's current batch.
    Batch(writer::Turn),
}

/// A thread as stored.
#[derive(Clone, Debug, FromRow)]
pub struct ThreadRow {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub title: String,
    pub comments_enabled: i64,
    pub published_at: Option<i64>,
}

/// A comment as stored. Never serialized: it holds the email, the IP and moderation data.
#[derive(Clone, Debug, FromRow)]
pub struct CommentRow {
    pub id: i64,
    pub thread_id: i64,
    pub parent_id: Option<i64>,
    pub depth: i64,
    pub path: String,
    pub author_name: String,
    pub author_email: Option<String>,
    pub author_url: Option<String>,
    pub title: Option<String>,
    pub body_source: String,
    pub body_html: String,
    pub status: String,
    pub moderator: Option<String>,
    pub reason: Option<String>,
    pub score: Option<f64>,
    pub ip: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The columns of [`CommentRow`], for SELECTs.
pub const COMMENT_COLUMNS: &str = "id, thread_id, parent_id, depth, path, author_name, \
     author_email, author_url, title, body_source, body_html, status, moderator, reason, score, \
     ip, created_at, updated_at";

static COMMENT_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COMMENT_COLUMNS} FROM comments WHERE id = $1"));

static THREAD_BY_KEY: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {THREAD_COLUMNS} FROM threads WHERE key = $1"));

const THREAD_COLUMNS: &str =
    "id, key, kind, title, comments_enabled, published_at, created_at, updated_at";

/// Width of one id in a materialised path; ten digits cover ids below 10^10.
pub const PATH_SEGMENT: usize = 10;

/// The path segment of one comment id.
pub fn path_segment(id: i64) -> String {
    format!("{id:0width$}", width = PATH_SEGMENT)
}

/// Where a reply to the comment at `path` and `depth` hangs in the stored tree: under it, or,
/// when that would pass `max_depth`, beside it under the ancestor one level above the cap.
/// The reply's `parent_id` still names whom it answers; only its depth and path stop
/// growing, so whatever a poster does, paths, page nesting and the tree view's recursion stay
/// bounded. Returns the tree parent's (path, depth); the reply goes one level below it.
pub fn capped_parent(path: &str, depth: i64, max_depth: u32) -> (String, i64) {
    let max = i64::from(max_depth.max(1));
    if depth < max {
        return (path.to_owned(), depth);
    }
    let keep = (max as usize) * PATH_SEGMENT;
    (path[..keep.min(path.len())].to_owned(), max - 1)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A user account. Never serialized: it holds the password hash.
#[derive(Clone, Debug, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub is_staff: i64,
}

/// One entry of the audit log.
#[derive(Clone, Debug, FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub comment_id: Option<i64>,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    pub detail: Option<String>,
}

/// A status change made by [`Tx::set_status`]: the status before, the comment after, and
/// its thread's key.
#[derive(Clone, Debug)]
pub struct StatusChange {
    pub before: String,
    pub comment: CommentRow,
    pub thread_key: String,
}

/// What [`Tx::set_status`] did to one comment.
#[derive(Clone, Debug)]
pub enum StatusOutcome {
    /// No comment has that id.
    Missing,
    /// It already had that status: nothing changed, nothing was logged.
    Unchanged,
    /// The status changed and the change was logged (boxed: the row is large and the
    /// other outcomes carry nothing).
    Changed(Box<StatusChange>),
}

/// One event for the outbox (`events` table): its room and one JSON payload per audience.
/// What the payloads say is decided by the caller; the store only numbers and keeps them.
#[derive(Clone, Debug)]
pub struct NewEventRow<'a> {
    pub room: &'a str,
    /// The comment a thread event is about (see [`Tx::forget_public_payloads`]).
    pub comment_id: Option<i64>,
    pub reader: Option<String>,
    pub staff: String,
    /// `(author token, payload)`.
    pub author: Option<(&'a str, String)>,
}

/// A trained spam model as stored.
#[derive(Clone, Debug, FromRow)]
pub struct SpamModelRow {
    pub id: i64,
    pub trained_at: i64,
    pub source: String,
    pub model: String,
    pub metrics: Option<String>,
    pub spam_count: i64,
    pub ham_count: i64,
}

/// A spam model to store.
#[derive(Clone, Debug)]
pub struct NewSpamModelRow<'a> {
    pub trained_at: i64,
    pub source: &'a str,
    pub model: String,
    pub metrics: Option<String>,
    pub spam_count: i64,
    pub ham_count: i64,
}

/// One stored event, as read back for a replay.
#[derive(Clone, Debug, FromRow)]
pub struct EventRow {
    pub id: i64,
    pub reader: Option<String>,
    pub staff: String,
    pub author_token: Option<String>,
    pub author: Option<String>,
}

/// Thread fields for `thread set`: `None` keeps the stored value (or the default on create).
#[derive(Clone, Debug, Default)]
pub struct ThreadSpec {
    pub key: String,
    pub kind: Option<String>,
    pub title: Option<String>,
    pub comments_enabled: Option<bool>,
    pub published_at: Option<i64>,
}

/// A validated comment ready to insert.
#[derive(Clone, Debug)]
pub struct NewCommentRow {
    pub thread_id: i64,
    pub parent: Option<(i64, String, i64)>,
    pub author_name: String,
    pub author_email: Option<String>,
    pub author_url: Option<String>,
    pub title: Option<String>,
    pub body_source: String,
    pub body_html: String,
    pub status: String,
    pub moderator: Option<String>,
    pub reason: Option<String>,
    pub score: Option<f64>,
    pub ip: Option<String>,
    pub created_at: i64,
}

impl Store {
    /// Connects, creating the SQLite file if missing, and runs the migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            // Create the file when missing, unless the URL already says how to open it.
            let url = if rest.contains("mode=") {
                url.to_owned()
            } else if rest.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL makes every acknowledged
                    // commit durable across power loss; the busy timeout queues writers.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let mut store = Store {
            pool,
            backend,
            writer: None,
            readers: None,
        };
        store.migrate().await?;
        if backend == Backend::Sqlite {
            // Its own connection, outside the pool: it lives as long as the writer task, and
            // the pool's connections stay for readers. The file exists by now (the pool
            // created it and migrated it).
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?;
            let (conn, wal) = lite::open_writer(options.get_filename())?;
            store.writer = Some(writer::Writer::start(conn, wal));
            store.readers = Some(std::sync::Arc::new(lite::Readers::new(
                options.get_filename(),
            )));
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Closes every connection (at shutdown); later queries fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One write statement on its own; the rows it changed. On SQLite it goes through the
    /// writer like every other write (queued, committed with the batch), so it never sleeps
    /// in SQLite's busy handler beside the posts, nor makes the writer's BEGIN wait; on
    /// PostgreSQL it runs on the pool, in a transaction of its own.
    pub(crate) async fn write_one(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        if self.writer.is_none() {
            return Ok(lite::bind(sqlx::query(sql), args)
                .execute(&self.pool)
                .await?
                .rows_affected());
        }
        let mut tx = self.begin().await?;
        let changed = tx.exec(sql, args).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Starts a write transaction. On SQLite this waits for a turn with the one writer
    /// (queued, never in the busy handler) and joins its current batch.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let tx = match &self.writer {
            Some(w) => TxConn::Batch(w.turn().await?),
            None => TxConn::Pool(self.pool.begin().await?),
        };
        Ok(Tx {
            tx,
            counts: Vec::new(),
            notices: Vec::new(),
        })
    }

    /// SQLite's writer: (batches committed, transactions they kept) since the store opened;
    /// `None` on PostgreSQL.
    pub fn write_counts(&self) -> Option<(u64, u64)> {
        self.writer.as_ref().map(writer::Writer::counts)
    }

    /// One row of a point lookup, if any: on SQLite in the calling thread (see
    /// `lite::Readers`), on PostgreSQL from the pool.
    async fn look_up<'q, T: Row>(
        &self,
        sql: &'q str,
        args: &[Arg<'q>],
    ) -> Result<Option<T>, StoreError> {
        match &self.readers {
            Some(r) => r.with(|conn| lite::fetch_optional(conn, sql, args)),
            None => Ok(lite::bind_as(sqlx::query_as::<_, T>(sql), args)
                .fetch_optional(&self.pool)
                .await?),
        }
    }

    /// What a thread's public view depends on: when its row last changed and its room's
    /// newest event id; `None` when there is no such thread.
    pub async fn thread_version(&self, key: &str) -> Result<Option<(i64, i64)>, StoreError> {
        self.look_up(
            "SELECT t.updated_at, COALESCE(r.last_id, 0) AS last_id FROM threads t \
             LEFT JOIN event_rooms r ON r.room = t.key WHERE t.key = $1",
            args![key],
        )
        .await
    }

    /// The newest event id of a room (0 when none).
    pub async fn last_event_id(&self, room: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT last_id FROM event_rooms WHERE room = $1")
                .bind(room)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    /// A room's newest event id and how far its events were pruned (0, 0 when none).
    pub async fn event_room(&self, room: &str) -> Result<(i64, i64), StoreError> {
        #[derive(FromRow)]
        struct RoomRow {
            last_id: i64,
            pruned_through: i64,
        }
        Ok(sqlx::query_as::<_, RoomRow>(
            "SELECT last_id, pruned_through FROM event_rooms WHERE room = $1",
        )
        .bind(room)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| (r.last_id, r.pruned_through))
        .unwrap_or((0, 0)))
    }

    /// Returns once every write committed before the call is durable (SQLite's writer
    /// answers writes after its fsync, but other connections see them a moment before;
    /// on PostgreSQL a commit is visible only once durable).
    pub async fn durable(&self) -> Result<(), StoreError> {
        match &self.writer {
            Some(w) => w.durable().await,
            None => Ok(()),
        }
    }

    /// Events of a room after `since`, oldest first, at most `limit`.
    pub async fn events_since(
        &self,
        room: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT id, reader, staff, author_token, author FROM events \
             WHERE room = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(room)
        .bind(since)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets events older than `older_than` (Unix ms), remembering per room how far it
    /// pruned so that older cursors get "reset" instead of a silent gap.
    pub async fn prune_events(&self, older_than: i64) -> Result<u64, StoreError> {
        // Through the writer on SQLite, like every write (no wait in the busy handler).
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE event_rooms SET pruned_through = COALESCE((SELECT MAX(e.id) FROM events e \
             WHERE e.room = event_rooms.room AND e.created_at < $1), pruned_through)",
            args![older_than],
        )
        .await?;
        let n = tx
            .exec(
                "DELETE FROM events WHERE created_at < $1",
                args![older_than],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// True when the database answers, and on SQLite the writer still writes (it stops
    /// for good after a failed fsync: `/health` then fails, so that a supervisor restarts
    /// the server).
    pub async fn ping(&self) -> bool {
        if self.writer.as_ref().is_some_and(writer::Writer::is_broken) {
            return false;
        }
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// A stored setting.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Stores a setting unless one exists; returns the value that is stored afterwards.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.write_one(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            args![key, value],
        )
        .await?;
        Ok(self.setting(key).await?.unwrap_or_else(|| value.to_owned()))
    }

    /// A thread by key.
    pub async fn thread(&self, key: &str) -> Result<Option<ThreadRow>, StoreError> {
        self.look_up(THREAD_BY_KEY.as_str(), args![key]).await
    }

    /// One page of threads with their published comment counts, newest first, and how many
    /// threads there are in all.
    pub async fn threads_with_counts(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<(ThreadRow, i64)>, i64), StoreError> {
        #[derive(FromRow)]
        struct Counted {
            #[sqlx(flatten)]
            thread: ThreadRow,
            n: i64,
        }
        let rows = sqlx::query_as::<_, Counted>(
            "SELECT t.id, t.key, t.kind, t.title, t.comments_enabled, t.published_at, \
                    t.created_at, t.updated_at, \
                    (SELECT COUNT(*) FROM comments c \
                      WHERE c.thread_id = t.id AND c.status = 'published') AS n \
               FROM threads t ORDER BY t.created_at DESC, t.id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM threads")
            .fetch_one(&self.pool)
            .await?;
        Ok((rows.into_iter().map(|r| (r.thread, r.n)).collect(), total))
    }

    /// Creates a thread or updates the given fields of an existing one.
    pub async fn set_thread(&self, spec: &ThreadSpec) -> Result<ThreadRow, StoreError> {
        let now = now_ms();
        // Through SQLite's writer like every other write: a deferred transaction that reads
        // first fails at once (SQLITE_BUSY_SNAPSHOT) if the writer commits in between.
        let mut tx = self.begin().await?;
        let existing: Option<ThreadRow> = tx
            .fetch_optional(THREAD_BY_KEY.as_str(), args![&spec.key])
            .await?;
        match existing {
            Some(t) => {
                tx.exec(
                    "UPDATE threads SET kind = $1, title = $2, comments_enabled = $3, \
                     published_at = $4, updated_at = $5 WHERE id = $6",
                    args![
                        spec.kind.as_deref().unwrap_or(&t.kind),
                        spec.title.as_deref().unwrap_or(&t.title),
                        spec.comments_enabled
                            .map(i64::from)
                            .unwrap_or(t.comments_enabled),
                        spec.published_at.or(t.published_at),
                        now,
                        t.id,
                    ],
                )
                .await?;
            }
            None => {
                tx.exec(
                    "INSERT INTO threads (key, kind, title, comments_enabled, published_at, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    args![
                        &spec.key,
                        spec.kind.as_deref().unwrap_or("page"),
                        spec.title.as_deref().unwrap_or(&spec.key),
                        i64::from(spec.comments_enabled.unwrap_or(true)),
                        spec.published_at.unwrap_or(now),
                        now,
                    ],
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.thread(&spec.key)
            .await?
            .ok_or_else(|| StoreError::Sqlx(sqlx::Error::RowNotFound))
    }

    /// One comment by id.
    pub async fn comment(&self, id: i64) -> Result<Option<CommentRow>, StoreError> {
        self.look_up(COMMENT_BY_ID.as_str(), args![id]).await
    }

    /// Comments of a thread after `after` in tree order, at most `limit`.
    /// `published_only` selects what readers may see.
    pub async fn comments_after(
        &self,
        thread_id: i64,
        published_only: bool,
        after: &str,
        limit: usize,
    ) -> Result<Vec<CommentRow>, StoreError> {
        let sql = if published_only {
            format!(
                "SELECT {COMMENT_COLUMNS} FROM comments WHERE thread_id = $1 \
                 AND status = 'published' AND path > $2 ORDER BY path LIMIT $3"
            )
        } else {
            format!(
                "SELECT {COMMENT_COLUMNS} FROM comments WHERE thread_id = $1 \
                 AND path > $2 ORDER BY path LIMIT $3"
            )
        };
        Ok(sqlx::query_as::<_, CommentRow>(&sql)
            .bind(thread_id)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Published comments of a thread.
    pub async fn published_count(&self, thread_id: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM comments WHERE thread_id = $1 AND status = 'published'",
        )
        .bind(thread_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Top-level comments after `after` (in tree order) that a viewer may see.
    pub async fn top_level_after(
        &self,
        thread_id: i64,
        published_only: bool,
        after: &str,
    ) -> Result<i64, StoreError> {
        let sql = if published_only {
            "SELECT COUNT(*) FROM comments WHERE thread_id = $1 AND status = 'published' \
             AND path > $2 AND depth = 0"
        } else {
            "SELECT COUNT(*) FROM comments WHERE thread_id = $1 AND path > $2 AND depth = 0"
        };
        Ok(sqlx::query_scalar::<_, i64>(sql)
            .bind(thread_id)
            .bind(after)
            .fetch_one(&self.pool)
            .await?)
    }

    /// True when a form token's nonce has been spent.
    pub async fn nonce_used(&self, nonce: &str) -> Result<bool, StoreError> {
        let spent: Option<(i64,)> = self
            .look_up("SELECT 1 FROM form_nonces WHERE nonce = $1", args![nonce])
            .await?;
        Ok(spent.is_some())
    }

    /// Forgets spent nonces whose tokens have expired anyway.
    pub async fn purge_nonces(&self, now: i64) -> Result<u64, StoreError> {
        self.write_one("DELETE FROM form_nonces WHERE expires_at < $1", args![now])
            .await
    }

    /// Deletes sessions that have expired.
    pub async fn purge_sessions(&self, now: i64) -> Result<u64, StoreError> {
        self.write_one("DELETE FROM sessions WHERE expires_at <= $1", args![now])
            .await
    }

    /// Forgets the IP addresses of comments made before `before`.
    pub async fn forget_ips(&self, before: i64) -> Result<u64, StoreError> {
        self.write_one(
            "UPDATE comments SET ip = NULL WHERE ip IS NOT NULL AND created_at < $1",
            args![before],
        )
        .await
    }

    /// Deletes audit log entries made before `before`.
    pub async fn purge_audit(&self, before: i64) -> Result<u64, StoreError> {
        self.write_one("DELETE FROM audit_log WHERE at < $1", args![before])
            .await
    }

    /// Whether this email has a published comment (for "first comment" pre-moderation).
    /// The first one found is enough: counting them all read every comment of a regular
    /// commenter on each of their posts.
    pub async fn has_published_by_email(&self, email: &str) -> Result<bool, StoreError> {
        let found: Option<(i64,)> = self
            .look_up(
                "SELECT id FROM comments WHERE author_email = $1 AND status = 'published' LIMIT 1",
                args![email],
            )
            .await?;
        Ok(found.is_some())
    }

    /// Creates a user; a taken name is a unique violation.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        is_staff: bool,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "INSERT INTO users (username, password_hash, is_staff, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(i64::from(is_staff))
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Sets a user's password and staff flag.
    pub async fn update_user(
        &self,
        username: &str,
        password_hash: &str,
        is_staff: bool,
    ) -> Result<bool, StoreError> {
        Ok(self
            .write_one(
                "UPDATE users SET password_hash = $1, is_staff = $2 WHERE username = $3",
                args![password_hash, i64::from(is_staff), username],
            )
            .await?
            > 0)
    }

    /// A user by name.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT id, username, password_hash, is_staff, created_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT id, username, password_hash, is_staff, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores an API key's hash for a user.
    pub async fn insert_api_key(
        &self,
        name: &str,
        key_hash: &str,
        user_id: i64,
    ) -> Result<(), StoreError> {
        self.write_one(
            "INSERT INTO api_keys (name, key_hash, user_id, created_at) VALUES ($1, $2, $3, $4)",
            args![name, key_hash, user_id, now_ms()],
        )
        .await?;
        Ok(())
    }

    /// The user an API key (by hash) belongs to.
    pub async fn user_by_api_key(&self, key_hash: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(
            "SELECT u.id, u.username, u.password_hash, u.is_staff, u.created_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Saves a session record (insert or replace).
    pub async fn session_save(
        &self,
        id: &str,
        data: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write_one(
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
            args![id, data, expires_at],
        )
        .await?;
        Ok(())
    }

    /// Inserts a session record; false when the id is taken.
    pub async fn session_create(
        &self,
        id: &str,
        data: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.write_one(
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            args![id, data, expires_at],
        )
        .await?
            == 1)
    }

    /// A live session record's data.
    pub async fn session_load(&self, id: &str, now: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT data FROM sessions WHERE id = $1 AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every session record: (id, data).
    pub async fn sessions(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as::<_, (String, String)>("SELECT id, data FROM sessions")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Deletes a user's API keys (those labelled `label`, if given); returns how many.
    pub async fn delete_api_keys(
        &self,
        user_id: i64,
        label: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.write_one(
            "DELETE FROM api_keys WHERE user_id = $1 AND ($2 IS NULL OR name = $2)",
            args![user_id, label],
        )
        .await
    }

    /// Deletes a session record.
    pub async fn session_delete(&self, id: &str) -> Result<(), StoreError> {
        self.write_one("DELETE FROM sessions WHERE id = $1", args![id])
            .await?;
        Ok(())
    }

    /// Records a moderator's rejection (nothing else is stored for a rejected comment).
    pub async fn record_rejection(
        &self,
        thread_id: i64,
        moderator: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.write_one(
            "INSERT INTO audit_log (at, actor, action, thread_id, status_after, detail) \
             VALUES ($1, $2, 'reject', $3, 'rejected', $4)",
            args![
                now_ms(),
                &format!("moderator:{moderator}"),
                thread_id,
                reason
            ],
        )
        .await?;
        Ok(())
    }

    /// Every comment in one of `statuses` that is a decision, oldest first (training data
    /// for the spam filter): import placeholders ([`PLACEHOLDER_MODERATOR`]) are left out.
    pub async fn training_comments(
        &self,
        statuses: &[&str],
    ) -> Result<Vec<CommentRow>, StoreError> {
        let list: Vec<String> = (1..=statuses.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COMMENT_COLUMNS} FROM comments WHERE status IN ({}) {NOT_PLACEHOLDER} \
             ORDER BY id",
            list.join(", ")
        );
        let mut q = sqlx::query_as::<_, CommentRow>(&sql);
        for s in statuses {
            q = q.bind(*s);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// The newest stored spam model.
    pub async fn latest_spam_model(&self) -> Result<Option<SpamModelRow>, StoreError> {
        Ok(self.spam_models(1).await?.into_iter().next())
    }

    /// The newest `n` stored spam models, newest first.
    pub async fn spam_models(&self, n: i64) -> Result<Vec<SpamModelRow>, StoreError> {
        Ok(sqlx::query_as::<_, SpamModelRow>(
            "SELECT id, trained_at, source, model, metrics, spam_count, ham_count \
             FROM spam_models ORDER BY id DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a newly trained spam model.
    pub async fn insert_spam_model(&self, m: &NewSpamModelRow<'_>) -> Result<(), StoreError> {
        self.write_one(
            "INSERT INTO spam_models (trained_at, source, model, metrics, spam_count, ham_count, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $1)",
            args![
                m.trained_at,
                m.source,
                &m.model,
                &m.metrics,
                m.spam_count,
                m.ham_count
            ],
        )
        .await?;
        Ok(())
    }

    /// Replaces a stored model's weights after incremental learning.
    pub async fn update_spam_model(&self, id: i64, model: &str, at: i64) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE spam_models SET model = $1, updated_at = $2 WHERE id = $3",
            args![model, at, id],
        )
        .await?;
        Ok(())
    }

    /// The moderation queue: comments in `statuses` (all when empty), newest first.
    pub async fn queue(
        &self,
        statuses: &[&str],
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<(CommentRow, String)>, i64), StoreError> {
        #[derive(FromRow)]
        struct WithKey {
            #[sqlx(flatten)]
            comment: CommentRow,
            thread_key: String,
        }
        let filter = if statuses.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (0..statuses.len()).map(|i| format!("${}", i + 1)).collect();
            format!("WHERE c.status IN ({})", list.join(", "))
        };
        let n = statuses.len();
        let cols: String = COMMENT_COLUMNS
            .split(", ")
            .map(|c| format!("c.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, t.key AS thread_key FROM comments c JOIN threads t ON t.id = c.thread_id \
             {filter} ORDER BY c.created_at DESC, c.id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let mut q = sqlx::query_as::<_, WithKey>(&sql);
        for s in statuses {
            q = q.bind(*s);
        }
        let rows = q.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let count_sql = format!("SELECT COUNT(*) FROM comments c {filter}");
        let mut cq = sqlx::query_scalar::<_, i64>(&count_sql);
        for s in statuses {
            cq = cq.bind(*s);
        }
        let total = cq.fetch_one(&self.pool).await?;
        Ok((
            rows.into_iter()
                .map(|r| (r.comment, r.thread_key))
                .collect(),
            total,
        ))
    }

    /// The audit log, newest first.
    pub async fn audit(&self, limit: i64, offset: i64) -> Result<(Vec<AuditRow>, i64), StoreError> {
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT id, at, actor, action, comment_id, thread_id, status_before, status_after, \
             detail FROM audit_log ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        Ok((rows, total))
    }

    /// Comment counts per status.
    pub async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.count_by_status("").await
    }

    /// [`Store::status_counts`] of the comments [`Store::training_comments`] returns.
    pub async fn training_status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.count_by_status(&format!("WHERE TRUE {NOT_PLACEHOLDER}"))
            .await
    }

    async fn count_by_status(&self, filter: &str) -> Result<Vec<(String, i64)>, StoreError> {
        #[derive(FromRow)]
        struct Row {
            status: String,
            n: i64,
        }
        let sql = format!("SELECT status, COUNT(*) AS n FROM comments {filter} GROUP BY status");
        Ok(sqlx::query_as::<_, Row>(&sql)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.status, r.n))
            .collect())
    }
}

impl Tx {
    /// Makes every change of this transaction durable and visible; on SQLite, returns once
    /// the batch it joined is committed.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.commit_then(None).await
    }

    /// [`Tx::commit`], then `after` (publishing the transaction's live events). On SQLite
    /// it runs as soon as the batch is durable, in the order the batch's transactions
    /// drew their ids, before anyone is answered, and even if this request is dropped
    /// meanwhile (its client hung up): events reach the hub in id order, and none is left
    /// unpublished. On PostgreSQL it runs here after COMMIT; there the cluster's listener
    /// orders events and reads back any this process commits but does not publish.
    pub async fn commit_then(mut self, after: Option<AfterDurable>) -> Result<(), StoreError> {
        self.finish().await?;
        match self.tx {
            TxConn::Pool(tx) => {
                tx.commit().await?;
                if let Some(after) = after {
                    after();
                }
            }
            TxConn::Batch(turn) => turn.commit(after).await?,
        }
        Ok(())
    }

    /// Whether this transaction runs in SQLite's writer, which holds the write lock from the
    /// batch's BEGIN IMMEDIATE to its COMMIT: nothing else can insert meanwhile, so the next
    /// id of a table or a room is known before the INSERT, and a value that needs it (a
    /// comment's path, an event's number) is written by the same statement. Each statement
    /// saved is a round trip to sqlx's SQLite thread on the batch's serial path.
    fn single_writer(&self) -> bool {
        matches!(self.tx, TxConn::Batch(_))
    }

    /// Runs one statement in this transaction; the number of rows it changed. On SQLite it
    /// runs right here, on the writer's connection (no hop to another thread).
    async fn exec<'q>(&mut self, sql: &'q str, args: &[Arg<'q>]) -> Result<u64, StoreError> {
        match &mut self.tx {
            TxConn::Pool(tx) => Ok(lite::bind(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected()),
            TxConn::Batch(turn) => lite::exec(turn.conn(), sql, args),
        }
    }

    /// Every row of a query (or a write's RETURNING) in this transaction.
    async fn fetch_all<'q, T: Row>(
        &mut self,
        sql: &'q str,
        args: &[Arg<'q>],
    ) -> Result<Vec<T>, StoreError> {
        match &mut self.tx {
            TxConn::Pool(tx) => Ok(lite::bind_as(sqlx::query_as::<_, T>(sql), args)
                .fetch_all(&mut **tx)
                .await?),
            TxConn::Batch(turn) => lite::fetch_all(turn.conn(), sql, args),
        }
    }

    /// The first row of a query (or a write's RETURNING), if any.
    async fn fetch_optional<'q, T: Row>(
        &mut self,
        sql: &'q str,
        args: &[Arg<'q>],
    ) -> Result<Option<T>, StoreError> {
        match &mut self.tx {
            TxConn::Pool(tx) => Ok(lite::bind_as(sqlx::query_as::<_, T>(sql), args)
                .fetch_optional(&mut **tx)
                .await?),
            TxConn::Batch(turn) => lite::fetch_optional(turn.conn(), sql, args),
        }
    }

    /// The one row of a query (or a write's RETURNING); an error when there is none.
    async fn fetch_one<'q, T: Row>(
        &mut self,
        sql: &'q str,
        args: &[Arg<'q>],
    ) -> Result<T, StoreError> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or(StoreError::Sqlx(sqlx::Error::RowNotFound))
    }

    /// Spends a form token's nonce: a nonce already spent fails with a unique violation.
    /// Called first in a post's transaction, so SQLite takes the write lock at once (no
    /// deferred upgrade from a read).
    pub async fn spend_nonce(&mut self, nonce: &str, expires_at: i64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO form_nonces (nonce, expires_at) VALUES ($1, $2)",
            args![nonce, expires_at],
        )
        .await?;
        Ok(())
    }

    /// Stores a comment with its materialised path and counts it; returns the stored row.
    pub async fn insert_comment(&mut self, new: &NewCommentRow) -> Result<CommentRow, StoreError> {
        self.insert_comment_spending(new, None).await
    }

    /// [`Tx::insert_comment`], spending a form token's nonce (`nonce`, `expires_at`) first
    /// ([`Tx::spend_nonce`]: a nonce spent before is a unique violation). On PostgreSQL both
    /// are one statement, one round trip; on SQLite two, in-thread.
    pub async fn insert_comment_spending(
        &mut self,
        new: &NewCommentRow,
        nonce: Option<(&str, i64)>,
    ) -> Result<CommentRow, StoreError> {
        if let (Some((n, expires_at)), true) = (nonce, self.single_writer()) {
            self.spend_nonce(n, expires_at).await?;
        }
        let (parent_id, depth) = match &new.parent {
            Some((id, _, depth)) => (Some(*id), depth + 1),
            None => (None, 0),
        };
        let prefix = new.parent.as_ref().map_or("", |(_, path, _)| path.as_str());
        // Built once: they name the column list and the path's width, which are constants.
        static SQLITE: LazyLock<String> = LazyLock::new(|| {
            // The id AUTOINCREMENT would give (one past the highest ever used), written
            // explicitly so that the path can end with it in the same statement.
            format!(
                "WITH next (id) AS (SELECT max( \
                   COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'comments'), 0), \
                   COALESCE((SELECT MAX(id) FROM comments), 0)) + 1) \
                 INSERT INTO comments (id, thread_id, parent_id, depth, path, author_name, \
                 author_email, author_url, title, body_source, body_html, status, moderator, \
                 reason, score, ip, created_at, updated_at) \
                 SELECT next.id, $1, $2, $3, $4 || printf('%0{PATH_SEGMENT}d', next.id), $5, $6, \
                 $7, $8, $9, $10, $11, $12, $13, NULLIF($14, -1.0), $15, $16, $16 FROM next \
                 WHERE true RETURNING {COMMENT_COLUMNS}"
            )
        });
        // The id is drawn from the identity column's sequence first, so that the path can
        // end with it in the same statement (one round trip, not an INSERT and an UPDATE).
        // `lpad` would cut an id longer than the width; `format!` would not. Spending the
        // nonce is a CTE of the same statement: its unique violation fails the statement.
        fn postgres(spent: &str, from: &str) -> String {
            format!(
                "WITH {spent}next (id) AS \
                 (SELECT nextval(pg_get_serial_sequence('comments', 'id'))) \
                 INSERT INTO comments (id, thread_id, parent_id, depth, path, author_name, \
                 author_email, author_url, title, body_source, body_html, status, moderator, \
                 reason, score, ip, created_at, updated_at) \
                 SELECT next.id, $1, $2, $3, \
                 $4 || lpad(next.id::text, greatest({PATH_SEGMENT}, length(next.id::text)), '0'), \
                 $5, $6, $7, $8, $9, $10, $11, $12, $13, NULLIF($14, -1.0), $15, $16, $16 \
                 FROM {from} RETURNING {COMMENT_COLUMNS}"
            )
        }
        static POSTGRES: LazyLock<String> = LazyLock::new(|| postgres("", "next"));
        static POSTGRES_SPENDING: LazyLock<String> = LazyLock::new(|| {
            postgres(
                "spent AS (INSERT INTO form_nonces (nonce, expires_at) VALUES ($17, $18) \
                 RETURNING 1), ",
                "next, spent",
            )
        });
        let spending = nonce.filter(|_| !self.single_writer());
        let sql = match (self.single_writer(), spending) {
            (true, _) => &SQLITE,
            (false, None) => &POSTGRES,
            (false, Some(_)) => &POSTGRES_SPENDING,
        };
        let values = args![
            new.thread_id,
            parent_id,
            depth,
            prefix,
            &new.author_name,
            &new.author_email,
            &new.author_url,
            &new.title,
            &new.body_source,
            &new.body_html,
            &new.status,
            &new.moderator,
            &new.reason,
            // Never a NULL f64: sqlx 0.8.6's Any driver binds a NULL DOUBLE as a
            // float4 on PostgreSQL, and the statement it then caches refuses the next
            // real score ("incorrect binary data format"). Scores are probabilities,
            // so -1 means none.
            new.score.unwrap_or(-1.0),
            &new.ip,
            new.created_at,
        ];
        let row: CommentRow = match spending {
            None => self.fetch_one(sql.as_str(), values).await?,
            Some((n, expires_at)) => {
                let mut all = values.to_vec();
                all.extend([Arg::from(n), Arg::from(expires_at)]);
                self.fetch_one(sql.as_str(), &all).await?
            }
        };
        debug_assert_eq!(row.path, format!("{prefix}{}", path_segment(row.id)));
        self.count_status(&new.status, 1).await?;
        Ok(row)
    }

    /// Moves one comment to `status` and logs the change. A comment already in that status
    /// is left alone and nothing is logged, so repeating an action is a no-op.
    pub async fn set_status(
        &mut self,
        id: i64,
        status: &str,
        actor: &str,
        action: &str,
    ) -> Result<StatusOutcome, StoreError> {
        let now = now_ms();
        // The UPDATE comes first so SQLite takes the write lock at once.
        let updated = self
            .exec(
                "UPDATE comments SET updated_at = updated_at WHERE id = $1",
                args![id],
            )
            .await?;
        if updated == 0 {
            return Ok(StatusOutcome::Missing);
        }
        let before: CommentRow = self.fetch_one(COMMENT_BY_ID.as_str(), args![id]).await?;
        if before.status == status {
            return Ok(StatusOutcome::Unchanged);
        }
        self.exec(
            "UPDATE comments SET status = $1, updated_at = $2 WHERE id = $3",
            args![status, now, id],
        )
        .await?;
        self.count_status(&before.status, -1).await?;
        self.count_status(status, 1).await?;
        self.exec(
            "INSERT INTO audit_log (at, actor, action, comment_id, thread_id, status_before, \
             status_after) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            args![
                now,
                actor,
                action,
                id,
                before.thread_id,
                &before.status,
                status
            ],
        )
        .await?;
        let (thread_key,): (String,) = self
            .fetch_one(
                "SELECT key FROM threads WHERE id = $1",
                args![before.thread_id],
            )
            .await?;
        let mut after = before.clone();
        after.status = status.to_owned();
        after.updated_at = now;
        Ok(StatusOutcome::Changed(Box::new(StatusChange {
            before: before.status,
            comment: after,
            thread_key,
        })))
    }

    /// Adds `delta` to the running count of comments with `status` (see [`Tx::status_counts`])
    /// when the counts are next read or the transaction commits.
    async fn count_status(&mut self, status: &str, delta: i64) -> Result<(), StoreError> {
        match self.counts.iter_mut().find(|(s, _)| s == status) {
            Some((_, n)) => *n += delta,
            None => self.counts.push((status.to_owned(), delta)),
        }
        Ok(())
    }

    /// What waits for the end of the transaction: the counts, and on PostgreSQL the queued
    /// `NOTIFY`s. With notices, all of it is one statement: a CTE per count, then
    /// `SELECT pg_notify(..)` for each notice.
    async fn finish(&mut self) -> Result<(), StoreError> {
        if self.notices.is_empty() {
            return self.apply_counts().await;
        }
        let counts: Vec<(String, i64)> = std::mem::take(&mut self.counts)
            .into_iter()
            .filter(|(_, delta)| *delta != 0)
            .collect();
        let notices = std::mem::take(&mut self.notices);
        let mut values: Vec<Arg> = Vec::with_capacity(2 * (counts.len() + notices.len()));
        let mut ctes = Vec::with_capacity(counts.len());
        for (i, (status, delta)) in counts.iter().enumerate() {
            let (s, n) = (values.len() + 1, values.len() + 2);
            ctes.push(format!("c{i} AS ({})", count_upsert(s, n)));
            values.extend([Arg::from(status), Arg::from(*delta)]);
        }
        let mut calls = Vec::with_capacity(notices.len());
        for (channel, payload) in &notices {
            let (c, p) = (values.len() + 1, values.len() + 2);
            calls.push(format!("pg_notify(${c}, ${p})"));
            values.extend([Arg::from(channel), Arg::from(payload)]);
        }
        let with = if ctes.is_empty() {
            String::new()
        } else {
            format!("WITH {} ", ctes.join(", "))
        };
        let sql = format!("{with}SELECT {}", calls.join(", "));
        self.exec(&sql, &values).await?;
        Ok(())
    }

    async fn apply_counts(&mut self) -> Result<(), StoreError> {
        for (status, delta) in std::mem::take(&mut self.counts) {
            if delta == 0 {
                continue;
            }
            static SQL: LazyLock<String> = LazyLock::new(|| count_upsert(1, 2));
            self.exec(SQL.as_str(), args![&status, delta]).await?;
        }
        Ok(())
    }

    /// Comments per status, from the running counts kept by every insert and status change
    /// (no scan of the comments), as this transaction sees them.
    pub async fn status_counts(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        self.apply_counts().await?;
        self.fetch_all(
            "SELECT status, n FROM comment_counts WHERE n > 0 ORDER BY status",
            &[],
        )
        .await
    }

    /// Takes `room`'s counter row until commit (PostgreSQL; SQLite's writer already holds
    /// the only write lock), so what this transaction reads next sees every transaction that
    /// numbered an event of the room before it, and its own event is numbered after theirs.
    pub async fn lock_room(&mut self, room: &str) -> Result<(), StoreError> {
        if self.single_writer() {
            return Ok(());
        }
        self.exec(
            "INSERT INTO event_rooms (room, last_id, pruned_through) VALUES ($1, 0, 0) \
             ON CONFLICT (room) DO UPDATE SET last_id = event_rooms.last_id",
            args![room],
        )
        .await?;
        Ok(())
    }

    /// Numbers an event in its room and stores it (the outbox); returns its id. The room's
    /// counter row is locked until commit, so ids follow commit order within a room, also on
    /// PostgreSQL.
    pub async fn append_event(&mut self, e: &NewEventRow<'_>) -> Result<i64, StoreError> {
        // The statement differs only in how the id is found; both are fixed strings.
        macro_rules! insert_event {
            ($id:literal) => {
                concat!(
                    "INSERT INTO events (room, id, created_at, reader, staff, author_token, \
                     author, comment_id) VALUES ($1, ",
                    $id,
                    ", $2, $3, $4, $5, $6, $7) RETURNING id"
                )
            };
        }
        let sql = if self.single_writer() {
            // The SQLite trigger `events_bump_room` moves the room's counter after the INSERT.
            insert_event!("COALESCE((SELECT last_id FROM event_rooms WHERE room = $1), 0) + 1")
        } else {
            // The counter row is bumped first, in the same statement: its lock is what
            // orders concurrent transactions, and the event takes the id it returns.
            concat!(
                "WITH bumped (id) AS (INSERT INTO event_rooms (room, last_id, pruned_through) \
                 VALUES ($1, 1, 0) ON CONFLICT (room) DO UPDATE \
                 SET last_id = event_rooms.last_id + 1 RETURNING last_id) ",
                insert_event!("(SELECT id FROM bumped)")
            )
        };
        let (id,): (i64,) = self
            .fetch_one(
                sql,
                args![
                    e.room,
                    now_ms(),
                    &e.reader,
                    e.staff.as_str(),
                    e.author.as_ref().map(|(t, _)| *t),
                    e.author.as_ref().map(|(_, a)| a.as_str()),
                    e.comment_id,
                ],
            )
            .await?;
        Ok(id)
    }

    /// Blanks what the stored events of `room` about `comment_id` tell readers and authors,
    /// so that replaying them shows nothing of it; staff payloads stay.
    pub async fn forget_public_payloads(
        &mut self,
        room: &str,
        comment_id: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE events SET reader = NULL, author_token = NULL, author = NULL \
             WHERE room = $1 AND comment_id = $2",
            args![room, comment_id],
        )
        .await?;
        Ok(())
    }
}

/// Adds `$delta` to the running count of status `$status` (placeholder numbers given).
fn count_upsert(status: usize, delta: usize) -> String {
    format!(
        "INSERT INTO comment_counts (status, n) VALUES (${status}, ${delta}) \
         ON CONFLICT (status) DO UPDATE SET n = comment_counts.n + ${delta}"
    )
}

/// A webhook delivery in the outbox, as the worker reads it.
#[derive(Clone, Debug, FromRow)]
pub struct WebhookRow {
    pub id: i64,
    pub url: String,
    pub event: String,
    pub body: String,
    pub attempts: i64,
}

impl Tx {
    /// Queues a webhook delivery in this transaction: made only if the change that caused it
    /// commits, and not lost if the receiver is down or the server stops.
    pub async fn queue_webhook(
        &mut self,
        url: &str,
        event: &str,
        comment_id: i64,
        body: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO webhook_outbox (url, event, comment_id, body, created_at, \
             next_attempt_at) VALUES ($1, $2, $3, $4, $5, $5)",
            args![url, event, comment_id, body, now],
        )
        .await?;
        Ok(())
    }

    /// The thread with this id, as this transaction sees it.
    pub async fn thread_by_id(&mut self, id: i64) -> Result<Option<ThreadRow>, StoreError> {
        static SELECT: LazyLock<String> =
            LazyLock::new(|| format!("SELECT {THREAD_COLUMNS} FROM threads WHERE id = $1"));
        self.fetch_optional(SELECT.as_str(), args![id]).await
    }
}

impl Store {
    /// Deliveries due now, oldest first: neither delivered nor given up, and not waiting for
    /// a retry or claimed by a sender.
    pub async fn due_webhooks(&self, now: i64, limit: i64) -> Result<Vec<WebhookRow>, StoreError> {
        Ok(sqlx::query_as::<_, WebhookRow>(
            "SELECT id, url, event, body, attempts FROM webhook_outbox \
             WHERE delivered_at IS NULL AND dropped IS NULL AND next_attempt_at <= $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the next waiting delivery comes due (Unix ms), if any waits.
    pub async fn next_webhook_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MIN(next_attempt_at) FROM webhook_outbox \
             WHERE delivered_at IS NULL AND dropped IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Claims a due delivery until `until`, so no other sender (another instance) makes it
    /// meanwhile; false when someone else claimed or finished it first.
    pub async fn claim_webhook(&self, id: i64, now: i64, until: i64) -> Result<bool, StoreError> {
        let done = self
            .write_one(
                "UPDATE webhook_outbox SET next_attempt_at = $1 WHERE id = $2 \
             AND delivered_at IS NULL AND dropped IS NULL AND next_attempt_at <= $3",
                args![until, id, now],
            )
            .await?;
        Ok(done == 1)
    }

    /// Records that the receiver took a delivery (answered 2xx).
    pub async fn webhook_delivered(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE webhook_outbox SET delivered_at = $1, attempts = attempts + 1 WHERE id = $2",
            args![now, id],
        )
        .await?;
        Ok(())
    }

    /// Records a failed try; the delivery is tried again at `retry_at`.
    pub async fn webhook_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: i64,
    ) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $1, \
             next_attempt_at = $2 WHERE id = $3",
            args![error, retry_at, id],
        )
        .await?;
        Ok(())
    }

    /// Gives a delivery up, saying why (`tried`: this was a failed try, counted).
    pub async fn webhook_dropped(
        &self,
        id: i64,
        reason: &str,
        tried: bool,
    ) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE webhook_outbox SET dropped = $1, attempts = attempts + $2 WHERE id = $3",
            args![reason, i64::from(tried), id],
        )
        .await?;
        Ok(())
    }
}

/// Embeds: threads created by an embed, and the public counts host pages show.
impl Store {
    /// Creates a thread for an embed and records the page it was made for, in one
    /// transaction; false when a thread with that key already exists.
    pub async fn create_embed_thread(
        &self,
        key: &str,
        title: &str,
        url: &str,
        origin: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        // Through the writer on SQLite: no wait in SQLite's busy handler beside posts.
        let mut tx = self.begin().await?;
        let inserted = tx
            .exec(
                "INSERT INTO threads (key, kind, title, comments_enabled, published_at, \
                 created_at, updated_at) VALUES ($1, 'page', $2, 1, $3, $3, $3) \
                 ON CONFLICT (key) DO NOTHING",
                args![key, title, now],
            )
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        tx.exec(
            "INSERT INTO embed_threads (thread_id, url, origin, created_at) \
             SELECT id, $2, $3, $4 FROM threads WHERE key = $1",
            args![key, url, origin, now],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Published comments of the threads with these keys that have any, in one query.
    pub async fn published_counts(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        // One bind parameter per key ($1 .. $n): the SQL text holds only placeholders, every
        // value is bound, and the same statement runs on SQLite and PostgreSQL.
        let placeholders: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT t.key, COUNT(c.id) FROM threads t \
             JOIN comments c ON c.thread_id = t.id AND c.status = 'published' \
             WHERE t.key IN ({}) GROUP BY t.key",
            placeholders.join(", ")
        );
        let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
        for k in keys {
            q = q.bind(k);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }
}

/// A mail in the outbox, as the sender reads it.
#[derive(Clone, Debug, FromRow)]
pub struct MailRow {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
    /// The one-click unsubscribe address (RFC 8058) to put in the mail's headers.
    pub list_unsubscribe: Option<String>,
}

/// Where a reply notification goes: the replied-to comment's author, when they asked, have
/// confirmed their address and have not unsubscribed (from everything or from the thread).
#[derive(Clone, Debug, FromRow)]
pub struct ReplyTarget {
    pub email: String,
    pub author_name: String,
}

impl Tx {
    /// Queues a mail in this transaction: it is sent only if the change that caused it
    /// commits, and is not lost if sending fails or the server stops.
    pub async fn queue_mail(
        &mut self,
        recipient: &str,
        subject: &str,
        body: &str,
        list_unsubscribe: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO mail_outbox (recipient, subject, body, list_unsubscribe, created_at, \
             next_attempt_at) VALUES ($1, $2, $3, $4, $5, $5)",
            args![recipient, subject, body, list_unsubscribe, now],
        )
        .await?;
        Ok(())
    }

    /// Marks comment `id` as wanting its replies mailed to its author.
    pub async fn want_reply_mail(&mut self, id: i64) -> Result<(), StoreError> {
        self.exec(
            "UPDATE comments SET notify_replies = 1 WHERE id = $1",
            args![id],
        )
        .await?;
        Ok(())
    }

    /// Records that `email` (lower case) asks for reply mail. Returns true when it must be
    /// asked to confirm: a new address, or one that had unsubscribed from everything.
    pub async fn ask_for_reply_mail(&mut self, email: &str, now: i64) -> Result<bool, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> = self
            .fetch_optional(
                "SELECT confirmed_at, unsubscribed_at FROM subscribers WHERE email = $1",
                args![email],
            )
            .await?;
        match row {
            None => {
                self.exec(
                    "INSERT INTO subscribers (email, created_at) VALUES ($1, $2)",
                    args![email, now],
                )
                .await?;
                Ok(true)
            }
            Some((_, Some(_))) => {
                self.exec(
                    "UPDATE subscribers SET confirmed_at = NULL, unsubscribed_at = NULL \
                     WHERE email = $1",
                    args![email],
                )
                .await?;
                Ok(true)
            }
            // Confirmed already, or a confirmation is on its way: nothing more is sent.
            Some((_, None)) => Ok(false),
        }
    }

    /// Who is to be told of a published reply to comment `parent_id`, if anyone.
    pub async fn reply_target(
        &mut self,
        parent_id: i64,
    ) -> Result<Option<ReplyTarget>, StoreError> {
        self.fetch_optional(
            "SELECT c.author_email AS email, c.author_name FROM comments c \
             JOIN subscribers s ON s.email = LOWER(c.author_email) \
             WHERE c.id = $1 AND c.notify_replies = 1 AND c.status = 'published' \
               AND s.confirmed_at IS NOT NULL AND s.unsubscribed_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM thread_unsubscribes u \
                               WHERE u.email = s.email AND u.thread_id = c.thread_id)",
            args![parent_id],
        )
        .await
    }
}

impl Store {
    /// Mail due now, oldest first: neither sent nor given up, and not waiting for a retry or
    /// claimed by a sender.
    pub async fn due_mail(&self, now: i64, limit: i64) -> Result<Vec<MailRow>, StoreError> {
        Ok(sqlx::query_as::<_, MailRow>(
            "SELECT id, recipient, subject, body, attempts, list_unsubscribe FROM mail_outbox \
             WHERE sent_at IS NULL AND dropped IS NULL AND next_attempt_at <= $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims a due mail until `until`, so no other sender (another instance) takes it
    /// meanwhile; false when someone else claimed or finished it first.
    pub async fn claim_mail(&self, id: i64, now: i64, until: i64) -> Result<bool, StoreError> {
        let done = self
            .write_one(
                "UPDATE mail_outbox SET next_attempt_at = $1 \
             WHERE id = $2 AND sent_at IS NULL AND dropped IS NULL AND next_attempt_at <= $3",
                args![until, id, now],
            )
            .await?;
        Ok(done == 1)
    }

    /// Records that a mail was handed to the mail server.
    pub async fn mail_sent(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE mail_outbox SET sent_at = $1, attempts = attempts + 1 WHERE id = $2",
            args![now, id],
        )
        .await?;
        Ok(())
    }

    /// Records a failed try; the mail is tried again at `retry_at`.
    pub async fn mail_failed(&self, id: i64, error: &str, retry_at: i64) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $1, \
             next_attempt_at = $2 WHERE id = $3",
            args![error, retry_at, id],
        )
        .await?;
        Ok(())
    }

    /// Gives a mail up, saying why.
    pub async fn mail_dropped(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE mail_outbox SET dropped = $1 WHERE id = $2",
            args![reason, id],
        )
        .await?;
        Ok(())
    }

    /// Mails sent since `since` (Unix ms), to `recipient` or to anyone.
    pub async fn mail_sent_since(
        &self,
        recipient: Option<&str>,
        since: i64,
    ) -> Result<i64, StoreError> {
        let q = match recipient {
            Some(r) => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND sent_at >= $2",
            )
            .bind(r),
            None => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NOT NULL AND sent_at >= $1",
            ),
        };
        Ok(q.bind(since).fetch_one(&self.pool).await?)
    }
}

impl Store {
    /// Confirms `email`'s reply mail (the link in its confirmation mail was used); false
    /// when the address never asked.
    pub async fn confirm_subscriber(&self, email: &str, now: i64) -> Result<bool, StoreError> {
        let done = self
            .write_one(
                "UPDATE subscribers SET confirmed_at = COALESCE(confirmed_at, $1) \
             WHERE email = $2 AND unsubscribed_at IS NULL",
                args![now, email],
            )
            .await?;
        Ok(done == 1)
    }

    /// Stops all reply mail to `email`.
    pub async fn unsubscribe_all(&self, email: &str, now: i64) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE subscribers SET unsubscribed_at = COALESCE(unsubscribed_at, $1) \
             WHERE email = $2",
            args![now, email],
        )
        .await?;
        Ok(())
    }

    /// Stops reply mail to `email` about thread `thread_id`.
    pub async fn unsubscribe_thread(
        &self,
        email: &str,
        thread_id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write_one(
            "INSERT INTO thread_unsubscribes (email, thread_id, at) VALUES ($1, $2, $3) \
             ON CONFLICT (email, thread_id) DO NOTHING",
            args![email, thread_id, now],
        )
        .await?;
        Ok(())
    }
}

impl Store {
    /// Sets (or, with `None`, removes) a user's address; false when there is no such user.
    pub async fn set_user_email(
        &self,
        name: &str,
        email: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = self
            .write_one(
                "UPDATE users SET email = $1 WHERE username = $2",
                args![email, name],
            )
            .await?;
        Ok(done == 1)
    }
}

impl Tx {
    /// Staff accounts with an address: (user id, name, email).
    pub async fn staff_addresses(&mut self) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.fetch_all(
            "SELECT id, username, email FROM users \
             WHERE is_staff <> 0 AND email IS NOT NULL AND email <> '' ORDER BY id",
            &[],
        )
        .await
    }
}

/// Several instances on one PostgreSQL (`engine::cluster`): announcements that reach every
/// instance on commit, and the locks that make one instance at a time do something. All of
/// it is PostgreSQL only: on SQLite there is one process and these do nothing.
impl Tx {
    /// Queues `NOTIFY channel, payload`: PostgreSQL delivers it to every listening instance
    /// when this transaction commits, and never if it rolls back. Nothing on SQLite.
    pub async fn notify(&mut self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if !matches!(self.tx, TxConn::Pool(_)) {
            return Ok(());
        }
        // Sent with the last statement before COMMIT (`Tx::finish`), one round trip fewer.
        self.notices.push((channel.to_owned(), payload.to_owned()));
        Ok(())
    }

    /// Waits for the transaction-scoped advisory lock `key` (released at commit or rollback),
    /// so that instances take turns. Nothing on SQLite, whose writers are serialised anyway.
    pub async fn advisory_lock(&mut self, key: i64) -> Result<(), StoreError> {
        if !matches!(self.tx, TxConn::Pool(_)) {
            return Ok(());
        }
        self.exec("SELECT pg_advisory_xact_lock($1)", args![key])
            .await?;
        Ok(())
    }
}

impl Store {
    /// `NOTIFY channel, payload` outside any transaction (PostgreSQL; nothing on SQLite).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every room's newest event id: where an instance's listener starts, and what it
    /// compares with after a lost connection.
    pub async fn event_room_heads(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as::<_, (String, i64)>("SELECT room, last_id FROM event_rooms")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The newest stored spam model's (id, updated_at): changes whenever an instance
    /// retrains or learns.
    pub async fn spam_model_version(&self) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as::<_, (i64, i64)>(
            "SELECT id, updated_at FROM spam_models ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Counts one attempt of `client` against the limit `scope`, shared by every instance
    /// (PostgreSQL only): GCRA, as the in-memory limiters count, with one row per limit and
    /// client holding its theoretical arrival time. An attempt is allowed when, counting it,
    /// the client is at most `window` ms ahead of `now` at one attempt per `interval` ms (a
    /// burst of `window / interval`). `None` when allowed, else the seconds to wait.
    pub async fn count_attempt(
        &self,
        scope: &str,
        client: &str,
        now: i64,
        interval: i64,
        window: i64,
    ) -> Result<Option<u64>, StoreError> {
        let allowed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO rate_limits (scope, client, tat) VALUES ($1, $2, $3 + $4) \
             ON CONFLICT (scope, client) DO UPDATE SET tat = GREATEST(rate_limits.tat, $3) + $4 \
             WHERE GREATEST(rate_limits.tat, $3) + $4 - $3 <= $5 RETURNING tat",
        )
        .bind(scope)
        .bind(client)
        .bind(now)
        .bind(interval)
        .bind(window)
        .fetch_optional(&self.pool)
        .await?;
        if allowed.is_some() {
            return Ok(None);
        }
        let tat: i64 =
            sqlx::query_scalar("SELECT tat FROM rate_limits WHERE scope = $1 AND client = $2")
                .bind(scope)
                .bind(client)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(now);
        // The next attempt fits once tat + interval - window has passed.
        let wait_ms = (tat + interval - window - now).max(1);
        Ok(Some((wait_ms as u64).div_ceil(1000)))
    }

    /// Forgets rate-limit rows whose time has passed (they limit nothing any more).
    pub async fn purge_rate_limits(&self, now: i64) -> Result<u64, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(0);
        }
        Ok(sqlx::query("DELETE FROM rate_limits WHERE tat < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The database URL this store was opened with (for connections of its own, outside
    /// the pool: the listener, job locks).
    pub fn url(&self) -> String {
        self.pool.connect_options().database_url.to_string()
    }
}
