//! The live connection (`GET /ws`, protocol in docs/live.md): subscribes to the thread from
//! the event the page reflects, applies events in place (idempotently, so a replay after a
//! reconnect is harmless), shows live/offline and "N new comments", and reconnects with
//! backoff and jitter, resuming from the newest event seen.

use super::dom::{self, Json, get, get_i64, get_str, set_class};
use super::{Comment, Page, tree};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

const FIRST_DELAY_MS: i32 = 1_000;
const MAX_DELAY_MS: i32 = 30_000;

fn socket_url(page: &Page) -> Option<String> {
    let loc = page.doc.location()?;
    let scheme = if loc.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    // A framed page without third-party cookies names its author token itself.
    let author = page
        .author_token()
        .map(|t| format!("?author={t}"))
        .unwrap_or_default();
    Some(format!("{scheme}://{}/ws{author}", loc.host().ok()?))
}

/// Keeps the page connected for as long as it is open.
pub(crate) fn connect(page: Rc<Page>) {
    wasm_bindgen_futures::spawn_local(async move {
        let mut delay = FIRST_DELAY_MS;
        loop {
            let mut policy_close = false;
            if let Some(ws) = socket_url(&page).and_then(|u| WebSocket::new(&u).ok()) {
                let p = page.clone();
                let sock = ws.clone();
                let on_open = Closure::<dyn FnMut()>::new(move || {
                    let subscribe = Json::new()
                        .set("type", "subscribe")
                        .set("thread", p.key.as_str())
                        .set("since", p.cursor.get() as f64);
                    let _ = sock.send_with_str(&subscribe.text());
                });
                let p = page.clone();
                let on_message =
                    Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                        if let Some(text) = ev.data().as_string() {
                            apply(&p, &text);
                        }
                    });
                ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
                ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
                // The close event (which also follows every error) ends this connection.
                let closed = js_sys::Promise::new(&mut |resolve, _| ws.set_onclose(Some(&resolve)));
                if let Ok(ev) = JsFuture::from(closed).await {
                    policy_close = ev.dyn_into::<CloseEvent>().is_ok_and(|c| c.code() == 1008);
                }
                ws.set_onopen(None);
                ws.set_onmessage(None);
                ws.set_onclose(None);
                if is_live(&page) {
                    delay = FIRST_DELAY_MS;
                }
            }
            set_live(&page, false);
            // Back off, with jitter so a restarted server is not hit by everyone at once;
            // after a policy close (a limit), wait longer.
            let jitter = (js_sys::Math::random() * 500.0) as i32;
            let wait = if policy_close {
                delay.max(MAX_DELAY_MS)
            } else {
                delay
            };
            dom::sleep(wait + jitter).await;
            delay = (delay * 2).min(MAX_DELAY_MS);
        }
    });
}

fn indicator(page: &Page) -> Option<web_sys::Element> {
    dom::find(&page.section, ".live-indicator")
}

fn is_live(page: &Page) -> bool {
    indicator(page).is_some_and(|i| i.class_list().contains("on"))
}

fn set_live(page: &Page, on: bool) {
    if let Some(i) = indicator(page) {
        set_class(&i, "on", on);
        i.set_text_content(Some(if on { "● live" } else { "○ offline" }));
    }
}

/// Applies one server message to the page.
fn apply(page: &Rc<Page>, text: &str) {
    let Some(msg) = dom::parse_json(text) else {
        return;
    };
    match get_str(&msg, "type").as_deref() {
        Some("subscribed") => set_live(page, true),
        Some("reset") => refetch(page.clone()),
        Some("event") => {
            // Id 0 is a notice that is not stored: never a cursor.
            if let Some(id) = get_i64(&msg, "id").filter(|id| *id > 0) {
                page.cursor.set(page.cursor.get().max(id));
            }
            let event = get(&msg, "event");
            let comment = Comment::from_json(&get(&event, "comment"));
            match get_str(&event, "kind").as_deref() {
                Some("system_notification") => {
                    page.notice(get_str(&event, "message").as_deref());
                }
                Some("comment_posted") => {
                    let awaiting = dom::get_bool(&event, "awaiting_moderation");
                    if let Some(e) = comment.and_then(|c| tree::place(page, &c, awaiting)) {
                        fresh(page, &e);
                    }
                }
                Some("comment_status_changed") => match get(&event, "visible").as_bool() {
                    Some(true) => {
                        if let Some(e) = comment.and_then(|c| tree::show(page, &c)) {
                            fresh(page, &e);
                        }
                    }
                    Some(false) => {
                        if let Some(id) = get_i64(&event, "comment_id") {
                            tree::hide(page, id);
                        }
                    }
                    None => {}
                },
                // Other rooms' events do not touch the thread.
                _ => {}
            }
        }
        // Errors that keep the connection change nothing; those that close it end the
        // connection, which reconnects.
        _ => {}
    }
}

/// After a `reset` the replay was impossible: load the first page again and merge it.
fn refetch(page: Rc<Page>) {
    wasm_bindgen_futures::spawn_local(async move {
        let url = format!("/api/threads/{}", page.key_path());
        if let Ok(r) = dom::fetch("GET", &url, None, &[], None).await
            && r.status == 200
        {
            if let Some(id) = get_i64(&r.body, "last_event_id") {
                page.cursor.set(id);
            }
            let published = get_i64(&get(&r.body, "thread"), "comment_count");
            for e in tree::load(&page, &get(&r.body, "comments"), published) {
                fresh(&page, &e);
            }
        }
    });
}

/// Whether the reader is at (or near) the bottom of the page.
fn at_bottom() -> bool {
    let Some(w) = dom::window() else { return true };
    let inner = w
        .inner_height()
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let y = w.scroll_y().unwrap_or(0.0);
    let height = w
        .document()
        .and_then(|d| d.body())
        .map_or(0.0, |b| f64::from(b.scroll_height()));
    inner + y >= height - 120.0
}

/// Marks a comment that arrived live; counts it as unseen when the reader is elsewhere.
fn fresh(page: &Page, e: &web_sys::Element) {
    set_class(e, "fresh", true);
    if at_bottom() {
        return;
    }
    if let Some(id) = e.get_attribute("data-id").and_then(|d| d.parse().ok()) {
        page.unseen.borrow_mut().push(id);
    }
    show_unseen(page);
}

/// The "N new comments ↓" button beside the live indicator (gone when there are none).
fn show_unseen(page: &Page) {
    let n = page.unseen.borrow().len();
    let existing = dom::find(&page.section, "button.new-comments");
    if n == 0 {
        if let Some(b) = existing {
            b.remove();
        }
        return;
    }
    let label = match n {
        1 => "1 new comment ↓".to_owned(),
        n => format!("{n} new comments ↓"),
    };
    let button = match existing {
        Some(b) => b,
        None => {
            let Some(b) = dom::el(&page.doc, "button", "new-comments") else {
                return;
            };
            let _ = b.set_attribute("type", "button");
            if let Some(meta) = indicator(page).and_then(|i| i.parent_element()) {
                let _ = meta.append_child(&b);
            }
            b
        }
    };
    button.set_text_content(Some(&label));
}

/// Scrolls to the first unseen new comment and clears the count.
pub(crate) fn jump_to_unseen(page: &Page) {
    let first = page.unseen.borrow().first().copied();
    page.unseen.borrow_mut().clear();
    show_unseen(page);
    if let Some(e) = first.and_then(|id| page.doc.get_element_by_id(&format!("c{id}"))) {
        dom::scroll_to(&e);
    }
}
