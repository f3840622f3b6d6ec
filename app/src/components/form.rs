//! The comment form: fields, live preview, posting without a reload.
//!
//! One form per page. It renders under the thread, or inline under the comment being
//! replied to; its text lives in [`Draft`] so moving it never loses what was typed. Without
//! JavaScript it is a plain HTML form that posts form-encoded and is redirected back.

use crate::api;
use crate::components::tree::TreeState;
use crate::model::{
    CommentId, FormSettings, FormToken, PostComment, PostResponse, Status, ThreadResponse,
};
use leptos::prelude::*;
use std::collections::BTreeMap;

/// The form concern of the thread view: where the form is, what it carries, and whether the
/// thread takes comments. Provided as context by the thread page.
#[derive(Clone, Copy)]
pub struct FormState {
    pub key: StoredValue<String>,
    /// The comment the form replies to; `None` puts the form under the thread.
    pub reply_to: RwSignal<Option<CommentId>>,
    /// What the reader has typed: kept here so the form can move between reply spots.
    pub draft: Draft,
    pub token: RwSignal<Option<FormToken>>,
    /// The thread takes comments (as of the page load; a post refused later says why).
    pub open: bool,
    /// Why comments are closed, when they are.
    pub closed_reason: StoredValue<Option<String>>,
    pub settings: StoredValue<FormSettings>,
}

impl FormState {
    /// The form of a thread's page; `reply_to` comes from `?reply=` (links work without JS).
    pub fn new(
        data: &ThreadResponse,
        token: Option<FormToken>,
        reply_to: Option<CommentId>,
    ) -> Self {
        FormState {
            key: StoredValue::new(data.thread.key.clone()),
            reply_to: RwSignal::new(reply_to),
            draft: Draft::new(&data.thread.key),
            token: RwSignal::new(token),
            open: data.thread.comments_open,
            closed_reason: StoredValue::new(data.thread.closed_reason.clone()),
            settings: StoredValue::new(data.form_settings.clone()),
        }
    }
}

/// What the reader has typed, and the form's feedback.
#[derive(Clone, Copy)]
pub struct Draft {
    pub name: RwSignal<String>,
    pub email: RwSignal<String>,
    pub url: RwSignal<String>,
    pub title: RwSignal<String>,
    pub body: RwSignal<String>,
    pub honeypot: RwSignal<String>,
    /// "Notify me of replies" is ticked.
    pub notify: RwSignal<bool>,
    /// Field name (or "form", "__all__") to message.
    pub errors: RwSignal<BTreeMap<String, String>>,
    /// The preview's HTML, from the server's renderer.
    pub preview: RwSignal<String>,
    /// Bumped on each keystroke, so a slow preview answer never overwrites a newer one.
    preview_generation: RwSignal<u64>,
    pub busy: RwSignal<bool>,
    /// A message after posting, e.g. that the comment awaits moderation.
    pub notice: RwSignal<Option<String>>,
}

impl Draft {
    /// A new draft for the thread `key`: empty, except in the browser, where it starts with
    /// whatever the reader typed into this thread's server-rendered form before the page
    /// became interactive. Hydration binds the fields to the draft, so starting empty would
    /// wipe that text.
    pub fn new(key: &str) -> Self {
        let typed = typed_before_hydration(key);
        Draft {
            name: RwSignal::new(typed.name),
            email: RwSignal::new(typed.email),
            url: RwSignal::new(typed.url),
            title: RwSignal::new(typed.title),
            body: RwSignal::new(typed.body),
            honeypot: RwSignal::new(String::new()),
            notify: RwSignal::new(false),
            errors: RwSignal::new(BTreeMap::new()),
            preview: RwSignal::new(String::new()),
            preview_generation: RwSignal::new(0),
            busy: RwSignal::new(false),
            notice: RwSignal::new(None),
        }
    }

    fn request(&self, form: &FormState, preview: bool) -> PostComment {
        let opt = |s: RwSignal<String>| {
            let v = s.get_untracked();
            (!v.trim().is_empty()).then_some(v)
        };
        PostComment {
            name: self.name.get_untracked(),
            email: opt(self.email),
            url: opt(self.url),
            title: opt(self.title),
            body: self.body.get_untracked(),
            parent_id: form.reply_to.get_untracked(),
            form_token: form.token.get_untracked().map(|t| t.token),
            honeypot: opt(self.honeypot),
            preview,
            // Only with an address to mail (the box is hidden without one).
            notify: self.notify.get_untracked() && opt(self.email).is_some(),
        }
    }
}

