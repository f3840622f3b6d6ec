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
        let unavailable = match &e {
            StoreError::Sqlx(s) => database_unavailable(s),
            StoreError::Sqlite(s) => crate::store::lite::is_unavailable(s),
            _ => false,
        };
        if unavailable {
            // The database is away or saturated: the client may retry. A transaction cut
            // off this way is rolled back (unless only the answer to its COMMIT was lost).
            tracing::warn!(error = %e, "database unavailable");
            return Error::Unavailable("The database is not answering; try again shortly.".into());
        }
        Error::Internal(e.to_string())
    }
}

/// True when `e` says the database is away, going away, starting up or saturated, rather
/// than that this request is wrong: the request may be retried later as it is.
fn database_unavailable(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) => true,
        E::Database(db) => db.code().is_some_and(|c| unavailable_code(&c)),
        _ => false,
    }
}

/// Database error codes that mean "not now" (see [`database_unavailable`]).
fn unavailable_code(code: &str) -> bool {
    // PostgreSQL (SQLSTATE): class 08, the connection broke; 57P01-57P03, the server is
    // shutting down (a session it ended says so before it closes), crashed, or is starting
    // up; 53300, all connection slots taken.
    code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        // SQLite (extended result codes): SQLITE_BUSY and its kinds, still locked after
        // the busy timeout.
        || code.parse::<i32>().is_ok_and(|n| n & 0xff == 5)
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

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::error::{DatabaseError, ErrorKind};
    use std::borrow::Cow;

    /// A database error with a given code, as a driver reports one.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn kind_of(e: sqlx::Error) -> &'static str {
        match Error::from(StoreError::Sqlx(e)) {
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
            other => panic!("{other:?}"),
        }
    }

    fn coded(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    #[test]
    fn a_database_that_is_away_or_busy_is_unavailable_and_anything_else_internal() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(kind_of(sqlx::Error::Io(refused)), "unavailable");
        assert_eq!(kind_of(sqlx::Error::PoolTimedOut), "unavailable");
        assert_eq!(kind_of(sqlx::Error::PoolClosed), "unavailable");
        // PostgreSQL: a session ended by a shutdown, a crash, a server still starting, no
        // connection slot left, a broken connection.
        for code in ["57P01", "57P02", "57P03", "53300", "08006", "08001"] {
            assert_eq!(kind_of(coded(code)), "unavailable", "{code}");
        }
        // SQLite: SQLITE_BUSY (5), SQLITE_BUSY_SNAPSHOT (517), SQLITE_BUSY_TIMEOUT (773).
        for code in ["5", "517", "773"] {
            assert_eq!(kind_of(coded(code)), "unavailable", "{code}");
        }
        // Mistakes stay internal errors: a syntax error, a unique violation on either
        // backend, SQLITE_CONSTRAINT_UNIQUE (2067), SQLITE_ERROR (1), a row not found.
        for code in ["42601", "23505", "2067", "1", "57014"] {
            assert_eq!(kind_of(coded(code)), "internal", "{code}");
        }
        assert_eq!(kind_of(sqlx::Error::RowNotFound), "internal");
        // The same from SQLite's write connection (rusqlite).
        let sqlite = |code: i32| {
            let failure = rusqlite::ffi::Error::new(code);
            match Error::from(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                failure, None,
            ))) {
                Error::Unavailable(_) => "unavailable",
                Error::Internal(_) => "internal",
                other => panic!("{other:?}"),
            }
        };
        for code in [5, 517, 773, 6] {
            assert_eq!(sqlite(code), "unavailable", "{code}");
        }
        for code in [2067, 1555, 1, 19] {
            assert_eq!(sqlite(code), "internal", "{code}");
        }
    }
}
