//! Staff endpoints: signing in and out, the moderation queue, actions and the audit log.

use super::api::ApiError;
use super::{AppState, viewer};
use crate::comment::Viewer;
use app::model::{
    AuditResponse, BulkModerateRequest, BulkModerateResponse, Comment, ModerateRequest,
    QueueResponse, SignIn, ViewerInfo,
};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use tower_sessions::Session;

/// The staff and session routes under `/api`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", get(current).post(sign_in).delete(sign_out))
        .route("/moderation/queue", get(queue))
        .route("/moderation/audit", get(audit))
        .route("/moderation/bulk", post(bulk))
        .route("/comments/{id}/moderate", post(moderate))
        .route("/spam", get(spam_status))
        .route("/spam/retrain", post(spam_retrain))
}

async fn spam_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Json<app::model::SpamStatus>, ApiError> {
    staff(&state, &headers, &session).await?;
    state
        .engine
        .spam
        .status(&state.engine.store)
        .await
        .map(Json)
        .map_err(|e| crate::engine::EngineError::Invalid(e.to_string()).into())
}

async fn spam_retrain(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Json<app::model::SpamTraining>, ApiError> {
    let v = staff(&state, &headers, &session).await?;
    let training = state
        .engine
        .spam
        .retrain(&state.engine.store, None, |_, _| {})
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "spam retrain failed");
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "retraining failed".into(),
            )
        })?;
    tracing::info!(by = v.name().unwrap_or(""), source = %training.source, "spam filter retrained");
    let store = &state.engine.store;
    let written = async {
        let mut tx = store.pool.begin().await?;
        let events =
            crate::events::write(&mut tx, vec![crate::events::filter_retrained(&training)]).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(events)
    }
    .await;
    match written {
        Ok(events) => events.into_iter().for_each(|e| state.engine.hub.publish(e)),
        Err(e) => tracing::error!(error = %e, "could not record the retrain event"),
    }
    Ok(Json(training))
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(t)| t)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))
}

/// Staff only: 401 without credentials, 403 for a signed-in user who is not staff.
async fn staff(
    state: &AppState,
    headers: &HeaderMap,
    session: &Session,
) -> Result<Viewer, ApiError> {
    match viewer(state, headers, session).await? {
        v @ Viewer::Staff { .. } => Ok(v),
        Viewer::User { .. } => Err(ApiError(StatusCode::FORBIDDEN, "staff only".into())),
        Viewer::Reader => Err(ApiError(StatusCode::UNAUTHORIZED, "sign in first".into())),
    }
}

fn info(v: &Viewer) -> ViewerInfo {
    ViewerInfo {
        name: v.name().map(str::to_owned),
        staff: v.is_staff(),
    }
}

async fn current(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Json<ViewerInfo>, ApiError> {
    Ok(Json(info(&viewer(&state, &headers, &session).await?)))
}

/// Reads sign-in fields from JSON, or from a form-encoded post (no JavaScript), which also
/// names where to go next.
fn sign_in_fields(headers: &HeaderMap, body: &[u8]) -> Result<(SignIn, Option<String>), ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let next = get("next")
            .filter(|n| n.starts_with('/') && !n.starts_with("//"))
            .unwrap_or_else(|| "/moderation".into());
        return Ok((
            SignIn {
                username: get("username").unwrap_or_default(),
                password: get("password").unwrap_or_default(),
            },
            Some(next),
        ));
    }
    serde_json::from_slice(body)
        .map(|s| (s, None))
        .map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid JSON: {e}"),
            )
        })
}

async fn sign_in(
    State(state): State<AppState>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    session: Session,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (creds, next) = sign_in_fields(&headers, &body)?;
    let outcome = sign_in_inner(&state, connect, &session, creds).await;
    match (next, outcome) {
        (None, r) => r,
        (Some(next), Ok(resp)) if resp.status().is_success() => {
            Ok(axum::response::Redirect::to(&next).into_response())
        }
        (Some(_), Ok(resp)) => Ok(resp),
        (Some(next), Err(ApiError(_, msg))) => {
            let q = serde_urlencoded::to_string([("error", msg.as_str()), ("next", next.as_str())])
                .unwrap_or_default();
            Ok(axum::response::Redirect::to(&format!("/login?{q}")).into_response())
        }
    }
}

async fn sign_in_inner(
    state: &AppState,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    session: &Session,
    creds: SignIn,
) -> Result<Response, ApiError> {
    if let Some(axum::Extension(ConnectInfo(addr))) = connect
        && let Err(not_until) = state.sign_in_limiter.check_key(&addr.ip())
    {
        let wait = not_until
            .wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
            .as_secs()
            .max(1);
        let mut resp = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sign-in attempts; wait a minute".into(),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    let user =
        crate::auth::check_credentials(&state.engine.store, &creds.username, &creds.password)
            .await
            .map_err(crate::engine::EngineError::from)?;
    let Some(user) = user else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "invalid username or password".into(),
        ));
    };
    // A new session id at sign-in, so an id planted before sign-in is worthless after it.
    session
        .cycle_id()
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    session
        .insert(crate::auth::USER_ID_KEY, user.id)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(info(&crate::auth::viewer_of(user))).into_response())
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, ApiError> {
    if viewer(&state, &headers, &session).await? == Viewer::Reader {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "not signed in".into()));
    }
    session
        .flush()
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(ViewerInfo::default()).into_response())
}

#[derive(Deserialize)]
struct QueueQuery {
    status: Option<String>,
    page: Option<i64>,
}

async fn queue(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Query(q): Query<QueueQuery>,
) -> Result<Json<QueueResponse>, ApiError> {
    let v = staff(&state, &headers, &session).await?;
    let filter = q.status.as_deref().unwrap_or("held");
    Ok(Json(
        state.engine.queue(filter, q.page.unwrap_or(1), &v).await?,
    ))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<i64>,
}

async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    Query(q): Query<PageQuery>,
) -> Result<Json<AuditResponse>, ApiError> {
    staff(&state, &headers, &session).await?;
    Ok(Json(state.engine.audit(q.page.unwrap_or(1)).await?))
}

async fn moderate(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    session: Session,
    body: Result<Json<ModerateRequest>, JsonRejection>,
) -> Result<Json<Comment>, ApiError> {
    let v = staff(&state, &headers, &session).await?;
    let req = json_body(body)?;
    let mut updated = state.engine.moderate(&[id], req.action, &v).await?;
    updated
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not found".into()))
}

async fn bulk(
    State(state): State<AppState>,
    headers: HeaderMap,
    session: Session,
    body: Result<Json<BulkModerateRequest>, JsonRejection>,
) -> Result<Json<BulkModerateResponse>, ApiError> {
    let v = staff(&state, &headers, &session).await?;
    let req = json_body(body)?;
    if req.ids.is_empty() || req.ids.len() > 500 {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ids: give 1 to 500 comment ids".into(),
        ));
    }
    Ok(Json(BulkModerateResponse {
        comments: state.engine.moderate(&req.ids, req.action, &v).await?,
    }))
}
