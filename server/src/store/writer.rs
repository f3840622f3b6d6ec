//! SQLite's one writer, with group commit.
//!
//! SQLite allows one writing transaction at a time, and with `synchronous = FULL` each
//! COMMIT is an fsync: on this machine's disk a few thousand a second, the ceiling of any
//! design that commits each comment on its own. Before this module, concurrent posters each
//! opened their own transaction and waited for the lock in SQLite's busy handler (sleep and
//! retry), so the tail latency under a burst was measured in seconds.
//!
//! Here one connection does every write, behind an async lock that requests queue on in
//! order ([`Writer::turn`]), never in the busy handler. The first request of a batch begins
//! its transaction (BEGIN IMMEDIATE); each later one runs inside a SAVEPOINT of it, released
//! once the request is kept. A request runs its statements as before (the use cases do not
//! change), then [`Turn::commit`] joins it to the batch: when nobody else is waiting for
//! the lock (or the batch is full), that request COMMITs the batch, one fsync, and every
//! request of it is answered with the outcome; otherwise it hands the lock on and waits
//! for the COMMIT of whoever comes last. A request that fails (or is dropped, e.g. its
//! client hung up) rolls back to its savepoint: only its statements are undone, the rest
//! of the batch commits. Nobody is answered before the COMMIT returns, so nothing is
//! acknowledged (or published) before it is durable. Readers use other connections and
//! never wait for the writer (WAL).
//!
//! Why a lock and not a task that owns the connection (the first design): handing the
//! connection to each request and back was two task wake-ups per request on the batch's
//! serial path, and under load each waited behind the runtime's other tasks. Now a request
//! that finds the lock free runs at once, and a contended hand-off is one wake-up.
//!
//! The connection is rusqlite's, not sqlx's (see `store/lite.rs`): statements run in the
//! thread that holds the lock, so there is no thread hop per statement either. A COMMIT
//! and a BEGIN that must wait for another connection's lock run in `block_in_place`, so
//! the runtime's other tasks move on meanwhile.
//!
//! The fsync happens after the lock is released ([`Syncer`]). The write connection runs
//! with `synchronous = NORMAL`: its COMMIT writes the batch's pages to the WAL and makes
//! them visible, without an fsync. The batch's requests are then handed to a thread of
//! its own, which fsyncs the WAL file (one fsync for every batch committed since its last
//! one) and only then answers them. Meanwhile the next batch already runs its statements.
//! Measured at 16 posters before this, a batch held the lock for about 1.1 ms, of which
//! 0.7 ms was its COMMIT, mostly waiting for the disk; nothing else could write meanwhile.
//!
//! What is acknowledged is as durable as with `synchronous = FULL`: nobody is answered
//! before an fsync of the WAL that began after their COMMIT returned. A later batch never
//! becomes durable without an earlier one: the WAL is one file, written in order, and
//! SQLite's recovery keeps a prefix of it. Checkpoints still fsync the WAL before they
//! copy it into the database (that is what NORMAL means in WAL mode). What changes is
//! that for the time of one fsync a committed batch is visible to other connections
//! before it is durable: a power cut in that moment loses it, though a reader may have
//! seen it. Its poster was never answered, and its events were not published (the syncer
//! publishes them after the fsync, see [`Turn::commit`]), and the live replay waits for
//! the next fsync ([`Writer::durable`]), so no live client has it. A killed process loses
//! nothing: the pages are in the operating system's cache. After a failed fsync the writer
//! refuses every write until restart (see [`Broken`]).

use super::StoreError;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

/// At most this many requests commit together: a bound on how long the first of a batch
/// waits for the others (each runs for well under a millisecond).
const MAX_BATCH: usize = 256;

/// What a request's [`Turn::commit`] learns: `Ok` once the batch is durable.
type Outcome = Result<(), Arc<rusqlite::Error>>;

/// What a request has run once its batch is durable, before it is answered (publishing its
/// live events).
pub(crate) type AfterDurable = Box<dyn FnOnce() + Send>;

/// A request of a batch, waiting for its outcome.
struct Kept {
    done: oneshot::Sender<Outcome>,
    after: Option<AfterDurable>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("after", &self.after.is_some())
            .finish()
    }
}

