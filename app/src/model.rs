//! Wire types shared by the browser and the server: what the JSON API and the pages exchange.
//!
//! Everything here may reach a reader, so staff-only data (status, moderation reason, score)
//! is optional and only ever filled in by the server for staff viewers. Emails and IP
//! addresses have no field here at all: they cannot leak through these types.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A comment's database id.
pub type CommentId = i64;

/// Where a comment stands in moderation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Visible to everyone.
    Published,
    /// Held by a moderator, waiting for staff.
    Held,
    /// Held or marked as spam.
    Spam,
    /// Refused by staff.
    Rejected,
    /// Taken down by staff after publication.
    Removed,
}

impl Status {
    /// The stored and wire name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Published => "published",
            Status::Held => "held",
            Status::Spam => "spam",
            Status::Rejected => "rejected",
            Status::Removed => "removed",
        }
    }

    /// Parses a stored status name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "published" => Status::Published,
            "held" => Status::Held,
            "spam" => Status::Spam,
            "rejected" => Status::Rejected,
            "removed" => Status::Removed,
            _ => return None,
        })
    }
}

/// Staff-only detail of a comment's moderation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModerationFlag {
    /// True when a moderator held or refused the comment.
    pub flagged: bool,
    /// The moderator's reason, e.g. "too many links".
    pub reason: Option<String>,
    /// The spam filter's P(spam), when it ran.
    pub score: Option<f64>,
}

/// One comment as a viewer may see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub id: CommentId,
    pub parent_id: Option<CommentId>,
    /// 0 for a top-level comment; unbounded (the UI caps the indent, not the data).
    pub depth: u32,
    pub author_name: String,
    /// Only http(s) URLs are ever stored.
    pub author_url: Option<String>,
    pub title: Option<String>,
    /// Sanitised HTML rendered from the markdown source when the comment was posted.
    pub body_html: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Staff only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Staff only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationFlag>,
}

/// A thread's public summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub key: String,
    pub title: String,
    pub kind: String,
    /// False when the thread or the whole site has comments switched off.
    pub comments_open: bool,
    /// Why comments are closed, as the moderator that closed them says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
    /// Published comments.
    pub comment_count: i64,
}

/// What the comment form needs to know about the site's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormSettings {
    /// Any of "email", "url", "title": neither shown nor required.
    pub exclude_fields: Vec<String>,
    /// Body length limit, in characters.
    pub max_length: usize,
    /// Replies deeper than this are shown at this indent.
    pub max_depth: u32,
    /// The form offers "notify me of replies" (when an email is given).
    #[serde(default)]
    pub reply_notifications: bool,
}

/// `GET /api/threads/{key}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadResponse {
    pub thread: ThreadInfo,
    /// Tree order: depth first, oldest first.
    pub comments: Vec<Comment>,
    pub threaded: bool,
    /// Cursor for the next page of comments (`?after=`), when the thread has more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Top-level comments not yet loaded after this page.
    #[serde(default)]
    pub remaining_top_level: i64,
    /// The thread's newest live event when this was read: subscribe with it as `since`
    /// and nothing between the read and the live stream is missed.
    #[serde(default)]
    pub last_event_id: i64,
    pub form_settings: FormSettings,
}

/// `GET /api/threads/{key}/form`: a signed, single-use token the comment form must carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormToken {
    pub token: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// Everything the thread page renders: one round trip during SSR, one in the browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadPage {
    pub data: ThreadResponse,
    /// Absent when comments are closed.
    pub form: Option<FormToken>,
    #[serde(default)]
    pub viewer: ViewerInfo,
}

/// `POST /api/threads/{key}/comments`, as JSON. The same fields arrive form-encoded from
/// browsers without JavaScript.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PostComment {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<CommentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honeypot: Option<String>,
    #[serde(default)]
    pub preview: bool,
    /// Mail the poster (at `email`, once confirmed) when someone replies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify: bool,
}

