//! Webhooks: receivers (`[[webhooks]]`) told when a comment is published, held, marked as
//! spam, rejected or removed, as a signed JSON POST.
//!
//! Like mail, deliveries go through a durable outbox: the use case that changes a comment
//! queues one row per interested receiver in its own transaction (`Tx::queue_webhook`), with
//! the exact body to send; one worker per process POSTs what is due, claiming each row first
//! (so two instances never deliver the same row at once), marks it delivered on a 2xx answer,
//! and otherwise tries again later, each wait twice the last (from `retry_after_secs`, at
//! most an hour), for up to two days. The body carries only what readers of the site may
//! see: no email address, no IP address, no staff name.
//!
//! The HTTP client is a small HTTP/1.1 one over tokio (plain, or TLS with rustls and the web
//! PKI roots): one request per connection, the answer's status is all it reads. Redirects are
//! not followed (a 3xx is a failed try).

use crate::comment;
use crate::config::{Config, WebhookEvent};
use crate::mail::{GIVE_UP_AFTER_MS, elapsed_retrying, retry_wait};
use crate::store::{CommentRow, Store, StoreError, ThreadRow, Tx, WebhookRow, now_ms};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The signature of a delivery: `sha256=` and the hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "X-Moderato-Signature";
/// The event of a delivery (`comment_published`, ...).
pub const EVENT_HEADER: &str = "X-Moderato-Event";
/// The delivery's id: the same on every retry, so a receiver can drop a repeat.
pub const DELIVERY_HEADER: &str = "X-Moderato-Delivery";

/// How long a sender's claim on a delivery lasts: past it, another sender may take it (the
/// first one died mid-send). Longer than any delivery may take (`timeout_secs` ≤ 120).
const CLAIM_MS: i64 = 5 * 60 * 1000;
/// How often the worker looks for due deliveries at least, when nothing wakes it.
const POLL: Duration = Duration::from_secs(5);
/// The shortest sleep between two looks, so a row that stays due (a database refusing the
/// claim) never makes a busy loop.
const MIN_SLEEP: Duration = Duration::from_millis(200);
/// Deliveries read per look.
const BATCH: i64 = 50;
/// The longest answer head read before giving up on an answer.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A delivery that did not reach its receiver, or was refused by it.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    #[error("the answer is not HTTP: {0}")]
    BadAnswer(String),
    #[error("no answer within {0} s")]
    TimedOut(u64),
}

/// One configured receiver, ready to send to.
struct Hook {
    /// As configured: deliveries name their receiver by it.
    url_text: String,
    url: url::Url,
    events: Vec<WebhookEvent>,
    secret: Vec<u8>,
    timeout: Duration,
    retry_after_secs: u64,
}

/// The configured webhooks, what queues their deliveries and the worker that makes them.
pub struct Webhooks {
    hooks: Vec<Hook>,
    /// `site.public_url` without a trailing slash: links must be absolute.
    public_url: String,
    /// Woken when a transaction that may have queued deliveries commits.
    wake: Notify,
    /// TLS for https receivers (built only when one is configured).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Webhooks {
    /// The webhooks of `config`, or `None` when there are none. Refuses what cannot work:
    /// no http(s) `site.public_url` (links must be absolute) or an unreadable secret file.
    /// (The URLs, events and timeouts were checked with the rest of the configuration.)
    pub fn from_config(config: &Config) -> Result<Option<Webhooks>, String> {
        if config.webhooks.is_empty() {
            return Ok(None);
        }
        let public_url = config.site.public_url.trim().trim_end_matches('/');
        if !public_url.starts_with("http://") && !public_url.starts_with("https://") {
            return Err(
                "site.public_url (e.g. \"https://comments.example.org\") is needed for \
                 webhooks: the links they carry must be absolute"
                    .into(),
            );
        }
        let mut hooks = Vec::with_capacity(config.webhooks.len());
        for w in &config.webhooks {
            let url = url::Url::parse(&w.url).map_err(|e| format!("webhooks: {:?}: {e}", w.url))?;
            let secret = w.secret().map_err(|e| e.to_string())?;
            if secret.is_empty() {
                return Err(format!("webhooks ({}): the secret is empty", w.url));
            }
            hooks.push(Hook {
                url_text: w.url.clone(),
                url,
                events: w.events.clone(),
                secret: secret.into_bytes(),
                timeout: Duration::from_secs(w.timeout_secs.max(1)),
                retry_after_secs: w.retry_after_secs,
            });
        }
        let tls = if hooks.iter().any(|h| h.url.scheme() == "https") {
            Some(Arc::new(
                tls_config().map_err(|e| format!("webhooks: TLS: {e}"))?,
            ))
        } else {
            None
        };
        Ok(Some(Webhooks {
            hooks,
            public_url: public_url.to_owned(),
            wake: Notify::new(),
            tls,
        }))
    }

