//! Embedding on other sites over HTTP: the scripts (`/embed.js`, `/count.js`,
//! `/embed/frame.js`), the framed thread view `/embed/t/{key}` and its HTML fragment
//! `/embed/t/{key}.html`, the counts `/api/counts`, the frame rules every HTML page carries,
//! and CORS for the read-only endpoints that host pages call.

use super::AppState;
use super::extract::ClientAddr;
use crate::engine::embed::{EmbedRequest, EmbedThread, normalise_origin};
use crate::error::Error;
use app::embed::{COUNT_JS, EMBED_JS, FRAME_JS, version};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// A script served from the binary, with the version that makes its URL cacheable forever.
struct Script {
    body: &'static str,
    version: u64,
}

const EMBED: Script = Script {
    body: EMBED_JS,
    version: version(EMBED_JS.as_bytes()),
};
const COUNT: Script = Script {
    body: COUNT_JS,
    version: version(COUNT_JS.as_bytes()),
};
const FRAME: Script = Script {
    body: FRAME_JS,
    version: version(FRAME_JS.as_bytes()),
};

/// The embed routes, with CORS on the two read-only ones that host pages fetch.
pub fn router(allowed_origins: &[String]) -> Router<AppState> {
    let allowed: Vec<HeaderValue> = allowed_origins
        .iter()
        .filter_map(|o| normalise_origin(o))
        .filter_map(|o| HeaderValue::from_str(&o).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_methods([Method::GET, Method::HEAD])
        .allow_origin(AllowOrigin::predicate(
            move |origin: &HeaderValue, parts: &Parts| {
                cors_endpoint(parts.uri.path()) && allowed.contains(origin)
            },
        ))
        .max_age(Duration::from_secs(3600));
    let read_only = Router::new()
        .route("/api/counts", get(counts))
        .route("/embed/t/{key}", get(thread))
        .layer(cors);
    let login = Router::new().route("/embed/login", get(login));
    let scripts = Router::new()
        .route(
            "/embed.js",
            get(|h: HeaderMap, q: Query<V>| script(&EMBED, h, q)),
        )
        .route(
            "/count.js",
            get(|h: HeaderMap, q: Query<V>| script(&COUNT, h, q)),
        )
        .route(
            "/embed/frame.js",
            get(|h: HeaderMap, q: Query<V>| script(&FRAME, h, q)),
        );
    read_only.merge(login).merge(scripts)
}

/// The endpoints other sites' scripts may read: the counts and the HTML fragment.
fn cors_endpoint(path: &str) -> bool {
    path == "/api/counts" || (path.starts_with("/embed/t/") && path.ends_with(".html"))
}

/// `SameSite` and friends for cookies that must also work inside a frame on another site:
/// with https, `SameSite=None; Secure; Partitioned` (CHIPS: the browser keeps a separate jar
/// per embedding site, so nothing is shared across sites); without https a `SameSite=None`
/// cookie would be refused, so plain `SameSite=Lax` (and embeds fall back to the token the
/// frame keeps itself).
pub fn cookie_site_attributes(https: bool) -> &'static str {
    if https {
        "SameSite=None; Secure; Partitioned"
    } else {
        "SameSite=Lax"
    }
}

/// What every HTML page says about being framed.
#[derive(Clone)]
pub struct FramePolicy {
    /// `frame-ancestors` for `/embed/*`: this site and `[embed] allowed_origins`.
    embed: HeaderValue,
}

impl FramePolicy {
    pub fn new(allowed_origins: &[String]) -> FramePolicy {
        let mut directive = String::from("frame-ancestors 'self'");
        for o in allowed_origins.iter().filter_map(|o| normalise_origin(o)) {
            directive.push(' ');
            directive.push_str(&o);
        }
        FramePolicy {
            embed: HeaderValue::from_str(&directive)
                .unwrap_or(HeaderValue::from_static("frame-ancestors 'self'")),
        }
    }
}

