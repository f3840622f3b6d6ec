//! The second pass of an import: each thread's comments become a tree and are written, whole
//! threads per transaction, with the materialised paths, depths and running status counts
//! exactly as a native post keeps them, and each source id recorded so a second run adds
//! nothing.

use super::{
    Body, Fate, ImportError, ImportOptions, Loader, Plan, PlannedThread, Progress, SourceComment,
    SourceThread, is_postgres, moderato, thread_key,
};
use crate::store::{Store, now_ms, path_segment};
use sqlx::{Any, Transaction};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub threads_created: u64,
    pub threads_existing: u64,
    /// Threads (created or existing) for which the file has no comments.
    pub threads_without_comments: u64,
    /// Comments written, by status.
    pub imported: BTreeMap<String, u64>,
    /// Deleted comments kept as "[deleted]" so that their replies stay in place (also counted
    /// in `imported` as published).
    pub placeholders: u64,
    /// Comments an earlier import already wrote.
    pub already_imported: u64,
    /// Records not imported, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Changes made on the way in, by kind.
    pub notes: BTreeMap<String, u64>,
    /// Audit log entries written (Moderato's own format).
    pub audit_entries: u64,
}

impl Summary {
    /// Comments written.
    pub fn imported_total(&self) -> u64 {
        self.imported.values().sum()
    }

    fn skip(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.skipped.entry(reason.to_owned()).or_default() += n;
        }
    }

    fn note(&mut self, what: &str) {
        *self.notes.entry(what.to_owned()).or_default() += 1;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "threads: {} created, {} already there ({} without comments in the file)",
            self.threads_created, self.threads_existing, self.threads_without_comments
        )?;
        let by_status: Vec<String> = self
            .imported
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        writeln!(
            f,
            "comments: {} imported ({}), of which {} \"[deleted]\" placeholders keeping replies in place; {} already imported before",
            self.imported_total(),
            if by_status.is_empty() {
                "none".into()
            } else {
                by_status.join(", ")
            },
            self.placeholders,
            self.already_imported
        )?;
        if self.audit_entries > 0 {
            writeln!(f, "audit log: {} entries", self.audit_entries)?;
        }
        for (reason, n) in &self.skipped {
            writeln!(f, "skipped {n}: {reason}")?;
        }
        for (what, n) in &self.notes {
            writeln!(f, "note, {n} times: {what}")?;
        }
        Ok(())
    }
}

/// How ids are chosen and comments recognised, decided once per import.
struct Ctx {
    source: String,
    format_name: String,
    /// Moderato restore into an empty database (or into the database it came from): the
    /// original comment and audit ids are kept, so every page and link stays the same.
    preserve_ids: bool,
    /// The file came from this very database: a comment with the same id is the same one.
    same_instance: bool,
    url_prefixes: Vec<(String, String)>,
    /// Deeper replies are stored at this depth (see [`crate::store::capped_parent`]).
    max_depth: u32,
    /// PostgreSQL numbers its parameters (`$1`); SQLite gets plain `?`, which it binds by
    /// position: sqlx looks every `$N` up by name, a scan that made a 40-row INSERT's binding
    /// quadratic (6% of the import benchmark).
    postgres: bool,
    /// The two INSERTs of a chunk of `n` rows, at `n`, each built once.
    chunk_sql: Vec<std::sync::OnceLock<(String, String)>>,
}

