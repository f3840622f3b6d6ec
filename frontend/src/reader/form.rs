//! The comment form: a fresh form token, live preview, posting without a reload, field
//! errors, replying inline.
//!
//! The fields are the server-rendered inputs themselves, read when needed: whatever was typed
//! before this client loaded is simply there, and nothing is copied that could drift. The
//! token embedded in the page may be stale (a cached page, a tab left open), so one is
//! fetched when the form is first used, after each post, and when a post says it was spent.

use super::dom::{self, Json, child_with_class, el, find, get, get_bool, get_str, text_el};
use super::{AUTHOR_HEADER, Comment, Page, tree};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Element, Event, HtmlInputElement, HtmlTextAreaElement};

/// Milliseconds of quiet typing before the preview is refreshed.
const PREVIEW_DEBOUNCE_MS: i32 = 250;

/// Fields shown beside their own input; other errors ("form", "__all__") go above the buttons.
const FIELDS: [&str; 6] = ["name", "email", "notify", "url", "title", "body"];

pub(crate) struct Form {
    pub(crate) el: Element,
    /// The hidden token input holds a token fetched by this page, not yet spent.
    token_fresh: Cell<bool>,
    token_pending: Cell<bool>,
    busy: Cell<bool>,
    /// Bumped on each keystroke, so a slow preview answer never overwrites a newer one.
    generation: Cell<u32>,
    max_length: usize,
}

impl Form {
    pub(crate) fn new(el: Element) -> Form {
        // "0 / 5000": the limit is the counter's second number.
        let max_length = find(&el, ".counter")
            .and_then(|c| c.text_content())
            .and_then(|t| t.rsplit('/').next().and_then(|n| n.trim().parse().ok()))
            .unwrap_or(5000);
        Form {
            el,
            token_fresh: Cell::new(false),
            token_pending: Cell::new(false),
            busy: Cell::new(false),
            generation: Cell::new(0),
            max_length,
        }
    }

    fn input(&self, name: &str) -> Option<HtmlInputElement> {
        find(&self.el, &format!("input[name={name}]"))?
            .dyn_into()
            .ok()
    }

    fn body(&self) -> Option<HtmlTextAreaElement> {
        find(&self.el, "textarea[name=body]")?.dyn_into().ok()
    }

    fn value(&self, name: &str) -> String {
        if name == "body" {
            return self.body().map(|b| b.value()).unwrap_or_default();
        }
        self.input(name).map(|i| i.value()).unwrap_or_default()
    }

    fn set_value(&self, name: &str, value: &str) {
        if name == "body" {
            if let Some(b) = self.body() {
                b.set_value(value);
            }
        } else if let Some(i) = self.input(name) {
            i.set_value(value);
        }
    }

    /// The request the form's fields make: blank optional fields are left out.
    fn request(&self, preview: bool) -> String {
        let mut json = Json::new()
            .set("name", self.value("name"))
            .set("body", self.value("body"))
            .set("preview", preview);
        for field in ["email", "url", "title", "honeypot", "form_token"] {
            let v = self.value(field);
            if !v.trim().is_empty() {
                json = json.set(field, v);
            }
        }
        if let Ok(parent) = self.value("parent_id").parse::<i64>() {
            json = json.set("parent_id", parent as f64);
        }
        // Only with an address to mail (the box is hidden without one).
        let notify = self.input("notify").is_some_and(|n| n.checked());
        if notify && !self.value("email").trim().is_empty() {
            json = json.set("notify", true);
        }
        json.text()
    }

    /// Asks for a new form token (in the background) unless one is fresh or on its way.
    fn refresh_token(&self, page: &Rc<Page>) {
        if self.token_fresh.get() || self.token_pending.replace(true) {
            return;
        }
        let page = page.clone();
        wasm_bindgen_futures::spawn_local(async move {
            fetch_token(&page).await;
            if let Some(f) = &page.form {
                f.token_pending.set(false);
            }
        });
    }