    /// Queues in `tx` the deliveries a new comment causes (its status is the event).
    pub(crate) async fn comment_stored(
        &self,
        tx: &mut Tx,
        comment: &CommentRow,
        thread: &ThreadRow,
    ) -> Result<(), StoreError> {
        self.queue(tx, comment, thread, None).await
    }

    /// Queues in `tx` the deliveries staff decisions cause: `(status before, comment after)`.
    pub(crate) async fn status_changed(
        &self,
        tx: &mut Tx,
        changes: &[(String, CommentRow)],
    ) -> Result<(), StoreError> {
        for (before, comment) in changes {
            if self.wanting(&comment.status).next().is_none() {
                continue;
            }
            if let Some(thread) = tx.thread_by_id(comment.thread_id).await? {
                self.queue(tx, comment, &thread, Some(before)).await?;
            }
        }
        Ok(())
    }

    /// The receivers that want to hear of a comment now in `status`.
    fn wanting(&self, status: &str) -> impl Iterator<Item = &Hook> {
        let event = WebhookEvent::of_status(status);
        self.hooks
            .iter()
            .filter(move |h| event.is_some_and(|e| h.events.contains(&e)))
    }

    async fn queue(
        &self,
        tx: &mut Tx,
        comment: &CommentRow,
        thread: &ThreadRow,
        before: Option<&str>,
    ) -> Result<(), StoreError> {
        let Some(event) = WebhookEvent::of_status(&comment.status) else {
            return Ok(());
        };
        let now = now_ms();
        let mut body = None;
        for hook in self.wanting(&comment.status) {
            let body = body.get_or_insert_with(|| self.payload(event, comment, thread, before));
            tx.queue_webhook(&hook.url_text, event.as_str(), comment.id, body, now)
                .await?;
        }
        Ok(())
    }

    /// The JSON body of a delivery: nothing in it that a reader of the site could not see
    /// (no email, no IP, no staff name), since receivers are third parties.
    fn payload(
        &self,
        event: WebhookEvent,
        c: &CommentRow,
        t: &ThreadRow,
        before: Option<&str>,
    ) -> String {
        let url = format!(
            "{}/t/{}#c{}",
            self.public_url,
            app::api::encode_key(&t.key),
            c.id
        );
        let text = summary(event, c, t, before, &url);
        let mut body = json!({
            "event": event.as_str(),
            "comment": {
                "id": c.id,
                "thread": t.key,
                "thread_title": t.title,
                "parent_id": c.parent_id,
                "author_name": c.author_name,
                "status": c.status,
                "body_html": c.body_html,
                "created_at": comment::rfc3339(c.created_at),
                "url": url,
            },
            "previous_status": before,
            "text": text,
        });
        if matches!(event, WebhookEvent::CommentHeld | WebhookEvent::CommentSpam) {
            body["moderation"] = json!({"reason": c.reason, "score": c.score});
        }
        body.to_string()
    }

    /// Wakes the worker: a transaction that may have queued deliveries committed.
    pub(crate) fn committed(&self) {
        self.wake.notify_one();
    }

