//! Compiled, read-only scoring table built from a model's counts: the hot path.
//!
//! Classification only needs, per token, the log-likelihood ratio
//! `ln P(t|spam) - ln P(t|ham)`. Computing two logarithms per token would cap
//! throughput well below the goal, so the ratios are computed once per model
//! state and stored in an open-addressing table keyed by a 64-bit hash, with
//! the token text kept in one arena so a lookup confirms the exact match.

use std::cell::RefCell;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::Model;
use super::tokenize::{Features, TokenBuf, for_each_token};

/// Multiplier from the wyhash/rapidhash family; any odd 64-bit constant with
/// well-spread bits does.
const K: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xA076_1D64_78BD_642F;

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

#[inline]
fn load4(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Encodes a key of at most 16 bytes in two words with fixed-size
/// (possibly overlapping) loads, so no variable-length copy is needed.
/// Together with the length, the encoding is unique.
#[inline]
fn short_key(b: &[u8]) -> [u64; 2] {
    let n = b.len();
    if n >= 8 {
        [load8(b, 0), load8(b, n - 8)]
    } else if n >= 4 {
        [load4(b, 0) | (load4(b, n - 4) << 32), 0]
    } else if n > 0 {
        [
            u64::from(b[0]) | (u64::from(b[n / 2]) << 8) | (u64::from(b[n - 1]) << 16),
            0,
        ]
    } else {
        [0, 0]
    }
}

/// Fast non-cryptographic hash of a token. Tokens come from user input, but
/// the table is probed linearly with a bounded load, so a flood of crafted
/// collisions only slows classification of that one comment.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    if bytes.len() <= INLINE {
        let [a, b] = short_key(bytes);
        return hash_short(a, b, bytes.len());
    }
    let mut h = K2 ^ (bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = fold_mul(h ^ u64::from_le_bytes(w), K);
    }
    // The last (overlapping) word covers the tail without a partial copy.
    let tail = load8(bytes, bytes.len() - 8);
    fold_mul(h ^ tail, K2)
}

#[inline]
fn hash_short(a: u64, b: u64, len: usize) -> u64 {
    fold_mul(a ^ K2 ^ (len as u64), b ^ K)
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

/// Keys up to this many bytes live inside the slot, so a lookup touches one
/// cache line; longer keys (rare) are compared against `Scorer::long_keys`.
const INLINE: usize = 16;
const EMPTY: u32 = u32::MAX;

/// One table slot: 32 bytes, aligned so it never straddles a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    hash: u64,
    weight: f32,
    /// Key length in bytes, or `EMPTY`.
    len: u32,
    /// `short_key` of the token if `len <= INLINE`, else `[offset in long_keys, 0]`.
    key: [u64; 2],
}

const EMPTY_SLOT: Slot = Slot {
    hash: 0,
    weight: 0.0,
    len: EMPTY,
    key: [0; 2],
};

/// A token of the comment being scored, ready to look up.
#[derive(Clone, Copy)]
struct Probe {
    hash: u64,
    key: [u64; 2],
    len: u32,
    /// Offset of a long token's text in `Scratch::long`.
    long_at: u32,
}

