//! The built-in moderators.

use super::{Candidate, Hold, Letter, Moderator};
use crate::store::{CommentRow, StoreError, ThreadRow};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;

/// Allows everything and holds nothing (`moderation.default = "none"`).
pub struct NullModerator;

impl Moderator for NullModerator {
    fn name(&self) -> &str {
        "none"
    }
}

/// Rejects comments on threads whose `comments_enabled` is false.
pub struct EnableField;

impl Moderator for EnableField {
    fn name(&self) -> &str {
        "enable_field"
    }

    fn closed(&self, thread: &ThreadRow, _now: i64) -> Option<String> {
        (thread.comments_enabled == 0).then(|| "Comments are disabled for this thread.".to_owned())
    }
}

fn future_publication(thread: &ThreadRow, now: i64) -> Option<String> {
    match thread.published_at {
        Some(p) if p > now => {
            tracing::warn!(
                thread = %thread.key,
                "thread's published_at is in the future: comments stay closed until then (check `moderato thread set --published-at`)"
            );
            Some(
                "Comments are not open yet: this thread's publication date is in the future."
                    .to_owned(),
            )
        }
        _ => None,
    }
}

/// Rejects comments `days` or more days after the thread's `published_at`.
pub struct CloseAfter {
    pub days: i64,
}

impl Moderator for CloseAfter {
    fn name(&self) -> &str {
        "close_after"
    }

    fn closed(&self, thread: &ThreadRow, now: i64) -> Option<String> {
        if let Some(reason) = future_publication(thread, now) {
            return Some(reason);
        }
        let published = thread.published_at?;
        (now - published >= self.days * DAY_MS).then(|| "Comments are closed.".to_owned())
    }
}

/// Holds comments posted `days` or more days after the thread's `published_at`.
pub struct ModerateAfter {
    pub days: i64,
}

#[async_trait::async_trait]
impl Moderator for ModerateAfter {
    fn name(&self) -> &str {
        "moderate_after"
    }

    async fn moderate(&self, c: &Candidate<'_>) -> Result<Option<Hold>, StoreError> {
        let Some(published) = c.thread.published_at else {
            return Ok(None);
        };
        // A future date is reported by CloseAfter (or the log); it never makes a thread "old".
        let old = published <= c.now && c.now - published >= self.days * DAY_MS;
        Ok(old.then(|| Hold {
            reason: format!(
                "The thread is more than {} days old: comments are reviewed first.",
                self.days
            ),
            score: None,
            spam: false,
        }))
    }
}

/// `pre_moderation`: hold every comment, or each commenter's until one of theirs is approved.
pub enum PreModeration {
    All,
    First,
}

#[async_trait::async_trait]
impl Moderator for PreModeration {
    fn name(&self) -> &str {
        "pre_moderation"
    }

    async fn moderate(&self, c: &Candidate<'_>) -> Result<Option<Hold>, StoreError> {
        let hold = match self {
            PreModeration::All => true,
            PreModeration::First => {
                // Known by email only: a name is anyone's to type, so without an email every
                // comment is a first one (and the answer never tells whether a name is known).
                match &c.comment.email {
                    Some(email) => !c.store.has_published_by_email(email).await?,
                    None => true,
                }
            }
        };
        Ok(hold.then(|| Hold {
            reason: match self {
                PreModeration::All => "Every comment is reviewed before it appears.".to_owned(),
                PreModeration::First => {
                    "A commenter's first comment is reviewed before it appears.".to_owned()
                }
            },
            score: None,
            spam: false,
        }))
    }
}

/// Holds comments with more than this many links.
pub struct MaxLinks(pub usize);

#[async_trait::async_trait]
impl Moderator for MaxLinks {
    fn name(&self) -> &str {
        "max_links"
    }

    async fn moderate(&self, c: &Candidate<'_>) -> Result<Option<Hold>, StoreError> {
        Ok((c.links > self.0).then(|| Hold {
            reason: format!("Too many links ({} > {}).", c.links, self.0),
            score: None,
            spam: false,
        }))
    }
}

/// Holds comments containing banned words or matching banned patterns.
///
/// The regex crate matches in time linear in the input (no backtracking), and the input is
/// bounded by `comments.max_length`, so a hostile pattern or comment cannot stall a request;
/// compiled patterns are also capped in size.
pub struct Banned {
    words: Option<Regex>,
    patterns: Option<RegexSet>,
}