    /// Delivers what is due until none is; returns how many were delivered.
    pub async fn deliver_due(&self, store: &Store) -> usize {
        let mut delivered = 0;
        loop {
            let now = now_ms();
            let due = match store.due_webhooks(now, BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook outbox unreadable");
                    return delivered;
                }
            };
            let mut claimed = 0;
            for row in &due {
                if !matches!(
                    store.claim_webhook(row.id, now, now + CLAIM_MS).await,
                    Ok(true)
                ) {
                    continue;
                }
                claimed += 1;
                if self.deliver_one(store, row).await {
                    delivered += 1;
                }
            }
            // Nothing due, or nothing could be claimed (another sender has it, or the
            // database refuses): look again at the next wake-up, not in a busy loop.
            if claimed == 0 {
                return delivered;
            }
        }
    }

    /// Makes one claimed delivery and records how it went; true when it was delivered.
    async fn deliver_one(&self, store: &Store, row: &WebhookRow) -> bool {
        let Some(hook) = self.hooks.iter().find(|h| h.url_text == row.url) else {
            let reason = "no webhook with this url is configured any more";
            tracing::warn!(delivery = row.id, url = %row.url, reason, "webhook delivery dropped");
            let _ = store.webhook_dropped(row.id, reason, false).await;
            return false;
        };
        let result = deliver(hook, self.tls.as_ref(), row).await;
        let now = now_ms();
        let recorded = match &result {
            Ok(()) => store.webhook_delivered(row.id, now).await,
            Err(e) => {
                let wait = retry_wait(hook.retry_after_secs, row.attempts);
                let retrying_for = elapsed_retrying(hook.retry_after_secs, row.attempts + 1);
                tracing::warn!(delivery = row.id, url = %row.url, error = %e, retry_in_ms = wait, "webhook not delivered");
                if retrying_for > GIVE_UP_AFTER_MS {
                    let reason = format!("gave up after {} tries: {e}", row.attempts + 1);
                    store.webhook_dropped(row.id, &reason, true).await
                } else {
                    store
                        .webhook_failed(row.id, &e.to_string(), now + wait)
                        .await
                }
            }
        };
        if let Err(e) = recorded {
            // The claim expires and the delivery is made again: the receiver sees the same
            // delivery id twice, at worst.
            tracing::error!(delivery = row.id, error = %e, "webhook outcome not recorded");
        }
        result.is_ok()
    }

    /// The worker: delivers what is due whenever woken (a change committed) and whenever the
    /// next retry comes due (at least every few seconds). Runs until its task is aborted.
    pub async fn run(self: Arc<Self>, store: Store) {
        loop {
            let woken = self.wake.notified();
            self.deliver_due(&store).await;
            let sleep = match store.next_webhook_due().await {
                Ok(Some(at)) => {
                    Duration::from_millis((at - now_ms()).clamp(0, POLL.as_millis() as i64) as u64)
                }
                _ => POLL,
            };
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(sleep.max(MIN_SLEEP)) => {}
            }
        }
    }
}

/// The one-line `text` a chat incoming webhook (Slack, Mattermost) shows.
fn summary(
    event: WebhookEvent,
    c: &CommentRow,
    t: &ThreadRow,
    before: Option<&str>,
    url: &str,
) -> String {
    let who = chat_safe(&c.author_name);
    let on = format!("on \"{}\"", chat_safe(&t.title));
    let what = match (event, before) {
        (WebhookEvent::CommentPublished, None) => {
            return format!("New comment by {who} {on}: {url}");
        }
        (WebhookEvent::CommentPublished, Some(b)) => format!("published by a moderator (was {b})"),
        (WebhookEvent::CommentHeld, None) => match &c.reason {
            Some(r) => format!("awaits moderation ({})", chat_safe(r)),
            None => "awaits moderation".into(),
        },
        (WebhookEvent::CommentSpam, None) => match c.score {
            Some(s) => format!("held as spam (score {s:.2})"),
            None => "held as spam".into(),
        },
        (WebhookEvent::CommentHeld, Some(_)) => "held by a moderator".into(),
        (WebhookEvent::CommentSpam, Some(_)) => "marked as spam by a moderator".into(),
        (WebhookEvent::CommentRejected, _) => "rejected by a moderator".into(),
        (WebhookEvent::CommentRemoved, _) => "removed by a moderator".into(),
    };
    format!("Comment by {who} {on} {what}: {url}")
}

/// A commenter's text as chat markup cannot act on it: `&`, `<` and `>` escaped as Slack
/// asks (so no `<!channel>` or `<url|disguised link>`), an invisible word joiner after `@`
/// (so no `@channel` mention in Mattermost) and inside `](` (so no Markdown link with a
/// disguised address), and control characters (line breaks) as spaces.
fn chat_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => out.push_str("@\u{2060}"),
            '(' if out.ends_with(']') => out.push_str("\u{2060}("),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: the signature header's value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let mut out = String::from("sha256=");
    for b in mac.finalize().into_bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// rustls with the ring provider and the web PKI roots (as lettre uses for mail).
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// POSTs one delivery within the hook's timeout; Ok when the receiver answered 2xx.
async fn deliver(
    hook: &Hook,
    tls: Option<&Arc<rustls::ClientConfig>>,
    row: &WebhookRow,
) -> Result<(), DeliveryError> {
    match tokio::time::timeout(hook.timeout, exchange(hook, tls, row)).await {
        Err(_) => Err(DeliveryError::TimedOut(hook.timeout.as_secs())),
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(DeliveryError::Status(status)),
        Ok(Err(e)) => Err(e),
    }
}

