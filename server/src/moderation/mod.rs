//! Moderation: a pipeline of moderators per thread kind, as in Django's comment moderation.
//!
//! Every comment passes each moderator's `allow` (any "no" rejects it: 403, nothing stored),
//! then each `moderate` (the first "hold" keeps it from the public, with that moderator's
//! reason and score). Each moderator's `letters` (e.g. email_notification's mail to staff)
//! are queued in the comment's own transaction and sent after it commits.

pub mod builtin;

use crate::comment::NewComment;
use crate::config::{Config, ConfigError};
use crate::store::{CommentRow, Store, StoreError, ThreadRow};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a moderator looks at.
pub struct Candidate<'a> {
    pub thread: &'a ThreadRow,
    pub comment: &'a NewComment,
    /// Links in the body's markdown.
    pub links: usize,
    /// The body as a reader sees it (`comment::plain_text`): what words are judged on.
    pub text: &'a str,
    /// Unix milliseconds.
    pub now: i64,
    pub store: &'a Store,
}

/// A moderator's decision to keep a comment from the public.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub reason: String,
    pub score: Option<f64>,
    /// Held as spam (status "spam") rather than for review (status "held").
    pub spam: bool,
}

/// The pipeline's outcome for one comment.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Publish,
    Hold { moderator: String, hold: Hold },
    Reject { moderator: String, reason: String },
}

/// One step of moderation. Every hook has a default that lets the comment through.
#[async_trait::async_trait]
pub trait Moderator: Send + Sync {
    /// A short stable name, recorded with each decision.
    fn name(&self) -> &str;

    /// Why the thread is closed to all comments right now, if it is; the default `allow`
    /// rejects with it, and the thread page uses it to hide the form.
    fn closed(&self, _thread: &ThreadRow, _now: i64) -> Option<String> {
        None
    }

    /// `Err(reason)` rejects the comment.
    async fn allow(&self, c: &Candidate<'_>) -> Result<Result<(), String>, StoreError> {
        Ok(match self.closed(c.thread, c.now) {
            Some(reason) => Err(reason),
            None => Ok(()),
        })
    }

    /// `Some(hold)` keeps the comment from the public.
    async fn moderate(&self, _c: &Candidate<'_>) -> Result<Option<Hold>, StoreError> {
        Ok(None)
    }

    /// Mail about a comment that survived moderation (published or held), queued in the
    /// comment's own transaction and sent by the outbox worker (`crate::mail`).
    fn letters(&self, _comment: &CommentRow, _thread: &ThreadRow) -> Vec<Letter> {
        Vec::new()
    }
}

/// A mail to queue: to whom, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// A one-click unsubscribe address (RFC 8058) for the mail's headers.
    pub list_unsubscribe: Option<String>,
}

/// Moderators applied in order.
#[derive(Clone, Default)]
pub struct Pipeline {
    pub moderators: Vec<Arc<dyn Moderator>>,
}

impl Pipeline {
    /// A pipeline of these moderators, in this order.
    pub fn new(moderators: Vec<Arc<dyn Moderator>>) -> Self {
        Pipeline { moderators }
    }

    /// The names of the moderators, in order (the tests check the built pipelines by them).
    #[cfg(test)]
    pub fn names(&self) -> Vec<String> {
        self.moderators
            .iter()
            .map(|m| m.name().to_owned())
            .collect()
    }

    /// Which moderator closed the thread to comments now, and why, if one did.
    pub fn closed(&self, thread: &ThreadRow, now: i64) -> Option<(String, String)> {
        self.moderators
            .iter()
            .find_map(|m| m.closed(thread, now).map(|r| (m.name().to_owned(), r)))
    }

    /// Runs every `allow`, then every `moderate`.
    pub async fn decide(&self, c: &Candidate<'_>) -> Result<Verdict, StoreError> {
        for m in &self.moderators {
            if let Err(reason) = m.allow(c).await? {
                return Ok(Verdict::Reject {
                    moderator: m.name().to_owned(),
                    reason,
                });
            }
        }
        for m in &self.moderators {
            if let Some(hold) = m.moderate(c).await? {
                return Ok(Verdict::Hold {
                    moderator: m.name().to_owned(),
                    hold,
                });
            }
        }
        Ok(Verdict::Publish)
    }

    /// Every moderator's mail about a stored comment.
    pub fn letters(&self, comment: &CommentRow, thread: &ThreadRow) -> Vec<Letter> {
        self.moderators
            .iter()
            .flat_map(|m| m.letters(comment, thread))
            .collect()
    }
}

/// Registry errors, named as in Django.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the thread kind {0:?} is already moderated")]
    AlreadyModerated(String),
    /// Only `unregister` says this, and only the tests unregister: the server builds its
    /// registry once from the configuration.
    #[cfg(test)]
    #[error("the thread kind {0:?} is not moderated")]
    NotModerated(String),
}

/// Which pipeline moderates which thread kind; unregistered kinds get the default.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<Pipeline>>,
    default: Arc<Pipeline>,
}

impl Registry {
    /// A registry where every kind uses `default`.
    pub fn new(default: Pipeline) -> Self {
        Registry {
            kinds: BTreeMap::new(),
            default: Arc::new(default),
        }
    }

    /// Moderates threads of `kind` with `pipeline`.
    pub fn register(&mut self, kind: &str, pipeline: Pipeline) -> Result<(), RegistryError> {
        if self.kinds.contains_key(kind) {
            return Err(RegistryError::AlreadyModerated(kind.to_owned()));
        }
        self.kinds.insert(kind.to_owned(), Arc::new(pipeline));
        Ok(())
    }

