//! The HTTP surface: the JSON API, the server-rendered pages and static files.

mod api;
mod assets;
mod cache;
mod embed;
mod error;
mod extract;
mod mail;
mod pages;
mod serve;
mod staff;
mod ws;

pub use serve::{ServeLimits, serve};

use crate::engine::Engine;
use crate::error::Error;
use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use leptos::prelude::LeptosOptions;
use leptos_axum::{AxumRouteListing, LeptosRoutes, generate_route_list};
use std::sync::Arc;
use std::time::Duration;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

/// What every handler can reach. Axum clones the state for every request: behind one `Arc`
/// that is a reference count, not a copy of the Leptos options' strings and five more
/// counts (about 2 % of the server's CPU under posting load, in `perf`).
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub leptos_options: LeptosOptions,
    pub routes: Arc<Vec<AxumRouteListing>>,
    /// Whose forwarding headers name the client (`[site] trusted_proxies`).
    pub proxies: Arc<crate::net::TrustedProxies>,
    /// The anonymous view of threads (`[cache]`), or `None` when switched off.
    pub page_cache: Option<Arc<cache::PageCache>>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// Leptos options for a site built into `site_root` by `scripts/build.sh`.
///
/// That build names its files by content (`pkg/moderato.HASH.js`) and lists the hashes in
/// `pkg/hash.txt`; Leptos looks that file up relative to the running binary unless the
/// path is absolute, so it is given absolutely. A site without `hash.txt` (built some
/// other way, or none in tests) is served under the plain names.
pub fn leptos_options(site_root: &str) -> LeptosOptions {
    let builder = LeptosOptions::builder()
        .output_name("moderato")
        .site_root(site_root)
        .site_pkg_dir("pkg");
    let hash_file = std::path::Path::new(site_root).join("pkg").join("hash.txt");
    match std::path::absolute(&hash_file) {
        Ok(path) if path.is_file() => builder
            .hash_files(true)
            .hash_file(path.to_string_lossy().as_ref().into())
            .build(),
        _ => builder.build(),
    }
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "moderato_session";

/// Per accepted connection: turn Nagle's algorithm off. Live events are small writes that
/// must leave at once; with Nagle on, an event sent while the previous one is not yet
/// acknowledged waits for that ACK, which the browser may delay by up to 40 ms.
pub fn low_latency(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// The app's routes, generated once per process.
///
/// Generating them runs the app with resource loading suppressed by a process-wide flag
/// (leptos-rs/leptos#4773): a page rendered on another thread meanwhile would wait forever
/// on its first resource. Routers built later (several per test binary) reuse this list,
/// and a render can only start once some router, hence this list, exists.
fn route_list() -> &'static Vec<AxumRouteListing> {
    static ROUTES: std::sync::OnceLock<Vec<AxumRouteListing>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(app::App))
}

/// The whole application.
pub fn router(engine: Arc<Engine>, leptos_options: LeptosOptions) -> Router {
    let routes = route_list().clone();
    let body_timeout = Duration::from_secs(engine.config().limits.body_timeout_secs.max(1));
    let secure = engine.config().site.public_url.starts_with("https://");
    let sessions = SessionManagerLayer::new(engine.session_store())
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(secure)
        .with_expiry(Expiry::OnInactivity(time::Duration::days(14)));
    let frame_policy = Arc::new(embed::FramePolicy::new(
        &engine.config().embed.allowed_origins,
    ));
    let embed_routes = embed::router(&engine.config().embed.allowed_origins);
    // The framed thread view has its own handler (it may create the thread first).
    let page_routes: Vec<AxumRouteListing> = routes
        .iter()
        .filter(|r| !r.path().starts_with("/embed/"))
        .cloned()
        .collect();
    let proxies = Arc::new(crate::net::TrustedProxies::new(
        &engine.config().site.trusted_proxies,
    ));
    let page_cache = cache::PageCache::new(engine.config().cache.pages_mb).map(Arc::new);
    let state = AppState(Arc::new(Shared {
        engine,
        leptos_options,
        routes: Arc::new(routes.clone()),
        proxies,
        page_cache,
    }));
    Router::new()
        .route("/health", get(health))
        .nest("/api", api::router().merge(staff::router()))
        .merge(embed_routes)
        .merge(mail::router())
        .leptos_routes_with_handler(page_routes, get(pages::render))
        // Static files, else the app's "not found" page, under the same nonce policy as
        // every other page (a static file gets none: it has no nonce).
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(pages::content_security_policy, app::shell))
        // Inside compression, so a kept view is compressed like a rendered one.
        .layer(middleware::from_fn_with_state(state.clone(), cache::serve))
        .layer(middleware::from_fn(assets::asset_headers))
        // Pages and JSON are compressed as they are sent (files come precompressed, and
        // are left alone); brotli at quality 4 costs about what gzip does, and saves more.
        .layer(CompressionLayer::new().quality(CompressionLevel::Precise(4)))
        // The live socket is not a body to compress.
        .route("/ws", get(ws::ws))
        .layer(middleware::from_fn(same_origin_only))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(sessions)
        .layer(middleware::from_fn_with_state(
            secure,
            embed::embed_session_cookie,
        ))
        .layer(middleware::from_fn_with_state(
            frame_policy,
            embed::frame_headers,
        ))
        .layer(middleware::from_fn(personal_responses_are_not_stored))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ))
        .with_state(state)
}

/// Pages and JSON differ per viewer (a staff view, an author's held comment, a fresh form
/// token), so neither a shared cache nor the browser's back-forward store may keep them,
/// unless the handler said otherwise (the counts, the scripts, static files).
async fn personal_responses_are_not_stored(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let personal = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html") || v.starts_with("application/json"));
    if personal && !resp.headers().contains_key(header::CACHE_CONTROL) {
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
    }
    resp
}

/// Refuses state-changing requests that a browser sent from another site (CSRF): the
/// browser's `Sec-Fetch-Site`, else `Origin`, must name this site. Clients that send
/// neither (curl, server-to-server API use) are not browsers and pass.
async fn same_origin_only(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || origin_is_own(req.headers()) {
        return next.run(req).await;
    }
    Error::Forbidden("This request came from another site and was refused.".into()).into_response()
}

/// True unless the headers show the request came from another origin.
pub(crate) fn origin_is_own(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        // "none": typed in the address bar or a bookmark; "same-origin": our own pages.
        return matches!(site, "same-origin" | "none");
    }
    match get(header::ORIGIN.as_str()) {
        None => true,
        Some(origin) => {
            let host = get(header::HOST.as_str()).unwrap_or("");
            let origin_host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .unwrap_or("");
            !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
        }
    }
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    if state.engine.healthy().await {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable"})),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_origin_requests_pass_and_cross_site_ones_do_not() {
        assert!(origin_is_own(&headers(&[])));
        assert!(origin_is_own(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(!origin_is_own(&headers(&[(
            "sec-fetch-site",
            "cross-site"
        )])));
        assert!(!origin_is_own(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(origin_is_own(&headers(&[
            ("host", "c.example:3000"),
            ("origin", "http://c.example:3000")
        ])));
        assert!(!origin_is_own(&headers(&[
            ("host", "c.example:3000"),
            ("origin", "https://evil.example")
        ])));
        assert!(!origin_is_own(&headers(&[
            ("host", "c.example"),
            ("origin", "null")
        ])));
    }
}