/// Adds the frame rules to HTML responses: `/embed/*` may be framed by the allowed origins;
/// every other page only by this site (`frame-ancestors 'self'`, and `X-Frame-Options` for
/// browsers that predate CSP). A CSP another layer set is kept and extended.
pub async fn frame_headers(
    State(policy): State<Arc<FramePolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let embed = req.uri().path().starts_with("/embed/");
    let mut resp = next.run(req).await;
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !html {
        return resp;
    }
    let directive = if embed {
        policy.embed.clone()
    } else {
        HeaderValue::from_static("frame-ancestors 'self'")
    };
    let headers = resp.headers_mut();
    let csp = match headers
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
    {
        Some(existing) => {
            HeaderValue::from_str(&format!("{existing}; {}", directive.to_str().unwrap_or("")))
                .unwrap_or(directive)
        }
        None => directive,
    };
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    if !embed {
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
    }
    resp
}

/// `?v=` on a script URL.
#[derive(Deserialize)]
struct V {
    v: Option<String>,
}

/// Serves a script: for a year under its current `?v=`, for an hour under the bare URL (so
/// a snippet's `/embed.js` picks up an upgrade), and a stale `?v=` is sent to the current.
async fn script(s: &'static Script, headers: HeaderMap, Query(q): Query<V>) -> Response {
    let current = format!("{:x}", s.version);
    let cache = match q.v.as_deref() {
        None => "public, max-age=3600",
        Some(v) if v == current => super::assets::IMMUTABLE,
        Some(_) => {
            return Redirect::temporary(&format!("?v={current}")).into_response();
        }
    };
    let etag = format!("\"{current}\"");
    let mut resp = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            s.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Whether `If-None-Match` names `etag` (or `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

#[derive(Deserialize)]
struct CountsQuery {
    threads: Option<String>,
}

/// `GET /api/counts?threads=a,b,c`: `{"counts":{"a":3,"b":0,"c":0}}`, published comments
/// only, with an ETag so a host page's repeat visits cost a 304.
async fn counts(
    State(state): State<AppState>,
    Query(q): Query<CountsQuery>,
    headers: HeaderMap,
) -> Response {
    let mut keys: Vec<String> = Vec::new();
    for k in q.threads.as_deref().unwrap_or("").split(',').map(str::trim) {
        if !k.is_empty() && !keys.iter().any(|seen| seen == k) {
            keys.push(k.to_owned());
        }
    }
    let counts = match state.engine.public_counts(&keys).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let body = serde_json::json!({ "counts": counts }).to_string();
    let digest = Sha256::digest(body.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut resp = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let h = resp.headers_mut();
    // Shared caches may keep it briefly; after that the ETag makes revalidation cheap.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=30"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// What embed.js puts in the frame's URL (theme and style values are read by the page).
#[derive(Deserialize)]
struct EmbedQuery {
    origin: Option<String>,
    url: Option<String>,
    title: Option<String>,
}

/// The page refusing a frame URL that names a site which may not embed us.
fn not_allowed() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><title>Not allowed</title><p>This site is not allowed to embed \
         these comments. Staff can add it to <code>[embed] allowed_origins</code>.</p>",
    )
        .into_response()
}

/// `GET /embed/login`: staff sign-in inside the frame.
async fn login(
    State(state): State<AppState>,
    Query(q): Query<EmbedQuery>,
    req: Request<Body>,
) -> Response {
    if q.origin
        .as_deref()
        .is_some_and(|o| !state.engine.embed_allows(o))
    {
        return not_allowed();
    }
    super::pages::render(State(state), req).await
}

/// With an https public URL, a staff session started inside a frame on another site (the
/// sign-in at `/embed/login`, and every later request from the frame) gets the cookie
/// attributes a third-party frame needs: `SameSite=None; Secure; Partitioned`, so the
/// browser keeps it in that embedding site's jar only. First-party sessions stay `Lax`.
pub async fn embed_session_cookie(State(https): State<bool>, req: Request, next: Next) -> Response {
    let framed = https && from_frame(req.uri().path(), req.headers());
    let mut resp = next.run(req).await;
    if !framed {
        return resp;
    }
    let prefix = format!("{}=", super::SESSION_COOKIE);
    let cookies: Vec<HeaderValue> = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if !cookies
        .iter()
        .any(|c| c.as_bytes().starts_with(prefix.as_bytes()))
    {
        return resp;
    }
    resp.headers_mut().remove(header::SET_COOKIE);
    for c in cookies {
        let value = match c.to_str() {
            // The session layer already marks it Secure (the public URL is https).
            Ok(s) if s.starts_with(&prefix) => {
                HeaderValue::from_str(&s.replace("SameSite=Lax", "SameSite=None; Partitioned"))
                    .unwrap_or(c)
            }
            _ => c,
        };
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
    resp
}

/// Whether a request comes from our page inside a frame: the framed pages themselves, or
/// a same-origin request sent by one (its `Referer` is the framed page).
fn from_frame(path: &str, headers: &HeaderMap) -> bool {
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if path.starts_with("/embed/") {
        return true;
    }
    let same_origin =
        get(header::HeaderName::from_static("sec-fetch-site")).is_none_or(|s| s == "same-origin");
    same_origin
        && get(header::REFERER)
            .and_then(|r| url::Url::parse(r).ok())
            .is_some_and(|u| u.path().starts_with("/embed/"))
}

/// `GET /embed/t/{key}`: the framed thread view; `GET /embed/t/{key}.html`: its fragment.
async fn thread(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<EmbedQuery>,
    ClientAddr(client): ClientAddr,
    req: Request<Body>,
) -> Response {
    if let Some(stem) = key.strip_suffix(".html") {
        return fragment(&state, stem, req.headers()).await;
    }
    // The frame posts its height to this origin: it must be one that may frame us.
    if q.origin
        .as_deref()
        .is_some_and(|o| !state.engine.embed_allows(o))
    {
        return not_allowed();
    }
    // Only a browser framing this page may create its thread: the framing page's origin is
    // what the browser itself puts in Referer (no script can change it), and a top-level
    // visit or a fetch says so in Sec-Fetch-Dest.
    let headers = req.headers();
    let framed = headers
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|d| d == "iframe");
    let referer_origin = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::engine::embed::origin_of);
    if framed {
        let ask = EmbedRequest {
            key: &key,
            title: q.title.as_deref(),
            url: q.url.as_deref(),
            framing_origin: referer_origin.as_deref(),
            client,
        };
        match state.engine.thread_for_embed(&ask).await {
            Ok(EmbedThread::Refused(why)) => {
                tracing::debug!(key = %key, why = %why, "embed did not create a thread");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "embed thread lookup failed"),
        }
    }
    super::pages::render(State(state), req).await
}

/// The public thread as an HTML fragment for a static site or a proxy to include.
async fn fragment(state: &AppState, key: &str, headers: &HeaderMap) -> Response {
    let public = &state.engine.config().site.public_url;
    let site = if public.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    } else {
        public.clone()
    };
    match state.engine.thread_fragment(key, &site).await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=60"),
                // Markup only: opened directly, nothing in it may run or load.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'self' 'unsafe-inline'",
                ),
            ],
            html,
        )
            .into_response(),
        Err(Error::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<p>No such thread.</p>",
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_counts_and_fragments_are_cors_endpoints() {
        assert!(cors_endpoint("/api/counts"));
        assert!(cors_endpoint("/embed/t/post.html"));
        assert!(!cors_endpoint("/embed/t/post"));
        assert!(!cors_endpoint("/api/threads/post"));
        assert!(!cors_endpoint("/api/threads/post/comments"));
    }

    #[test]
    fn if_none_match_accepts_lists_and_weak_tags() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, "\"a\", W/\"b\"".parse().unwrap());
        assert!(if_none_match(&h, "\"b\""));
        assert!(!if_none_match(&h, "\"c\""));
    }
}
