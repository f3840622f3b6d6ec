//! The HTTP surface: the JSON API, the server-rendered pages and static files.

pub mod api;
pub mod pages;

use crate::engine::Engine;
use axum::extract::FromRef;
use axum::routing::get;
use axum::{Json, Router};
use leptos::prelude::LeptosOptions;
use leptos_axum::{AxumRouteListing, LeptosRoutes, generate_route_list};
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub leptos_options: LeptosOptions,
    pub routes: Arc<Vec<AxumRouteListing>>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// Leptos options for a site built by cargo-leptos into `site_root`.
pub fn leptos_options(site_root: &str) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("moderato")
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .build()
}

/// The whole application.
pub fn router(engine: Arc<Engine>, leptos_options: LeptosOptions) -> Router {
    let routes = generate_route_list(app::App);
    let state = AppState {
        engine,
        leptos_options,
        routes: Arc::new(routes.clone()),
    };
    Router::new()
        .route("/health", get(health))
        .nest("/api", api::router(&state))
        .leptos_routes_with_handler(routes, get(pages::render))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            app::shell,
        ))
        .with_state(state)
}

async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    if state.engine.store.ping().await {
        (
            axum::http::StatusCode::OK,
            Json(serde_json::json!({"status": "ok"})),
        )
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable"})),
        )
    }
}
