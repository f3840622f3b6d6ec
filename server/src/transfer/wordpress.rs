//! WordPress eXtended RSS (WXR, Tools > Export): each `<item>` is a post or page with its
//! `<wp:comment>` elements inside, so one item is one thread and the second pass reads an
//! item back whole.

use super::xml::{Elem, read_elem, reader, xml_error};
use super::{
    Body, Fate, ImportError, Plan, PlannedThread, SourceComment, SourceThread, Span, at_byte,
    io_error,
};
use quick_xml::events::Event;
use std::path::Path;

pub(crate) fn scan(
    path: &Path,
    progress: &dyn Fn(u64),
    keep_pingbacks: bool,
) -> Result<Plan, ImportError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut r = reader(std::io::BufReader::with_capacity(1 << 16, file));
    let mut buf = Vec::new();
    let mut plan = Plan::default();
    let mut site: Option<String> = None;
    // 0: outside, 1: in <rss>, 2: in <channel>.
    let mut depth = 0usize;
    let mut seen_channel = false;
    loop {
        let before = r.buffer_position();
        buf.clear();
        let event = r
            .read_event_into(&mut buf)
            .map_err(|e| xml_error(&r, 0, e))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(s) if depth == 0 => {
                if s.name().as_ref() != b"rss" {
                    return Err(at_byte(
                        before,
                        "expected a WordPress export (<rss> with <channel>)",
                    ));
                }
                depth = 1;
            }
            Event::Start(s) if depth == 1 && s.name().as_ref() == b"channel" => {
                depth = 2;
                seen_channel = true;
            }
            Event::Start(s) | Event::Empty(s) if depth >= 1 => {
                let s = s.into_owned();
                let mut inner = Vec::new();
                let elem = read_elem(&mut r, &s, empty, &mut inner, 0)?;
                let end = r.buffer_position();
                match elem.name.as_str() {
                    "item" if depth == 2 => {
                        let len = u32::try_from(end - before)
                            .map_err(|_| at_byte(before, "an <item> larger than 4 GB"))?;
                        match item_of(&elem, before, keep_pingbacks)? {
                            Some((thread, comments)) => {
                                plan.comment_count += comments.len() as u64;
                                plan.threads.push(PlannedThread {
                                    thread,
                                    items: vec![Span { start: before, len }],
                                    loaded: Vec::new(),
                                });
                            }
                            None => plan.skip("WordPress item that is not a post or page", 1),
                        }
                        progress(end);
                    }
                    "wp:base_site_url" if depth == 2 => site = Some(elem.text.trim().to_owned()),
                    "link" if depth == 2 && site.is_none() => {
                        site = Some(elem.text.trim().to_owned())
                    }
                    _ => {}
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => {
                if depth > 0 {
                    return Err(at_byte(
                        r.buffer_position(),
                        "the file ends before </rss>: is it cut short?",
                    ));
                }
                if !seen_channel {
                    return Err(at_byte(0, "no <rss><channel>: not a WordPress export"));
                }
                break;
            }
            _ => {}
        }
    }
    progress(r.buffer_position());
    // WordPress comment ids count from 1 on every site: the site tells two blogs apart.
    plan.source = match site.filter(|s| !s.is_empty()) {
        Some(s) => format!("wordpress:{s}"),
        None => "wordpress".into(),
    };
    Ok(plan)
}