impl Ctx {
    /// The `n`th (1-based) parameter of a statement, in this database's syntax.
    fn param(&self, n: usize) -> String {
        if self.postgres {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    }
}

/// Threads are written in transactions of about this many comments: a whole thread is never
/// split, so an interrupted import still leaves whole threads or none, and a transaction per
/// thread made the WAL rewrite the same index pages once per thread (a third of the import
/// benchmark's time was those writes). It is short enough that a reader posting meanwhile
/// waits a fraction of a second at most.
const BATCH_COMMENTS: usize = 5_000;

pub(super) async fn run(
    store: &Store,
    mut plan: Plan,
    loader: &mut Loader,
    options: &ImportOptions,
    progress: Progress<'_>,
) -> Result<Summary, ImportError> {
    let mut sum = Summary {
        skipped: plan.skipped.clone(),
        ..Default::default()
    };
    let native = plan.native.take();
    let mut ctx = Ctx {
        format_name: plan.source.split(':').next().unwrap_or("import").to_owned(),
        source: plan.source.clone(),
        preserve_ids: false,
        same_instance: false,
        url_prefixes: options.url_prefixes.clone(),
        max_depth: match options.max_depth {
            0 => crate::config::CommentsConfig::default().max_depth,
            n => n,
        },
        postgres: is_postgres(store),
        chunk_sql: (0..=CHUNK_ROWS).map(|_| Default::default()).collect(),
    };
    if let Some(n) = &native {
        let instance = n
            .header
            .as_ref()
            .map(|h| h.instance.clone())
            .unwrap_or_default();
        let empty = sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT COUNT(*) FROM comments) + (SELECT COUNT(*) FROM audit_log)",
        )
        .fetch_one(&store.pool)
        .await?
            == 0;
        let local = store.setting("instance_id").await?;
        // A restore into an empty database takes over the backup's identity, so restoring the
        // same backup again is recognised as the same data.
        let local = match local {
            None if empty && !instance.is_empty() => {
                Some(store.setting_or_insert("instance_id", &instance).await?)
            }
            other => other,
        };
        ctx.same_instance = !instance.is_empty() && local.as_deref() == Some(instance.as_str());
        ctx.preserve_ids = empty || ctx.same_instance;
        if ctx.preserve_ids {
            reserve_ids(store, "comments", n.max_comment_id).await?;
            reserve_ids(store, "audit_log", n.max_audit_id).await?;
        }
    }
    // One connection for every transaction. On SQLite it commits without waiting for the
    // disk (synchronous = NORMAL: in WAL mode a power cut may lose the last threads written,
    // never corrupt or split one, and a second run writes them), and keeps a larger page
    // cache, so the indexes' pages are read from the file once. It is closed afterwards
    // rather than returned to the pool with those settings.
    let mut conn = store.pool.acquire().await?;
    if !ctx.postgres {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
        sqlx::query("PRAGMA cache_size = -65536")
            .execute(&mut *conn)
            .await?;
        sqlx::query("PRAGMA wal_autocheckpoint = 20000")
            .execute(&mut *conn)
            .await?;
        // The statement journal of each multi-row INSERT (kept so that a failing row undoes
        // its statement) in memory, not a temporary file: its writes were a third of the
        // database worker's time.
        sqlx::query("PRAGMA temp_store = MEMORY")
            .execute(&mut *conn)
            .await?;
    }
    let result = write_threads(
        store, &mut conn, &ctx, &mut plan, loader, options, progress, &mut sum,
    )
    .await;
    conn.close().await?;
    result?;
    if let (Some(n), Loader::Moderato(reader)) = (&native, loader) {
        write_audit(store, &ctx, n, reader, &mut sum).await?;
    }
    Ok(sum)
}

#[allow(clippy::too_many_arguments)]
async fn write_threads(
    store: &Store,
    conn: &mut sqlx::pool::PoolConnection<Any>,
    ctx: &Ctx,
    plan: &mut Plan,
    loader: &mut Loader,
    options: &ImportOptions,
    progress: Progress<'_>,
    sum: &mut Summary,
) -> Result<(), ImportError> {
    let total = plan.comment_count;
    let mut done = 0u64;
    progress("importing", 0, total);
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    // What the open transaction holds, counted into `sum` once it commits.
    let mut batch = Summary::default();
    let mut open = Batch::default();
    let mut in_batch = 0usize;
    // A pipeline of two: the next thread is read, cleaned and rendered on the other core
    // while this one's rows are written, so the database's worker is rarely idle.
    let mut threads = std::mem::take(&mut plan.threads).into_iter();
    let mut free_loader = Some(std::mem::replace(loader, Loader::Memory));
    let mut pending = start_next(&mut threads, &mut free_loader, options, sum);
    while let Some((key, job)) = pending.take() {
        let (returned, pt, prepared) = job
            .await
            .map_err(|e| ImportError::Invalid(format!("reading comments failed: {e}")))?;
        free_loader = Some(returned);
        pending = start_next(&mut threads, &mut free_loader, options, sum);
        let (comments, cleaned) = prepared?;
        if comments.is_empty() && options.skip_empty_threads {
            sum.skip("thread without comments (--skip-empty-threads)", 1);
            continue;
        }
        let n = comments.len();
        write_thread(
            store, &mut tx, &mut open, ctx, &key, &pt.thread, comments, cleaned, &mut batch,
        )
        .await?;
        in_batch += n;
        if in_batch >= BATCH_COMMENTS {
            std::mem::take(&mut open).finish(&mut tx).await?;
            tx.commit().await?;
            merge(sum, std::mem::take(&mut batch));
            in_batch = 0;
            let_others_write().await;
            tx = sqlx::Connection::begin(&mut **conn).await?;
        }
        done += n as u64;
        progress("importing", done, total);
    }
    open.finish(&mut tx).await?;
    tx.commit().await?;
    merge(sum, batch);
    if let Some(l) = free_loader {
        *loader = l;
    }
    Ok(())
}

/// What the open transaction has written and not yet recorded.
#[derive(Default)]
struct Batch {
    /// New comments by status, added to the running counts once, before the commit.
    counts: BTreeMap<String, i64>,
    /// SQLite: the next free comment id (the transaction holds the write lock, so nobody
    /// else takes one meanwhile).
    next_id: Option<i64>,
}