/// The visible fields of a server-rendered form.
#[derive(Default)]
struct Typed {
    name: String,
    email: String,
    url: String,
    title: String,
    body: String,
}

/// What the form for thread `key` holds in the page right now (nothing on the server, or
/// when the page shows another thread's form, as during a client-side navigation).
#[cfg(feature = "hydrate")]
fn typed_before_hydration(key: &str) -> Typed {
    use wasm_bindgen::JsCast;
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return Typed::default();
    };
    let ours = doc
        .get_element_by_id("comment-form")
        .and_then(|f| f.get_attribute("data-thread"))
        .is_some_and(|k| k == key);
    if !ours {
        return Typed::default();
    }
    let input = |id: &str| {
        doc.get_element_by_id(id)
            .and_then(|e| e.dyn_into::<web_sys::HtmlInputElement>().ok())
            .map(|e| e.value())
            .unwrap_or_default()
    };
    Typed {
        name: input("f-name"),
        email: input("f-email"),
        url: input("f-url"),
        title: input("f-title"),
        body: doc
            .get_element_by_id("f-body")
            .and_then(|e| e.dyn_into::<web_sys::HtmlTextAreaElement>().ok())
            .map(|e| e.value())
            .unwrap_or_default(),
    }
}

#[cfg(not(feature = "hydrate"))]
fn typed_before_hydration(_key: &str) -> Typed {
    Typed::default()
}

/// Milliseconds of quiet typing before the preview is refreshed.
#[cfg(feature = "hydrate")]
const PREVIEW_DEBOUNCE_MS: u32 = 250;

fn schedule_preview(form: FormState) {
    let draft = form.draft;
    draft.preview_generation.update(|g| *g += 1);
    #[cfg(feature = "hydrate")]
    {
        let generation = draft.preview_generation.get_untracked();
        leptos::task::spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(PREVIEW_DEBOUNCE_MS).await;
            if draft.preview_generation.get_untracked() != generation {
                return;
            }
            if draft.body.get_untracked().trim().is_empty() {
                draft.preview.set(String::new());
                return;
            }
            let req = draft.request(&form, true);
            if let Ok(resp) = api::post_comment(form.key.get_value(), req).await
                && draft.preview_generation.get_untracked() == generation
            {
                match resp.html {
                    Some(html) if resp.success => {
                        draft.preview.set(html);
                        draft.errors.update(|e| {
                            e.remove("body");
                        });
                    }
                    _ => {
                        if let Some(msg) = resp.errors.get("body") {
                            draft.errors.update(|e| {
                                e.insert("body".into(), msg.clone());
                            });
                        }
                    }
                }
            }
        });
    }
}

/// Applies a successful post: the comment joins the tree, highlighted and in view.
fn accept(form: FormState, tree: TreeState, resp: PostResponse) {
    let draft = form.draft;
    draft.errors.set(BTreeMap::new());
    draft.body.set(String::new());
    draft.title.set(String::new());
    draft.preview.set(String::new());
    // A preview still in flight belongs to the text just posted: make it stale.
    draft.preview_generation.update(|g| *g += 1);
    if resp.awaiting_moderation {
        draft.notice.set(Some(
            "Thank you: your comment awaits moderation and will appear once approved.".into(),
        ));
    } else {
        draft.notice.set(None);
    }
    form.reply_to.set(None);
    // A held comment is not public, but its author sees it in place, marked as awaiting
    // moderation (a reader's copy carries no status, so mark it here).
    if let Some(mut comment) = resp.comment {
        if resp.awaiting_moderation && comment.status.is_none() {
            comment.status = Some(Status::Held);
        }
        let id = comment.id;
        tree.add(comment);
        tree.highlighted.set(Some(id));
        scroll_to(id);
    }
}

