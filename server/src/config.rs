//! The TOML configuration: every key optional, defaults as documented in the README.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub comments: CommentsConfig,
    pub moderation: ModerationConfig,
    pub smtp: SmtpConfig,
    pub spam: SpamConfig,
    pub limits: LimitsConfig,
    pub live: LiveConfig,
    pub site: SiteConfig,
    pub embed: EmbedConfig,
    pub backup: crate::transfer::backup::BackupConfig,
    pub privacy: PrivacyConfig,
    pub cache: CacheConfig,
    /// `[[webhooks]]`: receivers told about comments (see `crate::webhook`).
    pub webhooks: Vec<WebhookConfig>,
}

/// One `[[webhooks]]` table: where to POST, which events, and the signing secret.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// An http:// or https:// URL the deliveries are POSTed to.
    pub url: String,
    /// The events this receiver gets (at least one).
    pub events: Vec<WebhookEvent>,
    /// The key of the `X-Moderato-Signature` HMAC; prefer `secret_file`.
    #[serde(default)]
    pub secret: String,
    /// A file whose first line is the secret, e.g. a container secret.
    #[serde(default)]
    pub secret_file: String,
    /// Seconds one delivery (connect, TLS, request, the answer's status line) may take.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    /// Seconds before the first retry of a failed delivery; each further retry waits twice
    /// as long, at most an hour, for up to two days.
    #[serde(default = "default_webhook_retry")]
    pub retry_after_secs: u64,
}

fn default_webhook_timeout() -> u64 {
    10
}

fn default_webhook_retry() -> u64 {
    30
}

/// What a webhook can be told: a comment reached a status, as a new comment or by a staff
/// decision. The names are `comment_` and the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    CommentPublished,
    CommentHeld,
    CommentSpam,
    CommentRejected,
    CommentRemoved,
}

impl WebhookEvent {
    /// The name in the configuration, the payload and `X-Moderato-Event`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::CommentPublished => "comment_published",
            WebhookEvent::CommentHeld => "comment_held",
            WebhookEvent::CommentSpam => "comment_spam",
            WebhookEvent::CommentRejected => "comment_rejected",
            WebhookEvent::CommentRemoved => "comment_removed",
        }
    }

    /// The event of a comment that now has `status` (a stored status name).
    pub fn of_status(status: &str) -> Option<WebhookEvent> {
        Some(match status {
            "published" => WebhookEvent::CommentPublished,
            "held" => WebhookEvent::CommentHeld,
            "spam" => WebhookEvent::CommentSpam,
            "rejected" => WebhookEvent::CommentRejected,
            "removed" => WebhookEvent::CommentRemoved,
            _ => return None,
        })
    }
}

impl WebhookConfig {
    /// The secret: the first line of `secret_file` when set, else `secret`.
    pub fn secret(&self) -> Result<String, ConfigError> {
        if !self.secret_file.is_empty() {
            let text = std::fs::read_to_string(&self.secret_file).map_err(|e| {
                ConfigError::Invalid(format!(
                    "webhooks ({}): secret_file {:?}: {e}",
                    self.url, self.secret_file
                ))
            })?;
            return Ok(text.lines().next().unwrap_or("").to_owned());
        }
        Ok(self.secret.clone())
    }

    /// Checks what can be checked without reading files: the URL, the events, the timeout.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("webhooks: {m}"));
        let url = url::Url::parse(&self.url)
            .map_err(|e| bad(format!("url {:?} is not a URL: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(bad(format!(
                "url {:?} must be an http:// or https:// URL with a host",
                self.url
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(format!(
                "url {:?}: no user or password in the URL (the secret signs each delivery)",
                self.url
            )));
        }
        if self.events.is_empty() {
            return Err(bad(format!(
                "{:?}: events must name at least one event",
                self.url
            )));
        }
        if self.secret.is_empty() && self.secret_file.is_empty() {
            return Err(bad(format!(
                "{:?}: a secret (or secret_file) is needed to sign deliveries",
                self.url
            )));
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return Err(bad(format!(
                "{:?}: timeout_secs must be between 1 and 120",
                self.url
            )));
        }
        if self.retry_after_secs == 0 {
            return Err(bad(format!(
                "{:?}: retry_after_secs must be at least 1",
                self.url
            )));
        }
        Ok(())
    }
}

/// `[privacy]`: how long personal data is kept (purged by the hourly housekeeping).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Commenters' IP addresses are forgotten this many days after the comment; 0 keeps
    /// them.
    pub keep_ip_days: u32,
    /// Audit log entries older than this many days are deleted; 0 keeps them all.
    pub keep_audit_days: u32,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            keep_ip_days: 30,
            keep_audit_days: 0,
        }
    }
}