impl Batch {
    async fn finish(self, tx: &mut Transaction<'_, Any>) -> Result<(), ImportError> {
        for (status, n) in self.counts {
            // The same running counts a native post keeps (migration 0005).
            sqlx::query(
                "INSERT INTO comment_counts (status, n) VALUES ($1, $2) \
                 ON CONFLICT (status) DO UPDATE SET n = comment_counts.n + $2",
            )
            .bind(status)
            .bind(n)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// What the reading job hands back: the loader (for the next thread), the thread, and its
/// comments with their cleaned fields.
type Job = (Loader, PlannedThread, Result<Prepared, ImportError>);
type Prepared = (Vec<SourceComment>, Vec<Cleaned>);

/// Starts reading the next thread that has a usable key, on a blocking thread.
fn start_next(
    threads: &mut impl Iterator<Item = PlannedThread>,
    free_loader: &mut Option<Loader>,
    options: &ImportOptions,
    sum: &mut Summary,
) -> Option<(String, tokio::task::JoinHandle<Job>)> {
    for mut pt in threads.by_ref() {
        let Some(key) = thread_key(&pt.thread, options) else {
            sum.skip("thread without a usable URL or id", 1);
            sum.skip(
                "comment of a thread without a usable URL or id",
                (pt.items.len() + pt.loaded.len()) as u64,
            );
            continue;
        };
        let mut loader = free_loader.take()?;
        let runtime = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let prepared = runtime.block_on(loader.load(&mut pt)).map(|comments| {
                let cleaned = clean_all(&comments);
                (comments, cleaned)
            });
            (loader, pt, prepared)
        });
        return Some((key, job));
    }
    None
}

/// A comment's fields as they are stored: the body's markdown source and HTML, and the
/// author's fields cleaned (a native export's are kept as they are).
pub(super) struct Cleaned {
    source: String,
    html: String,
    name: String,
    email: Option<String>,
    url: Option<String>,
    title: Option<String>,
    email_dropped: bool,
    url_dropped: bool,
}

/// Cleans and renders a thread's comments, on all cores.
fn clean_all(comments: &[SourceComment]) -> Vec<Cleaned> {
    comments
        .iter()
        .map(|c| {
            let source = source_of(&c.body);
            let html = crate::comment::render_markdown(&source);
            if c.native.is_some() {
                return Cleaned {
                    source,
                    html,
                    name: c.author_name.clone(),
                    email: c.author_email.clone(),
                    url: c.author_url.clone(),
                    title: c.title.clone(),
                    email_dropped: false,
                    url_dropped: false,
                };
            }
            let mut name = clean_text(&c.author_name, crate::comment::MAX_NAME_CHARS);
            if name.is_empty() {
                name = "Anonymous".into();
            }
            let email = clean_email(c.author_email.as_deref());
            let url = clean_url(c.author_url.as_deref());
            Cleaned {
                source,
                html,
                name,
                email_dropped: email.is_err(),
                url_dropped: url.is_err(),
                email: email.unwrap_or(None),
                url: url.unwrap_or(None),
                title: c
                    .title
                    .as_deref()
                    .map(|t| clean_text(t, crate::comment::MAX_TITLE_CHARS))
                    .filter(|t| !t.is_empty()),
            }
        })
        .collect()
}

/// Moves a table's id counter past `max`, so posts made while a restore runs never take an
/// id the restore is about to write.
async fn reserve_ids(store: &Store, table: &str, max: i64) -> Result<(), ImportError> {
    if max <= 0 {
        return Ok(());
    }
    if is_postgres(store) {
        let sql = match table {
            "comments" => {
                "SELECT setval(pg_get_serial_sequence('comments', 'id'), \
                 GREATEST($1, (SELECT COALESCE(MAX(id), 1) FROM comments)))"
            }
            _ => {
                "SELECT setval(pg_get_serial_sequence('audit_log', 'id'), \
                 GREATEST($1, (SELECT COALESCE(MAX(id), 1) FROM audit_log)))"
            }
        };
        sqlx::query(sql).bind(max).execute(&store.pool).await?;
    } else {
        let mut tx = store.pool.begin().await?;
        sqlx::query("UPDATE sqlite_sequence SET seq = $1 WHERE name = $2 AND seq < $1")
            .bind(max)
            .bind(table)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sqlite_sequence (name, seq) SELECT $2, $1 \
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = $2)",
        )
        .bind(max)
        .bind(table)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// A comment already in the database: what its replies need.
#[derive(Clone, Debug)]
struct Placed {
    id: i64,
    path: String,
    depth: i64,
}

/// The tree of one thread's source comments, in the order they are written.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Tree {
    /// Comments to write (or recognise), parents before replies, siblings oldest first.
    pub order: Vec<usize>,
    /// Parent within the batch.
    pub parent: Vec<Option<usize>>,
    /// Deleted (or skipped) comments kept as placeholders.
    pub placeholder: Vec<bool>,
    /// Comments left out, with the reason.
    pub skipped: Vec<(usize, &'static str)>,
    /// Replies whose parent is neither in the batch nor in `known`: written as top-level.
    pub orphans: Vec<usize>,
}

/// Builds the tree: resolves parents (in the batch, or among comments already imported),
/// breaks cycles, orders siblings by time, and decides which deleted comments stay as
/// placeholders (those with a reply that stays).
pub(super) fn build_tree(comments: &[SourceComment], known: &dyn Fn(&str) -> bool) -> Tree {
    let n = comments.len();
    let mut tree = Tree {
        parent: vec![None; n],
        placeholder: vec![false; n],
        ..Default::default()
    };
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
    let mut duplicate = vec![false; n];
    for (i, c) in comments.iter().enumerate() {
        if index.contains_key(c.source_id.as_str()) {
            duplicate[i] = true;
            tree.skipped
                .push((i, "the same comment id twice in the file"));
        } else {
            index.insert(&c.source_id, i);
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, c) in comments.iter().enumerate() {
        if duplicate[i] {
            continue;
        }
        match c.parent.as_deref() {
            Some(p) if index.get(p).is_some_and(|&j| j != i) => {
                let j = index[p];
                tree.parent[i] = Some(j);
                children[j].push(i);
            }
            Some(p) => {
                if !known(p) {
                    tree.orphans.push(i);
                }
                roots.push(i);
            }
            None => roots.push(i),
        }
    }
    let by_time = |a: &usize, b: &usize| {
        comments[*a]
            .created_at
            .cmp(&comments[*b].created_at)
            .then(a.cmp(b))
    };
    for c in children.iter_mut() {
        c.sort_by(by_time);
    }
    roots.sort_by(by_time);
    // Depth-first preorder; comments never reached sit on a cycle of parents: the oldest of
    // each such cycle becomes top-level.
    let mut visited = vec![false; n];
    let mut preorder = Vec::with_capacity(n);
    let walk = |start: usize, visited: &mut Vec<bool>, preorder: &mut Vec<usize>| {
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if visited[i] {
                continue;
            }
            visited[i] = true;
            preorder.push(i);
            for &c in children[i].iter().rev() {
                stack.push(c);
            }
        }
    };
    for &r in &roots {
        walk(r, &mut visited, &mut preorder);
    }
    loop {
        let mut rest: Vec<usize> = (0..n).filter(|&i| !visited[i] && !duplicate[i]).collect();
        if rest.is_empty() {
            break;
        }
        rest.sort_by(by_time);
        let r = rest[0];
        tree.parent[r] = None;
        tree.orphans.push(r);
        walk(r, &mut visited, &mut preorder);
    }
    // Which comments stay: every live one; a deleted one only with a reply that stays.
    let mut keep = vec![false; n];
    for &i in preorder.iter().rev() {
        let gone = matches!(comments[i].fate, Fate::Deleted | Fate::Skip(_));
        if !gone || children[i].iter().any(|&c| keep[c]) {
            keep[i] = true;
            tree.placeholder[i] = gone;
        }
    }
    for &i in &preorder {
        if keep[i] {
            tree.order.push(i);
        } else {
            let reason = match comments[i].fate {
                Fate::Skip(reason) => reason,
                _ => "deleted at the source, without replies",
            };
            tree.skipped.push((i, reason));
        }
    }
    tree.orphans.retain(|&i| keep[i]);
    tree
}

/// One row to insert.
struct Row<'a> {
    id: i64,
    parent_id: Option<i64>,
    depth: i64,
    path: String,
    author_name: String,
    author_email: Option<String>,
    author_url: Option<String>,
    title: Option<String>,
    body_source: String,
    body_html: String,
    status: String,
    moderator: Option<String>,
    reason: Option<String>,
    score: Option<f64>,
    ip: Option<String>,
    created_at: i64,
    updated_at: i64,
    source_id: &'a str,
}

