//! Mail with links that act: reply notifications ("notify me of replies" with double opt-in,
//! unsubscribe from a thread or from everything) and staff mail about held comments
//! (approve / reject / spam as that staff member).
//!
//! A link's token is `base64url(payload).base64url(HMAC-SHA256(payload))`, payload
//! `purpose \n subject \n id \n expiry (Unix ms)`, signed with a key derived from the site's
//! secret for this use only, so a form token can never pass for a mail link.

use super::Engine;
use crate::auth::Staff;
use crate::error::{Error, Result};
use crate::moderation::Letter;
use crate::store::{CommentRow, ThreadRow, Tx, now_ms};
use app::model::{ModerationAction, Status};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const DAY_MS: i64 = 86_400_000;
/// How long a confirmation link works.
const CONFIRM_DAYS: i64 = 7;
/// How long an unsubscribe link works (mail is often read late).
const UNSUBSCRIBE_DAYS: i64 = 90;
/// How long a staff action link works.
const MODERATE_DAYS: i64 = 14;

/// What a mail link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPurpose {
    Confirm,
    UnsubscribeThread,
    UnsubscribeAll,
    /// A staff action on a held comment.
    Moderate(ModerationAction),
}

/// The staff actions a mail offers.
const MAIL_ACTIONS: [ModerationAction; 3] = [
    ModerationAction::Approve,
    ModerationAction::Reject,
    ModerationAction::Spam,
];

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Confirm => "confirm",
            LinkPurpose::UnsubscribeThread => "unsubscribe-thread",
            LinkPurpose::UnsubscribeAll => "unsubscribe-all",
            LinkPurpose::Moderate(ModerationAction::Approve) => "approve",
            LinkPurpose::Moderate(ModerationAction::Reject) => "reject",
            LinkPurpose::Moderate(ModerationAction::Spam) => "spam",
            LinkPurpose::Moderate(_) => "other",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            LinkPurpose::Confirm,
            LinkPurpose::UnsubscribeThread,
            LinkPurpose::UnsubscribeAll,
        ]
        .into_iter()
        .chain(MAIL_ACTIONS.map(LinkPurpose::Moderate))
        .find(|p| p.as_str() == s)
    }
}

/// A mail link that checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailLink {
    pub purpose: LinkPurpose,
    /// Whom it is for: an address (lower case), or a staff member's user id.
    pub subject: String,
    /// What it is about: the thread of an unsubscribe-from-thread link, the comment of a staff
    /// action; 0 otherwise.
    pub id: i64,
}

/// Signs and checks mail links, and makes their absolute addresses.
pub(crate) struct MailLinks {
    key: Vec<u8>,
    public_url: String,
}

impl MailLinks {
    /// Links under `public_url` (no trailing slash), signed with a key derived from `secret`.
    pub fn new(secret: &str, public_url: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(b"moderato mail links v1");
        MailLinks {
            key: mac.finalize().into_bytes().to_vec(),
            public_url: public_url.to_owned(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key")
    }

    /// A token for `purpose` on `email` (and `thread_id`), valid until `expires_at`.
    pub fn token(&self, purpose: LinkPurpose, subject: &str, id: i64, expires_at: i64) -> String {
        let payload = format!("{}\n{subject}\n{id}\n{expires_at}", purpose.as_str());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!(
            "{}.{}",
            B64.encode(payload.as_bytes()),
            B64.encode(mac.finalize().into_bytes())
        )
    }

    /// Checks a token's signature and expiry.
    pub fn verify(&self, token: &str, now: i64) -> Result<MailLink> {
        let invalid = || Error::invalid("t", "This link is not valid.");
        let (payload, sig) = token.trim().split_once('.').ok_or_else(invalid)?;
        let payload = B64.decode(payload).map_err(|_| invalid())?;
        let sig = B64.decode(sig).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&sig).map_err(|_| invalid())?;
        let payload = String::from_utf8(payload).map_err(|_| invalid())?;
        let parts: Vec<&str> = payload.split('\n').collect();
        let [purpose, subject, id, expires_at] = parts[..] else {
            return Err(invalid());
        };
        let expires_at: i64 = expires_at.parse().map_err(|_| invalid())?;
        if now >= expires_at {
            return Err(Error::invalid(
                "t",
                "This link has expired; the newest mail about replies has a fresh one.",
            ));
        }
        Ok(MailLink {
            purpose: LinkPurpose::parse(purpose).ok_or_else(invalid)?,
            subject: subject.to_owned(),
            id: id.parse().map_err(|_| invalid())?,
        })
    }

    /// The absolute address of a link.
    pub fn url(&self, purpose: LinkPurpose, subject: &str, id: i64, now: i64) -> String {
        let (path, days) = match purpose {
            LinkPurpose::Confirm => ("confirm", CONFIRM_DAYS),
            LinkPurpose::Moderate(_) => ("moderate", MODERATE_DAYS),
            _ => ("unsubscribe", UNSUBSCRIBE_DAYS),
        };
        let token = self.token(purpose, subject, id, now + days * DAY_MS);
        format!("{}/mail/{path}?t={token}", self.public_url)
    }

    fn site(&self) -> &str {
        self.public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |(_, rest)| rest)
    }
}

