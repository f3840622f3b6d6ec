//! `moderato-load`: fan-out latency, sustained delivery rate, CPU and memory of `/ws`.
//!
//! Two ways to use it (see `docs/live.md`):
//! - `run`: against a running Moderato on loopback; the trigger that causes one event is a
//!   comment POST (`--post-url`, fetching a form token first) or a raw POST (`--publish-url`).
//! - `compare`: starts two servers as child processes of this binary, the bare baseline (axum +
//!   tokio broadcast, 4 KiB buffers) and the live hub behind the route `docs/live.md`
//!   recommends, runs the same client load against each and prints the figures as ratios.
//!   Child processes (not in-process servers) so that the server's CPU and memory are read
//!   from `/proc/PID` alone, without this tool's own clients mixed in.
//!
//! Everything is loopback-only and bounded in count and time.

use app::live::{ClientMessage, Event as LiveEvent, ServerMessage};
use axum::extract::ws::{Message as AxMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use server::live::{Event, EventSource, Hub, Identity, Limits, ReplayError};
use std::collections::HashSet;
use std::error::Error;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Parser)]
#[command(
    name = "moderato-load",
    about = "Load tool for Moderato's /ws live updates (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure a running server.
    Run {
        /// The server's WebSocket endpoint.
        #[arg(long, default_value = "ws://127.0.0.1:3000/ws")]
        url: String,
        /// Trigger: POST a comment here (JSON {name, body, form_token}), e.g.
        /// http://127.0.0.1:3000/api/threads/welcome/comments
        #[arg(long)]
        post_url: Option<String>,
        /// Where the form token comes from (default: --post-url with /comments -> /form).
        #[arg(long)]
        form_url: Option<String>,
        /// Trigger: POST an empty body here; each POST must publish one event.
        #[arg(long)]
        publish_url: Option<String>,
        /// The server's process id, for its CPU time and memory (from /proc).
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Start the bare baseline and the hub as child processes and compare them.
    Compare {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Several `moderato serve` instances on one PostgreSQL: the same load against one
    /// instance, then with the subscribers split across `--instances` (posts go to the
    /// first), and the ratios.
    Cluster {
        /// Any database on the PostgreSQL server; the tool creates a fresh database beside
        /// it for the run and drops it afterwards.
        #[arg(long)]
        pg: String,
        /// The `moderato` binary to run (default: the one beside this tool).
        #[arg(long)]
        moderato: Option<std::path::PathBuf>,
        /// Instances for the second measurement.
        #[arg(long, default_value_t = 2)]
        instances: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// How many notifying transactions per second PostgreSQL commits and delivers: the
    /// ceiling of cross-instance live events (docs/deploy.md).
    NotifyRate {
        /// Any database on the PostgreSQL server (nothing is written but notifications).
        #[arg(long)]
        pg: String,
        /// Concurrent writers, each on its own connection.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Listening connections (one per instance in a deployment).
        #[arg(long, default_value_t = 2)]
        listeners: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// (internal) The bare baseline server: axum + tokio broadcast.
    #[command(hide = true)]
    ServeBare {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
    /// (internal) The live hub behind the recommended /ws route, with an in-memory source.
    #[command(hide = true)]
    ServeHub {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: SocketAddr,
    },
}

#[derive(Args, Clone, Debug)]
struct LoadArgs {
    /// The thread all subscribers follow.
    #[arg(long, default_value = "welcome")]
    thread: String,
    /// Subscribers for the latency and sustained phases.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Fan-out latency samples (one event each).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Events in the sustained phase.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Events per second in the sustained phase.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Idle connections for the memory figure (0 skips it; needs the server's pid).
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Connections per source address: clients spread over 127.0.0.1, .2, ... so a server
    /// with max_connections_per_ip = 10 (the default) admits them all.
    #[arg(long, default_value_t = 10)]
    per_ip: usize,
    /// Longest wait for any one step, in seconds.
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
}

fn main() -> Res<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::ServeBare { addr } => serve_bare(addr).await,
            Cmd::ServeHub { addr } => serve_hub(addr).await,
            Cmd::Run {
                url,
                post_url,
                form_url,
                publish_url,
                server_pid,
                load,
            } => {
                let ws = Endpoint::parse(&url)?;
                let trigger = match (post_url, publish_url) {
                    (Some(p), _) => {
                        let post = Endpoint::parse(&p)?;
                        let form = match form_url {
                            Some(f) => Endpoint::parse(&f)?,
                            None => Endpoint::parse(&form_url_for(&p)?)?,
                        };
                        Some(Trigger::Post { form, post })
                    }
                    (None, Some(p)) => Some(Trigger::Publish(Endpoint::parse(&p)?)),
                    (None, None) => None,
                };
                let figures = measure(
                    "server",
                    std::slice::from_ref(&ws),
                    trigger.as_ref(),
                    server_pid,
                    &load,
                )
                .await?;
                figures.print();
                Ok(())
            }
            Cmd::Compare { load } => compare(&load).await,
            Cmd::Cluster {
                pg,
                moderato,
                instances,
                load,
            } => cluster(&pg, moderato, instances, &load).await,
            Cmd::NotifyRate {
                pg,
                writers,
                listeners,
                seconds,
            } => notify_rate(&pg, writers, listeners, seconds).await,
        }
    })
}