/// The write connection and its open batch, behind the lock.
#[derive(Debug)]
struct Batch {
    /// `None` only while a blocking statement has it on another thread (current-thread
    /// runtimes, i.e. tests).
    conn: Option<Connection>,
    /// A transaction is open.
    open: bool,
    /// The requests whose statements are in the open transaction, waiting for its COMMIT.
    kept: Vec<Kept>,
    /// Where a committed batch's requests wait for the fsync that makes it durable; `None`
    /// when the database has no WAL (in memory), where COMMIT answers them itself.
    syncer: Option<mpsc::Sender<Vec<Kept>>>,
}

#[derive(Debug)]
struct Shared {
    batch: Arc<Mutex<Batch>>,
    /// Requests waiting for the lock: while there are any, a finished request leaves the
    /// COMMIT to them, so that they join its batch.
    waiting: AtomicUsize,
    /// Wakes the committer: a request left the lock with statements kept but uncommitted,
    /// and whoever it counted on to commit may be gone (dropped while waiting).
    nudge: Arc<Notify>,
    counts: Arc<Counts>,
    /// The syncer's queue, for [`Writer::durable`] (the batch has its own handle).
    syncer: Option<mpsc::Sender<Vec<Kept>>>,
    /// Set by the first fsync of the WAL that fails; from then on the writer refuses.
    broken: Broken,
}

/// Why the writer stopped: an fsync of the WAL failed. After that the operating system may
/// have dropped the batch's pages, and SQLite's recovery keeps the WAL only up to the first
/// frame it finds broken, so a later batch that syncs fine could still be lost with it.
/// Nothing is acknowledged after such a failure: every write is refused until the server
/// restarts (as PostgreSQL stops after a failed fsync).
type Broken = Arc<std::sync::OnceLock<String>>;

impl Drop for Shared {
    /// Lets the committer see that the writer is gone.
    fn drop(&mut self) {
        self.nudge.notify_one();
    }
}

/// The handle requests queue on. Cheap to clone; the connection closes with the last clone
/// (and the committer task with it).
#[derive(Clone, Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
}

/// How many batches were committed and how many requests' statements they kept.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) commits: AtomicU64,
    pub(super) kept: AtomicU64,
    /// fsyncs of the WAL by the syncer (one per batch or fewer).
    pub(super) syncs: AtomicU64,
}

/// One request's turn with the write connection, in the open batch.
pub(super) struct Turn {
    batch: Option<OwnedMutexGuard<Batch>>,
    shared: Arc<Shared>,
    /// Runs in a savepoint (false: first of its batch, straight in the transaction).
    savepoint: bool,
}

impl Writer {
    /// Starts the writer on `conn`, a connection of its own (not the pool's), opened by
    /// `lite::open_writer`: with `wal`, the path of the database's WAL file, its COMMITs
    /// do not fsync, and a [`Syncer`] does before anyone is answered.
    pub(super) fn start(conn: Connection, wal: Option<PathBuf>) -> Writer {
        Writer::start_gated(conn, wal, Arc::default())
    }

    /// [`Writer::start`], with the syncer taking `gate` before each fsync (tests hold it
    /// to see that nobody is answered before the fsync).
    fn start_gated(
        conn: Connection,
        wal: Option<PathBuf>,
        gate: Arc<std::sync::Mutex<()>>,
    ) -> Writer {
        let nudge = Arc::new(Notify::new());
        let counts = Arc::new(Counts::default());
        let broken = Broken::default();
        let syncer = wal.map(|path| Syncer::start(path, counts.clone(), broken.clone(), gate));
        let shared = Arc::new(Shared {
            batch: Arc::new(Mutex::new(Batch {
                conn: Some(conn),
                open: false,
                kept: Vec::new(),
                syncer: syncer.clone(),
            })),
            waiting: AtomicUsize::new(0),
            nudge: nudge.clone(),
            counts,
            syncer,
            broken,
        });
        tokio::spawn(committer(Arc::downgrade(&shared), nudge));
        Writer { shared }
    }

