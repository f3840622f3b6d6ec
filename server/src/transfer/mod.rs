//! Moving comments in and out: imports from Disqus, WordPress, Isso, Remark42, Commento and
//! Moderato's own export, the export itself, and scheduled backups (docs/transfer.md).
//!
//! An import runs in two passes so that a malformed file changes nothing while memory stays
//! bounded: the first pass reads the whole file (streaming, for the XML and JSON-lines
//! formats), checks every record and keeps only each thread's metadata and the byte range of
//! each of its comments; the second pass reads one thread's comments back from those ranges,
//! builds its tree in memory and writes it in one transaction. Memory is therefore a small
//! index per comment plus the largest thread, never the file.

pub mod backup;
pub(crate) mod cli;
mod commento;
mod disqus;
pub mod export;
pub mod html;
mod isso;
pub mod moderato;
mod remark42;
mod wordpress;
mod write;
mod xml;

pub use moderato::{AuditRecord, CommentRecord, EndRecord, FORMAT_VERSION, Header, ThreadRecord};
pub use write::Summary;

use crate::store::{Backend, Store, StoreError};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The formats `moderato import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Disqus XML export.
    Disqus,
    /// WordPress eXtended RSS (Tools > Export).
    Wordpress,
    /// Isso's SQLite database file.
    Isso,
    /// Remark42 backup (JSON lines).
    Remark42,
    /// Commento JSON export.
    Commento,
    /// Moderato's own export or backup.
    Moderato,
}

/// Where a thread's key comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyFrom {
    /// The path of the thread's URL: `https://example.org/blog/hello/` -> `blog-hello`.
    #[default]
    Path,
    /// Host and path: `example.org-blog-hello`.
    Url,
    /// The source's own identifier (Disqus `<id>`, WordPress post name, ...).
    Id,
}

/// How an import maps the source onto threads.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub key_from: KeyFrom,
    /// `(old, new)` URL prefixes: a thread URL starting with `old` starts with `new` instead.
    pub url_prefixes: Vec<(String, String)>,
    /// Keep WordPress pingbacks and trackbacks (skipped by default).
    pub keep_pingbacks: bool,
    /// Do not create threads that have no comments.
    pub skip_empty_threads: bool,
    /// Replies deeper than this are stored at it, as posting does (`comments.max_depth`);
    /// 0 means the default of 8.
    pub max_depth: u32,
}

/// Where in the file a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// A byte offset, with the line and column it falls on (1-based) once located.
    Byte { byte: u64, line: Option<(u64, u64)> },
    /// A line of a JSON-lines file (1-based) and a column in it.
    Line { line: u64, column: u64 },
    /// A row of a database file.
    Row { table: &'static str, id: i64 },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Byte {
                byte,
                line: Some((line, column)),
            } => write!(f, "line {line}, column {column} (byte {byte})"),
            Position::Byte { byte, line: None } => write!(f, "byte {byte}"),
            Position::Line { line, column } => write!(f, "line {line}, column {column}"),
            Position::Row { table, id } => write!(f, "table {table}, row {id}"),
        }
    }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not what its format says; nothing was written.
    #[error("{at}: {message}; nothing was imported")]
    Malformed { at: Position, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Store(StoreError::Sqlx(e))
    }
}

pub(crate) fn malformed(at: Position, message: impl Into<String>) -> ImportError {
    ImportError::Malformed {
        at,
        message: message.into(),
    }
}

pub(crate) fn at_byte(byte: u64, message: impl Into<String>) -> ImportError {
    malformed(Position::Byte { byte, line: None }, message)
}

/// A thread as a source describes it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceThread {
    /// The source's id for the thread (used when no URL or identifier gives a key).
    pub source_id: String,
    pub url: Option<String>,
    pub identifier: Option<String>,
    pub title: Option<String>,
    pub created_at: Option<i64>,
    /// Moderato's own export: every field exactly.
    pub native: Option<ThreadRecord>,
}

/// A comment body as the source stores it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    Markdown(String),
    Html(String),
}

/// What becomes of a source comment.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fate {
    Published,
    Held,
    Spam,
    /// Deleted at the source: a "[deleted]" placeholder when it has replies, else skipped.
    Deleted,
    /// Not imported, for this reason (e.g. a pingback); replies are kept as for a deletion.
    Skip(&'static str),
    /// Moderato's own export: this exact status.
    Status(String),
}

