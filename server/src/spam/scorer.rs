//! Compiled, read-only scoring table built from a model's counts: the hot path.
//!
//! Classification only needs, per token, the log-likelihood ratio
//! `ln P(t|spam) - ln P(t|ham)`. Computing two logarithms per token would cap
//! throughput far below the goal, so the ratios are computed once per model
//! state and stored in an open-addressing table probed linearly, whose 8-byte
//! slots hold a token's tag and its `f32` weight side by side, so that a
//! lookup touches one cache line.
//!
//! A token is identified by its 64-bit hash alone: the low bits choose its
//! home slot, the high 32 bits are the tag stored there. Known tokens never
//! shadow each other: the table is rebuilt with another hash seed if two
//! with the same tag would meet on one probe path. An unknown token matches a
//! known one only if it lands on the probe path of a token with its tag,
//! about one in 2^32 per slot probed (a few in ten billion tokens), and even
//! then only borrows that token's weight, which a spammer could get by
//! writing the token itself. Storing and comparing the token text instead
//! would make the table several times larger and cost another cache miss per
//! token.

use std::cell::RefCell;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::Model;
use super::tokenize::{Features, Sink, TokenBuf, for_each_token};

/// Multiplier from the wyhash/rapidhash family; any odd 64-bit constant with
/// well-spread bits does.
const K: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xA076_1D64_78BD_642F;
const K3: u64 = 0xE703_7ED1_A0B4_28DB;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline]
fn load8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Lowercases the ASCII letters among eight bytes, all below 0x80 (so the
/// per-byte additions never carry into the next byte): bytes in `A..=Z` get
/// bit 5 set, which is exactly `to_ascii_lowercase`.
#[inline(always)]
fn lower8(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let at_least_a = w.wrapping_add(ONES * u64::from(0x80 - b'A')) & HIGH;
    let past_z = w.wrapping_add(ONES * u64::from(0x80 - b'Z' - 1)) & HIGH;
    w | ((at_least_a & !past_z) >> 2)
}

#[inline(always)]
fn word8<const LOWER: bool>(b: &[u8], at: usize) -> u64 {
    if LOWER {
        lower8(load8(b, at))
    } else {
        load8(b, at)
    }
}

/// The low `n` bytes (`n <= 8`) of a little-endian word.
#[inline(always)]
fn low_bytes(n: usize) -> u64 {
    ((1u128 << (8 * n)) - 1) as u64
}

/// The key of a token of `n <= 16` bytes: its bytes zero-padded to two
/// words. `window` starts with the token and has at least 16 bytes; the
/// bytes after the token are masked off before lowercasing, so they may be
/// anything. Loading and masking whole words costs no branch on the length,
/// which varies from word to word and would be mispredicted.
#[inline(always)]
fn short_key<const LOWER: bool>(window: &[u8], n: usize) -> [u64; 2] {
    let lo = load8(window, 0) & low_bytes(n.min(8));
    let hi = load8(window, 8) & low_bytes(n.saturating_sub(8));
    if LOWER {
        [lower8(lo), lower8(hi)]
    } else {
        [lo, hi]
    }
}

#[inline(always)]
fn finish_short(key: [u64; 2], n: usize, seed: u64) -> u64 {
    // The length goes into the other factor, so keys that differ only in
    // trailing zero bytes differ in the hash.
    fold_mul(key[0] ^ seed ^ K2, key[1] ^ K ^ (n as u64).wrapping_mul(K3))
}

/// The hash of `bytes`, or with `LOWER` of their ASCII lowercase form (then
/// `bytes` must be all ASCII), which is the same as lowercasing first.
#[inline(always)]
fn hash_with<const LOWER: bool>(bytes: &[u8], seed: u64) -> u64 {
    let n = bytes.len();
    if n <= 16 {
        let mut padded = [0u8; 16];
        padded[..n].copy_from_slice(bytes);
        return finish_short(short_key::<LOWER>(&padded, n), n, seed);
    }
    let mut h = seed ^ K2 ^ (n as u64);
    let mut at = 0;
    while at + 8 <= n {
        h = fold_mul(h ^ word8::<LOWER>(bytes, at), K);
        at += 8;
    }
    // The last (overlapping) word covers the tail without a partial copy.
    fold_mul(h ^ word8::<LOWER>(bytes, n - 8), K2)
}

/// `hash_lowercased(&text[start..end])` for an all-ASCII word inside `text`,
/// reading the short word in place when 16 bytes are there to load.
#[inline(always)]
fn hash_word_lowercased(text: &[u8], start: usize, end: usize, seed: u64) -> u64 {
    let n = end - start;
    match text.get(start..start + 16) {
        Some(window) if n <= 16 => finish_short(short_key::<true>(window, n), n, seed),
        _ => hash_with::<true>(&text[start..end], seed),
    }
}

/// Fast non-cryptographic hash of a token with a seed.
#[inline]
pub(crate) fn hash_seeded(bytes: &[u8], seed: u64) -> u64 {
    hash_with::<false>(bytes, seed)
}

/// `hash_seeded` of the lowercase form of an all-ASCII word.
#[cfg(test)]
fn hash_lowercased(ascii: &[u8], seed: u64) -> u64 {
    hash_with::<true>(ascii, seed)
}

/// `hash_seeded` with the default seed, for hash maps of tokens.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    hash_seeded(bytes, 0)
}

