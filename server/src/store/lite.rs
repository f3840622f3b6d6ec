//! One transaction's statements, run either through sqlx (PostgreSQL) or in-thread on
//! SQLite's write connection (rusqlite), from the same SQL text and the same values.
//!
//! Why two drivers: sqlx runs each SQLite statement on a worker thread of its own, so every
//! statement is two thread wake-ups. SQLite's single writer runs every post's statements one
//! after another, so those wake-ups were its serial path: measured with `perf` at 16
//! concurrent posters, the writer's sqlx thread spent most of its time switching context
//! and the cores were a third idle, while the SQL itself was a few percent. Run in the
//! calling thread, a statement costs only its own work. PostgreSQL's statements are network
//! round trips anyway and stay on sqlx; reads stay on sqlx's pool for both.
//!
//! The SQL uses sqlx's `$N` placeholders, which SQLite also accepts (as parameters named
//! `$1`, `$2`, ...), so each statement is written once for both.

use super::{CommentRow, ReplyTarget, StoreError, ThreadRow};
use rusqlite::types::FromSql;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{Any, FromRow};

/// One value bound to a `$N` placeholder (the N-th of a statement's values).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Real(f64),
    Text(Option<&'a str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Real(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

/// The values of one statement, in placeholder order: `args![a, b]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::lite::Arg::from($v)),*]
    };
}
pub(crate) use args;

/// Binds `args`, in order, to a sqlx query (`Query` or `QueryAs`, which share no trait).
macro_rules! bind_each {
    ($q:ident, $args:ident) => {{
        let mut q = $q;
        for a in $args {
            q = match *a {
                Arg::Int(v) => q.bind(v),
                Arg::Real(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            };
        }
        q
    }};
}

/// Binds `args` to a sqlx query.
pub(super) fn bind<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    args: &[Arg<'q>],
) -> Query<'q, Any, AnyArguments<'q>> {
    bind_each!(q, args)
}

/// Binds `args` to a sqlx query that maps its rows to `T`.
pub(super) fn bind_as<'q, T>(
    q: QueryAs<'q, Any, T, AnyArguments<'q>>,
    args: &[Arg<'q>],
) -> QueryAs<'q, Any, T, AnyArguments<'q>> {
    bind_each!(q, args)
}

/// A row type both drivers can read: sqlx's `FromRow`, and [`LiteRow`] for rusqlite.
pub(crate) trait Row: for<'r> FromRow<'r, AnyRow> + LiteRow + Send + Unpin {}
impl<T: for<'r> FromRow<'r, AnyRow> + LiteRow + Send + Unpin> Row for T {}

/// Reads a row of a rusqlite statement, by column name as sqlx's `FromRow` does.
pub(crate) trait LiteRow: Sized {
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

impl<A: FromSql> LiteRow for (A,) {
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?,))
    }
}

impl<A: FromSql, B: FromSql> LiteRow for (A, B) {
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?))
    }
}

impl<A: FromSql, B: FromSql, C: FromSql> LiteRow for (A, B, C) {
    fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    }
}

impl LiteRow for CommentRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(CommentRow {
            id: r.get("id")?,
            thread_id: r.get("thread_id")?,
            parent_id: r.get("parent_id")?,
            depth: r.get("depth")?,
            path: r.get("path")?,
            author_name: r.get("author_name")?,
            author_email: r.get("author_email")?,
            author_url: r.get("author_url")?,
            title: r.get("title")?,
            body_source: r.get("body_source")?,
            body_html: r.get("body_html")?,
            status: r.get("status")?,
            moderator: r.get("moderator")?,
            reason: r.get("reason")?,
            score: r.get("score")?,
            ip: r.get("ip")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }
}

impl LiteRow for ThreadRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(ThreadRow {
            id: r.get("id")?,
            key: r.get("key")?,
            kind: r.get("kind")?,
            title: r.get("title")?,
            comments_enabled: r.get("comments_enabled")?,
            published_at: r.get("published_at")?,
        })
    }
}

impl LiteRow for ReplyTarget {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(ReplyTarget {
            email: r.get("email")?,
            author_name: r.get("author_name")?,
        })
    }
}

/// The placeholder names SQLite gives `$1` .. `$24` (no statement of a transaction has
/// more values).
const NAMES: [&str; 24] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
    "$16", "$17", "$18", "$19", "$20", "$21", "$22", "$23", "$24",
];

