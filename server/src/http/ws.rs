//! `GET /ws`: the live WebSocket (protocol in `app::live` and docs/live.md).

use super::api::{AUTHOR_COOKIE, cookie};
use super::extract::{ClientAddr, CurrentViewer};
use super::{AppState, origin_is_own};
use crate::engine::LiveCredentials;
use crate::error::Error;
use crate::live::Identity;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tower_sessions::Session;

/// Upgrades to the live socket after checking where the page came from and who is asking.
pub(crate) async fn ws(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    headers: HeaderMap,
    viewer: Result<CurrentViewer, Error>,
    uri: axum::http::Uri,
    session: Session,
    up: WebSocketUpgrade,
) -> Response {
    // The identity comes from cookies, which a browser sends even when another site opens
    // the socket: refuse foreign pages before upgrading (cross-site WebSocket hijacking).
    if !origin_is_own(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site WebSocket refused").into_response();
    }
    let viewer = match viewer {
        Ok(CurrentViewer(v)) => v,
        Err(e) => return e.into_response(),
    };
    let ip = ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let identity = Identity {
        staff: viewer.is_staff(),
        // A framed page without third-party cookies names the token it kept (`?author=`).
        author_tokens: cookie(&headers, AUTHOR_COOKIE)
            .into_iter()
            .chain(
                uri.query()
                    .unwrap_or("")
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("author="))
                    .filter(|t| app::embed::valid_author_token(t))
                    .map(str::to_owned),
            )
            .collect(),
        ip,
    };
    let hub = state.engine.hub().clone();
    let max = hub.limits().max_message_bytes;
    // Small buffers keep an idle connection near 5 KiB (docs/live.md has the figures).
    let mut up = up
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024);
    if max > 0 {
        up = up.max_message_size(max * 2).max_frame_size(max * 2);
    }
    match hub.try_admit(ip) {
        Some(admission) if identity.staff => {
            // Staff rights end with the session or key that gave them (docs/live.md).
            let creds = LiveCredentials {
                authorization: headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                session_id: session.id().map(|id| id.to_string()),
            };
            let ends = state.engine.clone().staff_ended(creds);
            up.on_upgrade(move |socket| async move {
                let (sink, stream) = socket.split();
                hub.serve_staff(sink, stream, identity, admission, Box::pin(ends))
                    .await
            })
        }
        Some(admission) => up.on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            hub.serve(sink, stream, identity, admission).await
        }),
        None => up.on_upgrade(move |socket| async move { hub.refuse(socket).await }),
    }
}
