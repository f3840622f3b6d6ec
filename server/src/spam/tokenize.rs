//! Hand-written tokenizer: lowercased `\b\w\w+\b` words plus optional feature tokens.
//!
//! Words follow django-cast's `re.findall(r"\b\w\w+\b", text.lower())`: maximal
//! runs of Unicode word characters (alphanumerics and `_`) at least two
//! characters long, lowercased. ASCII text is classified eight bytes at a
//! time, and words that are already lowercase are handed out as slices of the
//! input without copying; only words with uppercase or non-ASCII letters go
//! through a buffer.
//!
//! Feature tokens all contain `#`, which is never a word character, so they can
//! never collide with a word.

use serde::{Deserialize, Serialize};

use super::scorer::hash_bytes;

/// Which extra feature tokens are emitted besides the words.
///
/// A model stores the features it was trained with and classifies with the
/// same ones, so changing them needs retraining. The default is the set that
/// measurably helped in `docs/spam.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// One `#links:N` token with the link count bucketed as 0, 1, 2–3, 4+.
    pub links: bool,
    /// One `#dom:example.com` token per link (last two labels of the host).
    pub domains: bool,
    /// A `#num:N` token for each all-digit word, bucketed by length
    /// (2–3, 4–5, 6–9, 10+): phone numbers and prices without the exact digits.
    pub numbers: bool,
    /// `#cur:N` (currency signs) and `#bang:N` (exclamation marks) buckets.
    pub symbols: bool,
    /// One `#caps:N` token for the share of uppercase among ASCII letters.
    pub caps: bool,
    /// Prefix author words with `a#` so they are counted apart from the text.
    pub author_prefix: bool,
}

impl Features {
    /// Words only, exactly django-cast's tokens.
    pub const NONE: Features = Features {
        links: false,
        domains: false,
        numbers: false,
        symbols: false,
        caps: false,
        author_prefix: false,
    };
}

impl Default for Features {
    fn default() -> Self {
        Features {
            links: false,
            domains: true,
            numbers: false,
            symbols: false,
            caps: true,
            author_prefix: true,
        }
    }
}

const WORD: u8 = 1;
const UPPER: u8 = 2;

/// Per-byte classes for ASCII (`\w` = `[A-Za-z0-9_]`); zero for bytes >= 0x80.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_uppercase() {
            WORD | UPPER
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' {
            WORD
        } else {
            0
        };
        b += 1;
    }
    t
};

// SWAR (8 bytes per step) classification of ASCII text. Every function
// assumes all eight bytes are below 0x80, so per-byte additions never carry
// into the neighbouring byte; callers check `x & HIGH == 0` first.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// High bit set in each byte of `x` that is `>= c` (`c <= 0x80`).
#[inline]
fn ge(x: u64, c: u8) -> u64 {
    x.wrapping_add(ONES * u64::from(0x80 - c)) & HIGH
}

/// High bit set in each byte of `x` that equals `c`.
#[inline]
fn eq(x: u64, c: u8) -> u64 {
    !((x ^ (ONES * u64::from(c))).wrapping_add(LOW7)) & HIGH
}

/// `(word bytes, uppercase bytes)` of eight ASCII bytes, as high-bit masks.
#[inline]
fn word_mask(x: u64) -> (u64, u64) {
    // Setting bit 5 folds A-Z onto a-z without creating new letters.
    let folded = x | (ONES * 0x20);
    let letter = ge(folded, b'a') & !ge(folded, b'z' + 1);
    let digit = ge(x, b'0') & !ge(x, b'9' + 1);
    let upper = letter & !(x << 2);
    (letter | digit | eq(x, b'_'), upper)
}

#[inline]
fn load8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The eight bytes at `at`, padded with spaces past the end of `b`, so the
/// tail of a text takes the fast path too (spaces end words and count for
/// nothing). `at < b.len()`.
#[inline(always)]
fn block_at(b: &[u8], at: usize) -> u64 {
    const SPACES: u64 = ONES * b' ' as u64;
    let n = b.len();
    if at + 8 <= n {
        load8(b, at)
    } else if n >= 8 {
        let missing = 8 * (at + 8 - n) as u32;
        (load8(b, n - 8) >> missing) | (SPACES << (64 - missing))
    } else {
        let mut w = SPACES.to_le_bytes();
        for (k, &byte) in b[at..].iter().enumerate() {
            w[k] = byte;
        }
        u64::from_le_bytes(w)
    }
}

