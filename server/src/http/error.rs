//! The one place an engine [`Error`] becomes an HTTP answer: its status, its headers, and one
//! JSON shape, `{"success": false, "error": SENTENCE, "errors": {FIELD: SENTENCE}}`. The
//! posting endpoint answers with the contract's `PostResponse`, which carries the same three
//! keys. Internal errors are logged with an id and shown only as "internal error (id …)".

use crate::error::{Error, FieldErrors};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// How long a client should wait before retrying while the database is away.
const UNAVAILABLE_RETRY_SECS: u64 = 5;

/// An error as a client sees it.
pub(crate) struct Public {
    pub status: StatusCode,
    pub message: String,
    pub errors: FieldErrors,
    pub retry_after: Option<u64>,
}

/// The status of each kind of error.
pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) | Error::Closed(_) => StatusCode::FORBIDDEN,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Public {
    /// What the client is told; an internal error is logged here, once, with its id.
    pub(crate) fn of(e: &Error) -> Public {
        let status = status_of(e);
        let (message, errors) = match e {
            Error::Internal(detail) => {
                let id = crate::token::random_token(6);
                tracing::error!(error_id = %id, error = %detail, "internal error");
                let message = format!("internal error (id {id})");
                let errors = crate::error::field("__all__", message.clone());
                (message, errors)
            }
            other => (other.public_message(), other.field_errors()),
        };
        let retry_after = match e {
            Error::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Error::Unavailable(_) => Some(UNAVAILABLE_RETRY_SECS),
            _ => None,
        };
        Public {
            status,
            message,
            errors,
            retry_after,
        }
    }

    /// Answers with `body`, this error's status and its Retry-After.
    pub(crate) fn respond(&self, body: impl Serialize) -> Response {
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// The JSON body of every error answer.
#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    error: &'a str,
    errors: &'a FieldErrors,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let p = Public::of(&self);
        p.respond(ErrorBody {
            success: false,
            error: &p.message,
            errors: &p.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(e: Error) -> (StatusCode, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn internal_errors_show_an_id_and_no_detail() {
        let (status, json) = body(Error::Internal("secret SQL detail".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let msg = json["error"].as_str().unwrap();
        assert!(msg.starts_with("internal error (id "), "{msg}");
        assert!(!json.to_string().contains("secret"), "{json}");
    }

    #[tokio::test]
    async fn every_kind_has_one_shape() {
        let (status, json) = body(Error::invalid("body", "Please write a comment.")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["success"], false);
        assert_eq!(json["error"], "Please write a comment.");
        assert_eq!(json["errors"]["body"], "Please write a comment.");
        let (status, json) = body(Error::Forbidden("staff only".into())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(json["errors"]["__all__"], "staff only");
        let resp = Error::RateLimited {
            message: "slow down".into(),
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        let (status, json) = body(Error::TimedOut("too slow".into())).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(json["errors"]["__all__"], "too slow");
        let resp = Error::Unavailable("away".into()).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }
}
