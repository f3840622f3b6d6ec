//! The thread page's live connection: applies events to the tree in place, counts new
//! comments for a reader who has scrolled away, shows live/offline, and reconnects with
//! backoff, resuming from the last event seen so nothing is missed.

use crate::components::tree::ThreadState;
use crate::model::{Comment, CommentId, Status};
use leptos::prelude::*;
use serde::Deserialize;

/// One message from the server (docs/live.md).
#[derive(Deserialize)]
struct ServerMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: i64,
    #[serde(default)]
    event: Option<EventPayload>,
}

#[derive(Deserialize)]
struct EventPayload {
    kind: String,
    #[serde(default)]
    comment: Option<Comment>,
    #[serde(default)]
    comment_id: Option<CommentId>,
    #[serde(default)]
    visible: Option<bool>,
    #[serde(default)]
    awaiting_moderation: bool,
    #[serde(default)]
    message: Option<String>,
}

/// Whether the reader is at (or near) the bottom of the page.
fn at_bottom() -> bool {
    #[cfg(feature = "hydrate")]
    {
        let Some(w) = web_sys::window() else {
            return true;
        };
        let inner = w
            .inner_height()
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let y = w.scroll_y().unwrap_or(0.0);
        let height = w
            .document()
            .and_then(|d| d.body())
            .map(|b| b.scroll_height() as f64)
            .unwrap_or(0.0);
        inner + y >= height - 120.0
    }
    #[cfg(not(feature = "hydrate"))]
    true
}

/// Applies one server message to the page; idempotent, so a replayed event is harmless.
pub fn apply(state: ThreadState, text: &str) {
    let Ok(msg) = serde_json::from_str::<ServerMessage>(text) else {
        return;
    };
    match msg.kind.as_str() {
        "subscribed" => state.live.set(true),
        "reset" => refetch(state),
        "event" => {
            if msg.id > 0 {
                state.cursor.update_value(|c| *c = (*c).max(msg.id));
            }
            let Some(ev) = msg.event else { return };
            match ev.kind.as_str() {
                "comment_posted" => {
                    if let Some(mut c) = ev.comment {
                        if ev.awaiting_moderation {
                            c.status = Some(Status::Held);
                        }
                        arrived(state, c);
                    }
                }
                "comment_status_changed" => match (ev.visible, ev.comment) {
                    // Staff: the comment with its new status and flag.
                    (None, Some(c)) if state.staff => state.update(&c),
                    (Some(true), Some(c)) => {
                        let id = c.id;
                        if state.reveal(c) {
                            mark_fresh(state, id);
                        }
                    }
                    (Some(false), _) => {
                        if let Some(id) = ev.comment_id {
                            state.hide(id);
                        }
                    }
                    _ => {}
                },
                "system_notification" => {
                    if let Some(m) = ev.message {
                        state.draft.notice.set(Some(m));
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

fn arrived(state: ThreadState, c: Comment) {
    let id = c.id;
    if state.insert(c) {
        mark_fresh(state, id);
    }
}

fn mark_fresh(state: ThreadState, id: CommentId) {
    state.fresh.update(|f| f.push(id));
    if !at_bottom() {
        state.unseen.update(|u| u.push(id));
    }
}

/// After a `reset` the replay was impossible: load the page again and merge it.
fn refetch(state: ThreadState) {
    leptos::task::spawn_local(async move {
        if let Ok(page) = crate::api::thread_page(state.key.get_value(), None).await {
            state.cursor.set_value(page.data.last_event_id);
            state.insert_all(page.data.comments);
        }
    });
}

/// Scrolls to the first unseen new comment and clears the count.
pub fn jump_to_unseen(state: ThreadState) {
    let first = state.unseen.with_untracked(|u| u.first().copied());
    state.unseen.set(Vec::new());
    if let Some(id) = first {
        crate::components::form::scroll_to(id);
    }
}

#[cfg(feature = "hydrate")]
fn socket_url() -> Option<String> {
    let loc = web_sys::window()?.location();
    let scheme = if loc.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    // A framed page without third-party cookies names its author token itself.
    let author = crate::embed::stored_author_token()
        .map(|t| format!("?author={t}"))
        .unwrap_or_default();
    Some(format!("{scheme}://{}/ws{author}", loc.host().ok()?))
}

/// Opens the live connection and keeps it open for the life of the page.
pub fn connect(state: ThreadState) {
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        use futures::{SinkExt, StreamExt};
        use gloo_net::websocket::{Message, WebSocketError, futures::WebSocket};
        const FIRST_DELAY_MS: u32 = 1_000;
        const MAX_DELAY_MS: u32 = 30_000;
        let mut delay = FIRST_DELAY_MS;
        loop {
            let mut policy_close = false;
            if let Some(url) = socket_url()
                && let Ok(ws) = WebSocket::open(&url)
            {
                let (mut tx, mut rx) = ws.split();
                let subscribe = serde_json::json!({
                    "type": "subscribe",
                    "thread": state.key.get_value(),
                    "since": state.cursor.get_value(),
                });
                if tx.send(Message::Text(subscribe.to_string())).await.is_ok() {
                    while let Some(msg) = rx.next().await {
                        match msg {
                            Ok(Message::Text(t)) => {
                                apply(state, &t);
                                if state.live.get_untracked() {
                                    delay = FIRST_DELAY_MS;
                                }
                            }
                            Ok(Message::Bytes(_)) => {}
                            Err(WebSocketError::ConnectionClose(ev)) => {
                                policy_close = ev.code == 1008;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            state.live.set(false);
            // Back off, with jitter so a restarted server is not hit by everyone at once;
            // after a policy close (a limit), wait longer.
            let jitter = (js_sys_random() * 500.0) as u32;
            let wait = if policy_close {
                delay.max(MAX_DELAY_MS)
            } else {
                delay
            };
            gloo_timers::future::TimeoutFuture::new(wait + jitter).await;
            delay = (delay * 2).min(MAX_DELAY_MS);
        }
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = state;
}

#[cfg(feature = "hydrate")]
fn js_sys_random() -> f64 {
    // Math.random through web-sys-free means: time-based jitter is enough here.
    let now = web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0);
    (now.fract() * 997.0).fract()
}

/// The live/offline indicator and the "N new comments" bar.
#[component]
pub fn LiveStatus() -> impl IntoView {
    let state = expect_context::<ThreadState>();
    Effect::new(move |_| connect(state));
    view! {
        <span class="live-indicator" class:on=move || state.live.get() title="Live updates">
            {move || if state.live.get() { "● live" } else { "○ offline" }}
        </span>
        <Show when=move || state.unseen.with(|u| !u.is_empty())>
            <button type="button" class="new-comments" on:click=move |_| jump_to_unseen(state)>
                {move || match state.unseen.with(Vec::len) {
                    1 => "1 new comment ↓".to_owned(),
                    n => format!("{n} new comments ↓"),
                }}
            </button>
        </Show>
    }
}
