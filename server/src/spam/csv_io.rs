//! CSV input (`label,author,text`, any column order) and `label,score` output.

use std::io::{Read, Write};

use super::csv_fast;
use super::model::Model;
use super::{Comment, Label, Sample};

/// A CSV problem, with the 1-based line where the offending record starts.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The header row lacks a required column.
    #[error("line 1: CSV header has no `{column}` column (found: {found})")]
    MissingColumn {
        /// The missing column.
        column: &'static str,
        /// The header as read, comma separated.
        found: String,
    },
    /// The label column holds something other than `spam` or `ham`.
    #[error("line {line}: unknown label {label:?} (expected \"spam\" or \"ham\")")]
    UnknownLabel {
        /// Line of the record.
        line: u64,
        /// The label as found.
        label: String,
    },
    /// A quoted field is opened but never closed.
    #[error("line {line}: quoted field is never closed (unbalanced '\"')")]
    UnterminatedQuote {
        /// Line where the record with the open quote starts.
        line: u64,
    },
    /// Any other malformed record (wrong field count, invalid UTF-8, ...).
    #[error("line {line}: {message}")]
    Malformed {
        /// Line of the record.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Reading the input or writing the output failed.
    #[error("CSV I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Column positions found in the header.
struct Columns {
    label: Option<usize>,
    author: Option<usize>,
    text: Option<usize>,
    header: String,
}

impl Columns {
    /// Looks the columns up in the header row (case-insensitive, trimmed,
    /// ignoring a byte-order mark).
    fn find(headers: &csv::StringRecord) -> Columns {
        let find = |name: &str| {
            headers.iter().position(|h| {
                h.trim()
                    .trim_start_matches('\u{feff}')
                    .eq_ignore_ascii_case(name)
            })
        };
        Columns {
            label: find("label"),
            author: find("author"),
            text: find("text"),
            header: headers.iter().collect::<Vec<_>>().join(","),
        }
    }

    fn require(&self, column: &'static str, at: Option<usize>) -> Result<usize, CsvError> {
        at.ok_or_else(|| CsvError::MissingColumn {
            column,
            found: self.header.clone(),
        })
    }
}

/// Reads all of `reader`: the unterminated-quote check needs the raw bytes,
/// and inputs are at most a site's comment history.
fn read_all<R: Read>(mut reader: R) -> Result<Vec<u8>, CsvError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Walks the records of a CSV document, calling `row` with each record and
/// the line it starts on.
fn for_each_record<F>(bytes: &[u8], mut row: F) -> Result<Columns, CsvError>
where
    F: FnMut(&Columns, &csv::StringRecord, u64) -> Result<(), CsvError>,
{
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let headers = rdr.headers().map_err(|e| convert(e, bytes))?;
    let cols = Columns::find(headers);
    let mut record = csv::StringRecord::new();
    let mut last = None;
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(convert(e, bytes)),
        }
        let (line, start) = record
            .position()
            .map_or((0, 0), |p| (p.line(), p.byte() as usize));
        last = Some((line, start));
        row(&cols, &record, line)?;
    }
    // The csv crate ends an unclosed quoted field silently at end of input,
    // so the last record then holds an odd number of quote characters.
    if let Some((line, start)) = last
        && odd_quotes(bytes.get(start..).unwrap_or_default())
    {
        return Err(CsvError::UnterminatedQuote { line });
    }
    Ok(cols)
}

fn odd_quotes(bytes: &[u8]) -> bool {
    bytes.iter().filter(|&&b| b == b'"').count() % 2 == 1
}

