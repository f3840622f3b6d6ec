//! Embedding on other sites: which origins are allowed, the page URL a snippet sends, a
//! thread created on first use by an embed, the public comment counts host pages show, and
//! the HTML fragment a static site can include for search engines.

use super::{Engine, RESERVED_THREAD_KEYS, valid_thread_key};
use crate::auth::Viewer;
use crate::error::{Error, Result};
use app::model::comment_html;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// At most this many thread keys per counts request.
pub const MAX_COUNT_KEYS: usize = 100;

/// `scheme://host[:port]` in the form browsers send in `Origin` (lowercase host, default
/// port left out), or `None` when `s` is not just an http(s) origin.
pub fn normalise_origin(s: &str) -> Option<String> {
    let u = url::Url::parse(s.trim()).ok()?;
    let bare = u.path() == "/"
        && u.query().is_none()
        && u.fragment().is_none()
        && u.username().is_empty()
        && u.password().is_none()
        && !s.trim().ends_with('/');
    if !bare || !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return None;
    }
    Some(u.origin().ascii_serialization())
}

/// The origin of an http(s) URL.
pub fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| u.origin().ascii_serialization())
}

/// A page URL as the thread records it: http(s), no credentials, query or fragment, and
/// the trailing slash as `[embed] trailing_slash` says ("keep", "strip" or "add").
pub fn normalise_page_url(raw: &str, trailing_slash: &str) -> Result<String, String> {
    let mut u = url::Url::parse(raw.trim()).map_err(|_| format!("{raw:?} is not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{raw:?} is not an http or https URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("a page URL must not carry a user name or password".into());
    }
    u.set_query(None);
    u.set_fragment(None);
    let path = u.path().to_owned();
    match trailing_slash {
        "strip" if path.len() > 1 && path.ends_with('/') => {
            u.set_path(path.trim_end_matches('/'));
        }
        "add" if !path.ends_with('/') => u.set_path(&format!("{path}/")),
        _ => {}
    }
    let out = String::from(u);
    if out.len() > 2000 {
        return Err("the page URL is longer than 2000 characters".into());
    }
    Ok(out)
}

/// What an embed asks for when it frames a thread: the snippet's key, title and page URL,
/// and the origin of the page that frames it (from the browser's `Referer`).
#[derive(Debug, Default)]
pub struct EmbedRequest<'a> {
    pub key: &'a str,
    pub title: Option<&'a str>,
    pub url: Option<&'a str>,
    pub framing_origin: Option<&'a str>,
    /// Who asks (counted against `embed.new_threads_per_minute` if a thread is created).
    pub client: Option<IpAddr>,
}

/// What became of an embed's thread.
#[derive(Debug, PartialEq, Eq)]
pub enum EmbedThread {
    /// It exists (nothing about it was changed by the embed).
    Exists,
    /// It was created now, for the embed's page.
    Created,
    /// Not created, and why (for logs and tests; the reader sees "no such thread").
    Refused(String),
}

impl Engine {
    /// Whether `origin` is in `[embed] allowed_origins` (compared in normal form).
    pub fn embed_allows(&self, origin: &str) -> bool {
        let Some(origin) = normalise_origin(origin) else {
            return false;
        };
        self.config
            .embed
            .allowed_origins
            .iter()
            .filter_map(|o| normalise_origin(o))
            .any(|o| o == origin)
    }

    /// Makes sure an embed's thread exists, creating it only for a page of an allowed site:
    /// the framing origin must be allowed, the snippet's page URL must be on that same
    /// origin, the key valid and not reserved, the title sane. An existing thread is never
    /// changed by an embed (its title and settings belong to staff).
    pub async fn thread_for_embed(&self, req: &EmbedRequest<'_>) -> Result<EmbedThread> {
        if !valid_thread_key(req.key) {
            return Ok(EmbedThread::Refused("invalid thread key".into()));
        }
        if self.store.thread(req.key).await?.is_some() {
            return Ok(EmbedThread::Exists);
        }
        if RESERVED_THREAD_KEYS.contains(&req.key) {
            return Ok(EmbedThread::Refused(format!(
                "{:?} is a reserved key",
                req.key
            )));
        }
        let Some(origin) = req.framing_origin.filter(|o| self.embed_allows(o)) else {
            return Ok(EmbedThread::Refused(
                "not framed by a page of an allowed origin".into(),
            ));
        };
        let url = match req
            .url
            .map(|u| normalise_page_url(u, &self.config.embed.trailing_slash))
        {
            Some(Ok(u)) => u,
            Some(Err(e)) => return Ok(EmbedThread::Refused(e)),
            None => return Ok(EmbedThread::Refused("the page URL is missing".into())),
        };
        if origin_of(&url) != normalise_origin(origin) {
            return Ok(EmbedThread::Refused(
                "the page URL is not on the framing site".into(),
            ));
        }
        let title = req.title.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = title
            && (t.chars().count() > 200 || t.chars().any(char::is_control))
        {
            return Ok(EmbedThread::Refused(
                "the title must be at most 200 characters, without control characters".into(),
            ));
        }
        // Last, so that only a request that would create a thread is counted.
        if let Some(ip) = req.client
            && self
                .over_limit(super::cluster::Limit::NewThreads, ip)
                .await?
                .is_some()
        {
            return Ok(EmbedThread::Refused(
                "too many new threads from this address; try again in a minute".into(),
            ));
        }
        let origin = normalise_origin(origin).unwrap_or_default();
        let created = self
            .store
            .create_embed_thread(req.key, title.unwrap_or(req.key), &url, &origin)
            .await?;
        Ok(if created {
            tracing::info!(key = req.key, %url, "thread created by an embed");
            EmbedThread::Created
        } else {
            // Another request created it in between.
            EmbedThread::Exists
        })
    }

