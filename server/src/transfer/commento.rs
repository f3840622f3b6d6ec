//! Commento's JSON export (`{"version":1,"comments":[..],"commenters":[..]}`): comments name
//! their page by `domain` and `url` (a path), their parent by `parentHex` ("root" at the top)
//! and their author by `commenterHex`; `state` is approved, unapproved or flagged.
//!
//! The export is one JSON document, not a stream of records, so it is read whole; Commento
//! itself builds it in memory and mails it, which keeps such files small.

use super::{
    Body, Fate, ImportError, Plan, PlannedThread, Position, SourceComment, SourceThread, io_error,
    malformed, parse_rfc3339,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct Export {
    version: Option<u32>,
    #[serde(default)]
    comments: Vec<Comment>,
    #[serde(default)]
    commenters: Vec<Commenter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Comment {
    comment_hex: String,
    #[serde(default)]
    domain: String,
    #[serde(default, rename = "url")]
    path: String,
    #[serde(default)]
    commenter_hex: String,
    #[serde(default)]
    markdown: String,
    #[serde(default)]
    parent_hex: String,
    #[serde(default)]
    state: String,
    creation_date: String,
    #[serde(default)]
    deleted: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Commenter {
    commenter_hex: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    link: String,
}

pub(crate) fn scan(path: &Path) -> Result<Plan, ImportError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let export: Export = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
        malformed(
            Position::Line {
                line: e.line() as u64,
                column: e.column() as u64,
            },
            format!("not a Commento export: {e}"),
        )
    })?;
    if export.version.is_some_and(|v| v != 1) {
        return Err(malformed(
            Position::Line { line: 1, column: 1 },
            format!(
                "Commento export version {:?} is not supported (1 is)",
                export.version
            ),
        ));
    }
    let commenters: HashMap<&str, &Commenter> = export
        .commenters
        .iter()
        .map(|c| (c.commenter_hex.as_str(), c))
        .collect();
    let mut plan = Plan {
        source: "commento".into(),
        ..Default::default()
    };
    let mut index: HashMap<String, usize> = HashMap::new();
    for (n, c) in export.comments.iter().enumerate() {
        let at = |message: String| {
            malformed(
                Position::Line { line: 1, column: 1 },
                format!("comment #{} ({}): {message}", n + 1, c.comment_hex),
            )
        };
        let created_at = parse_rfc3339(&c.creation_date).ok_or_else(|| {
            at(format!(
                "creationDate {:?} is not RFC 3339",
                c.creation_date
            ))
        })?;
        let fate = if c.deleted {
            Fate::Deleted
        } else {
            match c.state.as_str() {
                "approved" | "" => Fate::Published,
                "unapproved" | "flagged" => Fate::Held,
                other => return Err(at(format!("unknown state {other:?}"))),
            }
        };
        let url = if c.domain.is_empty() {
            c.path.clone()
        } else {
            format!("https://{}{}", c.domain, c.path)
        };
        let i = *index.entry(url.clone()).or_insert_with(|| {
            plan.threads.push(PlannedThread {
                thread: SourceThread {
                    source_id: url.clone(),
                    identifier: Some(c.path.clone()),
                    url: Some(url.clone()),
                    ..Default::default()
                },
                ..Default::default()
            });
            plan.threads.len() - 1
        });
        let who = commenters.get(c.commenter_hex.as_str());
        let text = |f: fn(&Commenter) -> &String| {
            // Commento writes "undefined" for a commenter without a link.
            who.map(|w| f(w).trim().to_owned())
                .filter(|s| !s.is_empty() && s != "undefined")
        };
        plan.threads[i].loaded.push(SourceComment {
            source_id: c.comment_hex.clone(),
            parent: Some(c.parent_hex.clone()).filter(|p| !p.is_empty() && p != "root"),
            author_name: text(|w| &w.name).unwrap_or_else(|| "Anonymous".into()),
            author_email: text(|w| &w.email),
            author_url: text(|w| &w.link),
            title: None,
            body: Body::Markdown(c.markdown.clone()),
            fate,
            ip: None,
            created_at,
            native: None,
        });
        plan.comment_count += 1;
    }
    Ok(plan)
}