fn convert(e: csv::Error, bytes: &[u8]) -> CsvError {
    let pos = e.position().cloned();
    let line = pos.as_ref().map_or(0, csv::Position::line);
    let start = pos.as_ref().map_or(0, |p| p.byte() as usize);
    match e.into_kind() {
        csv::ErrorKind::Io(io) => CsvError::Io(io),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            if odd_quotes(bytes.get(start..).unwrap_or_default()) {
                CsvError::UnterminatedQuote { line }
            } else {
                CsvError::Malformed {
                    line,
                    message: format!("expected {expected_len} fields, found {len}"),
                }
            }
        }
        csv::ErrorKind::Utf8 { err, .. } => CsvError::Malformed {
            line,
            message: format!("field {} is not valid UTF-8", err.field() + 1),
        },
        other => CsvError::Malformed {
            line,
            message: format!("{other:?}"),
        },
    }
}

/// Reads labelled samples from CSV with a header naming `label`, `author` and
/// `text` columns in any order (other columns are ignored). Labels are `spam`
/// or `ham`, in any case.
pub fn read_samples<R: Read>(reader: R) -> Result<Vec<Sample>, CsvError> {
    let bytes = read_all(reader)?;
    let mut out = Vec::new();
    let mut idx = None;
    let cols = for_each_record(&bytes, |cols, rec, line| {
        let (l, a, t) = match idx {
            Some(i) => i,
            None => {
                let i = (
                    cols.require("label", cols.label)?,
                    cols.require("author", cols.author)?,
                    cols.require("text", cols.text)?,
                );
                idx = Some(i);
                i
            }
        };
        let raw = rec.get(l).unwrap_or_default();
        let label = Label::parse(raw).ok_or_else(|| CsvError::UnknownLabel {
            line,
            label: raw.to_owned(),
        })?;
        out.push(Sample {
            label,
            author: rec.get(a).unwrap_or_default().to_owned(),
            text: rec.get(t).unwrap_or_default().to_owned(),
        });
        Ok(())
    })?;
    // An input with a header but no rows must still have the right columns.
    cols.require("label", cols.label)?;
    cols.require("author", cols.author)?;
    cols.require("text", cols.text)?;
    Ok(out)
}

/// Reads comments to classify: a `text` column is required, `author` is
/// optional (empty if absent) and a `label` column, if any, is ignored.
pub fn read_comments<R: Read>(reader: R) -> Result<Vec<Comment>, CsvError> {
    let bytes = read_all(reader)?;
    let mut out = Vec::new();
    let cols = for_each_record(&bytes, |cols, rec, _line| {
        let t = cols.require("text", cols.text)?;
        out.push(Comment {
            author: cols
                .author
                .and_then(|a| rec.get(a))
                .unwrap_or_default()
                .to_owned(),
            text: rec.get(t).unwrap_or_default().to_owned(),
        });
        Ok(())
    })?;
    cols.require("text", cols.text)?;
    Ok(out)
}

const HEADER: &[u8] = b"label,score\n";

/// Writes `label,score` CSV: a header, then one line per score in order, the
/// label being `spam` when the score is at or above `threshold` and the score
/// rounded to six decimals.
pub fn write_scores<W: Write>(writer: W, scores: &[f64], threshold: f64) -> Result<(), CsvError> {
    let mut out = Vec::with_capacity(12 + scores.len() * 16);
    out.extend_from_slice(HEADER);
    for &p in scores {
        csv_fast::push_score(&mut out, p, threshold);
    }
    let mut w = writer;
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}

/// Comments parsed from CSV, stored in one buffer to avoid two allocations
/// per row.
#[derive(Default)]
struct Batch {
    buf: String,
    /// `(author start, text start, text end)` in `buf`.
    rows: Vec<(usize, usize, usize)>,
}

impl Batch {
    /// Rows per batch: big enough to keep both cores busy, small enough that
    /// parsing the next batch overlaps scoring this one.
    const ROWS: usize = 8192;
    const BYTES: usize = 8 << 20;

