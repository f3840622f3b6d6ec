//! Comments: validating what a poster sent, rendering markdown safely, and turning stored
//! rows into what a viewer may see.

use crate::config::Config;
use crate::store::CommentRow;
use app::model::{Comment, ModerationFlag, PostComment, Status, UGC_REL};
use pulldown_cmark::{Event, LinkType, Options, Parser, Tag, TagEnd};
use std::collections::{BTreeMap, HashSet};

/// Longest accepted author name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest accepted title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest accepted email address, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest accepted author URL, in characters.
pub const MAX_URL_CHARS: usize = 2000;

/// A poster's fields after validation; every string is trimmed and within its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct NewComment {
    pub name: String,
    pub email: Option<String>,
    pub url: Option<String>,
    pub title: Option<String>,
    pub body: String,
    pub parent_id: Option<i64>,
    /// Mail replies to `email` (once the address is confirmed).
    pub notify: bool,
}

/// Per-field messages for a 422 answer.
pub type FieldErrors = BTreeMap<String, String>;

fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// Characters that hide or reorder text without showing themselves: bidirectional
/// embeddings, overrides, isolates and marks (a name that displays as "Admin" but sorts and
/// searches as something else), and invisible spaces and joiners-of-nothing. The zero-width
/// (non-)joiners U+200C/U+200D are allowed: Persian and Indic names and emoji sequences need
/// them.
fn is_hidden_or_reordering(c: char) -> bool {
    matches!(c,
        '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{00AD}' | '\u{180E}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

/// Trims an optional field, treating blank as absent.
fn optional(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Checks only the body, as a preview needs.
pub fn validate_body(body: &str, config: &Config) -> Result<String, String> {
    if has_nul(body) {
        return Err("The comment must not contain NUL characters.".into());
    }
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err("Please write a comment.".into());
    }
    let chars = trimmed.chars().count();
    let max = config.comments.max_length;
    if chars > max {
        return Err(format!(
            "The comment is {chars} characters long; at most {max} are allowed."
        ));
    }
    Ok(trimmed.to_owned())
}

impl NewComment {
    /// Validates a post. Fields excluded by the configuration are dropped, never required.
    pub fn parse(req: &PostComment, config: &Config) -> Result<NewComment, FieldErrors> {
        let mut errors = FieldErrors::new();
        let body = validate_body(&req.body, config)
            .map_err(|e| errors.insert("body".into(), e))
            .ok();

        let name = req.name.trim();
        if has_nul(name) {
            errors.insert(
                "name".into(),
                "The name must not contain NUL characters.".into(),
            );
        } else if name.is_empty() {
            errors.insert("name".into(), "Please give your name.".into());
        } else if name.chars().count() > MAX_NAME_CHARS {
            errors.insert(
                "name".into(),
                format!("The name may be at most {MAX_NAME_CHARS} characters long."),
            );
        } else if name.chars().any(char::is_control) {
            errors.insert(
                "name".into(),
                "The name must not contain control characters.".into(),
            );
        } else if name.chars().any(is_hidden_or_reordering) {
            errors.insert(
                "name".into(),
                "The name must not contain invisible or text-direction characters.".into(),
            );
        }

        let email = if config.excludes("email") {
            None
        } else {
            optional(&req.email)
        };
        if let Some(e) = &email {
            let valid_shape = e.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
            if has_nul(e) || e.chars().any(|c| c.is_whitespace() || c.is_control()) || !valid_shape
            {
                errors.insert("email".into(), "This is not a valid email address.".into());
            } else if e.chars().count() > MAX_EMAIL_CHARS {
                errors.insert("email".into(), "This email address is too long.".into());
            }
        }

        let url = if config.excludes("url") {
            None
        } else {
            optional(&req.url)
        };
        let url = match url {
            None => None,
            Some(u) if u.chars().count() > MAX_URL_CHARS => {
                errors.insert("url".into(), "This web address is too long.".into());
                None
            }
            Some(u) => match url::Url::parse(&u) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
                {
                    Some(parsed.to_string())
                }
                _ => {
                    errors.insert(
                        "url".into(),
                        "Enter a web address starting with http:// or https://.".into(),
                    );
                    None
                }
            },
        };

        let title = if config.excludes("title") {
            None
        } else {
            optional(&req.title)
        };
        if let Some(t) = &title {
            if has_nul(t) || t.chars().any(char::is_control) {
                errors.insert(
                    "title".into(),
                    "The title must not contain control characters.".into(),
                );
            } else if t.chars().any(is_hidden_or_reordering) {
                errors.insert(
                    "title".into(),
                    "The title must not contain invisible or text-direction characters.".into(),
                );
            } else if t.chars().count() > MAX_TITLE_CHARS {
                errors.insert(
                    "title".into(),
                    format!("The title may be at most {MAX_TITLE_CHARS} characters long."),
                );
            }
        }

        if req.notify {
            if !config.comments.reply_notifications {
                errors.insert(
                    "notify".into(),
                    "This site does not send reply notifications.".into(),
                );
            } else if email.is_none() && !errors.contains_key("email") {
                errors.insert(
                    "notify".into(),
                    "Give your email address to be told of replies.".into(),
                );
            }
        }

        match body {
            Some(body) if errors.is_empty() => Ok(NewComment {
                name: name.to_owned(),
                email,
                url,
                title,
                body,
                parent_id: req.parent_id,
                notify: req.notify,
            }),
            _ => Err(errors),
        }
    }
}

/// Renders a comment's markdown to HTML that is safe to show anyone.
///
/// Raw HTML in the source is shown as text (never interpreted), images become plain links,
/// and ammonia keeps only a small set of formatting tags and http/https/mailto links, each
/// with `rel="nofollow ugc noopener noreferrer"`.
pub fn render_markdown(source: &str) -> String {
    let options = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES;
    let events = linked_events(source, options).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Image {
            dest_url,
            title,
            id,
            ..
        }) => Event::Start(Tag::Link {
            link_type: LinkType::Inline,
            dest_url,
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut html = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    // Built once: a builder is a dozen hash sets, and building one per comment cost more
    // than cleaning a short comment with it (measured in the import benchmark).
    static SANITIZER: std::sync::LazyLock<ammonia::Builder<'static>> =
        std::sync::LazyLock::new(sanitizer);
    SANITIZER.clean(&html).to_string()
}

fn sanitizer() -> ammonia::Builder<'static> {
    let tags: HashSet<&str> = [
        "a",
        "p",
        "br",
        "hr",
        "em",
        "strong",
        "del",
        "code",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "li",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    ]
    .into_iter()
    .collect();
    let mut b = ammonia::Builder::empty();
    b.tags(tags)
        .add_tag_attributes("a", ["href", "title"])
        .add_tag_attributes("ol", ["start"])
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some(UGC_REL))
        .url_relative(ammonia::UrlRelative::Deny)
        .strip_comments(true);
    b
}

