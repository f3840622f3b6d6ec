//! How the built site's files (`/pkg/...`) are cached and encoded.
//!
//! `scripts/build.sh` names the JS, wasm and CSS by their content and puts brotli and
//! gzip copies beside them; the static file handler sends the copy the request accepts.
//! What is left for this layer is telling caches so.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// A year, the most a cache honours: a versioned URL never changes its content.
pub(super) const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Unhashed files (snippets, a site built without hashes) may change under their name.
const REVALIDATE: &str = "no-cache";

/// Adds `Cache-Control` and `Vary: Accept-Encoding` to answers for `/pkg/...`.
pub(super) async fn asset_headers(req: Request, next: Next) -> Response {
    let hashed = match req.uri().path().strip_prefix("/pkg/") {
        Some(file) => is_hashed_name(file),
        None => return next.run(req).await,
    };
    let mut resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let headers = resp.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if hashed { IMMUTABLE } else { REVALIDATE }),
    );
    // The same URL is sent as brotli, gzip or identity, by the request's Accept-Encoding.
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    resp
}

/// `moderato.<16 hex digits>.<ext>` (the whole app, the CSS) or `reader.<...>.<ext>` (the
/// reader client), as `scripts/assets.mjs` names files.
fn is_hashed_name(file: &str) -> bool {
    let mut parts = file.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("moderato" | "reader"), Some(hash), Some(ext), None)
            if hash.len() == 16
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && matches!(ext, "js" | "wasm" | "css")
    )
}

#[cfg(test)]
mod tests {
    use super::is_hashed_name;

    #[test]
    fn only_content_hashed_names_are_immutable() {
        assert!(is_hashed_name("moderato.0123456789abcdef.wasm"));
        assert!(is_hashed_name("moderato.0123456789abcdef.js"));
        assert!(is_hashed_name("moderato.0123456789abcdef.css"));
        assert!(is_hashed_name("reader.0123456789abcdef.wasm"));
        assert!(is_hashed_name("reader.0123456789abcdef.js"));
        assert!(!is_hashed_name("moderato.css"));
        assert!(!is_hashed_name("moderato_bg.wasm"));
        assert!(!is_hashed_name("moderato.0123456789abcdef.wasm.br"));
        assert!(!is_hashed_name("moderato.0123456789abcdeg.js"));
        assert!(!is_hashed_name("snippets/x/inline0.js"));
        assert!(!is_hashed_name("other.0123456789abcdef.js"));
    }
}