/// Compiled-pattern size cap: keeps hostile configurations from using much memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Banned {
    /// `None` when there is nothing to ban; `Err` names a pattern that does not compile.
    pub fn new(words: &[String], patterns: &[String]) -> Result<Option<Banned>, String> {
        let words: Vec<&String> = words.iter().filter(|w| !w.trim().is_empty()).collect();
        if words.is_empty() && patterns.is_empty() {
            return Ok(None);
        }
        let words = if words.is_empty() {
            None
        } else {
            let alternation = words
                .iter()
                .map(|w| regex::escape(w.trim()))
                .collect::<Vec<_>>()
                .join("|");
            Some(
                RegexBuilder::new(&format!(r"\b(?:{alternation})\b"))
                    .case_insensitive(true)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("moderation.banned_words: {e}"))?,
            )
        };
        let patterns = if patterns.is_empty() {
            None
        } else {
            Some(
                RegexSetBuilder::new(patterns)
                    .case_insensitive(true)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("moderation.banned_patterns: {e}"))?,
            )
        };
        Ok(Some(Banned { words, patterns }))
    }

    fn check(&self, text: &str) -> Option<String> {
        if let Some(m) = self.words.as_ref().and_then(|w| w.find(text)) {
            return Some(format!("Contains a banned word ({:?}).", m.as_str()));
        }
        if self.patterns.as_ref().is_some_and(|p| p.is_match(text)) {
            return Some("Matches a banned pattern.".to_owned());
        }
        None
    }
}

#[async_trait::async_trait]
impl Moderator for Banned {
    fn name(&self) -> &str {
        "banned_words"
    }

    async fn moderate(&self, c: &Candidate<'_>) -> Result<Option<Hold>, StoreError> {
        let n = c.comment;
        let text = format!(
            "{}\n{}\n{}\n{}",
            n.name,
            n.title.as_deref().unwrap_or(""),
            n.url.as_deref().unwrap_or(""),
            c.text
        );
        Ok(self.check(&text).map(|reason| Hold {
            reason,
            score: None,
            spam: false,
        }))
    }
}

/// Who gets email_notification's mail, and the site address its links start with.
#[derive(Debug)]
pub struct StaffMail {
    /// Checked addresses (`Name <a@b>` or `a@b`).
    pub recipients: Vec<String>,
    /// `site.public_url` without a trailing slash: links in mail must be absolute.
    pub public_url: String,
}

/// Emails the staff about each comment that survived moderation (published or held).
pub struct EmailNotification {
    pub mail: Arc<StaffMail>,
}

impl Moderator for EmailNotification {
    fn name(&self) -> &str {
        "email_notification"
    }