/// Moderation detail only Moderato's own export carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NativeExtra {
    pub id: i64,
    pub moderator: Option<String>,
    pub reason: Option<String>,
    pub score: Option<f64>,
    pub updated_at: i64,
    pub body_html: Option<String>,
}

/// A comment as a source describes it.
#[derive(Clone, Debug)]
pub(crate) struct SourceComment {
    pub source_id: String,
    pub parent: Option<String>,
    pub author_name: String,
    pub author_email: Option<String>,
    pub author_url: Option<String>,
    pub title: Option<String>,
    pub body: Body,
    pub fate: Fate,
    pub ip: Option<String>,
    pub created_at: i64,
    pub native: Option<NativeExtra>,
}

/// Where a comment's record is, for the second pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub start: u64,
    pub len: u32,
}

/// One thread found by the first pass, with where its comments are.
#[derive(Debug, Default)]
pub(crate) struct PlannedThread {
    pub thread: SourceThread,
    pub items: Vec<Span>,
    /// Comments already in memory (formats that are read whole).
    pub loaded: Vec<SourceComment>,
}

/// What the first pass found.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The `source` recorded in `import_sources`.
    pub source: String,
    pub threads: Vec<PlannedThread>,
    /// Records left out already in the first pass, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Comments found, for the progress bar.
    pub comment_count: u64,
    /// Moderato's own export: its header, audit records and largest ids.
    pub native: Option<moderato::NativePlan>,
}

impl Plan {
    pub(crate) fn skip(&mut self, reason: &str, n: u64) {
        *self.skipped.entry(reason.to_owned()).or_default() += n;
    }
}

/// Reads records back by their spans. Unbuffered on purpose: a buffer would be refilled
/// (64 KiB) at every seek, for records of a few hundred bytes.
pub(crate) struct SpanReader {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl SpanReader {
    pub(crate) fn open(path: &Path) -> Result<SpanReader, ImportError> {
        let file = std::fs::File::open(path).map_err(|source| io_error(path, source))?;
        Ok(SpanReader {
            file,
            buf: Vec::new(),
        })
    }

