//! The engine's one error type, by kind. The HTTP layer maps each kind to a status and one
//! JSON shape in one place (`http::error`); the CLI prints it as a sentence.

use crate::config::ConfigError;
use crate::store::StoreError;
use std::collections::BTreeMap;

/// Per-field messages ("name", "body", ..., or "form" / "__all__" for the whole request).
pub type FieldErrors = BTreeMap<String, String>;

/// Every way a use case can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing asked for does not exist (a thread, a comment).
    #[error("{0}")]
    NotFound(String),
    /// The input was understood but is not acceptable; each field says why (422).
    #[error("{}", first(.0))]
    Invalid(FieldErrors),
    /// The request cannot be used at all: malformed, or its form token is missing, expired or
    /// spent, or a bot filled the honeypot (400).
    #[error("{}", first(.0))]
    BadRequest(FieldErrors),
    /// No credentials where some are needed, or unknown ones (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Comments are closed here, or a moderator refused this one; the reason is for people.
    #[error("{0}")]
    Closed(String),
    /// Too many requests from this client; try again after this many seconds (429).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// The request body is larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    TimedOut(String),
    /// The change conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the database) is not answering; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a broken dependency. The detail is for the log, never for the client.
    #[error("internal error: {0}")]
    Internal(String),
}

fn first(errors: &FieldErrors) -> &str {
    errors
        .values()
        .next()
        .map_or("invalid request", String::as_str)
}

/// Per-field errors with one entry.
pub fn field(name: &str, message: impl Into<String>) -> FieldErrors {
    FieldErrors::from([(name.to_owned(), message.into())])
}

impl Error {
    /// The whole request is invalid (not one field).
    pub fn invalid(field_name: &str, message: impl Into<String>) -> Error {
        Error::Invalid(field(field_name, message))
    }

    /// The form (token or honeypot) was refused.
    pub fn bad_form(message: impl Into<String>) -> Error {
        Error::BadRequest(field("form", message))
    }

    /// The field errors to show, for kinds that have them; others name the whole request.
    pub fn field_errors(&self) -> FieldErrors {
        match self {
            Error::Invalid(e) | Error::BadRequest(e) => e.clone(),
            other => field("__all__", other.public_message()),
        }
    }

    /// What a client may be told. Internal detail stays in the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        use sqlx::Error as E;
        match &e {
            // The database is away or saturated: the client may retry, nothing was written.
            StoreError::Sqlx(E::PoolTimedOut | E::PoolClosed | E::Io(_)) => {
                tracing::warn!(error = %e, "database unavailable");
                Error::Unavailable("The database is not answering; try again shortly.".into())
            }
            _ => Error::Internal(e.to_string()),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Invalid(field("config", e.to_string()))
    }
}

impl From<crate::filter::FilterError> for Error {
    fn from(e: crate::filter::FilterError) -> Self {
        match e {
            crate::filter::FilterError::Store(s) => s.into(),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// The engine's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