    /// Published comments per thread key; unknown keys count 0.
    pub async fn public_counts(&self, keys: &[String]) -> Result<BTreeMap<String, i64>> {
        if keys.is_empty() || keys.len() > MAX_COUNT_KEYS {
            return Err(Error::BadRequest(crate::error::field(
                "threads",
                format!("threads: give 1 to {MAX_COUNT_KEYS} thread keys, separated by commas"),
            )));
        }
        if let Some(bad) = keys.iter().find(|k| !valid_thread_key(k)) {
            return Err(Error::BadRequest(crate::error::field(
                "threads",
                format!("threads: {bad:?} is not a thread key"),
            )));
        }
        let mut counts: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 0)).collect();
        for (key, n) in self.store.published_counts(keys).await? {
            counts.insert(key, n);
        }
        Ok(counts)
    }

    /// The public first page of a thread as an HTML fragment with no scripts: the same
    /// markup as the API's `html`, nested as the tree is, plus a link to the whole thread
    /// at `site` (this server's public address).
    pub async fn thread_fragment(&self, key: &str, site: &str) -> Result<String> {
        // Never created by a fragment request: an unknown thread is simply not found.
        if self.store.thread(key).await?.is_none() {
            return Err(Error::NotFound(format!("There is no thread {key:?}.")));
        }
        let data = self.thread(key, None, true, &Viewer::Reader).await?;
        let n = data.thread.comment_count;
        let mut html = format!(
            r#"<section class="moderato-fragment" data-moderato-fragment="{key}"><h2 class="moderato-count">{}</h2><div class="comment-tree">"#,
            match n {
                0 => "No comments yet".to_owned(),
                1 => "1 comment".to_owned(),
                n => format!("{n} comments"),
            },
            key = app::api::encode_key(key),
        );
        // Comments come in tree order: close the reply lists of every comment that is not
        // an ancestor of the next one.
        let mut open: Vec<u32> = Vec::new();
        for c in &data.comments {
            while open.last().is_some_and(|d| *d >= c.depth) {
                open.pop();
                html.push_str("</div></div>");
            }
            html.push_str(r#"<div class="moderato-comment">"#);
            html.push_str(&comment_html(c));
            html.push_str(r#"<div class="replies">"#);
            open.push(c.depth);
        }
        for _ in open {
            html.push_str("</div></div>");
        }
        html.push_str(&format!(
            r#"</div><p class="moderato-more"><a href="{site}/t/{key}">{}</a></p></section>"#,
            if data.next.is_some() {
                "Read all comments"
            } else {
                "Read and reply"
            },
            site = site.trim_end_matches('/'),
            key = app::api::encode_key(key),
        ));
        Ok(html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_as_browsers_send_them() {
        assert_eq!(
            normalise_origin("https://Blog.Example.org").as_deref(),
            Some("https://blog.example.org")
        );
        assert_eq!(
            normalise_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            normalise_origin("https://blog.example.org:443").as_deref(),
            Some("https://blog.example.org")
        );
        assert_eq!(normalise_origin("https://blog.example.org/"), None);
        assert_eq!(normalise_origin("https://blog.example.org/x"), None);
        assert_eq!(normalise_origin("ftp://blog.example.org"), None);
        assert_eq!(normalise_origin("blog.example.org"), None);
        assert_eq!(normalise_origin("*"), None);
    }

    #[test]
    fn page_urls_lose_query_and_fragment_and_follow_the_slash_policy() {
        let u = "https://Blog.example.org/2026/post/?utm=x#comment-3";
        assert_eq!(
            normalise_page_url(u, "keep").unwrap(),
            "https://blog.example.org/2026/post/"
        );
        assert_eq!(
            normalise_page_url(u, "strip").unwrap(),
            "https://blog.example.org/2026/post"
        );
        assert_eq!(
            normalise_page_url("https://b.example/post", "add").unwrap(),
            "https://b.example/post/"
        );
        assert_eq!(
            normalise_page_url("https://b.example/", "strip").unwrap(),
            "https://b.example/"
        );
        assert!(normalise_page_url("javascript:alert(1)", "keep").is_err());
        assert!(normalise_page_url("https://u:p@b.example/", "keep").is_err());
        assert!(normalise_page_url("not a url", "keep").is_err());
    }
}
