//! `moderato export`: every thread, comment (all statuses, with the staff-only fields) and
//! audit entry as the JSON lines of docs/transfer.md, read inside one snapshot so a backup
//! taken while the server runs is consistent.

use super::moderato::{
    AuditRecord, CommentRecord, EndRecord, FORMAT_NAME, FORMAT_VERSION, Header, Record,
    ThreadRecord,
};
use crate::store::{COMMENT_COLUMNS, CommentRow, Store, StoreError};
use futures_util::TryStreamExt;
use std::io::Write;
use std::path::Path;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("there is no thread {0:?}")]
    NoThread(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ExportError {
    fn from(e: sqlx::Error) -> Self {
        ExportError::Store(StoreError::Sqlx(e))
    }
}

#[derive(sqlx::FromRow)]
struct ThreadRow {
    id: i64,
    key: String,
    kind: String,
    title: String,
    url: Option<String>,
    comments_enabled: i64,
    published_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    comment_id: Option<i64>,
    thread: Option<String>,
    status_before: Option<String>,
    status_after: Option<String>,
    detail: Option<String>,
}

fn line<W: Write>(out: &mut W, record: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

/// This database's id in exports (created on first use).
pub(crate) async fn instance_id(store: &Store) -> Result<String, StoreError> {
    store
        .setting_or_insert("instance_id", &crate::token::random_token(16))
        .await
}

/// Writes the export of every thread (or of `thread` alone) to `out`.
pub(crate) async fn export_to<W: Write + Send>(
    store: &Store,
    thread: Option<&str>,
    out: &mut W,
    path_for_errors: &str,
) -> Result<EndRecord, ExportError> {
    let io = |source: std::io::Error| ExportError::Io {
        path: path_for_errors.to_owned(),
        source,
    };
    let instance = instance_id(store).await?;
    let mut tx = store.pool.begin().await?;
    if super::is_postgres(store) {
        // One snapshot for every query below, while the server keeps writing.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    // On SQLite (WAL) the transaction's first read fixes its snapshot.
    let threads = match thread {
        Some(key) => {
            sqlx::query_as::<_, ThreadRow>(
                "SELECT id, key, kind, title, url, comments_enabled, published_at, created_at, \
                 updated_at FROM threads WHERE key = $1",
            )
            .bind(key)
            .fetch_all(&mut *tx)
            .await?
        }
        None => {
            sqlx::query_as::<_, ThreadRow>(
                "SELECT id, key, kind, title, url, comments_enabled, published_at, created_at, \
                 updated_at FROM threads ORDER BY id",
            )
            .fetch_all(&mut *tx)
            .await?
        }
    };
    if let Some(key) = thread
        && threads.is_empty()
    {
        return Err(ExportError::NoThread(key.to_owned()));
    }
    line(
        out,
        &Record::Header(Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            instance,
            exported_at: crate::comment::rfc3339(crate::store::now_ms()),
            thread: thread.map(str::to_owned),
        }),
    )
    .map_err(io)?;
    let mut end = EndRecord {
        threads: 0,
        comments: 0,
        audit: 0,
    };
    let comments_sql =
        format!("SELECT {COMMENT_COLUMNS} FROM comments WHERE thread_id = $1 ORDER BY path");
    for t in &threads {
        line(
            out,
            &Record::Thread(ThreadRecord {
                key: t.key.clone(),
                kind: t.kind.clone(),
                title: t.title.clone(),
                url: t.url.clone(),
                comments_enabled: t.comments_enabled != 0,
                published_at: t.published_at,
                created_at: t.created_at,
                updated_at: t.updated_at,
            }),
        )
        .map_err(io)?;
        end.threads += 1;
        let mut rows = sqlx::query_as::<_, CommentRow>(&comments_sql)
            .bind(t.id)
            .fetch(&mut *tx);
        while let Some(c) = rows.try_next().await? {
            line(
                out,
                &Record::Comment(CommentRecord {
                    id: c.id,
                    thread: t.key.clone(),
                    parent_id: c.parent_id,
                    author_name: c.author_name,
                    author_email: c.author_email,
                    author_url: c.author_url,
                    title: c.title,
                    body_source: c.body_source,
                    body_html: c.body_html,
                    status: c.status,
                    moderator: c.moderator,
                    reason: c.reason,
                    score: c.score,
                    ip: c.ip,
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                }),
            )
            .map_err(io)?;
            end.comments += 1;
        }
    }
    let audit_sql = "SELECT a.id, a.at, a.actor, a.action, a.comment_id, t.key AS thread, \
         a.status_before, a.status_after, a.detail FROM audit_log a \
         LEFT JOIN threads t ON t.id = a.thread_id";
    let audit_rows = match threads.first().filter(|_| thread.is_some()) {
        Some(t) => {
            let sql = format!("{audit_sql} WHERE a.thread_id = $1 ORDER BY a.id");
            sqlx::query_as::<_, AuditRow>(&sql)
                .bind(t.id)
                .fetch_all(&mut *tx)
                .await?
        }
        None => {
            let sql = format!("{audit_sql} ORDER BY a.id");
            sqlx::query_as::<_, AuditRow>(&sql)
                .fetch_all(&mut *tx)
                .await?
        }
    };
    for a in audit_rows {
        line(
            out,
            &Record::Audit(AuditRecord {
                id: a.id,
                at: a.at,
                actor: a.actor,
                action: a.action,
                comment_id: a.comment_id,
                thread: a.thread,
                status_before: a.status_before,
                status_after: a.status_after,
                detail: a.detail,
            }),
        )
        .map_err(io)?;
        end.audit += 1;
    }
    tx.commit().await?;
    line(out, &Record::End(end.clone())).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(end)
}

/// Writes the export to a file, gzip-compressed when its name ends in `.gz`. The file
/// appears only when complete (written beside it, then renamed).
pub(crate) async fn export_file(
    store: &Store,
    thread: Option<&str>,
    path: &Path,
) -> Result<EndRecord, ExportError> {
    let shown = path.display().to_string();
    let io = |source: std::io::Error| ExportError::Io {
        path: shown.clone(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".moderato-export-")
        .tempfile_in(&dir)
        .map_err(io)?;
    let file = temp.as_file().try_clone().map_err(io)?;
    let mut buffered = std::io::BufWriter::with_capacity(1 << 16, file);
    let end = if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(&mut buffered, flate2::Compression::fast());
        let end = export_to(store, thread, &mut gz, &shown).await?;
        gz.finish().map_err(io)?;
        end
    } else {
        export_to(store, thread, &mut buffered, &shown).await?
    };
    buffered.flush().map_err(io)?;
    drop(buffered);
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(end)
}
