//! The light client of a reader's thread page (`/t/{key}`, `/embed/t/{key}`).
//!
//! The server renders the whole thread and a working form as HTML (it reads and posts
//! without any script). This client only enhances that markup in place: posting without a
//! reload, live preview, replying inline, collapsing, "show more", live updates over the
//! WebSocket. It finds everything by the ids and classes the server's renderer
//! (`app::components`) gives the page, and builds new comments with the same markup.
//! Staff never get it: their pages hydrate the whole Leptos app instead.

mod dom;
mod form;
mod live;
mod tree;

use dom::{document, get_i64};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element, Event};

/// The thread page as this client knows it; one per page, shared by the event handlers.
pub(crate) struct Page {
    doc: Document,
    key: String,
    /// `section.thread`: the count, the tree, "show more", the notice and the form.
    section: Element,
    /// `.comment-tree`: the top-level comments.
    tree: Element,
    /// Replies deeper than this keep the indent of this level.
    max_depth: i64,
    /// The thread takes comments (reply links are shown).
    open: bool,
    /// Framed on another site (`/embed/...`): the author token lives in storage.
    embedded: bool,
    /// The thread's published comments, as far as this page knows.
    count: Cell<i64>,
    /// The newest live event this page reflects: where a reconnect resumes.
    cursor: Cell<i64>,
    /// Comments that arrived live while the reader was scrolled away, oldest first.
    unseen: RefCell<Vec<i64>>,
    /// A "show more" request is under way.
    loading_more: Cell<bool>,
    form: Option<form::Form>,
}

/// Runs when the module has loaded: wires the page, then marks it ready
/// (`body[data-hydrated]`, the mark tests and the speed measurement wait for).
#[wasm_bindgen(start)]
pub fn start() {
    let Some(doc) = document() else { return };
    wire_sign_out(&doc);
    if let Some(page) = Page::find(&doc) {
        let page = Rc::new(page);
        wire_clicks(&page);
        form::wire(&page);
        live::connect(page.clone());
    }
    if let Some(body) = doc.body() {
        let _ = body.set_attribute("data-hydrated", "true");
    }
}

impl Page {
    /// Reads the page's state from the server-rendered thread section.
    fn find(doc: &Document) -> Option<Page> {
        let section = doc.query_selector("section.thread[data-thread]").ok()??;
        let attr = |name: &str| section.get_attribute(name).unwrap_or_default();
        let number = |name: &str| attr(name).parse::<i64>().ok();
        let tree = dom::find(&section, ".comment-tree")?;
        let embedded = doc
            .location()
            .and_then(|l| l.pathname().ok())
            .is_some_and(|p| p.starts_with("/embed/"));
        let form = doc.get_element_by_id("comment-form").map(form::Form::new);
        Some(Page {
            doc: doc.clone(),
            key: attr("data-thread"),
            open: attr("data-open") == "true",
            max_depth: number("data-max-depth").unwrap_or(8),
            count: Cell::new(number("data-count").unwrap_or(0)),
            cursor: Cell::new(number("data-last-event").unwrap_or(0)),
            section,
            tree,
            embedded,
            unseen: RefCell::new(Vec::new()),
            loading_more: Cell::new(false),
            form,
        })
    }

    /// The thread key as a URL path segment.
    fn key_path(&self) -> String {
        dom::encode(&self.key)
    }

    /// Changes the published count and its label.
    fn add_count(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        self.set_count(self.count.get() + delta);
    }

    fn set_count(&self, n: i64) {
        self.count.set(n);
        if let Some(label) = dom::find(&self.section, ".comment-count") {
            let text = match n {
                0 => "No comments yet".to_owned(),
                1 => "1 comment".to_owned(),
                n => format!("{n} comments"),
            };
            label.set_text_content(Some(&text));
        }
    }

    /// Shows a notice above the form (a held comment, a server notice); `None` removes it.
    fn notice(&self, text: Option<&str>) {
        let existing = dom::child_with_class(&self.section, "notice");
        match (existing, text) {
            (Some(p), Some(t)) => p.set_text_content(Some(t)),
            (Some(p), None) => p.remove(),
            (None, Some(t)) => {
                let Some(p) = dom::text_el(&self.doc, "p", "notice", t) else {
                    return;
                };
                let _ = p.set_attribute("role", "status");
                // Where the thread's form sits when not replying inline: the end.
                let before = self
                    .form
                    .as_ref()
                    .map(|f| f.el.clone())
                    .or_else(|| dom::child_with_class(&self.section, "closed-notice"))
                    .filter(|e| e.parent_element().as_ref() == Some(&self.section));
                let _ = self
                    .section
                    .insert_before(&p, before.as_ref().map(|e| e.as_ref()));
            }
            (None, None) => {}
        }
    }

