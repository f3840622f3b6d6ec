//! The engine: every use case of Moderato (what the HTTP API, the pages and the CLI ask of
//! it), in plain Rust with no HTTP types. Each change runs in one store transaction that also
//! writes its live events (the outbox), and publishes those events only after commit.
//!
//! Authorisation is part of the signatures: a staff use case takes a [`Staff`] proof, which
//! only an authenticated staff [`Viewer`] (or the CLI's operator) can give.
//!
//! Layout: this file holds the engine and the reads; `post` the posting use case; `staff`
//! moderation, the queue, the audit log, the spam filter and accounts; `demo` the demo thread.

pub(crate) mod cluster;
mod demo;
pub(crate) mod embed;
mod post;
mod replies;
pub use replies::{LinkPurpose, MailLink, action_label};
mod staff;
mod stats;
mod transfer;

use crate::auth::{self, Credentials, Staff, Viewer};
use crate::comment;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{self, DbEventSource, PendingEvent};
use crate::filter::{SpamFilter, SpamModerator};
use crate::live::{self, Hub};
use crate::mail::Mailer;
use crate::moderation::Registry;
use crate::moderation::builtin::StaffMail;
use crate::store::{CommentRow, Store, ThreadRow, Tx, now_ms};
use crate::token::{FormSigner, random_token};
use crate::webhook::Webhooks;
use app::model::{
    FormSettings, FormToken, ThreadInfo, ThreadList, ThreadPage, ThreadResponse, ViewerInfo,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

pub use crate::store::ThreadSpec;
pub use post::{PostOutcome, Posted};

/// Shared state behind every request. Built once by [`Engine::new`] (or [`Engine::open`]);
/// its parts are private, so every caller goes through a use case.
pub struct Engine {
    store: Store,
    config: Arc<Config>,
    signer: FormSigner,
    post_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    sign_in_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Threads created by embeds, per client address.
    embed_thread_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Which moderators run for which thread kind.
    registry: Registry,
    /// The Naive Bayes filter (also the pipeline's "spam" moderator).
    spam: Arc<SpamFilter>,
    /// Live updates: events are published here after their change commits.
    hub: Hub,
    /// How committed events reach the hub: directly, or in order with the other instances'
    /// (PostgreSQL, see `cluster`).
    fanout: Arc<cluster::Fanout>,
    /// Writes the staff's stats event after posts, one for many (see `stats`).
    stats_after_posts: stats::StatsAfterPosts,
    /// This process's random id, so it can tell its own announcements from others'.
    instance: String,
    /// Woken when sessions end in this process (sign-out, a password change), so live
    /// connections opened as staff check their rights at once (see [`Engine::staff_ended`]).
    sessions_ended: tokio::sync::Notify,
    /// Sends the mail outbox, when `[moderation] notify_emails` or
    /// `[comments] reply_notifications` asks for mail.
    mailer: Option<Arc<Mailer>>,
    /// Signs the links in reply notifications, when they are on.
    mail_links: Option<replies::MailLinks>,
    /// Woken when a transaction that queued mail commits.
    mail_queued: Arc<tokio::sync::Notify>,
    /// `[[webhooks]]`: what queues deliveries and the worker that makes them.
    webhooks: Option<Arc<Webhooks>>,
}

/// What sending mail needs, when `notify_emails` or `reply_notifications` asks for mail.
struct MailSetup {
    mailer: Arc<Mailer>,
    /// email_notification's recipients, when there are any.
    staff: Option<Arc<StaffMail>>,
    /// `site.public_url` without a trailing slash.
    public_url: String,
}

/// Refuses a configuration that asks for mail but cannot send it (bad addresses, no
/// `site.public_url` for the links, an unreadable password file).
fn mail_setup(config: &Config) -> Result<Option<MailSetup>> {
    let recipients = &config.moderation.notify_emails;
    if recipients.is_empty()
        && !config.comments.reply_notifications
        && !config.moderation.mail_staff
    {
        return Ok(None);
    }
    let bad = |e: crate::mail::MailError| {
        Error::invalid("config", format!("moderation.notify_emails / smtp: {e}"))
    };
    for r in recipients {
        crate::mail::mailbox(r).map_err(bad)?;
    }
    let public_url = config.site.public_url.trim().trim_end_matches('/');
    if !public_url.starts_with("http://") && !public_url.starts_with("https://") {
        return Err(Error::invalid(
            "config",
            "site.public_url (e.g. \"https://comments.example.org\") is needed to send mail: \
             links in mail must be absolute",
        ));
    }
    Ok(Some(MailSetup {
        mailer: Arc::new(Mailer::new(&config.smtp).map_err(bad)?),
        staff: (!recipients.is_empty()).then(|| {
            Arc::new(StaffMail {
                recipients: recipients.clone(),
                public_url: public_url.to_owned(),
            })
        }),
        public_url: public_url.to_owned(),
    }))
}

/// How often a live connection opened as staff re-checks that its session or API key still
/// makes it staff, for changes this process is not told of (another instance's sign-out, a
/// `moderato user` or `key revoke` command, a session expiring).
pub const STAFF_RECHECK: std::time::Duration = std::time::Duration::from_secs(15);

/// What a live connection was authenticated with, kept to check it again later.
#[derive(Clone, Debug)]
pub struct LiveCredentials {
    /// The `Authorization` header of the upgrade request.
    pub authorization: Option<String>,
    /// The session the upgrade request carried.
    pub session_id: Option<String>,
}

/// The hub's limits from `[live]`.
fn live_limits(c: &crate::config::LiveConfig) -> live::Limits {
    live::Limits {
        max_connections_per_ip: c.max_connections_per_ip,
        max_messages_per_minute: c.max_messages_per_minute,
        max_subscriptions: c.max_subscriptions,
        max_message_bytes: c.max_message_bytes,
        ..live::Limits::default()
    }
}

/// Keys that name something else: the live protocol's staff room.
pub const RESERVED_THREAD_KEYS: &[&str] = &[app::live::MODERATION_ROOM];

/// The id of a thread that reads as empty but is not stored (see `find_thread_to_read`).
const UNSAVED_THREAD_ID: i64 = 0;

/// A key a new thread may have: well formed and not reserved.
pub fn usable_thread_key(key: &str) -> bool {
    valid_thread_key(key) && !RESERVED_THREAD_KEYS.contains(&key)
}

/// Checks a thread key: 1 to 200 characters of letters, digits, `-`, `_`, `.` or `~`.
pub fn valid_thread_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= 200
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
}