/// `[cache]`: the anonymous view of thread pages, kept in memory between changes
/// (`crate::http::cache`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory for rendered pages and thread JSON, in MiB; 0 renders every request afresh.
    pub pages_mb: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { pages_mb: 64 }
    }
}

/// `[embed]`: which other sites may show these comments (see `crate::engine::embed`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// Origins (`scheme://host[:port]`) whose pages may frame `/embed/*`, read the counts
    /// and the HTML fragment, and create a thread on first use. Empty: no other site.
    pub allowed_origins: Vec<String>,
    /// What happens to a trailing slash in a page URL an embed sends: "keep", "strip" or
    /// "add", so `/post` and `/post/` are one page on sites that serve both.
    pub trailing_slash: String,
    /// Threads an embed may create per client IP per minute; 0 turns the limit off. Reading
    /// and posting on existing threads are not counted.
    pub new_threads_per_minute: u32,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            allowed_origins: Vec::new(),
            trailing_slash: "keep".into(),
            new_threads_per_minute: 10,
        }
    }
}

/// `[site]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// The public address, e.g. "https://comments.example.org". When it is https, session
    /// cookies are marked Secure. Empty: taken from each request's Host header.
    pub public_url: String,
    /// Reverse proxies (CIDR, e.g. "127.0.0.1/32") whose `Forwarded` / `X-Forwarded-For`
    /// name the client. Requests from anywhere else are taken at their connection's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `[comments]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommentsConfig {
    /// Global switch: false closes every thread.
    pub enabled: bool,
    /// Any of "email", "url", "title": neither shown nor required.
    pub exclude_fields: Vec<String>,
    /// Body limit, in characters.
    pub max_length: usize,
    /// Deeper replies are accepted and shown at this indent.
    pub max_depth: u32,
    /// The first visit or post creates an unknown thread.
    pub auto_create_threads: bool,
    /// Top-level comments per page of a thread.
    pub page_size: usize,
    /// Comments (at any depth) per page of a thread; a longer subtree continues on "show more".
    pub page_max_comments: usize,
    /// How long a form token stays valid, in minutes.
    pub form_token_minutes: i64,
    /// Offer "notify me of replies" (needs `site.public_url` and a working `[smtp]`).
    pub reply_notifications: bool,
}

impl Default for CommentsConfig {
    fn default() -> Self {
        CommentsConfig {
            enabled: true,
            exclude_fields: Vec::new(),
            max_length: 5000,
            max_depth: 8,
            auto_create_threads: false,
            page_size: 50,
            page_max_comments: 300,
            form_token_minutes: 120,
            reply_notifications: false,
        }
    }
}

/// `[moderation]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModerationConfig {
    /// "standard", or "none" for the null moderator.
    pub default: String,
    /// "none" | "all" | "first".
    pub pre_moderation: String,
    pub max_links: usize,
    pub notify_emails: Vec<String>,
    /// Mail each staff account that has an email (`moderato user set-email`) about every
    /// held comment, with signed approve / reject / spam links that act as that account.
    pub mail_staff: bool,
    /// Words that hold a comment (case-insensitive, whole words).
    pub banned_words: Vec<String>,
    /// Regular expressions that hold a comment.
    pub banned_patterns: Vec<String>,
    /// One table per thread kind.
    pub kinds: BTreeMap<String, KindConfig>,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        ModerationConfig {
            default: "standard".into(),
            pre_moderation: "none".into(),
            max_links: 3,
            notify_emails: Vec::new(),
            mail_staff: false,
            banned_words: Vec::new(),
            banned_patterns: Vec::new(),
            kinds: BTreeMap::new(),
        }
    }
}

/// `[moderation.kinds.X]`: a key left out turns that option off for the kind.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindConfig {
    pub enable_field: bool,
    pub close_after_days: Option<i64>,
    pub moderate_after_days: Option<i64>,
    pub email_notification: bool,
}

/// `[smtp]`: where mail goes, and how much of it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub from: String,
    /// How the connection is secured: a relay on this machine needs none; a mail provider
    /// wants "starttls" (usually port 587) or "tls" (port 465).
    pub security: SmtpSecurity,
    /// Sign in with this user name (empty: no sign-in).
    pub username: String,
    /// The password; prefer `password_file` or the MODERATO_SMTP_PASSWORD environment
    /// variable, which keep it out of the configuration file.
    pub password: String,
    /// A file holding the password (its first line), e.g. a container secret.
    pub password_file: String,
    /// Seconds one SMTP exchange may take before the try counts as failed.
    pub timeout_secs: u64,
    /// Seconds before the first retry of a mail that could not be sent; each further retry
    /// waits twice as long, at most an hour, for up to two days.
    pub retry_after_secs: u64,
    /// Mails one address gets in an hour at most; more are dropped (and recorded as such),
    /// so a flood of comments is not a flood of mail. 0: no limit.
    pub max_per_recipient_per_hour: u32,
    /// Mails sent in a day at most, to everyone together. 0: no limit.
    pub max_per_day: u32,
}