/// Scrolls a comment into the middle of the view, once the tree has rendered it.
pub fn scroll_to(id: CommentId) {
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        // Let the tree render the new node first.
        gloo_timers::future::TimeoutFuture::new(0).await;
        if let Some(el) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id(&format!("c{id}")))
        {
            let opts = web_sys::ScrollIntoViewOptions::new();
            opts.set_behavior(web_sys::ScrollBehavior::Smooth);
            opts.set_block(web_sys::ScrollLogicalPosition::Center);
            el.scroll_into_view_with_scroll_into_view_options(&opts);
        }
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = id;
}

fn submit(form: FormState, tree: TreeState) {
    let draft = form.draft;
    if draft.busy.get_untracked() {
        return;
    }
    draft.busy.set(true);
    leptos::task::spawn_local(async move {
        let key = form.key.get_value();
        let mut resp = api::post_comment(key.clone(), draft.request(&form, false)).await;
        // A token that expired while the page stayed open is renewed once, transparently.
        if matches!(&resp, Ok(r) if r.errors.contains_key("form"))
            && draft.honeypot.get_untracked().is_empty()
            && let Ok(token) = api::form_token(key.clone()).await
        {
            form.token.set(Some(token));
            resp = api::post_comment(key.clone(), draft.request(&form, false)).await;
        }
        match resp {
            Ok(r) if r.success => {
                accept(form, tree, r);
                // The token was spent; fetch the next one for the next comment.
                if let Ok(token) = api::form_token(key).await {
                    form.token.set(Some(token));
                }
            }
            Ok(r) => draft.errors.set(r.errors),
            Err(e) => draft.errors.set(BTreeMap::from([(
                "__all__".to_owned(),
                format!("Your comment could not be sent: {e}"),
            )])),
        }
        draft.busy.set(false);
    });
}

