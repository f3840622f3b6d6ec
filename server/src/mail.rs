//! Mail: the SMTP transport (lettre, plain or TLS, with sign-in) and the outbox worker.
//!
//! A change that causes mail queues it in its own transaction (`Tx::queue_mail`); one
//! worker per process sends what is due, claiming each row first (so two instances never
//! send the same row at once), marks it sent, and on failure tries again later, each wait
//! twice the last (from `retry_after_secs`, at most an hour), for up to two days. Headers are
//! typed, so a commenter's name or a thread title can never add one.

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::store::{MailRow, Store, now_ms};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a sender's claim on a mail lasts: past it, another sender may take the mail (the
/// first one died mid-send). Longer than any SMTP exchange, so a live sender is never raced.
const CLAIM_MS: i64 = 5 * 60 * 1000;
/// The longest wait between two tries.
const MAX_RETRY_WAIT_MS: i64 = 60 * 60 * 1000;
/// After this long since its first failure a mail is given up.
pub(crate) const GIVE_UP_AFTER_MS: i64 = 48 * 60 * 60 * 1000;
/// How often the worker looks for due mail when nothing wakes it (retries come due).
const POLL: Duration = Duration::from_secs(5);
/// Mails read per look.
const BATCH: i64 = 50;

/// A mail that could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("{0}")]
    Config(String),
    #[error("the mail server did not finish within {0} s")]
    TimedOut(u64),
}

/// Parses an address as mail headers take it (`Name <a@b>` or `a@b`).
pub fn mailbox(s: &str) -> Result<Mailbox, MailError> {
    s.parse::<Mailbox>()
        .map_err(|e| MailError::Address(s.to_owned(), e.to_string()))
}

/// Sends outbox rows over SMTP as `[smtp]` says.
pub struct Mailer {
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    config: SmtpConfig,
}