    /// (batches committed, requests kept) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.shared.counts.commits.load(Ordering::Relaxed),
            self.shared.counts.kept.load(Ordering::Relaxed),
        )
    }

    /// Returns once everything committed before the call is durable: at once without a
    /// syncer, else after the syncer's next fsync. A reader that hands out what it read as
    /// a promise (the live replay: event ids a client keeps as its cursor) calls this
    /// between reading and answering, so it never promises a batch that a power cut in
    /// the moment of its fsync would take back.
    pub(super) async fn durable(&self) -> Result<(), StoreError> {
        let Some(syncer) = &self.shared.syncer else {
            return Ok(());
        };
        let (done, synced) = oneshot::channel();
        if syncer.send(vec![Kept { done, after: None }]).is_err() {
            return Err(shared_error(&sync_error("the WAL's syncer is gone")));
        }
        outcome_of(synced).await
    }

    /// An fsync of the WAL failed: every write is refused until restart.
    pub(super) fn is_broken(&self) -> bool {
        self.shared.broken.get().is_some()
    }

    /// fsyncs of the WAL so far (for tests).
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.shared.counts.syncs.load(Ordering::SeqCst)
    }

    /// Requests waiting for the lock now (for tests).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Waits for this request's turn with the write connection.
    pub(super) async fn turn(&self) -> Result<Turn, StoreError> {
        if let Some(why) = self.shared.broken.get() {
            return Err(shared_error(&sync_error(why)));
        }
        let mut batch = {
            let mut waiting = Waiting::count(&self.shared);
            let batch = self.shared.batch.clone().lock_owned().await;
            waiting.served = true;
            batch
        };
        forget_lost_transaction(&mut batch);
        let savepoint = batch.open;
        if savepoint {
            control(conn(&batch), "SAVEPOINT request")?;
        } else {
            begin(&mut batch).await?;
            batch.open = true;
        }
        Ok(Turn {
            batch: Some(batch),
            shared: self.shared.clone(),
            savepoint,
        })
    }
}

/// Counts a request among those waiting for the lock, until it has it or gives up.
struct Waiting<'a> {
    shared: &'a Shared,
    served: bool,
}

impl<'a> Waiting<'a> {
    fn count(shared: &'a Shared) -> Self {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting {
            shared,
            served: false,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
        if !self.served {
            // Dropped while waiting: those who left the COMMIT to it must not wait forever.
            self.shared.nudge.notify_one();
        }
    }
}

fn conn(batch: &Batch) -> &Connection {
    batch
        .conn
        .as_ref()
        .expect("the connection is back after each blocking statement")
}

impl Turn {
    /// The write connection, for this request's statements.
    pub(super) fn conn(&mut self) -> &Connection {
        conn(
            self.batch
                .as_ref()
                .expect("a turn holds the lock until it ends"),
        )
    }

    /// Keeps this request's statements and waits until the batch they joined is durable.
    /// `after` runs then, before the request is answered: on the syncer's thread, in the
    /// order the batch's requests had the lock, which is the order of the ids they
    /// drew; and even when the request itself is dropped meanwhile (its client hung up).
    pub(super) async fn commit(mut self, after: Option<AfterDurable>) -> Result<(), StoreError> {
        if self.savepoint {
            // Its statements join the batch's transaction, and SQLite lets go of the pages
            // it kept to undo them: savepoints never nest, so the sub-journal holds one
            // request's pages at most (and stays in memory, see `lite::open_writer`).
            control(self.conn(), "RELEASE request")?;
        }
        let mut batch = self
            .batch
            .take()
            .expect("a turn holds the lock until it ends");
        let (done, outcome) = oneshot::channel();
        batch.kept.push(Kept { done, after });
        if batch.kept.len() >= MAX_BATCH || self.shared.waiting.load(Ordering::SeqCst) == 0 {
            commit_batch(&mut batch, &self.shared.counts).await;
        } else {
            // The next request commits (or the committer, should it be dropped).
            self.shared.nudge.notify_one();
        }
        drop(batch);
        outcome_of(outcome).await
    }
}

/// What a request waiting in a batch (or for the syncer) learns.
async fn outcome_of(outcome: oneshot::Receiver<Outcome>) -> Result<(), StoreError> {
    match outcome.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(shared_error(&e)),
        // The writer is gone (the store was dropped): nothing is known to be durable.
        Err(_) => Err(sqlx::Error::PoolClosed.into()),
    }
}

