//! Remark42 backups: JSON lines, a meta record (`{"version":1,"users":[..],"posts":[..]}`)
//! first, then one comment per line with its `locator.url` (the page), `pid` (the parent, ""
//! at the top), `text` (HTML), `orig` (the markdown it came from), `user`, `time` and
//! `delete`. Remark42 has no moderation queue, so comments are published or deleted.

use super::{
    Body, Fate, ImportError, Plan, PlannedThread, Position, SourceComment, SourceThread, Span,
    for_each_line, malformed, parse_rfc3339,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct Line {
    id: Option<String>,
    version: Option<u32>,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    orig: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    locator: Locator,
    time: Option<String>,
    #[serde(default)]
    delete: bool,
    #[serde(default)]
    title: String,
}

#[derive(Default, Deserialize)]
struct User {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

#[derive(Default, Deserialize)]
struct Locator {
    #[serde(default)]
    site: String,
    #[serde(default)]
    url: String,
}

/// A comment line and the page it is on.
pub(crate) struct Parsed {
    pub url: String,
    pub site: String,
    pub title: String,
    pub comment: SourceComment,
}

/// Parses one line; `None` for blank lines and the meta record.
pub(crate) fn parse_line(line: &[u8], number: u64) -> Result<Option<Parsed>, ImportError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let at = |column: usize, message: String| {
        malformed(
            Position::Line {
                line: number,
                column: column as u64,
            },
            message,
        )
    };
    let l: Line = serde_json::from_slice(line)
        .map_err(|e| at(e.column(), format!("not a Remark42 backup record: {e}")))?;
    let Some(id) = l.id.filter(|i| !i.is_empty()) else {
        if l.version.is_some() {
            return Ok(None);
        }
        return Err(at(1, "a record with neither an id nor a version".into()));
    };
    if l.locator.url.is_empty() {
        return Err(at(1, format!("comment {id} has no locator.url")));
    }
    let time = l
        .time
        .as_deref()
        .ok_or_else(|| at(1, format!("comment {id} has no time")))?;
    let created_at = parse_rfc3339(time)
        .ok_or_else(|| at(1, format!("comment {id}: time {time:?} is not RFC 3339")))?;
    let body = if l.orig.trim().is_empty() {
        Body::Html(l.text)
    } else {
        Body::Markdown(l.orig)
    };
    Ok(Some(Parsed {
        url: l.locator.url,
        site: l.locator.site,
        title: l.title,
        comment: SourceComment {
            source_id: id,
            parent: Some(l.pid).filter(|p| !p.is_empty()),
            author_name: if l.user.name.trim().is_empty() {
                "Anonymous".into()
            } else {
                l.user.name
            },
            author_email: Some(l.user.email).filter(|e| !e.is_empty()),
            author_url: None,
            title: None,
            body,
            fate: if l.delete {
                Fate::Deleted
            } else {
                Fate::Published
            },
            // Remark42 keeps only a hash of the address, which is no IP address.
            ip: None,
            created_at,
            native: None,
        },
    }))
}

pub(crate) fn scan(path: &Path, progress: &dyn Fn(u64)) -> Result<Plan, ImportError> {
    let mut plan = Plan::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut site = String::new();
    for_each_line(path, progress, |line, offset, number| {
        let Some(p) = parse_line(line, number)? else {
            return Ok(());
        };
        if site.is_empty() {
            site = p.site.clone();
        }
        let i = *index.entry(p.url.clone()).or_insert_with(|| {
            plan.threads.push(PlannedThread {
                thread: SourceThread {
                    source_id: p.url.clone(),
                    url: Some(p.url.clone()),
                    identifier: Some(p.url.clone()),
                    title: Some(p.title.clone()).filter(|t| !t.is_empty()),
                    created_at: None,
                    native: None,
                },
                ..Default::default()
            });
            plan.threads.len() - 1
        });
        let len = u32::try_from(line.len()).map_err(|_| {
            malformed(
                Position::Line {
                    line: number,
                    column: 1,
                },
                "a line longer than 4 GB",
            )
        })?;
        plan.threads[i].items.push(Span { start: offset, len });
        plan.comment_count += 1;
        Ok(())
    })?;
    plan.source = if site.is_empty() {
        "remark42".into()
    } else {
        format!("remark42:{site}")
    };
    Ok(plan)
}