impl Mailer {
    /// A transport for `[smtp]`: STARTTLS or TLS with the system's web PKI roots when asked,
    /// and sign-in when a user name is set.
    pub fn new(smtp: &SmtpConfig) -> Result<Mailer, MailError> {
        let from = mailbox(&smtp.from)?;
        let builder = match smtp.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
        };
        let mut builder = builder
            .port(smtp.port)
            .timeout(Some(Duration::from_secs(smtp.timeout_secs.max(1))));
        if !smtp.username.is_empty() {
            let password = smtp
                .password()
                .map_err(|e| MailError::Config(e.to_string()))?;
            builder = builder.credentials(Credentials::new(smtp.username.clone(), password));
        }
        Ok(Mailer {
            from,
            transport: builder.build(),
            config: smtp.clone(),
        })
    }

    async fn send(&self, mail: &MailRow) -> Result<(), MailError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(mailbox(&mail.recipient)?)
            .subject(mail.subject.clone())
            // A Message-ID made here: providers score mail without one as spam.
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        if let Some(url) = &mail.list_unsubscribe {
            // RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" to the
            // address, which unsubscribes without a page to click through. The URL is ours
            // (public_url + a signed token), so it holds no characters a header cannot.
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let message = builder.body(mail.body.clone())?;
        // lettre's own timeout covers connecting, not a server that stops answering midway
        // (seen: a refused sign-in left unanswered): bound the whole exchange, so one stuck
        // server never stops the worker.
        let limit = Duration::from_secs(self.config.timeout_secs.max(1) * 3);
        tokio::time::timeout(limit, self.transport.send(message))
            .await
            .map_err(|_| MailError::TimedOut(limit.as_secs()))??;
        Ok(())
    }

    /// Why `mail` must not go out now, if a limit says so.
    async fn over_limit(&self, store: &Store, mail: &MailRow, now: i64) -> Option<String> {
        let per_recipient = i64::from(self.config.max_per_recipient_per_hour);
        if per_recipient > 0 {
            match store
                .mail_sent_since(Some(&mail.recipient), now - 60 * 60 * 1000)
                .await
            {
                Ok(n) if n >= per_recipient => {
                    return Some(format!(
                        "over smtp.max_per_recipient_per_hour ({per_recipient})"
                    ));
                }
                _ => {}
            }
        }
        let per_day = i64::from(self.config.max_per_day);
        if per_day > 0
            && let Ok(n) = store.mail_sent_since(None, now - 24 * 60 * 60 * 1000).await
            && n >= per_day
        {
            return Some(format!("over smtp.max_per_day ({per_day})"));
        }
        None
    }

    /// Sends what is due until none is; returns how many were sent.
    pub async fn send_due(&self, store: &Store) -> usize {
        let mut sent = 0;
        loop {
            let now = now_ms();
            let due = match store.due_mail(now, BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "mail outbox unreadable");
                    return sent;
                }
            };
            let mut claimed = 0;
            for mail in &due {
                if !matches!(
                    store.claim_mail(mail.id, now, now + CLAIM_MS).await,
                    Ok(true)
                ) {
                    continue;
                }
                claimed += 1;
                if let Some(reason) = self.over_limit(store, mail, now).await {
                    tracing::warn!(mail = mail.id, %reason, "mail dropped");
                    let _ = store.mail_dropped(mail.id, &reason).await;
                    continue;
                }
                let result = self.send(mail).await;
                let now = now_ms();
                let recorded = match &result {
                    Ok(()) => {
                        sent += 1;
                        store.mail_sent(mail.id, now).await
                    }
                    Err(e) => {
                        let wait = retry_wait(self.config.retry_after_secs, mail.attempts);
                        let first_failure_age =
                            elapsed_retrying(self.config.retry_after_secs, mail.attempts + 1);
                        tracing::warn!(mail = mail.id, error = %e, retry_in_ms = wait, "mail not sent");
                        if first_failure_age > GIVE_UP_AFTER_MS {
                            store
                                .mail_dropped(
                                    mail.id,
                                    &format!("gave up after {} tries: {e}", mail.attempts + 1),
                                )
                                .await
                        } else {
                            store.mail_failed(mail.id, &e.to_string(), now + wait).await
                        }
                    }
                };
                if let Err(e) = recorded {
                    // The claim expires and the mail is tried again: at worst sent twice.
                    tracing::error!(mail = mail.id, error = %e, "mail outcome not recorded");
                }
            }
            // Nothing due, or nothing could be claimed (another sender has it, or the
            // database refuses): look again at the next wake-up, not in a busy loop.
            if claimed == 0 {
                return sent;
            }
        }
    }

    /// The worker: sends due mail whenever `wake` is notified (a change queued mail) and
    /// every few seconds (retries come due). Runs until its task is aborted.
    pub async fn run(self: Arc<Self>, store: Store, wake: Arc<Notify>) {
        loop {
            let woken = wake.notified();
            self.send_due(&store).await;
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// Milliseconds to wait after failed try number `attempts + 1`: `first` seconds, doubling
/// with each try, at most an hour.
pub(crate) fn retry_wait(first_secs: u64, attempts: i64) -> i64 {
    let first = (first_secs.max(1) as i64).saturating_mul(1000);
    let doublings = attempts.clamp(0, 20) as u32;
    first
        .saturating_mul(1i64 << doublings)
        .min(MAX_RETRY_WAIT_MS)
}

/// How long `tries` failed tries have been retried for, by the waits between them.
pub(crate) fn elapsed_retrying(first_secs: u64, tries: i64) -> i64 {
    (0..tries.saturating_sub(1))
        .map(|a| retry_wait(first_secs, a))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_an_hour_and_stop_after_two_days() {
        assert_eq!(retry_wait(30, 0), 30_000);
        assert_eq!(retry_wait(30, 1), 60_000);
        assert_eq!(retry_wait(30, 5), 960_000);
        assert_eq!(retry_wait(30, 9), MAX_RETRY_WAIT_MS);
        assert_eq!(retry_wait(30, 1_000), MAX_RETRY_WAIT_MS);
        // With 30 s, two days of tries are about 54: an hour-long outage is far inside.
        let tries = (1..200)
            .find(|&t| elapsed_retrying(30, t) > GIVE_UP_AFTER_MS)
            .unwrap();
        assert!((50..60).contains(&tries), "{tries}");
    }

    #[test]
    fn tls_transports_build_and_sign_in_needs_a_readable_password() {
        for security in [
            SmtpSecurity::None,
            SmtpSecurity::Starttls,
            SmtpSecurity::Tls,
        ] {
            let smtp = SmtpConfig {
                host: "mail.example.org".into(),
                security,
                ..SmtpConfig::default()
            };
            assert!(Mailer::new(&smtp).is_ok(), "{security:?}");
        }
        let smtp = SmtpConfig {
            username: "moderato".into(),
            password_file: "/nonexistent/smtp-password".into(),
            ..SmtpConfig::default()
        };
        let err = Mailer::new(&smtp).err().unwrap().to_string();
        assert!(err.contains("password_file"), "{err}");
        assert!(
            Mailer::new(&SmtpConfig {
                from: "not an address".into(),
                ..SmtpConfig::default()
            })
            .is_err()
        );
    }
}