const PLACEHOLDER: &str = "[deleted]";

/// Trims to at most `max` characters, dropping control characters.
fn clean_text(s: &str, max: usize) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

fn clean_url(u: Option<&str>) -> Result<Option<String>, ()> {
    match u.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(None),
        // Isso and WordPress keep what commenters typed, often without a scheme.
        Some(u) if !u.contains("://") && !u.contains(':') => {
            clean_url(Some(&format!("http://{u}")))
        }
        Some(u) => match url::Url::parse(u) {
            Ok(p)
                if matches!(p.scheme(), "http" | "https")
                    && p.host().is_some()
                    && u.chars().count() <= crate::comment::MAX_URL_CHARS =>
            {
                Ok(Some(p.to_string()))
            }
            _ => Err(()),
        },
    }
}

fn clean_email(e: Option<&str>) -> Result<Option<String>, ()> {
    match e.map(str::trim).filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e)
            if e.contains('@')
                && e.chars().count() <= crate::comment::MAX_EMAIL_CHARS
                && !e.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(Some(e.to_owned()))
        }
        Some(_) => Err(()),
    }
}

/// The stored markdown source of a body: HTML is converted, NUL characters dropped.
fn source_of(body: &Body) -> String {
    let s = match body {
        Body::Markdown(m) => m.trim().to_owned(),
        Body::Html(h) => super::html::to_markdown(h),
    };
    s.replace('\0', "")
}