/// A comment's markdown events, with bare http(s) URLs in its text made into links, as
/// readers of every rival expect. Rendering and link counting both read this stream, so a
/// moderator counts exactly the links a reader sees (five bare URLs are five links).
fn linked_events(source: &str, options: Options) -> impl Iterator<Item = Event<'_>> {
    let mut finder = linkify::LinkFinder::new();
    finder.kinds(&[linkify::LinkKind::Url]);
    // Inside a link its text is not linked again; inside a code block URLs stay code.
    let (mut in_link, mut in_code) = (0usize, 0usize);
    pulldown_cmark::TextMergeStream::new(Parser::new_ext(source, options)).flat_map(move |event| {
        match &event {
            Event::Start(Tag::Link { .. } | Tag::Image { .. }) => in_link += 1,
            Event::End(TagEnd::Link | TagEnd::Image) => in_link = in_link.saturating_sub(1),
            Event::Start(Tag::CodeBlock(_)) => in_code += 1,
            Event::End(TagEnd::CodeBlock) => in_code = in_code.saturating_sub(1),
            Event::Text(text) if in_link == 0 && in_code == 0 => {
                let mut out = Vec::new();
                for span in finder.spans(text) {
                    let piece = pulldown_cmark::CowStr::from(span.as_str().to_owned());
                    let is_web_url = span.kind().is_some()
                        && (piece.starts_with("http://") || piece.starts_with("https://"));
                    if is_web_url {
                        out.push(Event::Start(Tag::Link {
                            link_type: LinkType::Autolink,
                            dest_url: piece.clone(),
                            title: "".into(),
                            id: "".into(),
                        }));
                        out.push(Event::Text(piece));
                        out.push(Event::End(TagEnd::Link));
                    } else {
                        out.push(Event::Text(piece));
                    }
                }
                return out;
            }
            _ => {}
        }
        vec![event]
    })
}