    pub(crate) fn read(&mut self, span: Span) -> std::io::Result<&[u8]> {
        self.file.seek(SeekFrom::Start(span.start))?;
        self.buf.resize(span.len as usize, 0);
        self.file.read_exact(&mut self.buf)?;
        Ok(&self.buf)
    }
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> ImportError {
    ImportError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The progress an import reports: a phase name, done and total units.
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// A readable copy of the input: `.gz` files are decompressed to a temporary file first, so
/// both passes can seek without holding the file in memory.
struct Input {
    path: PathBuf,
    _temp: Option<tempfile::TempPath>,
}

fn open_input(path: &Path) -> Result<Input, ImportError> {
    if !path.is_file() {
        return Err(io_error(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    if path.extension().is_some_and(|e| e == "gz") {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        let mut temp = tempfile::NamedTempFile::new().map_err(|e| io_error(path, e))?;
        std::io::copy(&mut gz, temp.as_file_mut()).map_err(|e| {
            io_error(
                path,
                std::io::Error::new(e.kind(), format!("not a readable gzip file: {e}")),
            )
        })?;
        let temp = temp.into_temp_path();
        Ok(Input {
            path: temp.to_path_buf(),
            _temp: Some(temp),
        })
    } else {
        Ok(Input {
            path: path.to_owned(),
            _temp: None,
        })
    }
}

/// Turns a byte position into line and column by reading the file up to it.
fn locate(path: &Path, err: ImportError) -> ImportError {
    let ImportError::Malformed {
        at: Position::Byte { byte, line: None },
        message,
    } = err
    else {
        return err;
    };
    let Ok(file) = std::fs::File::open(path) else {
        return malformed(Position::Byte { byte, line: None }, message);
    };
    let mut reader = std::io::BufReader::new(file).take(byte);
    let (mut line, mut column) = (1u64, 1u64);
    let mut chunk = [0u8; 1 << 16];
    while let Ok(n) = reader.read(&mut chunk) {
        if n == 0 {
            break;
        }
        for &b in &chunk[..n] {
            if b == b'\n' {
                line += 1;
                column = 1;
            } else if b & 0xC0 != 0x80 {
                // Columns count characters, not UTF-8 continuation bytes.
                column += 1;
            }
        }
    }
    malformed(
        Position::Byte {
            byte,
            line: Some((line, column)),
        },
        message,
    )
}

/// Imports a file into the store. Nothing is written unless the whole file reads correctly;
/// then each thread is written in its own transaction. No live events are sent: these
/// comments are history, not news.
pub(crate) async fn import_file(
    store: &Store,
    format: Format,
    path: &Path,
    options: &ImportOptions,
    progress: Progress<'_>,
) -> Result<Summary, ImportError> {
    for (old, _) in &options.url_prefixes {
        if old.is_empty() {
            return Err(ImportError::Invalid(
                "--url-prefix needs OLD=NEW with a non-empty OLD".into(),
            ));
        }
    }
    let input = if format == Format::Isso {
        if !path.is_file() {
            return Err(io_error(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        Input {
            path: path.to_owned(),
            _temp: None,
        }
    } else {
        open_input(path)?
    };
    let path = input.path.as_path();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let scan = |p: u64| progress("reading", p, size);
    let plan = match format {
        Format::Disqus => disqus::scan(path, &scan),
        Format::Wordpress => wordpress::scan(path, &scan, options.keep_pingbacks),
        Format::Remark42 => remark42::scan(path, &scan),
        Format::Commento => commento::scan(path),
        Format::Moderato => moderato::scan(path, &scan),
        Format::Isso => isso::scan(path).await,
    }
    .map_err(|e| locate(path, e))?;
    let mut loader = match format {
        Format::Disqus => Loader::Disqus(SpanReader::open(path)?),
        Format::Wordpress => Loader::Wordpress(SpanReader::open(path)?, options.keep_pingbacks),
        Format::Remark42 => Loader::Remark42(SpanReader::open(path)?),
        Format::Moderato => Loader::Moderato(SpanReader::open(path)?),
        Format::Commento => Loader::Memory,
        Format::Isso => Loader::Isso(isso::open(path).await?),
    };
    write::run(store, plan, &mut loader, options, progress).await
}

/// Reads one thread's comments in the second pass.
pub(crate) enum Loader {
    Disqus(SpanReader),
    Wordpress(SpanReader, bool),
    Remark42(SpanReader),
    Moderato(SpanReader),
    Isso(sqlx::SqlitePool),
    Memory,
}

impl Loader {
    pub(crate) async fn load(
        &mut self,
        t: &mut PlannedThread,
    ) -> Result<Vec<SourceComment>, ImportError> {
        let mut out = std::mem::take(&mut t.loaded);
        let read = |r: &mut SpanReader, s: Span| {
            r.read(s)
                .map(|b| b.to_vec())
                .map_err(|e| at_byte(s.start, format!("cannot read the record again: {e}")))
        };
        match self {
            Loader::Disqus(r) => {
                for &s in &t.items {
                    out.push(disqus::parse_post_fragment(&read(r, s)?, s.start)?.comment);
                }
            }
            Loader::Wordpress(r, keep_pingbacks) => {
                for &s in &t.items {
                    out.extend(wordpress::parse_item_fragment(
                        &read(r, s)?,
                        s.start,
                        *keep_pingbacks,
                    )?);
                }
            }
            Loader::Remark42(r) => {
                for &s in &t.items {
                    if let Some(c) = remark42::parse_line(&read(r, s)?, 0)? {
                        out.push(c.comment);
                    }
                }
            }
            Loader::Moderato(r) => {
                for &s in &t.items {
                    out.push(moderato::comment_from_line(&read(r, s)?)?);
                }
            }
            Loader::Isso(pool) => out.extend(isso::load_thread(pool, &t.thread).await?),
            Loader::Memory => {}
        }
        Ok(out)
    }
}

/// Applies `--url-prefix` rewriting.
pub(crate) fn rewrite_url(url: &str, prefixes: &[(String, String)]) -> String {
    for (old, new) in prefixes {
        if let Some(rest) = url.strip_prefix(old.as_str()) {
            return format!("{new}{rest}");
        }
    }
    url.to_owned()
}

/// A thread key (see `crate::engine::valid_thread_key`) from any text: characters a key may
/// not hold become `-`, runs of `-` collapse, and at most 200 characters are kept.
pub fn slug(text: &str) -> Option<String> {
    let decoded = percent_decode(text);
    let mut out = String::new();
    for c in decoded.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '~') {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    let trimmed: String = out.trim_matches('-').chars().take(200).collect();
    let trimmed = trimmed.trim_end_matches('-').to_owned();
    // "." and ".." alone would read as path segments in a URL.
    (!trimmed.is_empty() && trimmed.chars().any(|c| c != '.')).then_some(trimmed)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The key for a source thread, or `None` when nothing usable names it.
pub(crate) fn thread_key(t: &SourceThread, options: &ImportOptions) -> Option<String> {
    if let Some(n) = &t.native {
        return Some(n.key.clone());
    }
    let url = t
        .url
        .as_deref()
        .map(|u| rewrite_url(u.trim(), &options.url_prefixes));
    let from_id = || {
        t.identifier
            .as_deref()
            .and_then(slug)
            .or_else(|| slug(&t.source_id))
    };
    match options.key_from {
        KeyFrom::Id => from_id(),
        KeyFrom::Path | KeyFrom::Url => {
            let Some(url) = url.filter(|u| !u.is_empty()) else {
                return from_id();
            };
            let (host, path) = match url::Url::parse(&url) {
                Ok(u) if u.has_host() => {
                    let mut path = u.path().to_owned();
                    if let Some(q) = u.query() {
                        path.push('?');
                        path.push_str(q);
                    }
                    (u.host_str().unwrap_or("").to_owned(), path)
                }
                // Isso and Commento keep paths, not URLs.
                _ => (
                    String::new(),
                    url.split('#').next().unwrap_or("").to_owned(),
                ),
            };
            let text = if options.key_from == KeyFrom::Url {
                format!("{host}/{path}")
            } else {
                path
            };
            slug(&text).or_else(|| (options.key_from == KeyFrom::Path).then(|| "index".into()))
        }
    }
}

/// Unix milliseconds from an RFC 3339 time.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Whether the store is PostgreSQL (sequences need setting after explicit ids).
pub(crate) fn is_postgres(store: &Store) -> bool {
    store.backend == Backend::Postgres
}

/// Reads a whole line-oriented file, calling `f` with each line, its start offset and number.
pub(crate) fn for_each_line(
    path: &Path,
    progress: &dyn Fn(u64),
    mut f: impl FnMut(&[u8], u64, u64) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let (mut offset, mut number) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        number += 1;
        f(&line, offset, number)?;
        offset += n as u64;
        if number.is_multiple_of(1024) {
            progress(offset);
        }
    }
    progress(offset);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(url: &str) -> SourceThread {
        SourceThread {
            source_id: "42".into(),
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn keys_come_from_the_url_path_by_default() {
        let o = ImportOptions::default();
        assert_eq!(
            thread_key(&thread("https://example.org/blog/2020/hello-world/"), &o).as_deref(),
            Some("blog-2020-hello-world")
        );
        assert_eq!(
            thread_key(&thread("https://example.org/"), &o).as_deref(),
            Some("index")
        );
        assert_eq!(
            thread_key(&thread("https://example.org/?p=12"), &o).as_deref(),
            Some("p-12")
        );
        assert_eq!(
            thread_key(&thread("/caf%C3%A9/menu"), &o).as_deref(),
            Some("café-menu")
        );
    }

    #[test]
    fn keys_can_come_from_the_whole_url_or_the_identifier() {
        let mut o = ImportOptions {
            key_from: KeyFrom::Url,
            ..Default::default()
        };
        assert_eq!(
            thread_key(&thread("https://example.org/a/b"), &o).as_deref(),
            Some("example.org-a-b")
        );
        o.key_from = KeyFrom::Id;
        let mut t = thread("https://example.org/a");
        assert_eq!(thread_key(&t, &o).as_deref(), Some("42"));
        t.identifier = Some("post 7".into());
        assert_eq!(thread_key(&t, &o).as_deref(), Some("post-7"));
    }

    #[test]
    fn url_prefixes_rewrite_a_changed_domain() {
        let o = ImportOptions {
            key_from: KeyFrom::Url,
            url_prefixes: vec![("http://old.example".into(), "https://new.example".into())],
            ..Default::default()
        };
        assert_eq!(
            thread_key(&thread("http://old.example/x"), &o).as_deref(),
            Some("new.example-x")
        );
    }

    #[test]
    fn slugs_are_valid_thread_keys() {
        for s in ["a/b c", "--x--", "ü?&=", "日本/語", &"x".repeat(300)] {
            let k = slug(s).unwrap();
            assert!(crate::engine::valid_thread_key(&k), "{k}");
        }
        assert_eq!(slug("///"), None);
        assert_eq!(slug(".."), None);
    }
}
