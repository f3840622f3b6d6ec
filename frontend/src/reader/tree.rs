//! The comment tree: drawing a comment as the server does, placing it, hiding and showing it
//! again, collapsing a subtree, and loading the next page ("show more").

use super::dom::{self, child_with_class, el, get, get_i64, set_class, text_el};
use super::{Comment, Page};
use std::rc::Rc;
use web_sys::Element;

/// The `rel` of links in user content, as the server renders it.
const UGC_REL: &str = "nofollow ugc noopener noreferrer";

/// "2026-11-21 10:00 UTC", as the server's `display_date` shows a time.
fn display_date(rfc3339: &str) -> String {
    let d = js_sys::Date::new(&rfc3339.into());
    if d.get_time().is_nan() {
        return rfc3339.to_owned();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        d.get_utc_full_year(),
        d.get_utc_month() + 1,
        d.get_utc_date(),
        d.get_utc_hours(),
        d.get_utc_minutes()
    )
}

/// A comment of the tree, with the markup `app::components::tree::CommentNode` gives a
/// reader: toggle, author, permalink, title, text, reply link, replies. Names and titles
/// go in as text; the body is the server's sanitised HTML.
fn node(page: &Page, c: &Comment, awaiting: bool) -> Option<Element> {
    let doc = &page.doc;
    let article = el(doc, "article", "comment")?;
    article.set_id(&format!("c{}", c.id));
    let _ = article.set_attribute("data-id", &c.id.to_string());
    let _ = article.set_attribute("data-depth", &c.depth.to_string());

    let header = el(doc, "header", "comment-meta")?;
    let toggle = text_el(doc, "button", "toggle", "[–]")?;
    let _ = toggle.set_attribute("type", "button");
    let _ = toggle.set_attribute("title", "Collapse or expand this comment and its replies");
    let _ = toggle.set_attribute("aria-expanded", "true");
    let _ = header.append_child(&toggle);
    let _ = header.append_with_str_1(" ");
    // The server accepts only http(s) addresses; anything else is not made a link.
    let url = c
        .author_url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    let author = match url {
        Some(url) => {
            let a = text_el(doc, "a", "author", &c.author_name)?;
            let _ = a.set_attribute("href", url);
            let _ = a.set_attribute("rel", UGC_REL);
            a
        }
        None => text_el(doc, "span", "author", &c.author_name)?,
    };
    let _ = header.append_child(&author);
    let _ = header.append_with_str_1(" ");
    let permalink = el(doc, "a", "permalink")?;
    let _ = permalink.set_attribute("href", &format!("#c{}", c.id));
    let time = text_el(doc, "time", "", &display_date(&c.created_at))?;
    let _ = time.set_attribute("datetime", &c.created_at);
    let _ = permalink.append_child(&time);
    let _ = header.append_child(&permalink);
    if awaiting {
        let mark = text_el(doc, "span", "awaiting", "(awaiting moderation)")?;
        let _ = header.append_child(&mark);
    }
    let _ = article.append_child(&header);

    let body = el(doc, "div", "comment-body")?;
    if let Some(title) = &c.title {
        let title = text_el(doc, "h3", "comment-title", title)?;
        let _ = body.append_child(&title);
    }
    let text = el(doc, "div", "comment-text")?;
    text.set_inner_html(&c.body_html);
    let _ = body.append_child(&text);
    if page.open {
        let reply = text_el(doc, "a", "reply-link", "reply")?;
        let _ = reply.set_attribute("href", &format!("?reply={}#comment-form", c.id));
        let _ = body.append_child(&reply);
    }
    let _ = article.append_child(&body);
    // Past max_depth, replies keep the indent of the last level instead of narrowing on.
    let flat = c.depth + 1 >= page.max_depth;
    let replies = el(doc, "div", if flat { "replies flat" } else { "replies" })?;
    let _ = article.append_child(&replies);
    Some(article)
}

fn article(page: &Page, id: i64) -> Option<Element> {
    page.doc.get_element_by_id(&format!("c{id}"))
}

