//! `moderato serve` as child processes, and a small HTTP client to talk to them: for the
//! tests that kill servers (reliability) or run several on one database (cluster).

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 client: one request per connection, so a server that dies mid-answer
// shows up as an error, never as half an answer.

/// The `moderato` binary the tests run: this build's, or `MODERATO_TEST_BIN` (another
/// build, e.g. a release binary, or a copy when several checkouts share a target directory
/// and so the same `target/debug/moderato`).
pub fn moderato_bin() -> PathBuf {
    std::env::var_os("MODERATO_TEST_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_moderato")))
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    wait: Duration,
) -> std::io::Result<Answer> {
    http_as(addr, method, path, body, None, wait).await
}

/// [`http`] with `Authorization: Bearer KEY` (staff API keys).
pub async fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    bearer: Option<&str>,
    wait: Duration,
) -> std::io::Result<Answer> {
    let auth = bearer.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with(addr, method, path, body, &headers, wait).await
}

/// [`http`] with more request headers (`Cookie`, `Authorization`...).
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
    wait: Duration,
) -> std::io::Result<Answer> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_answer(&raw).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "incomplete HTTP answer")
        })
    };
    tokio::time::timeout(wait, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            ))
        })
}

/// A complete answer, or None when it was cut off.
pub fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_field = std::str::from_utf8(&rest[..end]).ok()?;
            let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[end + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Some(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What one attempt to post ended with.
pub enum Attempt {
    /// 201 or 202: the comment id the server acknowledged.
    Acknowledged(i64),
    /// Any other answer, from the form token request or from the post.
    Refused { status: u16, retry_after: bool },
    /// No complete answer (connection refused or reset, timed out).
    NoAnswer,
}

/// Fetches a form token for `key` and posts `body` with it.
pub async fn try_post(
    addr: SocketAddr,
    key: &str,
    name: &str,
    body: &str,
    wait: Duration,
) -> Attempt {
    let refused = |a: &Answer| Attempt::Refused {
        status: a.status,
        retry_after: a.header("retry-after").is_some(),
    };
    let token = match http(addr, "GET", &format!("/api/threads/{key}/form"), None, wait).await {
        Ok(a) if a.status == 200 => match a
            .json()
            .and_then(|v| v["token"].as_str().map(str::to_owned))
        {
            Some(t) => t,
            None => return Attempt::NoAnswer,
        },
        Ok(a) => return refused(&a),
        Err(_) => return Attempt::NoAnswer,
    };
    post_with_token(addr, key, name, body, &token, wait).await
}

pub async fn post_with_token(
    addr: SocketAddr,
    key: &str,
    name: &str,
    body: &str,
    token: &str,
    wait: Duration,
) -> Attempt {
    let fields = json!({"name": name, "body": body, "form_token": token});
    match http(
        addr,
        "POST",
        &format!("/api/threads/{key}/comments"),
        Some(&fields),
        wait,
    )
    .await
    {
        Ok(a) if a.status == 201 || a.status == 202 => {
            match a.json().and_then(|v| v["comment_id"].as_i64()) {
                Some(id) => Attempt::Acknowledged(id),
                // A 2xx without an id is no acknowledgement a client could rely on.
                None => Attempt::Refused {
                    status: a.status,
                    retry_after: false,
                },
            }
        }
        Ok(a) => Attempt::Refused {
            status: a.status,
            retry_after: a.header("retry-after").is_some(),
        },
        Err(_) => Attempt::NoAnswer,
    }
}

/// A small deterministic generator: the port and the kill schedule of a run follow from its
/// printed seed (set `MODERATO_TEST_SEED` to use it again).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// `moderato serve` as a child process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    pub database: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl ServerProcess {
    pub fn start(port: u16, database: &str, config: &Path, log: &Path) -> ServerProcess {
        ServerProcess {
            child: Self::spawn(port, database, config, log),
            port,
            database: database.to_owned(),
            config: config.to_owned(),
            log: log.to_owned(),
        }
    }

    pub fn spawn(port: u16, database: &str, config: &Path, log: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(moderato_bin())
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--database")
            .arg(database)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moderato serve")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL: no shutdown handler runs, open requests and transactions are cut.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Starts it again on the same database and port; returns how long until /health
    /// answered 200.
    pub async fn restart(&mut self) -> Duration {
        self.child = Self::spawn(self.port, &self.database, &self.config, &self.log);
        self.wait_healthy().await
    }

    pub async fn wait_healthy(&mut self) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            // An answer from a server that is not ours (ours could not bind the port) must
            // not count.
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moderato serve exited ({status}); its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(a) = http(self.addr(), "GET", "/health", None, Duration::from_secs(2)).await
                && a.status == 200
            {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "no healthy server within 60 s; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port below the kernel's ephemeral range. While the server is down its port must
/// stay free for the restart: an ephemeral port could meanwhile be handed to another
/// socket, even to a poster's own connection attempt (a TCP self-connect), and the restart
/// would find it taken.
///
/// A port is handed out once per test process: tests running side by side (seeded from the
/// same millisecond, or just unlucky) would otherwise both find one port free before either
/// server binds it, and the loser's `wait_healthy` would be answered by the other test's
/// server, on another database.
pub fn free_port(rng: &mut Lcg) -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000.min(ephemeral_low / 2);
    for _ in 0..200 {
        let port = low + rng.below(u64::from(ephemeral_low - low)) as u16;
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port below {ephemeral_low}");
}
