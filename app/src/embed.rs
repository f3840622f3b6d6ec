//! What embedding on other sites needs on both sides: the three small scripts (with their
//! content versions, so their URLs can be cached for a year) and, in the browser, the author
//! token a framed page keeps in its own storage when third-party cookies are blocked.

/// The script a host page includes (`/embed.js`).
#[cfg(feature = "ssr")]
pub const EMBED_JS: &str = include_str!("../assets/embed.js");
/// The script that fills `data-moderato-count` spans (`/count.js`).
#[cfg(feature = "ssr")]
pub const COUNT_JS: &str = include_str!("../assets/count.js");
/// The script inside the frame that reports its height (`/embed/frame.js`).
#[cfg(feature = "ssr")]
pub const FRAME_JS: &str = include_str!("../assets/frame.js");

/// FNV-1a, evaluated at compile time: a version that changes whenever a script does, known
/// to the page renderer and the server alike without hashing anything at run time.
pub const fn version(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// `FRAME_JS`'s version; the embed page links `/embed/frame.js?v=` this, in hex.
pub const FRAME_JS_VERSION: u64 = version(include_bytes!("../assets/frame.js"));

/// The header that carries the author token where cookies cannot.
pub const AUTHOR_HEADER: &str = "x-moderato-author";

/// Whether this page is the framed thread view (`/embed/...`).
pub fn embedded() -> bool {
    #[cfg(feature = "hydrate")]
    {
        web_sys::window()
            .and_then(|w| w.location().pathname().ok())
            .is_some_and(|p| p.starts_with("/embed/"))
    }
    #[cfg(not(feature = "hydrate"))]
    false
}

#[cfg(feature = "hydrate")]
const AUTHOR_KEY: &str = "moderato_author";

/// The author token this frame was given earlier, when it runs framed (a browser that blocks
/// third-party cookies never sends the author cookie there; storage is partitioned per
/// embedding site instead, which is what an author's own comments need).
pub fn stored_author_token() -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        if !embedded() {
            return None;
        }
        web_sys::window()?
            .local_storage()
            .ok()??
            .get_item(AUTHOR_KEY)
            .ok()?
            .filter(|t| valid_author_token(t))
    }
    #[cfg(not(feature = "hydrate"))]
    None
}

/// Keeps the author token the server minted, when framed.
pub fn store_author_token(token: &str) {
    #[cfg(feature = "hydrate")]
    if embedded()
        && valid_author_token(token)
        && let Some(Ok(Some(storage))) = web_sys::window().map(|w| w.local_storage())
    {
        let _ = storage.set_item(AUTHOR_KEY, token);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = token;
}

/// Author tokens are the server's random URL-safe strings; anything else is ignored.
pub fn valid_author_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_changes_with_the_bytes() {
        assert_ne!(version(b"a"), version(b"b"));
        assert_eq!(version(b"same"), version(b"same"));
    }

    #[test]
    fn author_tokens_are_url_safe_and_short() {
        assert!(valid_author_token("abcDEF012_-"));
        assert!(!valid_author_token(""));
        assert!(!valid_author_token("a;b"));
        assert!(!valid_author_token(&"a".repeat(65)));
    }
}