/// Receives the tokens of a comment. Any `FnMut(&str)` is one.
pub(crate) trait Sink {
    /// One token, already lowercased.
    fn token(&mut self, t: &str);

    /// The all-ASCII word `s[start..end]` as written, which has uppercase
    /// letters if `upper`; the token is its lowercase form. The scorer
    /// overrides this to hash the word lowercased in place, without copying
    /// it or branching on case.
    #[inline(always)]
    fn ascii_word(&mut self, s: &str, start: usize, end: usize, upper: bool, buf: &mut String) {
        let raw = &s[start..end];
        if upper {
            buf.clear();
            buf.push_str(raw);
            buf.make_ascii_lowercase();
            self.token(buf);
        } else {
            self.token(raw);
        }
    }
}

impl<F: FnMut(&str)> Sink for F {
    #[inline(always)]
    fn token(&mut self, t: &str) {
        self(t)
    }
}

/// Reusable buffers so tokenizing does not allocate per token.
#[derive(Default)]
pub(crate) struct TokenBuf {
    word: String,
    feature: String,
    shape: Shape,
}

const NO_ENTRY: u32 = u32::MAX;

/// One distinct token of a comment.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) hash: u64,
    start: u32,
    len: u32,
    pub(crate) count: u32,
}

/// The distinct tokens of one comment with their counts.
///
/// Scoring and training both work on distinct tokens: binary mode needs them
/// anyway, count mode multiplies by the count, and looking each distinct token
/// up once saves most model-table lookups on long texts. The set is a small
/// open-addressing table over a per-comment arena, reused across comments so
/// the steady state allocates nothing.
#[derive(Default)]
pub(crate) struct DocTokens {
    buf: TokenBuf,
    arena: String,
    entries: Vec<Entry>,
    table: Vec<u32>,
}

impl DocTokens {
    /// Replaces the contents with the tokens of one comment.
    pub(crate) fn collect(&mut self, author: &str, text: &str, features: &Features) {
        self.arena.clear();
        // Shrink a table blown up by one huge comment so that resetting it
        // per comment stays cheap.
        let want = (self.entries.len() * 4).next_power_of_two().max(64);
        if self.table.len() != want {
            self.table = vec![NO_ENTRY; want];
        } else {
            self.table.fill(NO_ENTRY);
        }
        self.entries.clear();
        let DocTokens {
            buf,
            arena,
            entries,
            table,
        } = self;
        for_each_token(author, text, features, buf, &mut |t: &str| {
            insert(arena, entries, table, t);
        });
    }

    /// Distinct tokens with their hash and count, in first-seen order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|e| {
            let (start, len) = (e.start as usize, e.len as usize);
            (self.arena.get(start..start + len).unwrap_or_default(), e)
        })
    }
}

fn insert(arena: &mut String, entries: &mut Vec<Entry>, table: &mut Vec<u32>, t: &str) {
    let hash = hash_bytes(t.as_bytes());
    let mut mask = table.len() - 1;
    // The model table indexes with the low bits; use the high ones here.
    let mut i = hash.rotate_left(24) as usize & mask;
    loop {
        let slot = table[i];
        if slot == NO_ENTRY {
            break;
        }
        let e = &mut entries[slot as usize];
        if e.hash == hash {
            let (start, len) = (e.start as usize, e.len as usize);
            if arena.get(start..start + len) == Some(t) {
                e.count += 1;
                return;
            }
        }
        i = (i + 1) & mask;
    }
    let start = u32::try_from(arena.len()).unwrap_or(u32::MAX);
    arena.push_str(t);
    let len = u32::try_from(t.len()).unwrap_or(u32::MAX);
    let index = u32::try_from(entries.len()).unwrap_or(NO_ENTRY);
    entries.push(Entry {
        hash,
        start,
        len,
        count: 1,
    });
    table[i] = index;
    if entries.len() * 2 > table.len() {
        // Grow and re-place every entry; keeps probes short.
        let size = table.len() * 2;
        table.clear();
        table.resize(size, NO_ENTRY);
        mask = size - 1;
        for (k, e) in entries.iter().enumerate() {
            let mut j = e.hash.rotate_left(24) as usize & mask;
            while table[j] != NO_ENTRY {
                j = (j + 1) & mask;
            }
            table[j] = u32::try_from(k).unwrap_or(NO_ENTRY);
        }
    }
}