/// Whether a post request stored a comment or only previewed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostAction {
    Post,
    Preview,
}

/// The answer to every `POST /api/threads/{key}/comments`, whatever its status code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostResponse {
    pub success: bool,
    pub action: PostAction,
    /// Field name (or "form", "__all__") to message.
    pub errors: BTreeMap<String, String>,
    /// On failure: one sentence for the whole answer (the same key every error answer of the
    /// API has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rendered comment (or, for a preview, the rendered body).
    pub html: Option<String>,
    pub comment_id: Option<CommentId>,
    pub parent_id: Option<CommentId>,
    /// The thread key.
    pub thread: String,
    pub threaded: bool,
    pub awaiting_moderation: bool,
    /// Staff posters only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_moderated: Option<bool>,
    /// The stored comment as the poster may see it, so a client can insert it in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
}

impl PostResponse {
    /// A response with nothing filled in yet.
    pub fn new(thread: &str, action: PostAction) -> Self {
        PostResponse {
            success: false,
            action,
            errors: BTreeMap::new(),
            error: None,
            html: None,
            comment_id: None,
            parent_id: None,
            thread: thread.to_owned(),
            threaded: true,
            awaiting_moderation: false,
            is_moderated: None,
            comment: None,
        }
    }

    /// A failed response with one error.
    pub fn error(
        thread: &str,
        action: PostAction,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        let mut r = Self::new(thread, action);
        r.errors.insert(field.to_owned(), message.into());
        r
    }
}

/// Threads per page of `GET /api/threads` and the home page.
pub const THREADS_PER_PAGE: i64 = 50;

/// One page of the threads, newest first (`GET /api/threads?page=N`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadList {
    pub threads: Vec<ThreadInfo>,
    /// Threads in all.
    pub total: i64,
    /// This page's number, from 1.
    pub page: i64,
    pub per_page: i64,
}

impl ThreadList {
    /// Whether a later page has threads.
    pub fn has_more(&self) -> bool {
        self.page.saturating_mul(self.per_page) < self.total
    }
}

/// Errors the UI can meet when it asks for data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("staff only")]
    Forbidden,
    #[error("{0}")]
    Other(String),
}

/// Where to go after signing in: `next` when it is a path on this site, else the queue.
/// Refuses anything a browser could read as another host: `//host`, `/\\host`, and paths with
/// whitespace or control characters (which URL parsers strip, turning `/\t/host` into
/// `//host`). The server's no-JavaScript redirect and the login page both use this.
pub fn safe_next(next: Option<&str>) -> String {
    const DEFAULT: &str = "/moderation";
    let Some(n) = next else {
        return DEFAULT.to_owned();
    };
    let mut chars = n.chars();
    let same_site = chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !n
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\');
    if same_site {
        n.to_owned()
    } else {
        DEFAULT.to_owned()
    }
}

/// Formats an RFC 3339 timestamp the way comments show it ("2026-11-21 14:05 UTC").
/// Pure and timezone-free, so the server's HTML and the browser's hydration agree.
pub fn display_date(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(rfc3339, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        Err(_) => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in [
            Status::Published,
            Status::Held,
            Status::Spam,
            Status::Rejected,
            Status::Removed,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("bogus"), None);
    }

    #[test]
    fn reader_comment_json_has_no_staff_fields() {
        let c = Comment {
            id: 1,
            parent_id: None,
            depth: 0,
            author_name: "Ann".into(),
            author_url: None,
            title: None,
            body_html: "<p>hi</p>".into(),
            created_at: "2026-11-21T10:00:00Z".into(),
            status: None,
            moderation: None,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("status"), "{json}");
        assert!(!json.contains("moderation"), "{json}");
    }

    #[test]
    fn only_same_site_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/t/welcome?x=1")), "/t/welcome?x=1");
        assert_eq!(safe_next(Some("/")), "/");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "https://evil.example",
            "evil.example",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/moderation", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/moderation");
    }

    #[test]
    fn dates_display_in_utc() {
        assert_eq!(
            display_date("2026-11-21T14:05:09+02:00"),
            "2026-11-21 12:05 UTC"
        );
        assert_eq!(display_date("not a date"), "not a date");
    }
}