#[allow(clippy::too_many_arguments)]
async fn write_thread(
    store: &Store,
    tx: &mut Transaction<'_, Any>,
    open: &mut Batch,
    ctx: &Ctx,
    key: &str,
    t: &SourceThread,
    comments: Vec<SourceComment>,
    cleaned: Vec<Cleaned>,
    sum: &mut Summary,
) -> Result<(), ImportError> {
    let now = now_ms();
    let mut cleaned: Vec<Option<Cleaned>> = cleaned.into_iter().map(Some).collect();
    // A write first, so SQLite takes the write lock at once (no deferred upgrade).
    let (kind, title, enabled, published_at, created_at, updated_at) = match &t.native {
        Some(n) => (
            n.kind.clone(),
            n.title.clone(),
            i64::from(n.comments_enabled),
            n.published_at,
            n.created_at,
            n.updated_at,
        ),
        None => {
            let title = t
                .title
                .as_deref()
                .map(|s| clean_text(s, 500))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| key.to_owned());
            let created = t
                .created_at
                .or_else(|| comments.iter().map(|c| c.created_at).min())
                .unwrap_or(now);
            ("page".to_owned(), title, 1, Some(created), created, now)
        }
    };
    let url = t
        .url
        .as_deref()
        .map(|u| super::rewrite_url(u.trim(), &ctx.url_prefixes))
        .filter(|u| !u.is_empty());
    let inserted = sqlx::query(
        "INSERT INTO threads (key, kind, title, comments_enabled, published_at, created_at, \
         updated_at, url) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(&kind)
    .bind(&title)
    .bind(enabled)
    .bind(published_at)
    .bind(created_at)
    .bind(updated_at)
    .bind(&url)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let thread_id: i64 = sqlx::query_scalar("SELECT id FROM threads WHERE key = $1")
        .bind(key)
        .fetch_one(&mut **tx)
        .await?;
    let mut local = Summary::default();
    if inserted == 1 {
        local.threads_created += 1;
    } else {
        local.threads_existing += 1;
    }
    if comments.is_empty() {
        local.threads_without_comments += 1;
        merge(sum, local);
        return Ok(());
    }

    // What earlier imports (or, for a backup of this database, the database itself) hold.
    let mut wanted: Vec<&str> = comments.iter().map(|c| c.source_id.as_str()).collect();
    wanted.extend(comments.iter().filter_map(|c| c.parent.as_deref()));
    wanted.sort_unstable();
    wanted.dedup();
    let existing = placed(tx, ctx, &wanted).await?;
    let tree = build_tree(&comments, &|id| existing.contains_key(id));
    for &(_, reason) in &tree.skipped {
        local.skip(reason, 1);
    }
    for _ in &tree.orphans {
        local.note("a reply to a comment that is not in the file became a top-level comment");
    }

    // Ids for the new comments, in tree order so that paths sort oldest first.
    let fresh: Vec<usize> = tree
        .order
        .iter()
        .copied()
        .filter(|&i| !existing.contains_key(comments[i].source_id.as_str()))
        .collect();
    let need_ids = if ctx.preserve_ids {
        fresh
            .iter()
            .filter(|&&i| comments[i].native.is_none())
            .count()
    } else {
        fresh.len()
    };
    let mut ids = allocate_ids(store, tx, &mut open.next_id, need_ids)
        .await?
        .into_iter();

    let mut placed_here: HashMap<usize, Placed> = HashMap::new();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(fresh.len());
    for &i in &tree.order {
        let c = &comments[i];
        if let Some(p) = existing.get(c.source_id.as_str()) {
            local.already_imported += 1;
            placed_here.insert(i, p.clone());
            continue;
        }
        let parent: Option<Placed> = match tree.parent[i] {
            Some(j) => placed_here.get(&j).cloned(),
            None => c.parent.as_deref().and_then(|p| existing.get(p)).cloned(),
        };
        let id = match (&c.native, ctx.preserve_ids) {
            (Some(n), true) => n.id,
            _ => ids.next().ok_or_else(|| {
                ImportError::Invalid("the database handed out fewer ids than asked".into())
            })?,
        };
        let (path, depth) = match &parent {
            Some(p) => {
                let (above, d) = crate::store::capped_parent(&p.path, p.depth, ctx.max_depth);
                (format!("{above}{}", path_segment(id)), d + 1)
            }
            None => (path_segment(id), 0),
        };
        placed_here.insert(
            i,
            Placed {
                id,
                path: path.clone(),
                depth,
            },
        );
        let row = if tree.placeholder[i] {
            local.placeholders += 1;
            Row {
                id,
                parent_id: parent.as_ref().map(|p| p.id),
                depth,
                path,
                author_name: PLACEHOLDER.into(),
                author_email: None,
                author_url: None,
                title: None,
                body_source: PLACEHOLDER.into(),
                body_html: crate::comment::render_markdown(PLACEHOLDER),
                status: "published".into(),
                moderator: Some(crate::store::PLACEHOLDER_MODERATOR.into()),
                reason: Some(
                    "deleted at the source; kept so that its replies stay in place".into(),
                ),
                score: None,
                ip: None,
                created_at: c.created_at,
                updated_at: c.created_at,
                source_id: &c.source_id,
            }
        } else {
            let Some(f) = cleaned[i].take() else {
                return Err(ImportError::Invalid("a comment was written twice".into()));
            };
            let (status, moderator, reason, score, updated_at) = match (&c.fate, &c.native) {
                (Fate::Status(s), Some(n)) => (
                    s.clone(),
                    n.moderator.clone(),
                    n.reason.clone(),
                    n.score,
                    n.updated_at,
                ),
                (fate, _) => {
                    let status = match fate {
                        Fate::Held => "held",
                        Fate::Spam => "spam",
                        Fate::Status(s) => s.as_str(),
                        _ => "published",
                    }
                    .to_owned();
                    let reason = (status != "published")
                        .then(|| format!("Imported from {} as {status}.", ctx.format_name));
                    let moderator = reason.as_ref().map(|_| "import".to_owned());
                    (status, moderator, reason, None, c.created_at)
                }
            };
            if f.email_dropped {
                local.note("an email address that does not look like one was dropped");
            }
            if f.url_dropped {
                local.note("an author web address that is not http(s) was dropped");
            }
            Row {
                id,
                parent_id: parent.as_ref().map(|p| p.id),
                depth,
                path,
                author_name: f.name,
                author_email: f.email,
                author_url: f.url,
                title: f.title,
                body_source: f.source,
                body_html: f.html,
                status,
                moderator,
                reason,
                score,
                ip: c.ip.as_deref().map(|ip| clean_text(ip, 64)),
                created_at: c.created_at,
                updated_at,
                source_id: &c.source_id,
            }
        };
        *local.imported.entry(row.status.clone()).or_default() += 1;
        rows.push(row);
    }
    insert_rows(tx, ctx, thread_id, &rows).await?;
    for r in &rows {
        *open.counts.entry(r.status.clone()).or_default() += 1;
    }
    merge(sum, local);
    Ok(())
}