/// Lowercased words of `text` as django-cast finds them (no feature tokens).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    scan_words::<false, false, _>(
        text,
        &mut String::new(),
        &mut Shape::default(),
        &mut |w: &str| {
            out.push(w.to_owned());
        },
    );
    out
}

/// Every token a model with these `features` sees for a comment, in order.
pub fn tokens(author: &str, text: &str, features: &Features) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(
        author,
        text,
        features,
        &mut TokenBuf::default(),
        &mut |t: &str| out.push(t.to_owned()),
    );
    out
}

/// Number of word tokens (without feature tokens) in `author` and `text`.
pub fn count_words(author: &str, text: &str) -> usize {
    let mut n = 0;
    let (mut buf, mut shape) = (String::new(), Shape::default());
    scan_words::<false, false, _>(author, &mut buf, &mut shape, &mut |_: &str| n += 1);
    scan_words::<false, false, _>(text, &mut buf, &mut shape, &mut |_: &str| n += 1);
    n
}

/// Symbol counts and link positions gathered by the word scan, which looks
/// at every non-word byte anyway, so these features cost no extra pass.
#[derive(Default)]
struct Shape {
    bangs: u32,
    currency: u32,
    /// Byte offsets in the text where a link's host starts.
    link_hosts: Vec<usize>,
}

/// Calls `emit` for every token of a comment: author words, text words, then
/// the feature tokens enabled in `features`.
pub(crate) fn for_each_token<S: Sink>(
    author: &str,
    text: &str,
    features: &Features,
    buf: &mut TokenBuf,
    emit: &mut S,
) {
    // Each combination is its own instance, so the scan does no work for
    // features that are off.
    match (features.links || features.domains, features.symbols) {
        (true, true) => tokens_with::<true, true, S>(author, text, features, buf, emit),
        (true, false) => tokens_with::<true, false, S>(author, text, features, buf, emit),
        (false, true) => tokens_with::<false, true, S>(author, text, features, buf, emit),
        (false, false) => tokens_with::<false, false, S>(author, text, features, buf, emit),
    }
}

fn tokens_with<const LINKS: bool, const SYMBOLS: bool, S: Sink>(
    author: &str,
    text: &str,
    features: &Features,
    buf: &mut TokenBuf,
    emit: &mut S,
) {
    let TokenBuf {
        word,
        feature,
        shape,
    } = buf;
    shape.bangs = 0;
    shape.currency = 0;
    if features.author_prefix {
        scan_words::<LINKS, SYMBOLS, _>(author, word, shape, &mut |w: &str| {
            feature.clear();
            feature.push_str("a#");
            feature.push_str(w);
            emit.token(feature);
        });
    } else {
        scan_words::<LINKS, SYMBOLS, _>(author, word, shape, emit);
    }
    // Only links in the text count; the author's were scanned for symbols.
    shape.link_hosts.clear();
    if features.numbers {
        scan_words::<LINKS, SYMBOLS, _>(text, word, shape, &mut |w: &str| {
            emit.token(w);
            if w.bytes().all(|b| b.is_ascii_digit()) {
                emit.token(match w.len() {
                    0..=3 => "#num:2",
                    4..=5 => "#num:4",
                    6..=9 => "#num:6",
                    _ => "#num:10",
                });
            }
        });
    } else {
        scan_words::<LINKS, SYMBOLS, _>(text, word, shape, emit);
    }
    if features.domains {
        link_domains(text, &mut shape.link_hosts, &mut |host: &str| {
            feature.clear();
            feature.push_str("#dom:");
            feature.push_str(host);
            emit.token(feature);
        });
    }
    if features.links {
        emit.token(match shape.link_hosts.len() {
            0 => "#links:0",
            1 => "#links:1",
            2..=3 => "#links:2",
            _ => "#links:4",
        });
    }
    if features.symbols {
        emit.token(match shape.currency {
            0 => "#cur:0",
            1 => "#cur:1",
            _ => "#cur:2",
        });
        emit.token(match shape.bangs {
            0 => "#bang:0",
            1..=2 => "#bang:1",
            _ => "#bang:3",
        });
    }
    if features.caps {
        let (upper, letters) = caps_counts(author.as_bytes());
        let (u, l) = caps_counts(text.as_bytes());
        let (upper, letters) = (upper + u, letters + l);
        if letters >= 8 {
            // Integer percent keeps bucket edges exact on every platform.
            emit.token(match upper * 100 / letters {
                0..=4 => "#caps:0",
                5..=14 => "#caps:1",
                15..=34 => "#caps:2",
                _ => "#caps:3",
            });
        }
    }
}