    fn push(&mut self, author: &str, text: &str) {
        let a = self.buf.len();
        self.buf.push_str(author);
        let t = self.buf.len();
        self.buf.push_str(text);
        self.rows.push((a, t, self.buf.len()));
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= Self::ROWS || self.buf.len() >= Self::BYTES
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.rows
            .iter()
            .map(|&(a, t, e)| {
                (
                    self.buf.get(a..t).unwrap_or_default(),
                    self.buf.get(t..e).unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// `spam classify`: reads comments from `input` (as [`read_comments`]),
/// scores them and writes `label,score` CSV to `output`, one row per input
/// row in order. Returns the number of rows written. Nothing is written
/// unless the whole input parses.
pub fn classify_csv<R: Read, W: Write>(
    model: &Model,
    input: R,
    output: W,
    threshold: f64,
) -> Result<usize, CsvError> {
    classify_csv_bytes(model, &read_all(input)?, output, threshold)
}

/// [`classify_csv`] on a file, mapped into memory rather than read: a large
/// file is then never copied, and its pages are brought in by the cores
/// that parse them.
pub fn classify_csv_file<W: Write>(
    model: &Model,
    path: &std::path::Path,
    output: W,
    threshold: f64,
) -> Result<usize, CsvError> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        // A pipe (`--csv /dev/stdin`) cannot be mapped, nor can an empty file.
        return classify_csv(model, file, output, threshold);
    }
    // SAFETY: the map is only read, and lives until the function returns.
    // Another process truncating the file meanwhile would fault this one
    // (SIGBUS); `spam classify` is a batch command run on files at rest.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    // The cores read it from two places at once (one half each, to begin with), which the
    // kernel's readahead does not guess for a file not yet in memory: ask for all of it.
    if let Err(e) = map.advise(memmap2::Advice::WillNeed) {
        tracing::debug!(error = %e, "madvise(WILLNEED) failed");
    }
    classify_csv_bytes(model, &map, output, threshold)
}

/// [`classify_csv`] on input already in memory.
///
/// Well-formed input is parsed, scored and formatted on all cores
/// ([`csv_fast`]); anything else (including every error) goes through the
/// csv crate, so the output and the error messages are the same either way.
pub fn classify_csv_bytes<W: Write>(
    model: &Model,
    bytes: &[u8],
    output: W,
    threshold: f64,
) -> Result<usize, CsvError> {
    classify_bytes_with(model, bytes, output, threshold, csv_fast::PIECE)
}

fn classify_bytes_with<W: Write>(
    model: &Model,
    bytes: &[u8],
    mut output: W,
    threshold: f64,
    piece: usize,
) -> Result<usize, CsvError> {
    if let Some((layout, body)) = fast_layout(bytes) {
        let scored = csv_fast::classify(model.scorer(), body, &layout, threshold, piece);
        if let Some((buffers, rows)) = scored {
            output.write_all(HEADER)?;
            for buffer in buffers {
                output.write_all(&buffer)?;
            }
            output.flush()?;
            return Ok(rows);
        }
    }
    classify_exact(model, bytes, output, threshold)
}

/// The columns the parallel path needs, read from the header by the csv crate, and the
/// input after the header; `None` when the header is unreadable or has no `text` column
/// (the csv crate then words the error).
fn fast_layout(bytes: &[u8]) -> Option<(csv_fast::Layout, &[u8])> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let headers = rdr.headers().ok()?;
    let cols = Columns::find(headers);
    let layout = csv_fast::Layout {
        width: headers.len(),
        author: cols.author,
        text: cols.text?,
    };
    let start = usize::try_from(rdr.position().byte()).ok()?;
    Some((layout, body_after_header(bytes, start)?))
}

/// The input after a header row that the csv crate says ends at `start`.
fn body_after_header(bytes: &[u8], start: usize) -> Option<&[u8]> {
    let body = bytes.get(start..)?;
    // After a CRLF header, the csv crate's position is between CR and LF.
    match body.first() {
        Some(b'\n') if start > 0 && bytes[start - 1] == b'\r' => body.get(1..),
        _ => Some(body),
    }
}

/// `spam classify` through the csv crate: parsing runs on its own thread,
/// one batch ahead of the scoring, which uses all cores.
fn classify_exact<W: Write>(
    model: &Model,
    bytes: &[u8],
    output: W,
    threshold: f64,
) -> Result<usize, CsvError> {
    let mut scores = Vec::new();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
        let parser = scope.spawn(move || {
            let mut batch = Batch::default();
            let cols = for_each_record(bytes, |cols, rec, _line| {
                let t = cols.require("text", cols.text)?;
                let author = cols.author.and_then(|a| rec.get(a)).unwrap_or_default();
                batch.push(author, rec.get(t).unwrap_or_default());
                if batch.is_full() {
                    // A closed channel means the scorer is gone; the result
                    // is discarded then, so there is nothing to report.
                    let _ = tx.send(std::mem::take(&mut batch));
                }
                Ok(())
            })?;
            cols.require("text", cols.text)?;
            let _ = tx.send(batch);
            Ok::<(), CsvError>(())
        });
        for batch in rx {
            scores.extend(model.classify_pairs(&batch.pairs()));
        }
        match parser.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    write_scores(output, &scores, threshold)?;
    Ok(scores.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spam::Options;

    /// A model that has seen one spam and one ham comment.
    fn pills_model() -> Model {
        let train = "label,author,text\nspam,x,buy cheap pills\nham,y,thanks nice post\n";
        Model::train(
            &read_samples(train.as_bytes()).expect("train"),
            &Options::default(),
        )
    }

    #[test]
    fn reads_any_column_order_and_rfc4180_quoting() {
        let csv = "text,extra,Label,author\n\
                   \"Hello, \"\"world\"\"\nsecond line\",x,SPAM,\"Bob b@x.org\"\n\
                   plain,y,ham,\n";
        let got = read_samples(csv.as_bytes()).expect("valid");
        assert_eq!(
            got,
            [
                Sample {
                    label: Label::Spam,
                    author: "Bob b@x.org".into(),
                    text: "Hello, \"world\"\nsecond line".into(),
                },
                Sample {
                    label: Label::Ham,
                    author: String::new(),
                    text: "plain".into(),
                },
            ]
        );
    }

    #[test]
    fn missing_column_is_named() {
        let err = read_samples("label,text\nspam,hi\n".as_bytes()).expect_err("no author");
        assert!(matches!(
            err,
            CsvError::MissingColumn {
                column: "author",
                ..
            }
        ));
        assert!(err.to_string().contains("line 1") && err.to_string().contains("author"));
        // Also without any data rows.
        assert!(read_samples("label,author\n".as_bytes()).is_err());
    }

    #[test]
    fn unknown_label_names_its_line() {
        // The quoted field spans two lines, so the bad record starts on line 4.
        let csv = "label,author,text\nham,a,\"two\nlines\"\nspma,b,c\n";
        let err = read_samples(csv.as_bytes()).expect_err("bad label");
        assert!(
            matches!(&err, CsvError::UnknownLabel { line: 4, label } if label == "spma"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "line 4: unknown label \"spma\" (expected \"spam\" or \"ham\")"
        );
    }

    #[test]
    fn broken_quoting_names_its_line() {
        let csv = "label,author,text\nham,a,ok\nspam,b,\"never closed\nham,c,d\n";
        let err = read_samples(csv.as_bytes()).expect_err("open quote");
        assert!(
            matches!(err, CsvError::UnterminatedQuote { line: 3 }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("line 3:"));
        let short = "label,author,text\nham,a,ok\nspam,\"b\"\n";
        let err = read_samples(short.as_bytes()).expect_err("two fields");
        assert!(
            matches!(err, CsvError::Malformed { line: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("expected 3 fields, found 2"));
        let bad_utf8: &[u8] = b"label,author,text\nham,a,\xff\n";
        assert!(matches!(
            read_samples(bad_utf8),
            Err(CsvError::Malformed { line: 2, .. })
        ));
    }

    #[test]
    fn comments_need_only_text() {
        let got = read_comments("text\nfirst\n\"sec,ond\"\n".as_bytes()).expect("valid");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].text, "sec,ond");
        assert_eq!(got[1].author, "");
        let with_label =
            read_comments("label,author,text\nbogus,a,t\n".as_bytes()).expect("label ignored");
        assert_eq!(with_label[0].author, "a");
        assert!(matches!(
            read_comments("author\nx\n".as_bytes()),
            Err(CsvError::MissingColumn { column: "text", .. })
        ));
    }

    #[test]
    fn writes_label_score_rows_in_order() {
        let mut out = Vec::new();
        write_scores(&mut out, &[0.95, 0.1, 0.9], 0.9).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "label,score\nspam,0.950000\nham,0.100000\nspam,0.900000\n"
        );
    }

    #[test]
    fn classify_csv_end_to_end() {
        let train = "label,author,text\n\
                     spam,x,buy cheap pills now\n\
                     spam,y,cheap pills offer\n\
                     ham,z,thanks for the post\n\
                     ham,w,nice post about rust\n";
        let model = Model::train(
            &read_samples(train.as_bytes()).expect("train"),
            &Options::default(),
        );
        let mut out = Vec::new();
        let n = classify_csv(
            &model,
            "author,text\nq,cheap pills\nr,thanks nice post\n".as_bytes(),
            &mut out,
            0.5,
        )
        .expect("classify");
        assert_eq!(n, 2);
        let out = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "label,score");
        assert!(lines[1].starts_with("spam,"), "{out}");
        assert!(lines[2].starts_with("ham,"), "{out}");
    }

    #[test]
    fn classify_csv_keeps_order_across_batches() {
        let model = pills_model();
        let mut input = String::from("text,author\n");
        for i in 0..(Batch::ROWS * 2 + 77) {
            let text = if i % 3 == 0 {
                "cheap pills"
            } else {
                "nice post"
            };
            input.push_str(&format!("\"{text} {i}\",a{i}\n"));
        }
        let mut out = Vec::new();
        let n = classify_csv(&model, input.as_bytes(), &mut out, 0.5).expect("classify");
        let expected = model.classify_batch(&read_comments(input.as_bytes()).expect("read"));
        assert_eq!(n, expected.len());
        let mut want = Vec::new();
        write_scores(&mut want, &expected, 0.5).expect("write");
        assert_eq!(out, want);
    }

    /// The parallel path must read every input exactly as the csv crate does:
    /// random documents built from the bytes that matter to CSV (quotes,
    /// separators, CR, LF, multi-byte and invalid UTF-8), cut into tiny
    /// pieces, give the same output or the same error through both.
    #[test]
    fn parallel_path_matches_the_csv_crate() {
        let model = pills_model();
        const ATOMS: [&[u8]; 14] = [
            b"cheap",
            b"pills",
            b"nice post",
            b" ",
            b",",
            b"\n",
            b"\r\n",
            b"\"",
            b"\"\"",
            b"\r",
            "caf\u{e9}".as_bytes(),
            b"\xff",
            b"Thanks",
            b"",
        ];
        let mut seed = 0x5EED_u64;
        let mut next = move |n: usize| {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (seed ^ (seed >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((z ^ (z >> 29)) % n as u64) as usize
        };
        let mut fast_hits = 0;
        for round in 0..3000 {
            let mut doc: Vec<u8> = if round % 2 == 0 {
                b"author,text\n".to_vec()
            } else {
                b"text,label,author\r\n".to_vec()
            };
            // Half the documents are strict CSV, the rest have flaws.
            let dirty = next(2) == 0;
            for _ in 0..next(12) {
                for f in 0..2 + round % 2 {
                    if f > 0 {
                        doc.push(b',');
                    }
                    // Mostly well-formed fields, sometimes raw atoms.
                    let quoted = next(3) == 0;
                    if quoted {
                        doc.push(b'"');
                    }
                    for _ in 0..next(6) {
                        let atom = ATOMS[next(ATOMS.len())];
                        let clean = !matches!(
                            atom,
                            b"," | b"\n" | b"\r\n" | b"\"" | b"\"\"" | b"\r" | b"\xff"
                        );
                        if atom == b"\xff" && !dirty {
                            continue;
                        }
                        if quoted && atom == b"\"" {
                            doc.extend_from_slice(b"\"\"");
                        } else if quoted || clean || (dirty && next(8) == 0) {
                            doc.extend_from_slice(atom);
                        }
                    }
                    if quoted && (!dirty || next(40) > 0) {
                        doc.push(b'"');
                    }
                }
                doc.extend_from_slice(if round % 2 == 0 { b"\n" } else { b"\r\n" });
            }
            if dirty && next(4) == 0 {
                doc.pop();
            }
            let piece = 1 + next(40);
            let mut fast = Vec::new();
            let got = classify_bytes_with(&model, &doc, &mut fast, 0.5, piece);
            let mut exact = Vec::new();
            let want = classify_exact(&model, &doc, &mut exact, 0.5);
            let shown = String::from_utf8_lossy(&doc);
            match (got, want) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b, "{shown:?}");
                    assert_eq!(fast, exact, "{shown:?}");
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{shown:?}"),
                (a, b) => panic!("{shown:?}: parallel {a:?}, csv crate {b:?}"),
            }
            let layout_ok = csv_fast_accepts(&doc, piece);
            fast_hits += usize::from(layout_ok);
        }
        // The generator must exercise the parallel path, not only the fallback.
        assert!(fast_hits > 1400, "parallel path taken {fast_hits} times");
    }

    /// Whether the parallel path (rather than the fallback) handles `doc`.
    fn csv_fast_accepts(doc: &[u8], piece: usize) -> bool {
        let Some((layout, body)) = fast_layout(doc) else {
            return false;
        };
        let model = Model::new(&Options::default());
        csv_fast::classify(model.scorer(), body, &layout, 0.5, piece).is_some()
    }

    #[test]
    fn classify_csv_file_reads_a_mapped_file_like_any_reader() {
        let model = pills_model();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("in.csv");
        std::fs::write(
            &path,
            "author,text\nq,cheap pills\nr,\"thanks, nice post\"\n",
        )
        .expect("write");
        let mut mapped = Vec::new();
        assert_eq!(
            classify_csv_file(&model, &path, &mut mapped, 0.5).expect("file"),
            2
        );
        let mut read = Vec::new();
        let bytes = std::fs::read(&path).expect("read");
        classify_csv(&model, bytes.as_slice(), &mut read, 0.5).expect("reader");
        assert_eq!(mapped, read);
        assert!(
            String::from_utf8(mapped)
                .expect("utf8")
                .starts_with("label,score\nspam,")
        );
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "").expect("write");
        assert!(matches!(
            classify_csv_file(&model, &empty, &mut Vec::new(), 0.5),
            Err(CsvError::MissingColumn { column: "text", .. })
        ));
    }

    #[test]
    fn classify_csv_writes_nothing_for_bad_input() {
        let model = Model::new(&Options::default());
        let mut out = Vec::new();
        let err = classify_csv(&model, "text\nfine\n\"open".as_bytes(), &mut out, 0.5);
        assert!(
            matches!(err, Err(CsvError::UnterminatedQuote { line: 3 })),
            "{err:?}"
        );
        assert!(out.is_empty());
        let err = classify_csv(&model, "author\nx\n".as_bytes(), &mut out, 0.5);
        assert!(matches!(
            err,
            Err(CsvError::MissingColumn { column: "text", .. })
        ));
        assert!(out.is_empty());
    }
}