/// `Hasher` adapter so the model's count map uses the same fast hash.
#[derive(Default)]
pub(crate) struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fold_mul(self.0 ^ hash_bytes(bytes), K);
    }
    fn write_u8(&mut self, i: u8) {
        // `str`'s Hash writes a trailing 0xff; mixing it in is enough.
        self.0 = fold_mul(self.0 ^ u64::from(i), K2);
    }
}

/// Builder for hash maps keyed by tokens.
pub(crate) type TokenHash = BuildHasherDefault<TokenHasher>;

/// Collects the seeded hashes of a comment's tokens.
struct HashSink<'a> {
    hashes: &'a mut Vec<u64>,
    seed: u64,
}

impl Sink for HashSink<'_> {
    #[inline(always)]
    fn token(&mut self, t: &str) {
        self.hashes
            .push(nonzero(hash_seeded(t.as_bytes(), self.seed)));
    }

    #[inline(always)]
    fn ascii_word(&mut self, s: &str, start: usize, end: usize, _upper: bool, _: &mut String) {
        let hash = hash_word_lowercased(s.as_bytes(), start, end, self.seed);
        self.hashes.push(nonzero(hash));
    }
}

/// Per-thread scratch space, reused across comments.
#[derive(Default)]
struct Scratch {
    tokens: TokenBuf,
    /// Token hashes of the comment being scored.
    hashes: Vec<u64>,
    /// Per model slot, the last comment (by `epoch`) that counted its token:
    /// binary mode counts each known token once per comment, and checking a
    /// stamp beside the lookup is cheaper than a per-comment set of hashes.
    stamps: Vec<u32>,
    epoch: u32,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Immutable per-token weights for one model state.
#[derive(Clone)]
pub(crate) struct Scorer {
    slots: Vec<Slot>,
    mask: usize,
    seed: u64,
    /// `ln prior(spam) - ln prior(ham)`.
    bias: f64,
    binary: bool,
    features: Features,
}

#[inline]
fn nonzero(h: u64) -> u64 {
    h.max(1)
}

/// One table slot: a token's tag (0 marks an empty slot) and its weight.
#[derive(Clone, Copy, Default)]
#[repr(C, align(8))]
struct Slot {
    tag: u32,
    weight: f32,
}

/// The tag stored for a hash: its high half, mapped away from 0.
#[inline(always)]
fn tag_of(hash: u64) -> u32 {
    ((hash >> 32) as u32).max(1)
}

/// Places `(token, weight)` entries in a table of `capacity` slots (a power
/// of two, larger than the entry count) with the first seed under which no
/// token's probe path crosses another token with its tag. Returns the slots
/// and that seed.
fn fill_table<H>(entries: &[(&str, f64)], capacity: usize, hash: H) -> (Vec<Slot>, u64)
where
    H: Fn(&[u8], u64) -> u64,
{
    let mask = capacity - 1;
    let mut slots = vec![Slot::default(); capacity];
    let mut seed = 0u64;
    'seeds: loop {
        for &(token, weight) in entries {
            let h = hash(token.as_bytes(), seed);
            let tag = tag_of(h);
            let mut i = (h as usize) & mask;
            // Slots before an entry's own are never emptied, so checking the
            // path of each newcomer covers every pair of tokens.
            while slots[i].tag != 0 {
                if slots[i].tag == tag {
                    // Odds about V * probe length / 2^32: start over.
                    seed = seed.wrapping_add(K);
                    slots.fill(Slot::default());
                    continue 'seeds;
                }
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                tag,
                weight: weight as f32,
            };
        }
        return (slots, seed);
    }
}