/// Uppercase and all ASCII letters in `bytes`.
fn caps_counts(bytes: &[u8]) -> (usize, usize) {
    let (mut upper, mut letters) = (0, 0);
    // Byte-wide counters per short chunk let the compiler vectorize this.
    for chunk in bytes.chunks(255) {
        let (mut u, mut l) = (0u8, 0u8);
        for &b in chunk {
            u += u8::from(b.wrapping_sub(b'A') < 26);
            l += u8::from((b | 0x20).wrapping_sub(b'a') < 26);
        }
        upper += usize::from(u);
        letters += usize::from(l);
    }
    (upper, letters)
}

/// Bits below bit `k` (`k < 64`).
#[inline]
fn below(k: u32) -> u64 {
    (1u64 << k) - 1
}

/// Finds the words of `s`, calling `emit` with each lowercased word. With
/// `LINKS`, also records link hosts (`scheme://` and bare `www.`) in
/// `shape`; with `SYMBOLS`, counts `!` and currency signs there.
///
/// ASCII text is classified eight bytes at a time (each byte's class lands
/// in its high bit), and every word inside such a block is found with bit
/// scans, so a byte costs a few instructions whatever the word lengths.
/// Blocks holding non-ASCII bytes, and the last few bytes, go one character
/// at a time.
fn scan_words<const LINKS: bool, const SYMBOLS: bool, S: Sink>(
    s: &str,
    buf: &mut String,
    shape: &mut Shape,
    emit: &mut S,
) {
    const NONE: usize = usize::MAX;
    let bytes = s.as_bytes();
    let n = bytes.len();
    let mut i = 0;
    // Start of the ASCII word being scanned (or NONE) and whether it has
    // uppercase letters so far.
    let mut start = NONE;
    let mut upper = false;
    while i < n {
        {
            let x = block_at(bytes, i);
            if x & HIGH == 0 {
                let (w, up) = word_mask(x);
                if LINKS || SYMBOLS {
                    shape_block::<LINKS, SYMBOLS>(s, i, x, shape);
                }
                let mut words = w;
                if start != NONE {
                    let stop = !w & HIGH;
                    if stop == 0 {
                        upper |= up != 0;
                        i += 8;
                        continue;
                    }
                    let k = stop.trailing_zeros();
                    upper |= up & below(k) != 0;
                    ascii_word(s, start, i + (k / 8) as usize, upper, buf, emit);
                    start = NONE;
                    words &= !below(k);
                }
                while words != 0 {
                    let k = words.trailing_zeros();
                    let rest = !w & HIGH & !below(k);
                    if rest == 0 {
                        // The word runs on into the next block.
                        start = i + (k / 8) as usize;
                        upper = up & !below(k) != 0;
                        break;
                    }
                    let e = rest.trailing_zeros();
                    let word_upper = up & !below(k) & below(e) != 0;
                    let (from, to) = (i + (k / 8) as usize, i + (e / 8) as usize);
                    ascii_word(s, from, to, word_upper, buf, emit);
                    words &= !below(e);
                }
                i += 8;
                continue;
            }
        }
        // One character at a time, near non-ASCII text.
        let b = bytes[i];
        if b < 0x80 {
            let c = CLASS[b as usize];
            if c & WORD != 0 {
                if start == NONE {
                    start = i;
                    upper = false;
                }
                upper |= c & UPPER != 0;
            } else {
                if start != NONE {
                    ascii_word(s, start, i, upper, buf, emit);
                    start = NONE;
                }
                if LINKS || SYMBOLS {
                    shape_byte::<LINKS, SYMBOLS>(s, i, shape);
                }
            }
            i += 1;
            continue;
        }
        let Some(ch) = s[i..].chars().next() else {
            break;
        };
        if ch.is_alphanumeric() {
            let from = if start == NONE { i } else { start };
            i = mixed_word(s, from, i, buf, emit);
            start = NONE;
            continue;
        }
        if start != NONE {
            ascii_word(s, start, i, upper, buf, emit);
            start = NONE;
        }
        if SYMBOLS && matches!(ch, '£' | '€' | '¥') {
            shape.currency += 1;
        }
        i += ch.len_utf8();
    }
    if start != NONE {
        ascii_word(s, start, n, upper, buf, emit);
    }
}