/// Addresses are compared and stored in lower case.
fn normal(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Engine {
    /// In a new comment's transaction: the poster asked for reply mail. Marks the comment,
    /// and the first time the address asks (or after it unsubscribed from everything) queues
    /// the confirmation mail, which is all it gets until it confirms.
    pub(crate) async fn ask_for_replies(&self, tx: &mut Tx, c: &CommentRow) -> Result<Vec<Letter>> {
        let (Some(links), Some(email)) = (&self.mail_links, &c.author_email) else {
            return Ok(Vec::new());
        };
        tx.want_reply_mail(c.id).await?;
        let now = now_ms();
        let email = normal(email);
        if !tx.ask_for_reply_mail(&email, now).await? {
            return Ok(Vec::new());
        }
        let confirm = links.url(LinkPurpose::Confirm, &email, 0, now);
        let unsubscribe = links.url(LinkPurpose::UnsubscribeAll, &email, 0, now);
        Ok(vec![Letter {
            to: email.clone(),
            subject: format!("Confirm reply notifications from {}", links.site()),
            body: format!(
                "Someone, probably you, commented on {site} and asked to be mailed when \
                 someone replies.\n\nTo confirm, open this link and press \"Confirm\" \
                 (it works for {CONFIRM_DAYS} days):\n{confirm}\n\nIf it was not you, ignore \
                 this mail: nothing else will be sent. Never mail from {site}:\n{unsubscribe}\n",
                site = links.site()
            ),
            list_unsubscribe: Some(unsubscribe),
        }])
    }

    /// In the transaction that publishes `reply` (posted, or approved by staff): the mail to
    /// the author of the comment it answers, if they asked, confirmed and did not
    /// unsubscribe, and are not the reply's own author.
    pub(crate) async fn reply_letters(
        &self,
        tx: &mut Tx,
        reply: &CommentRow,
        thread: &ThreadRow,
    ) -> Result<Vec<Letter>> {
        let (Some(links), Some(parent_id)) = (&self.mail_links, reply.parent_id) else {
            return Ok(Vec::new());
        };
        let Some(target) = tx.reply_target(parent_id).await? else {
            return Ok(Vec::new());
        };
        let email = normal(&target.email);
        if reply.author_email.as_deref().map(normal) == Some(email.clone()) {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let link = format!(
            "{}/t/{}#c{}",
            links.public_url,
            app::api::encode_key(&thread.key),
            reply.id
        );
        let thread_off = links.url(LinkPurpose::UnsubscribeThread, &email, thread.id, now);
        let all_off = links.url(LinkPurpose::UnsubscribeAll, &email, 0, now);
        Ok(vec![Letter {
            to: email,
            subject: format!(
                "[{}] {} replied to your comment",
                thread.title, reply.author_name
            ),
            body: format!(
                "Hello {name},\n\n{author} replied to your comment on \"{title}\":\n\n{text}\n\n\
                 Read it and answer: {link}\n\n--\nNo more mail about this thread: {thread_off}\n\
                 No more mail from {site}: {all_off}\n",
                name = target.author_name,
                author = reply.author_name,
                title = thread.title,
                text = reply.body_source,
                site = links.site(),
            ),
            list_unsubscribe: Some(all_off),
        }])
    }

    /// In the transaction that holds a new comment: with `[moderation] mail_staff`, mail to
    /// each staff account with an address, with the comment, why it is held and signed links
    /// that approve, reject or mark it as spam as that account (after a confirmation page).
    pub(crate) async fn staff_letters(
        &self,
        tx: &mut Tx,
        c: &CommentRow,
        thread: &ThreadRow,
    ) -> Result<Vec<Letter>> {
        let Some(links) = &self.mail_links else {
            return Ok(Vec::new());
        };
        if !self.config.moderation.mail_staff || c.status == Status::Published.as_str() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut letters = Vec::new();
        for (user_id, name, email) in tx.staff_addresses().await? {
            let mut body = format!(
                "Hello {name},\n\n{author} wrote on \"{title}\" ({status}):\n\n{text}\n\n",
                author = c.author_name,
                title = thread.title,
                status = c.status,
                text = c.body_source,
            );
            if let Some(reason) = &c.reason {
                body.push_str(&format!(
                    "Held by {}: {reason}",
                    c.moderator.as_deref().unwrap_or("a moderator")
                ));
                if let Some(score) = c.score {
                    body.push_str(&format!(" (score {score:.3})"));
                }
                body.push_str("\n\n");
            }
            for action in MAIL_ACTIONS {
                let url = links.url(
                    LinkPurpose::Moderate(action),
                    &user_id.to_string(),
                    c.id,
                    now,
                );
                body.push_str(&format!("{}: {url}\n", action_label(action)));
            }
            body.push_str(&format!(
                "\nEach link opens a page that asks before it acts, as {name}. \
                 The queue: {}/moderation\n",
                links.public_url
            ));
            letters.push(Letter {
                to: email,
                subject: format!("[{}] Held: a comment from {}", thread.title, c.author_name),
                body,
                list_unsubscribe: None,
            });
        }
        Ok(letters)
    }

    /// The staff member a staff action link acts as, if they still are staff.
    async fn mail_link_staff(&self, link: &MailLink) -> Result<Staff> {
        let id: i64 = link
            .subject
            .parse()
            .map_err(|_| Error::invalid("t", "This link is not valid."))?;
        match self.store.user_by_id(id).await? {
            Some(user) if user.is_staff != 0 => Ok(Staff::of_user(user.id, user.username)),
            _ => Err(Error::Forbidden(
                "This link's staff account no longer has staff rights.".into(),
            )),
        }
    }

    /// Checks a mail link without acting on it (the page a link opens asks first, so a mail
    /// scanner fetching it changes nothing).
    pub fn check_mail_link(&self, token: &str) -> Result<MailLink> {
        self.links()?.verify(token, now_ms())
    }

    /// Acts on a mail link: confirms the address, or unsubscribes it from the thread or from
    /// everything. Returns what it did.
    pub async fn use_mail_link(&self, token: &str) -> Result<MailLink> {
        let link = self.links()?.verify(token, now_ms())?;
        let now = now_ms();
        match link.purpose {
            LinkPurpose::Confirm => {
                if !self.store.confirm_subscriber(&link.subject, now).await? {
                    return Err(Error::invalid(
                        "t",
                        "This address unsubscribed since; ask again from a comment form.",
                    ));
                }
            }
            LinkPurpose::UnsubscribeThread => {
                self.store
                    .unsubscribe_thread(&link.subject, link.id, now)
                    .await?
            }
            LinkPurpose::UnsubscribeAll => self.store.unsubscribe_all(&link.subject, now).await?,
            LinkPurpose::Moderate(action) => {
                let staff = self.mail_link_staff(&link).await?;
                self.moderate(&staff, &[link.id], action).await?;
            }
        }
        Ok(link)
    }

    fn links(&self) -> Result<&MailLinks> {
        self.mail_links
            .as_ref()
            .ok_or_else(|| Error::NotFound("This site sends no mail.".into()))
    }
}

/// What a mail calls a staff action.
pub fn action_label(action: ModerationAction) -> &'static str {
    match action {
        ModerationAction::Approve => "Approve",
        ModerationAction::Reject => "Reject",
        ModerationAction::Spam => "Mark as spam",
        _ => "Act",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_until_they_expire_and_not_when_altered() {
        let links = MailLinks::new("secret", "https://c.example");
        let t = links.token(LinkPurpose::UnsubscribeThread, "ann@example.org", 7, 1_000);
        let link = links.verify(&t, 999).unwrap();
        assert_eq!(link.purpose, LinkPurpose::UnsubscribeThread);
        assert_eq!((link.subject.as_str(), link.id), ("ann@example.org", 7));
        assert!(links.verify(&t, 1_000).is_err(), "expired");
        // Another address under the same signature, or another site's key: refused.
        let (payload, sig) = t.split_once('.').unwrap();
        let forged = B64.encode(
            String::from_utf8(B64.decode(payload).unwrap())
                .unwrap()
                .replace("ann@", "bob@"),
        );
        assert!(links.verify(&format!("{forged}.{sig}"), 0).is_err());
        assert!(
            MailLinks::new("other", "https://c.example")
                .verify(&t, 0)
                .is_err()
        );
        assert!(
            links
                .url(LinkPurpose::Confirm, "a@b.example", 0, 0)
                .starts_with("https://c.example/mail/confirm?t=")
        );
    }
}
