//! Server-side rendering of the Leptos pages, with the engine provided in context.

use super::AppState;
use crate::comment::Viewer;
use crate::engine::{Engine, EngineError};
use app::api::{Backend, SharedBackend};
use app::model::{ApiError, AuditResponse, QueueResponse, ThreadInfo, ThreadPage, ViewerInfo};
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::Response;
use leptos::prelude::provide_context;
use std::sync::Arc;

/// The engine as one request's viewer may use it.
struct RequestBackend {
    engine: Arc<Engine>,
    viewer: Viewer,
}

fn api_error(e: EngineError) -> ApiError {
    match e {
        EngineError::NotFound => ApiError::NotFound,
        EngineError::Invalid(msg) => ApiError::Other(msg),
        other => {
            tracing::error!(error = %other, "page data failed");
            ApiError::Other("the server could not load this page".into())
        }
    }
}

#[async_trait::async_trait]
impl Backend for RequestBackend {
    async fn threads(&self) -> Result<Vec<ThreadInfo>, ApiError> {
        self.engine.threads().await.map_err(api_error)
    }

    async fn thread_page(&self, key: &str, after: Option<&str>) -> Result<ThreadPage, ApiError> {
        self.engine
            .thread_page(key, after, &self.viewer)
            .await
            .map_err(api_error)
    }

    async fn viewer(&self) -> ViewerInfo {
        ViewerInfo {
            name: self.viewer.name().map(str::to_owned),
            staff: self.viewer.is_staff(),
        }
    }

    async fn queue(&self, status: &str, page: i64) -> Result<QueueResponse, ApiError> {
        if !self.viewer.is_staff() {
            return Err(ApiError::Forbidden);
        }
        self.engine
            .queue(status, page, &self.viewer)
            .await
            .map_err(api_error)
    }

    async fn spam_status(&self) -> Result<app::model::SpamStatus, ApiError> {
        if !self.viewer.is_staff() {
            return Err(ApiError::Forbidden);
        }
        self.engine
            .spam
            .status(&self.engine.store)
            .await
            .map_err(|e| api_error(EngineError::Invalid(e.to_string())))
    }

    async fn audit(&self, page: i64) -> Result<AuditResponse, ApiError> {
        if !self.viewer.is_staff() {
            return Err(ApiError::Forbidden);
        }
        self.engine.audit(page).await.map_err(api_error)
    }
}

/// Renders any Leptos route, as the request's viewer may see it.
pub async fn render(
    State(state): State<AppState>,
    session: tower_sessions::Session,
    req: Request<Body>,
) -> Response {
    // A bad API key on a page request just renders the public page.
    let viewer = super::viewer(&state, req.headers(), &session)
        .await
        .unwrap_or(Viewer::Reader);
    let backend: SharedBackend = Arc::new(RequestBackend {
        engine: state.engine.clone(),
        viewer,
    });
    let options = state.leptos_options.clone();
    let handler = leptos_axum::render_route_with_context(
        state.routes.as_ref().clone(),
        move || provide_context(backend.clone()),
        move || app::shell(options.clone()),
    );
    handler(State(state), req).await
}