impl Scorer {
    /// Compiles the weights of `model`'s current counts.
    pub(crate) fn build(model: &Model) -> Scorer {
        let vocab = model.vocabulary_len();
        // Load factor at most 2/3: short linear probes, compact table.
        let capacity = (vocab + vocab / 2 + 1).next_power_of_two().max(16);
        let mask = capacity - 1;
        let entries: Vec<(&str, f64)> = model.log_ratios().collect();
        let (slots, seed) = fill_table(&entries, capacity, hash_seeded);
        let [spam_docs, ham_docs] = model.doc_counts();
        // Laplace-smoothed priors keep an untrained or one-sided model finite.
        let bias = ((spam_docs as f64 + 1.0) / (ham_docs as f64 + 1.0)).ln();
        Scorer {
            slots,
            mask,
            seed,
            bias,
            binary: model.options().binary,
            features: model.options().features,
        }
    }

    /// Slot of a token hash, `None` if the model never saw it.
    #[inline(always)]
    fn find(&self, hash: u64) -> Option<usize> {
        let tag = tag_of(hash);
        let mut i = (hash as usize) & self.mask;
        loop {
            let slot = self.slots[i];
            if slot.tag == tag {
                return Some(i);
            }
            if slot.tag == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Weight of a token hash, 0 if the model never saw it.
    #[inline(always)]
    fn weight(&self, hash: u64) -> f32 {
        self.find(hash).map_or(0.0, |i| self.slots[i].weight)
    }

    /// Log-odds `ln P(spam|comment) - ln P(ham|comment)`.
    fn log_odds(&self, scratch: &mut Scratch, author: &str, text: &str) -> f64 {
        let Scratch {
            tokens,
            hashes,
            stamps,
            epoch,
        } = scratch;
        hashes.clear();
        let seed = self.seed;
        for_each_token(
            author,
            text,
            &self.features,
            tokens,
            &mut HashSink { hashes, seed },
        );
        // Tokenizing first and looking up afterwards keeps this loop tight,
        // so the CPU overlaps the table's cache misses across tokens.
        let mut sum = 0.0f64;
        if self.binary {
            // Stamps from another model's table, or a wrapped epoch, would
            // be stale: start from clean ones.
            if stamps.len() != self.slots.len() || *epoch == u32::MAX {
                stamps.clear();
                stamps.resize(self.slots.len(), 0);
                *epoch = 0;
            }
            *epoch += 1;
            let now = *epoch;
            for &h in hashes.iter() {
                if let Some(i) = self.find(h) {
                    // Branch-free: a repeat adds zero.
                    let first = stamps[i] != now;
                    stamps[i] = now;
                    sum += f64::from(self.slots[i].weight) * f64::from(u8::from(first));
                }
            }
        } else {
            for &h in hashes.iter() {
                sum += f64::from(self.weight(h));
            }
        }
        // Don't let one huge comment pin megabytes in every worker thread.
        if hashes.capacity() > 1 << 20 {
            *hashes = Vec::new();
        }
        self.bias + sum
    }

    /// P(spam) of one comment, in [0, 1].
    pub(crate) fn probability(&self, author: &str, text: &str) -> f64 {
        let log_odds = SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => self.log_odds(&mut scratch, author, text),
            // Only a re-entrant call on this thread would find it borrowed.
            Err(_) => self.log_odds(&mut Scratch::default(), author, text),
        });
        sigmoid(log_odds)
    }
}