/// `[smtp] security`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP, for a relay on this machine or a private network.
    #[default]
    None,
    /// Plain connection upgraded with STARTTLS, which must succeed.
    Starttls,
    /// TLS from the first byte ("SMTPS").
    Tls,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            from: "moderato@localhost".into(),
            security: SmtpSecurity::None,
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            timeout_secs: 10,
            retry_after_secs: 30,
            max_per_recipient_per_hour: 20,
            max_per_day: 1000,
        }
    }
}

impl SmtpConfig {
    /// The sign-in password: MODERATO_SMTP_PASSWORD, else the first line of
    /// `password_file`, else `password`.
    pub fn password(&self) -> Result<String, ConfigError> {
        if let Ok(p) = std::env::var("MODERATO_SMTP_PASSWORD")
            && !p.is_empty()
        {
            return Ok(p);
        }
        if !self.password_file.is_empty() {
            let text = std::fs::read_to_string(&self.password_file).map_err(|e| {
                ConfigError::Invalid(format!("smtp.password_file {:?}: {e}", self.password_file))
            })?;
            return Ok(text.lines().next().unwrap_or("").to_owned());
        }
        Ok(self.password.clone())
    }
}

/// `[spam]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpamConfig {
    /// P(spam) at or above: held as spam.
    pub threshold: f64,
    /// Train on the corpus shipped in the binary as well as the site's own decisions, so
    /// the filter works from the first comment.
    pub bundled_corpus: bool,
    /// Comments with fewer words than this are not judged: two or three words are too little
    /// evidence, and short replies ("A reply", "Great post!") were the false positives seen.
    pub min_words: usize,
}

impl Default for SpamConfig {
    fn default() -> Self {
        SpamConfig {
            threshold: 0.9,
            bundled_corpus: true,
            min_words: 5,
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Comment POSTs per client IP per minute; 0 turns the limit off.
    pub posts_per_minute: u32,
    /// Larger request bodies get 413 before parsing.
    pub max_body_bytes: usize,
    /// Sign-in attempts per client IP per minute.
    pub sign_ins_per_minute: u32,
    /// Seconds a client has to send a request's head (slowloris).
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    pub body_timeout_secs: u64,
    /// HTTP connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            posts_per_minute: 10,
            max_body_bytes: 65536,
            sign_ins_per_minute: 5,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 4096,
        }
    }
}

/// `[live]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    pub max_connections_per_ip: u32,
    pub max_messages_per_minute: u32,
    pub max_subscriptions: u32,
    pub max_message_bytes: usize,
    /// How long live events are kept for reconnecting clients to catch up.
    pub retention_hours: u32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            max_connections_per_ip: 10,
            max_messages_per_minute: 100,
            max_subscriptions: 50,
            max_message_bytes: 4096,
            retention_hours: 72,
        }
    }
}