fn depth(e: &Element) -> i64 {
    e.get_attribute("data-depth")
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Whether a shown comment counts as published here (not its author's held one, not hidden).
fn counts(e: &Element) -> bool {
    !e.class_list().contains("gone") && child_with_class_deep_awaiting(e).is_none()
}

fn child_with_class_deep_awaiting(e: &Element) -> Option<Element> {
    child_with_class(e, "comment-meta").and_then(|h| child_with_class(&h, "awaiting"))
}

/// A comment the server says is public: shown again in place if the page has it, else
/// placed. Returns the element when it appeared.
pub(crate) fn show(page: &Page, c: &Comment) -> Option<Element> {
    match article(page, c.id) {
        Some(existing) => reveal(page, &existing),
        None => place(page, c, false),
    }
}

/// Puts a new comment where it belongs, unless the page has it (a replayed event). Returns
/// the element when it was new, and counts it unless it awaits moderation.
pub(crate) fn place(page: &Page, c: &Comment, awaiting: bool) -> Option<Element> {
    if article(page, c.id).is_some() {
        return None;
    }
    // Under its parent, or (past the depth cap) under the nearest ancestor one level up; a
    // reply whose parent the page lacks goes to the top level.
    let mut under = c.parent_id.and_then(|p| article(page, p));
    while let Some(p) = &under {
        if c.depth == 0 || depth(p) < c.depth {
            break;
        }
        under = p
            .parent_element()
            .and_then(|list| list.closest("article.comment").ok().flatten());
    }
    let list = match &under {
        Some(p) => child_with_class(p, "replies")?,
        None => page.tree.clone(),
    };
    let e = node(page, c, awaiting)?;
    let _ = list.append_child(&e);
    relabel_collapsed(&e);
    if !awaiting {
        page.add_count(1);
    }
    Some(e)
}

/// A comment the page has became public: shown again in place, no longer "awaiting".
fn reveal(page: &Page, e: &Element) -> Option<Element> {
    let was_counted = counts(e);
    let was_gone = e.class_list().contains("gone");
    set_class(e, "gone", false);
    relabel_collapsed(e);
    if let Some(mark) = child_with_class_deep_awaiting(e) {
        mark.remove();
    }
    if !was_counted {
        page.add_count(1);
    }
    was_gone.then(|| e.clone())
}

/// A comment stopped being public: hidden in place, no longer counted.
pub(crate) fn hide(page: &Page, id: i64) {
    if let Some(e) = article(page, id)
        && !e.class_list().contains("gone")
    {
        let counted = counts(&e);
        set_class(&e, "gone", true);
        relabel_collapsed(&e);
        if counted {
            page.add_count(-1);
        }
    }
}

/// Takes in comments given in tree order (a page, a refetch) with the server's count;
/// returns those that appeared.
pub(crate) fn load(
    page: &Page,
    comments: &wasm_bindgen::JsValue,
    published: Option<i64>,
) -> Vec<Element> {
    if !js_sys::Array::is_array(comments) {
        return Vec::new();
    }
    let list: js_sys::Array = comments.clone().into();
    let appeared = list
        .iter()
        .filter_map(|v| Comment::from_json(&v))
        .filter_map(|c| show(page, &c))
        .collect();
    if let Some(n) = published {
        page.set_count(n);
    }
    appeared
}

/// Collapses or expands a comment's text and replies.
pub(crate) fn toggle(_page: &Page, button: &Element) {
    let Some(article) = button.closest("article.comment").ok().flatten() else {
        return;
    };
    let collapsed = !article.class_list().contains("collapsed");
    set_class(&article, "collapsed", collapsed);
    for part in ["comment-body", "replies"] {
        if let Some(e) = child_with_class(&article, part) {
            set_class(&e, "hidden", collapsed);
        }
    }
    let _ = button.set_attribute("aria-expanded", if collapsed { "false" } else { "true" });
    let label = if collapsed {
        collapsed_label(&article)
    } else {
        "[–]".to_owned()
    };
    button.set_text_content(Some(&label));
}

/// A collapsed comment's toggle label: how many replies it hides, at any depth, among those
/// shown.
fn collapsed_label(article: &Element) -> String {
    let n = child_with_class(article, "replies")
        .and_then(|r| r.query_selector_all("article.comment:not(.gone)").ok())
        .map_or(0, |l| l.length());
    match n {
        0 => "[+]".to_owned(),
        1 => "[+] 1 reply".to_owned(),
        n => format!("[+] {n} replies"),
    }
}

/// A reply under `e` appeared, or was hidden or shown again: every collapsed comment above it
/// counts its hidden replies anew, as the whole app's label does.
fn relabel_collapsed(e: &Element) {
    let above = |e: &Element| {
        e.parent_element()
            .and_then(|p| p.closest("article.comment.collapsed").ok().flatten())
    };
    let mut at = above(e);
    while let Some(article) = at {
        if let Ok(Some(button)) = article.query_selector(":scope > header > button.toggle") {
            button.set_text_content(Some(&collapsed_label(&article)));
        }
        at = above(&article);
    }
}

/// Loads the next page of top-level comments (and the rest of a cut-off subtree) into place.
pub(crate) fn show_more(page: Rc<Page>, link: Element) {
    if page.loading_more.replace(true) {
        return;
    }
    // The link's own `?after=` cursor, already encoded by the server.
    let href = link.get_attribute("href").unwrap_or_default();
    let Some(cursor) = href.split_once("after=").map(|(_, c)| c.to_owned()) else {
        page.loading_more.set(false);
        return;
    };
    let label = link.text_content().unwrap_or_default();
    link.set_text_content(Some("Loading…"));
    wasm_bindgen_futures::spawn_local(async move {
        let url = format!("/api/threads/{}?after={cursor}", page.key_path());
        match dom::fetch("GET", &url, None, &[], None).await {
            Ok(r) if r.status == 200 => {
                let published = get_i64(&get(&r.body, "thread"), "comment_count");
                load(&page, &get(&r.body, "comments"), published);
                match dom::get_str(&r.body, "next") {
                    Some(next) => {
                        let _ =
                            link.set_attribute("href", &format!("?after={}", dom::encode(&next)));
                        let text = match get_i64(&r.body, "remaining_top_level").unwrap_or(0) {
                            0 => "Show more replies".to_owned(),
                            n => format!("Show more comments ({n} more threads)"),
                        };
                        link.set_text_content(Some(&text));
                    }
                    None => link.remove(),
                }
            }
            _ => link.set_text_content(Some(&label)),
        }
        page.loading_more.set(false);
    });
}
