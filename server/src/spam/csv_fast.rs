//! The parallel path of `spam classify` for well-formed CSV.
//!
//! The csv crate parses on one core at well under the scorer's speed, so on a
//! large file it, not the classifier, set the pace. Here the input is cut
//! into pieces at record boundaries, and each piece is parsed, scored and
//! formatted on whichever core is free, reading fields in place (a copy only
//! for a quoted field holding `""`).
//!
//! A record boundary is a newline outside quotes. In strict RFC 4180 CSV a
//! byte is inside quotes exactly when an odd number of `"` precede it, so the
//! quotes of each piece are counted in parallel and the cut points follow
//! from the running parity, with no sequential pass over the input.
//!
//! That holds only for strict input: quotes around whole fields only, `""`
//! inside them, LF or CRLF line ends, valid UTF-8, every record as wide as
//! the header. This parser accepts nothing else: on anything it does not read
//! exactly as the csv crate would, it gives up, and the caller runs the csv
//! crate over the whole input, which also words any error. So the fast path
//! never changes what is accepted or what comes out.

use rayon::prelude::*;

use super::Label;
use super::scorer::Scorer;

/// Bytes per piece: hundreds of pieces on a large file balance the two
/// cores; a piece costs about a millisecond, so the per-piece overhead is nil.
pub(super) const PIECE: usize = 1 << 20;

/// Where the wanted columns are, from the header.
pub(super) struct Layout {
    /// Fields per record.
    pub(super) width: usize,
    pub(super) author: Option<usize>,
    pub(super) text: usize,
}

/// Appends one `label,score` line, the score rounded to six decimals.
pub(super) fn push_score(out: &mut Vec<u8>, p: f64, threshold: f64) {
    out.extend_from_slice(if p >= threshold {
        Label::Spam.as_str().as_bytes()
    } else {
        Label::Ham.as_str().as_bytes()
    });
    // `{:.6}` through `fmt` costs more than scoring a short comment; a score
    // is in [0, 1], so six fixed digits are all there is to write.
    // Adding one half and truncating rounds a non-negative number like
    // `round`, without the libm call.
    let micros = (p.clamp(0.0, 1.0) * 1e6 + 0.5) as u32;
    if micros >= 1_000_000 {
        out.extend_from_slice(b",1.000000\n");
        return;
    }
    let mut line = *b",0.000000\n";
    let mut m = micros;
    for d in line[3..9].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&line);
}

/// Scores every record of `body` (the input after its header row) and
/// returns the formatted lines, one buffer per piece in input order, with the
/// row count; `None` if the input is not strict CSV (see the module docs).
pub(super) fn classify(
    scorer: &Scorer,
    body: &[u8],
    layout: &Layout,
    threshold: f64,
    piece: usize,
) -> Option<(Vec<Vec<u8>>, usize)> {
    let cuts = cut_points(body, piece)?;
    let outputs: Vec<Option<(Vec<u8>, usize)>> = cuts
        .par_windows(2)
        .map(|w| classify_piece(scorer, &body[w[0]..w[1]], layout, threshold))
        .collect();
    let mut rows = 0;
    let mut buffers = Vec::with_capacity(outputs.len());
    for output in outputs {
        let (buffer, n) = output?;
        rows += n;
        buffers.push(buffer);
    }
    Some((buffers, rows))
}

fn count_quotes(bytes: &[u8]) -> usize {
    // Quotes are sparse: memchr's vector search skips the bytes between them.
    memchr::memchr_iter(b'"', bytes).count()
}

/// Offsets where records start, about every `piece` bytes, plus the end.
/// `None` if the quotes are unbalanced (the exact parser names the line).
fn cut_points(body: &[u8], piece: usize) -> Option<Vec<usize>> {
    let piece = piece.max(1);
    let quotes: Vec<usize> = body.par_chunks(piece).map(count_quotes).collect();
    if quotes.iter().sum::<usize>() % 2 == 1 {
        return None;
    }
    let mut cuts = vec![0];
    let mut before_end = 0;
    for (k, &q) in quotes.iter().enumerate() {
        before_end += q;
        let end = (k + 1) * piece;
        if end >= body.len() {
            break;
        }
        let from = cuts.last().copied().unwrap_or(0);
        // Walk back from the piece's end to the last newline outside
        // quotes; `odd` is the parity of the quotes before `body[j]`.
        let mut odd = before_end % 2 == 1;
        let mut j = end;
        while j > from {
            j -= 1;
            match body[j] {
                b'"' => odd = !odd,
                b'\n' if !odd => {
                    cuts.push(j + 1);
                    break;
                }
                _ => {}
            }
        }
    }
    if cuts.last() != Some(&body.len()) {
        cuts.push(body.len());
    }
    Some(cuts)
}

/// One field: its content range in the piece, and whether it holds `""`.
#[derive(Clone, Copy, Default)]
struct Field {
    start: usize,
    end: usize,
    escaped: bool,
}

