//! The anonymous view of a thread, rendered once per change and served from memory.
//!
//! Every reader who is not signed in sees the same thread page (`/t/KEY`, the framed
//! `/embed/t/KEY`) and the same thread JSON (`/api/threads/KEY`), except for two values
//! made per response: the page's CSP nonce and the form token the no-JS form carries. A
//! 10,000-comment thread's first page takes ~30 ms to render and is the same for all of
//! them, so it is rendered once and the two values are spliced into the stored bytes for
//! each response (a fresh nonce, a fresh single-use token).
//!
//! An entry is valid for one version of its thread: the thread row's `updated_at` and its
//! room's newest event id, read with one indexed query per request. Every committed
//! change a reader could see (a comment published, removed, edited; the thread's settings)
//! moves one of them, on this instance or any other on the same database, so a cached view
//! never shows a removed comment nor misses a new one. An entry is also re-rendered after
//! [`MAX_AGE`], for what changes with the clock alone (a thread closing after
//! `close_after` days).
//!
//! Browsers revalidate with `If-None-Match` and get 304 while the version holds. A page
//! they keep that way carries an old form token; the reader's client fetches a fresh one
//! when the form is first used, and the no-JS form gets a clear "reload" error if it was
//! spent.
//!
//! Staff and signed-in users (a session cookie, an API key) are never served from here:
//! their view differs, and is rendered per request as before.

use super::AppState;
use app::model::FormToken;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use memchr::memmem;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an entry may be served without a re-render, whatever its version.
const MAX_AGE: Duration = Duration::from_secs(60);

/// Renders larger than this are served but not kept.
const MAX_ENTRY_BYTES: usize = 8 << 20;

/// The form token one render embedded, recorded by the page's backend
/// (`pages::RequestBackend`) so that the cache can replace it per response.
#[derive(Clone, Default)]
pub(crate) struct IssuedToken(Arc<Mutex<Option<(String, FormToken)>>>);

impl IssuedToken {
    pub(crate) fn record(&self, thread_key: &str, form: &FormToken) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((thread_key.to_owned(), form.clone()));
    }

    fn take(&self) -> Option<(String, FormToken)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Rendered anonymous views, one slot per URL (path and query).
pub(crate) struct PageCache {
    budget: usize,
    /// Each slot has its own async lock: concurrent misses of one URL wait for one render
    /// instead of all rendering it.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Entry>>>>>,
    /// Bytes held by all entries (approximate: updated when an entry is stored).
    held: Mutex<HashMap<String, usize>>,
    /// Distinguishes this process's ETags: another build names other assets.
    boot: u64,
}

/// One rendered response.
struct Entry {
    version: (i64, i64),
    rendered: Instant,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The CSP nonce in the body and in the policy header, if the page has one.
    nonce: Option<String>,
    /// The thread key, the token and its expiry as the body carries them.
    token: Option<(String, FormToken)>,
}

impl PageCache {
    /// A cache of at most `mb` MiB; `None` when 0 (every request renders).
    pub(crate) fn new(mb: u64) -> Option<PageCache> {
        (mb > 0).then(|| PageCache {
            budget: (mb as usize) << 20,
            slots: Mutex::default(),
            held: Mutex::default(),
            boot: crate::store::now_ms() as u64,
        })
    }

    fn slot(&self, url: &str) -> Arc<tokio::sync::Mutex<Option<Entry>>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(url.to_owned()).or_default().clone()
    }

    /// Records an entry's size; over budget, forgets other entries until it fits again.
    fn account(&self, url: &str, bytes: usize) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(url.to_owned(), bytes);
        let mut total: usize = held.values().sum();
        if total <= self.budget {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let victims: Vec<String> = held.keys().filter(|k| *k != url).cloned().collect();
        for v in victims {
            if total <= self.budget {
                break;
            }
            total -= held.remove(&v).unwrap_or(0);
            // A slot in use keeps its entry until its holder is done; it is only dropped
            // from the map, so its memory goes with the last request using it.
            slots.remove(&v);
        }
    }

    fn etag(&self, url: &str, version: (i64, i64)) -> String {
        // FNV-1a of the URL: distinct URLs of one thread (pages, the frame) get distinct tags.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in url.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        // Weak: the nonce and token inside differ per response.
        format!("W/\"{:x}-{}-{}-{h:x}\"", self.boot, version.0, version.1)
    }
}

/// The thread key of a URL this cache serves, or `None`.
fn cached_thread(path: &str) -> Option<&str> {
    let key = path
        .strip_prefix("/t/")
        .or_else(|| path.strip_prefix("/embed/t/"))
        .or_else(|| path.strip_prefix("/api/threads/"))?;
    // `/embed/t/KEY.html` (the fragment) and `/api/threads/KEY/page` are other resources.
    (!key.is_empty() && !key.contains('/') && !key.ends_with(".html")).then_some(key)
}

/// True when the request comes from someone whose view may differ from a reader's.
fn personal(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::AUTHORIZATION) {
        return true;
    }
    let session = format!("{}=", super::SESSION_COOKIE);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim_start().starts_with(&session))
}

