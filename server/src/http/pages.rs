//! Server-side rendering of the Leptos pages, with the engine provided in context as the
//! request's viewer may use it.

use super::AppState;
use super::extract::CurrentViewer;
use crate::auth::Viewer;
use crate::engine::{Engine, require_staff, viewer_info};
use crate::error::Error;
use app::Bundle;
use app::api::{Backend, SharedBackend};
use app::model::{ApiError, AuditResponse, QueueResponse, ThreadList, ThreadPage, ViewerInfo};
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::Request;
use axum::response::Response;
use leptos::prelude::LeptosOptions;
use leptos::prelude::provide_context;
use std::sync::Arc;

/// The engine as one request's viewer may use it.
struct RequestBackend {
    engine: Arc<Engine>,
    viewer: Viewer,
    /// Where the page cache learns which form token this render embedded.
    issued: Option<super::cache::IssuedToken>,
}

/// What a page shows for an engine error.
fn api_error(e: Error) -> ApiError {
    match e {
        Error::NotFound(_) => ApiError::NotFound,
        Error::Forbidden(_) | Error::Unauthenticated(_) => ApiError::Forbidden,
        other => ApiError::Other(super::error::Public::of(&other).message),
    }
}

#[async_trait::async_trait]
impl Backend for RequestBackend {
    async fn threads(&self, page: i64) -> Result<ThreadList, ApiError> {
        self.engine.threads(page).await.map_err(api_error)
    }

    async fn thread_page(&self, key: &str, after: Option<&str>) -> Result<ThreadPage, ApiError> {
        let page = self
            .engine
            .thread_page(key, after, &self.viewer)
            .await
            .map_err(api_error)?;
        if let (Some(issued), Some(form)) = (&self.issued, &page.form) {
            issued.record(&page.data.thread.key, form);
        }
        Ok(page)
    }

    async fn viewer(&self) -> ViewerInfo {
        viewer_info(&self.viewer)
    }

    async fn queue(&self, status: &str, page: i64) -> Result<QueueResponse, ApiError> {
        let staff = require_staff(&self.viewer).map_err(api_error)?;
        self.engine
            .queue(staff, status, page)
            .await
            .map_err(api_error)
    }

    async fn spam_status(&self) -> Result<app::model::SpamStatus, ApiError> {
        let staff = require_staff(&self.viewer).map_err(api_error)?;
        self.engine.spam_status(staff).await.map_err(api_error)
    }

    async fn audit(&self, page: i64) -> Result<AuditResponse, ApiError> {
        let staff = require_staff(&self.viewer).map_err(api_error)?;
        self.engine.audit(staff, page).await.map_err(api_error)
    }
}

/// Sets this page's Content-Security-Policy: scripts only from this site or carrying the
/// page's nonce (Leptos puts it on its hydration and streaming scripts), so an injected
/// inline script does not run; wasm may compile; connections only back to this site
/// (the live socket included); no plugins, no `<base>`, forms post here. Styles may be
/// inline (the embed's theme variables). The frame rules are added by `embed::frame_headers`.
pub(crate) fn content_security_policy() {
    let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        leptos::prelude::use_context::<leptos_axum::ResponseOptions>(),
    ) else {
        return;
    };
    let host = leptos::prelude::use_context::<axum::http::request::Parts>()
        .and_then(|p| {
            p.headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
    let sockets = host
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'{sockets}; \
         object-src 'none'; base-uri 'none'; form-action 'self'",
        &*nonce
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&policy) {
        response.insert_header(axum::http::header::CONTENT_SECURITY_POLICY, v);
    }
}