/// The text a reader sees in a comment, with the address of each link whose text differs
/// from it: what the banned-word and spam moderators judge. Judging the markdown source would
/// let `c&#97;sino` or `cas**ino**` through, though both render as "casino"; and a link's
/// address is as telling as its words. Blocks end in a line break, so words of two paragraphs
/// never run together.
pub fn plain_text(source: &str) -> String {
    let options = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES;
    let mut text = String::with_capacity(source.len());
    // Each open link's address and where its text starts.
    let mut links: Vec<(pulldown_cmark::CowStr<'_>, usize)> = Vec::new();
    for event in linked_events(source, options) {
        match event {
            // Raw HTML is shown as text, so it is text here too.
            Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => {
                text.push_str(&t)
            }
            Event::SoftBreak | Event::HardBreak | Event::Rule => text.push('\n'),
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push((dest_url, text.len()))
            }
            Event::End(TagEnd::Link | TagEnd::Image) => {
                if let Some((url, start)) = links.pop()
                    && text[start..] != *url
                {
                    text.push_str(" (");
                    text.push_str(&url);
                    text.push(')');
                }
            }
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::Item
                | TagEnd::BlockQuote(_)
                | TagEnd::CodeBlock
                | TagEnd::TableCell
                | TagEnd::TableRow
                | TagEnd::TableHead,
            ) => text.push('\n'),
            _ => {}
        }
    }
    text
}

/// Links in a comment's source, for moderators that count them.
pub fn count_links(source: &str) -> usize {
    linked_events(source, Options::empty())
        .filter(|e| {
            matches!(
                e,
                Event::Start(Tag::Link { .. }) | Event::Start(Tag::Image { .. })
            )
        })
        .count()
}

/// Formats stored Unix milliseconds as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Who a comment is shown to: readers never get status or moderation detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Anyone who is not staff (including a signed-in non-staff user, and a comment's author).
    Reader,
    /// Staff: status and moderation flag included.
    Staff,
}