/// Parses, scores and formats the records of one piece, which starts at a
/// record boundary and ends at one (or at the end of the input).
fn classify_piece(
    scorer: &Scorer,
    piece: &[u8],
    layout: &Layout,
    threshold: f64,
) -> Option<(Vec<u8>, usize)> {
    let text = std::str::from_utf8(piece).ok()?;
    let crlf = memchr::memchr(b'\r', piece).is_some();
    let mut out = Vec::with_capacity(piece.len() / 16);
    let mut fields = Vec::with_capacity(layout.width);
    let (mut author_buf, mut text_buf) = (String::new(), String::new());
    let mut rows = 0;
    let mut i = 0;
    while i < piece.len() {
        i = parse_record(piece, i, crlf, &mut fields)?;
        if fields.len() != layout.width {
            return None;
        }
        let author = match layout.author {
            Some(a) => field_str(text, fields[a], &mut author_buf),
            None => "",
        };
        let body = field_str(text, fields[layout.text], &mut text_buf);
        push_score(&mut out, scorer.probability(author, body), threshold);
        rows += 1;
    }
    Some((out, rows))
}

/// Reads the record starting at `i` into `fields`; returns where the next
/// record starts, or `None` for anything but strict CSV.
fn parse_record(b: &[u8], mut i: usize, crlf: bool, fields: &mut Vec<Field>) -> Option<usize> {
    fields.clear();
    // The csv crate skips blank lines; leave those to it.
    if matches!(b[i], b'\n' | b'\r') {
        return None;
    }
    loop {
        let (field, end) = if b.get(i) == Some(&b'"') {
            quoted_field(b, i)?
        } else {
            let len = memchr::memchr3(b',', b'\n', b'"', &b[i..]).unwrap_or(b.len() - i);
            let end = i + len;
            if b.get(end) == Some(&b'"') {
                // A quote inside an unquoted field.
                return None;
            }
            let mut content = end;
            if crlf && let Some(r) = memchr::memchr(b'\r', &b[i..end]) {
                // A CR ends a record only right before the LF.
                if i + r + 1 != end || b.get(end) != Some(&b'\n') {
                    return None;
                }
                content = end - 1;
            }
            let field = Field {
                start: i,
                end: content,
                escaped: false,
            };
            (field, end)
        };
        fields.push(field);
        match b.get(end) {
            None => return Some(end),
            Some(b',') => i = end + 1,
            Some(b'\n') => return Some(end + 1),
            Some(b'\r') if b.get(end + 1) == Some(&b'\n') => return Some(end + 2),
            Some(_) => return None,
        }
    }
}

/// A quoted field opening at `i`: its content and the index just past the
/// closing quote.
fn quoted_field(b: &[u8], i: usize) -> Option<(Field, usize)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        let q = j + memchr::memchr(b'"', &b[j..])?;
        if b.get(q + 1) == Some(&b'"') {
            escaped = true;
            j = q + 2;
            continue;
        }
        let field = Field {
            start: i + 1,
            end: q,
            escaped,
        };
        return Some((field, q + 1));
    }
}

/// The field's text, with `""` turned back into `"` (in `buf`) if needed.
fn field_str<'a>(text: &'a str, field: Field, buf: &'a mut String) -> &'a str {
    // Fields are cut at ASCII bytes, so the range is on char boundaries.
    let raw = &text[field.start..field.end];
    if !field.escaped {
        return raw;
    }
    buf.clear();
    // Inside a quoted field every quote is the first of a `""` pair. (memchr
    // rather than `str::find`, whose substring searcher costs more to set up
    // than a short field takes to copy.)
    let mut rest = raw;
    while let Some(p) = memchr::memchr(b'"', rest.as_bytes()) {
        buf.push_str(&rest[..=p]);
        rest = &rest[p + 2..];
    }
    buf.push_str(rest);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_only_at_newlines_outside_quotes() {
        let body = b"a,\"x\ny\"\nb,c\n\"q\n\n\",d\ne,f\n";
        for piece in 1..body.len() + 2 {
            let cuts = cut_points(body, piece).expect("balanced");
            assert_eq!(cuts.first(), Some(&0));
            assert_eq!(cuts.last(), Some(&body.len()));
            for &c in &cuts[1..cuts.len() - 1] {
                assert!(
                    [8, 12, 20].contains(&c),
                    "piece {piece}: cut at {c} is not a record start"
                );
            }
        }
        assert!(cut_points(b"a,\"open\n", 4).is_none());
    }

    #[test]
    fn scores_format_like_fixed_six_decimals() {
        for p in [
            0.0,
            1e-7,
            0.123_456_4,
            0.5,
            0.899_999_9,
            0.9,
            0.999_999_6,
            1.0,
        ] {
            let mut out = Vec::new();
            push_score(&mut out, p, 0.9);
            let label = if p >= 0.9 { "spam" } else { "ham" };
            assert_eq!(
                String::from_utf8(out).expect("ascii"),
                format!("{label},{p:.6}\n")
            );
        }
    }
}