/// Per-thread scratch space, reused across comments.
#[derive(Default)]
struct Scratch {
    tokens: TokenBuf,
    probes: Vec<Probe>,
    long: String,
    /// Slots already counted for this comment (binary mode), open addressing.
    seen: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Immutable per-token weights for one model state.
#[derive(Clone)]
pub(crate) struct Scorer {
    slots: Vec<Slot>,
    mask: usize,
    long_keys: String,
    /// `ln prior(spam) - ln prior(ham)`.
    bias: f64,
    binary: bool,
    features: Features,
}

impl Scorer {
    /// Compiles the weights of `model`'s current counts.
    pub(crate) fn build(model: &Model) -> Scorer {
        let vocab = model.vocabulary_len();
        // Load factor at most 2/3: short linear probes, compact table.
        let capacity = (vocab + vocab / 2 + 1).next_power_of_two().max(16);
        let mut slots = vec![EMPTY_SLOT; capacity];
        let mask = capacity - 1;
        let mut long_keys = String::new();
        for (token, ratio) in model.log_ratios() {
            let b = token.as_bytes();
            let key = if b.len() <= INLINE {
                short_key(b)
            } else {
                let offset = long_keys.len() as u64;
                long_keys.push_str(token);
                [offset, 0]
            };
            let hash = hash_bytes(b);
            let mut i = (hash as usize) & mask;
            while slots[i].len != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                hash,
                weight: ratio as f32,
                len: u32::try_from(b.len()).unwrap_or(EMPTY - 1),
                key,
            };
        }
        let [spam_docs, ham_docs] = model.doc_counts();
        // Laplace-smoothed priors keep an untrained or one-sided model finite.
        let bias = ((spam_docs as f64 + 1.0) / (ham_docs as f64 + 1.0)).ln();
        Scorer {
            slots,
            mask,
            long_keys,
            bias,
            binary: model.options().binary,
            features: model.options().features,
        }
    }

    /// Slot index of a token, or `None` if the model never saw it.
    #[inline]
    fn find(&self, p: &Probe, long: &str) -> Option<usize> {
        let mut i = (p.hash as usize) & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.len == EMPTY {
                return None;
            }
            if slot.hash == p.hash && slot.len == p.len {
                if p.len as usize <= INLINE {
                    if slot.key == p.key {
                        return Some(i);
                    }
                } else {
                    let (at, n) = (slot.key[0] as usize, p.len as usize);
                    let mine = long.get(p.long_at as usize..p.long_at as usize + n);
                    if mine.is_some() && self.long_keys.get(at..at + n) == mine {
                        return Some(i);
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Log-odds `ln P(spam|comment) - ln P(ham|comment)`.
    fn log_odds(&self, scratch: &mut Scratch, author: &str, text: &str) -> f64 {
        let Scratch {
            tokens,
            probes,
            long,
            seen,
        } = scratch;
        probes.clear();
        long.clear();
        for_each_token(author, text, &self.features, tokens, &mut |t: &str| {
            let b = t.as_bytes();
            let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
            if b.len() <= INLINE {
                let key = short_key(b);
                probes.push(Probe {
                    hash: hash_short(key[0], key[1], b.len()),
                    key,
                    len,
                    long_at: 0,
                });
            } else {
                let long_at = u32::try_from(long.len()).unwrap_or(u32::MAX);
                long.push_str(t);
                probes.push(Probe {
                    hash: hash_bytes(b),
                    key: [0; 2],
                    len,
                    long_at,
                });
            }
        });
        // Tokenizing first and looking up afterwards keeps this loop tight,
        // so the CPU overlaps the table's cache misses across tokens.
        let mut sum = 0.0f64;
        if self.binary {
            let size = (probes.len() * 2).next_power_of_two().max(16);
            seen.clear();
            seen.resize(size, u32::MAX);
            let mask = size - 1;
            for p in probes.iter() {
                let Some(i) = self.find(p, long) else {
                    continue;
                };
                let mut j = (i.wrapping_mul(0x9E37_79B9) >> 7) & mask;
                loop {
                    let s = seen[j];
                    if s == u32::MAX {
                        seen[j] = i as u32;
                        sum += f64::from(self.slots[i].weight);
                        break;
                    }
                    if s as usize == i {
                        break;
                    }
                    j = (j + 1) & mask;
                }
            }
        } else {
            for p in probes.iter() {
                if let Some(i) = self.find(p, long) {
                    sum += f64::from(self.slots[i].weight);
                }
            }
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
    }

    #[test]
    fn sigmoid_is_bounded() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1e6), 1.0);
        assert_eq!(sigmoid(-1e6), 0.0);
        assert!((sigmoid(2.0_f64.ln()) - 2.0 / 3.0).abs() < 1e-12);
    }
}