/// How long to wait before a limiter allows the next attempt, in whole seconds (at least 1).
fn retry_after(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    not_until
        .wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ))
        .as_secs()
        .max(1)
}

impl Engine {
    /// Opens (creating and migrating) the database at `url` and builds the engine over it.
    pub async fn open(url: &str, config: Config) -> Result<Engine> {
        let store = Store::open(url).await?;
        Engine::new(store, config).await
    }

    /// Builds the engine over an opened store; creates the form secret on first start.
    pub(crate) async fn new(store: Store, config: Config) -> Result<Engine> {
        let secret = store
            .setting_or_insert("form_secret", &random_token(32))
            .await?;
        let post_limiter = NonZeroU32::new(config.limits.posts_per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        let embed_thread_limiter = NonZeroU32::new(config.embed.new_threads_per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        let sign_ins =
            NonZeroU32::new(config.limits.sign_ins_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let mail = mail_setup(&config)?;
        let staff_mail = mail.as_ref().and_then(|m| m.staff.clone());
        let webhooks = Webhooks::from_config(&config)
            .map_err(|e| Error::invalid("config", e))?
            .map(Arc::new);
        let spam = Arc::new(
            SpamFilter::load_or_train(&store, config.spam.threshold, config.spam.bundled_corpus)
                .await?,
        );
        let registry = Registry::from_config(
            &config,
            Arc::new(SpamModerator {
                filter: spam.clone(),
                min_words: config.spam.min_words,
            }),
            staff_mail,
        )?;
        let hub = Hub::new(
            live_limits(&config.live),
            Arc::new(DbEventSource {
                store: store.clone(),
            }),
        );
        // Signed links are for reply notifications and staff action mail.
        let mail_links = mail
            .as_ref()
            .filter(|_| config.comments.reply_notifications || config.moderation.mail_staff)
            .map(|m| replies::MailLinks::new(&secret, &m.public_url));
        let fanout = Arc::new(cluster::Fanout::new(hub.clone()));
        let stats_after_posts = stats::StatsAfterPosts::start(store.clone(), fanout.clone());
        Ok(Engine {
            store,
            config: Arc::new(config),
            signer: FormSigner::new(secret.as_bytes()),
            post_limiter,
            sign_in_limiter: RateLimiter::keyed(Quota::per_minute(sign_ins)),
            embed_thread_limiter,
            registry,
            spam,
            fanout,
            stats_after_posts,
            instance: random_token(8),
            hub,
            sessions_ended: tokio::sync::Notify::new(),
            mail_links,
            mailer: mail.map(|m| m.mailer),
            mail_queued: Arc::new(tokio::sync::Notify::new()),
            webhooks,
        })
    }

    /// Starts the mail outbox's worker (`moderato serve` does, once per process), when mail
    /// is configured; abort the handle to stop it.
    pub fn spawn_mail_outbox(&self) -> Option<tokio::task::JoinHandle<()>> {
        let mailer = self.mailer.clone()?;
        Some(tokio::spawn(
            mailer.run(self.store.clone(), self.mail_queued.clone()),
        ))
    }

    /// Queues `letters` in `tx`; call [`Engine::mail_committed`] after it commits.
    pub(crate) async fn queue_letters(
        tx: &mut Tx,
        letters: &[crate::moderation::Letter],
    ) -> Result<()> {
        let now = now_ms();
        for l in letters {
            tx.queue_mail(
                &l.to,
                &l.subject,
                &l.body,
                l.list_unsubscribe.as_deref(),
                now,
            )
            .await?;
        }
        if !letters.is_empty() {
            // The outbox worker may run in another instance (PostgreSQL): wake it at commit.
            cluster::wake_at_commit(tx, cluster::Job::Mail).await?;
        }
        Ok(())
    }

    /// Wakes the outbox worker: mail was committed.
    pub(crate) fn mail_committed(&self) {
        self.mail_queued.notify_one();
    }

    /// Starts the webhook worker (`moderato serve` does, once per process), when webhooks
    /// are configured; abort the handle to stop it.
    pub fn spawn_webhooks(&self) -> Option<tokio::task::JoinHandle<()>> {
        let webhooks = self.webhooks.clone()?;
        Some(tokio::spawn(webhooks.run(self.store.clone())))
    }

    /// Queues in `tx` the webhook deliveries a new comment causes (none without webhooks);
    /// the worker is woken when `tx` commits through [`Engine::commit_and_publish`].
    pub(crate) async fn queue_webhooks_for_new(
        &self,
        tx: &mut Tx,
        comment: &CommentRow,
        thread: &ThreadRow,
    ) -> Result<()> {
        if let Some(w) = &self.webhooks {
            w.comment_stored(tx, comment, thread).await?;
            cluster::wake_at_commit(tx, cluster::Job::Webhooks).await?;
        }
        Ok(())
    }

    /// Queues in `tx` the webhook deliveries staff decisions cause: `(status before, comment
    /// after)` per changed comment.
    pub(crate) async fn queue_webhooks_for_decisions(
        &self,
        tx: &mut Tx,
        changes: &[(String, CommentRow)],
    ) -> Result<()> {
        if let Some(w) = &self.webhooks {
            w.status_changed(tx, changes).await?;
            cluster::wake_at_commit(tx, cluster::Job::Webhooks).await?;
        }
        Ok(())
    }

    /// Tells this process's staff connections that sessions ended (see `sessions_ended`).
    pub(crate) fn sessions_changed(&self) {
        self.sessions_ended.notify_waiters();
    }

    /// Completes when `creds` no longer make a staff member: the session was signed out,
    /// expired or deleted, the user lost staff rights, or the API key was revoked. Checked
    /// at once when this process ends a session, else every [`STAFF_RECHECK`]. A database
    /// error counts as "still staff" until the next check: a blip must not throw everyone out.
    pub async fn staff_ended(self: Arc<Self>, creds: LiveCredentials) {
        loop {
            let ended = self.sessions_ended.notified();
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep(STAFF_RECHECK) => {}
            }
            if let Ok(false) = self.is_still_staff(&creds).await {
                return;
            }
        }
    }

    async fn is_still_staff(&self, creds: &LiveCredentials) -> Result<bool> {
        let session_user = match &creds.session_id {
            Some(id) => self
                .store
                .session_load(id, now_ms())
                .await?
                .and_then(|data| serde_json::from_str::<serde_json::Value>(&data).ok())
                .and_then(|r| r["data"][auth::USER_ID_KEY].as_i64()),
            None => None,
        };
        let creds = Credentials {
            authorization: creds.authorization.clone(),
            session_user,
        };
        Ok(match auth::viewer(&self.store, &creds).await? {
            Ok(viewer) => viewer.is_staff(),
            Err(_) => false,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The live hub, for the WebSocket route to hand connections to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Staff sessions, kept in this engine's database.
    pub(crate) fn session_store(&self) -> auth::DbSessionStore {
        auth::DbSessionStore::new(self.store.clone())
    }

    /// True when the database answers.
    pub async fn healthy(&self) -> bool {
        self.store.ping().await
    }

    /// Closes the database connections (at shutdown; or a test taking the database away).
    pub async fn close(&self) {
        if let Some((commits, kept)) = self.store.write_counts() {
            // How much group commit saved: one fsync per commit.
            tracing::info!("SQLite writes: {kept} transactions in {commits} commits");
        }
        self.store.close().await;
    }

    /// Forgets spent form nonces, live events past the retention window, expired sessions,
    /// old IP addresses and old audit entries (`[privacy]`); runs hourly.
    pub async fn housekeeping(&self) {
        let now = now_ms();
        if let Err(e) = self.store.purge_nonces(now).await {
            tracing::warn!(error = %e, "purging form nonces failed");
        }
        let retention = self.config.live.retention_hours as i64 * 3_600_000;
        if let Err(e) = self.store.prune_events(now - retention).await {
            tracing::warn!(error = %e, "pruning live events failed");
        }
        if let Err(e) = self.store.purge_sessions(now).await {
            tracing::warn!(error = %e, "purging expired sessions failed");
        }
        const DAY_MS: i64 = 86_400_000;
        let privacy = &self.config.privacy;
        if privacy.keep_ip_days > 0
            && let Err(e) = self
                .store
                .forget_ips(now - i64::from(privacy.keep_ip_days) * DAY_MS)
                .await
        {
            tracing::warn!(error = %e, "forgetting old IP addresses failed");
        }
        if privacy.keep_audit_days > 0
            && let Err(e) = self
                .store
                .purge_audit(now - i64::from(privacy.keep_audit_days) * DAY_MS)
                .await
        {
            tracing::warn!(error = %e, "purging the audit log failed");
        }
        self.prune_limiters();
    }

    /// Forgets the addresses whose limits have refilled, so limiter memory follows the
    /// clients of the last minutes, not every address ever seen.
    fn prune_limiters(&self) {
        let limiters = [
            self.post_limiter.as_ref(),
            Some(&self.sign_in_limiter),
            self.embed_thread_limiter.as_ref(),
        ];
        for l in limiters.into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Who a request comes from, given what it presented. Unknown API keys are refused (401).
    pub async fn viewer(&self, creds: &Credentials) -> Result<Viewer> {
        auth::viewer(&self.store, creds)
            .await?
            .map_err(|e| Error::Unauthenticated(e.to_string()))
    }

    /// Checks a sign-in; rate-limited per client address. Returns the user id (for the
    /// session) and the viewer.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<(i64, Viewer)> {
        if let Some(ip) = ip
            && let Some(retry_after_secs) = self.over_limit(cluster::Limit::SignIns, ip).await?
        {
            return Err(Error::RateLimited {
                message: "too many sign-in attempts; wait a minute".into(),
                retry_after_secs,
            });
        }
        auth::sign_in(&self.store, username, password)
            .await?
            .ok_or_else(|| Error::Unauthenticated("invalid username or password".into()))
    }

    /// Who closed a thread to comments right now and why: the global switch
    /// ("comments.enabled") or a moderator of the thread's kind.
    fn closed_reason(&self, thread: &ThreadRow) -> Option<(String, String)> {
        if !self.config.comments.enabled {
            return Some((
                "comments.enabled".to_owned(),
                "Comments are closed.".to_owned(),
            ));
        }
        // The thread's own switch holds whatever the moderators are (also with
        // `default = "none"` and for kinds that leave `enable_field` out).
        use crate::moderation::{Moderator, builtin::EnableField};
        let now = now_ms();
        if let Some(reason) = EnableField.closed(thread, now) {
            return Some((EnableField.name().to_owned(), reason));
        }
        self.registry.pipeline(&thread.kind).closed(thread, now)
    }

    fn form_settings(&self) -> FormSettings {
        FormSettings {
            exclude_fields: self.config.comments.exclude_fields.clone(),
            max_length: self.config.comments.max_length,
            max_depth: self.config.comments.max_depth,
            reply_notifications: self.config.comments.reply_notifications,
        }
    }

    /// The thread a post goes to, created first when `auto_create_threads` is on.
    async fn find_thread(&self, key: &str) -> Result<ThreadRow> {
        match self.find_thread_to_read(key).await? {
            t if t.id != UNSAVED_THREAD_ID => Ok(t),
            _ => Ok(self
                .store
                .set_thread(&ThreadSpec {
                    key: key.to_owned(),
                    ..Default::default()
                })
                .await?),
        }
    }

    /// The thread a read shows. With `auto_create_threads`, an unknown thread reads as an
    /// empty open one without being stored: only a post creates it, so a crawler (or an
    /// attacker) walking made-up URLs writes nothing.
    async fn find_thread_to_read(&self, key: &str) -> Result<ThreadRow> {
        let missing = || Error::NotFound(format!("There is no thread {key:?}."));
        if !usable_thread_key(key) {
            return Err(missing());
        }
        if let Some(t) = self.store.thread(key).await? {
            return Ok(t);
        }
        if self.config.comments.auto_create_threads {
            return Ok(ThreadRow {
                id: UNSAVED_THREAD_ID,
                key: key.to_owned(),
                kind: "page".into(),
                title: key.to_owned(),
                comments_enabled: 1,
                published_at: Some(now_ms()),
            });
        }
        Err(missing())
    }

    /// Creates or updates a thread (`moderato thread set`).
    pub async fn set_thread(&self, spec: &ThreadSpec) -> Result<ThreadInfo> {
        if RESERVED_THREAD_KEYS.contains(&spec.key.as_str()) {
            return Err(Error::invalid(
                "key",
                format!(
                    "{:?} is reserved (the live protocol and the site use it)",
                    spec.key
                ),
            ));
        }
        if !valid_thread_key(&spec.key) {
            return Err(Error::invalid(
                "key",
                format!(
                    "invalid thread key {:?}: use 1 to 200 letters, digits, '-', '_', '.' or '~'",
                    spec.key
                ),
            ));
        }
        let t = self.store.set_thread(spec).await?;
        let count = self.store.published_count(t.id).await?;
        Ok(self.thread_info(&t, count))
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

    /// Page `page` (from 1) of the threads, newest first, for the home page and
    /// `GET /api/threads`: a site with thousands of articles is never listed in one answer.
    pub async fn threads(&self, page: i64) -> Result<ThreadList> {
        let page = page.max(1);
        let per_page = app::model::THREADS_PER_PAGE;
        let (rows, total) = self
            .store
            .threads_with_counts(per_page, (page - 1).saturating_mul(per_page))
            .await?;
        Ok(ThreadList {
            threads: rows.iter().map(|(t, n)| self.thread_info(t, *n)).collect(),
            total,
            page,
            per_page,
        })
    }

    /// Comments of a thread in tree order, as `viewer` may see them.
    ///
    /// With `paged`, one page: at most `page_size` top-level subtrees starting after the
    /// cursor `after`, and at most `page_max_comments` comments (a long subtree continues on
    /// the next page). Without, the whole thread.
    pub async fn thread(
        &self,
        key: &str,
        after: Option<&str>,
        paged: bool,
        viewer: &Viewer,
    ) -> Result<ThreadResponse> {
        let thread = self.find_thread_to_read(key).await?;
        // Read before the comments: an event in between is then both on the page and
        // replayed, and the client drops the duplicate by id; never neither.
        let last_event_id = self.store.last_event_id(&thread.key).await?;
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
        let audience = viewer.audience();
        let comments = page
            .iter()
            .map(|r| comment::to_public(r, audience))
            .collect();
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
    ) -> Result<ThreadPage> {
        let data = self.thread(key, after, true, viewer).await?;
        let form = if data.thread.comments_open {
            Some(self.form_token(key).await?)
        } else {
            None
        };
        Ok(ThreadPage {
            data,
            form,
            viewer: viewer_info(viewer),
        })
    }

    /// A new signed, single-use form token for a thread.
    pub async fn form_token(&self, key: &str) -> Result<FormToken> {
        let thread = self.find_thread_to_read(key).await?;
        Ok(self.issue_form_token(&thread.key))
    }

    /// A new form token for the thread whose key is `thread_key`, without looking it up:
    /// for a cached page whose thread was read when it was rendered.
    pub(crate) fn issue_form_token(&self, thread_key: &str) -> FormToken {
        let expires_at = now_ms() + self.config.comments.form_token_minutes * 60_000;
        FormToken {
            token: self.signer.issue(thread_key, expires_at),
            expires_at: comment::rfc3339(expires_at),
        }
    }

    /// The version of a thread's public view (see [`Store::thread_version`]).
    pub(crate) async fn thread_version(&self, key: &str) -> Result<Option<(i64, i64)>> {
        Ok(self.store.thread_version(key).await?)
    }

    /// Writes `pending` into the transaction's outbox, commits, then publishes: nobody hears
    /// of a change before it is durable, and every committed change is announced.
    async fn commit_and_publish(&self, mut tx: Tx, pending: Vec<PendingEvent>) -> Result<()> {
        let published = events::write(&mut tx, pending).await?;
        let fanout = self.fanout.clone();
        tx.commit_then(Some(Box::new(move || fanout.publish(published))))
            .await?;
        // Any change may have queued webhook deliveries; the worker's look is one query.
        if let Some(w) = &self.webhooks {
            w.committed();
        }
        Ok(())
    }

    /// The staff stats event for the counts as `tx` sees them.
    async fn stats_event(tx: &mut Tx) -> Result<PendingEvent> {
        Ok(events::stats(&tx.status_counts().await?))
    }
}

/// What the page shows about who is looking.
pub fn viewer_info(viewer: &Viewer) -> ViewerInfo {
    ViewerInfo {
        name: viewer.name().map(str::to_owned),
        staff: viewer.is_staff(),
    }
}

/// Requires staff: the proof, or 401 (not signed in) / 403 (signed in, not staff).
pub fn require_staff(viewer: &Viewer) -> Result<&Staff> {
    match viewer {
        Viewer::Staff(s) => Ok(s),
        Viewer::User { .. } => Err(Error::Forbidden("staff only".into())),
        Viewer::Reader => Err(Error::Unauthenticated("sign in first".into())),
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

    #[tokio::test]
    async fn limiter_memory_follows_recent_clients_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut config = Config::default();
        config.spam.bundled_corpus = false;
        // 6,000 a minute: a key's state is fresh again 10 ms after its last use.
        config.limits.posts_per_minute = 6000;
        let engine = Engine::open(&url, config).await.unwrap();
        let limiter = engine.post_limiter.as_ref().unwrap();
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limiter.check_key(&ip).is_ok());
        }
        assert_eq!(limiter.len(), 1000);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        engine.housekeeping().await;
        assert_eq!(limiter.len(), 0);
    }

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

    #[test]
    fn staff_use_cases_refuse_readers_and_users_with_different_kinds() {
        assert!(matches!(
            require_staff(&Viewer::Reader),
            Err(Error::Unauthenticated(_))
        ));
        let user = Viewer::User {
            id: 1,
            name: "u".into(),
        };
        assert!(matches!(require_staff(&user), Err(Error::Forbidden(_))));
    }
}