/// Serves the anonymous view of a thread from memory when it is current (see the module
/// documentation); everything else passes through.
pub(crate) async fn serve(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cache) = state.page_cache.clone() else {
        return next.run(req).await;
    };
    let Some(key) = (req.method() == Method::GET)
        .then(|| cached_thread(req.uri().path()))
        .flatten()
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    if personal(req.headers()) {
        return next.run(req).await;
    }
    let version = match state.engine.thread_version(&key).await {
        Ok(Some(v)) => v,
        // No such thread yet (an embed may create it), or the database is away: the
        // handler decides, uncached.
        Ok(None) | Err(_) => return next.run(req).await,
    };
    let url = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let etag = cache.etag(&url, version);
    let revalidated = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag);
    if revalidated {
        // No policy header here: the browser keeps the one stored with the page, which
        // matches the nonce in the page it keeps.
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::CACHE_CONTROL, "private, no-cache".to_owned()),
            ],
        )
            .into_response();
    }
    let slot = cache.slot(&url);
    let mut entry = slot.lock().await;
    let current = entry
        .as_ref()
        .is_some_and(|e| e.version == version && e.rendered.elapsed() < MAX_AGE);
    if !current {
        let issued = IssuedToken::default();
        let mut req = req;
        req.extensions_mut().insert(issued.clone());
        let rendered = next.run(req).await;
        match keep(rendered, version, issued).await {
            Ok(e) => {
                cache.account(&url, e.body.len());
                *entry = Some(e);
            }
            // Not a plain 200 (an error page, a redirect, a stream cut short): sent as it
            // came, nothing kept.
            Err(resp) => {
                *entry = None;
                return resp;
            }
        }
    }
    let e = entry
        .as_ref()
        .expect("a current entry was just checked or stored");
    respond(e, &state, etag)
}

/// Reads a rendered response into an entry, or gives it back when it may not be kept.
async fn keep(resp: Response, version: (i64, i64), issued: IssuedToken) -> Result<Entry, Response> {
    let keepable = resp.status() == StatusCode::OK
        && !resp.headers().contains_key(header::SET_COOKIE)
        && !resp.headers().contains_key(header::CONTENT_ENCODING);
    if !keepable {
        return Err(resp);
    }
    let (parts, body) = resp.into_parts();
    let body = match axum::body::to_bytes(body, MAX_ENTRY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
    };
    let nonce = parts
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .and_then(|p| p.split("'nonce-").nth(1))
        .and_then(|rest| rest.split('\'').next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let mut headers = parts.headers;
    headers.remove(header::CACHE_CONTROL);
    headers.remove(header::ETAG);
    Ok(Entry {
        version,
        rendered: Instant::now(),
        status: parts.status,
        headers,
        body,
        nonce,
        token: issued.take(),
    })
}

/// A response from an entry, with this response's own nonce and form token.
fn respond(e: &Entry, state: &AppState, etag: String) -> Response {
    let mut body = e.body.clone();
    let mut headers = e.headers.clone();
    let mut swaps: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if let Some(old) = &e.nonce {
        let fresh = crate::token::random_token(16);
        if let Some(policy) = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .map(|p| p.replace(old.as_str(), &fresh))
            .and_then(|p| HeaderValue::from_str(&p).ok())
        {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
        swaps.push((old.clone().into_bytes(), fresh.into_bytes()));
    }
    if let Some((thread_key, old)) = &e.token {
        let fresh = state.engine.issue_form_token(thread_key);
        swaps.push((old.token.clone().into_bytes(), fresh.token.into_bytes()));
        swaps.push((
            old.expires_at.clone().into_bytes(),
            fresh.expires_at.into_bytes(),
        ));
    }
    for (old, new) in &swaps {
        body = Bytes::from(replace_all(&body, old, new));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    headers.remove(header::CONTENT_LENGTH);
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = e.status;
    *resp.headers_mut() = headers;
    resp
}

/// `haystack` with every `old` replaced by `new`.
fn replace_all(haystack: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len() + 64);
    let mut rest = haystack;
    let finder = memmem::Finder::new(old);
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(new);
        rest = &rest[at + old.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_thread_views_are_cached() {
        assert_eq!(cached_thread("/t/welcome"), Some("welcome"));
        assert_eq!(cached_thread("/embed/t/welcome"), Some("welcome"));
        assert_eq!(cached_thread("/api/threads/welcome"), Some("welcome"));
        assert_eq!(cached_thread("/api/threads/welcome/page"), None);
        assert_eq!(cached_thread("/api/threads/welcome/comments"), None);
        assert_eq!(cached_thread("/embed/t/welcome.html"), None);
        assert_eq!(cached_thread("/t/"), None);
        assert_eq!(cached_thread("/"), None);
        assert_eq!(cached_thread("/api/threads"), None);
    }

    #[test]
    fn a_session_or_an_api_key_is_personal_an_author_cookie_is_not() {
        let mut h = HeaderMap::new();
        assert!(!personal(&h));
        h.insert(header::COOKIE, "moderato_author=abc".parse().unwrap());
        assert!(!personal(&h));
        h.insert(
            header::COOKIE,
            format!("moderato_author=abc; {}=xyz", super::super::SESSION_COOKIE)
                .parse()
                .unwrap(),
        );
        assert!(personal(&h));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        assert!(personal(&h));
    }

    #[test]
    fn replace_all_swaps_every_occurrence() {
        assert_eq!(replace_all(b"a-NN-b-NN", b"NN", b"xyz"), b"a-xyz-b-xyz");
        assert_eq!(replace_all(b"none here", b"NN", b"x"), b"none here");
    }
}