/// Logistic function, stable for large |x| (never NaN for finite input).
pub(crate) fn sigmoid(x: f64) -> f64 {
    // Naive Bayes log-odds are mostly far from 0, and `exp` is a noticeable share of
    // scoring a short comment. From 40 on the result is exactly 1.0 in f64 anyway; below
    // -40 it is under 5e-18, which no caller can tell from 0.
    if x >= 40.0 {
        return 1.0;
    }
    if x <= -40.0 {
        return 0.0;
    }
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_distinguishes_lengths_and_bytes() {
        assert_ne!(hash_bytes(b"ab"), hash_bytes(b"ab\0"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgi"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
        // `short_key` reuses bytes across lengths; these once collided.
        assert_ne!(hash_bytes(b"hi"), hash_bytes(b"iii"));
        assert_ne!(hash_bytes(b"00"), hash_bytes(b"100"));
    }

    #[test]
    fn no_collisions_among_many_short_tokens() {
        // Every token of 1-3 characters over [a-z0-9_], plus longer variants
        // covering each key-encoding branch (4-7, 8-16, >16 bytes).
        let alphabet: Vec<char> = ('a'..='z').chain('0'..='9').chain(['_']).collect();
        let mut tokens = Vec::new();
        for &a in &alphabet {
            tokens.push(a.to_string());
            for &b in &alphabet {
                tokens.push(format!("{a}{b}"));
                for &c in &alphabet {
                    tokens.push(format!("{a}{b}{c}"));
                }
                tokens.push(format!("xy{a}{b}z"));
                tokens.push(format!("prefix{a}{b}suffix"));
                tokens.push(format!("averyveryverylongtoken{a}{b}"));
            }
        }
        let hashes: std::collections::HashSet<u64> =
            tokens.iter().map(|t| hash_bytes(t.as_bytes())).collect();
        assert_eq!(hashes.len(), tokens.len());
    }

    #[test]
    fn hashing_lowercased_equals_lowercasing_first() {
        let words = [
            "",
            "a",
            "Z",
            "Ab",
            "ABC",
            "aBcD",
            "Hello",
            "WORLD42",
            "Mixed_Case_",
            "ABCDEFGH",
            "abcdefghIJ",
            "Sixteen_Chars_OK",
            "A_Much_Longer_Word_Than_Sixteen",
            "@[`{",
            "ZzAa09_",
        ];
        for w in words {
            for seed in [0, K, 12345] {
                assert_eq!(
                    hash_lowercased(w.as_bytes(), seed),
                    hash_seeded(w.to_ascii_lowercase().as_bytes(), seed),
                    "{w:?}"
                );
            }
        }
        // In place, with anything (also non-ASCII) after the word.
        let text = "Hello, WORLD\u{e9}\u{e9}\u{e9}\u{e9} ab_CD Sixteen_Chars_OK\u{ff}\u{ff} x";
        for (start, end) in [(0, 5), (7, 12), (22, 27), (28, 44), (0, 2), (45, 46)] {
            let b = text.as_bytes();
            if end > b.len() || !b[start..end].is_ascii() {
                continue;
            }
            assert_eq!(
                hash_word_lowercased(b, start, end, 3),
                hash_seeded(b[start..end].to_ascii_lowercase().as_slice(), 3),
                "{:?}",
                &text[start..end]
            );
        }
        // Every ASCII byte in every position of the loads.
        for b in 0u8..0x80 {
            let w: Vec<u8> = (0..19).map(|k| if k % 3 == 0 { b } else { b'Q' }).collect();
            for n in 0..=w.len() {
                let lower = w[..n].to_ascii_lowercase();
                assert_eq!(hash_lowercased(&w[..n], 7), hash_seeded(&lower, 7));
            }
        }
    }

    #[test]
    fn colliding_tokens_get_another_seed() {
        // A hash under which "a" and "b" collide for seed 0 only.
        let hash = |b: &[u8], seed: u64| {
            if seed == 0 { 7 } else { hash_seeded(b, seed) }
        };
        let (slots, seed) = fill_table(&[("a", 1.0), ("b", 2.0)], 16, hash);
        assert_ne!(seed, 0);
        let mut found: Vec<f32> = slots
            .iter()
            .filter(|s| s.tag != 0)
            .map(|s| s.weight)
            .collect();
        found.sort_by(f32::total_cmp);
        assert_eq!(found, [1.0, 2.0]);
        let scorer = Scorer {
            slots,
            mask: 15,
            seed,
            bias: 0.0,
            binary: true,
            features: Features::NONE,
        };
        assert_eq!(scorer.weight(hash_seeded(b"a", seed)), 1.0);
        assert_eq!(scorer.weight(hash_seeded(b"b", seed)), 2.0);
        assert_eq!(scorer.weight(hash_seeded(b"c", seed)), 0.0);
    }

    #[test]
    fn sigmoid_is_bounded() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1e6), 1.0);
        assert_eq!(sigmoid(-1e6), 0.0);
        // The shortcut past |x| = 40 changes nothing a caller can see.
        assert_eq!(sigmoid(40.0), 1.0 / (1.0 + (-40.0f64).exp()));
        assert!(sigmoid(-39.9) > 0.0 && sigmoid(-39.9) < 5e-17);
        assert!((sigmoid(2.0_f64.ln()) - 2.0 / 3.0).abs() < 1e-12);
    }
}
