//! axum extractors for what handlers need about a request: who is asking (a [`Viewer`], or a
//! [`Staff`] proof), from which address, and a body that is JSON or form-encoded. Each is
//! written once, so no handler can forget a check.

use super::AppState;
use crate::auth::{Credentials, Staff, USER_ID_KEY, Viewer};
use crate::engine::require_staff;
use crate::error::Error;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use tower_sessions::Session;

/// The request's viewer: API key, else session, else anonymous. A bad API key is 401.
pub(crate) struct CurrentViewer(pub Viewer);

impl FromRequestParts<AppState> for CurrentViewer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, msg)| Error::Internal(format!("session layer missing: {msg}")))?;
        let creds = Credentials {
            authorization: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            session_user: session.get(USER_ID_KEY).await.ok().flatten(),
        };
        state.engine.viewer(&creds).await.map(CurrentViewer)
    }
}

/// A signed-in staff member: 401 without credentials, 403 for a user who is not staff.
pub(crate) struct StaffOnly(pub Staff);

impl FromRequestParts<AppState> for StaffOnly {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let CurrentViewer(viewer) = CurrentViewer::from_request_parts(parts, state).await?;
        require_staff(&viewer).cloned().map(StaffOnly)
    }
}

/// Why reading a body failed: over the size limit, too slow (`[limits] body_timeout_secs`),
/// or the client went away.
fn body_error(e: &axum::Error, too_large: impl Fn() -> Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<tower_http::timeout::TimeoutError>() {
            return Error::TimedOut("The request body did not arrive in time.".into());
        }
        if s.is::<http_body_util::LengthLimitError>() {
            return too_large();
        }
        source = s.source();
    }
    Error::BadRequest(crate::error::field(
        "__all__",
        "The request body could not be read.",
    ))
}

/// The client's address, when the server knows it (every real connection; not `oneshot`):
/// the connection's peer, or behind a trusted proxy the client it names.
pub(crate) struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| state.proxies.client(c.0.ip(), &parts.headers)),
        ))
    }
}

/// A request type that browsers without JavaScript send form-encoded.
pub(crate) trait FromForm: Sized {
    /// Builds the value from the form's fields; the error is a sentence.
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, String>;
}

/// A body of JSON, or form-encoded fields (no JavaScript), read under the configured size
/// limit: a declared or actual size over `limits.max_body_bytes` is refused (413) before the
/// body is parsed, and bodies that are not UTF-8 are refused (400).
pub(crate) struct JsonOrForm<T> {
    pub value: T,
    /// True when the body was form-encoded, i.e. the answer should be a redirect.
    pub form: bool,
}

/// Why a body was refused, and whether it came from a form (so the answer can redirect).
pub(crate) struct BodyRejection {
    pub error: Error,
    pub form: bool,
}

impl axum::response::IntoResponse for BodyRejection {
    fn into_response(self) -> axum::response::Response {
        self.error.into_response()
    }
}

fn is_form_encoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

impl<T: DeserializeOwned + FromForm> FromRequest<AppState> for JsonOrForm<T> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, BodyRejection> {
        let form = is_form_encoded(req.headers());
        let reject = |error| BodyRejection { error, form };
        let limit = state.engine.config().limits.max_body_bytes;
        let too_large = || Error::TooLarge(format!("The request is larger than {limit} bytes."));
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // Refuse oversized bodies before reading them, let alone parsing them.
        if declared.is_some_and(|n| n > limit) {
            return Err(reject(too_large()));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| reject(body_error(&e, too_large)))?;
        if std::str::from_utf8(&bytes).is_err() {
            return Err(reject(Error::BadRequest(crate::error::field(
                "__all__",
                "The request is not valid UTF-8.",
            ))));
        }
        let value = if form {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&bytes).map_err(|e| {
                    reject(Error::invalid("__all__", format!("Invalid form data: {e}")))
                })?;
            T::from_pairs(pairs).map_err(|m| reject(Error::invalid("__all__", m)))?
        } else {
            serde_json::from_slice::<T>(&bytes).map_err(|e| {
                let msg = format!("Invalid JSON: {e}");
                // Well-formed JSON of the wrong shape is a field problem; broken JSON is not.
                reject(if e.is_data() {
                    Error::invalid("__all__", msg)
                } else {
                    Error::BadRequest(crate::error::field("__all__", msg))
                })
            })?
        };
        Ok(JsonOrForm { value, form })
    }
}

impl FromForm for app::model::PostComment {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, String> {
        let mut req = app::model::PostComment::default();
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
                "notify" => req.notify = matches!(v.as_str(), "1" | "true" | "on"),
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
}

/// A sign-in: JSON `{"username","password"}`, or the login page's form, which also names
/// where to go next.
#[derive(serde::Deserialize)]
pub(crate) struct SignInRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub next: Option<String>,
}

impl FromForm for SignInRequest {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, String> {
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Ok(SignInRequest {
            username: get("username").unwrap_or_default(),
            password: get("password").unwrap_or_default(),
            next: get("next"),
        })
    }
}

/// A plain JSON body (staff actions); its errors are the engine's 422.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(t)| JsonBody(t))
            .map_err(|e| Error::invalid("__all__", e.body_text()))
    }
}
