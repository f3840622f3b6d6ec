//! Several `moderato serve` instances on one PostgreSQL database (docs/deploy.md).
//!
//! Live events: every transaction that writes events also queues one `NOTIFY` per room it
//! touched (`events::write`), carrying only the room and its newest id. Each instance keeps
//! one dedicated connection that `LISTEN`s; on an announcement it reads that room's events
//! after the last id it delivered from the `events` table and publishes them to its own hub,
//! oldest first. The table, not the announcement, is the source of truth: a lost connection
//! is followed by a comparison of every room's newest id with what was delivered, so nothing
//! announced while the listener was away is missed.
//!
//! One order per room, exactly once: [`Fanout`] keeps, per room, the newest id this instance
//! has handed to its hub. Events committed here are published at once when they follow it
//! (no round trip through the database for the common case), and held back while an earlier
//! event of another instance is still on its way; the copy read back from the table after
//! our own announcement is then dropped as already delivered. Ids within a room follow
//! commit order (the `event_rooms` row lock), so "the next id" is always well defined.
//!
//! The rest that is shared: the spam model (reloaded when another instance retrains or
//! learns, announced on [`SPAM_CHANNEL`]), staff sign-outs (live staff connections everywhere
//! check their rights at once, [`SESSIONS_CHANNEL`]), and background jobs (housekeeping,
//! backups, the mail and webhook outboxes), which only the instance holding an advisory lock
//! runs, woken at once ([`JOBS_CHANNEL`]) when another instance queues mail or webhooks.
//! On SQLite none of this runs: [`Fanout`] publishes straight to the hub.

use super::Engine;
use crate::error::Result;
use crate::events;
use crate::live::{self, Hub};
use crate::store::{Backend, Store, StoreError, Tx, now_ms};
use sqlx::Connection;
use sqlx::postgres::PgListener;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Announces committed live events: payload `"ID ROOM"` (see [`event_announcement`]).
pub(crate) const EVENTS_CHANNEL: &str = "moderato_events";
/// Announces a changed spam model; the payload is the announcing instance's id.
pub(crate) const SPAM_CHANNEL: &str = "moderato_spam";
/// Announces ended sessions (sign-out, a new password); the payload is the instance's id.
pub(crate) const SESSIONS_CHANNEL: &str = "moderato_sessions";

/// Wakes the background job named in the payload ([`Job::name`]) in whichever instance runs
/// the jobs: work queued through another instance is picked up at once, not at the next poll.
pub(crate) const JOBS_CHANNEL: &str = "moderato_jobs";

/// A background job another instance may have to be woken for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Job {
    Mail,
    Webhooks,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Mail => "mail",
            Job::Webhooks => "webhooks",
        }
    }
}

/// Wakes `job` wherever it runs when `tx` commits (PostgreSQL; nothing on SQLite, where the
/// committing process runs the jobs and wakes them itself). PostgreSQL folds identical
/// notifications of one transaction into one.
pub(crate) async fn wake_at_commit(tx: &mut Tx, job: Job) -> std::result::Result<(), StoreError> {
    tx.notify(JOBS_CHANNEL, job.name()).await
}

/// Each instance's ping to itself through the database; the payload is its id.
const PING_CHANNEL: &str = "moderato_ping";
/// How often an instance pings itself.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A listener that heard nothing, not even its own pings, for this long reconnects.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// How long one attempt to connect the listener and LISTEN may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The per-client limits, which every instance on one PostgreSQL counts together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `[limits] posts_per_minute`.
    Posts,
    /// `[limits] sign_ins_per_minute`.
    SignIns,
    /// `[embed] new_threads_per_minute`.
    NewThreads,
}

impl Limit {
    fn scope(self) -> &'static str {
        match self {
            Limit::Posts => "posts",
            Limit::SignIns => "sign_ins",
            Limit::NewThreads => "new_threads",
        }
    }
}

