//! Notification email over SMTP, with lettre's typed headers: a commenter's name or a thread
//! title can never add a header, because each goes through a typed, encoded field.

use crate::config::SmtpConfig;
use crate::store::{CommentRow, ThreadRow};
use lettre::message::{Mailbox, Message, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// Tries per mail: the first, then after 0.5 s and 2 s.
const SEND_ATTEMPTS: usize = 3;
/// Per SMTP command; a relay that hangs longer than this counts as a failed try.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends staff notifications.
pub struct Mailer {
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

/// A mail that could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {0:?}: {1}")]
    Address(String, String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

impl Mailer {
    /// A mailer for `[smtp]` and the `notify_emails` recipients; `None` without recipients.
    pub fn new(smtp: &SmtpConfig, recipients: &[String]) -> Result<Option<Mailer>, MailError> {
        if recipients.is_empty() {
            return Ok(None);
        }
        let parse = |s: &str| {
            s.parse::<Mailbox>()
                .map_err(|e| MailError::Address(s.to_owned(), e.to_string()))
        };
        let from = parse(&smtp.from)?;
        let to = recipients
            .iter()
            .map(|r| parse(r))
            .collect::<Result<_, _>>()?;
        // Plain SMTP to a relay the operator runs (usually on localhost).
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .timeout(Some(SEND_TIMEOUT))
            .build();
        Ok(Some(Mailer {
            from,
            to,
            transport,
        }))
    }

    /// Tells the staff about a new comment.
    pub async fn notify_comment(&self, c: &CommentRow, t: &ThreadRow) -> Result<(), MailError> {
        let held = c.status != "published";
        let subject = if held {
            format!(
                "[{}] Comment awaiting moderation from {}",
                t.title, c.author_name
            )
        } else {
            format!("[{}] New comment from {}", t.title, c.author_name)
        };
        let mut body = format!(
            "{} wrote on \"{}\" (/t/{}#c{}):\n\n{}\n\nStatus: {}",
            c.author_name, t.title, t.key, c.id, c.body_source, c.status
        );
        if let Some(reason) = &c.reason {
            body.push_str(&format!(" ({reason})"));
        }
        body.push('\n');
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder.body(body)?;
        // A relay that is restarting or briefly refusing connections must not cost the staff
        // their mail: a few tries, further apart each time, before giving up and logging it.
        let mut wait = Duration::from_millis(500);
        for _ in 1..SEND_ATTEMPTS {
            match self.transport.send(message.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "notification email not sent yet");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
            }
        }
        self.transport.send(message).await?;
        Ok(())
    }
}
