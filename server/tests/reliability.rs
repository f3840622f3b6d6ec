//! Reliability under failure (issue 13): the server killed with SIGKILL while fifty clients
//! post, the PostgreSQL server going away and coming back under a running server, and every
//! live client dropping its connection at once and catching up. Each test prints its
//! figures in one line (docs/security.md quotes them).
//!
//! Everything stays on loopback addresses, and every loop is bounded in count and in time.

mod common;

use common::process::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server::config::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;

/// What a group of posters saw.
#[derive(Default)]
struct Tally {
    /// (comment id, body) of every acknowledged post.
    acknowledged: Vec<(i64, String)>,
    /// Answers other than an acknowledgement, by status ("no answer" for none).
    other: BTreeMap<String, u64>,
    /// Non-2xx answers without a Retry-After header, by status.
    without_retry_after: BTreeMap<u16, u64>,
}

impl Tally {
    fn record(&mut self, attempt: Attempt, body: String) {
        match attempt {
            Attempt::Acknowledged(id) => self.acknowledged.push((id, body)),
            Attempt::Refused {
                status,
                retry_after,
            } => {
                *self.other.entry(status.to_string()).or_default() += 1;
                if !retry_after {
                    *self.without_retry_after.entry(status).or_default() += 1;
                }
            }
            Attempt::NoAnswer => *self.other.entry("no answer".into()).or_default() += 1,
        }
    }
}

/// Posters that post one new comment after another to one thread until told to stop.
struct Crowd {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    /// How many posts were acknowledged so far.
    acknowledged: Arc<AtomicUsize>,
    posters: Vec<tokio::task::JoinHandle<()>>,
}