    /// Moves the form under a comment, to reply to it.
    pub(crate) fn reply_to(&self, page: &Page, article: &Element) {
        let Some(body) = child_with_class(article, "comment-body") else {
            return;
        };
        let _ = body.append_child(&self.el);
        self.set_value(
            "parent_id",
            article.get_attribute("data-id").as_deref().unwrap_or(""),
        );
        self.heading("Reply");
        if find(&self.el, ".cancel-reply").is_none()
            && let (Some(actions), Some(cancel)) = (
                find(&self.el, ".actions"),
                text_el(&page.doc, "a", "cancel-reply", "cancel reply"),
            )
        {
            let _ = cancel.set_attribute("href", "#comment-form");
            let _ = actions.append_child(&cancel);
        }
    }

    /// Puts the form back under the thread.
    pub(crate) fn to_thread(&self, page: &Page) {
        let _ = page.section.append_child(&self.el);
        self.set_value("parent_id", "");
        self.heading("Leave a comment");
        if let Some(cancel) = find(&self.el, ".cancel-reply") {
            cancel.remove();
        }
    }

    fn heading(&self, text: &str) {
        if let Some(h) = find(&self.el, "h3") {
            h.set_text_content(Some(text));
        }
    }

    fn update_counter(&self) {
        if let Some(counter) = find(&self.el, ".counter") {
            let n = self.value("body").chars().count();
            counter.set_text_content(Some(&format!("{n} / {}", self.max_length)));
            dom::set_class(&counter, "over", n > self.max_length);
        }
    }

    /// Where messages that belong to no field go: above the preview and the buttons.
    fn general_spot(&self) -> Option<Element> {
        find(&self.el, ".comment-preview").or_else(|| find(&self.el, ".actions"))
    }

    /// Shows the server's messages, each beside its field; clears the old ones.
    fn show_errors(&self, page: &Page, errors: &JsValue) {
        self.clear_errors();
        if !errors.is_object() {
            return;
        }
        let keys = js_sys::Object::keys(errors.unchecked_ref::<js_sys::Object>());
        for key in keys.iter().filter_map(|k| k.as_string()) {
            let Some(msg) = get_str(errors, &key) else {
                continue;
            };
            let Some(p) = text_el(&page.doc, "p", "field-error", &msg) else {
                continue;
            };
            let _ = p.set_attribute("data-field", &key);
            let _ = p.set_attribute("role", "alert");
            let field = FIELDS
                .contains(&key.as_str())
                .then(|| find(&self.el, &format!("[name={key}]")))
                .flatten()
                .and_then(|input| input.closest(".field").ok().flatten());
            match field {
                Some(f) => {
                    let _ = f.append_child(&p);
                }
                None => {
                    if let Some(spot) = self.general_spot() {
                        let _ = spot.before_with_node_1(&p);
                    }
                }
            }
        }
    }

    fn show_error(&self, page: &Page, field: &str, msg: &str) {
        self.show_errors(page, &Json::new().set(field, msg).into_value());
    }

    fn clear_errors(&self) {
        if let Ok(list) = self.el.query_selector_all(".field-error") {
            for i in 0..list.length() {
                if let Some(e) = list.item(i).and_then(|n| n.dyn_into::<Element>().ok()) {
                    e.remove();
                }
            }
        }
    }

    /// Shows the server's rendering of the text; empty removes the preview.
    fn set_preview(&self, page: &Page, html: &str) {
        let existing = find(&self.el, ".comment-preview");
        if html.is_empty() {
            if let Some(e) = existing {
                e.remove();
            }
            return;
        }
        let section = match existing {
            Some(s) => s,
            None => {
                let (Some(s), Some(h), Some(content), Some(actions)) = (
                    el(&page.doc, "section", "comment-preview"),
                    text_el(&page.doc, "h4", "", "Preview"),
                    el(&page.doc, "div", "preview-content"),
                    find(&self.el, ".actions"),
                ) else {
                    return;
                };
                let _ = s.set_attribute("aria-live", "polite");
                let _ = s.append_child(&h);
                let _ = s.append_child(&content);
                // Below the button, as the full app has it: a preview that appears while
                // the reader types never moves the button from under their pointer.
                let _ = actions.after_with_node_1(&s);
                s
            }
        };
        if let Some(content) = find(&section, ".preview-content") {
            content.set_inner_html(html);
        }
    }