    fn letters(&self, c: &CommentRow, t: &ThreadRow) -> Vec<Letter> {
        let held = c.status != "published";
        let subject = if held {
            format!(
                "[{}] Comment awaiting moderation from {}",
                t.title, c.author_name
            )
        } else {
            format!("[{}] New comment from {}", t.title, c.author_name)
        };
        let link = format!(
            "{}/t/{}#c{}",
            self.mail.public_url,
            app::api::encode_key(&t.key),
            c.id
        );
        let mut body = format!(
            "{} wrote on \"{}\":\n\n{}\n\nStatus: {}",
            c.author_name, t.title, c.body_source, c.status
        );
        if let Some(reason) = &c.reason {
            body.push_str(&format!(" ({reason}"));
            if let Some(score) = c.score {
                body.push_str(&format!("; score {score:.3}"));
            }
            body.push(')');
        }
        body.push_str(&format!("\n\n{link}\n"));
        if held {
            body.push_str(&format!(
                "Moderation queue: {}/moderation\n",
                self.mail.public_url
            ));
        }
        self.mail
            .recipients
            .iter()
            .map(|to| Letter {
                to: to.clone(),
                subject: subject.clone(),
                body: body.clone(),
                // Staff mail follows `notify_emails`, not a subscription.
                list_unsubscribe: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comment::NewComment;
    use crate::store::Store;

    const NOW: i64 = 1_800_000_000_000;

    fn thread(published_at: Option<i64>, enabled: bool) -> ThreadRow {
        ThreadRow {
            id: 1,
            key: "t".into(),
            kind: "post".into(),
            title: "T".into(),
            comments_enabled: i64::from(enabled),
            published_at,
        }
    }

    fn comment(body: &str) -> NewComment {
        NewComment {
            name: "Ann".into(),
            email: None,
            url: None,
            title: None,
            body: body.into(),
            parent_id: None,
            notify: false,
        }
    }

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    async fn hold_of(m: &dyn Moderator, t: &ThreadRow, body: &str) -> Option<Hold> {
        let (store, _dir) = store().await;
        let c = comment(body);
        let text = crate::comment::plain_text(body);
        let cand = Candidate {
            thread: t,
            comment: &c,
            links: crate::comment::count_links(body),
            text: &text,
            now: NOW,
            store: &store,
        };
        m.moderate(&cand).await.unwrap()
    }

    #[test]
    fn enable_field_rejects_disabled_threads_only() {
        assert!(
            EnableField
                .closed(&thread(None, false), NOW)
                .unwrap()
                .contains("disabled")
        );
        assert_eq!(EnableField.closed(&thread(None, true), NOW), None);
    }

    #[test]
    fn close_after_closes_at_exactly_the_boundary() {
        let m = CloseAfter { days: 30 };
        let just_before = thread(Some(NOW - 30 * DAY_MS + 1), true);
        let at = thread(Some(NOW - 30 * DAY_MS), true);
        assert_eq!(m.closed(&just_before, NOW), None);
        assert_eq!(m.closed(&at, NOW).as_deref(), Some("Comments are closed."));
        assert_eq!(m.closed(&thread(None, true), NOW), None);
    }

    #[test]
    fn a_future_publication_date_is_reported_not_a_crash() {
        let m = CloseAfter { days: 30 };
        let reason = m.closed(&thread(Some(NOW + DAY_MS), true), NOW).unwrap();
        assert!(reason.contains("in the future"), "{reason}");
    }

    #[tokio::test]
    async fn moderate_after_holds_from_the_boundary_on() {
        let m = ModerateAfter { days: 7 };
        assert_eq!(
            hold_of(&m, &thread(Some(NOW - 7 * DAY_MS + 1), true), "x").await,
            None
        );
        let h = hold_of(&m, &thread(Some(NOW - 7 * DAY_MS), true), "x")
            .await
            .unwrap();
        assert!(h.reason.contains("7 days"));
        assert!(!h.spam);
        // In the future: not old, so not held (CloseAfter reports the date).
        assert_eq!(
            hold_of(&m, &thread(Some(NOW + DAY_MS), true), "x").await,
            None
        );
    }

    #[tokio::test]
    async fn max_links_holds_only_above_the_limit() {
        let t = thread(None, true);
        let three = "[a](https://a.org) [b](https://b.org) [c](https://c.org)";
        assert_eq!(hold_of(&MaxLinks(3), &t, three).await, None);
        let four = format!("{three} [d](https://d.org)");
        let h = hold_of(&MaxLinks(3), &t, &four).await.unwrap();
        assert_eq!(h.reason, "Too many links (4 > 3).");
    }

    #[tokio::test]
    async fn pre_moderation_all_holds_everything() {
        assert!(
            hold_of(&PreModeration::All, &thread(None, true), "hi")
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn banned_words_match_whole_words_case_insensitively() {
        let b = Banned::new(&["casino".into()], &[]).unwrap().unwrap();
        let t = thread(None, true);
        assert!(
            hold_of(&b, &t, "Best CASINO in town")
                .await
                .unwrap()
                .reason
                .contains("casino")
                || hold_of(&b, &t, "Best CASINO in town")
                    .await
                    .unwrap()
                    .reason
                    .contains("CASINO")
        );
        assert_eq!(hold_of(&b, &t, "casinos are not the word").await, None);
        // Matched on the rendered text: an entity or emphasis inside the word hides nothing.
        for hidden in [
            "c&#97;sino night",
            "cas**ino** night",
            "[win](https://casino.example)",
        ] {
            assert!(hold_of(&b, &t, hidden).await.is_some(), "{hidden}");
        }
        let p = Banned::new(&[], &[r"v[i1]agra".into()]).unwrap().unwrap();
        assert!(hold_of(&p, &t, "cheap V1AGRA").await.is_some());
        assert!(Banned::new(&[], &["(unclosed".into()]).is_err());
        assert!(Banned::new(&[], &[]).unwrap().is_none());
    }

    #[tokio::test]
    async fn the_null_moderator_allows_and_holds_nothing() {
        let t = thread(Some(NOW + DAY_MS), false);
        assert_eq!(NullModerator.closed(&t, NOW), None);
        assert_eq!(
            hold_of(&NullModerator, &t, &"[x](https://x.org) ".repeat(50)).await,
            None
        );
    }
}
