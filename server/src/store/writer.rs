//! SQLite's one writer, with group commit.
//!
//! SQLite allows one writing transaction at a time, and with `synchronous = FULL` each
//! COMMIT is an fsync: on this machine's disk about 2,000 a second, the ceiling of any
//! design that commits each comment on its own. Before this module, concurrent posters each
//! opened their own transaction and waited for the lock in SQLite's busy handler (sleep and
//! retry), so the tail latency under a burst was measured in seconds.
//!
//! Here one task owns the write connection. A request asks it for a turn ([`Writer::turn`])
//! and gets the connection inside a SAVEPOINT of the batch's transaction (the first of a
//! batch needs none, see `one_turn`), runs its statements as before (the use cases do not
//! change), and hands the connection back with [`Turn::commit`], then waits. The writer then gives
//! the connection to the next request already waiting, and when none is waiting (or the
//! batch is full) COMMITs once and answers every request of the batch with the outcome. A
//! request that fails (or is dropped, e.g. its client hung up) hands the connection back
//! unfinished and the writer rolls back to its savepoint: only that request's statements
//! are undone, the rest of the batch commits. Nobody is answered before the COMMIT returns,
//! so nothing is acknowledged (or published) before it is durable.
//!
//! Requests queue in a channel instead of sleeping in the busy handler; readers use the
//! pool's other connections and never wait for the writer (WAL).
//!
//! The connection is rusqlite's, not sqlx's (see `store/lite.rs`): a request's statements,
//! and the savepoints around them, run in the thread that holds the turn, so the batch's
//! serial path has no thread hop per statement. Only BEGIN and COMMIT, which may wait (for
//! the lock, or for the fsync), run on tokio's blocking threads, once per batch.

use super::StoreError;
use rusqlite::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// At most this many requests commit together: a bound on how long the first of a batch
/// waits for the others (each runs for well under a millisecond).
const MAX_BATCH: usize = 256;

/// What a request's [`Turn::commit`] learns: `Ok` once the batch is durable.
type Outcome = Result<(), Arc<rusqlite::Error>>;

/// The connection, on its way back to the writer.
struct Returned {
    conn: Connection,
    /// `Some` when the request's statements are to be kept (and it waits for the batch's
    /// COMMIT); `None` when they are to be rolled back.
    keep: Option<oneshot::Sender<Outcome>>,
}

/// The handle requests queue on. Cheap to clone; the writer task ends when the last clone
/// is dropped (and closes its connection).
#[derive(Clone, Debug)]
pub(super) struct Writer {
    queue: mpsc::UnboundedSender<oneshot::Sender<Turn>>,
    counts: Arc<Counts>,
}

/// How many batches were committed and how many requests' statements they kept.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) commits: AtomicU64,
    pub(super) kept: AtomicU64,
}

/// One request's turn with the write connection, in the open batch.
pub(super) struct Turn {
    conn: Option<Connection>,
    back: Option<oneshot::Sender<Returned>>,
}

impl Writer {
    /// Starts the writer task on `conn`, a connection of its own (not the pool's).
    pub(super) fn start(conn: Connection) -> Writer {
        let (queue, waiting) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(conn, waiting, counts.clone()));
        Writer { queue, counts }
    }

    /// (batches committed, requests kept) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.counts.commits.load(Ordering::Relaxed),
            self.counts.kept.load(Ordering::Relaxed),
        )
    }

    /// Waits for this request's turn with the write connection.
    pub(super) async fn turn(&self) -> Result<Turn, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).map_err(|_| sqlx::Error::PoolClosed)?;
        Ok(rx.await.map_err(|_| sqlx::Error::PoolClosed)?)
    }
}

impl Turn {
    /// The write connection, for this request's statements.
    pub(super) fn conn(&mut self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a turn holds the connection until it ends")
    }

    /// Keeps this request's statements and waits until the batch they joined is committed.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        let (done, outcome) = oneshot::channel();
        self.give_back(Some(done));
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(shared_error(&e)),
            // The writer is gone (the store was closed): nothing is known to be durable.
            Err(_) => Err(sqlx::Error::PoolClosed.into()),
        }
    }

    fn give_back(&mut self, keep: Option<oneshot::Sender<Outcome>>) {
        if let (Some(conn), Some(back)) = (self.conn.take(), self.back.take()) {
            // The writer waits for exactly this message; it is only gone if the runtime is.
            let _ = back.send(Returned { conn, keep });
        }
    }
}

impl Drop for Turn {
    /// A turn that ends without [`Turn::commit`] (an error, or the request was dropped)
    /// has its statements rolled back by the writer.
    fn drop(&mut self) {
        self.give_back(None);
    }
}

