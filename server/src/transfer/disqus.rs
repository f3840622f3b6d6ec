//! Disqus XML exports: `<thread dsq:id>` elements (with `<link>`, `<id>`, `<title>`) and
//! `<post dsq:id>` elements that name their thread and, for replies, their `<parent>`.
//!
//! Real exports list every thread Disqus ever saw (most without posts) before the posts, and
//! may hold posts of threads that are not in the file; posts of one thread are scattered, so
//! the first pass remembers each post's byte range under its thread.

use super::xml::{Elem, boolean, read_elem, reader, xml_error};
use super::{
    Body, Fate, ImportError, Plan, PlannedThread, SourceComment, SourceThread, Span, at_byte,
    io_error, parse_rfc3339,
};
use quick_xml::events::Event;
use std::collections::HashMap;
use std::path::Path;

/// A post and the thread it belongs to.
pub(crate) struct Post {
    pub thread: String,
    pub comment: SourceComment,
}

pub(crate) fn scan(path: &Path, progress: &dyn Fn(u64)) -> Result<Plan, ImportError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut r = reader(std::io::BufReader::with_capacity(1 << 16, file));
    let mut buf = Vec::new();
    let mut plan = Plan {
        source: "disqus".into(),
        ..Default::default()
    };
    let mut threads: HashMap<String, usize> = HashMap::new();
    // Threads deleted at Disqus: neither they nor their posts are imported.
    let mut deleted: std::collections::HashSet<String> = Default::default();
    let mut posts: Vec<(String, Span)> = Vec::new();
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut n = 0u64;
    loop {
        let before = r.buffer_position();
        buf.clear();
        let event = r
            .read_event_into(&mut buf)
            .map_err(|e| xml_error(&r, 0, e))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(s) if depth == 0 => {
                if s.name().as_ref() != b"disqus" {
                    return Err(at_byte(
                        before,
                        format!(
                            "expected a Disqus export (<disqus>), found <{}>",
                            String::from_utf8_lossy(s.name().as_ref())
                        ),
                    ));
                }
                seen_root = true;
                depth = 1;
            }
            Event::Start(s) | Event::Empty(s) if depth == 1 => {
                let s = s.into_owned();
                let mut inner = Vec::new();
                let elem = read_elem(&mut r, &s, empty, &mut inner, 0)?;
                let end = r.buffer_position();
                match elem.name.as_str() {
                    "thread" => {
                        let t = thread_of(&elem, before)?;
                        if boolean(&elem, "isDeleted", before)? {
                            plan.skip("thread deleted at Disqus", 1);
                            deleted.insert(t.source_id);
                        } else if !threads.contains_key(&t.source_id) {
                            threads.insert(t.source_id.clone(), plan.threads.len());
                            plan.threads.push(PlannedThread {
                                thread: t,
                                ..Default::default()
                            });
                        }
                    }
                    "post" => {
                        let post = post_of(&elem, before)?;
                        let len = u32::try_from(end - before)
                            .map_err(|_| at_byte(before, "a <post> larger than 4 GB"))?;
                        posts.push((post.thread, Span { start: before, len }));
                    }
                    _ => {}
                }
                n += 1;
                if n.is_multiple_of(512) {
                    progress(end);
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(at_byte(before, "text outside the <disqus> element"));
            }
            Event::Eof => {
                if depth > 0 {
                    return Err(at_byte(
                        r.buffer_position(),
                        "the file ends before </disqus>: is it cut short?",
                    ));
                }
                if !seen_root {
                    return Err(at_byte(0, "no <disqus> element: not a Disqus export"));
                }
                break;
            }
            _ => {}
        }
    }
    progress(r.buffer_position());
    for (thread, span) in posts {
        match threads.get(&thread) {
            Some(&i) => plan.threads[i].items.push(span),
            None if deleted.contains(&thread) => plan.skip("post of a deleted thread", 1),
            None => plan.skip("post of a thread that is not in the file", 1),
        }
        plan.comment_count += 1;
    }
    Ok(plan)
}

fn dsq_id(e: &Elem) -> Option<&str> {
    e.attr("dsq:id").map(str::trim).filter(|s| !s.is_empty())
}

fn thread_of(e: &Elem, at: u64) -> Result<SourceThread, ImportError> {
    let id = dsq_id(e).ok_or_else(|| at_byte(at, "a <thread> without dsq:id"))?;
    let created_at = match e.text_of("createdAt") {
        None => None,
        Some(s) => Some(
            parse_rfc3339(&s)
                .ok_or_else(|| at_byte(at, format!("<createdAt> {s:?} is not an ISO 8601 time")))?,
        ),
    };
    Ok(SourceThread {
        source_id: id.to_owned(),
        url: e.text_of("link"),
        identifier: e.text_of("id"),
        title: e.text_of("title"),
        created_at,
        native: None,
    })
}

fn post_of(e: &Elem, at: u64) -> Result<Post, ImportError> {
    let id = dsq_id(e).ok_or_else(|| at_byte(at, "a <post> without dsq:id"))?;
    let thread = e
        .child("thread")
        .and_then(dsq_id)
        .ok_or_else(|| at_byte(at, format!("post {id} names no <thread dsq:id>")))?;
    let created = e
        .text_of("createdAt")
        .ok_or_else(|| at_byte(at, format!("post {id} has no <createdAt>")))?;
    let created_at = parse_rfc3339(&created).ok_or_else(|| {
        at_byte(
            at,
            format!("post {id}: <createdAt> {created:?} is not an ISO 8601 time"),
        )
    })?;
    let deleted = boolean(e, "isDeleted", at)?;
    let spam = boolean(e, "isSpam", at)?;
    // Not in every export: pending posts carry <isApproved>false</isApproved> when present.
    let pending = e.child("isApproved").is_some() && !boolean(e, "isApproved", at)?;
    let fate = if deleted {
        Fate::Deleted
    } else if spam {
        Fate::Spam
    } else if pending {
        Fate::Held
    } else {
        Fate::Published
    };
    let author = e.child("author");
    let field = |name: &str| author.and_then(|a| a.text_of(name));
    let name = field("name")
        .or_else(|| field("username"))
        .unwrap_or_else(|| "Anonymous".into());
    Ok(Post {
        thread: thread.to_owned(),
        comment: SourceComment {
            source_id: id.to_owned(),
            parent: e.child("parent").and_then(dsq_id).map(str::to_owned),
            author_name: name,
            author_email: field("email"),
            author_url: field("link").or_else(|| field("url")),
            title: None,
            body: Body::Html(
                e.child("message")
                    .map(|m| m.text.clone())
                    .unwrap_or_default(),
            ),
            fate,
            ip: e.text_of("ipAddress"),
            created_at,
            native: None,
        },
    })
}

/// Parses one `<post>` again from its bytes (the second pass).
pub(crate) fn parse_post_fragment(bytes: &[u8], base: u64) -> Result<Post, ImportError> {
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
                return post_of(&elem, base);
            }
            Event::Eof => return Err(at_byte(base, "the <post> is gone on the second read")),
            _ => {}
        }
    }
}