/// Connects (with TLS for https), sends the request and reads the answer's status.
async fn exchange(
    hook: &Hook,
    tls: Option<&Arc<rustls::ClientConfig>>,
    row: &WebhookRow,
) -> Result<u16, DeliveryError> {
    let url = &hook.url;
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(DeliveryError::BadAnswer("the URL has no host".into())),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let request = request(hook, row);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| DeliveryError::Connect(format!("{host}:{port}"), e))?;
    let _ = tcp.set_nodelay(true);
    if url.scheme() == "https" {
        let Some(tls) = tls else {
            return Err(DeliveryError::Tls(std::io::Error::other(
                "no TLS configuration",
            )));
        };
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| DeliveryError::Tls(std::io::Error::other(e)))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(DeliveryError::Tls)?;
        http_exchange(stream, &request).await
    } else {
        http_exchange(tcp, &request).await
    }
}

/// The request's bytes: head and body. Every value in the head is ours or a parsed URL's
/// (which cannot hold a line break).
fn request(hook: &Hook, row: &WebhookRow) -> Vec<u8> {
    let url = &hook.url;
    let mut target = url.path().to_owned();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let host = url.host_str().unwrap_or_default();
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mut bytes = format!(
        "POST {target} HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: Moderato/{version}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {length}\r\n\
         {EVENT_HEADER}: {event}\r\n\
         {DELIVERY_HEADER}: {id}\r\n\
         {SIGNATURE_HEADER}: {signature}\r\n\
         Connection: close\r\n\r\n",
        version = env!("CARGO_PKG_VERSION"),
        length = row.body.len(),
        event = row.event,
        id = row.id,
        signature = signature(&hook.secret, row.body.as_bytes()),
    )
    .into_bytes();
    bytes.extend_from_slice(row.body.as_bytes());
    bytes
}

/// Sends `request` and reads the status of the final answer (skipping 1xx heads).
async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<u16, DeliveryError> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = status_of(&buf[..end])?;
            if !(100..200).contains(&status) {
                return Ok(status);
            }
            buf.drain(..end + 4);
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(DeliveryError::BadAnswer(
                "the answer's head is too long".into(),
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(DeliveryError::BadAnswer(
                "the connection closed before an answer".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status code of an answer head (`HTTP/1.1 200 OK ...`).
fn status_of(head: &[u8]) -> Result<u16, DeliveryError> {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(head);
    let line = String::from_utf8_lossy(line);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or_else(|| DeliveryError::BadAnswer(format!("{:?}", truncate(&line, 80))))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answer_heads_give_their_status() {
        assert_eq!(status_of(b"HTTP/1.1 204 No Content").unwrap(), 204);
        assert_eq!(status_of(b"HTTP/1.0 500 Oops\r\nX: y").unwrap(), 500);
        assert!(status_of(b"SSH-2.0-OpenSSH_9.6").is_err());
        assert!(status_of(b"HTTP/1.1 2000 Nope").is_err());
    }

    /// The https path: TLS is set up and spoken (here to a server that is not TLS, which
    /// must fail as a TLS error, not be sent the body in the clear).
    #[tokio::test]
    async fn https_receivers_are_spoken_to_over_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            buf.truncate(n);
            buf
        });
        let hook = Hook {
            url_text: format!("https://127.0.0.1:{port}/x"),
            url: url::Url::parse(&format!("https://127.0.0.1:{port}/x")).unwrap(),
            events: vec![WebhookEvent::CommentPublished],
            secret: b"s".to_vec(),
            timeout: Duration::from_secs(5),
            retry_after_secs: 1,
        };
        let row = WebhookRow {
            id: 1,
            url: hook.url_text.clone(),
            event: "comment_published".into(),
            body: "{\"secret stuff\":1}".into(),
            attempts: 0,
        };
        let tls = Arc::new(tls_config().unwrap());
        let err = deliver(&hook, Some(&tls), &row).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Tls(_)), "{err}");
        let first = got.await.unwrap();
        assert_eq!(first[0], 0x16, "a TLS handshake record");
        assert!(!String::from_utf8_lossy(&first).contains("secret stuff"));
    }

    #[test]
    fn chat_text_cannot_mention_or_link() {
        assert_eq!(
            chat_safe("<!channel> @all\n[x](y) & co"),
            "&lt;!channel&gt; @\u{2060}all [x]\u{2060}(y) &amp; co"
        );
    }
}