/// A configuration that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "config".into(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for f in &self.comments.exclude_fields {
            if !matches!(f.as_str(), "email" | "url" | "title") {
                return Err(ConfigError::Invalid(format!(
                    "comments.exclude_fields: unknown field {f:?} (allowed: email, url, title)"
                )));
            }
        }
        if self.comments.max_length == 0 {
            return Err(ConfigError::Invalid(
                "comments.max_length must be at least 1".into(),
            ));
        }
        if self.comments.max_depth == 0 {
            return Err(ConfigError::Invalid(
                "comments.max_depth must be at least 1".into(),
            ));
        }
        if self.comments.page_size == 0 || self.comments.page_max_comments == 0 {
            return Err(ConfigError::Invalid(
                "comments.page_size and comments.page_max_comments must be at least 1".into(),
            ));
        }
        if !matches!(self.moderation.default.as_str(), "standard" | "none") {
            return Err(ConfigError::Invalid(format!(
                "moderation.default: {:?} is not \"standard\" or \"none\"",
                self.moderation.default
            )));
        }
        if !matches!(
            self.moderation.pre_moderation.as_str(),
            "none" | "all" | "first"
        ) {
            return Err(ConfigError::Invalid(format!(
                "moderation.pre_moderation: {:?} is not \"none\", \"all\" or \"first\"",
                self.moderation.pre_moderation
            )));
        }
        for o in &self.embed.allowed_origins {
            if crate::engine::embed::normalise_origin(o).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "embed.allowed_origins: {o:?} is not an origin like \"https://blog.example.org\" \
                     (scheme, host and port only: no path)"
                )));
            }
        }
        if !matches!(self.embed.trailing_slash.as_str(), "keep" | "strip" | "add") {
            return Err(ConfigError::Invalid(format!(
                "embed.trailing_slash: {:?} is not \"keep\", \"strip\" or \"add\"",
                self.embed.trailing_slash
            )));
        }
        self.backup.validate().map_err(ConfigError::Invalid)?;
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate()?;
            // Deliveries name their receiver by URL (the outbox keeps no secrets).
            if self.webhooks[..i].iter().any(|o| o.url == w.url) {
                return Err(ConfigError::Invalid(format!(
                    "webhooks: {:?} is configured twice (one table per URL; list every event in it)",
                    w.url
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.spam.threshold) {
            return Err(ConfigError::Invalid(
                "spam.threshold must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether a form field is switched off by `comments.exclude_fields`.
    pub fn excludes(&self, field: &str) -> bool {
        self.comments.exclude_fields.iter().any(|f| f == field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert!(c.comments.enabled);
        assert_eq!(c.comments.max_length, 5000);
        assert_eq!(c.comments.max_depth, 8);
        assert_eq!(c.moderation.max_links, 3);
        assert_eq!(c.spam.threshold, 0.9);
        assert_eq!(c.limits.posts_per_minute, 10);
        assert_eq!(c.limits.max_body_bytes, 65536);
        assert_eq!(c.live.max_connections_per_ip, 10);
    }

    #[test]
    fn kind_tables_leave_unset_options_off() {
        let c =
            Config::parse("[moderation.kinds.post]\nenable_field = true\nclose_after_days = 30\n")
                .unwrap();
        let post = &c.moderation.kinds["post"];
        assert!(post.enable_field);
        assert_eq!(post.close_after_days, Some(30));
        assert_eq!(post.moderate_after_days, None);
        assert!(!post.email_notification);
    }

    #[test]
    fn bad_values_are_reported_by_key() {
        let err = Config::parse("[comments]\nexclude_fields = [\"name\"]\n").unwrap_err();
        assert!(err.to_string().contains("exclude_fields"), "{err}");
        let err = Config::parse("[comments]\nmax_lenght = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_lenght"), "{err}");
        let err = Config::parse("[moderation]\npre_moderation = \"some\"\n").unwrap_err();
        assert!(err.to_string().contains("pre_moderation"), "{err}");
    }

    #[test]
    fn webhooks_need_a_usable_url_known_events_and_a_secret() {
        let hook = |body: &str| Config::parse(&format!("[[webhooks]]\n{body}\n"));
        let c = hook(
            "url = \"https://hooks.example.org/x?token=1\"\nevents = [\"comment_published\", \"comment_held\"]\nsecret = \"s\"",
        )
        .unwrap();
        let w = &c.webhooks[0];
        assert_eq!(
            w.events,
            [WebhookEvent::CommentPublished, WebhookEvent::CommentHeld]
        );
        assert_eq!((w.timeout_secs, w.retry_after_secs), (10, 30));
        for (body, says) in [
            (
                "url = \"hooks.example.org\"\nevents = [\"comment_held\"]\nsecret = \"s\"",
                "not a URL",
            ),
            (
                "url = \"ftp://example.org/\"\nevents = [\"comment_held\"]\nsecret = \"s\"",
                "http://",
            ),
            (
                "url = \"http://u:p@example.org/\"\nevents = [\"comment_held\"]\nsecret = \"s\"",
                "no user",
            ),
            (
                "url = \"http://example.org/\"\nevents = [\"comment_posted\"]\nsecret = \"s\"",
                "comment_posted",
            ),
            (
                "url = \"http://example.org/\"\nevents = []\nsecret = \"s\"",
                "at least one",
            ),
            (
                "url = \"http://example.org/\"\nevents = [\"comment_held\"]",
                "secret",
            ),
            (
                "url = \"http://example.org/\"\nevents = [\"comment_held\"]\nsecret = \"s\"\ntimeout_secs = 0",
                "timeout_secs",
            ),
            (
                "url = \"http://example.org/\"\nevents = [\"comment_held\"]\nsecret = \"s\"\nsecrte = \"s\"",
                "secrte",
            ),
        ] {
            let err = hook(body).unwrap_err().to_string();
            assert!(err.contains(says), "{body}: {err}");
        }
        let twice = "[[webhooks]]\nurl = \"http://example.org/\"\nevents = [\"comment_held\"]\nsecret = \"s\"\n";
        let err = Config::parse(&format!("{twice}{twice}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