/// Emits the all-ASCII word `s[start..end]` if it is long enough, copying it
/// only when it needs lowercasing.
#[inline(always)]
fn ascii_word<S: Sink>(
    s: &str,
    start: usize,
    end: usize,
    upper: bool,
    buf: &mut String,
    emit: &mut S,
) {
    if end - start >= 2 {
        emit.ascii_word(s, start, end, upper, buf);
    }
}

/// Finishes a word that contains non-ASCII characters: `s[from..at]` is its
/// ASCII start and `at` the first non-ASCII letter. Returns where it ends.
fn mixed_word<S: Sink>(s: &str, from: usize, at: usize, buf: &mut String, emit: &mut S) -> usize {
    buf.clear();
    buf.push_str(&s[from..at]);
    buf.make_ascii_lowercase();
    let mut chars = at - from;
    let mut end = at;
    for ch in s[at..].chars() {
        if ch.is_ascii() {
            if CLASS[ch as usize] & WORD == 0 {
                break;
            }
            buf.push(ch.to_ascii_lowercase());
        } else if ch.is_alphanumeric() {
            buf.extend(ch.to_lowercase());
        } else {
            break;
        }
        chars += 1;
        end += ch.len_utf8();
    }
    if chars >= 2 {
        emit.token(buf);
    }
    end
}

/// Shape bookkeeping for one non-word ASCII byte at `at`.
#[inline]
fn shape_byte<const LINKS: bool, const SYMBOLS: bool>(s: &str, at: usize, shape: &mut Shape) {
    match s.as_bytes()[at] {
        b'!' if SYMBOLS => shape.bangs += 1,
        b'$' if SYMBOLS => shape.currency += 1,
        b':' if LINKS => note_scheme(s.as_bytes(), at, shape),
        b'.' if LINKS => note_www(s, at, shape),
        _ => {}
    }
}

/// Shape bookkeeping for eight ASCII bytes `x` at `at`.
#[inline]
fn shape_block<const LINKS: bool, const SYMBOLS: bool>(
    s: &str,
    at: usize,
    x: u64,
    shape: &mut Shape,
) {
    // These bytes are rare, so test before paying for a bit count.
    if SYMBOLS {
        let bangs = eq(x, b'!');
        if bangs != 0 {
            shape.bangs += bangs.count_ones();
        }
        let dollars = eq(x, b'$');
        if dollars != 0 {
            shape.currency += dollars.count_ones();
        }
    }
    if LINKS {
        let colons = eq(x, b':');
        let dots = eq(x, b'.');
        let mut marks = colons | dots;
        while marks != 0 {
            let k = marks.trailing_zeros();
            let pos = at + (k / 8) as usize;
            if colons & (1 << k) != 0 {
                note_scheme(s.as_bytes(), pos, shape);
            } else {
                note_www(s, pos, shape);
            }
            marks &= marks - 1;
        }
    }
}

/// Records a link host start if the `:` at `at` begins `://`.
#[inline]
fn note_scheme(bytes: &[u8], at: usize, shape: &mut Shape) {
    if bytes.get(at + 1..at + 3) == Some(b"//") {
        shape.link_hosts.push(at + 3);
    }
}

