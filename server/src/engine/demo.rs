//! The demo thread that `moderato serve --demo` creates on an empty database.

use super::Engine;
use crate::comment::render_markdown;
use crate::error::Result;
use crate::store::{NewCommentRow, ThreadSpec, now_ms};

/// (index of parent in this list, author, body)
const DEMO: &[(Option<usize>, &str, &str)] = &[
    (
        None,
        "Ada",
        "Welcome to **Moderato**! Replies nest, so conversations stay readable.",
    ),
    (Some(0), "Grace", "Nice. Can I reply to a reply?"),
    (Some(1), "Ada", "You can: click *reply* under any comment."),
    (
        Some(2),
        "Linus",
        "And collapse a whole branch with the `[–]` button.",
    ),
    (
        None,
        "Margaret",
        "Comments are written in markdown, with a live preview as you type.",
    ),
    (
        Some(4),
        "Ken",
        "Links are fine: [the README](https://example.org/readme).",
    ),
    (
        None,
        "Barbara",
        "Every comment passes the moderators before anyone else sees it.",
    ),
];

impl Engine {
    /// Seeds the demo thread when the database has no threads; returns whether it did.
    /// The comments are history, not news: they are stored in one transaction without
    /// live events.
    pub async fn seed_demo(&self) -> Result<bool> {
        if self.threads(1).await?.total > 0 {
            return Ok(false);
        }
        let thread = self
            .store
            .set_thread(&ThreadSpec {
                key: "welcome".into(),
                kind: Some("page".into()),
                title: Some("Welcome to Moderato".into()),
                comments_enabled: Some(true),
                published_at: None,
            })
            .await?;
        let start = now_ms() - 60_000 * DEMO.len() as i64;
        let mut tx = self.store.begin().await?;
        let mut stored: Vec<(i64, String, i64)> = Vec::new();
        for (i, (parent, author, body)) in DEMO.iter().enumerate() {
            let row = NewCommentRow {
                thread_id: thread.id,
                parent: parent.map(|p| stored[p].clone()),
                author_name: (*author).into(),
                author_email: None,
                author_url: None,
                title: None,
                body_source: (*body).into(),
                body_html: render_markdown(body),
                status: "published".into(),
                moderator: None,
                reason: None,
                score: None,
                ip: None,
                created_at: start + 60_000 * i as i64,
            };
            let c = tx.insert_comment(&row).await?;
            stored.push((c.id, c.path, c.depth));
        }
        tx.commit().await?;
        Ok(true)
    }
}
