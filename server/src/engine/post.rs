//! Posting a comment: the checks in the order the contract fixes, the pipeline of
//! moderators, one transaction for the nonce, the comment, its counts and its events.

use super::Engine;
use super::cluster::Limit;
use crate::auth::Viewer;
use crate::comment::{self, NewComment};
use crate::error::{Error, Result};
use crate::events;
use crate::moderation::{Candidate, Pipeline, Verdict};
use crate::store::{CommentRow, NewCommentRow, ThreadRow, capped_parent, now_ms};
use crate::token::TokenError;
use app::model::{Comment, PostAction, PostComment, PostResponse, Status, comment_html};
use std::net::IpAddr;

/// How a successful post or preview ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostOutcome {
    /// Stored and visible to everyone.
    Published,
    /// Stored and held for moderation; only staff and its author see it.
    Held,
    /// Rendered only; nothing stored.
    Preview,
}

/// A successful post or preview: what happened and the answer for the poster.
#[derive(Debug)]
pub struct Posted {
    pub outcome: PostOutcome,
    pub response: PostResponse,
}

impl Engine {
    /// Posts or previews a comment for thread `key`.
    ///
    /// The checks run in this order, and nothing is written before the request has passed
    /// the ones that guard writes: thread (404), preview (200, or 403 when closed), rate
    /// limit (429), closed (403; logged only with a valid form token), form token and
    /// honeypot (400), fields (422), parent (422), spent token (400); then the moderators
    /// (403 when one refuses, logged; held or published). The spent token's answer comes
    /// first even though it is found last: by the refusal before it logs, or by the
    /// comment's INSERT, which spends the token.
    pub async fn post(
        &self,
        key: &str,
        req: &PostComment,
        viewer: &Viewer,
        ip: Option<IpAddr>,
        author_token: Option<&str>,
    ) -> Result<Posted> {
        let thread = self.find_thread(key).await?;
        let closed = self.closed_reason(&thread);
        if req.preview {
            return match closed {
                Some((_, reason)) => Err(Error::Closed(reason)),
                None => self.preview(key, req),
            };
        }
        if let Some(ip) = ip
            && let Some(retry_after_secs) = self.over_limit(Limit::Posts, ip).await?
        {
            return Err(Error::RateLimited {
                message: "You are posting too fast; wait a minute and try again.".into(),
                retry_after_secs,
            });
        }
        let token = match req.form_token.as_deref().filter(|t| !t.is_empty()) {
            None => Err(TokenError::Missing),
            Some(t) => self.signer.verify(t, &thread.key, now_ms()),
        };
        if let Some((moderator, reason)) = closed {
            // The reader learns the thread is closed either way; the audit log records only
            // attempts that passed the limit with a real form, so a stream of empty POSTs
            // cannot grow it.
            if token.is_ok() {
                self.store
                    .record_rejection(thread.id, &moderator, &reason)
                    .await?;
            }
            return Err(Error::Closed(reason));
        }
        let token = token.map_err(|e| Error::bad_form(e.to_string()))?;
        if req.honeypot.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(Error::bad_form("The form was not filled in by a person."));
        }
        let new = NewComment::parse(req, &self.config).map_err(Error::Invalid)?;
        let parent = match new.parent_id {
            None => None,
            Some(pid) => match self.store.comment(pid).await? {
                Some(p) if p.thread_id == thread.id && p.status == Status::Published.as_str() => {
                    let (path, depth) =
                        capped_parent(&p.path, p.depth, self.config.comments.max_depth);
                    Some((p.id, path, depth))
                }
                _ => {
                    return Err(Error::invalid(
                        "parent_id",
                        "The comment you are replying to does not exist here.",
                    ));
                }
            },
        };
        // A spent token is not looked up here: spending it is part of the comment's own
        // INSERT, which fails for a token spent before (answered below as "already
        // used"), so a post reads one row fewer (a round trip on PostgreSQL). Only a
        // refusal, which writes no comment, looks it up itself.
        let pipeline = self.registry.pipeline(&thread.kind).clone();
        let text = comment::plain_text(&new.body);
        let candidate = Candidate {
            thread: &thread,
            comment: &new,
            links: comment::count_links(&new.body),
            text: &text,
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
                // The token is checked before the moderators are heard: a spent one is
                // refused as such, and logs nothing.
                if self.store.nonce_used(&token.nonce).await? {
                    return Err(Error::bad_form(TokenError::Reused.to_string()));
                }
                self.store
                    .record_rejection(thread.id, &moderator, &reason)
                    .await?;
                return Err(Error::Closed(reason));
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
        let wants_replies = new.notify;
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
            .store_comment(
                &row,
                &token,
                &thread,
                &pipeline,
                wants_replies,
                author_token,
            )
            .await
        {
            Ok(r) => r,
            // Two requests raced with one token: the loser sees what a reuse sees.
            Err(StoreOrReused::Reused) => {
                return Err(Error::bad_form(TokenError::Reused.to_string()));
            }
            Err(StoreOrReused::Other(e)) => return Err(e),
        };
        Ok(posted(key, &stored, viewer))
    }

