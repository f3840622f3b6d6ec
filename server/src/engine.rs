//! The engine: what the HTTP layer, the pages and the CLI ask of Moderato, in plain Rust.

use crate::comment::{self, NewComment, Viewer, to_public};
use crate::config::Config;
use crate::store::{CommentRow, NewCommentRow, Store, StoreError, ThreadRow, ThreadSpec, now_ms};
use crate::token::{FormSigner, TokenError, random_token};
use app::model::{
    Comment, FormSettings, FormToken, PostAction, PostComment, PostResponse, ThreadInfo,
    ThreadPage, ThreadResponse, comment_html,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

/// Errors the engine reports; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a post request ended: the HTTP status and the JSON body (and Retry-After for 429).
#[derive(Debug)]
pub struct PostOutcome {
    pub status: u16,
    pub response: PostResponse,
    pub retry_after_secs: Option<u64>,
}

/// Shared state behind every request.
pub struct Engine {
    pub store: Store,
    pub config: Arc<Config>,
    signer: FormSigner,
    post_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// Checks a thread key: 1 to 200 characters of letters, digits, `-`, `_`, `.` or `~`.
pub fn valid_thread_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= 200
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
}

fn comments_open(config: &Config, thread: &ThreadRow) -> bool {
    config.comments.enabled && thread.comments_enabled != 0
}

impl Engine {
    /// Builds the engine over an opened store; creates the form secret on first start.
    pub async fn new(store: Store, config: Config) -> Result<Engine, EngineError> {
        let secret = store
            .setting_or_insert("form_secret", &random_token(32))
            .await?;
        let post_limiter = NonZeroU32::new(config.limits.posts_per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        Ok(Engine {
            store,
            config: Arc::new(config),
            signer: FormSigner::new(secret.as_bytes()),
            post_limiter,
        })
    }

    fn form_settings(&self) -> FormSettings {
        FormSettings {
            exclude_fields: self.config.comments.exclude_fields.clone(),
            max_length: self.config.comments.max_length,
            max_depth: self.config.comments.max_depth,
        }
    }

    /// A thread by key, created first when `auto_create_threads` is on.
    pub async fn find_thread(&self, key: &str) -> Result<ThreadRow, EngineError> {
        if !valid_thread_key(key) {
            return Err(EngineError::NotFound);
        }
        if let Some(t) = self.store.thread(key).await? {
            return Ok(t);
        }
        if self.config.comments.auto_create_threads {
            return Ok(self
                .store
                .set_thread(&ThreadSpec {
                    key: key.to_owned(),
                    ..Default::default()
                })
                .await?);
        }
        Err(EngineError::NotFound)
    }

    /// Creates or updates a thread (`moderato thread set`).
    pub async fn set_thread(&self, spec: &ThreadSpec) -> Result<ThreadRow, EngineError> {
        if !valid_thread_key(&spec.key) {
            return Err(EngineError::Invalid(format!(
                "invalid thread key {:?}: use 1 to 200 letters, digits, '-', '_', '.' or '~'",
                spec.key
            )));
        }
        Ok(self.store.set_thread(spec).await?)
    }

    fn thread_info(&self, t: &ThreadRow, count: i64) -> ThreadInfo {
        ThreadInfo {
            key: t.key.clone(),
            title: t.title.clone(),
            kind: t.kind.clone(),
            comments_open: comments_open(&self.config, t),
            comment_count: count,
        }
    }

    /// Every thread, newest first, for the home page.
    pub async fn threads(&self) -> Result<Vec<ThreadInfo>, EngineError> {
        Ok(self
            .store
            .threads_with_counts()
            .await?
            .iter()
            .map(|(t, n)| self.thread_info(t, *n))
            .collect())
    }

    /// Comments of a thread in tree order, as `viewer` may see them.
    ///
    /// With `paged`, one page: at most `page_size` top-level subtrees starting after the
    /// cursor `after`, and at most `page_max_comments` comments (a long subtree continues on
    /// the next page). Without, the whole thread.
    pub async fn thread_response(
        &self,
        key: &str,
        after: Option<&str>,
        paged: bool,
        viewer: &Viewer,
    ) -> Result<ThreadResponse, EngineError> {
        let thread = self.find_thread(key).await?;
        let published_only = !viewer.is_staff();
        let after = after.unwrap_or("");
        let (top_limit, max_comments) = if paged {
            (
                self.config.comments.page_size,
                self.config.comments.page_max_comments,
            )
        } else {
            // Effectively everything, while staying a valid SQL LIMIT on both backends.
            (usize::MAX, 1_000_000_000)
        };
        // One range scan over the (thread, status, path) index: no query per comment.
        let rows = self
            .store
            .comments_after(
                thread.id,
                published_only,
                after,
                max_comments.saturating_add(1),
            )
            .await?;
        let (page, more) = cut_page(&rows, top_limit, max_comments);
        let comments: Vec<Comment> = page.iter().map(|r| to_public(r, viewer)).collect();
        let next = if more {
            page.last().map(|r| r.path.clone())
        } else {
            None
        };
        let remaining_top_level = match &next {
            Some(cursor) => {
                self.store
                    .top_level_after(thread.id, published_only, cursor)
                    .await?
            }
            None => 0,
        };
        let count = self.store.published_count(thread.id).await?;
        Ok(ThreadResponse {
            thread: self.thread_info(&thread, count),
            comments,
            threaded: true,
            next,
            remaining_top_level,
            form_settings: self.form_settings(),
        })
    }

    /// A page for the thread view: comments plus a form token when comments are open.
    pub async fn thread_page(
        &self,
        key: &str,
        after: Option<&str>,
        viewer: &Viewer,
    ) -> Result<ThreadPage, EngineError> {
        let data = self.thread_response(key, after, true, viewer).await?;
        let form = if data.thread.comments_open {
            Some(self.form_token(key).await?)
        } else {
            None
        };
        Ok(ThreadPage { data, form })
    }

    /// A new signed, single-use form token for a thread.
    pub async fn form_token(&self, key: &str) -> Result<FormToken, EngineError> {
        let thread = self.find_thread(key).await?;
        let expires_at = now_ms() + self.config.comments.form_token_minutes * 60_000;
        Ok(FormToken {
            token: self.signer.issue(&thread.key, expires_at),
            expires_at: comment::rfc3339(expires_at),
        })
    }

    /// Posts or previews a comment; every outcome is an answer, none is an `Err` but storage.
    pub async fn post(
        &self,
        key: &str,
        req: &PostComment,
        viewer: &Viewer,
        ip: Option<IpAddr>,
    ) -> Result<PostOutcome, EngineError> {
        let action = if req.preview {
            PostAction::Preview
        } else {
            PostAction::Post
        };
        let fail = |status: u16, field: &str, msg: String| PostOutcome {
            status,
            response: PostResponse::error(key, action, field, msg),
            retry_after_secs: None,
        };
        let thread = match self.find_thread(key).await {
            Ok(t) => t,
            Err(EngineError::NotFound) => {
                return Ok(fail(404, "__all__", format!("There is no thread {key:?}.")));
            }
            Err(e) => return Err(e),
        };
        if !comments_open(&self.config, &thread) {
            let reason = if self.config.comments.enabled {
                "Comments are closed for this thread."
            } else {
                "Comments are closed."
            };
            return Ok(fail(403, "__all__", reason.into()));
        }
        if req.preview {
            return Ok(self.preview(key, req));
        }
        if let (Some(limiter), Some(ip)) = (&self.post_limiter, ip)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut out = fail(
                429,
                "__all__",
                "You are posting too fast; wait a minute and try again.".into(),
            );
            out.retry_after_secs = Some(wait.as_secs().max(1));
            return Ok(out);
        }
        let token = match req.form_token.as_deref().filter(|t| !t.is_empty()) {
            None => Err(TokenError::Missing),
            Some(t) => self.signer.verify(t, &thread.key, now_ms()),
        };
        let token = match token {
            Ok(t) => t,
            Err(e) => return Ok(fail(400, "form", e.to_string())),
        };
        if req.honeypot.as_deref().is_some_and(|h| !h.is_empty()) {
            return Ok(fail(
                400,
                "form",
                "The form was not filled in by a person.".into(),
            ));
        }
        let new = match NewComment::parse(req, &self.config) {
            Ok(n) => n,
            Err(errors) => {
                let mut response = PostResponse::new(key, action);
                response.errors = errors;
                return Ok(PostOutcome {
                    status: 422,
                    response,
                    retry_after_secs: None,
                });
            }
        };
        let parent = match new.parent_id {
            None => None,
            Some(pid) => match self.store.comment(pid).await? {
                Some(p) if p.thread_id == thread.id && p.status == "published" => {
                    Some((p.id, p.path, p.depth))
                }
                _ => {
                    return Ok(fail(
                        422,
                        "parent_id",
                        "The comment you are replying to does not exist here.".into(),
                    ));
                }
            },
        };
        if self.store.nonce_used(&token.nonce).await? {
            return Ok(fail(400, "form", TokenError::Reused.to_string()));
        }
        let row = NewCommentRow {
            thread_id: thread.id,
            parent,
            body_html: comment::render_markdown(&new.body),
            author_name: new.name,
            author_email: new.email,
            author_url: new.url,
            title: new.title,
            body_source: new.body,
            status: "published".into(),
            moderator: None,
            reason: None,
            score: None,
            ip: ip.map(|i| i.to_string()),
            created_at: now_ms(),
        };
        let stored = match self
            .store
            .insert_comment(&row, Some((&token.nonce, token.expires_at)))
            .await
        {
            Ok(r) => r,
            // Two requests raced with one token: the loser sees what a reuse sees.
            Err(e) if e.is_unique_violation() => {
                return Ok(fail(400, "form", TokenError::Reused.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(self.posted(key, &stored, viewer))
    }

    fn preview(&self, key: &str, req: &PostComment) -> PostOutcome {
        let mut response = PostResponse::new(key, PostAction::Preview);
        match comment::validate_body(&req.body, &self.config) {
            Ok(body) => {
                let c = Comment {
                    id: 0,
                    parent_id: req.parent_id,
                    depth: 0,
                    author_name: req.name.trim().to_owned(),
                    author_url: None,
                    title: req
                        .title
                        .as_deref()
                        .map(str::trim)
                        .filter(|t| !t.is_empty() && !self.config.excludes("title"))
                        .map(str::to_owned),
                    body_html: comment::render_markdown(&body),
                    created_at: comment::rfc3339(now_ms()),
                    status: None,
                    moderation: None,
                };
                response.success = true;
                response.html = Some(comment_html(&c));
                response.parent_id = req.parent_id;
                PostOutcome {
                    status: 200,
                    response,
                    retry_after_secs: None,
                }
            }
            Err(msg) => {
                response.errors.insert("body".into(), msg);
                PostOutcome {
                    status: 422,
                    response,
                    retry_after_secs: None,
                }
            }
        }
    }

    fn posted(&self, key: &str, row: &CommentRow, viewer: &Viewer) -> PostOutcome {
        let held = row.status != "published";
        // The poster sees their own comment even while it is held.
        let comment = to_public(row, viewer);
        let mut response = PostResponse::new(key, PostAction::Post);
        response.success = true;
        response.comment_id = Some(row.id);
        response.parent_id = row.parent_id;
        response.awaiting_moderation = held;
        response.html = Some(comment_html(&comment));
        if viewer.is_staff() {
            response.is_moderated = Some(held);
        }
        response.comment = Some(comment);
        PostOutcome {
            status: if held { 202 } else { 201 },
            response,
            retry_after_secs: None,
        }
    }
}

/// Cuts rows (in tree order) to at most `top_limit` top-level subtrees and `max_comments`
/// comments; says whether anything was left over.
fn cut_page(rows: &[CommentRow], top_limit: usize, max_comments: usize) -> (&[CommentRow], bool) {
    let mut tops = 0;
    for (i, r) in rows.iter().enumerate() {
        if i == max_comments {
            return (&rows[..i], true);
        }
        if r.depth == 0 {
            if tops == top_limit {
                return (&rows[..i], true);
            }
            tops += 1;
        }
    }
    (rows, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, depth: i64) -> CommentRow {
        CommentRow {
            id,
            thread_id: 1,
            parent_id: None,
            depth,
            path: String::new(),
            author_name: String::new(),
            author_email: None,
            author_url: None,
            title: None,
            body_source: String::new(),
            body_html: String::new(),
            status: "published".into(),
            moderator: None,
            reason: None,
            score: None,
            ip: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_page_stops_before_the_next_top_level_comment() {
        let rows = vec![row(1, 0), row(2, 1), row(3, 0), row(4, 1), row(5, 0)];
        let (page, more) = cut_page(&rows, 2, 100);
        assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(more);
    }

    #[test]
    fn a_long_subtree_is_cut_by_the_comment_limit() {
        let rows = vec![row(1, 0), row(2, 1), row(3, 2), row(4, 1)];
        let (page, more) = cut_page(&rows, 50, 3);
        assert_eq!(page.len(), 3);
        assert!(more);
        let (page, more) = cut_page(&rows, 50, 4);
        assert_eq!(page.len(), 4);
        assert!(!more);
    }

    #[test]
    fn thread_keys_are_slugs() {
        assert!(valid_thread_key("welcome"));
        assert!(valid_thread_key("2026-11.post_1~x"));
        assert!(!valid_thread_key(""));
        assert!(!valid_thread_key("a/b"));
        assert!(!valid_thread_key("a b"));
        assert!(!valid_thread_key(&"x".repeat(201)));
    }
}
