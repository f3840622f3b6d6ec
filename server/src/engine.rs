//! The engine: what the HTTP layer, the pages and the CLI ask of Moderato, in plain Rust.

pub mod embed;

use crate::comment::{self, NewComment, Viewer, to_public};
use crate::config::{Config, ConfigError};
use crate::moderation::{Candidate, Registry, Verdict, email::Mailer};
use crate::spam::service::{SpamFilter, SpamModerator};
use crate::store::{CommentRow, NewCommentRow, Store, StoreError, ThreadRow, ThreadSpec, now_ms};
use crate::token::{FormSigner, TokenError, random_token};
use app::model::{
    AuditEntry, AuditResponse, Comment, FormSettings, FormToken, ModerationAction, PostAction,
    PostComment, PostResponse, QueueItem, QueueResponse, Status, ThreadInfo, ThreadPage,
    ThreadResponse, ViewerInfo, comment_html,
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
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
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
    /// Which moderators run for which thread kind.
    pub registry: Registry,
    /// The Naive Bayes filter (also the pipeline's "spam" moderator).
    pub spam: Arc<SpamFilter>,
    /// Live updates: events are published here after their change commits.
    pub hub: crate::live::Hub,
}

/// The hub's limits from `[live]`.
pub fn live_limits(c: &crate::config::LiveConfig) -> crate::live::Limits {
    crate::live::Limits {
        max_connections_per_ip: c.max_connections_per_ip,
        max_messages_per_minute: c.max_messages_per_minute,
        max_subscriptions: c.max_subscriptions,
        max_message_bytes: c.max_message_bytes,
        ..crate::live::Limits::default()
    }
}

/// Checks a thread key: 1 to 200 characters of letters, digits, `-`, `_`, `.` or `~`.
pub fn valid_thread_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= 200
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
}