    /// One transaction: the token's nonce, the comment (with its path and counts), its
    /// events and the mail its moderators send (outboxes); published and mailed after
    /// commit, so a slow mail server never delays a poster and a failing one loses nothing.
    /// The staff's stats event follows in a transaction of its own, one for many posts
    /// (`engine/stats.rs`).
    async fn store_comment(
        &self,
        row: &NewCommentRow,
        token: &crate::token::VerifiedToken,
        thread: &ThreadRow,
        pipeline: &Pipeline,
        wants_replies: bool,
        author_token: Option<&str>,
    ) -> std::result::Result<CommentRow, StoreOrReused> {
        let thread_key = thread.key.as_str();
        let mut tx = self.store.begin().await.map_err(StoreOrReused::other)?;
        // Spending the token's nonce and storing the comment: one statement on PostgreSQL.
        let stored = match tx
            .insert_comment_spending(row, Some((&token.nonce, token.expires_at)))
            .await
        {
            Ok(stored) => stored,
            Err(e) if e.is_unique_violation() => return Err(StoreOrReused::Reused),
            Err(e) => return Err(StoreOrReused::other(e)),
        };
        let mut letters = pipeline.letters(&stored, thread);
        letters.extend(
            self.staff_letters(&mut tx, &stored, thread)
                .await
                .map_err(StoreOrReused::Other)?,
        );
        if wants_replies {
            letters.extend(
                self.ask_for_replies(&mut tx, &stored)
                    .await
                    .map_err(StoreOrReused::Other)?,
            );
        }
        if stored.status == Status::Published.as_str() {
            letters.extend(
                self.reply_letters(&mut tx, &stored, thread)
                    .await
                    .map_err(StoreOrReused::Other)?,
            );
        }
        Engine::queue_letters(&mut tx, &letters)
            .await
            .map_err(StoreOrReused::Other)?;
        self.queue_webhooks_for_new(&mut tx, &stored, thread)
            .await
            .map_err(StoreOrReused::Other)?;
        let pending = events::comment_posted(&stored, thread_key, author_token);
        self.commit_and_publish(tx, pending)
            .await
            .map_err(StoreOrReused::Other)?;
        self.stats_after_posts.posted();
        if !letters.is_empty() {
            self.mail_committed();
        }
        Ok(stored)
    }

    fn preview(&self, key: &str, req: &PostComment) -> Result<Posted> {
        let body = comment::validate_body(&req.body, &self.config)
            .map_err(|m| Error::invalid("body", m))?;
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
        let mut response = PostResponse::new(key, PostAction::Preview);
        response.success = true;
        response.html = Some(comment_html(&c));
        response.parent_id = req.parent_id;
        Ok(Posted {
            outcome: PostOutcome::Preview,
            response,
        })
    }
}

/// A failed comment transaction: the token was spent meanwhile, or something else.
enum StoreOrReused {
    Reused,
    Other(Error),
}

impl StoreOrReused {
    fn other(e: crate::store::StoreError) -> Self {
        StoreOrReused::Other(e.into())
    }
}

fn posted(key: &str, row: &CommentRow, viewer: &Viewer) -> Posted {
    let held = row.status != Status::Published.as_str();
    // The poster sees their own comment even while it is held (as a reader would, unless
    // the poster is staff).
    let comment = comment::to_public(row, viewer.audience());
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
    Posted {
        outcome: if held {
            PostOutcome::Held
        } else {
            PostOutcome::Published
        },
        response,
    }
}
