//! HTML comment bodies (Disqus, WordPress, Remark42) turned into the markdown source that
//! native comments store, so an imported comment renders through the same markdown and
//! ammonia policy as one posted here (`crate::comment::render_markdown`).
//!
//! ammonia first reduces the HTML to the few tags markdown can say (scripts, styles and
//! their content go, unknown tags keep only their text, links keep only http, https and
//! mailto); its output is regular, well-formed HTML, which a small tokenizer then walks.

use std::collections::HashSet;

fn cleaner() -> ammonia::Builder<'static> {
    let tags: HashSet<&str> = [
        "a",
        "p",
        "br",
        "div",
        "em",
        "i",
        "strong",
        "b",
        "del",
        "s",
        "strike",
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
        "hr",
        "img",
    ]
    .into_iter()
    .collect();
    let mut b = ammonia::Builder::empty();
    b.tags(tags)
        .add_tag_attributes("a", ["href"])
        .add_tag_attributes("img", ["src", "alt"])
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(None)
        .strip_comments(true);
    b
}

enum Token {
    Start(String, Vec<(String, String)>),
    End(String),
    Text(String),
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Tokens of ammonia's output: tags with quoted attributes, and text.
fn tokens(html: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let Some(close) = after.find('>') else {
                out.push(Token::Text(decode_entities(rest)));
                break;
            };
            let inner = &after[..close];
            rest = &after[close + 1..];
            if let Some(name) = inner.strip_prefix('/') {
                out.push(Token::End(name.trim().to_ascii_lowercase()));
                continue;
            }
            let inner = inner.trim_end_matches('/');
            let (name, mut attrs_text) = inner.split_once(' ').unwrap_or((inner, ""));
            let mut attrs = Vec::new();
            while let Some(eq) = attrs_text.find("=\"") {
                let key = attrs_text[..eq].trim().to_ascii_lowercase();
                let value_start = &attrs_text[eq + 2..];
                let Some(end) = value_start.find('"') else {
                    break;
                };
                attrs.push((key, decode_entities(&value_start[..end])));
                attrs_text = &value_start[end + 1..];
            }
            out.push(Token::Start(name.to_ascii_lowercase(), attrs));
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            out.push(Token::Text(decode_entities(&rest[..end])));
            rest = &rest[end..];
        }
    }
    out
}

enum Block {
    Quote,
    List {
        ordered: bool,
        next: u64,
    },
    Item {
        width: usize,
        marker: Option<String>,
    },
}

#[derive(Default)]
struct Writer {
    out: String,
    blocks: Vec<Block>,
    /// A blank line (paragraph break) or a newline is due before the next text.
    need_blank: bool,
    need_newline: bool,
    /// A `<br>` seen: a hard break before the next text of the same block.
    pending_break: bool,
    /// The last character written was whitespace (HTML collapses runs of it).
    space: bool,
    /// A heading's `#`s, written with its first text.
    heading: Option<usize>,
    /// Open links: where their text starts in `out`, and their address.
    links: Vec<Option<String>>,
    pre: Option<String>,
    code: Option<String>,
}

impl Writer {
    fn prefix(&mut self, first_line: bool) -> String {
        let mut p = String::new();
        for b in self.blocks.iter_mut() {
            match b {
                Block::Quote => p.push_str("> "),
                Block::Item { width, marker } => match marker.take() {
                    Some(m) if first_line => p.push_str(&m),
                    Some(m) => {
                        *marker = Some(m);
                        p.push_str(&" ".repeat(*width));
                    }
                    None => p.push_str(&" ".repeat(*width)),
                },
                Block::List { .. } => {}
            }
        }
        p
    }

    /// Starts the line the next text goes on.
    fn start_text(&mut self) {
        if self.out.is_empty() {
            let p = self.prefix(true);
            self.out.push_str(&p);
        } else if self.need_blank || self.need_newline {
            if self.need_blank {
                let p = self.prefix(false);
                self.out.push('\n');
                self.out.push_str(p.trim_end());
            }
            self.out.push('\n');
            let p = self.prefix(true);
            self.out.push_str(&p);
        } else if self.pending_break {
            self.out.push_str("\\\n");
            let p = self.prefix(false);
            self.out.push_str(&p);
        } else {
            return;
        }
        self.need_blank = false;
        self.need_newline = false;
        self.pending_break = false;
        self.space = true;
        if let Some(level) = self.heading.take() {
            self.out.push_str(&"#".repeat(level));
            self.out.push(' ');
        }
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty()
            || self.out.ends_with('\n')
            || self.out.ends_with("> ")
            || self.out.ends_with(". ")
            || self.out.ends_with("- ")
            || self.out.ends_with("  ")
    }