/// Records a link host start if the `.` at `at` ends the word `www` (in
/// any case) that does not follow `//` (that host is already recorded).
#[inline]
fn note_www(s: &str, at: usize, shape: &mut Shape) {
    let bytes = s.as_bytes();
    let Some(start) = at.checked_sub(3) else {
        return;
    };
    if !bytes[start..at].eq_ignore_ascii_case(b"www") || bytes[..start].ends_with(b"//") {
        return;
    }
    // `www` must be a whole word: no word character right before it.
    let joined = s[..start]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    if !joined {
        shape.link_hosts.push(start);
    }
}

/// Passes each link's registrable-looking domain (last two host labels,
/// lowercased) to `host`.
fn link_domains<F: FnMut(&str)>(text: &str, starts: &mut [usize], host: &mut F) {
    // The scan may note hosts out of order within an eight-byte block.
    starts.sort_unstable();
    let bytes = text.as_bytes();
    let mut lower = String::new();
    for &start in starts.iter() {
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-' || bytes[end] == b'.')
        {
            end += 1;
        }
        let raw = text[start..end].trim_matches('.');
        if !raw.is_empty() {
            lower.clear();
            lower.push_str(raw);
            lower.make_ascii_lowercase();
            host(last_two_labels(&lower));
        }
    }
}

