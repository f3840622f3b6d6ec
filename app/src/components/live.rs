//! The thread page's live connection: applies events to the tree in place, counts new
//! comments for a reader who has scrolled away, shows live/offline, and reconnects with
//! backoff, resuming from the last event seen so nothing is missed.

use crate::components::form::FormState;
use crate::components::staff::StaffState;
use crate::components::tree::TreeState;
use crate::live::{Event, ServerMessage};
use crate::model::{CommentId, ThreadResponse};
use leptos::prelude::*;

/// The live-connection concern of the thread view. Provided as context by the thread page.
#[derive(Clone, Copy)]
pub struct LiveState {
    pub key: StoredValue<String>,
    /// The newest live event this page reflects (the catch-up cursor).
    pub cursor: StoredValue<i64>,
    /// The live socket is connected.
    pub live: RwSignal<bool>,
    /// Comments that arrived live and were not yet looked at, oldest first.
    pub unseen: RwSignal<Vec<CommentId>>,
    /// Comments that arrived live, marked until the next reload.
    pub fresh: RwSignal<Vec<CommentId>>,
}

impl LiveState {
    /// Not connected yet; resumes from the event the page reflects.
    pub fn new(data: &ThreadResponse) -> Self {
        LiveState {
            key: StoredValue::new(data.thread.key.clone()),
            cursor: StoredValue::new(data.last_event_id),
            live: RwSignal::new(false),
            unseen: RwSignal::new(Vec::new()),
            fresh: RwSignal::new(Vec::new()),
        }
    }

    /// Remembers the newest event seen: the cursor only moves forward, and id 0 (a notice
    /// that is not stored) is never a cursor.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn saw(&self, id: i64) {
        if id > 0 {
            self.cursor.update_value(|c| *c = (*c).max(id));
        }
    }
}

/// Everything one connection changes, gathered from the page's contexts.
///
/// The socket exists only in the browser: in the server build only the unit tests below use
/// this and the functions around it, hence the `allow(dead_code)` outside `hydrate`.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
struct Client {
    live: LiveState,
    tree: TreeState,
    /// Whose copies of events this page gets.
    staff: bool,
    /// Where notices to everyone show (the form's notice line).
    notice: RwSignal<Option<String>>,
}

/// Whether the reader is at (or near) the bottom of the page.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
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

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
impl Client {
    /// Applies one server message to the page; idempotent, so a replayed event is harmless.
    fn apply(self, msg: ServerMessage) {
        match msg {
            ServerMessage::Subscribed { .. } => self.live.live.set(true),
            ServerMessage::Reset { .. } => refetch(self),
            ServerMessage::Event { id, event, .. } => {
                self.live.saw(id);
                if let Event::SystemNotification { message } = &event {
                    self.notice.set(Some(message.clone()));
                    return;
                }
                for id in self.tree.apply(&event, self.staff).appeared {
                    mark_fresh(self.live, id);
                }
            }
            // Errors that keep the connection change nothing here; those that close it end
            // the read loop, which reconnects.
            ServerMessage::Error { .. }
            | ServerMessage::Unsubscribed { .. }
            | ServerMessage::Pong => {}
        }
    }
}

#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn mark_fresh(live: LiveState, id: CommentId) {
    live.fresh.update(|f| f.push(id));
    if !at_bottom() {
        live.unseen.update(|u| u.push(id));
    }
}

/// After a `reset` the replay was impossible: load the page again and merge it.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn refetch(client: Client) {
    leptos::task::spawn_local(async move {
        if let Ok(page) = crate::api::thread_page(client.live.key.get_value(), None).await {
            client.live.cursor.set_value(page.data.last_event_id);
            let changes = client
                .tree
                .load(page.data.comments, page.data.thread.comment_count);
            for id in changes.appeared {
                mark_fresh(client.live, id);
            }
        }
    });
}