/// The browser code a page gets: a reader's thread page (plain or framed) gets the light
/// reader client, which enhances the server-rendered HTML; staff, and every other page, get
/// the whole app. The staff pages' code thus never reaches a reader's first load. A site
/// built without the reader client (`cargo leptos build` makes only the whole app) serves
/// the whole app to readers too, as before it existed.
pub(crate) fn bundle_for(path: &str, viewer: &Viewer, options: &LeptosOptions) -> Bundle {
    let thread_page = path.starts_with("/t/") || path.starts_with("/embed/t/");
    if thread_page && !viewer.is_staff() && reader_client_built(options) {
        Bundle::Reader
    } else {
        Bundle::Full
    }
}

/// Whether `scripts/build.sh` put the reader client in the site: named in `hash.txt` (read
/// once per process, as Leptos reads it), or, on a site without hashed names, its file.
fn reader_client_built(options: &LeptosOptions) -> bool {
    static HASHED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if options.hash_files {
        return *HASHED.get_or_init(|| {
            std::fs::read_to_string(&*options.hash_file).is_ok_and(|text| {
                text.lines().any(|l| {
                    l.split_once(':')
                        .is_some_and(|(k, _)| k.trim() == "reader_wasm")
                })
            })
        });
    }
    std::path::Path::new(&*options.site_root)
        .join(&*options.site_pkg_dir)
        .join("reader_bg.wasm")
        .is_file()
}

/// Renders any Leptos route, as the request's viewer may see it.
pub(crate) async fn render(State(state): State<AppState>, req: Request<Body>) -> Response {
    let (mut parts, body) = req.into_parts();
    // A bad API key on a page request just renders the public page.
    let viewer = CurrentViewer::from_request_parts(&mut parts, &state)
        .await
        .map(|CurrentViewer(v)| v)
        .unwrap_or(Viewer::Reader);
    let bundle = bundle_for(parts.uri.path(), &viewer, &state.leptos_options);
    let issued = parts.extensions.get::<super::cache::IssuedToken>().cloned();
    let req = Request::from_parts(parts, body);
    let backend: SharedBackend = Arc::new(RequestBackend {
        engine: state.engine.clone(),
        viewer,
        issued,
    });
    let options = state.leptos_options.clone();
    let handler = leptos_axum::render_route_with_context(
        state.routes.as_ref().clone(),
        move || {
            provide_context(backend.clone());
            provide_context(bundle);
            content_security_policy();
        },
        move || app::shell(options.clone()),
    );
    handler(State(state), req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Staff;

    #[test]
    fn only_readers_thread_pages_get_the_light_client_when_the_site_has_it() {
        let site = tempfile::tempdir().unwrap();
        let options = |site: &std::path::Path| {
            LeptosOptions::builder()
                .output_name("moderato")
                .site_root(site.to_string_lossy().as_ref())
                .site_pkg_dir("pkg")
                .build()
        };
        let reader = Viewer::Reader;
        // Built without it (cargo leptos): everyone gets the whole app.
        let without = options(site.path());
        assert_eq!(bundle_for("/t/welcome", &reader, &without), Bundle::Full);

        std::fs::create_dir_all(site.path().join("pkg")).unwrap();
        std::fs::write(site.path().join("pkg/reader_bg.wasm"), b"\0asm").unwrap();
        let with = options(site.path());
        let user = Viewer::User {
            id: 1,
            name: "ann".into(),
        };
        let staff = Viewer::Staff(Staff::operator());
        assert_eq!(bundle_for("/t/welcome", &reader, &with), Bundle::Reader);
        assert_eq!(
            bundle_for("/embed/t/welcome", &reader, &with),
            Bundle::Reader
        );
        assert_eq!(bundle_for("/t/welcome", &user, &with), Bundle::Reader);
        assert_eq!(bundle_for("/t/welcome", &staff, &with), Bundle::Full);
        assert_eq!(bundle_for("/embed/t/welcome", &staff, &with), Bundle::Full);
        for path in [
            "/",
            "/login",
            "/embed/login",
            "/moderation",
            "/moderation/spam",
        ] {
            assert_eq!(bundle_for(path, &reader, &with), Bundle::Full, "{path}");
        }
    }
}
