//! The pages the links in mail open: `/mail/confirm` and `/mail/unsubscribe`.
//!
//! A GET only shows what the link would do, with a button: mail scanners and link previews
//! fetch every link in a mail, and must not confirm or unsubscribe anyone. The button POSTs
//! the token back. `POST /mail/unsubscribe?t=…` with the body `List-Unsubscribe=One-Click` is
//! RFC 8058's one-click unsubscribe, sent by mail clients from the `List-Unsubscribe` header.

use super::AppState;
use crate::engine::{LinkPurpose, MailLink, action_label};
use crate::error::Error;
use axum::Router;
use axum::extract::{Query, RawForm, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

/// The routes under `/mail`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/mail/confirm", get(show).post(act))
        .route("/mail/unsubscribe", get(show).post(act))
        .route("/mail/moderate", get(show).post(act))
}

#[derive(Deserialize)]
struct Link {
    t: Option<String>,
}

/// What a link would do, and a button to do it.
async fn show(State(state): State<AppState>, Query(link): Query<Link>) -> Response {
    let token = link.t.unwrap_or_default();
    match state.engine.check_mail_link(&token) {
        Ok(link) => {
            let (title, what, button) = describe(&link);
            page(
                StatusCode::OK,
                title,
                &format!(
                    "<p>{what}</p><form method=\"post\"><input type=\"hidden\" name=\"t\" \
                     value=\"{}\"><button type=\"submit\">{button}</button></form>",
                    escape(&token)
                ),
            )
        }
        Err(e) => failed(&e),
    }
}

/// Does what the link says: the page's button, or a mail client's one-click POST (token in
/// the query, body `List-Unsubscribe=One-Click`).
async fn act(
    State(state): State<AppState>,
    Query(link): Query<Link>,
    RawForm(body): RawForm,
) -> Response {
    let token = link.t.or_else(|| {
        serde_urlencoded::from_bytes::<Link>(&body)
            .ok()
            .and_then(|l| l.t)
    });
    match state.engine.use_mail_link(&token.unwrap_or_default()).await {
        Ok(link) => {
            let done = match link.purpose {
                LinkPurpose::Confirm => {
                    "Confirmed: you will get a mail when someone replies to your comments, \
                     each with a link to stop."
                }
                LinkPurpose::UnsubscribeThread => {
                    "Done: no more mail about replies in this thread."
                }
                LinkPurpose::UnsubscribeAll => "Done: no more mail from this site.",
                LinkPurpose::Moderate(_) => "Done: the comment's status is changed.",
            };
            page(StatusCode::OK, "Done", &format!("<p>{done}</p>"))
        }
        Err(e) => failed(&e),
    }
}

fn describe(link: &MailLink) -> (&'static str, String, &'static str) {
    let email = escape(&link.subject);
    match link.purpose {
        LinkPurpose::Moderate(action) => (
            "Moderate a comment",
            format!(
                "{} comment #{}? It is recorded in the audit log under your name.",
                action_label(action),
                link.id
            ),
            action_label(action),
        ),
        LinkPurpose::Confirm => (
            "Confirm reply notifications",
            format!("Mail {email} when someone replies to a comment it was given with?"),
            "Confirm",
        ),
        LinkPurpose::UnsubscribeThread => (
            "Unsubscribe",
            format!("Stop mailing {email} about replies in this thread?"),
            "Unsubscribe from this thread",
        ),
        LinkPurpose::UnsubscribeAll => (
            "Unsubscribe",
            format!("Stop all mail to {email}?"),
            "Unsubscribe from everything",
        ),
    }
}

fn failed(e: &Error) -> Response {
    let status = match e {
        Error::Invalid(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "Something went wrong; try again later.".to_owned()
    } else {
        escape(&e.to_string())
    };
    page(
        status,
        "This link does not work",
        &format!("<p>{message}</p>"),
    )
}

/// A small page of its own: no script at all, so its policy allows none.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\
         <body><main class=\"mail-link\"><h1>{title}</h1>{body}</main></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        html,
    )
        .into_response()
}

/// Text for HTML, in element content and double-quoted attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