/// Scrolls to the first unseen new comment and clears the count.
pub fn jump_to_unseen(live: LiveState) {
    let first = live.unseen.with_untracked(|u| u.first().copied());
    live.unseen.set(Vec::new());
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
fn connect(client: Client) {
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        use crate::live::ClientMessage;
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
                let subscribe = ClientMessage::Subscribe {
                    thread: client.live.key.get_value(),
                    since: Some(client.live.cursor.get_value()),
                };
                if tx.send(Message::Text(subscribe.encode())).await.is_ok() {
                    while let Some(msg) = rx.next().await {
                        match msg {
                            Ok(Message::Text(t)) => {
                                // A message this client does not understand (a newer
                                // server) is skipped, not fatal.
                                if let Ok(msg) = ServerMessage::parse(&t) {
                                    client.apply(msg);
                                }
                                if client.live.live.get_untracked() {
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
            client.live.live.set(false);
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
    let _ = client;
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
    let live = expect_context::<LiveState>();
    let client = Client {
        live,
        tree: expect_context::<TreeState>(),
        staff: expect_context::<StaffState>().enabled,
        notice: expect_context::<FormState>().draft.notice,
    };
    // Effects run only in the browser: the socket opens after hydration.
    Effect::new(move |_| connect(client));
    view! {
        <span class="live-indicator" class:on=move || live.live.get() title="Live updates">
            {move || if live.live.get() { "● live" } else { "○ offline" }}
        </span>
        <Show when=move || live.unseen.with(|u| !u.is_empty())>
            <button type="button" class="new-comments" on:click=move |_| jump_to_unseen(live)>
                {move || match live.unseen.with(Vec::len) {
                    1 => "1 new comment ↓".to_owned(),
                    n => format!("{n} new comments ↓"),
                }}
            </button>
        </Show>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::model::{Comment, FormSettings, ThreadInfo};

    fn comment(id: CommentId) -> Comment {
        Comment {
            id,
            parent_id: None,
            depth: 0,
            author_name: "Ann".into(),
            author_url: None,
            title: None,
            body_html: "<p>hi</p>".into(),
            created_at: "2026-11-21T10:00:00Z".into(),
            status: None,
            moderation: None,
        }
    }

    fn page() -> ThreadResponse {
        ThreadResponse {
            thread: ThreadInfo {
                key: "t".into(),
                title: "T".into(),
                kind: "page".into(),
                comments_open: true,
                closed_reason: None,
                comment_count: 0,
            },
            comments: Vec::new(),
            threaded: true,
            next: None,
            remaining_top_level: 0,
            last_event_id: 3,
            form_settings: FormSettings {
                exclude_fields: Vec::new(),
                max_length: 1000,
                max_depth: 5,
                reply_notifications: false,
            },
        }
    }

    /// The message as it travels: encoded by the server's type, parsed by the client's.
    fn wire(msg: ServerMessage) -> ServerMessage {
        ServerMessage::parse(&msg.encode()).unwrap()
    }

    fn event(id: i64, event: Event) -> ServerMessage {
        wire(ServerMessage::Event {
            id,
            thread: Some("t".into()),
            event,
        })
    }

    #[test]
    fn events_apply_once_and_the_cursor_only_moves_forward() {
        Owner::new().with(|| {
            let data = page();
            let client = Client {
                live: LiveState::new(&data),
                tree: TreeState::new(&data),
                staff: false,
                notice: RwSignal::new(None),
            };
            client.apply(wire(ServerMessage::Subscribed {
                thread: "t".into(),
                last_id: 3,
            }));
            assert!(client.live.live.get_untracked());

            let posted = Event::CommentPosted {
                comment: comment(10),
                awaiting_moderation: false,
            };
            client.apply(event(7, posted.clone()));
            // Replayed after a reconnect, and an older id arriving late.
            client.apply(event(7, posted));
            client.apply(event(
                5,
                Event::CommentPosted {
                    comment: comment(11),
                    awaiting_moderation: false,
                },
            ));
            assert_eq!(client.live.fresh.get_untracked(), vec![10, 11]);
            assert_eq!(client.tree.count(), 2);
            assert_eq!(client.live.cursor.get_value(), 7);

            // A notice to everyone: shown, and its id 0 is not a cursor.
            client.apply(wire(ServerMessage::system_notification(
                "Server restarting",
            )));
            assert_eq!(
                client.notice.get_untracked().as_deref(),
                Some("Server restarting")
            );
            assert_eq!(client.live.cursor.get_value(), 7);

            client.apply(event(
                8,
                Event::CommentStatusChanged {
                    comment_id: 10,
                    visible: Some(false),
                    status_before: None,
                    comment: None,
                },
            ));
            assert_eq!(client.tree.count(), 1);
            assert_eq!(client.live.cursor.get_value(), 8);
        });
    }
}