impl Drop for Turn {
    /// A turn that ends without [`Turn::commit`] (an error, or the request was dropped)
    /// has its statements rolled back.
    fn drop(&mut self) {
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        if self.savepoint {
            if let Err(e) = conn(&batch).execute_batch("ROLLBACK TO request") {
                // The transaction may be gone with it (SQLite rolls back everything on
                // some errors): the COMMIT then fails and the whole batch hears of it.
                tracing::error!("write savepoint could not be rolled back: {e}");
            }
        } else {
            // First of its batch: nothing else is in the transaction (ROLLBACK fails
            // harmlessly when SQLite has already rolled back).
            let _ = conn(&batch).execute_batch("ROLLBACK");
            batch.open = false;
        }
        forget_lost_transaction(&mut batch);
        if !batch.kept.is_empty() {
            self.shared.nudge.notify_one();
        }
    }
}

/// Commits the open batch, once nobody queued is left to join it: woken whenever a request
/// leaves the lock with kept statements uncommitted. Usually the next request has committed
/// them by the time this gets the lock; it matters when that request was dropped instead.
/// Ends when the writer is dropped (which wakes it).
async fn committer(shared: std::sync::Weak<Shared>, nudge: Arc<Notify>) {
    loop {
        nudge.notified().await;
        let Some(s) = shared.upgrade() else { return };
        let mut batch = s.batch.clone().lock_owned().await;
        if !batch.kept.is_empty() && s.waiting.load(Ordering::SeqCst) == 0 {
            commit_batch(&mut batch, &s.counts).await;
        }
    }
}

/// When SQLite has rolled the whole open transaction back by itself (it does on some errors:
/// a full disk, an I/O error), the kept requests' statements are gone: they are answered
/// with an error now, before anything could begin a new transaction in their place (a
/// SAVEPOINT outside a transaction starts one) and commit it as though it were theirs.
fn forget_lost_transaction(batch: &mut Batch) {
    if !batch.open || !conn(batch).is_autocommit() {
        return;
    }
    tracing::error!(
        requests = batch.kept.len(),
        "SQLite rolled back the write batch; its requests are answered with an error"
    );
    let lost = Arc::new(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some("SQLite rolled back the batch's transaction".into()),
    ));
    batch.open = false;
    answer(std::mem::take(&mut batch.kept), &Err(lost));
}

/// COMMITs the open batch; its requests are answered once it is durable (by the syncer,
/// or here when there is none), or at once with the error of a failed COMMIT.
async fn commit_batch(batch: &mut Batch, counts: &Counts) {
    forget_lost_transaction(batch);
    if !batch.open {
        return;
    }
    let outcome = blocking(batch, "COMMIT").await.map_err(Arc::new);
    batch.open = false;
    if outcome.is_err() {
        // Leave no transaction open for the next batch.
        let _ = conn(batch).execute_batch("ROLLBACK");
    } else {
        counts.commits.fetch_add(1, Ordering::Relaxed);
        counts
            .kept
            .fetch_add(batch.kept.len() as u64, Ordering::Relaxed);
        if let Some(syncer) = &batch.syncer {
            let kept = std::mem::take(&mut batch.kept);
            if let Err(mpsc::SendError(kept)) = syncer.send(kept) {
                // The syncer's thread is gone (it never ends while the writer lives, so
                // only a panic there): nothing is known to be durable.
                answer(kept, &Err(Arc::new(sync_error("the WAL's syncer is gone"))));
            }
            return;
        }
    }
    answer(std::mem::take(&mut batch.kept), &outcome);
}

/// Answers a batch's requests in order; when it is durable, each one's `after` runs first.
fn answer(requests: Vec<Kept>, outcome: &Outcome) {
    for Kept { done, after } in requests {
        if let (Ok(()), Some(after)) = (outcome, after)
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(after)).is_err()
        {
            tracing::error!("a request's work after its commit panicked");
        }
        // A request that stopped waiting (its client hung up) has nobody to tell.
        let _ = done.send(outcome.clone());
    }
}

/// An fsync that failed, as SQLite would report it from a COMMIT.
fn sync_error(message: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        Some(message.to_owned()),
    )
}

/// Makes committed batches durable: a thread that fsyncs the WAL file and then answers
/// the requests of every batch committed before that fsync began. While one fsync runs,
/// the batches committed meanwhile queue up, and the next fsync covers them all.
struct Syncer {
    wal: PathBuf,
    /// The WAL file, opened on first use (SQLite creates it). fsync flushes a file's pages
    /// whichever descriptor wrote them.
    file: Option<std::fs::File>,
    counts: Arc<Counts>,
    broken: Broken,
    gate: Arc<std::sync::Mutex<()>>,
}

