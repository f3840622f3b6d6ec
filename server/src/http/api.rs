//! The public JSON API under `/api`: each handler parses, calls one use case, and maps the
//! result.

use super::AppState;
use super::error::Public;
use super::extract::{BodyRejection, ClientAddr, CurrentViewer, JsonOrForm};
use crate::engine::{PostOutcome, Posted};
use crate::error::{Error, Result};
use app::model::{
    FormToken, PostAction, PostComment, PostResponse, ThreadList, ThreadPage, ThreadResponse,
};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

/// The public `/api` routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/threads", get(list_threads))
        .route("/threads/{key}", get(get_thread))
        .route("/threads/{key}/page", get(get_page))
        .route("/threads/{key}/form", get(get_form))
        .route("/threads/{key}/comments", post(post_comment))
}

#[derive(Deserialize)]
struct ListQuery {
    /// From 1; a page past the end is empty.
    page: Option<String>,
}

async fn list_threads(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ThreadList>> {
    let page = match q.page.as_deref() {
        None => 1,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| Error::invalid("page", "The page must be a whole number from 1."))?,
    };
    Ok(Json(state.engine.threads(page).await?))
}

#[derive(Deserialize)]
struct PageQuery {
    /// Cursor from a previous page's `next`.
    after: Option<String>,
    /// `all=1` (staff only) asks for the whole thread in one answer.
    all: Option<String>,
}

/// One page of a thread (follow `next` for the rest), so no request makes the server
/// serialise a huge thread; staff may ask for all of it with `?all=1`.
async fn get_thread(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
    CurrentViewer(viewer): CurrentViewer,
) -> Result<Json<ThreadResponse>> {
    let all = q.all.as_deref().is_some_and(|a| a != "0");
    if all && !viewer.is_staff() {
        return Err(Error::Forbidden(
            "Only staff may read a whole thread at once (?all=1); follow `next` instead.".into(),
        ));
    }
    Ok(Json(
        state
            .engine
            .thread(&key, q.after.as_deref(), !all, &viewer)
            .await?,
    ))
}

async fn get_page(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
    CurrentViewer(viewer): CurrentViewer,
) -> Result<Json<ThreadPage>> {
    Ok(Json(
        state
            .engine
            .thread_page(&key, q.after.as_deref(), &viewer)
            .await?,
    ))
}

async fn get_form(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<([(header::HeaderName, &'static str); 1], Json<FormToken>)> {
    let token = state.engine.form_token(&key).await?;
    // Each token is single-use: never let a cache hand one out twice.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(token)))
}

/// The cookie naming a browser as the author of its comments (for live updates).
pub(crate) const AUTHOR_COOKIE: &str = "moderato_author";

/// A cookie's value from the request headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
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

async fn post_comment(
    State(state): State<AppState>,
    Path(key): Path<String>,
    viewer: std::result::Result<CurrentViewer, Error>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    body: std::result::Result<JsonOrForm<PostComment>, BodyRejection>,
) -> Response {
    let (post, form) = match body {
        Ok(b) => (b.value, b.form),
        Err(r) => return respond(&key, r.form, Err(r.error)),
    };
    let viewer = match viewer {
        Ok(CurrentViewer(v)) => v,
        Err(e) => return respond(&key, form, Err(e)),
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
    let result = state
        .engine
        .post(&key, &post, &viewer, ip, Some(&author))
        .await;
    let mut resp = respond(&key, form, result);
    if new_author && (resp.status().is_success() || resp.status().is_redirection()) {
        let https = state
            .engine
            .config()
            .site
            .public_url
            .starts_with("https://");
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

/// A post's answer: JSON with the contract's status codes, or a redirect for a form post.
fn respond(key: &str, form: bool, result: Result<Posted>) -> Response {
    let (status, response, public) = match result {
        Ok(p) => {
            let status = match p.outcome {
                PostOutcome::Published => StatusCode::CREATED,
                PostOutcome::Held => StatusCode::ACCEPTED,
                PostOutcome::Preview => StatusCode::OK,
            };
            (status, p.response, None)
        }
        Err(e) => {
            let public = Public::of(&e);
            let mut r = PostResponse::new(key, PostAction::Post);
            r.errors = public.errors.clone();
            r.error = Some(public.message.clone());
            (public.status, r, Some(public))
        }
    };
    if form {
        let message = response.errors.values().next().map(String::as_str);
        return form_redirect(key, response.comment_id, message, status);
    }
    match public {
        Some(p) => p.respond(response),
        None => (status, Json(response)).into_response(),
    }
}

/// Answers a form-encoded post with a 303 back to the thread: to the new comment, or to the
/// form with the first error shown above it. A 404, 413 or 429 stays what it is.
fn form_redirect(
    key: &str,
    comment_id: Option<i64>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    if matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS
    ) {
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