impl Crowd {
    /// Starts `n` posters, each making at most `max_attempts` attempts with `pause` between.
    fn start(
        addr: SocketAddr,
        key: &'static str,
        n: usize,
        max_attempts: usize,
        pause: Duration,
        tally: Arc<Mutex<Tally>>,
    ) -> Crowd {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let posters = (0..n)
            .map(|number| {
                let (stop, tally, acknowledged) =
                    (stop.clone(), tally.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    for attempt in 0..max_attempts {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        // A new body for every attempt: a comment is matched by its id and
                        // by what it says.
                        let body = format!(
                            "Poster {number} writes comment {attempt} and expects it to be kept."
                        );
                        let name = format!("Poster {number}");
                        let answer =
                            try_post(addr, key, &name, &body, Duration::from_secs(15)).await;
                        let ok = matches!(answer, Attempt::Acknowledged(_));
                        tally.lock().unwrap().record(answer, body);
                        if ok {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        } else {
                            // Refused while the server restarts, or a 503: retry soon.
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Crowd {
            stop,
            tally,
            acknowledged,
            posters,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits until more than `above` posts were acknowledged; false after `limit`.
    async fn acknowledged_beyond(&self, above: usize, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.acknowledged() > above {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Stops the posters after their current attempt; returns what they saw.
    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for p in self.posters {
            tokio::time::timeout(Duration::from_secs(60), p)
                .await
                .expect("posters stop")
                .unwrap();
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

// ---------------------------------------------------------------------------------------
// The database, as an operator with a SQL shell sees it afterwards.

async fn open_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::<sqlx::Any>::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("the test's own connection to the database")
}

/// Every stored comment: id -> body.
async fn stored_comments(db: &sqlx::AnyPool) -> BTreeMap<i64, String> {
    sqlx::query_as::<_, (i64, String)>("SELECT id, body_source FROM comments")
        .fetch_all(db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Acknowledged comments that are not stored as acknowledged (by id and body).
fn lost(acknowledged: &[(i64, String)], stored: &BTreeMap<i64, String>) -> Vec<i64> {
    acknowledged
        .iter()
        .filter(|(id, body)| stored.get(id) != Some(body))
        .map(|(id, _)| *id)
        .collect()
}

/// What a half-finished write would leave behind: a comment without its events, per-status
/// counts that disagree with the comments, a room counter that disagrees with its events.
async fn half_written(db: &sqlx::AnyPool) -> Vec<String> {
    let mut problems = Vec::new();
    let without_event: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM comments c \
         WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.comment_id = c.id)",
    )
    .fetch_one(db)
    .await
    .unwrap();
    if without_event != 0 {
        problems.push(format!("{without_event} comments without an event"));
    }
    let counted: BTreeMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT status, n FROM comment_counts WHERE n <> 0")
            .fetch_all(db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let actual: BTreeMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT status, COUNT(*) FROM comments GROUP BY status")
            .fetch_all(db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    if counted != actual {
        problems.push(format!("comment_counts {counted:?}, comments {actual:?}"));
    }
    let rooms_off: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM event_rooms r WHERE r.last_id <> \
         (SELECT COALESCE(MAX(e.id), 0) FROM events e WHERE e.room = r.room)",
    )
    .fetch_one(db)
    .await
    .unwrap();
    if rooms_off != 0 {
        problems.push(format!("{rooms_off} event rooms whose counter is off"));
    }
    problems
}

/// Prints a test's figures straight to stdout, past the test harness's capture, so they are
/// in the log of every run (with or without `--nocapture`).
fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn backend() -> &'static str {
    match std::env::var("MODERATO_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => "postgres",
        _ => "sqlite",
    }
}

// ---------------------------------------------------------------------------------------
// 1. kill -9 under load

const POSTERS: usize = 50;
const KILLS: usize = 10;

/// Fifty clients post while the server is killed with SIGKILL ten times and restarted on
/// the same database and port. Every comment the server acknowledged (201 or 202 with its
/// id) is stored, with what it said; SQLite's integrity check passes; nothing is half
/// written; the server answers /health soon after every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_comment_survives_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database_url(dir.path()).await;
    let config = dir.path().join("moderato.toml");
    std::fs::write(
        &config,
        "[comments]\nauto_create_threads = true\n\n[limits]\nposts_per_minute = 0\n",
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let seed = std::env::var("MODERATO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| server::now_ms() as u64);
    let mut rng = Lcg(seed);
    let mut server = ServerProcess::start(free_port(&mut rng), &database, &config, &log);
    let first_start = server.wait_healthy().await;
    let addr = server.addr();

    // The first post creates the thread; the posters then share it.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let first = "The first comment, which creates the thread.".to_owned();
    match try_post(addr, "crash", "First", &first, Duration::from_secs(15)).await {
        Attempt::Acknowledged(id) => tally.lock().unwrap().acknowledged.push((id, first)),
        _ => panic!("the first post was not acknowledged"),
    }

    let crowd = Crowd::start(addr, "crash", POSTERS, 2_000, Duration::ZERO, tally);
    let started = Instant::now();
    let mut restarts = Vec::new();
    for kill in 0..KILLS {
        // Killed under load: only once this server has acknowledged a post, then after a
        // random pause while the posters keep going.
        let before = crowd.acknowledged();
        assert!(
            crowd
                .acknowledged_beyond(before, Duration::from_secs(30))
                .await,
            "no post acknowledged within 30 s before kill {kill}"
        );
        tokio::time::sleep(Duration::from_millis(50 + rng.below(450))).await;
        server.kill();
        restarts.push(server.restart().await);
    }
    // The last server takes posts too, then the posters stop.
    let before = crowd.acknowledged();
    assert!(
        crowd
            .acknowledged_beyond(before, Duration::from_secs(30))
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tally = crowd.stop().await;
    let elapsed = started.elapsed();
    // The last kill ends it: the checks below read what a crash left.
    server.kill();

    let db = open_pool(&database).await;
    let integrity = if database.starts_with("sqlite:") {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&db)
            .await
            .unwrap();
        rows.join("; ")
    } else {
        "n/a".to_owned()
    };
    let stored = stored_comments(&db).await;
    let problems = half_written(&db).await;
    db.close().await;

    let lost = lost(&tally.acknowledged, &stored);
    let max_restart = restarts.iter().max().copied().unwrap_or_default();
    let mean_restart = restarts.iter().sum::<Duration>() / restarts.len().max(1) as u32;
    report(&format!(
        "crash safety ({}): acknowledged {}, stored {}, lost {}, kills {KILLS} (SIGKILL) \
         under {POSTERS} posters in {:.1} s, restart to healthy max {} ms (mean {} ms, \
         first start {} ms), other answers {:?}, integrity_check {integrity}, seed {seed}",
        backend(),
        tally.acknowledged.len(),
        stored.len(),
        lost.len(),
        elapsed.as_secs_f64(),
        max_restart.as_millis(),
        mean_restart.as_millis(),
        first_start.as_millis(),
        tally.other,
    ));
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // A server that is up answers with an acknowledgement or, at worst, a 503 that says when
    // to retry: a restarted server never fails a post otherwise.
    let unexpected: Vec<_> = tally
        .other
        .keys()
        .filter(|k| !matches!(k.as_str(), "503" | "no answer"))
        .collect();
    assert!(unexpected.is_empty(), "{:?}", tally.other);
    assert!(
        tally.acknowledged.len() > KILLS,
        "too few posts acknowledged to mean anything"
    );
    if database.starts_with("sqlite:") {
        assert_eq!(integrity, "ok");
    }
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        max_restart < Duration::from_secs(10),
        "a restart took {max_restart:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. the database goes away and comes back

const PG_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh");

/// A throwaway PostgreSQL cluster of this test's own (scripts/pg.sh), deleted when dropped.
struct Cluster {
    dir: String,
    url: String,
}

impl Cluster {
    fn start() -> Cluster {
        let out = Command::new(PG_SH)
            .arg("start")
            .output()
            .expect("run pg.sh");
        assert!(
            out.status.success(),
            "pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let (dir, url) = line.trim().split_once(' ').expect("pg.sh prints DIR URL");
        Cluster {
            dir: dir.to_owned(),
            url: url.to_owned(),
        }
    }

    async fn run(&self, what: &'static str) {
        let dir = self.dir.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(PG_SH).args([what, &dir]).output().unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "pg.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(PG_SH)
            .args(["stop", &self.dir])
            .stdout(Stdio::null())
            .status();
    }
}

/// Serves `router` on a free loopback port with the accept loop `moderato serve` runs.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = server::http::ServeLimits {
        header_timeout: Duration::from_secs(10),
        max_connections: 1000,
        shutdown_grace: Duration::from_secs(1),
    };
    tokio::spawn(server::http::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    addr
}

/// One request made while the database was down.
struct Probe {
    what: &'static str,
    status: Option<u16>,
    retry_after: bool,
    took: Duration,
}

async fn probe(
    addr: SocketAddr,
    what: &'static str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Probe {
    let started = Instant::now();
    let answer = http(addr, method, path, body.as_ref(), Duration::from_secs(60)).await;
    Probe {
        what,
        status: answer.as_ref().ok().map(|a| a.status),
        retry_after: answer
            .as_ref()
            .is_ok_and(|a| a.header("retry-after").is_some()),
        took: started.elapsed(),
    }
}

/// PostgreSQL stops under a running server (its sessions ended, new connections refused)
/// while clients post: reads and posts get 503 with Retry-After, /health gets 503, nothing
/// is half written, and when PostgreSQL is back the same server answers 200 and 201 again
/// within seconds, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_requests_get_503_and_the_same_server_recovers() {
    if backend() != "postgres" {
        report(
            "database outage: skipped on SQLite (an embedded file cannot go away); runs \
             when MODERATO_TEST_PG_URL names a PostgreSQL server",
        );
        return;
    }
    let cluster = Cluster::start();
    let mut config =
        Config::parse("[comments]\nauto_create_threads = true\n\n[limits]\nposts_per_minute = 0\n")
            .unwrap();
    config.spam.bundled_corpus = false;
    let engine = Arc::new(
        server::Engine::open(&cluster.url, config)
            .await
            .expect("engine"),
    );
    let router = server::http::router(engine.clone(), server::http::leptos_options("target/site"));
    let addr = serve(router).await;
    let wait = Duration::from_secs(15);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let first = "Before the outage.".to_owned();
    match try_post(addr, "t", "First", &first, wait).await {
        Attempt::Acknowledged(id) => tally.lock().unwrap().acknowledged.push((id, first)),
        _ => panic!("the first post was not acknowledged"),
    }
    // Clients keep posting through the outage, so the pool's connections are in use when
    // the database ends them (each then answers its next query with "terminating
    // connection due to administrator command").
    let crowd = Crowd::start(addr, "t", 4, 1_000, Duration::from_millis(10), tally);
    assert!(crowd.acknowledged_beyond(4, Duration::from_secs(30)).await);
    // Form tokens for posts during the outage (the form itself reads the thread).
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let a = http(addr, "GET", "/api/threads/t/form", None, wait)
            .await
            .unwrap();
        tokens.push(a.json().unwrap()["token"].as_str().unwrap().to_owned());
    }

    cluster.run("halt").await;
    let down = Instant::now();
    let mut probes = Vec::new();
    for _ in 0..3 {
        probes.push(tokio::spawn(probe(
            addr,
            "read",
            "GET",
            "/api/threads/t",
            None,
        )));
    }
    for (i, token) in tokens.iter().enumerate() {
        let body =
            json!({"name": "Probe", "body": format!("Outage probe {i}."), "form_token": token});
        probes.push(tokio::spawn(probe(
            addr,
            "post",
            "POST",
            "/api/threads/t/comments",
            Some(body),
        )));
    }
    probes.push(tokio::spawn(probe(
        addr,
        "form",
        "GET",
        "/api/threads/t/form",
        None,
    )));
    for _ in 0..2 {
        probes.push(tokio::spawn(probe(addr, "health", "GET", "/health", None)));
    }
    let mut during = Vec::new();
    for p in probes {
        during.push(p.await.unwrap());
    }
    let outage = down.elapsed();
    let acknowledged_while_down = crowd.acknowledged();

    cluster.run("resume").await;
    let up = Instant::now();
    let mut read_back = None;
    while read_back.is_none() && up.elapsed() < Duration::from_secs(30) {
        match http(addr, "GET", "/api/threads/t", None, wait).await {
            Ok(a) if a.status == 200 => read_back = Some(up.elapsed()),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut post_back = None;
    let mut after = Vec::new();
    for n in 0..1_000 {
        if up.elapsed() > Duration::from_secs(30) {
            break;
        }
        let body = format!("After the outage, attempt {n}.");
        match try_post(addr, "t", "After", &body, wait).await {
            Attempt::Acknowledged(id) => {
                post_back = Some(up.elapsed());
                after.push((id, body));
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // The posters, too, are acknowledged again.
    let posters_back = crowd
        .acknowledged_beyond(acknowledged_while_down, Duration::from_secs(30))
        .await;
    let mut tally = crowd.stop().await;

    let db = open_pool(&cluster.url).await;
    let stored = stored_comments(&db).await;
    let problems = half_written(&db).await;
    db.close().await;
    tally.acknowledged.extend(after);
    let lost = lost(&tally.acknowledged, &stored);
    let probes_stored: Vec<&String> = stored
        .values()
        .filter(|b| b.starts_with("Outage probe"))
        .collect();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for p in &during {
        let status = p.status.map_or("no answer".into(), |s| s.to_string());
        *by_status.entry(format!("{} {status}", p.what)).or_default() += 1;
    }
    let slowest = during.iter().map(|p| p.took).max().unwrap_or_default();
    report(&format!(
        "database outage (postgres): {} requests while down: {by_status:?}, all with \
         Retry-After but /health: {}, slowest answer {} ms; outage {:.1} s; back after \
         resume: read 200 in {} ms, post 201 in {} ms, same server; posters' other answers \
         {:?}; acknowledged {}, stored {}, lost {}, half-written {}",
        during.len(),
        during
            .iter()
            .filter(|p| p.what != "health")
            .all(|p| p.retry_after),
        slowest.as_millis(),
        outage.as_secs_f64(),
        read_back.map_or(-1, |d| d.as_millis() as i64),
        post_back.map_or(-1, |d| d.as_millis() as i64),
        tally.other,
        tally.acknowledged.len(),
        stored.len(),
        lost.len(),
        problems.len(),
    ));
    for p in &during {
        assert_eq!(
            p.status,
            Some(503),
            "{} while the database was down",
            p.what
        );
        if p.what != "health" {
            assert!(p.retry_after, "{}: 503 without Retry-After", p.what);
        }
    }
    // Whatever the posters met, it was an acknowledgement or a 503 that says when to retry:
    // never a 500, never a dropped connection.
    let unexpected: Vec<_> = tally.other.keys().filter(|k| k.as_str() != "503").collect();
    assert!(unexpected.is_empty(), "{:?}", tally.other);
    assert!(
        tally.without_retry_after.is_empty(),
        "{:?}",
        tally.without_retry_after
    );
    assert!(probes_stored.is_empty(), "{probes_stored:?}");
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(problems.is_empty(), "{problems:?}");
    let read_back = read_back.expect("reads answered again after the database came back");
    let post_back = post_back.expect("posts acknowledged again after the database came back");
    assert!(read_back < Duration::from_secs(5), "{read_back:?}");
    assert!(post_back < Duration::from_secs(5), "{post_back:?}");
    assert!(posters_back, "the posters were not acknowledged again");
    drop(engine);
}

// ---------------------------------------------------------------------------------------
// 3. every live client reconnects at once

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const CLIENTS: usize = 200;
const COMMENTS: usize = 100;
const STORM_AFTER: usize = 40;

/// What one live client received.
#[derive(Default)]
struct ClientLog {
    /// Event ids in arrival order, replayed and live.
    ids: Vec<i64>,
    /// Events replayed after the reconnection (before its `subscribed`).
    replayed: usize,
    reconnects: usize,
    /// From dropping the connection to `subscribed` on the new one.
    resubscribe: Duration,
    /// Anything unexpected: resets, errors, closes, timeouts.
    problems: Vec<String>,
}

async fn connect_ws(addr: SocketAddr) -> Result<Ws, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Ok((ws, _)) => return Ok(ws),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

async fn send_subscribe(ws: &mut Ws, since: i64) -> Result<(), String> {
    let msg = app::live::ClientMessage::Subscribe {
        thread: "storm".into(),
        since: Some(since),
    };
    ws.send(tungstenite::Message::Text(msg.encode().into()))
        .await
        .map_err(|e| e.to_string())
}

/// Subscribes from the start of the thread, drops its connection when `storm` says so
/// and subscribes again from the last event id it saw, until it has `end`'s last id.
async fn storm_client(
    addr: SocketAddr,
    subscribed: Arc<AtomicUsize>,
    mut storm: tokio::sync::watch::Receiver<bool>,
    mut end: tokio::sync::watch::Receiver<Option<i64>>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut ws = match connect_ws(addr).await {
        Ok(ws) => ws,
        Err(e) => {
            log.problems.push(format!("connect: {e}"));
            return log;
        }
    };
    if let Err(e) = send_subscribe(&mut ws, 0).await {
        log.problems.push(format!("subscribe: {e}"));
        return log;
    }
    let mut first_subscribed = true;
    let mut stormed = false;
    let mut replaying = false;
    let mut dropped_at = Instant::now();
    loop {
        let target = *end.borrow();
        if target.is_some_and(|t| log.ids.last().is_some_and(|&l| l >= t)) {
            break;
        }
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("event") if v["thread"] == "storm" => {
                            log.ids.push(v["id"].as_i64().unwrap_or(-1));
                            if replaying {
                                log.replayed += 1;
                            }
                        }
                        Some("subscribed") => {
                            if first_subscribed {
                                first_subscribed = false;
                                subscribed.fetch_add(1, Ordering::SeqCst);
                            }
                            if replaying {
                                replaying = false;
                                log.resubscribe = dropped_at.elapsed();
                            }
                        }
                        _ => log.problems.push(text.to_string()),
                    }
                }
                Some(Ok(tungstenite::Message::Close(c))) => {
                    log.problems.push(format!("closed by the server: {c:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    log.problems.push(format!("socket error: {e}"));
                    break;
                }
                None => {
                    log.problems.push("socket ended".into());
                    break;
                }
            },
            _ = storm.changed(), if !stormed => {
                stormed = true;
                // Gone without a goodbye, as when a network drops everyone at once.
                dropped_at = Instant::now();
                drop(ws);
                ws = match connect_ws(addr).await {
                    Ok(ws) => ws,
                    Err(e) => {
                        log.problems.push(format!("reconnect: {e}"));
                        return log;
                    }
                };
                log.reconnects += 1;
                replaying = true;
                let since = log.ids.last().copied().unwrap_or(0);
                if let Err(e) = send_subscribe(&mut ws, since).await {
                    log.problems.push(format!("subscribe again: {e}"));
                    return log;
                }
            }
            _ = end.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {
                log.problems.push(format!("timed out at id {:?}", log.ids.last()));
                break;
            }
        }
    }
    log
}

/// 200 live clients follow a thread while 100 comments are posted; after 40 of them every
/// client drops its connection at once and reconnects with the last event id it saw. In
/// the end each client has every event id of the thread exactly once, in increasing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reconnect_storm_every_client_has_every_event_once_in_order() {
    let app = spawn_app_with(
        Config::parse(
            "[limits]\nposts_per_minute = 0\n\n\
             [live]\n# All clients come from 127.0.0.1.\n\
             max_connections_per_ip = 0\nmax_messages_per_minute = 0\n",
        )
        .unwrap(),
    )
    .await;
    app.thread("storm").await;
    let addr = serve(app.router.clone()).await;

    let subscribed = Arc::new(AtomicUsize::new(0));
    let (storm_tx, storm_rx) = tokio::sync::watch::channel(false);
    let (end_tx, end_rx) = tokio::sync::watch::channel(None::<i64>);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(storm_client(
                addr,
                subscribed.clone(),
                storm_rx.clone(),
                end_rx.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    while subscribed.load(Ordering::SeqCst) < CLIENTS && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        subscribed.load(Ordering::SeqCst),
        CLIENTS,
        "clients subscribed"
    );

    let storm_started = Instant::now();
    for i in 0..COMMENTS {
        if i == STORM_AFTER {
            storm_tx.send(true).unwrap();
        }
        app.publish(
            "storm",
            "Poster",
            &format!("Comment {i} of the storm."),
            None,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let posting = storm_started.elapsed();
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM events WHERE room = 'storm' AND reader IS NOT NULL ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(expected.len(), COMMENTS, "one reader event per comment");
    end_tx.send(expected.last().copied()).unwrap();

    let mut logs = Vec::new();
    for c in clients {
        logs.push(
            tokio::time::timeout(Duration::from_secs(120), c)
                .await
                .expect("clients finish")
                .unwrap(),
        );
    }
    let expected_set: BTreeSet<i64> = expected.iter().copied().collect();
    let (mut delivered, mut duplicated, mut missing, mut unexpected, mut out_of_order) =
        (0, 0, 0, 0, 0);
    let mut problems = Vec::new();
    for log in &logs {
        let unique: BTreeSet<i64> = log.ids.iter().copied().collect();
        delivered += log.ids.len();
        duplicated += log.ids.len() - unique.len();
        missing += expected_set.difference(&unique).count();
        unexpected += unique.difference(&expected_set).count();
        out_of_order += log.ids.windows(2).filter(|w| w[1] <= w[0]).count();
        problems.extend(log.problems.iter().cloned());
    }
    let reconnects: usize = logs.iter().map(|l| l.reconnects).sum();
    let replayed: usize = logs.iter().map(|l| l.replayed).sum();
    let slowest_resubscribe = logs.iter().map(|l| l.resubscribe).max().unwrap_or_default();
    report(&format!(
        "reconnect storm ({}): {CLIENTS} clients, {COMMENTS} comments in {:.1} s, all \
         dropped at once after {STORM_AFTER}: reconnected {reconnects}, every client \
         subscribed again within {} ms, {replayed} events replayed; delivered {delivered} \
         of {}, duplicated {duplicated}, missing {missing}, out of order {out_of_order}, \
         unexpected {unexpected}",
        backend(),
        posting.as_secs_f64(),
        slowest_resubscribe.as_millis(),
        CLIENTS * COMMENTS,
    ));
    assert!(
        problems.is_empty(),
        "{:?}",
        &problems[..problems.len().min(10)]
    );
    assert_eq!(reconnects, CLIENTS);
    assert_eq!(duplicated, 0);
    assert_eq!(missing, 0);
    assert_eq!(out_of_order, 0);
    assert_eq!(unexpected, 0);
    assert_eq!(delivered, CLIENTS * COMMENTS);
}
