//! Several `moderato serve` processes on one PostgreSQL database (issue 17): live events
//! posted or moderated through any instance reach the WebSocket clients of every instance
//! exactly once and in order; a killed instance costs nothing to clients that move to
//! another with their cursor; a retrain on one instance changes the others' verdicts at once.
//!
//! PostgreSQL only (MODERATO_TEST_PG_URL, as `scripts/test.sh` sets it); without it each
//! test says so and passes. Everything stays on loopback, and every wait is bounded.

mod common;

use common::process::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

/// The PostgreSQL server to use, or None (the test is skipped).
fn pg() -> Option<String> {
    match std::env::var("MODERATO_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipped: needs PostgreSQL (MODERATO_TEST_PG_URL)");
            None
        }
    }
}

fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs a `moderato` command on the database; returns its standard output.
fn moderato(database: &str, config: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(moderato_bin())
        .args(args)
        .env("DATABASE_URL", database)
        .env("MODERATO_CONFIG", config)
        .env("MODERATO_PASSWORD", "a long enough password")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run moderato");
    assert!(
        out.status.success(),
        "moderato {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// N instances on one fresh database with thread `t` and a staff API key.
struct Instances {
    _dir: tempfile::TempDir,
    database: String,
    key: String,
    servers: Vec<ServerProcess>,
}

impl Instances {
    async fn start(n: usize, config: &str) -> Instances {
        let dir = tempfile::tempdir().unwrap();
        let database = fresh_database_url(dir.path()).await;
        let config_path = dir.path().join("moderato.toml");
        std::fs::write(&config_path, config).unwrap();
        moderato(
            &database,
            &config_path,
            &["thread", "set", "t", "--title", "Shared"],
        );
        moderato(&database, &config_path, &["user", "add", "mod", "--staff"]);
        let key = moderato(&database, &config_path, &["key", "create", "mod"])
            .trim()
            .to_owned();
        let mut rng = Lcg(server::now_ms() as u64);
        // One after the other: the first one started takes the background jobs' lock.
        let mut servers = Vec::new();
        for i in 0..n {
            let mut s = ServerProcess::start(
                free_port(&mut rng),
                &database,
                &config_path,
                &dir.path().join(format!("server-{i}.log")),
            );
            s.wait_healthy().await;
            servers.push(s);
        }
        Instances {
            _dir: dir,
            database,
            key,
            servers,
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i % self.servers.len()].addr()
    }

    /// Posts a comment through instance `i`; its id and whether it was published (201).
    async fn post(&self, i: usize, name: &str, body: &str) -> (i64, bool) {
        let addr = self.addr(i);
        let form = http(addr, "GET", "/api/threads/t/form", None, WAIT)
            .await
            .unwrap();
        let token = form.json().unwrap()["token"].as_str().unwrap().to_owned();
        let fields = json!({"name": name, "body": body, "form_token": token});
        let a = http(addr, "POST", "/api/threads/t/comments", Some(&fields), WAIT)
            .await
            .unwrap();
        if a.status != 201 && a.status != 202 {
            // The servers' log lines may still be on their way to the files.
            tokio::time::sleep(Duration::from_millis(500)).await;
            panic!("{} {}; logs: {}", a.status, a.body, self.logs());
        }
        (
            a.json().unwrap()["comment_id"].as_i64().unwrap(),
            a.status == 201,
        )
    }

    /// A staff action on comments, through instance `i`.
    async fn moderate(&self, i: usize, ids: &[i64], action: &str) {
        let a = http_as(
            self.addr(i),
            "POST",
            "/api/moderation/bulk",
            Some(&json!({"ids": ids, "action": action})),
            Some(&self.key),
            WAIT,
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
    }

    /// The lines the servers logged that mention `what` (for failure messages).
    fn logged(&self, what: &str) -> String {
        self.logs()
            .lines()
            .filter(|l| l.contains(what))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What the servers logged (for failure messages).
    fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn db(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(2)
            .connect(&self.database)
            .await
            .unwrap()
    }
}

async fn connect(addr: SocketAddr, bearer: Option<&str>) -> Result<Ws, String> {
    let mut last = String::new();
    for _ in 0..40 {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        if let Some(k) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => return Ok(ws),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

async fn subscribe(ws: &mut Ws, room: &str, since: Option<i64>) {
    let msg = app::live::ClientMessage::Subscribe {
        thread: room.into(),
        since,
    };
    ws.send(tungstenite::Message::Text(msg.encode().into()))
        .await
        .unwrap();
}

/// What one live client received: (room, id) of every event, in arrival order.
#[derive(Default)]
struct Log {
    events: Vec<(String, i64)>,
    moves: usize,
    problems: Vec<String>,
}

/// A test's live clients (see [`client`]): each started with [`Clients::add`], all stopped
/// together with [`Clients::stop`].
struct Clients {
    instances: Vec<SocketAddr>,
    subscribed: Arc<AtomicUsize>,
    subscriptions: usize,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn new(instances: Vec<SocketAddr>) -> Self {
        Clients {
            instances,
            subscribed: Arc::new(AtomicUsize::new(0)),
            subscriptions: 0,
            stop: tokio::sync::watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Starts a client of instance `home` following `rooms`; returns what it logs.
    fn add(
        &mut self,
        home: usize,
        bearer: Option<String>,
        rooms: &'static [&'static str],
    ) -> Arc<Mutex<Log>> {
        let log = Arc::new(Mutex::new(Log::default()));
        self.tasks.push(client(
            self.instances.clone(),
            home,
            bearer,
            rooms,
            self.subscribed.clone(),
            log.clone(),
            self.stop.subscribe(),
        ));
        self.subscriptions += rooms.len();
        log
    }

    /// Whether every client subscribed to all its rooms in time.
    async fn all_subscribed(&self) -> bool {
        until(WAIT, || {
            self.subscribed.load(Ordering::SeqCst) == self.subscriptions
        })
        .await
    }

    /// Stops every client and waits (a while) for each to end.
    async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(WAIT, t).await;
        }
    }
}

/// A live client of instance `home` following `rooms`. When its connection ends (the
/// instance died) it reconnects to the next instance and subscribes with the newest id it
/// saw per room, as the browser client does.
fn client(
    instances: Vec<SocketAddr>,
    home: usize,
    bearer: Option<String>,
    rooms: &'static [&'static str],
    subscribed: Arc<AtomicUsize>,
    log: Arc<Mutex<Log>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut at = home;
        let mut first = true;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let mut ws = match connect(instances[at % instances.len()], bearer.as_deref()).await {
                Ok(ws) => ws,
                Err(e) => {
                    log.lock().unwrap().problems.push(format!("connect: {e}"));
                    return;
                }
            };
            for room in rooms {
                let since = if first {
                    None
                } else {
                    log.lock()
                        .unwrap()
                        .events
                        .iter()
                        .filter(|(r, _)| r == room)
                        .map(|(_, id)| *id)
                        .max()
                        .or(Some(0))
                };
                subscribe(&mut ws, room, since).await;
            }
            let mut stop = stop.clone();
            loop {
                tokio::select! {
                    msg = ws.next() => match msg {
                        Some(Ok(tungstenite::Message::Text(text))) => {
                            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            match v["type"].as_str() {
                                Some("event") => log.lock().unwrap().events.push((
                                    v["thread"].as_str().unwrap_or("?").to_owned(),
                                    v["id"].as_i64().unwrap_or(-1),
                                )),
                                Some("subscribed") if first => {
                                    subscribed.fetch_add(1, Ordering::SeqCst);
                                }
                                Some("subscribed") => {}
                                _ => log.lock().unwrap().problems.push(text.to_string()),
                            }
                        }
                        Some(Ok(tungstenite::Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep_until(deadline) => {
                        log.lock().unwrap().problems.push("timed out".into());
                        return;
                    }
                }
            }
            // The instance went away: move on to the next one with our cursors.
            first = false;
            at += 1;
            log.lock().unwrap().moves += 1;
        }
    })
}

/// Waits until `done` holds, at most `limit`.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

const CONFIG: &str = "[limits]\nposts_per_minute = 0\n\n\
                      [live]\nmax_connections_per_ip = 0\nmax_messages_per_minute = 0\n";

/// Readers and staff on each of `n` instances; posts from three posters at once through
/// different instances, then staff actions through different instances. Every staff client
/// gets every event of the thread and of the moderation room exactly once and in id order;
/// every reader gets the same events in the same order as every other reader, anywhere.
async fn fan_out_across(n: usize) {
    let Some(_) = pg() else { return };
    let inst = Instances::start(n, CONFIG).await;
    let addrs: Vec<SocketAddr> = (0..n).map(|i| inst.addr(i)).collect();
    let mut clients = Clients::new(addrs);
    let mut readers = Vec::new();
    let mut staff = Vec::new();
    for home in 0..n {
        for _ in 0..2 {
            readers.push(clients.add(home, None, &["t"]));
        }
        staff.push(clients.add(home, Some(inst.key.clone()), &["t", "moderation"]));
    }
    assert!(clients.all_subscribed().await, "clients subscribed");

    let started = Instant::now();
    // Three posters at once, each through another instance: their commits interleave.
    let inst = Arc::new(inst);
    let posters: Vec<_> = (0..3)
        .map(|p| {
            let inst = inst.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for k in 0..10 {
                    let (id, _) = inst
                        .post(
                            p + k,
                            &format!("Poster {p}"),
                            &format!("Comment {k} of poster {p}."),
                        )
                        .await;
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for p in posters {
        ids.extend(p.await.unwrap());
    }
    ids.sort();
    // Staff decisions through different instances.
    inst.moderate(0, &ids[0..3], "spam").await;
    inst.moderate(1, &ids[0..2], "approve").await;
    inst.moderate(2, &ids[5..7], "remove").await;
    inst.moderate(n + 1, &ids[10..11], "reject").await;

    let db = inst.db().await;
    let all: Vec<(String, i64)> = sqlx::query_as(
        "SELECT room, id FROM events WHERE room IN ('t', 'moderation') ORDER BY room, id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let for_readers: BTreeSet<i64> =
        sqlx::query_scalar("SELECT id FROM events WHERE room = 't' AND reader IS NOT NULL")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    db.close().await;
    let by_room = |events: &[(String, i64)]| {
        let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (r, id) in events {
            m.entry(r.clone()).or_default().push(*id);
        }
        m
    };
    let expected_staff = by_room(&all);
    let last_reader = for_readers.last().copied().unwrap_or(0);
    let done = until(WAIT, || {
        staff
            .iter()
            .all(|l| by_room(&l.lock().unwrap().events) == expected_staff)
            && readers.iter().all(|l| {
                l.lock()
                    .unwrap()
                    .events
                    .last()
                    .is_some_and(|(_, id)| *id >= last_reader)
            })
    })
    .await;
    let took = started.elapsed();
    // Anything delivered twice would arrive within moments.
    tokio::time::sleep(Duration::from_millis(300)).await;
    clients.stop().await;

    let staff_logs: Vec<Vec<(String, i64)>> = staff
        .iter()
        .map(|l| l.lock().unwrap().events.clone())
        .collect();
    let reader_logs: Vec<Vec<i64>> = readers
        .iter()
        .map(|l| l.lock().unwrap().events.iter().map(|(_, id)| *id).collect())
        .collect();
    let problems: Vec<String> = staff
        .iter()
        .chain(&readers)
        .flat_map(|l| l.lock().unwrap().problems.clone())
        .collect();
    let deliveries: usize = staff_logs.iter().map(Vec::len).sum::<usize>()
        + reader_logs.iter().map(Vec::len).sum::<usize>();
    report(&format!(
        "cluster fan-out: {n} instances, {} staff + {} reader clients, {} events in 2 rooms, \
         {deliveries} deliveries, all delivered {:.0} ms after the first post (done: {done})",
        staff.len(),
        readers.len(),
        all.len(),
        took.as_secs_f64() * 1000.0
    ));
    assert!(problems.is_empty(), "{problems:?}");
    for (i, log) in staff_logs.iter().enumerate() {
        assert_eq!(
            by_room(log),
            expected_staff,
            "staff client on instance {i}: every event once, in order"
        );
    }
    for (i, log) in reader_logs.iter().enumerate() {
        assert!(
            log.windows(2).all(|w| w[0] < w[1]),
            "reader {i}: in order, once: {log:?}"
        );
        let got: BTreeSet<i64> = log.iter().copied().collect();
        assert!(
            for_readers.is_subset(&got),
            "reader {i} misses {:?}",
            for_readers.difference(&got).collect::<Vec<_>>()
        );
        assert_eq!(log, &reader_logs[0], "every reader hears the same");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_every_event_to_every_client_once_and_in_order() {
    fan_out_across(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_every_event_to_every_client_once_and_in_order() {
    fan_out_across(3).await;
}

/// Readers on instance A and on B while comments are posted through B; A is killed with
/// SIGKILL mid-way and its clients reconnect to B with their cursor; A is restarted and
/// takes posts again. Every client ends with every event of the thread exactly once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_instance_lose_nothing_on_another() {
    let Some(_) = pg() else { return };
    let mut inst = Instances::start(2, CONFIG).await;
    let addrs = vec![inst.addr(0), inst.addr(1)];
    let mut clients = Clients::new(addrs);
    let logs: Vec<_> = [0, 0, 0, 0, 1, 1]
        .into_iter()
        .map(|home| clients.add(home, None, &["t"]))
        .collect();
    assert!(clients.all_subscribed().await);

    for k in 0..40 {
        if k == 10 {
            inst.servers[0].kill();
        }
        if k == 25 {
            inst.servers[0].restart().await;
        }
        // Through B while A is down; then alternating.
        let through = if (10..25).contains(&k) { 1 } else { k % 2 };
        inst.post(through, "Poster", &format!("Comment {k}.")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = inst.db().await;
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM events WHERE room = 't' AND reader IS NOT NULL ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    assert_eq!(expected.len(), 40);
    let ids = |l: &Arc<Mutex<Log>>| -> Vec<i64> {
        l.lock().unwrap().events.iter().map(|(_, id)| *id).collect()
    };
    until(WAIT, || {
        logs.iter().all(|l| ids(l).last() == expected.last())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    clients.stop().await;
    let moves: usize = logs.iter().map(|l| l.lock().unwrap().moves).sum();
    report(&format!(
        "cluster failover: 2 instances, 6 clients (4 on the killed one), 40 comments, \
         {moves} clients moved to the other instance"
    ));
    for (i, l) in logs.iter().enumerate() {
        assert!(
            l.lock().unwrap().problems.is_empty(),
            "{:?}",
            l.lock().unwrap().problems
        );
        assert_eq!(ids(l), expected, "client {i}: every event once, in order");
    }
    assert_eq!(moves, 4, "the killed instance's clients moved");
}

/// Staff retrain the spam filter through instance A: instance B judges the next comment by
/// the new model within a second (it heard of it through NOTIFY, not at its next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrain_on_one_instance_changes_the_verdicts_of_the_others_within_a_second() {
    let Some(_) = pg() else { return };
    let inst = Instances::start(
        2,
        &format!("{CONFIG}\n[spam]\nbundled_corpus = false\nthreshold = 0.9\n"),
    )
    .await;
    let spammy = "cheap pills casino bonus winner click here now";
    let mut spam_ids = Vec::new();
    for k in 0..8 {
        spam_ids.push(
            inst.post(0, "Seller", &format!("{spammy} offer {k}"))
                .await
                .0,
        );
        inst.post(
            0,
            "Reader",
            &format!("the article about gardening was thoughtful {k}"),
        )
        .await;
    }
    // Before: B (an empty model) publishes the spammy text.
    let (probe, published) = inst.post(1, "Seller", spammy).await;
    let db = inst.db().await;
    let why: Option<String> = sqlx::query_scalar("SELECT reason FROM comments WHERE id = $1")
        .bind(probe)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(published, "no model yet: published, not held: {why:?}");
    // Labelled by hand in the database, so that only the retrain teaches the filter; the
    // probe is taken out of the training data.
    for id in &spam_ids {
        sqlx::query("UPDATE comments SET status = 'spam' WHERE id = $1")
            .bind(id)
            .execute(&db)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE comments SET status = 'removed' WHERE id = $1")
        .bind(probe)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    let a = http_as(
        inst.addr(0),
        "POST",
        "/api/spam/retrain",
        None,
        Some(&inst.key),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let retrained = Instant::now();
    let mut held_after = None;
    while retrained.elapsed() < Duration::from_secs(3) {
        let (_, published) = inst.post(1, "Seller", spammy).await;
        if !published {
            held_after = Some(retrained.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report(&format!(
        "cluster spam model: the other instance judged by the retrained model after {:?}",
        held_after
    ));
    let held_after = held_after.expect("instance B never used the retrained model");
    assert!(held_after < Duration::from_secs(1), "{held_after:?}");
}

/// Scheduled backups every second into one directory from two instances: only one instance
/// writes them; when it is killed, the other takes over within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_runs_the_background_jobs_and_another_takes_over() {
    let Some(_) = pg() else { return };
    let backups = tempfile::tempdir().unwrap();
    let mut inst = Instances::start(
        2,
        &format!(
            "{CONFIG}\n[backup]\ndir = {:?}\nevery_hours = 0.0003\nkeep = 1000\n",
            backups.path().display().to_string()
        ),
    )
    .await;
    let count = || std::fs::read_dir(backups.path()).map_or(0, |d| d.count());
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let both_up = count();
    let both_up_secs = started.elapsed().as_secs_f64();
    // The first instance started holds the lock.
    inst.servers[0].kill();
    let killed = count();
    let killed_at = Instant::now();
    let mut resumed_after = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        if count() > killed {
            resumed_after = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report(&format!(
        "cluster jobs: {both_up} backups in {both_up_secs:.1} s with 2 instances (one every \
         1.08 s from one instance), the next one {resumed_after:?} after the job instance \
         was killed"
    ));
    // One writer: a first backup at start, then one per 1.08 s (two writers: twice that).
    assert!((2..=6).contains(&both_up), "{both_up} backups");
    let resumed_after = resumed_after.expect("the other instance took over the backups");
    assert!(resumed_after < Duration::from_secs(6), "{resumed_after:?}");
}

/// A webhook receiver that answers 200 to every request and reports when each arrived.
async fn hook_receiver() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // Read the head and the body it announces, then answer.
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if raw.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = tx.send(Instant::now());
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Comments posted through the instance that does not run the background jobs: the other
/// one, woken by NOTIFY at commit, delivers their webhooks within a second (its own poll
/// would take up to 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_through_one_instance_wakes_the_job_instance_at_once() {
    let Some(_) = pg() else { return };
    let (hook, mut received) = hook_receiver().await;
    let inst = Instances::start(
        2,
        &format!(
            "{CONFIG}\n[site]\npublic_url = \"http://127.0.0.1:9/\"\n\n[[webhooks]]\n\
             url = \"http://{hook}/hook\"\nevents = [\"comment_published\"]\n\
             secret = \"a-webhook-secret\"\n"
        ),
    )
    .await;
    let mut waits = Vec::new();
    for k in 0..3 {
        // The first instance started runs the jobs; post through the second.
        inst.post(1, "Poster", &format!("Comment {k} for the webhook."))
            .await;
        let posted = Instant::now();
        let at = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a webhook delivery")
            .unwrap();
        waits.push(at.saturating_duration_since(posted));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    report(&format!(
        "cluster jobs: webhooks of comments posted through the other instance delivered \
         after {waits:?}"
    ));
    for w in &waits {
        assert!(*w < Duration::from_secs(1), "{waits:?}");
    }
}

/// The instances' listening connections (backend pid, application name), waiting up to
/// 10 s until there are `want` of them (0: as they are now). Each instance names its listener
/// `moderato listener ID`.
async fn listening(db: &sqlx::AnyPool, want: usize) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for _ in 0..100 {
        found = sqlx::query_as::<_, (i32, String)>(
            "SELECT pid, application_name::text FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND application_name LIKE 'moderato listener %' AND query LIKE 'LISTEN %'",
        )
        .fetch_all(db)
        .await
        .unwrap();
        if found.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
}

/// Cuts each instance's listening connection once, waiting for one that is reconnecting;
/// returns how many were cut (2 unless a listener stayed away for 10 s).
async fn cut_listeners(db: &sqlx::AnyPool) -> usize {
    let mut cut = BTreeSet::new();
    for _ in 0..100 {
        for (pid, name) in listening(db, 0).await {
            if cut.contains(&name) {
                continue;
            }
            let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(db)
                .await
                .unwrap();
            if done {
                cut.insert(name);
            }
        }
        if cut.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cut.len()
}

/// The instances' listening connections are cut (pg_terminate_backend) five times while
/// comments are posted through the first instance: each listener reconnects by itself and
/// reads what was committed meanwhile from the table, so every client, on either instance,
/// still gets every event exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_loses_its_connection_catches_up_without_a_gap() {
    let Some(admin) = pg() else { return };
    let inst = Instances::start(2, CONFIG).await;
    let addrs = vec![inst.addr(0), inst.addr(1)];
    let mut clients = Clients::new(addrs);
    let logs: Vec<_> = [0, 1, 1]
        .into_iter()
        .map(|home| clients.add(home, None, &["t"]))
        .collect();
    assert!(clients.all_subscribed().await);

    let db = inst.db().await;
    let mut cut = 0;
    for k in 0..50 {
        if k % 10 == 5 {
            cut += cut_listeners(&db).await;
        }
        inst.post(0, "Poster", &format!("Comment {k}.")).await;
    }
    // Then a longer outage with nothing announced after it: new connections to the
    // database are refused while the listeners are cut and three comments commit (through
    // connections the first instance's pool already holds), then allowed again. Only the
    // listeners' catch-up after reconnecting can bring these three to the second instance.
    let name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&db)
        .await
        .unwrap();
    let allow = |yes: bool| format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {yes}");
    // From another database: PostgreSQL refuses this for the one a session is in.
    let mut admin = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&admin).await.unwrap()
    };
    let before = listening(&db, 2).await;
    assert_eq!(
        before.len(),
        2,
        "both listening before the outage: {before:?}; what the listeners logged:\n{}",
        inst.logged("listener")
    );
    sqlx::query(&allow(false))
        .execute(&mut admin)
        .await
        .unwrap();
    cut += cut_listeners(&db).await;
    for k in 50..53 {
        inst.post(0, "Poster", &format!("Comment {k}, while nobody listens."))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query(&allow(true)).execute(&mut admin).await.unwrap();
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM events WHERE room = 't' AND reader IS NOT NULL ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let ids = |l: &Arc<Mutex<Log>>| -> Vec<i64> {
        l.lock().unwrap().events.iter().map(|(_, id)| *id).collect()
    };
    until(WAIT, || {
        logs.iter().all(|l| ids(l).last() == expected.last())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both listeners come back (their retries are at most 2 s apart).
    let back = listening(&db, 2).await.len();
    db.close().await;
    clients.stop().await;
    report(&format!(
        "cluster listener: {cut} listening connections cut during 53 comments (the last 3 \
         while no new connection was allowed), {back} listening again afterwards"
    ));
    let logged = inst.logged("listener");
    assert_eq!(cut, 12, "both listeners cut six times; logged:\n{logged}");
    assert_eq!(expected.len(), 53);
    assert_eq!(back, 2, "logged:\n{logged}");
    for (i, l) in logs.iter().enumerate() {
        assert!(
            l.lock().unwrap().problems.is_empty(),
            "{:?}",
            l.lock().unwrap().problems
        );
        assert_eq!(ids(l), expected, "client {i}: every event once, in order");
    }
}

/// A form token spent through one instance is spent on all; a session started on one
/// instance is valid on the others, and signing out on one ends it everywhere: at once for
/// a staff WebSocket on another instance (announced), not at its next 15 s check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_tokens_and_sessions_are_the_same_on_every_instance() {
    let Some(_) = pg() else { return };
    let inst = Instances::start(2, CONFIG).await;
    let (a, b) = (inst.addr(0), inst.addr(1));

    // One token, spent through B, refused by A.
    let form = http(a, "GET", "/api/threads/t/form", None, WAIT)
        .await
        .unwrap();
    let token = form.json().unwrap()["token"].as_str().unwrap().to_owned();
    let post = |addr| {
        let fields = json!({"name": "Nora", "body": "Said once.", "form_token": token});
        async move {
            http(addr, "POST", "/api/threads/t/comments", Some(&fields), WAIT)
                .await
                .unwrap()
        }
    };
    assert_eq!(post(b).await.status, 201);
    let again = post(a).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.json().unwrap()["errors"]["form"].is_string());

    // A session from A works on B.
    let signed_in = http(
        a,
        "POST",
        "/api/session",
        Some(&json!({"username": "mod", "password": "a long enough password"})),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let headers = [("Cookie", cookie.as_str())];
    let queue = |addr| async move {
        http_with(addr, "GET", "/api/moderation/queue", None, &headers, WAIT)
            .await
            .unwrap()
            .status
    };
    assert_eq!(queue(b).await, 200);

    // A staff socket on B, opened with that session.
    let mut req = format!("ws://{b}/ws").into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    subscribe(&mut ws, "moderation", None).await;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if msg.to_text().unwrap_or("").contains("\"subscribed\"") {
            break;
        }
    }

    // Signed out through A: B refuses the cookie, and B's socket closes at once.
    let out = http_with(a, "DELETE", "/api/session", None, &headers, WAIT)
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    let signed_out = Instant::now();
    assert_eq!(queue(b).await, 401);
    let mut closed = None;
    while signed_out.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(tungstenite::Message::Close(frame)))) => {
                closed = Some((signed_out.elapsed(), frame.map(|f| f.reason.to_string())));
                break;
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    report(&format!(
        "cluster sessions: a staff socket on the other instance closed {closed:?} after the \
         sign-out"
    ));
    let (after, reason) = closed.expect("the staff socket on B was closed");
    assert_eq!(reason.as_deref(), Some("session ended"));
    assert!(after < Duration::from_secs(2), "{after:?}");
}

/// `posts_per_minute = 3` holds for a client whatever instance each of its posts reaches:
/// the fourth post in a minute is refused (429 with Retry-After) by either instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_post_limit_on_one_instance_is_over_it_on_all() {
    let Some(_) = pg() else { return };
    let inst = Instances::start(
        2,
        "[limits]\nposts_per_minute = 3\n\n[live]\nmax_connections_per_ip = 0\n",
    )
    .await;
    let attempt = |i: usize, k: usize| {
        let addr = inst.addr(i);
        async move {
            let form = http(addr, "GET", "/api/threads/t/form", None, WAIT)
                .await
                .unwrap();
            let token = form.json().unwrap()["token"].as_str().unwrap().to_owned();
            let fields =
                json!({"name": "Quick", "body": format!("Post {k}."), "form_token": token});
            http(addr, "POST", "/api/threads/t/comments", Some(&fields), WAIT)
                .await
                .unwrap()
        }
    };
    let mut statuses = Vec::new();
    for k in 0..3 {
        statuses.push(attempt(k, k).await.status);
    }
    let a = attempt(0, 3).await;
    let b = attempt(1, 4).await;
    report(&format!(
        "cluster limits: 3 posts through alternating instances {statuses:?}, then {} on the \
         first (Retry-After {:?}) and {} on the second",
        a.status,
        a.header("retry-after"),
        b.status
    ));
    assert_eq!(statuses, [201, 201, 201]);
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.header("retry-after").is_some());
    assert_eq!(b.status, 429, "{}", b.body);
}
