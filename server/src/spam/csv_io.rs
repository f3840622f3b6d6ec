//! CSV input (`label,author,text`, any column order) and `label,score` output.

use std::io::{Read, Write};

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
    let headers = rdr.headers().map_err(|e| convert(e, bytes))?.clone();
    let find = |name: &str| {
        headers.iter().position(|h| {
            h.trim()
                .trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case(name)
        })
    };
    let cols = Columns {
        label: find("label"),
        author: find("author"),
        text: find("text"),
        header: headers.iter().collect::<Vec<_>>().join(","),
    };
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

/// Writes `label,score` CSV: a header, then one line per score in order, the
/// label being `spam` when the score is at or above `threshold`.
pub fn write_scores<W: Write>(writer: W, scores: &[f64], threshold: f64) -> Result<(), CsvError> {
    let mut w = std::io::BufWriter::new(writer);
    w.write_all(b"label,score\n")?;
    for &p in scores {
        let label = if p >= threshold {
            Label::Spam
        } else {
            Label::Ham
        };
        writeln!(w, "{label},{p:.6}")?;
    }
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
/// row in order. Returns the number of rows written.
///
/// Parsing runs on its own thread, one batch ahead of the scoring, which
/// uses all cores; nothing is written unless the whole input parses.
pub fn classify_csv<R: Read, W: Write>(
    model: &Model,
    input: R,
    output: W,
    threshold: f64,
) -> Result<usize, CsvError> {
    let bytes = read_all(input)?;
    let bytes = bytes.as_slice();
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
        let train = "label,author,text\nspam,x,buy cheap pills\nham,y,thanks nice post\n";
        let model = Model::train(
            &read_samples(train.as_bytes()).expect("train"),
            &Options::default(),
        );
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