/// Prepares `sql` (from the connection's statement cache) and binds `args` by name: SQLite
/// numbers named parameters in order of first appearance, which need not be `$N`'s N.
fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql)?;
    if args.len() > NAMES.len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            args.len(),
            NAMES.len(),
        ));
    }
    for (name, a) in NAMES.iter().zip(args) {
        let Some(i) = stmt.parameter_index(name)? else {
            continue;
        };
        match *a {
            Arg::Int(v) => stmt.raw_bind_parameter(i, v)?,
            Arg::Real(v) => stmt.raw_bind_parameter(i, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(i, v)?,
        }
    }
    Ok(stmt)
}

/// Runs a statement; the number of rows it changed.
pub(super) fn exec(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<u64, StoreError> {
    Ok(prepare(conn, sql, args)?.raw_execute()? as u64)
}

/// Every row of a query (or of a statement's RETURNING).
pub(super) fn fetch_all<T: LiteRow>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Vec<T>, StoreError> {
    let mut stmt = prepare(conn, sql, args)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(T::from_lite(row)?);
    }
    Ok(out)
}

/// The first row, if any. The statement still runs to its end, so that a write with
/// RETURNING has done all of its work.
pub(super) fn fetch_optional<T: LiteRow>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Option<T>, StoreError> {
    Ok(fetch_all(conn, sql, args)?.into_iter().next())
}

/// How long a connection waits for a lock another one holds before it gives up (busy).
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens SQLite's write connection, set as the pool's connections are (WAL, FULL, foreign
/// keys), with room in its statement cache for every statement a transaction runs. No busy
/// timeout: the writer's BEGIN tries first and waits only when it must (`writer::begin`),
/// and within its transaction nothing else can hold the lock.
///
/// `temp_store = MEMORY` keeps the undo pages of each request's savepoint (the sub-journal)
/// in memory. By default SQLite spilled them to a temporary file past 64 KiB, which a post
/// outgrew: a profile at 16 posters had a fifth of the server's CPU in `pwrite`, and more in
/// creating and deleting that file, once per batch.
///
/// With a WAL (any database in a file), the writer's COMMIT does not fsync
/// (`synchronous = NORMAL`): the writer's syncer does, before anyone is answered, once the
/// lock is free for the next batch (`store/writer.rs`). Returns the WAL's path then.
pub(super) fn open_writer(
    path: &std::path::Path,
) -> Result<(rusqlite::Connection, Option<std::path::PathBuf>), StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    let wal = mode.eq_ignore_ascii_case("wal").then(|| {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::path::PathBuf::from(wal)
    });
    let synchronous = if wal.is_some() { "NORMAL" } else { "FULL" };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY;"
    ))?;
    conn.busy_timeout(std::time::Duration::ZERO)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok((conn, wal))
}

/// True when SQLite refused a write for a unique (or primary) key.
pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error(),
        Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// True when SQLite said "not now": still locked after the busy timeout, or the file is
/// away (see `error.rs`).
pub(crate) fn is_unavailable(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code().is_some_and(|c| {
        matches!(
            c,
            rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::SystemIoFailure
        )
    })
}

/// Connections for SQLite point reads run in the calling thread: the lookups a post or a
/// cached page makes on every request (a thread by key, a spent nonce, a parent comment, a
/// thread's version). Each is a few microseconds of SQLite work; through sqlx's pool it was
/// also a pool checkout and two thread wake-ups. WAL readers never wait for the writer.
///
/// A connection is taken for one lookup and put back; there are never more than the threads
/// that look up at once (the runtime's), so the spares are few.
#[derive(Debug)]
pub(super) struct Readers {
    path: std::path::PathBuf,
    spare: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

/// More spares than this are closed (only after a burst on many blocking threads).
const MAX_SPARE_READERS: usize = 16;

impl Readers {
    pub(super) fn new(path: &std::path::Path) -> Readers {
        Readers {
            path: path.to_owned(),
            spare: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a spare connection (opened when none is spare).
    pub(super) fn with<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let spare = self.lock().pop();
        let conn = match spare {
            Some(c) => c,
            None => {
                let c = rusqlite::Connection::open(&self.path)?;
                // Reads only; a write here would bypass the writer.
                c.execute_batch("PRAGMA query_only = ON;")?;
                c.busy_timeout(BUSY_TIMEOUT)?;
                c.set_prepared_statement_cache_capacity(32);
                c
            }
        };
        let out = read(&conn);
        let mut spare = self.lock();
        if spare.len() < MAX_SPARE_READERS {
            spare.push(conn);
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<rusqlite::Connection>> {
        // A panic while holding the lock leaves the list itself intact.
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