    fn text(&mut self, t: &str) {
        if let Some(pre) = self.pre.as_mut() {
            pre.push_str(t);
            return;
        }
        if let Some(code) = self.code.as_mut() {
            code.push_str(t);
            return;
        }
        let mut words = String::new();
        for c in t.chars() {
            if c.is_whitespace() {
                if !(self.space || words.is_empty() && self.need_text_start()) {
                    words.push(' ');
                    self.space = true;
                }
            } else {
                words.push(c);
                self.space = false;
            }
        }
        if words.trim().is_empty() {
            if !words.is_empty() && !self.need_text_start() {
                self.out.push(' ');
            }
            return;
        }
        self.start_text();
        let line_start = self.at_line_start();
        let words = if line_start {
            words.trim_start()
        } else {
            &words
        };
        self.out.push_str(&escape(words, line_start));
    }

    fn need_text_start(&self) -> bool {
        self.out.is_empty() || self.need_blank || self.need_newline
    }

    fn inline(&mut self, marker: &str) {
        if self.code.is_some() || self.pre.is_some() {
            return;
        }
        self.start_text();
        self.out.push_str(marker);
    }

    fn block(&mut self) {
        self.need_blank = true;
        self.pending_break = false;
        self.heading = None;
    }

    fn finish(mut self) -> String {
        self.out.truncate(self.out.trim_end().len());
        let lines: Vec<&str> = self.out.lines().map(str::trim_end).collect();
        lines.join("\n")
    }
}

/// Backslash-escapes what markdown would read as syntax.
fn escape(text: &str, line_start: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let special = match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '~' | '|' | '!' => true,
            '&' => chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '#'),
            '-' | '+' | '=' => line_start && i == 0,
            '.' | ')' => line_start && i > 0 && chars[..i].iter().all(char::is_ascii_digit),
            _ => false,
        };
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn link_target(href: &str) -> String {
    if href.contains([' ', '(', ')', '<', '>']) {
        format!("<{}>", href.replace('<', "%3C").replace('>', "%3E"))
    } else {
        href.to_owned()
    }
}