/// Advisory lock held by the one instance that runs the background jobs.
const JOBS_LOCK: i64 = 0x6d6f_6465_7261_7401;
/// Advisory lock (per transaction) around changes of the stored spam model.
pub(crate) const SPAM_MODEL_LOCK: i64 = 0x6d6f_6465_7261_7402;

/// How often an instance without the jobs lock tries to take it, and the holder checks
/// that its lock's connection is alive: the failover time after an instance dies.
const JOBS_LOCK_RETRY: Duration = Duration::from_secs(2);
/// Events read per query when catching a room up.
const FETCH_BATCH: usize = 500;

/// The announcement of a room's events up to `id`: `"ID ROOM"`, never content. The id comes
/// first, so whatever a room's name holds, the first space ends the id.
pub(crate) fn event_announcement(room: &str, id: i64) -> String {
    format!("{id} {room}")
}

fn parse_announcement(payload: &str) -> Option<(i64, &str)> {
    let (id, room) = payload.split_once(' ')?;
    Some((id.parse().ok()?, room))
}

/// Where committed events go: straight to the hub (SQLite, or before the listener runs), or
/// through the per-room ordering shared with the listener (PostgreSQL under `serve`).
pub(crate) struct Fanout {
    hub: Hub,
    ordered: OnceLock<Arc<Ordered>>,
}

impl Fanout {
    pub fn new(hub: Hub) -> Self {
        Fanout {
            hub,
            ordered: OnceLock::new(),
        }
    }

    /// Publishes events this process just committed (ids increasing within each room).
    pub fn publish(&self, events: Vec<live::Event>) {
        match self.ordered.get() {
            None => {
                for e in events {
                    self.hub.publish(e);
                }
            }
            Some(o) => o.committed_here(events),
        }
    }
}

/// One room's delivery state.
#[derive(Default)]
struct Room {
    /// The newest id handed to the hub.
    delivered: i64,
    /// Events committed here that wait for an earlier one of another instance.
    held: BTreeMap<i64, live::Event>,
}

impl Room {
    fn hand_over(&mut self, hub: &Hub, e: live::Event) {
        self.delivered = e.id;
        hub.publish(e);
    }

    /// Publishes held events that now follow on.
    fn release(&mut self, hub: &Hub) {
        if self
            .held
            .first_key_value()
            .is_some_and(|(&id, _)| id <= self.delivered)
        {
            self.held = self.held.split_off(&(self.delivered + 1));
        }
        while let Some(e) = self.held.remove(&(self.delivered + 1)) {
            self.hand_over(hub, e);
        }
    }
}

/// Per-room delivery order shared by the commit path and the listener.
struct Ordered {
    hub: Hub,
    rooms: Mutex<HashMap<String, Room>>,
    jobs: mpsc::UnboundedSender<Fetch>,
}

/// Work for the reader task.
enum Fetch {
    /// Read `room`'s events up to at least this id.
    Room(String, i64),
    /// The listener was away: compare every room's newest id with what was delivered.
    CatchUp,
}

impl Ordered {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn delivered(&self, room: &str) -> i64 {
        self.rooms().get(room).map_or(0, |r| r.delivered)
    }

    /// Our own commits: published now when they follow on, else held and the gap read.
    fn committed_here(&self, events: Vec<live::Event>) {
        let mut gaps = Vec::new();
        {
            let mut rooms = self.rooms();
            for e in events {
                let room = rooms.entry(e.room.clone()).or_default();
                if e.id <= room.delivered {
                    continue;
                }
                if e.id == room.delivered + 1 {
                    room.hand_over(&self.hub, e);
                    room.release(&self.hub);
                } else {
                    gaps.push((e.room.clone(), e.id));
                    room.held.insert(e.id, e);
                }
            }
        }
        for (room, id) in gaps {
            let _ = self.jobs.send(Fetch::Room(room, id));
        }
    }