    /// Returns `kind` to the default pipeline (Django's `unregister`; see `NotModerated`).
    #[cfg(test)]
    pub fn unregister(&mut self, kind: &str) -> Result<(), RegistryError> {
        self.kinds
            .remove(kind)
            .map(|_| ())
            .ok_or_else(|| RegistryError::NotModerated(kind.to_owned()))
    }

    /// The pipeline for a thread kind.
    pub fn pipeline(&self, kind: &str) -> &Pipeline {
        self.kinds.get(kind).unwrap_or(&self.default)
    }

    /// Builds the registry the configuration describes.
    pub fn from_config(
        config: &Config,
        spam: Arc<dyn Moderator>,
        staff_mail: Option<Arc<builtin::StaffMail>>,
    ) -> Result<Registry, ConfigError> {
        use builtin::*;
        let m = &config.moderation;
        // Options of [moderation] that apply to every kind under the standard moderator.
        let mut shared: Vec<Arc<dyn Moderator>> = Vec::new();
        match m.pre_moderation.as_str() {
            "all" => shared.push(Arc::new(PreModeration::All)),
            "first" => shared.push(Arc::new(PreModeration::First)),
            _ => {}
        }
        shared.push(Arc::new(MaxLinks(m.max_links)));
        if let Some(banned) =
            Banned::new(&m.banned_words, &m.banned_patterns).map_err(ConfigError::Invalid)?
        {
            shared.push(Arc::new(banned));
        }
        shared.push(spam);

        let default = if m.default == "none" {
            Pipeline::new(vec![Arc::new(NullModerator)])
        } else {
            let mut v: Vec<Arc<dyn Moderator>> = vec![Arc::new(EnableField)];
            v.extend(shared.iter().cloned());
            Pipeline::new(v)
        };
        let mut registry = Registry::new(default);
        for (kind, k) in &m.kinds {
            let mut v: Vec<Arc<dyn Moderator>> = Vec::new();
            if k.enable_field {
                v.push(Arc::new(EnableField));
            }
            if let Some(days) = k.close_after_days {
                v.push(Arc::new(CloseAfter { days }));
            }
            if let Some(days) = k.moderate_after_days {
                v.push(Arc::new(ModerateAfter { days }));
            }
            v.extend(shared.iter().cloned());
            if k.email_notification {
                match &staff_mail {
                    Some(mail) => v.push(Arc::new(EmailNotification { mail: mail.clone() })),
                    None => {
                        return Err(ConfigError::Invalid(format!(
                            "moderation.kinds.{kind}.email_notification needs moderation.notify_emails"
                        )));
                    }
                }
            }
            registry
                .register(kind, Pipeline::new(v))
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_a_kind_twice_is_already_moderated() {
        let mut r = Registry::new(Pipeline::default());
        r.register("post", Pipeline::default()).unwrap();
        assert_eq!(
            r.register("post", Pipeline::default()),
            Err(RegistryError::AlreadyModerated("post".into()))
        );
    }

    #[test]
    fn unregistering_an_unknown_kind_is_not_moderated() {
        let mut r = Registry::new(Pipeline::default());
        assert_eq!(
            r.unregister("page"),
            Err(RegistryError::NotModerated("page".into()))
        );
        r.register("page", Pipeline::default()).unwrap();
        assert_eq!(r.unregister("page"), Ok(()));
        assert_eq!(
            r.unregister("page"),
            Err(RegistryError::NotModerated("page".into()))
        );
    }

    #[test]
    fn unregistered_kinds_use_the_default_pipeline() {
        let mut r = Registry::new(Pipeline::new(vec![Arc::new(builtin::EnableField)]));
        r.register(
            "post",
            Pipeline::new(vec![Arc::new(builtin::NullModerator)]),
        )
        .unwrap();
        assert_eq!(r.pipeline("post").names(), ["none"]);
        assert_eq!(r.pipeline("page").names(), ["enable_field"]);
    }

    #[test]
    fn the_configuration_builds_kind_pipelines_in_order() {
        let config = Config::parse(
            "[moderation]\npre_moderation = \"first\"\n[moderation.kinds.post]\nenable_field = true\nclose_after_days = 30\nmoderate_after_days = 7\n",
        )
        .unwrap();
        let r = Registry::from_config(&config, Arc::new(builtin::NullModerator), None).unwrap();
        // The spam slot is filled by the caller (here a null moderator named "none").
        assert_eq!(
            r.pipeline("post").names(),
            [
                "enable_field",
                "close_after",
                "moderate_after",
                "pre_moderation",
                "max_links",
                "none"
            ]
        );
        assert_eq!(
            r.pipeline("page").names(),
            ["enable_field", "pre_moderation", "max_links", "none"]
        );
        let none = Config::parse("[moderation]\ndefault = \"none\"\n").unwrap();
        let r = Registry::from_config(&none, Arc::new(builtin::NullModerator), None).unwrap();
        assert_eq!(r.pipeline("page").names(), ["none"]);
    }

    #[test]
    fn email_notification_without_recipients_is_a_configuration_error() {
        let config = Config::parse("[moderation.kinds.post]\nemail_notification = true\n").unwrap();
        let err = Registry::from_config(&config, Arc::new(builtin::NullModerator), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("notify_emails"), "{err}");
    }
}
