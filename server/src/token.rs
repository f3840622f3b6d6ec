//! Signed form tokens: bound to one thread, expiring, spendable once.
//!
//! A token is `base64url(payload).base64url(HMAC-SHA256(payload))` where the payload is
//! `thread key \n nonce \n expiry (Unix ms)`. The signature proves the server issued it; the
//! nonce is recorded when a comment is stored with it, so it is accepted once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Issues and checks form tokens with the server's secret.
#[derive(Clone)]
pub struct FormSigner {
    key: Vec<u8>,
}

/// A token that checked out: the nonce to spend and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub nonce: String,
    pub expires_at: i64,
}

/// Why a token was refused; each maps to a 400 with a message for the form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("The form is missing its security token; reload the page and try again.")]
    Missing,
    #[error("The form's security token is invalid; reload the page and try again.")]
    Invalid,
    #[error("The form has expired; reload the page and try again.")]
    Expired,
    #[error("The form was issued for another thread; reload the page and try again.")]
    OtherThread,
    #[error("This form was already used to post; reload the page to post again.")]
    Reused,
}

/// A fresh random string, URL-safe.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS RNG failing is unrecoverable for a server that signs things.
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    B64.encode(buf)
}

impl FormSigner {
    /// A signer with this secret.
    pub fn new(secret: &[u8]) -> Self {
        FormSigner {
            key: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// A new token for `thread`, valid until `expires_at` (Unix ms).
    ///
    /// The nonce starts with the expiry in fixed-width hex, so nonces sort by the time they
    /// were issued: a spent one is recorded at the right-hand end of the nonces' index, next
    /// to the others spent in the same moment, rather than on a random page of it. Measured
    /// at 16 posters on SQLite, a batch of posts' random index pages were a quarter of the
    /// pages its COMMIT wrote and fsynced. The random part alone makes it unguessable.
    pub fn issue(&self, thread: &str, expires_at: i64) -> String {
        let nonce = format!("{:012x}{}", expires_at.max(0), random_token(16));
        let payload = format!("{thread}\n{nonce}\n{expires_at}");
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{}.{}", B64.encode(payload.as_bytes()), B64.encode(sig))
    }

    /// Checks signature, thread and expiry (not whether the nonce was spent).
    pub fn verify(&self, token: &str, thread: &str, now: i64) -> Result<VerifiedToken, TokenError> {
        let (payload_b64, sig_b64) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let payload = B64.decode(payload_b64).map_err(|_| TokenError::Invalid)?;
        let sig = B64.decode(sig_b64).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Invalid)?;
        // The key may itself contain newlines only if a thread key does; keys are validated
        // slugs, but split from the right to be safe.
        let mut parts = payload.rsplitn(3, '\n');
        let expires_at: i64 = parts
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or(TokenError::Invalid)?;
        let nonce = parts.next().ok_or(TokenError::Invalid)?.to_owned();
        let token_thread = parts.next().ok_or(TokenError::Invalid)?;
        if token_thread != thread {
            return Err(TokenError::OtherThread);
        }
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken { nonce, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_for_its_thread_until_expiry() {
        let s = FormSigner::new(b"secret");
        let t = s.issue("welcome", 1_000);
        let v = s.verify(&t, "welcome", 999).unwrap();
        assert_eq!(v.expires_at, 1_000);
        assert_eq!(s.verify(&t, "welcome", 1_000), Err(TokenError::Expired));
        assert_eq!(s.verify(&t, "other", 10), Err(TokenError::OtherThread));
    }

    #[test]
    fn tokens_are_unique() {
        let s = FormSigner::new(b"secret");
        let a = s.verify(&s.issue("k", 10), "k", 0).unwrap();
        let b = s.verify(&s.issue("k", 10), "k", 0).unwrap();
        assert_ne!(a.nonce, b.nonce);
    }

    /// Later tokens have nonces that sort after earlier ones (as text, which is how both
    /// databases index them), so spending them appends to the index.
    #[test]
    fn nonces_sort_in_the_order_tokens_expire() {
        let s = FormSigner::new(b"secret");
        let nonces: Vec<String> = [9, 10, 255, 256, 1_764_000_000_000, 1_764_000_000_001]
            .iter()
            .map(|&at| s.verify(&s.issue("k", at), "k", 0).unwrap().nonce)
            .collect();
        let mut sorted = nonces.clone();
        sorted.sort();
        assert_eq!(nonces, sorted);
    }

    #[test]
    fn a_tampered_or_foreign_token_is_invalid() {
        let s = FormSigner::new(b"secret");
        let t = s.issue("k", 10_000);
        // Re-sign the payload with another key: a forgery.
        let other = FormSigner::new(b"other").issue("k", 10_000);
        assert_eq!(s.verify(&other, "k", 0), Err(TokenError::Invalid));
        // Swap in a later expiry without re-signing.
        let (p, sig) = t.split_once('.').unwrap();
        let payload = String::from_utf8(B64.decode(p).unwrap()).unwrap();
        let forged = payload.replace("10000", "99999");
        let forged = format!("{}.{sig}", B64.encode(forged));
        assert_eq!(s.verify(&forged, "k", 0), Err(TokenError::Invalid));
        assert_eq!(s.verify("garbage", "k", 0), Err(TokenError::Invalid));
        assert_eq!(s.verify("a.b", "k", 0), Err(TokenError::Invalid));
    }
}