/// The comment as `audience` may see it: readers never get status or moderation detail.
/// This is the one projection from a stored row to what leaves the server.
pub fn to_public(row: &CommentRow, audience: Audience) -> Comment {
    let (status, moderation) = if audience == Audience::Staff {
        let status = Status::parse(&row.status);
        let flagged = status != Some(Status::Published);
        (
            status,
            Some(ModerationFlag {
                flagged,
                reason: row.reason.clone(),
                score: row.score,
            }),
        )
    } else {
        (None, None)
    };
    Comment {
        id: row.id,
        parent_id: row.parent_id,
        depth: u32::try_from(row.depth).unwrap_or(u32::MAX),
        author_name: row.author_name.clone(),
        author_url: row.author_url.clone(),
        title: row.title.clone(),
        body_html: row.body_html.clone(),
        created_at: rfc3339(row.created_at),
        status,
        moderation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, body: &str) -> PostComment {
        PostComment {
            name: name.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    use crate::test_rng::Lcg;

    /// Pieces of hostile and ordinary markdown; random sequences of them make the inputs.
    const PIECES: &[&str] = &[
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "<svg onload=alert(1)>",
        "<iframe src=//evil.example>",
        "<style>*{}</style>",
        "<a href=\"javascript:x\">y</a>",
        "<p title=\"x\" onclick=\"y\">",
        "</p>",
        "<!-- c -->",
        "javascript:alert(1)",
        "[x](javascript:alert(1))",
        "[x](  JaVaScRiPt:alert(1) )",
        "[x](&#106;avascript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](//evil.example)",
        "[x](/relative)",
        "![i](http://e.example/i.png \"t\\\" onerror=\\\"x\")",
        "[a]: javascript:x\n\n[a]",
        "<http://a.example>",
        "<mailto:a@b.example>",
        "https://x.example/\"onmouseover=\"alert(1)",
        "http://example.org/?a=<b>&c=\"d\"",
        "[ok](https://example.org \"a title > with \\\" quotes\")",
        "&amp;",
        "&lt;script&gt;",
        "&#x3C;script&#x3E;",
        "\u{0}",
        "\u{202e}",
        "日本語",
        "😀",
        "<",
        ">",
        "\"",
        "'",
        "`",
        "```\n",
        "~~~html\n",
        "\n",
        "\n\n",
        "    ",
        "*",
        "_",
        "**",
        "~~",
        "# ",
        "> ",
        "- ",
        "1. ",
        "|a|b|\n|-|-|\n|<b>c</b>|d|\n",
        "\\",
        "[",
        "](",
        ")",
        "word ",
    ];

    fn random_text(rng: &mut Lcg) -> String {
        (0..1 + rng.below(12)).map(|_| rng.pick(PIECES)).collect()
    }

    /// Asserts that rendered HTML holds nothing that can run: only the sanitiser's tags, only
    /// its attributes, and links only to http(s) or mailto addresses.
    fn assert_inert(html: &str, source: &str) {
        const TAGS: &[&str] = &[
            "a",
            "p",
            "br",
            "hr",
            "em",
            "strong",
            "del",
            "code",
            "pre",
            "blockquote",
            "ul",
            "ol",
            "li",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
        ];
        let fail = |what: &str| panic!("{what} in {html:?} (from {source:?})");
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            let tag = &rest[open + 1..];
            let tag = tag.strip_prefix('/').unwrap_or(tag);
            let name_len = tag
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(tag.len());
            let name = &tag[..name_len];
            if !TAGS.contains(&name) {
                fail(&format!("tag {name:?}"));
            }
            // Attributes: ` name="value"` until `>`; values may hold `>` but not `"`.
            let mut attrs = &tag[name_len..];
            loop {
                attrs = attrs.trim_start();
                if let Some(after) = attrs.strip_prefix('>') {
                    rest = after;
                    break;
                }
                let Some((attr, value_on)) = attrs.split_once("=\"") else {
                    fail("an unquoted attribute");
                    return;
                };
                let Some((value, after)) = value_on.split_once('"') else {
                    fail("an unterminated attribute");
                    return;
                };
                match (name, attr) {
                    ("a", "href") => {
                        if !["http://", "https://", "mailto:"]
                            .iter()
                            .any(|s| value.starts_with(s))
                        {
                            fail(&format!("href {value:?}"));
                        }
                    }
                    ("a", "title" | "rel") | ("ol", "start") => {}
                    _ => fail(&format!("attribute {attr:?} on {name:?}")),
                }
                attrs = after;
            }
        }
    }

    #[test]
    fn random_markdown_never_renders_anything_that_can_run() {
        let mut rng = Lcg(20261203);
        for _ in 0..2000 {
            let source = random_text(&mut rng);
            assert_inert(&render_markdown(&source), &source);
            // The moderators' view of it never panics either.
            let _ = (plain_text(&source), count_links(&source));
        }
    }

    #[test]
    fn random_fields_are_accepted_only_when_valid() {
        let mut rng = Lcg(7);
        let config = Config::default();
        let field = |rng: &mut Lcg| match rng.below(4) {
            0 => None,
            1 => Some(String::new()),
            _ => Some(random_text(rng)),
        };
        let mut accepted = 0;
        for _ in 0..2000 {
            let req = PostComment {
                name: match rng.below(2) {
                    0 => "Ann".into(),
                    _ => field(&mut rng).unwrap_or_default(),
                },
                email: match rng.below(3) {
                    0 => Some("ann@example.org".into()),
                    _ => field(&mut rng),
                },
                url: match rng.below(3) {
                    0 => Some("https://example.org/ann".into()),
                    _ => field(&mut rng),
                },
                title: field(&mut rng),
                body: field(&mut rng).unwrap_or_default(),
                ..Default::default()
            };
            match NewComment::parse(&req, &config) {
                Ok(c) => {
                    accepted += 1;
                    assert!(!c.name.is_empty() && !c.body.trim().is_empty(), "{c:?}");
                    for text in [Some(&c.name), c.title.as_ref()].into_iter().flatten() {
                        assert!(!text.chars().any(char::is_control), "{c:?}");
                        assert!(!text.chars().any(is_hidden_or_reordering), "{c:?}");
                    }
                    assert!(!c.body.contains('\0'), "{c:?}");
                    if let Some(url) = &c.url {
                        assert!(url.starts_with("http://") || url.starts_with("https://"));
                    }
                }
                Err(errors) => assert!(!errors.is_empty()),
            }
        }
        // The generator reaches both answers.
        assert!(accepted > 100 && accepted < 1900, "{accepted}");
    }

    #[test]
    fn plain_text_is_what_a_reader_sees() {
        // Entities and emphasis cannot split a word for the moderators.
        assert_eq!(plain_text("c&#97;sino"), "casino\n");
        assert_eq!(
            plain_text("cas**ino** and c*a*s*i*n*o*"),
            "casino and casino\n"
        );
        // Paragraphs and lines stay apart; raw HTML is shown, so it is text.
        assert_eq!(plain_text("one\n\ntwo\nthree"), "one\ntwo\nthree\n");
        assert_eq!(plain_text("<b>x</b>"), "<b>x</b>\n");
        // A link's address counts; a bare URL is not repeated.
        assert_eq!(
            plain_text("[cheap pills](https://spam.example/buy) https://a.example"),
            "cheap pills (https://spam.example/buy) https://a.example\n"
        );
    }

    #[test]
    fn a_plain_comment_is_accepted_and_trimmed() {
        let c = NewComment::parse(&req("  Ann ", "  Hello  "), &Config::default()).unwrap();
        assert_eq!(c.name, "Ann");
        assert_eq!(c.body, "Hello");
        assert_eq!(c.email, None);
    }

    #[test]
    fn missing_name_and_body_are_reported_per_field() {
        let e = NewComment::parse(&req(" ", " \n "), &Config::default()).unwrap_err();
        assert!(e.contains_key("name"));
        assert!(e.contains_key("body"));
    }

    #[test]
    fn body_length_counts_characters_not_bytes() {
        let mut config = Config::default();
        config.comments.max_length = 5;
        // Five characters, fifteen bytes: allowed.
        assert!(NewComment::parse(&req("A", "日本語日本"), &config).is_ok());
        let e = NewComment::parse(&req("A", "日本語日本語"), &config).unwrap_err();
        assert!(e["body"].contains("at most 5"), "{e:?}");
    }

    #[test]
    fn name_over_100_characters_is_refused() {
        let long = "é".repeat(101);
        let e = NewComment::parse(&req(&long, "hi"), &Config::default()).unwrap_err();
        assert!(e.contains_key("name"));
        assert!(NewComment::parse(&req(&"é".repeat(100), "hi"), &Config::default()).is_ok());
    }

    #[test]
    fn names_and_titles_that_hide_or_reorder_text_are_refused() {
        let config = Config::default();
        // "Admin" displayed, "nimdA" stored; a zero-width space; a byte-order mark.
        for name in [
            "\u{202E}nimdA",
            "Ad\u{200B}min",
            "\u{FEFF}Ann",
            "Ann\u{2067}x\u{2069}",
        ] {
            let e = NewComment::parse(&req(name, "hi"), &config).unwrap_err();
            assert!(e["name"].contains("invisible"), "{name:?}: {e:?}");
        }
        let mut titled = req("Ann", "hi");
        titled.title = Some("Re\u{202D}: hi".into());
        let e = NewComment::parse(&titled, &config).unwrap_err();
        assert!(e["title"].contains("text-direction"), "{e:?}");
        // Joiners that real names and emoji need still pass.
        for name in ["می\u{200C}خواهم", "👩\u{200D}💻 Dev", "שרה כהן", "محمد"]
        {
            assert!(
                NewComment::parse(&req(name, "hi"), &config).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn nul_characters_are_refused() {
        let e = NewComment::parse(&req("A", "hi\0there"), &Config::default()).unwrap_err();
        assert!(e["body"].contains("NUL"));
        let e = NewComment::parse(&req("A\0", "hi"), &Config::default()).unwrap_err();
        assert!(e["name"].contains("NUL"));
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        let mut r = req("A", "hi");
        for bad in [
            "javascript:alert(1)",
            "ftp://x.org/",
            "not a url",
            "data:text/html,x",
        ] {
            r.url = Some(bad.into());
            let e = NewComment::parse(&r, &Config::default()).unwrap_err();
            assert!(e.contains_key("url"), "{bad}");
        }
        r.url = Some("https://example.org/me".into());
        let c = NewComment::parse(&r, &Config::default()).unwrap();
        assert_eq!(c.url.as_deref(), Some("https://example.org/me"));
    }

    #[test]
    fn malformed_email_is_refused() {
        let mut r = req("A", "hi");
        r.email = Some("nobody".into());
        assert!(
            NewComment::parse(&r, &Config::default())
                .unwrap_err()
                .contains_key("email")
        );
        r.email = Some("a@b.org".into());
        assert!(NewComment::parse(&r, &Config::default()).is_ok());
    }

    #[test]
    fn excluded_fields_are_dropped_not_validated() {
        let mut config = Config::default();
        config.comments.exclude_fields = vec!["email".into(), "url".into(), "title".into()];
        let mut r = req("A", "hi");
        r.email = Some("not an email".into());
        r.url = Some("javascript:x".into());
        r.title = Some("t".into());
        let c = NewComment::parse(&r, &config).unwrap();
        assert_eq!((c.email, c.url, c.title), (None, None, None));
    }

    #[test]
    fn markdown_formats_and_links_get_ugc_rel() {
        let html = render_markdown("Some *emphasis* and [a link](https://example.org).");
        assert!(html.contains("<em>emphasis</em>"), "{html}");
        assert!(
            html.contains(
                r#"<a href="https://example.org" rel="nofollow ugc noopener noreferrer">a link</a>"#
            ),
            "{html}"
        );
    }

    #[test]
    fn bare_urls_are_links_and_count_as_links() {
        let five = "see https://a.example/1 https://b.example/2, http://c.example/3 \
                    https://d.example/4 and https://e.example/5.";
        assert_eq!(count_links(five), 5);
        let html = render_markdown("Read https://example.org/a?b=1&c=2. Thanks");
        assert!(
            html.contains(
                r#"<a href="https://example.org/a?b=1&amp;c=2" rel="nofollow ugc noopener noreferrer">https://example.org/a?b=1&amp;c=2</a>. Thanks"#
            ),
            "{html}"
        );
        // A link's own text, code and other schemes are left alone.
        assert_eq!(count_links("[https://a.example](https://b.example)"), 1);
        assert_eq!(
            count_links("`https://a.example` and\n\n    https://b.example\n"),
            0
        );
        let html = render_markdown("mailto:x@y.example javascript:alert(1) ftp://f.example");
        assert!(!html.contains("<a"), "{html}");
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        let html = render_markdown("<script>alert(1)</script> and <b onclick=x>bold</b>");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
    }

    #[test]
    fn dangerous_link_schemes_are_removed() {
        let html =
            render_markdown("[x](javascript:alert(1)) [y](data:text/html,z) [m](mailto:a@b.org)");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(html.contains(r#"href="mailto:a@b.org""#), "{html}");
    }

    #[test]
    fn images_become_links() {
        let html = render_markdown("![a cat](https://example.org/cat.png)");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains(r#"href="https://example.org/cat.png""#),
            "{html}"
        );
        assert!(html.contains("a cat"), "{html}");
    }

    #[test]
    fn readers_never_see_moderation_detail() {
        let row = CommentRow {
            id: 1,
            thread_id: 1,
            parent_id: None,
            depth: 0,
            path: "0000000001".into(),
            author_name: "A".into(),
            author_email: Some("a@b.org".into()),
            author_url: None,
            title: None,
            body_source: "x".into(),
            body_html: "<p>x</p>".into(),
            status: "held".into(),
            moderator: Some("links".into()),
            reason: Some("too many links".into()),
            score: Some(0.5),
            ip: Some("127.0.0.1".into()),
            created_at: 0,
            updated_at: 0,
        };
        let public = to_public(&row, Audience::Reader);
        assert_eq!((public.status, public.moderation), (None, None));
        let staff = to_public(&row, Audience::Staff);
        assert_eq!(staff.status, Some(Status::Held));
        assert_eq!(
            staff.moderation.unwrap().reason.as_deref(),
            Some("too many links")
        );
    }
}
