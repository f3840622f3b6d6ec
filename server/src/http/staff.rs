//! Staff endpoints: signing in and out, the moderation queue, actions, the audit log and the
//! spam filter. Authorisation is the `StaffOnly` extractor; the use cases take its proof.

use super::AppState;
use super::extract::{
    BodyRejection, ClientAddr, CurrentViewer, JsonBody, JsonOrForm, SignInRequest, StaffOnly,
};
use crate::auth::{USER_ID_KEY, Viewer};
use crate::engine::viewer_info;
use crate::error::{Error, Result};
use app::model::{
    AuditResponse, BulkModerateRequest, BulkModerateResponse, Comment, ModerateRequest,
    QueueResponse, SpamStatus, SpamTraining, ViewerInfo, safe_next,
};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tower_sessions::Session;

/// The staff and session routes under `/api`.
pub(crate) fn router() -> Router<AppState> {
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
    StaffOnly(staff): StaffOnly,
) -> Result<Json<SpamStatus>> {
    Ok(Json(state.engine.spam_status(&staff).await?))
}

async fn spam_retrain(
    State(state): State<AppState>,
    StaffOnly(staff): StaffOnly,
) -> Result<Json<SpamTraining>> {
    Ok(Json(
        state.engine.retrain_spam(&staff, None, |_, _| {}).await?,
    ))
}

async fn current(CurrentViewer(viewer): CurrentViewer) -> Json<ViewerInfo> {
    Json(viewer_info(&viewer))
}

fn session_failed(e: tower_sessions::session::Error) -> Error {
    Error::Internal(format!("session store: {e}"))
}

async fn sign_in(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    session: Session,
    body: std::result::Result<JsonOrForm<SignInRequest>, BodyRejection>,
) -> Response {
    let (req, form) = match body {
        Ok(b) => (b.value, b.form),
        Err(r) => return r.error.into_response(),
    };
    let result = async {
        let (user_id, viewer) = state
            .engine
            .sign_in(&req.username, &req.password, ip)
            .await?;
        // A new session id at sign-in, so an id planted before sign-in is worthless after it.
        session.cycle_id().await.map_err(session_failed)?;
        session
            .insert(USER_ID_KEY, user_id)
            .await
            .map_err(session_failed)?;
        Ok::<_, Error>(viewer)
    }
    .await;
    // The login page's form (no JavaScript) is answered with a redirect either way.
    if form {
        let next = safe_next(req.next.as_deref());
        return match result {
            Ok(_) => Redirect::to(&next).into_response(),
            Err(Error::RateLimited { .. }) => result.map(|_| ()).into_response(),
            Err(e) => {
                let msg = e.public_message();
                let q = serde_urlencoded::to_string([("error", msg.as_str()), ("next", &next)])
                    .unwrap_or_default();
                Redirect::to(&format!("/login?{q}")).into_response()
            }
        };
    }
    result.map(|v| Json(viewer_info(&v))).into_response()
}

async fn sign_out(
    State(state): State<AppState>,
    CurrentViewer(viewer): CurrentViewer,
    session: Session,
) -> Result<Json<ViewerInfo>> {
    if viewer == Viewer::Reader {
        return Err(Error::Unauthenticated("not signed in".into()));
    }
    session.flush().await.map_err(session_failed)?;
    // This session's live connections stop getting staff events now, not at their next check.
    state.engine.announce_sessions_ended().await;
    Ok(Json(ViewerInfo::default()))
}

#[derive(Deserialize)]
struct QueueQuery {
    status: Option<String>,
    page: Option<i64>,
}

async fn queue(
    State(state): State<AppState>,
    StaffOnly(staff): StaffOnly,
    Query(q): Query<QueueQuery>,
) -> Result<Json<QueueResponse>> {
    let filter = q.status.as_deref().unwrap_or("held");
    Ok(Json(
        state
            .engine
            .queue(&staff, filter, q.page.unwrap_or(1))
            .await?,
    ))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<i64>,
}

async fn audit(
    State(state): State<AppState>,
    StaffOnly(staff): StaffOnly,
    Query(q): Query<PageQuery>,
) -> Result<Json<AuditResponse>> {
    Ok(Json(state.engine.audit(&staff, q.page.unwrap_or(1)).await?))
}

async fn moderate(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    StaffOnly(staff): StaffOnly,
    JsonBody(req): JsonBody<ModerateRequest>,
) -> Result<Json<Comment>> {
    state
        .engine
        .moderate(&staff, &[id], req.action)
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("There is no comment {id}.")))
}

async fn bulk(
    State(state): State<AppState>,
    StaffOnly(staff): StaffOnly,
    JsonBody(req): JsonBody<BulkModerateRequest>,
) -> Result<Json<BulkModerateResponse>> {
    if req.ids.is_empty() || req.ids.len() > 500 {
        return Err(Error::invalid("ids", "ids: give 1 to 500 comment ids"));
    }
    Ok(Json(BulkModerateResponse {
        comments: state.engine.moderate(&staff, &req.ids, req.action).await?,
    }))
}