/// The markdown source for an HTML body.
pub fn to_markdown(html: &str) -> String {
    static CLEANER: std::sync::LazyLock<ammonia::Builder<'static>> =
        std::sync::LazyLock::new(cleaner);
    let clean = CLEANER.clean(html).to_string();
    let mut w = Writer::default();
    for token in tokens(&clean) {
        match token {
            Token::Text(t) => w.text(&t),
            Token::Start(name, attrs) => {
                let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                match name.as_str() {
                    "p" | "div" => w.block(),
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                        w.block();
                        w.heading = name[1..].parse().ok();
                    }
                    "br" => {
                        if w.pre.is_some() {
                            w.text("\n");
                        } else {
                            w.pending_break = true;
                        }
                    }
                    "hr" => {
                        w.block();
                        w.start_text();
                        w.out.push_str("---");
                        w.block();
                    }
                    "blockquote" => {
                        w.block();
                        w.blocks.push(Block::Quote);
                    }
                    "ul" | "ol" => {
                        w.block();
                        w.blocks.push(Block::List {
                            ordered: name == "ol",
                            next: 1,
                        });
                    }
                    "li" => {
                        let marker = match w.blocks.iter_mut().rev().find_map(|b| match b {
                            Block::List { ordered, next } => Some((ordered, next)),
                            _ => None,
                        }) {
                            Some((true, next)) => {
                                *next += 1;
                                format!("{}. ", *next - 1)
                            }
                            _ => "- ".to_owned(),
                        };
                        if !w.out.is_empty() {
                            w.need_newline = true;
                        }
                        w.pending_break = false;
                        w.blocks.push(Block::Item {
                            width: marker.len(),
                            marker: Some(marker),
                        });
                    }
                    "pre" => {
                        w.block();
                        w.pre = Some(String::new());
                    }
                    "code" if w.pre.is_none() => {
                        w.start_text();
                        w.code = Some(String::new());
                    }
                    "em" | "i" => w.inline("*"),
                    "strong" | "b" => w.inline("**"),
                    "del" | "s" | "strike" => w.inline("~~"),
                    "a" => {
                        let href = attr("href");
                        if href.is_some() {
                            w.inline("[");
                        }
                        w.links.push(href);
                    }
                    "img" => {
                        if let Some(src) = attr("src") {
                            let alt = attr("alt").filter(|a| !a.trim().is_empty());
                            w.start_text();
                            let alt = escape(alt.as_deref().unwrap_or("image"), false);
                            w.out.push_str(&format!("[{alt}]({})", link_target(&src)));
                            w.space = false;
                        }
                    }
                    _ => {}
                }
            }
            Token::End(name) => match name.as_str() {
                "p" | "div" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => w.block(),
                "blockquote" => {
                    if let Some(i) = w.blocks.iter().rposition(|b| matches!(b, Block::Quote)) {
                        w.blocks.truncate(i);
                    }
                    w.block();
                }
                "ul" | "ol" => {
                    if let Some(i) = w
                        .blocks
                        .iter()
                        .rposition(|b| matches!(b, Block::List { .. }))
                    {
                        w.blocks.truncate(i);
                    }
                    w.block();
                }
                "li" => {
                    if let Some(i) = w
                        .blocks
                        .iter()
                        .rposition(|b| matches!(b, Block::Item { .. }))
                    {
                        w.blocks.truncate(i);
                    }
                    w.pending_break = false;
                }
                "pre" => {
                    if let Some(code) = w.pre.take() {
                        let code = code.trim_matches('\n');
                        let fence = if code.contains("```") { "~~~~" } else { "```" };
                        w.start_text();
                        let p = w.prefix(false);
                        w.out.push_str(fence);
                        for line in code.lines() {
                            w.out.push('\n');
                            w.out.push_str(&p);
                            w.out.push_str(line);
                        }
                        w.out.push('\n');
                        w.out.push_str(&p);
                        w.out.push_str(fence);
                    }
                    w.block();
                }
                "code" => {
                    if let Some(code) = w.code.take() {
                        let code = code.replace('\n', " ");
                        let ticks = if code.contains('`') { "``" } else { "`" };
                        let pad = if code.starts_with('`') || code.ends_with('`') {
                            " "
                        } else {
                            ""
                        };
                        w.out.push_str(&format!("{ticks}{pad}{code}{pad}{ticks}"));
                        w.space = false;
                    }
                }
                "em" | "i" => w.inline("*"),
                "strong" | "b" => w.inline("**"),
                "del" | "s" | "strike" => w.inline("~~"),
                "a" => {
                    if let Some(Some(href)) = w.links.pop() {
                        w.out.push_str(&format!("]({})", link_target(&href)));
                        w.space = false;
                    }
                }
                _ => {}
            },
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comment::render_markdown;

    #[test]
    fn paragraphs_breaks_and_emphasis_survive() {
        let md = to_markdown("<p>Hello <b>bold</b> and <i>it</i></p><p>line one<br>line two</p>");
        assert_eq!(md, "Hello **bold** and *it*\n\nline one\\\nline two");
        let html = render_markdown(&md);
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains("<br"), "{html}");
    }

    #[test]
    fn links_keep_their_address_and_scripts_go() {
        let md = to_markdown(
            r#"<p>See <a href="https://example.org/a?b=1&amp;c=2" onclick="x()">this</a><script>alert(1)</script></p>"#,
        );
        assert_eq!(md, "See [this](https://example.org/a?b=1&c=2)");
        let md = to_markdown(r#"<a href="javascript:alert(1)">bad</a>"#);
        assert!(!md.contains("javascript"), "{md}");
    }

    #[test]
    fn markdown_syntax_in_text_is_escaped() {
        let md = to_markdown("<p>1. not a list *nor emphasis* &lt;b&gt;</p>");
        let html = render_markdown(&md);
        assert!(
            html.contains("1. not a list *nor emphasis* &lt;b&gt;"),
            "{html}"
        );
    }

    #[test]
    fn lists_quotes_and_code_become_markdown() {
        let md = to_markdown(
            "<blockquote><p>quoted</p></blockquote><ul><li>one</li><li>two</li></ul><pre><code>let x = 1;\nlet y = 2;</code></pre><p><code>a*b</code></p>",
        );
        let html = render_markdown(&md);
        assert!(html.contains("<blockquote>"), "{md}\n{html}");
        assert!(html.contains("<li>one</li>"), "{md}\n{html}");
        assert!(html.contains("let x = 1;\nlet y = 2;"), "{md}\n{html}");
        assert!(html.contains("<code>a*b</code>"), "{md}\n{html}");
    }

    #[test]
    fn unicode_and_entities_are_kept() {
        assert_eq!(
            to_markdown("<p>Grüße &amp; 日本語 &#128512;</p>"),
            "Grüße & 日本語 😀"
        );
    }
}