    /// Events read from the table after the room's delivered id, oldest first. They are
    /// complete up to the newest (ids follow commit order), except what retention pruned,
    /// so each one is delivered even past a gap. `None`: a row that did not parse (logged),
    /// skipped but counted as delivered so that nothing waits for it.
    fn read_back(&self, room: &str, events: Vec<(i64, Option<live::Event>)>) {
        let mut rooms = self.rooms();
        let state = rooms.entry(room.to_owned()).or_default();
        for (id, e) in events {
            if id <= state.delivered {
                continue;
            }
            state.held.remove(&id);
            match e {
                Some(e) => state.hand_over(&self.hub, e),
                None => state.delivered = id,
            }
        }
        state.release(&self.hub);
    }
}

/// Reads rooms' new events from the table as jobs ask, one room at a time, retrying failed
/// reads (the database may be away for a while) until they succeed.
async fn reader(ordered: Arc<Ordered>, store: Store, mut jobs: mpsc::UnboundedReceiver<Fetch>) {
    let mut wanted: HashMap<String, i64> = HashMap::new();
    let mut catch_up = false;
    loop {
        if wanted.is_empty() && !catch_up {
            match jobs.recv().await {
                Some(job) => add_job(&mut wanted, &mut catch_up, job),
                None => return,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            add_job(&mut wanted, &mut catch_up, job);
        }
        if catch_up {
            match store.event_room_heads().await {
                Ok(heads) => {
                    catch_up = false;
                    for (room, last) in heads {
                        add_job(&mut wanted, &mut catch_up, Fetch::Room(room, last));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "live catch-up: reading rooms failed"),
            }
        }
        let mut failed = false;
        for (room, last) in std::mem::take(&mut wanted) {
            if last <= ordered.delivered(&room) {
                continue;
            }
            if let Err(e) = read_room(&ordered, &store, &room).await {
                tracing::warn!(error = %e, room, "reading announced live events failed");
                wanted.insert(room, last);
                failed = true;
            }
        }
        if failed || catch_up {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn add_job(wanted: &mut HashMap<String, i64>, catch_up: &mut bool, job: Fetch) {
    match job {
        Fetch::Room(room, id) => {
            let w = wanted.entry(room).or_insert(id);
            *w = (*w).max(id);
        }
        Fetch::CatchUp => *catch_up = true,
    }
}

async fn read_room(ordered: &Ordered, store: &Store, room: &str) -> Result<(), StoreError> {
    loop {
        let since = ordered.delivered(room);
        let rows = store.events_since(room, since, FETCH_BATCH).await?;
        let n = rows.len();
        let events = rows
            .into_iter()
            .map(|r| {
                let id = r.id;
                let e = events::from_row(room, r)
                    .map_err(|e| tracing::error!(error = %e, room, id, "unreadable stored event"))
                    .ok();
                (id, e)
            })
            .collect();
        ordered.read_back(room, events);
        if n < FETCH_BATCH {
            return Ok(());
        }
    }
}

/// Aborts its tasks when dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Engine {
    /// On PostgreSQL, starts sharing live events and model changes with the other instances
    /// on the database (`moderato serve` calls it before accepting connections). Returns
    /// the task to abort at shutdown; `None` on SQLite, where there is nothing to share.
    pub async fn start_cluster(self: &Arc<Self>) -> Result<Option<JoinHandle<()>>> {
        if self.store.backend != Backend::Postgres {
            return Ok(None);
        }
        let url = self.store.url();
        let instance = self.instance.clone();
        let mut listener = listen(&url, &instance).await.map_err(StoreError::from)?;
        // After LISTEN: every later commit is announced, every earlier one is in here.
        let heads = self.store.event_room_heads().await?;
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let ordered = Arc::new(Ordered {
            hub: self.hub.clone(),
            rooms: Mutex::new(
                heads
                    .into_iter()
                    .map(|(room, last)| {
                        (
                            room,
                            Room {
                                delivered: last,
                                held: BTreeMap::new(),
                            },
                        )
                    })
                    .collect(),
            ),
            jobs: jobs.clone(),
        });
        if self.fanout.ordered.set(ordered.clone()).is_err() {
            return Ok(None);
        }
        let reader = tokio::spawn(reader(ordered.clone(), self.store.clone(), jobs_rx));
        // A connection that died without a word (a half-open TCP connection) would leave the
        // listener waiting for ever: each instance pings itself through the database, and a
        // listener that hears nothing at all for a while starts over.
        let pinger = {
            let (store, instance) = (self.store.clone(), self.instance.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PING_EVERY);
                loop {
                    tick.tick().await;
                    let _ = store.notify(PING_CHANNEL, &instance).await;
                }
            })
        };
        let engine = self.clone();
        Ok(Some(tokio::spawn(async move {
            let _tasks = Tasks(vec![reader, pinger]);
            let mut backoff = Duration::from_millis(50);
            loop {
                // Dropping an unfinished `try_recv` is fine here: the listener is then
                // dropped too, never read from again.
                match tokio::time::timeout(SILENCE_LIMIT, listener.try_recv()).await {
                    Ok(Ok(Some(n))) => {
                        backoff = Duration::from_millis(50);
                        engine.heard(n.channel(), n.payload(), &ordered, &jobs);
                        continue;
                    }
                    Ok(Ok(None)) => tracing::warn!("live listener lost its connection"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "live listener failed"),
                    Err(_) => tracing::warn!("live listener heard nothing, not even its pings"),
                }
                // Reconnect, then catch up from the table: what was announced meanwhile is
                // lost as an announcement but not as an event.
                loop {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    // Bounded: one attempt that hangs (a connect or a LISTEN that gets no
                    // answer) must not keep this instance deaf; the next attempt starts over.
                    match tokio::time::timeout(CONNECT_LIMIT, listen(&url, &instance)).await {
                        Ok(Ok(l)) => {
                            listener = l;
                            break;
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "live listener cannot reconnect"),
                        Err(_) => tracing::warn!("live listener: reconnecting timed out"),
                    }
                }
                tracing::info!("live listener reconnected; catching up");
                let _ = jobs.send(Fetch::CatchUp);
                // A retrain or a sign-out elsewhere may have gone unheard too.
                engine.reload_spam_model();
                engine.sessions_changed();
            }
        })))
    }

    /// One announcement from the database.
    fn heard(
        &self,
        channel: &str,
        payload: &str,
        ordered: &Ordered,
        jobs: &mpsc::UnboundedSender<Fetch>,
    ) {
        match channel {
            EVENTS_CHANNEL => match parse_announcement(payload) {
                // Our own commits (and repeats) are delivered already: no query.
                Some((id, room)) if id > ordered.delivered(room) => {
                    let _ = jobs.send(Fetch::Room(room.to_owned(), id));
                }
                Some(_) => {}
                None => tracing::warn!(payload, "malformed live announcement"),
            },
            SPAM_CHANNEL if payload != self.instance => self.reload_spam_model(),
            // Harmless in instances that do not run the jobs: nobody waits there.
            JOBS_CHANNEL if payload == Job::Mail.name() => self.mail_committed(),
            JOBS_CHANNEL if payload == Job::Webhooks.name() => {
                if let Some(w) = &self.webhooks {
                    w.committed();
                }
            }
            SESSIONS_CHANNEL if payload != self.instance => self.sessions_changed(),
            _ => {}
        }
    }

    /// Loads the stored spam model if another instance changed it (in the background).
    fn reload_spam_model(&self) {
        let (spam, store) = (self.spam.clone(), self.store.clone());
        tokio::spawn(async move {
            match spam.reload_if_changed(&store).await {
                Ok(true) => tracing::info!("loaded the spam model another instance stored"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "reloading the spam model failed"),
            }
        });
    }

    /// Tells the other instances that the stored spam model changed.
    pub(crate) async fn announce_spam_model(&self) {
        if let Err(e) = self.store.notify(SPAM_CHANNEL, &self.instance).await {
            tracing::warn!(error = %e, "could not announce the new spam model");
        }
    }

    /// Sessions ended: this process's staff connections check their rights at once, and
    /// so do the other instances' (they would within [`super::STAFF_RECHECK`] anyway).
    pub(crate) async fn announce_sessions_ended(&self) {
        self.sessions_changed();
        if let Err(e) = self.store.notify(SESSIONS_CHANNEL, &self.instance).await {
            tracing::warn!(error = %e, "could not announce ended sessions");
        }
    }

    /// Counts one attempt of client `ip` against `limit`; `Some(seconds to wait)` when it is
    /// over. On PostgreSQL every instance counts in the same row, so a client spreading its
    /// requests over the instances gets the configured rate and no more; on SQLite (one
    /// process) the in-memory limiter counts, with no query.
    pub(crate) async fn over_limit(&self, limit: Limit, ip: IpAddr) -> Result<Option<u64>> {
        let (local, per_minute) = match limit {
            Limit::Posts => (
                self.post_limiter.as_ref(),
                self.config.limits.posts_per_minute,
            ),
            Limit::SignIns => (
                Some(&self.sign_in_limiter),
                self.config.limits.sign_ins_per_minute.max(1),
            ),
            Limit::NewThreads => (
                self.embed_thread_limiter.as_ref(),
                self.config.embed.new_threads_per_minute,
            ),
        };
        // No limiter: the limit is off (0).
        let Some(local) = local else { return Ok(None) };
        let key = crate::net::limit_key(ip);
        if self.store.backend != Backend::Postgres {
            return Ok(local.check_key(&key).err().map(|n| super::retry_after(&n)));
        }
        const MINUTE_MS: i64 = 60_000;
        let interval = (MINUTE_MS / i64::from(per_minute.max(1))).max(1);
        Ok(self
            .store
            .count_attempt(
                limit.scope(),
                &key.to_string(),
                now_ms(),
                interval,
                interval * i64::from(per_minute),
            )
            .await?)
    }

    /// Runs the background jobs (housekeeping, scheduled backups, the mail and webhook
    /// outboxes) until the returned task is aborted. On PostgreSQL only the instance that
    /// holds an advisory lock runs them; the others wait to take over when it goes away.
    pub fn spawn_background_jobs(self: &Arc<Self>) -> JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            if engine.store.backend != Backend::Postgres {
                let _jobs = engine.start_jobs();
                return std::future::pending().await;
            }
            let url = engine.store.url();
            loop {
                match hold_lock(&url, JOBS_LOCK).await {
                    Ok(mut conn) => {
                        tracing::info!("this instance runs the background jobs");
                        let _jobs = engine.start_jobs();
                        // The lock lives as long as its session: check that it does.
                        while conn.ping().await.is_ok() {
                            tokio::time::sleep(JOBS_LOCK_RETRY).await;
                        }
                        tracing::warn!("lost the background jobs lock; stopping the jobs");
                    }
                    Err(e) => tracing::warn!(error = %e, "background jobs lock"),
                }
                tokio::time::sleep(JOBS_LOCK_RETRY).await;
            }
        })
    }

    fn start_jobs(self: &Arc<Self>) -> Tasks {
        let engine = self.clone();
        let housekeeping = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                engine.housekeeping().await;
                if let Err(e) = engine.store.purge_rate_limits(now_ms()).await {
                    tracing::warn!(error = %e, "purging shared rate limits failed");
                }
            }
        });
        let mut tasks = vec![housekeeping];
        tasks.extend(
            [
                self.spawn_backups(&self.config.backup),
                self.spawn_mail_outbox(),
                self.spawn_webhooks(),
            ]
            .into_iter()
            .flatten(),
        );
        Tasks(tasks)
    }
}