/// The rel attribute of every link a commenter controls: no SEO credit, no opener access.
pub const UGC_REL: &str = "nofollow ugc noopener noreferrer";

/// The API's `html` of a comment, kept under its old path for the server: it is rendered by
/// the one comment component, [`crate::components::comment::comment_html`].
#[cfg(feature = "ssr")]
pub use crate::components::comment::comment_html;

/// Who is looking at a page: decides whether staff tools show.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewerInfo {
    /// The signed-in user's name; `None` for an anonymous reader.
    pub name: Option<String>,
    pub staff: bool,
}

/// A staff action on a comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    Approve,
    Reject,
    Spam,
    Ham,
    Remove,
}

impl ModerationAction {
    /// Every action, in the order buttons show them.
    pub const ALL: [ModerationAction; 5] = [
        ModerationAction::Approve,
        ModerationAction::Reject,
        ModerationAction::Spam,
        ModerationAction::Ham,
        ModerationAction::Remove,
    ];

    /// The status a comment has after this action.
    pub fn target(self) -> Status {
        match self {
            ModerationAction::Approve | ModerationAction::Ham => Status::Published,
            ModerationAction::Reject => Status::Rejected,
            ModerationAction::Spam => Status::Spam,
            ModerationAction::Remove => Status::Removed,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModerationAction::Approve => "approve",
            ModerationAction::Reject => "reject",
            ModerationAction::Spam => "spam",
            ModerationAction::Ham => "ham",
            ModerationAction::Remove => "remove",
        }
    }
}

/// `POST /api/comments/{id}/moderate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModerateRequest {
    pub action: ModerationAction,
}

/// `POST /api/moderation/bulk`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BulkModerateRequest {
    pub ids: Vec<CommentId>,
    pub action: ModerationAction,
}

/// One comment in the moderation queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    /// The thread key.
    pub thread: String,
    #[serde(flatten)]
    pub comment: Comment,
}

/// `GET /api/moderation/queue`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueResponse {
    pub comments: Vec<QueueItem>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
    /// Comments per status, for the tabs.
    pub counts: BTreeMap<String, i64>,
}

/// `POST /api/moderation/bulk`: the comments after the action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BulkModerateResponse {
    pub comments: Vec<Comment>,
}

/// One staff action or moderator rejection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub comment_id: Option<CommentId>,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    pub detail: Option<String>,
}

/// `GET /api/moderation/audit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditResponse {
    pub entries: Vec<AuditEntry>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// `POST /api/session`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignIn {
    pub username: String,
    pub password: String,
}

/// Outcome counts for one label taken as positive, summed over the folds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
}

/// Precision, recall and F1 for one label (averaged over the folds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub confusion: Confusion,
}

/// A spam filter's cross-validated quality.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpamMetrics {
    pub spam: LabelMetrics,
    pub ham: LabelMetrics,
    pub folds: usize,
    pub n: usize,
    pub threshold: f64,
}

/// One training of the spam filter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpamTraining {
    /// RFC 3339.
    pub trained_at: String,
    pub source: String,
    pub metrics: Option<SpamMetrics>,
    pub spam_count: i64,
    pub ham_count: i64,
}

/// Moderated comments usable as training data, per label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpamCounts {
    pub spam: i64,
    pub ham: i64,
}

/// `GET /api/spam`: the filter in use, its metrics and history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpamStatus {
    pub trained_at: Option<String>,
    pub source: Option<String>,
    pub metrics: Option<SpamMetrics>,
    pub threshold: f64,
    pub counts: SpamCounts,
    /// Newest first.
    pub history: Vec<SpamTraining>,
}