fn wp_time(s: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(s.trim(), &format)
        .ok()
        .map(|t| (t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Paragraphs and line breaks as WordPress shows them: comment text is stored with plain
/// newlines and gets its `<p>` and `<br>` only when displayed.
pub(crate) fn autop(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len() + 16);
    for block in text.split("\n\n") {
        let block = block.trim();
        if block.is_empty() {
            continue;
        }
        out.push_str("<p>");
        out.push_str(&block.replace('\n', "<br>\n"));
        out.push_str("</p>\n");
    }
    out
}

/// A thread and its comments from one `<item>`; `None` for items that are neither a post or
/// page nor commented on (attachments, menu items, ...).
fn item_of(
    e: &Elem,
    at: u64,
    keep_pingbacks: bool,
) -> Result<Option<(SourceThread, Vec<SourceComment>)>, ImportError> {
    let mut comments = Vec::new();
    for c in e.children.iter().filter(|c| c.name == "wp:comment") {
        comments.push(comment_of(c, at, keep_pingbacks)?);
    }
    let post_type = e.text_of("wp:post_type").unwrap_or_else(|| "post".into());
    let status = e.text_of("wp:status").unwrap_or_else(|| "publish".into());
    if comments.is_empty()
        && !(matches!(post_type.as_str(), "post" | "page") && status == "publish")
    {
        return Ok(None);
    }
    let id = e
        .text_of("wp:post_id")
        .ok_or_else(|| at_byte(at, "an <item> without <wp:post_id>"))?;
    let created_at = e
        .text_of("wp:post_date_gmt")
        .and_then(|d| wp_time(&d))
        .or_else(|| e.text_of("wp:post_date").and_then(|d| wp_time(&d)));
    Ok(Some((
        SourceThread {
            identifier: e.text_of("wp:post_name").or_else(|| Some(id.clone())),
            source_id: id,
            url: e.text_of("link"),
            title: e.text_of("title"),
            created_at,
            native: None,
        },
        comments,
    )))
}

fn comment_of(e: &Elem, at: u64, keep_pingbacks: bool) -> Result<SourceComment, ImportError> {
    let id = e
        .text_of("wp:comment_id")
        .ok_or_else(|| at_byte(at, "a <wp:comment> without <wp:comment_id>"))?;
    // "0000-00-00 00:00:00" marks a missing GMT date; the local date is then the best there is.
    let created_at = e
        .text_of("wp:comment_date_gmt")
        .and_then(|d| wp_time(&d))
        .or_else(|| e.text_of("wp:comment_date").and_then(|d| wp_time(&d)))
        .ok_or_else(|| at_byte(at, format!("comment {id} has no valid <wp:comment_date>")))?;
    let approved = e.text_of("wp:comment_approved").unwrap_or_default();
    let kind = e.text_of("wp:comment_type").unwrap_or_default();
    let fate = if matches!(kind.as_str(), "pingback" | "trackback") && !keep_pingbacks {
        Fate::Skip("pingback or trackback (keep them with --keep-pingbacks)")
    } else {
        match approved.as_str() {
            "1" | "approve" => Fate::Published,
            "0" | "hold" => Fate::Held,
            "spam" => Fate::Spam,
            "trash" | "post-trashed" => Fate::Deleted,
            other => {
                return Err(at_byte(
                    at,
                    format!(
                        "comment {id}: <wp:comment_approved> {other:?} is not 1, 0, spam or trash"
                    ),
                ));
            }
        }
    };
    Ok(SourceComment {
        parent: e.text_of("wp:comment_parent").filter(|p| p != "0"),
        source_id: id,
        author_name: e
            .text_of("wp:comment_author")
            .unwrap_or_else(|| "Anonymous".into()),
        author_email: e.text_of("wp:comment_author_email"),
        author_url: e.text_of("wp:comment_author_url"),
        title: None,
        body: Body::Html(autop(
            &e.child("wp:comment_content")
                .map(|c| c.text.clone())
                .unwrap_or_default(),
        )),
        fate,
        ip: e.text_of("wp:comment_author_IP"),
        created_at,
        native: None,
    })
}

/// Reads one `<item>` again from its bytes (the second pass): its comments.
pub(crate) fn parse_item_fragment(
    bytes: &[u8],
    base: u64,
    keep_pingbacks: bool,
) -> Result<Vec<SourceComment>, ImportError> {
    let mut r = reader(bytes);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r
            .read_event_into(&mut buf)
            .map_err(|e| xml_error(&r, base, e))?
        {
            Event::Start(s) => {
                let s = s.into_owned();
                let mut inner = Vec::new();
                let elem = read_elem(&mut r, &s, false, &mut inner, base)?;
                return Ok(item_of(&elem, base, keep_pingbacks)?
                    .map(|(_, c)| c)
                    .unwrap_or_default());
            }
            Event::Eof => return Err(at_byte(base, "the <item> is gone on the second read")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_make_paragraphs_and_newlines_breaks() {
        assert_eq!(
            autop("one\ntwo\r\n\r\nthree"),
            "<p>one<br>\ntwo</p>\n<p>three</p>\n"
        );
    }

    #[test]
    fn wordpress_times_are_utc() {
        assert_eq!(wp_time("1970-01-01 00:00:01"), Some(1000));
        assert_eq!(wp_time("0000-00-00 00:00:00"), None);
    }
}