impl Syncer {
    /// Its thread ends when the writer (the channel's sender) is gone, after answering
    /// everything sent before.
    fn start(
        wal: PathBuf,
        counts: Arc<Counts>,
        broken: Broken,
        gate: Arc<std::sync::Mutex<()>>,
    ) -> mpsc::Sender<Vec<Kept>> {
        let (tx, rx) = mpsc::channel::<Vec<Kept>>();
        let mut syncer = Syncer {
            wal,
            file: None,
            counts,
            broken,
            gate,
        };
        std::thread::Builder::new()
            .name("moderato-wal-sync".into())
            .spawn(move || {
                while let Ok(mut waiting) = rx.recv() {
                    while let Ok(more) = rx.try_recv() {
                        waiting.extend(more);
                    }
                    let outcome = syncer.sync().map_err(Arc::new);
                    answer(waiting, &outcome);
                }
            })
            .expect("the operating system starts a thread");
        tx
    }

    fn sync(&mut self) -> rusqlite::Result<()> {
        let gate = self.gate.clone();
        let _gate = gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(why) = self.broken.get() {
            return Err(sync_error(why));
        }
        let synced = self.open().and_then(std::fs::File::sync_all);
        self.counts.syncs.fetch_add(1, Ordering::SeqCst);
        synced.map_err(|e| {
            let why = format!("an fsync of the WAL failed ({e}); writes are refused until restart");
            tracing::error!("{why}");
            let _ = self.broken.set(why.clone());
            sync_error(&why)
        })
    }

    /// The WAL file, opened once: SQLite keeps the same file while the writer's
    /// connection is open (it deletes it only when the last connection closes).
    fn open(&mut self) -> std::io::Result<&std::fs::File> {
        if self.file.is_none() {
            self.file = Some(std::fs::File::open(&self.wal)?);
        }
        Ok(self.file.as_ref().expect("just opened"))
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
/// runtime.
///
/// On a multi-threaded runtime (`moderato serve`) it runs right here: `block_in_place`
/// hands this worker's other tasks to another thread meanwhile. Measured at 16 posters, a
/// hop to a blocking thread instead cost more than the fsync: its answer wakes the writer
/// through the runtime's global queue, which busy workers look at only now and then. On a
/// current-thread runtime (tests) the connection goes to a blocking thread and back.
async fn blocking(batch: &mut Batch, sql: &'static str) -> rusqlite::Result<()> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(|| control(conn(batch), sql));
    }
    let c = batch.conn.take().expect("the connection is here");
    let (c, r) = tokio::task::spawn_blocking(move || {
        let r = control(&c, sql);
        (c, r)
    })
    .await
    .expect("a blocking statement does not panic");
    batch.conn = Some(c);
    r
}

/// Runs a transaction-control statement (BEGIN, SAVEPOINT, RELEASE, COMMIT) prepared once
/// and kept: every post runs two or three of them on the batch's serial path, and
/// `execute_batch` would parse each afresh.
fn control(conn: &Connection, sql: &'static str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// BEGIN IMMEDIATE, which waits only while a connection outside the writer (another
/// process: `moderato import`, a CLI command) holds the lock: tried at once, and only when
/// SQLite says busy, tried again while [`poll_every_ms`] lets it.
async fn begin(batch: &mut Batch) -> rusqlite::Result<()> {
    match control(conn(batch), "BEGIN IMMEDIATE") {
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            conn(batch).busy_handler(Some(poll_every_ms))?;
            let began = blocking(batch, "BEGIN IMMEDIATE").await;
            let reset = conn(batch).busy_handler(None);
            began.and(reset)
        }
        other => other,
    }
}

/// The writer's busy handler while another process holds the lock: tries again every
/// millisecond, for the busy timeout. SQLite's own handler backs off to a try every 100 ms,
/// so it missed the short moments a bulk writer lets go between its transactions: with an
/// import of 160,000 comments running, a post waited up to 1.6 s.
fn poll_every_ms(tries: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_millis(1));
    u128::try_from(tries).unwrap_or(0) < super::lite::BUSY_TIMEOUT.as_millis()
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