/// The error is shared by every request of a failed batch; each gets its own copy of what
/// matters for the caller's error mapping (SQLite's code: busy means "try again").
fn shared_error(e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error() {
        Some(f) => StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            *f,
            Some(format!("the batch's commit failed: {e}")),
        )),
        None => StoreError::Sqlx(sqlx::Error::Protocol(format!(
            "the batch's commit failed: {e}"
        ))),
    }
}

/// Runs `sql`, which may block (an fsync, or waiting for the lock), without stalling the
/// runtime, and gives the connection back with the outcome; `None` if the runtime is
/// shutting down.
///
/// On a multi-threaded runtime (`moderato serve`) it runs right here: `block_in_place`
/// hands this worker's other tasks to another thread meanwhile. Measured at 16 posters, a
/// hop to a blocking thread instead cost more than the fsync: its answer wakes the writer
/// through the runtime's global queue, which busy workers look at only now and then.
async fn blocking(
    conn: Connection,
    sql: &'static str,
) -> Option<(Connection, rusqlite::Result<()>)> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        let r = tokio::task::block_in_place(|| conn.execute_batch(sql));
        return Some((conn, r));
    }
    tokio::task::spawn_blocking(move || {
        let r = conn.execute_batch(sql);
        (conn, r)
    })
    .await
    .ok()
}

/// BEGIN IMMEDIATE, which waits only while a connection outside the writer (the pool's
/// occasional writes: sessions, outbox claims) holds the lock: tried at once, and only when
/// SQLite says busy, tried again with the busy timeout on a blocking thread.
async fn begin(conn: Connection) -> Option<(Connection, rusqlite::Result<()>)> {
    match conn.execute_batch("BEGIN IMMEDIATE") {
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            if let Err(e) = conn.busy_timeout(super::lite::BUSY_TIMEOUT) {
                return Some((conn, Err(e)));
            }
            let (conn, began) = blocking(conn, "BEGIN IMMEDIATE").await?;
            let reset = conn.busy_timeout(std::time::Duration::ZERO);
            Some((conn, began.and(reset)))
        }
        other => Some((conn, other)),
    }
}