/// The listening connection, named `moderato listener INSTANCE` in `pg_stat_activity` so
/// that an operator (and the tests) can tell which instance a listening backend serves.
async fn listen(url: &str, instance: &str) -> std::result::Result<PgListener, sqlx::Error> {
    let mut named = url::Url::parse(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
    named
        .query_pairs_mut()
        .append_pair("application_name", &format!("moderato listener {instance}"));
    let mut l = PgListener::connect(named.as_str()).await?;
    // A lost connection ends `try_recv` at once with `Ok(None)`: the caller makes a new
    // listener (bounded by a timeout) and catches up. sqlx's own eager reconnect would wait
    // inside `try_recv` for its pool, with no limit of ours on it.
    l.eager_reconnect(false);
    l.listen_all([
        EVENTS_CHANNEL,
        SPAM_CHANNEL,
        SESSIONS_CHANNEL,
        JOBS_CHANNEL,
        PING_CHANNEL,
    ])
    .await?;
    Ok(l)
}

/// A connection of its own that holds session lock `key`; waits until it gets it. The lock
/// goes with the connection: when this process dies, PostgreSQL releases it.
async fn hold_lock(url: &str, key: i64) -> std::result::Result<sqlx::AnyConnection, sqlx::Error> {
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if got {
            return Ok(conn);
        }
        tokio::time::sleep(JOBS_LOCK_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{Event, EventSource, Limits, Payload, ReplayError};

    struct NoEvents;

    #[async_trait::async_trait]
    impl EventSource for NoEvents {
        async fn events_since(&self, _: &str, _: i64, _: usize) -> Result<Vec<Event>, ReplayError> {
            Ok(Vec::new())
        }
        async fn last_id(&self, _: &str) -> Result<i64, ReplayError> {
            Ok(0)
        }
    }

    fn event(room: &str, id: i64) -> Event {
        Event::public(
            room,
            id,
            Payload::SystemNotification {
                message: format!("event {id}"),
            },
        )
    }

    #[test]
    fn announcements_carry_the_room_and_id_only() {
        let a = event_announcement("a-thread_1.x~", 42);
        assert_eq!(a, "42 a-thread_1.x~");
        assert_eq!(parse_announcement(&a), Some((42, "a-thread_1.x~")));
        assert_eq!(parse_announcement("x y"), None);
        assert_eq!(parse_announcement("12"), None);
    }

    #[test]
    fn own_events_wait_for_earlier_ones_and_nothing_is_delivered_twice() {
        let hub = Hub::new(Limits::default(), Arc::new(NoEvents));
        let (jobs, mut asked) = mpsc::unbounded_channel();
        let ordered = Ordered {
            hub,
            rooms: Mutex::new(HashMap::new()),
            jobs,
        };
        ordered.committed_here(vec![event("t", 1)]);
        assert_eq!(ordered.delivered("t"), 1);
        // 2 was committed by another instance: 3 waits, and the gap is asked for.
        ordered.committed_here(vec![event("t", 3)]);
        assert_eq!(ordered.delivered("t"), 1);
        assert!(matches!(asked.try_recv(), Ok(Fetch::Room(r, 3)) if r == "t"));
        // Read from the table: 2 and our own 3 again; each delivered once, in order.
        ordered.read_back(
            "t",
            vec![(2, Some(event("t", 2))), (3, Some(event("t", 3)))],
        );
        assert_eq!(ordered.delivered("t"), 3);
        assert!(ordered.rooms().get("t").unwrap().held.is_empty());
        // A late copy of our own event changes nothing.
        ordered.committed_here(vec![event("t", 3)]);
        assert_eq!(ordered.delivered("t"), 3);
        // Pruned rows (a gap in the table) do not stall the room.
        ordered.committed_here(vec![event("t", 9)]);
        ordered.read_back("t", vec![(7, Some(event("t", 7))), (8, None)]);
        assert_eq!(ordered.delivered("t"), 9);
    }
}