    /// The author token a framed page keeps in its own storage (third-party cookies may be
    /// blocked there); never used outside a frame.
    fn author_token(&self) -> Option<String> {
        if !self.embedded {
            return None;
        }
        let storage = dom::window()?.local_storage().ok()??;
        storage
            .get_item(AUTHOR_KEY)
            .ok()?
            .filter(|t| valid_author_token(t))
    }

    fn store_author_token(&self, token: &str) {
        if self.embedded
            && valid_author_token(token)
            && let Some(Ok(Some(storage))) = dom::window().map(|w| w.local_storage())
        {
            let _ = storage.set_item(AUTHOR_KEY, token);
        }
    }
}

/// Where a framed page keeps its author token (the same key the full client uses).
const AUTHOR_KEY: &str = "moderato_author";
/// The request and response header that carries it.
const AUTHOR_HEADER: &str = "x-moderato-author";

/// Author tokens are the server's random URL-safe strings; anything else is ignored.
fn valid_author_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One click handler for the whole thread: comments added later need no wiring of their own.
fn wire_clicks(page: &Rc<Page>) {
    let p = page.clone();
    let on_click = Closure::<dyn FnMut(Event)>::new(move |ev: Event| {
        let Some(target) = ev.target().and_then(|t| t.dyn_into::<Element>().ok()) else {
            return;
        };
        let hit = |sel: &str| target.closest(sel).ok().flatten();
        if let Some(button) = hit("button.toggle") {
            tree::toggle(&p, &button);
        } else if let Some(link) = hit("a.reply-link") {
            if let (Some(form), Some(article)) =
                (&p.form, link.closest("article.comment").ok().flatten())
            {
                ev.prevent_default();
                form.reply_to(&p, &article);
            }
        } else if hit("a.cancel-reply").is_some() {
            if let Some(form) = &p.form {
                ev.prevent_default();
                form.to_thread(&p);
            }
        } else if let Some(link) = hit("a.show-more") {
            ev.prevent_default();
            tree::show_more(p.clone(), link);
        } else if hit("button.new-comments").is_some() {
            live::jump_to_unseen(&p);
        }
    });
    let _ = page
        .section
        .add_event_listener_with_callback("click", on_click.as_ref().unchecked_ref());
    // The page lives as long as the document: so does its handler.
    on_click.forget();
}

/// A signed-in user who is not staff reads with this client too: the header's "Sign out".
fn wire_sign_out(doc: &Document) {
    let Some(button) = doc.query_selector("nav.session button").ok().flatten() else {
        return;
    };
    let on_click = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
        wasm_bindgen_futures::spawn_local(async {
            let _ = dom::fetch("DELETE", "/api/session", Some("null".into()), &[], None).await;
            if let Some(loc) = document().and_then(|d| d.location()) {
                let _ = loc.set_href("/");
            }
        });
    });
    let _ = button.add_event_listener_with_callback("click", on_click.as_ref().unchecked_ref());
    on_click.forget();
}

/// A comment as the JSON API and the live events carry it (public fields only).
pub(crate) struct Comment {
    id: i64,
    parent_id: Option<i64>,
    depth: i64,
    author_name: String,
    author_url: Option<String>,
    title: Option<String>,
    body_html: String,
    created_at: String,
}

impl Comment {
    fn from_json(v: &JsValue) -> Option<Comment> {
        use dom::get_str;
        Some(Comment {
            id: get_i64(v, "id")?,
            parent_id: get_i64(v, "parent_id"),
            depth: get_i64(v, "depth").unwrap_or(0),
            author_name: get_str(v, "author_name").unwrap_or_default(),
            author_url: get_str(v, "author_url"),
            title: get_str(v, "title"),
            body_html: get_str(v, "body_html").unwrap_or_default(),
            created_at: get_str(v, "created_at").unwrap_or_default(),
        })
    }
}