fn merge(sum: &mut Summary, local: Summary) {
    sum.threads_created += local.threads_created;
    sum.threads_existing += local.threads_existing;
    sum.threads_without_comments += local.threads_without_comments;
    sum.placeholders += local.placeholders;
    sum.already_imported += local.already_imported;
    sum.audit_entries += local.audit_entries;
    for (k, v) in local.imported {
        *sum.imported.entry(k).or_default() += v;
    }
    for (k, v) in local.skipped {
        *sum.skipped.entry(k).or_default() += v;
    }
    for (k, v) in local.notes {
        *sum.notes.entry(k).or_default() += v;
    }
}

/// The placement of comments already in the database, by source id.
async fn placed(
    tx: &mut Transaction<'_, Any>,
    ctx: &Ctx,
    source_ids: &[&str],
) -> Result<HashMap<String, Placed>, ImportError> {
    #[derive(sqlx::FromRow)]
    struct Found {
        source_id: String,
        id: i64,
        path: String,
        depth: i64,
    }
    let mut out = HashMap::new();
    for chunk in source_ids.chunks(500) {
        let list: Vec<String> = (0..chunk.len()).map(|i| ctx.param(i + 2)).collect();
        let sql = format!(
            "SELECT s.source_id, c.id, c.path, c.depth FROM import_sources s \
             JOIN comments c ON c.id = s.target_id \
             WHERE s.source = {} AND s.kind = 'comment' AND s.source_id IN ({})",
            ctx.param(1),
            list.join(", ")
        );
        let mut q = sqlx::query_as::<_, Found>(&sql).bind(&ctx.source);
        for id in chunk {
            q = q.bind(*id);
        }
        for f in q.fetch_all(&mut **tx).await? {
            out.insert(
                f.source_id,
                Placed {
                    id: f.id,
                    path: f.path,
                    depth: f.depth,
                },
            );
        }
        if ctx.same_instance {
            let ids: Vec<i64> = chunk.iter().filter_map(|s| s.parse().ok()).collect();
            if ids.is_empty() {
                continue;
            }
            let list: Vec<String> = (0..ids.len()).map(|i| ctx.param(i + 1)).collect();
            let sql = format!(
                "SELECT CAST(id AS TEXT) AS source_id, id, path, depth FROM comments \
                 WHERE id IN ({})",
                list.join(", ")
            );
            let mut q = sqlx::query_as::<_, Found>(&sql);
            for id in &ids {
                q = q.bind(*id);
            }
            for f in q.fetch_all(&mut **tx).await? {
                out.entry(f.source_id).or_insert(Placed {
                    id: f.id,
                    path: f.path,
                    depth: f.depth,
                });
            }
        }
    }
    Ok(out)
}

