//! Isso's SQLite database, opened read-only: `threads (id, uri, title)` and `comments (tid,
//! id, parent, created, mode, remote_addr, text, author, email, website, ...)`, where mode 1
//! is published, 2 waiting for moderation and 4 deleted. Texts are markdown already.

use super::{
    Body, Fate, ImportError, Plan, PlannedThread, Position, SourceComment, SourceThread, malformed,
};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use std::collections::HashMap;
use std::path::Path;

/// Opens the file read-only: the import never changes Isso's data.
pub(crate) async fn open(path: &Path) -> Result<SqlitePool, ImportError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| not_isso(format!("cannot open it as SQLite: {e}")))
}

fn not_isso(message: String) -> ImportError {
    malformed(
        Position::Row {
            table: "threads",
            id: 0,
        },
        format!("not an Isso database: {message}"),
    )
}

#[derive(sqlx::FromRow)]
struct ThreadRow {
    id: i64,
    uri: Option<String>,
    title: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Check {
    tid: Option<i64>,
    id: i64,
    created: Option<f64>,
    mode: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct CommentRow {
    id: i64,
    parent: Option<i64>,
    created: f64,
    mode: i64,
    remote_addr: Option<String>,
    text: Option<String>,
    author: Option<String>,
    email: Option<String>,
    website: Option<String>,
}

pub(crate) async fn scan(path: &Path) -> Result<Plan, ImportError> {
    let pool = open(path).await?;
    let threads = sqlx::query_as::<_, ThreadRow>("SELECT id, uri, title FROM threads ORDER BY id")
        .fetch_all(&pool)
        .await
        .map_err(|e| not_isso(e.to_string()))?;
    let mut plan = Plan {
        source: "isso".into(),
        ..Default::default()
    };
    let mut index = HashMap::new();
    for t in threads {
        index.insert(t.id, plan.threads.len());
        plan.threads.push(PlannedThread {
            thread: SourceThread {
                source_id: t.id.to_string(),
                identifier: t.uri.clone(),
                url: t.uri,
                title: t.title,
                created_at: None,
                native: None,
            },
            ..Default::default()
        });
    }
    let checks = sqlx::query_as::<_, Check>(
        "SELECT tid, id, CAST(created AS REAL) AS created, mode FROM comments ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .map_err(|e| not_isso(e.to_string()))?;
    for c in checks {
        let at = |message: String| {
            malformed(
                Position::Row {
                    table: "comments",
                    id: c.id,
                },
                message,
            )
        };
        if c.created.is_none_or(|t| !t.is_finite()) {
            return Err(at("created is not a time".into()));
        }
        if !matches!(c.mode, Some(1 | 2 | 4)) {
            return Err(at(format!(
                "mode {:?} is not 1 (published), 2 (held) or 4 (deleted)",
                c.mode
            )));
        }
        match c.tid.and_then(|t| index.get(&t)) {
            Some(_) => plan.comment_count += 1,
            None => plan.skip("comment of a thread that is not in the database", 1),
        }
    }
    pool.close().await;
    Ok(plan)
}

pub(crate) async fn load_thread(
    pool: &SqlitePool,
    thread: &SourceThread,
) -> Result<Vec<SourceComment>, ImportError> {
    let tid: i64 = thread.source_id.parse().unwrap_or(-1);
    let rows = sqlx::query_as::<_, CommentRow>(
        "SELECT id, parent, CAST(created AS REAL) AS created, mode, remote_addr, text, author, \
         email, website FROM comments WHERE tid = $1 ORDER BY id",
    )
    .bind(tid)
    .fetch_all(pool)
    .await
    .map_err(|e| not_isso(e.to_string()))?;
    Ok(rows
        .into_iter()
        .map(|r| SourceComment {
            source_id: r.id.to_string(),
            parent: r.parent.map(|p| p.to_string()),
            author_name: r
                .author
                .filter(|a| !a.trim().is_empty())
                .unwrap_or_else(|| "Anonymous".into()),
            author_email: r.email,
            author_url: r.website,
            title: None,
            body: Body::Markdown(r.text.unwrap_or_default()),
            fate: match r.mode {
                1 => Fate::Published,
                2 => Fate::Held,
                _ => Fate::Deleted,
            },
            ip: r.remote_addr,
            created_at: (r.created * 1000.0) as i64,
            native: None,
        })
        .collect())
}