async fn run(
    mut conn: Connection,
    mut waiting: mpsc::UnboundedReceiver<oneshot::Sender<Turn>>,
    counts: Arc<Counts>,
) {
    while let Some(first) = waiting.recv().await {
        // IMMEDIATE takes the write lock now, so no statement of the batch can fail later
        // for want of it (a deferred transaction's upgrade from read to write can).
        let Some((back, began)) = begin(conn).await else {
            return;
        };
        conn = back;
        if let Err(e) = began {
            tracing::error!("write batch could not begin: {e}");
            // The request learns of it when its turn is dropped unanswered.
            drop(first);
            continue;
        }
        let mut batch: Vec<oneshot::Sender<Outcome>> = Vec::new();
        let mut next = Some(first);
        let mut open = true;
        while let Some(request) = next.take() {
            conn = match one_turn(conn, request, batch.is_empty()).await {
                Ok((conn, keep, still_open)) => {
                    batch.extend(keep);
                    open = still_open;
                    conn
                }
                Err(lost) => {
                    // The connection did not come back (only if the runtime is shutting
                    // down); nobody of this batch can be answered with success.
                    tracing::error!("write connection lost mid-batch: {lost}");
                    return;
                }
            };
            if open && batch.len() < MAX_BATCH {
                next = waiting.try_recv().ok();
            }
        }
        if !open {
            // Only after a lone failing request whose retry of BEGIN failed: nothing to
            // commit, nobody to answer; the next request begins anew.
            continue;
        }
        let Some((back, committed)) = blocking(conn, "COMMIT").await else {
            tracing::error!("write connection lost at commit");
            return;
        };
        conn = back;
        let outcome = committed.map_err(Arc::new);
        if outcome.is_err() {
            // Leave no transaction open for the next batch.
            let _ = conn.execute_batch("ROLLBACK");
        } else {
            counts.commits.fetch_add(1, Ordering::Relaxed);
            counts.kept.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        for done in batch {
            let _ = done.send(outcome.clone());
        }
    }
}

/// Gives the connection to one request and takes it back.
///
/// The first request of a batch runs straight in the transaction: if it fails, the whole
/// (so far empty) transaction is rolled back and begun again. Every later one runs inside a
/// savepoint, rolled back if it fails. A kept savepoint is not released: COMMIT ends them
/// all, and `ROLLBACK TO` names the newest one of that name, which is the current request's.
/// The first request of a quiet moment (a lone poster) so pays for no savepoint at all.
///
/// Returns the connection, the request's answer channel when its statements are kept, and
/// whether the transaction is still open.
async fn one_turn(
    conn: Connection,
    request: oneshot::Sender<Turn>,
    first: bool,
) -> Result<(Connection, Option<oneshot::Sender<Outcome>>, bool), &'static str> {
    if !first && let Err(e) = conn.execute_batch("SAVEPOINT request") {
        tracing::error!("write savepoint failed: {e}");
        return Ok((conn, None, true));
    }
    let (back, returned) = oneshot::channel();
    let turn = Turn {
        conn: Some(conn),
        back: Some(back),
    };
    // A request that stopped waiting gets its turn dropped right here: the connection
    // comes straight back through `Drop`.
    let _ = request.send(turn);
    let Returned { conn, keep } = returned.await.map_err(|_| "turn never returned")?;
    if keep.is_some() {
        return Ok((conn, keep, true));
    }
    if !first {
        if let Err(e) = conn.execute_batch("ROLLBACK TO request") {
            // The transaction may be gone with it (SQLite rolls back everything on some
            // errors): the COMMIT then fails and the whole batch hears of it.
            tracing::error!("write savepoint could not be rolled back: {e}");
        }
        return Ok((conn, None, true));
    }
    // Nothing else is in the transaction yet: start it afresh (ROLLBACK fails harmlessly
    // when SQLite has already rolled back).
    let _ = conn.execute_batch("ROLLBACK");
    let (conn, began) = begin(conn).await.ok_or("runtime shutting down")?;
    match began {
        Ok(()) => Ok((conn, None, true)),
        Err(e) => {
            tracing::error!("write batch could not begin again: {e}");
            Ok((conn, None, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use std::sync::Arc;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = Store::open(&url).await.unwrap();
        (dir, store)
    }

    async fn nonces(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT nonce FROM form_nonces ORDER BY nonce")
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    /// Many concurrent writers: every acknowledged write is there, in fewer commits than
    /// writes (the point of the writer), and a failing request in a batch loses only its
    /// own statements.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_a_failure_stays_its_own() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                tx.spend_nonce(&format!("n{i:03}"), 1).await.unwrap();
                if i % 10 == 7 {
                    // Spent twice in one request: a unique violation, and the request ends
                    // without committing (as a use case's `?` would).
                    let again = tx.spend_nonce(&format!("n{i:03}"), 1).await;
                    assert!(again.unwrap_err().is_unique_violation());
                    return false;
                }
                tx.commit().await.unwrap();
                true
            }));
        }
        let mut kept = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if t.await.unwrap() {
                kept.push(format!("n{i:03}"));
            }
        }
        assert_eq!(
            nonces(&store).await,
            kept,
            "exactly the committed requests are stored"
        );
        let (commits, requests) = store.write_counts().unwrap();
        assert_eq!(requests, 180);
        assert!(
            commits < requests,
            "{requests} writes took {commits} commits: no group commit happened"
        );
    }

    /// A request dropped mid-turn (its client hung up) gives the connection back; its
    /// statements are rolled back and the writer goes on serving others.
    #[tokio::test]
    async fn a_dropped_turn_is_rolled_back_and_the_writer_goes_on() {
        let (_dir, store) = store().await;
        let mut tx = store.begin().await.unwrap();
        tx.spend_nonce("dropped", 1).await.unwrap();
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        tx.spend_nonce("kept", 1).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(nonces(&store).await, vec!["kept".to_owned()]);
    }

    /// The first requests of a batch (no savepoint) fail, while later ones wait: those
    /// are still served in a fresh transaction, and only their statements are stored.
    #[tokio::test]
    async fn failing_first_requests_leave_the_batch_to_the_next() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let mut first = store.begin().await.unwrap();
        first.spend_nonce("first", 1).await.unwrap();
        let spawn = |name: &'static str, keep: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                tx.spend_nonce(name, 1).await.unwrap();
                if keep {
                    tx.commit().await.unwrap();
                }
            })
        };
        let failing = spawn("second", false);
        let kept = spawn("third", true);
        // Both are queued behind the open turn before it ends.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(first);
        failing.await.unwrap();
        kept.await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.spend_nonce("fourth", 1).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            nonces(&store).await,
            vec!["fourth".to_owned(), "third".to_owned()]
        );
    }

    /// Readers are not blocked by an open batch (WAL): a read on the pool answers while a
    /// request holds the writer's turn, and sees only committed rows.
    #[tokio::test]
    async fn readers_do_not_wait_for_the_writer() {
        let (_dir, store) = store().await;
        let mut tx = store.begin().await.unwrap();
        tx.spend_nonce("pending", 1).await.unwrap();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(1), nonces(&store))
            .await
            .expect("a read while a write turn is open answers at once");
        assert!(seen.is_empty());
        tx.commit().await.unwrap();
        assert_eq!(nonces(&store).await, vec!["pending".to_owned()]);
    }
}
