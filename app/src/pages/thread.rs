//! The thread page: `/t/{key}`.

use crate::api;
use crate::components::form::{FormState, ThreadFormSlot};
use crate::components::live::{LiveState, LiveStatus};
use crate::components::staff::StaffState;
use crate::components::tree::{CommentTree, TreeState};
use crate::model::{ApiError, ThreadPage as PageData};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

/// Renders a thread's comments on the server; hydrated, it becomes interactive.
#[component]
pub fn ThreadPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let key = move || params.read().get("key").unwrap_or_default();
    let after = move || query.read().get("after");
    let page = Resource::new_blocking(
        move || (key(), after()),
        |(key, after)| api::thread_page(key, after),
    );
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading comments…"</p> }>
            {move || Suspend::new(async move {
                match page.await {
                    Ok(data) => view! { <ThreadView data/> }.into_any(),
                    Err(ApiError::NotFound) => {
                        crate::pages::set_not_found();
                        view! {
                            <section class="not-found">
                                <h1>"No such thread"</h1>
                                <p>"This thread does not exist."</p>
                            </section>
                        }
                            .into_any()
                    }
                    Err(ApiError::Forbidden) => view! { <p class="error">"Not allowed."</p> }.into_any(),
                    Err(ApiError::Other(msg)) => {
                        view! { <p class="error">"Comments could not be loaded: " {msg}</p> }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
fn ThreadView(data: PageData) -> impl IntoView {
    let query = use_query_map();
    let reply_to = query
        .read_untracked()
        .get("reply")
        .and_then(|r| r.parse().ok());
    let error = query.read_untracked().get("error");
    let title = data.data.thread.title.clone();
    // One state per concern; each component asks only for those it uses.
    let tree = TreeState::new(&data.data);
    provide_context(tree);
    provide_context(FormState::new(&data.data, data.form, reply_to));
    provide_context(LiveState::new(&data.data));
    provide_context(StaffState {
        enabled: data.viewer.staff,
        applied: Callback::new(move |c| tree.update(&c)),
    });
    let count_label = move || match tree.count() {
        0 => "No comments yet".to_owned(),
        1 => "1 comment".to_owned(),
        n => format!("{n} comments"),
    };
    view! {
        <Title text=format!("{title} · Moderato")/>
        // The data-* attributes are what the reader client (frontend's `reader` feature)
        // needs beyond the markup: the count, where live updates resume, the indent cap,
        // whether replies are taken.
        <section
            class="thread"
            data-thread=tree.key.get_value()
            data-count=data.data.thread.comment_count
            data-last-event=data.data.last_event_id
            data-max-depth=data.data.form_settings.max_depth
            data-open=data.data.thread.comments_open.to_string()
        >
            <h1>{title}</h1>
            <p class="thread-meta">
                <span class="comment-count">{count_label}</span>
                <LiveStatus/>
            </p>
            {error.map(|e| view! { <p class="field-error banner" role="alert">{e}</p> })}
            <CommentTree/>
            <ShowMore/>
            <ThreadFormSlot/>
        </section>
    }
}

/// Loads the next page of top-level comments (and the rest of a cut-off subtree).
#[component]
fn ShowMore() -> impl IntoView {
    let state = expect_context::<TreeState>();
    let loading = RwSignal::new(false);
    let load = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        let Some(cursor) = state.next.get_untracked() else {
            return;
        };
        if loading.get_untracked() {
            return;
        }
        loading.set(true);
        leptos::task::spawn_local(async move {
            if let Ok(more) = api::more_comments(state.key.get_value(), cursor).await {
                state.load(more.comments, more.thread.comment_count);
                state.next.set(more.next);
                state.remaining_top_level.set(more.remaining_top_level);
            }
            loading.set(false);
        });
    };
    view! {
        {move || {
            state
                .next
                .get()
                .map(|cursor| {
                    let label = match state.remaining_top_level.get() {
                        0 => "Show more replies".to_owned(),
                        n => format!("Show more comments ({n} more threads)"),
                    };
                    view! {
                        <a class="show-more" href=format!("?after={}", api::encode_key(&cursor)) on:click=load>
                            {move || if loading.get() { "Loading…".to_owned() } else { label.clone() }}
                        </a>
                    }
                })
        }}
    }
}