/// The comment form, placed under the thread or under the comment being replied to.
#[component]
pub fn CommentForm() -> impl IntoView {
    let state = expect_context::<FormState>();
    let tree = expect_context::<TreeState>();
    let draft = state.draft;
    let key = state.key.get_value();
    let action = format!("/api/threads/{}/comments", api::encode_key(&key));
    let excluded = state.settings.with_value(|s| s.exclude_fields.clone());
    let shows = move |field: &str| !excluded.iter().any(|f| f == field);
    let max_length = state.settings.with_value(|s| s.max_length);
    let offers_replies = state.settings.with_value(|s| s.reply_notifications);
    let error = move |field: &'static str| {
        move || {
            draft.errors.with(|e| {
                e.get(field)
                    .map(|m| view! { <p class="field-error" data-field=field role="alert">{m.clone()}</p> })
            })
        }
    };
    let heading = move || match state.reply_to.get() {
        Some(_) => "Reply",
        None => "Leave a comment",
    };
    let parent_value = move || {
        state
            .reply_to
            .get()
            .map(|p| p.to_string())
            .unwrap_or_default()
    };
    let token_value = move || state.token.get().map(|t| t.token).unwrap_or_default();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        submit(state, tree);
    };
    let on_body = move |ev| {
        draft.body.set(event_target_value(&ev));
        schedule_preview(state);
    };
    let char_count = move || draft.body.with(|b| b.chars().count());

    view! {
        <form
            id="comment-form"
            data-thread=state.key.get_value()
            class="comment-form"
            method="post"
            action=action
            on:submit=on_submit
            novalidate
        >
            <h3>{heading}</h3>
            <input type="hidden" name="form_token" prop:value=token_value value=token_value/>
            <input type="hidden" name="parent_id" prop:value=parent_value value=parent_value/>
            // The honeypot: invisible to people, tempting to bots that fill every field.
            <div class="hp" aria-hidden="true">
                <label>
                    "Leave this empty"
                    <input
                        type="text"
                        name="honeypot"
                        tabindex="-1"
                        autocomplete="off"
                        prop:value=move || draft.honeypot.get()
                        on:input=move |ev| draft.honeypot.set(event_target_value(&ev))
                    />
                </label>
            </div>
            <div class="field">
                <label for="f-name">"Name"</label>
                <input
                    id="f-name"
                    type="text"
                    name="name"
                    required
                    maxlength="100"
                    autocomplete="name"
                    prop:value=move || draft.name.get()
                    on:input=move |ev| draft.name.set(event_target_value(&ev))
                />
                {error("name")}
            </div>
            {shows("email")
                .then(|| {
                    view! {
                        <div class="field">
                            <label for="f-email">"Email " <small>"(optional, never shown)"</small></label>
                            <input
                                id="f-email"
                                type="email"
                                name="email"
                                autocomplete="email"
                                // The placeholder lets the stylesheet hide "notify me" while
                                // the field is empty, with or without JavaScript.
                                placeholder="you@example.org"
                                prop:value=move || draft.email.get()
                                on:input=move |ev| draft.email.set(event_target_value(&ev))
                            />
                            {error("email")}
                        </div>
                    }
                })}
            {(shows("email") && offers_replies)
                .then(|| {
                    view! {
                        <div class="field notify-option">
                            <label>
                                <input
                                    id="f-notify"
                                    type="checkbox"
                                    name="notify"
                                    value="on"
                                    prop:checked=move || draft.notify.get()
                                    on:change=move |ev| draft.notify.set(event_target_checked(&ev))
                                />
                                " Email me when someone replies "
                                <small>"(a first mail asks you to confirm)"</small>
                            </label>
                            {error("notify")}
                        </div>
                    }
                })}
            {shows("url")
                .then(|| {
                    view! {
                        <div class="field">
                            <label for="f-url">"Website " <small>"(optional)"</small></label>
                            <input
                                id="f-url"
                                type="url"
                                name="url"
                                placeholder="https://"
                                autocomplete="url"
                                prop:value=move || draft.url.get()
                                on:input=move |ev| draft.url.set(event_target_value(&ev))
                            />
                            {error("url")}
                        </div>
                    }
                })}
            {shows("title")
                .then(|| {
                    view! {
                        <div class="field">
                            <label for="f-title">"Title " <small>"(optional)"</small></label>
                            <input
                                id="f-title"
                                type="text"
                                name="title"
                                maxlength="200"
                                prop:value=move || draft.title.get()
                                on:input=move |ev| draft.title.set(event_target_value(&ev))
                            />
                            {error("title")}
                        </div>
                    }
                })}
            <div class="field">
                <label for="f-body">"Comment " <small>"(markdown)"</small></label>
                <textarea
                    id="f-body"
                    name="body"
                    rows="5"
                    required
                    prop:value=move || draft.body.get()
                    on:input=on_body
                ></textarea>
                <p class="counter" class:over=move || { char_count() > max_length }>
                    {move || format!("{} / {max_length}", char_count())}
                </p>
                {error("body")}
            </div>
            {error("parent_id")}
            {error("form")}
            {error("__all__")}
            <div class="actions">
                <button type="submit" class="post" disabled=move || draft.busy.get()>
                    {move || if draft.busy.get() { "Posting…" } else { "Post comment" }}
                </button>
                <Show when=move || state.reply_to.get().is_some()>
                    <a
                        class="cancel-reply"
                        href="#comment-form"
                        on:click=move |ev: leptos::ev::MouseEvent| {
                            ev.prevent_default();
                            state.reply_to.set(None);
                        }
                    >
                        "cancel reply"
                    </a>
                </Show>
            </div>
            // Below the button: a preview that appears or grows while the reader types never
            // moves the button from under their pointer.
            <Show when=move || !draft.preview.get().is_empty()>
                <section class="comment-preview" aria-live="polite">
                    <h4>"Preview"</h4>
                    <div class="preview-content" inner_html=move || draft.preview.get()></div>
                </section>
            </Show>
        </form>
    }
    .into_any()
}

/// The form under the thread (when not replying inline), or the notice that comments are closed.
#[component]
pub fn ThreadFormSlot() -> impl IntoView {
    let state = expect_context::<FormState>();
    let draft = state.draft;
    view! {
        {move || {
            draft
                .notice
                .get()
                .map(|n| view! { <p class="notice" role="status">{n}</p> })
        }}
        <Show
            when=move || state.open
            fallback=move || {
                let reason = state
                    .closed_reason
                    .get_value()
                    .unwrap_or_else(|| "Comments are closed.".to_owned());
                view! { <p class="closed-notice">{reason}</p> }
            }
        >
            <Show when=move || state.reply_to.get().is_none()>
                <CommentForm/>
            </Show>
        </Show>
    }
}
