//! Moderato's own export format (version 1, documented in docs/transfer.md): JSON lines, a
//! header first, then each thread followed by its comments in tree order, then the audit
//! log, then an end record with the counts, so a file cut short is noticed.

use super::{
    Body, Fate, ImportError, NativeExtra, Plan, PlannedThread, Position, SourceComment,
    SourceThread, Span, for_each_line, malformed,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// The version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The `format` value of the header.
pub const FORMAT_NAME: &str = "moderato-export";

/// One line of the file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    Thread(ThreadRecord),
    Comment(CommentRecord),
    Audit(AuditRecord),
    End(EndRecord),
}

/// The first line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The exporting database's random id: a backup restored into its own database is
    /// recognised comment by comment.
    pub instance: String,
    pub exported_at: String,
    /// Set when only one thread was exported.
    pub thread: Option<String>,
}

/// A thread. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub key: String,
    pub kind: String,
    pub title: String,
    pub url: Option<String>,
    pub comments_enabled: bool,
    pub published_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A comment of any status, with the staff-only fields. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommentRecord {
    pub id: i64,
    pub thread: String,
    pub parent_id: Option<i64>,
    pub author_name: String,
    pub author_email: Option<String>,
    pub author_url: Option<String>,
    pub title: Option<String>,
    /// The markdown source; the HTML is rendered from it again on import.
    pub body_source: String,
    pub body_html: String,
    pub status: String,
    pub moderator: Option<String>,
    pub reason: Option<String>,
    pub score: Option<f64>,
    pub ip: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An entry of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub comment_id: Option<i64>,
    /// The thread's key.
    pub thread: Option<String>,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    pub detail: Option<String>,
}

/// The last line: what the file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    pub threads: u64,
    pub comments: u64,
    pub audit: u64,
}

/// What the first pass of a Moderato import keeps besides the threads.
#[derive(Debug, Default)]
pub(crate) struct NativePlan {
    pub header: Option<Header>,
    pub audit: Vec<Span>,
    pub max_comment_id: i64,
    pub max_audit_id: i64,
}

const STATUSES: [&str; 5] = ["published", "held", "spam", "rejected", "removed"];

fn parse(line: &[u8], number: u64) -> Result<Record, ImportError> {
    serde_json::from_slice::<Record>(line).map_err(|e| {
        malformed(
            Position::Line {
                line: number,
                column: e.column() as u64,
            },
            format!("not a record of a Moderato export: {e}"),
        )
    })
}