impl Engine {
    /// Builds the engine over an opened store; creates the form secret on first start.
    pub async fn new(store: Store, config: Config) -> Result<Engine, EngineError> {
        let secret = store
            .setting_or_insert("form_secret", &random_token(32))
            .await?;
        let post_limiter = NonZeroU32::new(config.limits.posts_per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        let mailer = Mailer::new(&config.smtp, &config.moderation.notify_emails)
            .map_err(|e| ConfigError::Invalid(format!("moderation.notify_emails / smtp: {e}")))?
            .map(Arc::new);
        let spam = Arc::new(
            SpamFilter::load_or_train(&store, config.spam.threshold, config.spam.bundled_corpus)
                .await
                .map_err(|e| EngineError::Invalid(e.to_string()))?,
        );
        let registry = Registry::from_config(
            &config,
            Arc::new(SpamModerator {
                filter: spam.clone(),
                min_words: config.spam.min_words,
            }),
            mailer,
        )?;
        let hub = crate::live::Hub::new(
            live_limits(&config.live),
            Arc::new(crate::events::DbEventSource {
                store: store.clone(),
            }),
        );
        Ok(Engine {
            store,
            config: Arc::new(config),
            signer: FormSigner::new(secret.as_bytes()),
            post_limiter,
            registry,
            spam,
            hub,
        })
    }

    /// Who closed a thread to comments right now and why: the global switch
    /// ("comments.enabled") or a moderator of the thread's kind.
    pub fn closed_reason(&self, thread: &ThreadRow) -> Option<(String, String)> {
        if !self.config.comments.enabled {
            return Some((
                "comments.enabled".to_owned(),
                "Comments are closed.".to_owned(),
            ));
        }
        self.registry
            .pipeline(&thread.kind)
            .closed(thread, now_ms())
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
        // Asked once: the answer decides both fields (and a misconfiguration is logged once).
        let closed_reason = self.closed_reason(t).map(|(_, reason)| reason);
        ThreadInfo {
            key: t.key.clone(),
            title: t.title.clone(),
            kind: t.kind.clone(),
            comments_open: closed_reason.is_none(),
            closed_reason,
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
        // Read before the comments: an event in between is then both on the page and
        // replayed, and the client drops the duplicate by id; never neither.
        let last_event_id = crate::events::last_id(&self.store, &thread.key).await?;
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
            last_event_id,
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
        Ok(ThreadPage {
            data,
            form,
            viewer: ViewerInfo {
                name: viewer.name().map(str::to_owned),
                staff: viewer.is_staff(),
            },
        })
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
        author_token: Option<&str>,
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
        if let Some((moderator, reason)) = self.closed_reason(&thread) {
            if !req.preview {
                self.store
                    .record_rejection(thread.id, &moderator, &reason)
                    .await?;
            }
            return Ok(fail(403, "__all__", reason));
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
        let pipeline = self.registry.pipeline(&thread.kind).clone();
        let candidate = Candidate {
            thread: &thread,
            comment: &new,
            links: comment::count_links(&new.body),
            now: now_ms(),
            store: &self.store,
        };
        // Staff comments skip moderation: they are the moderators.
        let verdict = if viewer.is_staff() {
            Verdict::Publish
        } else {
            pipeline.decide(&candidate).await?
        };
        let (status, moderator, reason, score) = match verdict {
            Verdict::Reject { moderator, reason } => {
                self.store
                    .record_rejection(thread.id, &moderator, &reason)
                    .await?;
                return Ok(fail(403, "__all__", reason));
            }
            Verdict::Hold { moderator, hold } => (
                if hold.spam {
                    Status::Spam
                } else {
                    Status::Held
                },
                Some(moderator),
                Some(hold.reason),
                hold.score,
            ),
            Verdict::Publish => (Status::Published, None, None, None),
        };
        let row = NewCommentRow {
            thread_id: thread.id,
            parent,
            body_html: comment::render_markdown(&new.body),
            author_name: new.name,
            author_email: new.email,
            author_url: new.url,
            title: new.title,
            body_source: new.body,
            status: status.as_str().into(),
            moderator,
            reason,
            score,
            ip: ip.map(|i| i.to_string()),
            created_at: now_ms(),
        };
        let stored = match self
            .store
            .insert_comment(
                &row,
                Some((&token.nonce, token.expires_at)),
                &thread.key,
                author_token,
            )
            .await
        {
            Ok((r, events)) => {
                // Only now, after the commit, may anyone hear of it.
                for e in events {
                    self.hub.publish(e);
                }
                r
            }
            // Two requests raced with one token: the loser sees what a reuse sees.
            Err(e) if e.is_unique_violation() => {
                return Ok(fail(400, "form", TokenError::Reused.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        // notify runs after commit, off the request: a slow mail server never delays a poster.
        {
            let stored = stored.clone();
            let thread = thread.clone();
            tokio::spawn(async move { pipeline.notify(&stored, &thread).await });
        }
        Ok(self.posted(key, &stored, viewer))
    }

    /// Applies a staff action to comments. Repeating an action changes and logs nothing.
    /// Returns the comments as staff see them afterwards; `NotFound` if any id is unknown.
    pub async fn moderate(
        &self,
        ids: &[i64],
        action: ModerationAction,
        viewer: &Viewer,
    ) -> Result<Vec<Comment>, EngineError> {
        let actor = viewer.name().unwrap_or("staff");
        let (changes, missing, events) = self
            .store
            .set_status(ids, action.target().as_str(), actor, action.as_str())
            .await?;
        for e in events {
            self.hub.publish(e);
        }
        // The filter learns from each decision at once. The decision itself is committed,
        // so a failure here is logged, not reported as a failed action.
        let decisions: Vec<(String, CommentRow)> = changes
            .iter()
            .map(|c| (c.before.clone(), c.comment.clone()))
            .collect();
        if let Err(e) = self.spam.apply_decisions(&self.store, &decisions).await {
            tracing::error!(error = %e, "spam filter could not learn from a decision");
        }
        if !missing.is_empty() {
            return Err(EngineError::NotFound);
        }
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(row) = self.store.comment(id).await? {
                out.push(to_public(&row, viewer));
            }
        }
        Ok(out)
    }

    /// The moderation queue for staff: `filter` is a status or "all"; newest first.
    pub async fn queue(
        &self,
        filter: &str,
        page: i64,
        viewer: &Viewer,
    ) -> Result<QueueResponse, EngineError> {
        const PER_PAGE: i64 = 50;
        let statuses: Vec<&str> = match filter {
            "all" => Vec::new(),
            "held" | "spam" | "rejected" | "removed" | "published" => vec![filter],
            other => {
                return Err(EngineError::Invalid(format!(
                    "status must be held, spam, rejected, removed, published or all (not {other:?})"
                )));
            }
        };
        let page = page.max(1);
        let (rows, total) = self
            .store
            .queue(&statuses, PER_PAGE, (page - 1) * PER_PAGE)
            .await?;
        let counts = self.store.status_counts().await?.into_iter().collect();
        Ok(QueueResponse {
            comments: rows
                .iter()
                .map(|(row, key)| QueueItem {
                    thread: key.clone(),
                    comment: to_public(row, viewer),
                })
                .collect(),
            total,
            page,
            per_page: PER_PAGE,
            counts,
        })
    }

    /// The audit log for staff, newest first.
    pub async fn audit(&self, page: i64) -> Result<AuditResponse, EngineError> {
        const PER_PAGE: i64 = 100;
        let page = page.max(1);
        let (rows, total) = self.store.audit(PER_PAGE, (page - 1) * PER_PAGE).await?;
        Ok(AuditResponse {
            entries: rows
                .into_iter()
                .map(|r| AuditEntry {
                    id: r.id,
                    at: comment::rfc3339(r.at),
                    actor: r.actor,
                    action: r.action,
                    comment_id: r.comment_id,
                    status_before: r.status_before,
                    status_after: r.status_after,
                    detail: r.detail,
                })
                .collect(),
            total,
            page,
            per_page: PER_PAGE,
        })
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
