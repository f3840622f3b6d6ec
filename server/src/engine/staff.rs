//! Staff use cases: moderating comments, the queue, the audit log, the spam filter, and the
//! accounts the CLI manages. Each takes a [`Staff`] proof.

use super::Engine;
use crate::auth::{self, Staff};
use crate::comment::{self, Audience};
use crate::error::{Error, Result};
use crate::events;
use crate::spam::Sample;
use crate::store::{CommentRow, StatusChange, StatusOutcome};
use app::model::{
    AuditEntry, AuditResponse, Comment, ModerationAction, QueueItem, QueueResponse, SpamStatus,
    SpamTraining, Status,
};

/// Statuses the queue can be filtered by, besides "all".
const QUEUE_FILTERS: [&str; 5] = ["held", "spam", "rejected", "removed", "published"];

impl Engine {
    /// Applies a staff action to comments, in one transaction with its audit entries and
    /// events. Repeating an action changes and logs nothing. Returns the comments as staff
    /// see them afterwards; `NotFound` (and no change at all) if any id is unknown.
    pub async fn moderate(
        &self,
        staff: &Staff,
        ids: &[i64],
        action: ModerationAction,
    ) -> Result<Vec<Comment>> {
        let mut tx = self.store.begin().await?;
        let mut changes = Vec::new();
        let mut pending = Vec::new();
        let mut out = Vec::with_capacity(ids.len());
        let mut letters = Vec::new();
        for &id in ids {
            match tx
                .set_status(id, action.target().as_str(), staff.name(), action.as_str())
                .await?
            {
                // Dropping the transaction rolls back whatever this request changed so far.
                StatusOutcome::Missing => {
                    return Err(Error::NotFound(format!("There is no comment {id}.")));
                }
                StatusOutcome::Unchanged => {}
                StatusOutcome::Changed(change) => {
                    pending.extend(events::status_changed(
                        &change.before,
                        &change.comment,
                        &change.thread_key,
                    ));
                    // An approved reply is news for the author of the comment it answers.
                    if change.comment.status == Status::Published.as_str()
                        && change.before != Status::Published.as_str()
                        && let Some(thread) = self.store.thread(&change.thread_key).await?
                    {
                        letters.extend(
                            self.reply_letters(&mut tx, &change.comment, &thread)
                                .await?,
                        );
                    }
                    let StatusChange {
                        before, comment, ..
                    } = *change;
                    changes.push((before, comment));
                }
            }
        }
        if !changes.is_empty() {
            pending.push(Engine::stats_event(&mut tx).await?);
        }
        Engine::queue_letters(&mut tx, &letters).await?;
        self.queue_webhooks_for_decisions(&mut tx, &changes).await?;
        self.commit_and_publish(tx, pending).await?;
        if !letters.is_empty() {
            self.mail_committed();
        }
        // The filter learns from each decision at once. The decision itself is committed,
        // so a failure here is logged, not reported as a failed action.
        match self.spam.apply_decisions(&self.store, &changes).await {
            Ok(true) => self.announce_spam_model().await,
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "spam filter could not learn from a decision"),
        }
        for &id in ids {
            if let Some(row) = self.store.comment(id).await? {
                out.push(comment::to_public(&row, Audience::Staff));
            }
        }
        Ok(out)
    }

    /// The moderation queue for staff: `filter` is a status or "all"; newest first.
    pub async fn queue(&self, _staff: &Staff, filter: &str, page: i64) -> Result<QueueResponse> {
        const PER_PAGE: i64 = 50;
        let statuses: Vec<&str> = match filter {
            "all" => Vec::new(),
            f if QUEUE_FILTERS.contains(&f) => vec![f],
            other => {
                return Err(Error::invalid(
                    "status",
                    format!(
                        "status must be held, spam, rejected, removed, published or all (not {other:?})"
                    ),
                ));
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
                .map(|(row, key): &(CommentRow, String)| QueueItem {
                    thread: key.clone(),
                    comment: comment::to_public(row, Audience::Staff),
                })
                .collect(),
            total,
            page,
            per_page: PER_PAGE,
            counts,
        })
    }

    /// The audit log for staff, newest first.
    pub async fn audit(&self, _staff: &Staff, page: i64) -> Result<AuditResponse> {
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

    /// The spam filter in use: metrics, training history, training data counts.
    pub async fn spam_status(&self, _staff: &Staff) -> Result<SpamStatus> {
        Ok(self.spam.status(&self.store).await?)
    }

    /// Retrains the spam filter from `samples` (e.g. a CSV: the samples and where they came
    /// from) or, when `None`, from the moderated comments; stores the new model, swaps it in,
    /// and announces the retrain to staff. `progress` is told each step (`step`, `of`).
    pub async fn retrain_spam(
        &self,
        staff: &Staff,
        samples: Option<(Vec<Sample>, String)>,
        progress: impl Fn(u64, u64),
    ) -> Result<SpamTraining> {
        let training = self.spam.retrain(&self.store, samples, progress).await?;
        self.announce_spam_model().await;
        tracing::info!(by = staff.name(), source = %training.source, "spam filter retrained");
        // The model is stored already; an announcement that fails to commit is logged, not
        // reported as a failed retrain.
        let announced = async {
            let tx = self.store.begin().await?;
            self.commit_and_publish(tx, vec![events::filter_retrained(&training)])
                .await
        };
        if let Err(e) = announced.await {
            tracing::error!(error = %e, "could not record the retrain event");
        }
        Ok(training)
    }

    /// Every moderated comment as the spam filter learns from it (published: ham, spam:
    /// spam), oldest first: what a retrain from the database trains on.
    pub async fn spam_training_samples(&self, _staff: &Staff) -> Result<Vec<Sample>> {
        Ok(crate::filter::moderated_samples(&self.store).await?)
    }

    /// The spam model in use (a retrain swaps in a new one; this one stays valid).
    pub fn spam_model(&self) -> std::sync::Arc<crate::spam::Model> {
        self.spam.current()
    }

    /// P(spam) of a comment's author and text under the filter in use.
    pub fn spam_score(
        &self,
        name: &str,
        email: Option<&str>,
        title: Option<&str>,
        body: &str,
    ) -> f64 {
        let body = crate::comment::plain_text(body);
        let (author, text) = crate::spam::judged_text(name, email, title, &body);
        self.spam.score(&author, &text)
    }

    /// Creates a user, or updates the password and staff flag of an existing one; returns
    /// whether it was created.
    pub async fn add_user(
        &self,
        _staff: &Staff,
        name: &str,
        password: &str,
        is_staff: bool,
    ) -> Result<bool> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "name",
                "the user name must be 1 to 100 characters, without control characters",
            ));
        }
        if password.chars().count() < 8 {
            return Err(Error::invalid(
                "password",
                "the password must be at least 8 characters",
            ));
        }
        let hash = auth::hash_password(password);
        match self.store.create_user(name, &hash, is_staff).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_unique_violation() => {
                self.store.update_user(name, &hash, is_staff).await?;
                // A new password ends every session signed in with the old one.
                if let Some(u) = self.store.user_by_name(name).await? {
                    self.end_sessions(u.id).await?;
                }
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets an existing user's password, keeping their rights, and signs them out
    /// everywhere; returns how many sessions ended.
    pub async fn set_password(&self, _staff: &Staff, name: &str, password: &str) -> Result<u64> {
        if password.chars().count() < 8 {
            return Err(Error::invalid(
                "password",
                "the password must be at least 8 characters",
            ));
        }
        let Some(u) = self.store.user_by_name(name.trim()).await? else {
            return Err(Error::NotFound(format!(
                "no user {name:?} (create it with `moderato user add`)"
            )));
        };
        self.store
            .update_user(&u.username, &auth::hash_password(password), u.is_staff != 0)
            .await?;
        self.end_sessions(u.id).await
    }

    /// Deletes every session of user `user_id`; returns how many.
    async fn end_sessions(&self, user_id: i64) -> Result<u64> {
        let mut ended = 0;
        for (id, data) in self.store.sessions().await? {
            let owner = serde_json::from_str::<serde_json::Value>(&data)
                .ok()
                .and_then(|r| r["data"][auth::USER_ID_KEY].as_i64());
            if owner == Some(user_id) {
                self.store.session_delete(&id).await?;
                ended += 1;
            }
        }
        if ended > 0 {
            self.announce_sessions_ended().await;
        }
        Ok(ended)
    }

    /// Sets (or removes) a user's address, for staff mail (`[moderation] mail_staff`).
    pub async fn set_user_email(
        &self,
        _staff: &Staff,
        name: &str,
        email: Option<&str>,
    ) -> Result<()> {
        let email = email.map(str::trim).filter(|e| !e.is_empty());
        if let Some(e) = email {
            crate::mail::mailbox(e).map_err(|err| Error::invalid("email", err.to_string()))?;
        }
        if !self.store.set_user_email(name.trim(), email).await? {
            return Err(Error::NotFound(format!(
                "no user {name:?} (create it with `moderato user add`)"
            )));
        }
        Ok(())
    }

    /// Revokes a user's API keys (only those labelled `label`, if given); returns how many.
    pub async fn revoke_api_keys(
        &self,
        _staff: &Staff,
        user: &str,
        label: Option<&str>,
    ) -> Result<u64> {
        let Some(u) = self.store.user_by_name(user).await? else {
            return Err(Error::NotFound(format!("no user {user:?}")));
        };
        Ok(self.store.delete_api_keys(u.id, label).await?)
    }

    /// Creates an API key for a user; returns the key, which is shown this once (only its
    /// hash is stored).
    pub async fn create_api_key(&self, _staff: &Staff, user: &str, label: &str) -> Result<String> {
        let Some(u) = self.store.user_by_name(user).await? else {
            return Err(Error::NotFound(format!(
                "no user {user:?} (create it with `moderato user add`)"
            )));
        };
        let (key, hash) = auth::new_api_key();
        self.store.insert_api_key(label, &hash, u.id).await?;
        Ok(key)
    }
}