pub(crate) fn scan(path: &Path, progress: &dyn Fn(u64)) -> Result<Plan, ImportError> {
    let mut native = NativePlan::default();
    let mut plan = Plan::default();
    let mut end: Option<(EndRecord, u64)> = None;
    let mut thread_keys: HashSet<String> = HashSet::new();
    let mut comment_ids: HashSet<i64> = HashSet::new();
    let mut in_thread: HashSet<i64> = HashSet::new();
    let mut audit = 0u64;
    for_each_line(path, progress, |line, offset, number| {
        let at = |message: String| {
            malformed(
                Position::Line {
                    line: number,
                    column: 1,
                },
                message,
            )
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if end.is_some() {
            return Err(at("a record after the end record".into()));
        }
        let record = parse(line, number)?;
        if native.header.is_none() && !matches!(record, Record::Header(_)) {
            return Err(at(
                "the first line must be the header of a Moderato export".into()
            ));
        }
        let len = u32::try_from(line.len()).map_err(|_| at("a line longer than 4 GB".into()))?;
        match record {
            Record::Header(h) => {
                if native.header.is_some() {
                    return Err(at("a second header".into()));
                }
                if h.format != FORMAT_NAME {
                    return Err(at(format!("format {:?} is not {FORMAT_NAME:?}", h.format)));
                }
                if h.version == 0 || h.version > FORMAT_VERSION {
                    return Err(at(format!(
                        "format version {} is not supported (this Moderato reads 1 to {FORMAT_VERSION})",
                        h.version
                    )));
                }
                plan.source = format!("moderato:{}", h.instance);
                native.header = Some(h);
            }
            Record::Thread(t) => {
                if !audit_free(audit) {
                    return Err(at("a thread after the audit log".into()));
                }
                if !crate::engine::valid_thread_key(&t.key) {
                    return Err(at(format!("{:?} is not a valid thread key", t.key)));
                }
                if !thread_keys.insert(t.key.clone()) {
                    return Err(at(format!("thread {:?} appears twice", t.key)));
                }
                in_thread.clear();
                plan.threads.push(PlannedThread {
                    thread: SourceThread {
                        source_id: t.key.clone(),
                        url: t.url.clone(),
                        identifier: None,
                        title: Some(t.title.clone()),
                        created_at: Some(t.created_at),
                        native: Some(t),
                    },
                    ..Default::default()
                });
            }
            Record::Comment(c) => {
                let current = plan
                    .threads
                    .last_mut()
                    .and_then(|t| t.thread.native.as_ref());
                if current.is_none_or(|t| t.key != c.thread) || !audit_free(audit) {
                    return Err(at(format!(
                        "comment {} of thread {:?} is not right after its thread's other records",
                        c.id, c.thread
                    )));
                }
                if !STATUSES.contains(&c.status.as_str()) {
                    return Err(at(format!(
                        "comment {}: unknown status {:?}",
                        c.id, c.status
                    )));
                }
                if c.id <= 0 || !comment_ids.insert(c.id) {
                    return Err(at(format!("comment id {} is invalid or repeated", c.id)));
                }
                if let Some(p) = c.parent_id
                    && !in_thread.contains(&p)
                {
                    return Err(at(format!(
                        "comment {}: its parent {p} is not an earlier comment of its thread",
                        c.id
                    )));
                }
                in_thread.insert(c.id);
                native.max_comment_id = native.max_comment_id.max(c.id);
                plan.comment_count += 1;
                if let Some(t) = plan.threads.last_mut() {
                    t.items.push(Span { start: offset, len });
                }
            }
            Record::Audit(a) => {
                if let Some(c) = a.comment_id
                    && !comment_ids.contains(&c)
                    && native.header.as_ref().is_some_and(|h| h.thread.is_none())
                {
                    return Err(at(format!(
                        "audit entry {}: comment {c} is not in the file",
                        a.id
                    )));
                }
                if let Some(t) = &a.thread
                    && !thread_keys.contains(t)
                {
                    return Err(at(format!(
                        "audit entry {}: thread {t:?} is not in the file",
                        a.id
                    )));
                }
                audit += 1;
                native.max_audit_id = native.max_audit_id.max(a.id);
                native.audit.push(Span { start: offset, len });
            }
            Record::End(e) => end = Some((e, number)),
        }
        Ok(())
    })?;
    let Some((end, number)) = end else {
        return Err(malformed(
            Position::Line { line: 1, column: 1 },
            "the file has no end record: is it cut short?",
        ));
    };
    let found = EndRecord {
        threads: plan.threads.len() as u64,
        comments: plan.comment_count,
        audit,
    };
    if found != end {
        return Err(malformed(
            Position::Line {
                line: number,
                column: 1,
            },
            format!("the end record counts {end:?}, but the file holds {found:?}"),
        ));
    }
    plan.native = Some(native);
    Ok(plan)
}

/// Audit records come last; nothing else may follow them but the end.
fn audit_free(audit: u64) -> bool {
    audit == 0
}

/// A comment record read again (the second pass).
pub(crate) fn comment_from_line(line: &[u8]) -> Result<SourceComment, ImportError> {
    let Record::Comment(c) = parse(line, 0)? else {
        return Err(malformed(
            Position::Line { line: 0, column: 0 },
            "the comment is gone on the second read",
        ));
    };
    Ok(SourceComment {
        source_id: c.id.to_string(),
        parent: c.parent_id.map(|p| p.to_string()),
        author_name: c.author_name,
        author_email: c.author_email,
        author_url: c.author_url,
        title: c.title,
        body: Body::Markdown(c.body_source),
        fate: Fate::Status(c.status),
        ip: c.ip,
        created_at: c.created_at,
        native: Some(NativeExtra {
            id: c.id,
            moderator: c.moderator,
            reason: c.reason,
            score: c.score,
            updated_at: c.updated_at,
            body_html: Some(c.body_html),
        }),
    })
}

/// An audit record read again.
pub(crate) fn audit_from_line(line: &[u8]) -> Result<AuditRecord, ImportError> {
    match parse(line, 0)? {
        Record::Audit(a) => Ok(a),
        _ => Err(malformed(
            Position::Line { line: 0, column: 0 },
            "the audit entry is gone on the second read",
        )),
    }
}