/// Raises the soft open-file limit to the hard one (children inherit it): each connection
/// is a descriptor in this process and one in the server.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints and a minimal HTTP/1.1 client (loopback, plain HTTP: no client crate needed).

/// A parsed `ws://` or `http://` URL on a loopback address.
#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    host: String,
    addr: SocketAddr,
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Res<Self> {
        let (scheme, rest) = url.split_once("://").ok_or("URL without scheme")?;
        let port = match scheme {
            "ws" | "http" => 80,
            _ => return Err(format!("{url}: only ws:// and http:// on loopback").into()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let with_port = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{port}")
        };
        let addr = with_port
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{url}: this tool only targets loopback addresses").into());
        }
        Ok(Endpoint {
            url: url.to_string(),
            host: authority.to_string(),
            addr,
            path: path.to_string(),
        })
    }
}

fn form_url_for(post_url: &str) -> Res<String> {
    post_url
        .strip_suffix("/comments")
        .map(|base| format!("{base}/form"))
        .ok_or_else(|| "give --form-url: --post-url does not end in /comments".into())
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
async fn http(ep: &Endpoint, method: &str, body: Option<&str>) -> Res<(u16, String)> {
    let mut stream = TcpStream::connect(ep.addr).await?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        ep.path,
        ep.host,
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// What causes one event on the server.
enum Trigger {
    /// POST a comment, after fetching a single-use form token.
    Post { form: Endpoint, post: Endpoint },
    /// POST an empty body.
    Publish(Endpoint),
}

impl Trigger {
    /// Causes one event; returns when the request was sent (the latency clock's start).
    async fn fire(&self, n: usize) -> Res<Instant> {
        match self {
            Trigger::Publish(ep) => {
                let t0 = Instant::now();
                let (status, body) = http(ep, "POST", None).await?;
                if !(200..300).contains(&status) {
                    return Err(format!("publish: HTTP {status}: {body}").into());
                }
                Ok(t0)
            }
            Trigger::Post { form, post } => {
                let (status, body) = http(form, "GET", None).await?;
                if status != 200 {
                    return Err(format!("form token: HTTP {status}: {body}").into());
                }
                let token: serde_json::Value = serde_json::from_str(&body)?;
                let token = token["token"]
                    .as_str()
                    .ok_or("no token in the form answer")?;
                let comment = serde_json::json!({
                    "name": "moderato-load",
                    "body": format!("Load test comment {n} ({:?})", std::time::SystemTime::now()),
                    "form_token": token,
                });
                let t0 = Instant::now();
                let (status, body) = http(post, "POST", Some(&comment.to_string())).await?;
                if !(200..300).contains(&status) {
                    return Err(format!(
                        "post: HTTP {status}: {body} (for load runs set [limits] posts_per_minute = 0)"
                    )
                    .into());
                }
                Ok(t0)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Several instances on one PostgreSQL.

/// A `moderato serve` child process; killed when dropped.
struct Instance {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of its own beside the one `pg` names; dropped by [`Scratch::drop_now`].
struct Scratch {
    admin: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(pg: &str) -> Res<Scratch> {
        use sqlx::Connection;
        let name = format!("moderato_load_{}", server::now_ms());
        let mut conn = sqlx::PgConnection::connect(pg).await?;
        // The name is ours (digits and underscores): no user input reaches this statement.
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let (prefix, _) = pg.rsplit_once('/').ok_or("the URL names no database")?;
        Ok(Scratch {
            admin: pg.to_owned(),
            url: format!("{prefix}/{name}"),
            name,
        })
    }

    async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}

fn loopback_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_instance(
    exe: &std::path::Path,
    db: &str,
    config: &std::path::Path,
) -> Res<Instance> {
    let addr = SocketAddr::from(([127, 0, 0, 1], loopback_port()?));
    let child = Command::new(exe)
        .args(["serve", "--addr", &addr.to_string()])
        .env("DATABASE_URL", db)
        .env("MODERATO_CONFIG", config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let instance = Instance { child, addr };
    let health = Endpoint::parse(&format!("http://{addr}/health"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, _)) = http(&health, "GET", None).await {
            return Ok(instance);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("moderato serve on {addr} did not become healthy").into())
}

async fn cluster(
    pg: &str,
    moderato: Option<std::path::PathBuf>,
    instances: usize,
    args: &LoadArgs,
) -> Res<()> {
    let exe = match moderato {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory")?
            .join("moderato"),
    };
    let scratch = Scratch::create(pg).await?;
    let result = async {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("moderato.toml");
        // No rate limits, and nothing held: every trigger is one event for readers.
        std::fs::write(
            &config,
            "[limits]\nposts_per_minute = 0\n\n[live]\nmax_connections_per_ip = 0\n\
             max_messages_per_minute = 0\n\n[moderation]\ndefault = \"none\"\n\n\
             [spam]\nbundled_corpus = false\n",
        )?;
        let status = Command::new(&exe)
            .args(["thread", "set", &args.thread])
            .env("DATABASE_URL", &scratch.url)
            .env("MODERATO_CONFIG", &config)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err("moderato thread set failed".into());
        }
        let mut running = vec![start_instance(&exe, &scratch.url, &config).await?];
        let endpoints = |running: &[Instance]| -> Res<Vec<Endpoint>> {
            running
                .iter()
                .map(|i| Endpoint::parse(&format!("ws://{}/ws", i.addr)))
                .collect()
        };
        let first = running[0].addr;
        let trigger = Trigger::Post {
            form: Endpoint::parse(&format!("http://{first}/api/threads/{}/form", args.thread))?,
            post: Endpoint::parse(&format!(
                "http://{first}/api/threads/{}/comments",
                args.thread
            ))?,
        };
        let no_idle = LoadArgs {
            idle: 0,
            ..args.clone()
        };
        let single = measure(
            "1 instance",
            &endpoints(&running)?,
            Some(&trigger),
            Some(running[0].child.id()),
            &no_idle,
        )
        .await?;
        single.print();
        for _ in 1..instances.max(2) {
            running.push(start_instance(&exe, &scratch.url, &config).await?);
        }
        let name = format!("{} instances, posts through the first", running.len());
        let mut several =
            measure(&name, &endpoints(&running)?, Some(&trigger), None, &no_idle).await?;
        several.cpu_secs = None;
        several.print();
        println!("== ratios ({} instances / 1 instance) ==", running.len());
        println!(
            "  time to all subscribers: median {}, p99 {}",
            ratio(several.percentile(0.5), single.percentile(0.5)),
            ratio(several.percentile(0.99), single.percentile(0.99))
        );
        println!(
            "  deliveries/s: {}",
            ratio(several.deliveries_per_sec(), single.deliveries_per_sec())
        );
        drop(running);
        Ok(())
    }
    .await;
    scratch.drop_now().await;
    result
}

async fn notify_rate(pg: &str, writers: usize, listeners: usize, seconds: f64) -> Res<()> {
    use sqlx::Connection;
    use sqlx::postgres::PgListener;
    const CHANNEL: &str = "moderato_load_rate";
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..listeners.max(1) {
        let mut l = PgListener::connect(pg).await?;
        l.listen(CHANNEL).await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(_)) = l.try_recv().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut writer_tasks = Vec::new();
    for w in 0..writers.max(1) {
        let mut conn = sqlx::PgConnection::connect(pg).await?;
        let sent = sent.clone();
        writer_tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                // One transaction per event, as a post commits it: the announcement is sent at
                // commit. The payload has the shape Moderato's has: "ID ROOM".
                let Ok(mut tx) = conn.begin().await else {
                    break;
                };
                let payload = format!("{n} load-room-{w}");
                if sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(&mut *tx)
                    .await
                    .is_err()
                    || tx.commit().await.is_err()
                {
                    break;
                }
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in writer_tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    let expected = sent * listeners.max(1) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    println!(
        "NOTIFY rate: {writers} writers, {} listeners: {sent} notifying transactions in \
         {elapsed:.2} s = {:.0}/s committed; {got} of {expected} notifications received \
         (all delivered after {drained:.2} s)",
        listeners.max(1),
        sent as f64 / elapsed,
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// /proc readings.

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User + system CPU seconds of a process, all threads (including exited ones).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Clients.

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Who got which event id, and when each id reached every subscriber.
///
/// Deliveries are counted in atomics, one slot per id (ids within one phase span far fewer
/// than `SLOTS`), not under a lock: a thousand clients on two threads contending for one
/// mutex cost more CPU than the server spends per delivery, and delayed the figures.
struct Tally {
    expected: AtomicUsize,
    base: Instant,
    slots: Vec<IdSlot>,
    /// Ids in the order they reached every subscriber, with that moment.
    complete: Mutex<Vec<(i64, Instant)>>,
    completed: Notify,
    duplicates: AtomicU64,
    ready: AtomicUsize,
}

const SLOTS: usize = 1 << 16;

/// Deliveries of one event id.
struct IdSlot {
    count: AtomicUsize,
    /// The earliest delivery, in ns after `Tally::base` (u64::MAX: none yet).
    first_ns: AtomicU64,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Tally {
            expected: AtomicUsize::new(usize::MAX),
            base: Instant::now(),
            slots: (0..SLOTS)
                .map(|_| IdSlot {
                    count: AtomicUsize::new(0),
                    first_ns: AtomicU64::new(u64::MAX),
                })
                .collect(),
            complete: Mutex::new(Vec::new()),
            completed: Notify::new(),
            duplicates: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
        })
    }

    fn record(&self, id: i64, at: Instant) {
        let slot = &self.slots[id.rem_euclid(SLOTS as i64) as usize];
        let ns = u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(0);
        slot.first_ns.fetch_min(ns, Ordering::Relaxed);
        let count = slot.count.fetch_add(1, Ordering::AcqRel) + 1;
        if count == self.expected.load(Ordering::Acquire) {
            self.complete
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, at));
            self.completed.notify_waiters();
        }
    }

    fn completed_len(&self) -> usize {
        self.complete
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until at least `n` ids reached every subscriber; false on timeout.
    async fn wait_complete(&self, n: usize, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.completed.notified();
            if self.completed_len() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.completed_len() >= n;
            }
        }
    }
}

/// The source address for connection `i`: 127.0.0.1 for the first `per_ip`, then .2, ...
fn source_ip(i: usize, per_ip: usize) -> IpAddr {
    let n = i.checked_div(per_ip).unwrap_or(0);
    let n = u32::try_from(n).unwrap_or(0).min(0x00ff_fffd);
    IpAddr::V4(Ipv4Addr::from(0x7f00_0001u32 + n))
}

async fn connect(ep: &Endpoint, i: usize, per_ip: usize) -> Res<Ws> {
    let socket = if ep.addr.is_ipv4() {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(source_ip(i, per_ip), 0))?;
        s
    } else {
        TcpSocket::new_v6()?
    };
    let stream = socket.connect(ep.addr).await?;
    stream.set_nodelay(true)?;
    // tungstenite's default 128 KiB read buffer is zeroed again for every read, which cost
    // this client more CPU per delivery than the server spends; messages here are < 1 KiB.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(ep.url.as_str(), stream, Some(config)).await?;
    Ok(ws)
}

/// The id of an event message as the server writes it (`{"type":"event","id":N,...`);
/// `None` for anything else, which then gets a full parse as a typed [`ServerMessage`].
/// A test checks this against the typed encoding, so the shortcut cannot drift from it.
fn event_id(text: &str) -> Option<i64> {
    let rest = text.strip_prefix(r#"{"type":"event","id":"#)?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..digits].parse().ok().filter(|&id| id != 0)
}

async fn subscriber(
    mut ws: Ws,
    thread: String,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) {
    let sub = ClientMessage::Subscribe {
        thread,
        since: None,
    }
    .encode();
    if ws.send(Message::text(sub)).await.is_err() {
        return;
    }
    let mut seen = HashSet::new();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    // Events are nearly every message: read their id without a JSON parse,
                    // to keep this client's CPU per delivery small.
                    if let Some(id) = event_id(t.as_str()) {
                        if seen.insert(id) {
                            tally.record(id, at);
                        } else {
                            tally.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    let Ok(m) = ServerMessage::parse(t.as_str()) else { continue };
                    match m {
                        ServerMessage::Event { id, .. } if id != 0 => {
                            if seen.insert(id) {
                                tally.record(id, at);
                            } else {
                                tally.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        ServerMessage::Subscribed { .. } => {
                            tally.ready.fetch_add(1, Ordering::AcqRel);
                        }
                        ServerMessage::Error { code, .. } => {
                            eprintln!("server error: {}", code.as_str())
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    if let Some(f) = f { eprintln!("closed by server: {} {}", f.code, f.reason) }
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}

/// `count` subscribed clients, and the switch that closes them.
struct Crowd {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    connected: usize,
}

impl Crowd {
    /// Connection `i` goes to `eps[i % eps.len()]`: several instances share the crowd.
    async fn open(
        eps: &[Endpoint],
        count: usize,
        args: &LoadArgs,
        tally: &Arc<Tally>,
        first_index: usize,
    ) -> Res<Crowd> {
        let (stop, stop_rx) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(64));
        let (done_tx, mut done_rx) = mpsc::channel::<Res<Ws>>(64);
        for i in 0..count {
            let ep = eps[i % eps.len()].clone();
            let limit = limit.clone();
            let done_tx = done_tx.clone();
            let per_ip = args.per_ip;
            tokio::spawn(async move {
                let Ok(_permit) = limit.acquire_owned().await else {
                    return;
                };
                let r = connect(&ep, first_index + i, per_ip).await;
                let _ = done_tx.send(r).await;
            });
        }
        drop(done_tx);
        let mut tasks = Vec::with_capacity(count);
        let mut errors = 0usize;
        let mut first_error = None;
        while let Some(r) = done_rx.recv().await {
            match r {
                Ok(ws) => tasks.push(tokio::spawn(subscriber(
                    ws,
                    args.thread.clone(),
                    tally.clone(),
                    stop_rx.clone(),
                ))),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        if let Some(e) = first_error {
            eprintln!("{errors} of {count} connections failed; first: {e}");
        }
        let connected = tasks.len();
        let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
        while tally.ready.load(Ordering::Acquire) < connected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ready = tally.ready.load(Ordering::Acquire);
        if ready < connected {
            eprintln!("only {ready} of {connected} subscriptions confirmed");
        }
        Ok(Crowd {
            stop,
            tasks,
            connected: ready,
        })
    }

    async fn close(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

#[derive(Default, Debug, Clone)]
struct Figures {
    name: String,
    idle_connections: usize,
    rss_per_idle_kib: Option<f64>,
    subscribers: usize,
    latencies_ms: Vec<f64>,
    sustained_events: usize,
    deliveries: u64,
    expected_deliveries: u64,
    duplicates: u64,
    sustained_secs: f64,
    cpu_secs: Option<f64>,
}

/// The `p` quantile (0..=1) of `samples`, nearest rank.
/// `a / b` to two places, or "n/a" when either is missing (or `b` is zero).
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v.get(i).copied()
}

impl Figures {
    fn percentile(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_ms, p)
    }

    fn deliveries_per_sec(&self) -> Option<f64> {
        (self.sustained_secs > 0.0).then(|| self.deliveries as f64 / self.sustained_secs)
    }

    fn cpu_us_per_delivery(&self) -> Option<f64> {
        let cpu = self.cpu_secs?;
        (self.deliveries > 0).then(|| cpu * 1e6 / self.deliveries as f64)
    }

    fn print(&self) {
        let na = || "n/a".to_string();
        println!("== {} ==", self.name);
        println!(
            "  memory per idle connection ({} connections): {}",
            self.idle_connections,
            self.rss_per_idle_kib
                .map_or_else(na, |k| format!("{k:.2} KiB"))
        );
        println!(
            "  fan-out latency to all {} subscribers ({} rounds): median {}, p95 {}, p99 {}",
            self.subscribers,
            self.latencies_ms.len(),
            self.percentile(0.5)
                .map_or_else(na, |v| format!("{v:.2} ms")),
            self.percentile(0.95)
                .map_or_else(na, |v| format!("{v:.2} ms")),
            self.percentile(0.99)
                .map_or_else(na, |v| format!("{v:.2} ms")),
        );
        println!(
            "  sustained: {} events, {} of {} deliveries in {:.2} s = {} deliveries/s; lost {}, duplicated {}",
            self.sustained_events,
            self.deliveries,
            self.expected_deliveries,
            self.sustained_secs,
            self.deliveries_per_sec()
                .map_or_else(na, |v| format!("{v:.0}")),
            self.expected_deliveries.saturating_sub(self.deliveries),
            self.duplicates,
        );
        println!(
            "  server CPU: {} = {} per delivery",
            self.cpu_secs.map_or_else(na, |v| format!("{v:.2} s")),
            self.cpu_us_per_delivery()
                .map_or_else(na, |v| format!("{v:.2} µs")),
        );
    }
}

async fn measure(
    name: &str,
    ws: &[Endpoint],
    trigger: Option<&Trigger>,
    pid: Option<u32>,
    args: &LoadArgs,
) -> Res<Figures> {
    let wait = Duration::from_secs(args.timeout_secs);
    let mut fig = Figures {
        name: name.to_string(),
        ..Figures::default()
    };

    // 1. Memory per idle connection, first, while the server is fresh.
    if let (Some(pid), true) = (pid, args.idle > 0) {
        // A few connections first, so one-time allocations are not charged to the crowd.
        let warm = Tally::new();
        Crowd::open(&ws[..1], 10, args, &warm, 0)
            .await?
            .close()
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(pid).ok_or("cannot read the server's RSS")?;
        let tally = Tally::new();
        let crowd = Crowd::open(&ws[..1], args.idle, args, &tally, 0).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid).ok_or("cannot read the server's RSS")?;
        fig.idle_connections = crowd.connected;
        if crowd.connected > 0 {
            fig.rss_per_idle_kib =
                Some(after.saturating_sub(before) as f64 / crowd.connected as f64);
        }
        eprintln!(
            "{name}: RSS {before} KiB -> {after} KiB with {} idle connections",
            crowd.connected
        );
        crowd.close().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let Some(trigger) = trigger else {
        eprintln!("{name}: no trigger (--post-url or --publish-url): latency and rate skipped");
        return Ok(fig);
    };

    // 2. Fan-out latency.
    let tally = Tally::new();
    let crowd = Crowd::open(ws, args.subscribers, args, &tally, 0).await?;
    fig.subscribers = crowd.connected;
    tally.expected.store(crowd.connected, Ordering::Release);
    let mut n = 0usize;
    fig.latencies_ms = latency_rounds(name, trigger, &tally, &mut n, args).await?;

    // 3. Sustained deliveries, with the loss check.
    let start = Instant::now();
    let cpu0 = pid.and_then(cpu_seconds);
    let done0 = tally.completed_len();
    let dup0 = tally.duplicates.load(Ordering::Relaxed);
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let mut fired = 0usize;
    for i in 0..args.events {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        n += 1;
        match trigger.fire(n).await {
            Ok(_) => fired += 1,
            Err(e) => {
                eprintln!("{name}: trigger failed: {e}");
                break;
            }
        }
    }
    tally.wait_complete(done0 + fired, wait).await;
    // Let stragglers (lost ones never come) arrive before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu1 = pid.and_then(cpu_seconds);
    let (seen, deliveries) = {
        let from =
            u64::try_from(start.saturating_duration_since(tally.base).as_nanos()).unwrap_or(0);
        let phase = tally.slots.iter().filter(|s| {
            let first = s.first_ns.load(Ordering::Relaxed);
            first != u64::MAX && first >= from
        });
        phase.fold((0usize, 0u64), |(n, d), s| {
            (n + 1, d + s.count.load(Ordering::Relaxed) as u64)
        })
    };
    let last = tally
        .complete
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .skip(done0)
        .map(|c| c.1)
        .max()
        .unwrap_or(start);
    // Events the trigger caused that nobody saw still count as expected.
    let events = seen.max(fired);
    fig.sustained_events = events;
    fig.deliveries = deliveries;
    fig.expected_deliveries = (events * crowd.connected) as u64;
    fig.duplicates = tally.duplicates.load(Ordering::Relaxed) - dup0;
    fig.sustained_secs = last.duration_since(start).as_secs_f64();
    fig.cpu_secs = cpu0.zip(cpu1).map(|(a, b)| b - a);
    crowd.close().await;
    Ok(fig)
}

/// `args.rounds` fan-out latency samples: one event each, timed from the trigger until the
/// last subscriber has it.
async fn latency_rounds(
    name: &str,
    trigger: &Trigger,
    tally: &Tally,
    n: &mut usize,
    args: &LoadArgs,
) -> Res<Vec<f64>> {
    let wait = Duration::from_secs(args.timeout_secs);
    let mut latencies = Vec::new();
    let mut misses = 0;
    for round in 0..args.rounds {
        let done = tally.completed_len();
        *n += 1;
        let t0 = trigger.fire(*n).await?;
        if !tally.wait_complete(done + 1, wait).await {
            eprintln!("{name}: round {round}: the event did not reach every subscriber in time");
            misses += 1;
            if misses == 3 {
                eprintln!(
                    "{name}: giving up on latency: are the comments held for moderation, or \
                     published to another room?"
                );
                break;
            }
            continue;
        }
        misses = 0;
        let reached = tally
            .complete
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[done]
            .1;
        latencies.push(reached.saturating_duration_since(t0).as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(latencies)
}

/// Starts this binary with `sub` and reads the address it listens on.
fn spawn_server(sub: &str) -> Res<(Child, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([sub, "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .ok_or_else(|| format!("{sub}: unexpected first line {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

async fn compare(args: &LoadArgs) -> Res<()> {
    let mut all = Vec::new();
    for (name, sub) in [("bare", "serve-bare"), ("hub", "serve-hub")] {
        let (mut child, addr) = spawn_server(sub)?;
        let ws = Endpoint::parse(&format!("ws://{addr}/ws"))?;
        let trigger = Trigger::Publish(Endpoint::parse(&format!("http://{addr}/publish"))?);
        let r = measure(
            name,
            std::slice::from_ref(&ws),
            Some(&trigger),
            Some(child.id()),
            args,
        )
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let fig = r?;
        fig.print();
        all.push(fig);
    }
    let (bare, hub) = (&all[0], &all[1]);
    println!("== ratios (hub / bare) ==");
    println!(
        "  memory per idle connection: {}",
        ratio(hub.rss_per_idle_kib, bare.rss_per_idle_kib)
    );
    println!(
        "  fan-out latency: median {}, p95 {}",
        ratio(hub.percentile(0.5), bare.percentile(0.5)),
        ratio(hub.percentile(0.95), bare.percentile(0.95))
    );
    println!(
        "  deliveries/s: {}",
        ratio(hub.deliveries_per_sec(), bare.deliveries_per_sec())
    );
    println!(
        "  CPU per delivery: {}",
        ratio(hub.cpu_us_per_delivery(), bare.cpu_us_per_delivery())
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The two servers `compare` runs.

/// A comment-sized payload, the same for both servers.
fn payload(id: i64) -> LiveEvent {
    LiveEvent::CommentPosted {
        comment: app::model::Comment {
            id,
            parent_id: None,
            depth: 0,
            author_name: "moderato-load".into(),
            author_url: None,
            title: None,
            body_html: "<p>A load-test comment of about the size of a real one.</p>".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            status: None,
            moderation: None,
        },
        awaiting_moderation: false,
    }
}

#[derive(Deserialize)]
struct PublishQuery {
    #[serde(default = "one")]
    count: usize,
    #[serde(default)]
    thread: Option<String>,
}

fn one() -> usize {
    1
}

async fn listen(addr: SocketAddr, app: Router) -> Res<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
    // Both servers get the setting the real one has.
    let listener = listener.tap_io(server::http::low_latency);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// The baseline: every socket gets every broadcast message; no rooms, roles or limits.
async fn serve_bare(addr: SocketAddr) -> Res<()> {
    #[derive(Clone)]
    struct Bare {
        tx: broadcast::Sender<Utf8Bytes>,
        next: Arc<AtomicI64>,
    }
    async fn ws(State(s): State<Bare>, up: WebSocketUpgrade) -> Response {
        up.read_buffer_size(4096)
            .write_buffer_size(4096)
            .on_upgrade(move |socket| bare_conn(socket, s.tx.subscribe()))
    }
    async fn bare_conn(mut socket: WebSocket, mut rx: broadcast::Receiver<Utf8Bytes>) {
        loop {
            tokio::select! {
                msg = socket.recv() => match msg {
                    Some(Ok(AxMessage::Text(t))) => {
                        // Answer subscribes like the hub so the client load is identical.
                        if t.as_str().contains("\"subscribe\"") {
                            let ok = r#"{"type":"subscribed","thread":"load","last_id":0}"#;
                            if socket.send(AxMessage::Text(ok.into())).await.is_err() { return; }
                        }
                    }
                    Some(Ok(AxMessage::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                ev = rx.recv() => match ev {
                    Ok(text) => if socket.send(AxMessage::Text(text)).await.is_err() { return },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
    async fn publish(State(s): State<Bare>, Query(q): Query<PublishQuery>) -> Response {
        let thread = q.thread.unwrap_or_else(|| "welcome".into());
        let mut first = 0;
        for _ in 0..q.count {
            let id = s.next.fetch_add(1, Ordering::Relaxed) + 1;
            if first == 0 {
                first = id;
            }
            let text = ServerMessage::Event {
                id,
                thread: Some(thread.clone()),
                event: payload(id),
            }
            .encode();
            let _ = s.tx.send(Utf8Bytes::from(text));
        }
        Json(serde_json::json!({"first": first, "count": q.count})).into_response()
    }
    let (tx, _) = broadcast::channel(1024);
    let state = Bare {
        tx,
        next: Arc::new(AtomicI64::new(0)),
    };
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/publish", post(publish))
        .with_state(state);
    listen(addr, app).await
}

/// Stores nothing: load clients subscribe without `since`.
struct NoHistory(Arc<AtomicI64>);

#[async_trait::async_trait]
impl EventSource for NoHistory {
    async fn events_since(&self, _: &str, _: i64, _: usize) -> Result<Vec<Event>, ReplayError> {
        Ok(Vec::new())
    }
    async fn last_id(&self, _: &str) -> Result<i64, ReplayError> {
        Ok(self.0.load(Ordering::Acquire))
    }
}

/// The hub behind the `/ws` route as `docs/live.md` recommends it.
async fn serve_hub(addr: SocketAddr) -> Res<()> {
    #[derive(Clone)]
    struct S {
        hub: Hub,
        next: Arc<AtomicI64>,
    }
    async fn ws(
        State(s): State<S>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        up: WebSocketUpgrade,
    ) -> Response {
        let ip = peer.ip();
        let max = s.hub.limits().max_message_bytes;
        // Small buffers: client messages are tiny, and each frame is written at once.
        let mut up = up
            .read_buffer_size(2048)
            .write_buffer_size(0)
            .max_write_buffer_size(64 * 1024);
        if max > 0 {
            // Hard cap in the WebSocket layer, above the hub's polite limit.
            up = up.max_message_size(max * 2).max_frame_size(max * 2);
        }
        let hub = s.hub.clone();
        match hub.try_admit(ip) {
            Some(admission) => up.on_upgrade(move |socket| async move {
                let (sink, stream) = socket.split();
                let identity = Identity {
                    staff: false,
                    author_tokens: Vec::new(),
                    ip,
                };
                hub.serve(sink, stream, identity, admission).await;
            }),
            None => up.on_upgrade(move |socket| async move { hub.refuse(socket).await }),
        }
    }
    async fn publish(State(s): State<S>, Query(q): Query<PublishQuery>) -> Response {
        let thread = q.thread.unwrap_or_else(|| "welcome".into());
        let mut first = 0;
        for _ in 0..q.count {
            let id = s.next.fetch_add(1, Ordering::AcqRel) + 1;
            if first == 0 {
                first = id;
            }
            s.hub
                .publish(Event::public(thread.clone(), id, payload(id)));
        }
        Json(serde_json::json!({"first": first, "count": q.count})).into_response()
    }
    // Stand-ins for Moderato's comment API, so `run --post-url` can be tried against this.
    async fn form(axum::extract::Path(key): axum::extract::Path<String>) -> Response {
        Json(serde_json::json!({"token": format!("load-{key}"), "expires_at": ""})).into_response()
    }
    async fn comment(
        State(s): State<S>,
        axum::extract::Path(key): axum::extract::Path<String>,
        Json(body): Json<serde_json::Value>,
    ) -> Response {
        if body["form_token"].as_str() != Some(format!("load-{key}").as_str()) {
            return axum::http::StatusCode::UNPROCESSABLE_ENTITY.into_response();
        }
        let id = s.next.fetch_add(1, Ordering::AcqRel) + 1;
        s.hub.publish(Event::public(key, id, payload(id)));
        (
            axum::http::StatusCode::CREATED,
            Json(serde_json::json!({"comment_id": id})),
        )
            .into_response()
    }
    let next = Arc::new(AtomicI64::new(0));
    let hub = Hub::new(Limits::default(), Arc::new(NoHistory(next.clone())));
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/publish", post(publish))
        .route("/api/threads/{key}/form", get(form))
        .route("/api/threads/{key}/comments", post(comment))
        .with_state(S { hub, next });
    listen(addr, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_id_shortcut_reads_what_the_typed_encoding_writes() {
        for id in [1, 42, 9_876_543_210] {
            let text = ServerMessage::Event {
                id,
                thread: Some("t".into()),
                event: payload(id),
            }
            .encode();
            assert_eq!(event_id(&text), Some(id), "{text}");
        }
        // Anything else falls through to the full parse.
        assert_eq!(
            event_id(&ServerMessage::system_notification("x").encode()),
            None
        );
        let sub = ServerMessage::Subscribed {
            thread: "t".into(),
            last_id: 3,
        };
        assert_eq!(event_id(&sub.encode()), None);
    }
}
