//! The public JSON API under `/api`.

use super::AppState;
use crate::engine::{EngineError, PostOutcome};
use app::model::{PostAction, PostComment, PostResponse, ThreadList};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use tower_sessions::Session;

/// The public `/api` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/threads", get(list_threads))
        .route("/threads/{key}", get(get_thread))
        .route("/threads/{key}/page", get(get_page))
        .route("/threads/{key}/form", get(get_form))
        .route("/threads/{key}/comments", axum::routing::post(post_comment))
}

/// An API error: a status and `{"error": message}`. Internal details are logged, not sent.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound => ApiError(StatusCode::NOT_FOUND, "not found".into()),
            EngineError::Invalid(msg) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, msg),
            EngineError::Config(e) => {
                tracing::error!(error = %e, "configuration error");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
            EngineError::Store(e) => {
                tracing::error!(error = %e, "storage failed");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

async fn list_threads(State(state): State<AppState>) -> Result<Json<ThreadList>, ApiError> {
    Ok(Json(ThreadList {
        threads: state.engine.threads().await?,
    }))
}

#[derive(Deserialize)]
struct PageQuery {
    /// Cursor from a previous page's `next`.
    after: Option<String>,
    /// `paged=1` asks for the first page only (as the thread view shows it).
    paged: Option<String>,
}

async fn get_thread(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ApiError> {
    let viewer = super::viewer(&state, &headers, &session).await?;
    let paged = q.after.is_some() || q.paged.as_deref().is_some_and(|p| p != "0");
    let data = state
        .engine
        .thread_response(&key, q.after.as_deref(), paged, &viewer)
        .await?;
    Ok(Json(data).into_response())
}

async fn get_page(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ApiError> {
    let viewer = super::viewer(&state, &headers, &session).await?;
    let page = state
        .engine
        .thread_page(&key, q.after.as_deref(), &viewer)
        .await?;
    Ok(Json(page).into_response())
}

async fn get_form(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let token = state.engine.form_token(&key).await?;
    // Each token is single-use: never let a cache hand one out twice.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(token)).into_response())
}

fn client_ip(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn is_form_encoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn bad_request(key: &str, status: StatusCode, msg: &str) -> Response {
    let body = PostResponse::error(key, PostAction::Post, "__all__", msg);
    (status, Json(body)).into_response()
}

/// Reads the same fields from a form-encoded body (no JavaScript).
fn parse_form(bytes: &[u8]) -> Result<PostComment, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(bytes).map_err(|e| format!("Invalid form data: {e}"))?;
    let mut req = PostComment::default();
    for (k, v) in pairs {
        match k.as_str() {
            "name" => req.name = v,
            "email" => req.email = Some(v),
            "url" => req.url = Some(v),
            "title" => req.title = Some(v),
            "body" => req.body = v,
            "form_token" => req.form_token = Some(v),
            "honeypot" => req.honeypot = Some(v),
            "preview" => req.preview = matches!(v.as_str(), "1" | "true" | "on"),
            "parent_id" if v.trim().is_empty() => {}
            "parent_id" => {
                req.parent_id = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| "parent_id must be a comment id".to_owned())?,
                )
            }
            _ => {}
        }
    }
    Ok(req)
}

async fn post_comment(
    State(state): State<AppState>,
    Path(key): Path<String>,
    session: Session,
    req: Request<Body>,
) -> Response {
    let viewer = match super::viewer(&state, req.headers(), &session).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let limit = state.engine.config.limits.max_body_bytes;
    let ip = client_ip(&req);
    let headers = req.headers().clone();
    let form = is_form_encoded(req.headers());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        bad_request(
            &key,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("The request is larger than {limit} bytes."),
        )
    };
    // Refuse oversized bodies before reading them, let alone parsing them.
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), limit).await else {
        return too_large();
    };
    if std::str::from_utf8(&bytes).is_err() {
        return bad_request(
            &key,
            StatusCode::BAD_REQUEST,
            "The request is not valid UTF-8.",
        );
    }
    let parsed = if form {
        parse_form(&bytes).map_err(|m| (StatusCode::UNPROCESSABLE_ENTITY, m))
    } else {
        serde_json::from_slice::<PostComment>(&bytes).map_err(|e| {
            let status = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, format!("Invalid JSON: {e}"))
        })
    };
    let post = match parsed {
        Ok(p) => p,
        Err((status, msg)) if form => return form_redirect(&key, None, Some(&msg), status),
        Err((status, msg)) => return bad_request(&key, status, &msg),
    };
    // The author token lets this browser see its own held comment on the live socket.
    // Framed on another site whose browser blocks third-party cookies, the frame sends the
    // token it kept itself instead.
    let kept = headers
        .get(app::embed::AUTHOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| app::embed::valid_author_token(t))
        .map(str::to_owned);
    let (author, new_author) = match cookie(&headers, AUTHOR_COOKIE).or(kept) {
        Some(t) => (t, false),
        None => (crate::token::random_token(18), true),
    };
    let outcome = match state
        .engine
        .post(&key, &post, &viewer, ip, Some(&author))
        .await
    {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut resp = respond(&key, form, outcome);
    if new_author && (resp.status().is_success() || resp.status().is_redirection()) {
        let https = state.engine.config.site.public_url.starts_with("https://");
        let value = format!(
            "{AUTHOR_COOKIE}={author}; Path=/; HttpOnly; Max-Age=31536000; {}",
            super::embed::cookie_site_attributes(https)
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        // Also in the answer itself, for a frame whose browser drops the cookie.
        if let Ok(v) = HeaderValue::from_str(&author) {
            resp.headers_mut().insert(app::embed::AUTHOR_HEADER, v);
        }
    }
    resp
}

/// The cookie naming a browser as the author of its comments (for live updates).
pub const AUTHOR_COOKIE: &str = "moderato_author";

/// A cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

fn respond(key: &str, form: bool, outcome: PostOutcome) -> Response {
    if form {
        let message = outcome.response.errors.values().next().map(String::as_str);
        let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
        return form_redirect(key, outcome.response.comment_id, message, status);
    }
    json_outcome(outcome)
}

fn json_outcome(outcome: PostOutcome) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Json(outcome.response)).into_response();
    if let Some(secs) = outcome.retry_after_secs
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Answers a form-encoded post with a 303 back to the thread: to the new comment, or to the
/// form with the first error shown above it. A 404 or 429 stays what it is.
fn form_redirect(
    key: &str,
    comment_id: Option<i64>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    if status == StatusCode::NOT_FOUND || status == StatusCode::TOO_MANY_REQUESTS {
        return (status, error.unwrap_or("").to_owned()).into_response();
    }
    let base = format!("/t/{}", app::api::encode_key(key));
    let location = match (comment_id, error) {
        (Some(id), _) => format!("{base}#c{id}"),
        (None, Some(msg)) => format!(
            "{base}?{}#comment-form",
            serde_urlencoded::to_string([("error", msg)]).unwrap_or_default()
        ),
        (None, None) => base,
    };
    Redirect::to(&location).into_response()
}