    fn set_busy(&self, busy: bool) {
        self.busy.set(busy);
        if let Some(button) = find(&self.el, "button.post") {
            if let Some(b) = button.dyn_ref::<web_sys::HtmlButtonElement>() {
                b.set_disabled(busy);
            }
            button.set_text_content(Some(if busy { "Posting…" } else { "Post comment" }));
        }
    }
}

/// Fetches a form token into the hidden field; false when none could be had.
async fn fetch_token(page: &Page) -> bool {
    let Some(form) = &page.form else { return false };
    let url = format!("/api/threads/{}/form", page.key_path());
    match dom::fetch("GET", &url, None, &[], None).await {
        Ok(r) if r.status == 200 => match get_str(&r.body, "token") {
            Some(token) => {
                form.set_value("form_token", &token);
                form.token_fresh.set(true);
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Posts the form's fields (as a preview or for real).
async fn post(page: &Page, preview: bool) -> Result<JsValue, String> {
    let Some(form) = &page.form else {
        return Err("no form".into());
    };
    let url = format!("/api/threads/{}/comments", page.key_path());
    let headers: Vec<(&str, String)> = page
        .author_token()
        .map(|t| vec![(AUTHOR_HEADER, t)])
        .unwrap_or_default();
    let r = dom::fetch(
        "POST",
        &url,
        Some(form.request(preview)),
        &headers,
        Some(AUTHOR_HEADER),
    )
    .await?;
    if let Some(token) = &r.header {
        page.store_author_token(token);
    }
    if r.status == 429 {
        return Ok(Json::new()
            .set("success", false)
            .set(
                "errors",
                Json::new()
                    .set(
                        "__all__",
                        "You are posting too fast; wait a minute and try again.",
                    )
                    .into_value(),
            )
            .into_value());
    }
    if r.body.is_null() || r.body.is_undefined() {
        return Err(format!("bad response ({})", r.status));
    }
    Ok(r.body)
}

/// Refreshes the preview after a quiet moment; a newer keystroke makes this one stale.
fn schedule_preview(page: Rc<Page>) {
    let Some(form) = &page.form else { return };
    let generation = form.generation.get().wrapping_add(1);
    form.generation.set(generation);
    wasm_bindgen_futures::spawn_local(async move {
        dom::sleep(PREVIEW_DEBOUNCE_MS).await;
        let Some(form) = &page.form else { return };
        if form.generation.get() != generation {
            return;
        }
        if form.value("body").trim().is_empty() {
            form.set_preview(&page, "");
            return;
        }
        let Ok(resp) = post(&page, true).await else {
            return;
        };
        if form.generation.get() != generation {
            return;
        }
        match get_str(&resp, "html") {
            Some(html) if get_bool(&resp, "success") => {
                form.set_preview(&page, &html);
                if let Some(e) = find(&form.el, ".field-error[data-field=body]") {
                    e.remove();
                }
            }
            _ => {
                if let Some(msg) = get_str(&get(&resp, "errors"), "body") {
                    form.show_error(&page, "body", &msg);
                }
            }
        }
    });
}

/// Posts the comment; on success it joins the tree, highlighted and in view.
fn submit(page: Rc<Page>) {
    let Some(form) = &page.form else { return };
    if form.busy.get() {
        return;
    }
    form.set_busy(true);
    wasm_bindgen_futures::spawn_local(async move {
        let Some(form) = &page.form else { return };
        if !form.token_fresh.get() {
            fetch_token(&page).await;
        }
        let mut resp = post(&page, false).await;
        // A token spent or expired meanwhile is renewed once, transparently (not for a bot
        // that filled the honeypot: its post must fail).
        let spent = matches!(&resp, Ok(r) if !get(&get(r, "errors"), "form").is_undefined());
        if spent && form.value("honeypot").is_empty() && fetch_token(&page).await {
            resp = post(&page, false).await;
        }
        match resp {
            Ok(r) if get_bool(&r, "success") => {
                // The token was spent: the next comment needs a new one.
                form.token_fresh.set(false);
                accept(&page, form, &r);
                fetch_token(&page).await;
            }
            Ok(r) => {
                let errors = get(&r, "errors");
                let listed = errors.is_object()
                    && js_sys::Object::keys(errors.unchecked_ref::<js_sys::Object>()).length() > 0;
                if listed {
                    form.show_errors(&page, &errors);
                } else {
                    // An error that names no field (a server error, a body too large).
                    let msg = get_str(&r, "error")
                        .unwrap_or_else(|| "Your comment could not be sent.".to_owned());
                    form.show_error(&page, "__all__", &msg);
                }
            }
            Err(e) => form.show_error(
                &page,
                "__all__",
                &format!("Your comment could not be sent: {e}"),
            ),
        }
        form.set_busy(false);
    });
}

/// Applies a successful post: the form empties and goes back under the thread; the comment
/// (its author's own copy, marked while it awaits moderation) appears highlighted.
fn accept(page: &Page, form: &Form, resp: &JsValue) {
    form.clear_errors();
    form.set_value("body", "");
    form.set_value("title", "");
    form.update_counter();
    // A preview still in flight belongs to the text just posted: make it stale.
    form.generation.set(form.generation.get().wrapping_add(1));
    form.set_preview(page, "");
    let awaiting = get_bool(resp, "awaiting_moderation");
    page.notice(
        awaiting
            .then_some("Thank you: your comment awaits moderation and will appear once approved."),
    );
    form.to_thread(page);
    // The live echo of this very comment may have placed it already: highlight that one.
    if let Some(c) = Comment::from_json(&get(resp, "comment"))
        && let Some(e) = tree::place(page, &c, awaiting)
            .or_else(|| page.doc.get_element_by_id(&format!("c{}", c.id)))
    {
        if let Ok(old) = page.tree.query_selector_all("article.comment.highlight") {
            for i in 0..old.length() {
                if let Some(o) = old.item(i).and_then(|n| n.dyn_into::<Element>().ok()) {
                    dom::set_class(&o, "highlight", false);
                }
            }
        }
        dom::set_class(&e, "highlight", true);
        dom::scroll_to(&e);
    }
}

/// Wires the form: a fresh token on first use, counter and preview on typing, posting.
pub(crate) fn wire(page: &Rc<Page>) {
    let Some(form) = &page.form else { return };
    let p = page.clone();
    let on_use = Closure::<dyn FnMut(Event)>::new(move |ev: Event| {
        let Some(form) = &p.form else { return };
        form.refresh_token(&p);
        let is_body = ev
            .target()
            .and_then(|t| t.dyn_into::<Element>().ok())
            .is_some_and(|t| t.get_attribute("name").as_deref() == Some("body"));
        if ev.type_() == "input" && is_body {
            form.update_counter();
            schedule_preview(p.clone());
        }
    });
    let p = page.clone();
    let on_submit = Closure::<dyn FnMut(Event)>::new(move |ev: Event| {
        ev.prevent_default();
        submit(p.clone());
    });
    for kind in ["focusin", "input"] {
        let _ = form
            .el
            .add_event_listener_with_callback(kind, on_use.as_ref().unchecked_ref());
    }
    let _ = form
        .el
        .add_event_listener_with_callback("submit", on_submit.as_ref().unchecked_ref());
    // The form lives as long as the page: so do its handlers.
    on_use.forget();
    on_submit.forget();
    // Text typed before this client loaded: count it, and preview it.
    form.update_counter();
    if !form.value("body").trim().is_empty() {
        schedule_preview(page.clone());
    }
}