fn last_two_labels(host: &str) -> &str {
    match host.rmatch_indices('.').nth(1) {
        Some((dot, _)) => &host[dot + 1..],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_match_django_cast_regex() {
        // re.findall(r"\b\w\w+\b", s.lower()) gives exactly these.
        assert_eq!(
            words("Hello, WORLD! a bb c_d 42 x9 Ünïcödé straße ÉCOLE"),
            [
                "hello",
                "world",
                "bb",
                "c_d",
                "42",
                "x9",
                "ünïcödé",
                "straße",
                "école"
            ]
        );
        assert_eq!(words("I'm a -- b"), Vec::<String>::new());
        assert_eq!(words("don't"), ["don"]);
        assert_eq!(words("naïve café→bar"), ["naïve", "café", "bar"]);
        assert_eq!(words("日本語 テキスト"), ["日本語", "テキスト"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("é"), Vec::<String>::new());
        assert_eq!(words("aé"), ["aé"]);
        assert_eq!(words("ab"), ["ab"]);
    }

    /// The obvious char-by-char definition, to check the SWAR scanner against.
    fn reference_words(text: &str) -> Vec<String> {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| w.chars().count() >= 2)
            .map(|w| w.chars().flat_map(char::to_lowercase).collect())
            .collect()
    }

    /// Reference counts of `!`, currency signs and links.
    fn reference_shape(author: &str, text: &str) -> (u32, u32, usize) {
        let both = format!("{author} {text}");
        let bangs = both.matches('!').count() as u32;
        let currency = both
            .chars()
            .filter(|c| matches!(c, '$' | '£' | '€' | '¥'))
            .count() as u32;
        let is_word = |c: char| c.is_alphanumeric() || c == '_';
        let www = text
            .char_indices()
            .filter(|&(p, _)| {
                text.get(p..p + 4)
                    .is_some_and(|w| w.eq_ignore_ascii_case("www."))
                    && !text[..p].chars().next_back().is_some_and(is_word)
                    && !text[..p].ends_with("//")
            })
            .count();
        (bangs, currency, text.matches("://").count() + www)
    }

    #[test]
    fn scanner_matches_reference_on_random_text() {
        const PIECES: [&str; 30] = [
            "a",
            "Z",
            "_",
            "0",
            " ",
            ".",
            "!",
            "é",
            "É",
            "ß",
            "日",
            ":",
            "/",
            "\n",
            "-",
            "\u{301}",
            "www",
            "http://",
            "Hello",
            "wORLD",
            "12345678",
            "abcdefghijklmnop",
            "ÀÉÎ",
            "\t",
            "www.",
            "WWW",
            "$",
            "£",
            "€",
            "//",
        ];
        let mut state = 0x1234_5678_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let all = Features {
            links: true,
            symbols: true,
            ..Features::NONE
        };
        for round in 0..30_000 {
            let len = (next() % if round % 10 == 0 { 200 } else { 40 }) as usize;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            assert_eq!(words(&text), reference_words(&text), "text: {text:?}");
            let author = &text[..text.char_indices().nth(len / 3).map_or(0, |(p, _)| p)];
            let mut buf = TokenBuf::default();
            let mut got = Vec::new();
            tokens_with::<true, true, _>(author, &text, &all, &mut buf, &mut |t: &str| {
                got.push(t.to_owned());
            });
            let (bangs, currency, links) = reference_shape(author, &text);
            assert_eq!(
                (
                    buf.shape.bangs,
                    buf.shape.currency,
                    buf.shape.link_hosts.len()
                ),
                (bangs, currency, links),
                "author: {author:?} text: {text:?}"
            );
            let mut expected = reference_words(author);
            expected.extend(reference_words(&text));
            got.retain(|t| !t.contains('#'));
            assert_eq!(got, expected, "author: {author:?} text: {text:?}");
        }
    }

    #[test]
    fn lowercase_fast_path_and_buffer_path_agree() {
        assert_eq!(words("MiXeD mixed MIXED"), ["mixed", "mixed", "mixed"]);
        assert_eq!(words("ÀBC àbc"), ["àbc", "àbc"]);
    }

    #[test]
    fn link_features() {
        let f = Features {
            links: true,
            domains: true,
            ..Features::NONE
        };
        let t = tokens(
            "",
            "see https://Shop.Example.COM/x and www.foo.org, http://a.b.c.net",
            &f,
        );
        let feats: Vec<&str> = t
            .iter()
            .map(String::as_str)
            .filter(|t| t.contains('#'))
            .collect();
        assert_eq!(
            feats,
            ["#dom:example.com", "#dom:foo.org", "#dom:c.net", "#links:2"]
        );
        assert_eq!(
            tokens("", "x://y.z", &f).last().map(String::as_str),
            Some("#links:1")
        );
        let links = |s: &str| {
            let t = tokens("", s, &f);
            t.last().cloned().unwrap_or_default()
        };
        assert_eq!(links("no links here: ok"), "#links:0");
        assert_eq!(links("http://www.x.org"), "#links:1");
        assert_eq!(links("awww.nope"), "#links:0");
        assert_eq!(links("WWW.A.COM www.b.com"), "#links:2");
    }

    #[test]
    fn shape_features() {
        let f = Features {
            numbers: true,
            symbols: true,
            caps: true,
            author_prefix: true,
            ..Features::NONE
        };
        let t = tokens("Bob", "CALL 09061701461 NOW!!! Win $100 £50", &f);
        assert_eq!(
            t,
            [
                "a#bob",
                "call",
                "09061701461",
                "#num:10",
                "now",
                "win",
                "100",
                "#num:2",
                "50",
                "#num:2",
                "#cur:2",
                "#bang:3",
                "#caps:3",
            ]
        );
    }

    #[test]
    fn caps_buckets_have_exact_edges() {
        let f = Features {
            caps: true,
            ..Features::NONE
        };
        // (uppercase letters, all letters, bucket): the integer percent 4 | 5, 14 | 15,
        // 34 | 35, and 100/21 = 4.76 rounding down to 4.
        for (upper, letters, want) in [
            (0, 8, "#caps:0"),
            (4, 100, "#caps:0"),
            (5, 100, "#caps:1"),
            (1, 21, "#caps:0"),
            (1, 20, "#caps:1"),
            (14, 100, "#caps:1"),
            (15, 100, "#caps:2"),
            (34, 100, "#caps:2"),
            (35, 100, "#caps:3"),
            (8, 8, "#caps:3"),
        ] {
            let text = "A".repeat(upper) + &"b".repeat(letters - upper);
            let t = tokens("", &text, &f);
            assert_eq!(
                t.last().map(String::as_str),
                Some(want),
                "{upper}/{letters}"
            );
        }
        // Fewer than 8 letters: no caps token at all.
        assert_eq!(tokens("", "ABCDEFG", &f), ["abcdefg"]);
    }

    #[test]
    fn count_words_counts_only_words() {
        // jane doe jane example org + hi great post
        assert_eq!(
            count_words("Jane Doe jane@example.org", "Hi\nGreat post!"),
            5 + 3
        );
    }
}