    /// A write of one statement outside any use case's transaction (a session, a rejection
    /// in the audit log, an outbox claim) goes through the writer too: while a request
    /// holds the writer it waits its turn (never in SQLite's busy handler, which would
    /// sleep and retry, and fail after the busy timeout), then commits with a batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_statement_write_waits_for_the_writer_and_commits_through_it() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let (_, kept_before) = store.write_counts().unwrap();
        let mut held = store.begin().await.unwrap();
        held.spend_nonce("held", 1).await.unwrap();
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move { store.session_create("s1", "{}", i64::MAX).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "it waits while the writer is held");
        held.commit().await.unwrap();
        assert!(waiting.await.unwrap().unwrap(), "the session was created");
        assert_eq!(
            store.session_load("s1", 0).await.unwrap().as_deref(),
            Some("{}")
        );
        let (_, kept) = store.write_counts().unwrap();
        assert_eq!(kept, kept_before + 2, "both went through the writer");
    }

    /// The housekeeping writes (purges, forgetting IPs, pruning events, a first setting)
    /// queue on the writer too: under posting load they never sleep in SQLite's busy
    /// handler while the writer holds the lock, nor hold it while the writer's BEGIN waits.
    /// On the pool, as before, they would sit in the busy handler and not be counted here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn housekeeping_writes_queue_on_the_writer() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let writer = store.writer.clone().unwrap();
        let (_, kept_before) = store.write_counts().unwrap();
        let mut held = store.begin().await.unwrap();
        held.spend_nonce("held", 1).await.unwrap();
        let now = crate::store::now_ms();
        let jobs: Vec<tokio::task::JoinHandle<Result<(), crate::store::StoreError>>> = vec![
            {
                let s = store.clone();
                tokio::spawn(async move { s.purge_nonces(now).await.map(drop) })
            },
            {
                let s = store.clone();
                tokio::spawn(async move { s.purge_sessions(now).await.map(drop) })
            },
            {
                let s = store.clone();
                tokio::spawn(async move { s.forget_ips(now).await.map(drop) })
            },
            {
                let s = store.clone();
                tokio::spawn(async move { s.purge_audit(now).await.map(drop) })
            },
            {
                let s = store.clone();
                tokio::spawn(async move { s.prune_events(now).await.map(drop) })
            },
            {
                let s = store.clone();
                tokio::spawn(async move { s.setting_or_insert("k", "v").await.map(drop) })
            },
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while writer.waiting() < jobs.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {} queued on the writer",
                writer.waiting(),
                jobs.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(jobs.iter().all(|j| !j.is_finished()));
        held.commit().await.unwrap();
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("v"));
        let (_, kept) = store.write_counts().unwrap();
        assert_eq!(kept, kept_before + 7, "all went through the writer");
    }

    /// Another process writing in bulk (an import: long transactions, a few milliseconds
    /// apart) does not keep the writer out for long: it tries every millisecond and gets in
    /// at the next gap. SQLite's own handler, backing off to a try every 100 ms, missed
    /// 3 ms gaps between 100 ms transactions for seconds, so a post waited for most of an
    /// import.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_gets_in_between_another_process_bulk_transactions() {
        let (dir, store) = store().await;
        let path = dir.path().join("w.db");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bulk = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    c.execute_batch("BEGIN IMMEDIATE").unwrap();
                    c.execute(
                        "INSERT INTO settings (key, value) VALUES (?1, 'x')",
                        [format!("bulk {n}")],
                    )
                    .unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    c.execute_batch("COMMIT").unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(3));
                    n += 1;
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut longest = std::time::Duration::ZERO;
        for i in 0..5 {
            let started = std::time::Instant::now();
            let mut tx = store.begin().await.unwrap();
            tx.spend_nonce(&format!("during bulk {i}"), 1)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            longest = longest.max(started.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        bulk.join().unwrap();
        assert!(
            longest < std::time::Duration::from_secs(1),
            "a write waited {longest:?} beside the bulk writer"
        );
    }

    /// A store whose writer's syncer takes `gate` before each fsync: a test that holds it
    /// sees what happens before a batch is durable.
    async fn gated_store() -> (tempfile::TempDir, Arc<Store>, Arc<std::sync::Mutex<()>>) {
        let (dir, mut store) = store().await;
        let gate = Arc::new(std::sync::Mutex::new(()));
        let (conn, wal) = crate::store::lite::open_writer(&dir.path().join("w.db")).unwrap();
        assert!(wal.is_some(), "a database in a file has a WAL");
        store.writer = Some(super::Writer::start_gated(conn, wal, gate.clone()));
        (dir, Arc::new(store), gate)
    }

    /// After an fsync of the WAL fails, nothing more is acknowledged, not even a write whose
    /// own fsync would succeed (the failed batch's pages may be gone, and recovery stops
    /// at them): the write whose fsync failed gets an error, and so does every later one,
    /// with 503, and the health check fails, until the server restarts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_fsync_every_write_is_refused() {
        let (dir, mut store) = store().await;
        let (conn, wal) = crate::store::lite::open_writer(&dir.path().join("w.db")).unwrap();
        // The syncer is pointed at a path that is not there yet: its first fsync fails.
        let missing = dir.path().join("not-there-yet");
        store.writer = Some(super::Writer::start_gated(
            conn,
            Some(missing.clone()),
            Arc::default(),
        ));
        assert!(store.ping().await, "healthy before");
        let first = store.session_create("s1", "{}", i64::MAX).await;
        assert!(first.is_err(), "not acknowledged: its fsync failed");
        // Now the path leads to the real WAL, where an fsync succeeds.
        std::os::unix::fs::symlink(wal.unwrap(), &missing).unwrap();
        let second = store.session_create("s2", "{}", i64::MAX).await;
        let refused = crate::error::Error::from(second.expect_err("refused after the failure"));
        assert!(
            matches!(refused, crate::error::Error::Unavailable(_)),
            "{refused:?}"
        );
        assert!(
            store.durable().await.is_err(),
            "nothing is promised durable"
        );
        assert!(!store.ping().await, "the health check fails");
        assert_eq!(
            store.session_load("s2", 0).await.unwrap(),
            None,
            "not written"
        );
    }

    /// A write is answered only after an fsync of the WAL that holds it, and the fsync
    /// runs after the write lock is let go. With the syncer held before its fsync: the
    /// write's COMMIT is done (another connection reads it) and the next request gets the
    /// lock at once, but the write itself is not answered, nor does `Store::durable`
    /// return; both do once the fsync has run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock)] // the syncer's gate, held across awaits on purpose
    async fn a_write_is_answered_after_its_fsync_and_the_lock_is_free_before() {
        let (_dir, store, gate) = gated_store().await;
        let syncs_before = store.writer.as_ref().unwrap().syncs();

        let held = gate.lock().unwrap();
        let write = {
            let store = store.clone();
            tokio::spawn(async move { store.session_create("s1", "{}", i64::MAX).await })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.session_load("s1", 0).await.unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the write was committed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), store.begin())
            .await
            .expect("the lock is free while the write waits for its fsync")
            .unwrap();
        drop(next);
        // What the live replay waits for before it hands out event ids.
        let durable = {
            let store = store.clone();
            tokio::spawn(async move { store.durable().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!write.is_finished(), "not answered before the fsync");
        assert!(
            !durable.is_finished(),
            "nothing is durable before the fsync"
        );

        drop(held);
        assert!(write.await.unwrap().unwrap(), "answered once synced");
        durable.await.unwrap().unwrap();
        assert!(store.writer.as_ref().unwrap().syncs() > syncs_before);
    }

    /// Appends one event to room `r` and commits, recording its id in `seen` once durable
    /// (what a use case does to publish its events).
    async fn append_then_record(
        store: &crate::store::Store,
        seen: &Arc<std::sync::Mutex<Vec<i64>>>,
    ) -> i64 {
        let mut tx = store.begin().await.unwrap();
        let id = tx
            .append_event(&crate::store::NewEventRow {
                room: "r",
                comment_id: None,
                reader: None,
                staff: "{}".into(),
                author: None,
            })
            .await
            .unwrap();
        let seen = seen.clone();
        tx.commit_then(Some(Box::new(move || seen.lock().unwrap().push(id))))
            .await
            .unwrap();
        id
    }

    /// What runs after a commit (publishing live events) runs for every request of a
    /// batch in the order they drew their ids, however the runtime schedules the requests'
    /// tasks afterwards: the live hub gets a room's events in id order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_after_commit_runs_in_id_order() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..300)
            .map(|_| {
                let (store, seen) = (store.clone(), seen.clone());
                tokio::spawn(async move { append_then_record(&store, &seen).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, (1..=300).collect::<Vec<i64>>());
        let (commits, _) = store.write_counts().unwrap();
        assert!(
            commits < 300,
            "batches of several requests: {commits} commits"
        );
    }

    /// A request dropped after its COMMIT (its client hung up while it waited for the
    /// fsync) still has its work after commit run once the batch is durable: its events
    /// are published, not left in the table for the next replay only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock)] // the syncer's gate, held across awaits on purpose
    async fn work_after_commit_runs_when_the_request_is_dropped() {
        let (_dir, store, gate) = gated_store().await;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));

        let held = gate.lock().unwrap();
        let request = {
            let (store, seen) = (store.clone(), seen.clone());
            tokio::spawn(async move { append_then_record(&store, &seen).await })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.last_event_id("r").await.unwrap() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the event was committed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert!(seen.lock().unwrap().is_empty(), "nothing before the fsync");

        drop(held);
        while seen.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "published once durable"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(*seen.lock().unwrap(), vec![1]);
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

    /// A request leaves the COMMIT to the one queued behind it, which is then dropped
    /// (its client hung up) instead of committing: the first is still committed and
    /// answered, and the dropped one's statements are not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_last_request_is_dropped_still_commits() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let mut first = store.begin().await.unwrap();
        first.spend_nonce("first", 1).await.unwrap();
        let queued = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                tx.spend_nonce("dropped", 1).await.unwrap();
                // Holds its turn until aborted, never committing.
                std::future::pending::<()>().await;
            })
        };
        // The second is queued before the first commits, so the first leaves it the COMMIT.
        while store.writer.as_ref().unwrap().waiting() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let committed = tokio::spawn(async move { first.commit().await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !committed.is_finished(),
            "answered before its batch was committed"
        );
        queued.abort();
        tokio::time::timeout(std::time::Duration::from_secs(5), committed)
            .await
            .expect("the first request is answered once the second is gone")
            .unwrap()
            .unwrap();
        assert_eq!(nonces(&store).await, vec!["first".to_owned()]);
    }

    /// SQLite rolls the whole batch back by itself (as on a full disk or an I/O error,
    /// simulated here by a ROLLBACK on the connection) while a later request waits: the
    /// requests whose statements were in it are answered with an error, not told they are
    /// stored, and the later request still commits its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_rolled_back_by_sqlite_is_not_acknowledged() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let writer = store.writer.clone().unwrap();
        let spend = |turn: &mut super::Turn, nonce: &str| {
            turn.conn()
                .execute(
                    "INSERT INTO form_nonces (nonce, expires_at) VALUES (?1, 1)",
                    [nonce],
                )
                .unwrap();
        };
        let mut first = writer.turn().await.unwrap();
        spend(&mut first, "first");
        let (drop_it, dropped) = tokio::sync::oneshot::channel::<()>();
        let (rolled_back, has_rolled_back) = tokio::sync::oneshot::channel::<()>();
        let failing = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut turn = writer.turn().await.unwrap();
                turn.conn().execute_batch("ROLLBACK").unwrap();
                rolled_back.send(()).unwrap();
                let _ = dropped.await;
                drop(turn);
            })
        };
        while writer.waiting() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // Leaves the COMMIT to the queued request, which loses the transaction.
        let first_answer = tokio::spawn(async move { first.commit(None).await });
        has_rolled_back.await.unwrap();
        let later = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut turn = writer.turn().await.unwrap();
                spend(&mut turn, "later");
                turn.commit(None).await
            })
        };
        while writer.waiting() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop_it.send(()).unwrap();
        failing.await.unwrap();
        let first_answer = tokio::time::timeout(std::time::Duration::from_secs(5), first_answer)
            .await
            .unwrap()
            .unwrap();
        assert!(
            first_answer.is_err(),
            "a request whose statements SQLite rolled back was told they are stored"
        );
        later.await.unwrap().unwrap();
        assert_eq!(nonces(&store).await, vec!["later".to_owned()]);
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