/// `n` unused comment ids, ascending. PostgreSQL hands them out from the table's sequence
/// (safe beside concurrent posts); on SQLite this transaction holds the write lock, so the
/// ids after the largest ever used are free.
async fn allocate_ids(
    store: &Store,
    tx: &mut Transaction<'_, Any>,
    next_id: &mut Option<i64>,
    n: usize,
) -> Result<Vec<i64>, ImportError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if is_postgres(store) {
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('comments', 'id')) FROM generate_series(1, $1)",
        )
        .bind(n as i64)
        .fetch_all(&mut **tx)
        .await?;
        ids.sort_unstable();
        Ok(ids)
    } else {
        let first = match *next_id {
            Some(id) => id,
            None => {
                let max: i64 = sqlx::query_scalar(
                    "SELECT MAX(COALESCE((SELECT MAX(id) FROM comments), 0), \
                     COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'comments'), 0))",
                )
                .fetch_one(&mut **tx)
                .await?;
                max + 1
            }
        };
        *next_id = Some(first + n as i64);
        Ok((first..first + n as i64).collect())
    }
}

/// Rows per multi-row INSERT: one statement per 40 comments instead of one per comment.
const CHUNK_ROWS: usize = 40;

/// The INSERTs of `n` comments and of their source ids.
fn insert_sql(ctx: &Ctx, n: usize) -> (String, String) {
    const COLS: usize = 18;
    const SCORE_COL: usize = 15;
    let values: Vec<String> = (0..n)
        .map(|r| {
            let cells: Vec<String> = (1..=COLS)
                .map(|c| match ctx.param(r * COLS + c) {
                    // The score: never bound as NULL (see `insert_rows`).
                    p if c == SCORE_COL => format!("NULLIF({p}, -1.0)"),
                    p => p,
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    let comments = format!(
        "INSERT INTO comments (id, thread_id, parent_id, depth, path, author_name, \
         author_email, author_url, title, body_source, body_html, status, moderator, reason, \
         score, ip, created_at, updated_at) VALUES {}",
        values.join(", ")
    );
    let values: Vec<String> = (0..n)
        .map(|r| {
            format!(
                "({}, 'comment', {}, {})",
                ctx.param(r * 3 + 1),
                ctx.param(r * 3 + 2),
                ctx.param(r * 3 + 3)
            )
        })
        .collect();
    let sources = format!(
        "INSERT INTO import_sources (source, kind, source_id, target_id) VALUES {}",
        values.join(", ")
    );
    (comments, sources)
}

async fn insert_rows(
    tx: &mut Transaction<'_, Any>,
    ctx: &Ctx,
    thread_id: i64,
    rows: &[Row<'_>],
) -> Result<(), ImportError> {
    for chunk in rows.chunks(CHUNK_ROWS) {
        let (sql, sources_sql) =
            ctx.chunk_sql[chunk.len()].get_or_init(|| insert_sql(ctx, chunk.len()));
        let mut q = sqlx::query(sql);
        for r in chunk {
            q = q
                .bind(r.id)
                .bind(thread_id)
                .bind(r.parent_id)
                .bind(r.depth)
                .bind(&r.path)
                .bind(&r.author_name)
                .bind(&r.author_email)
                .bind(&r.author_url)
                .bind(&r.title)
                .bind(&r.body_source)
                .bind(&r.body_html)
                .bind(&r.status)
                .bind(&r.moderator)
                .bind(&r.reason)
                // A missing score is bound as -1 (the SQL turns it into NULL): sqlx 0.8's Any
                // driver types a NULL f64 as float4 on PostgreSQL, and the statement it keeps
                // then refuses a later chunk's real score. Scores are probabilities.
                .bind(r.score.unwrap_or(-1.0))
                .bind(&r.ip)
                .bind(r.created_at)
                .bind(r.updated_at);
        }
        q.execute(&mut **tx).await?;
        let mut q = sqlx::query(sources_sql);
        for r in chunk {
            q = q.bind(&ctx.source).bind(r.source_id).bind(r.id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The audit log of a Moderato export, in one transaction after the threads.
async fn write_audit(
    store: &Store,
    ctx: &Ctx,
    native: &moderato::NativePlan,
    reader: &mut super::SpanReader,
    sum: &mut Summary,
) -> Result<(), ImportError> {
    if native.audit.is_empty() {
        return Ok(());
    }
    let mut tx = store.pool.begin().await?;
    let mut written = 0u64;
    for &span in &native.audit {
        let bytes = reader
            .read(span)
            .map_err(|e| super::at_byte(span.start, format!("cannot read it again: {e}")))?
            .to_vec();
        let a = moderato::audit_from_line(&bytes)?;
        let source_id = a.id.to_string();
        let seen: Option<i64> = sqlx::query_scalar(
            "SELECT target_id FROM import_sources WHERE source = $1 AND kind = 'audit' \
             AND source_id = $2",
        )
        .bind(&ctx.source)
        .bind(&source_id)
        .fetch_optional(&mut *tx)
        .await?;
        let exists_here = ctx.same_instance
            && sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log WHERE id = $1")
                .bind(a.id)
                .fetch_one(&mut *tx)
                .await?
                > 0;
        if seen.is_some() || exists_here {
            continue;
        }
        let comment_id = match a.comment_id {
            None => None,
            Some(c) => {
                let mapped: Option<i64> = sqlx::query_scalar(
                    "SELECT target_id FROM import_sources WHERE source = $1 \
                     AND kind = 'comment' AND source_id = $2",
                )
                .bind(&ctx.source)
                .bind(c.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                match mapped {
                    Some(m) => Some(m),
                    None if ctx.same_instance => {
                        sqlx::query_scalar("SELECT id FROM comments WHERE id = $1")
                            .bind(c)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                    None => None,
                }
            }
        };
        let thread_id: Option<i64> = match &a.thread {
            None => None,
            Some(k) => {
                sqlx::query_scalar("SELECT id FROM threads WHERE key = $1")
                    .bind(k)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let id: i64 = if ctx.preserve_ids {
            sqlx::query_scalar(
                "INSERT INTO audit_log (id, at, actor, action, comment_id, thread_id, \
                 status_before, status_after, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 RETURNING id",
            )
            .bind(a.id)
        } else {
            sqlx::query_scalar(
                "INSERT INTO audit_log (at, actor, action, comment_id, thread_id, \
                 status_before, status_after, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 RETURNING id",
            )
        }
        .bind(a.at)
        .bind(&a.actor)
        .bind(&a.action)
        .bind(comment_id)
        .bind(thread_id)
        .bind(&a.status_before)
        .bind(&a.status_after)
        .bind(&a.detail)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO import_sources (source, kind, source_id, target_id) \
             VALUES ($1, 'audit', $2, $3)",
        )
        .bind(&ctx.source)
        .bind(&source_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        written += 1;
        if written.is_multiple_of(BATCH_AUDIT) {
            // A whole audit log in one transaction held SQLite's write lock for seconds
            // (20,000 entries: about 4 s), longer than a post waits for it on a live server.
            // Entries already written are known by their source ids, so a second run goes
            // on where an interrupted one stopped.
            tx.commit().await?;
            sum.audit_entries += BATCH_AUDIT;
            let_others_write().await;
            tx = store.pool.begin().await?;
        }
    }
    tx.commit().await?;
    sum.audit_entries += written % BATCH_AUDIT;
    Ok(())
}

/// The audit log is written in transactions of this many entries (see [`write_audit`]).
const BATCH_AUDIT: u64 = 1_000;

/// A pause between two of the import's transactions, in which a running server's writer
/// (which tries every millisecond while the import holds the lock) takes its turn: without
/// it the next transaction began at once, and a post waited for most of the import.
/// 5 ms for every 5,000 comments is about 1 % of an import's time.
async fn let_others_write() {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, parent: Option<&str>, at: i64, fate: Fate) -> SourceComment {
        SourceComment {
            source_id: id.into(),
            parent: parent.map(str::to_owned),
            author_name: "A".into(),
            author_email: None,
            author_url: None,
            title: None,
            body: Body::Markdown("x".into()),
            fate,
            ip: None,
            created_at: at,
            native: None,
        }
    }

    #[test]
    fn parents_come_before_replies_and_siblings_oldest_first() {
        let list = vec![
            c("3", Some("1"), 30, Fate::Published),
            c("1", None, 10, Fate::Published),
            c("2", Some("1"), 20, Fate::Published),
            c("0", None, 5, Fate::Published),
        ];
        let t = build_tree(&list, &|_| false);
        let ids: Vec<&str> = t
            .order
            .iter()
            .map(|&i| list[i].source_id.as_str())
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3"]);
    }

    #[test]
    fn a_deleted_comment_stays_as_a_placeholder_only_with_live_replies() {
        let list = vec![
            c("1", None, 1, Fate::Deleted),
            c("2", Some("1"), 2, Fate::Published),
            c("3", None, 3, Fate::Deleted),
            c("4", Some("3"), 4, Fate::Deleted),
        ];
        let t = build_tree(&list, &|_| false);
        assert_eq!(t.order, [0, 1]);
        assert_eq!(t.placeholder[..2], [true, false]);
        assert_eq!(t.skipped.len(), 2);
    }

    #[test]
    fn cycles_and_missing_parents_become_top_level() {
        let list = vec![
            c("1", Some("2"), 1, Fate::Published),
            c("2", Some("1"), 2, Fate::Published),
            c("3", Some("99"), 3, Fate::Published),
            c("4", Some("77"), 4, Fate::Published),
        ];
        let t = build_tree(&list, &|id| id == "77");
        assert_eq!(t.order.len(), 4);
        assert_eq!(t.parent[0], None);
        assert_eq!(t.parent[1], Some(0));
        // 3's parent is unknown; 4's is an earlier import, so it is no orphan.
        assert!(t.orphans.contains(&2) && t.orphans.contains(&0));
        assert!(!t.orphans.contains(&3));
    }
}
