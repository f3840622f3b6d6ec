//! Staff pages: sign-in, the moderation queue, the audit log.

use crate::api;
use crate::components::comment::{Byline, CommentView, Tools};
use crate::components::staff::ModerationBar;
use crate::model::{
    ApiError, Comment, CommentId, ModerationAction, ModerationFlag, QueueResponse, Status,
    display_date,
};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use std::collections::BTreeMap;

fn reload_to(url: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(w) = web_sys::window() {
        let _ = w.location().set_href(url);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = url;
}

/// `/login`: the staff sign-in form.
#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    // Only same-site paths are followed after sign-in (no open redirect).
    let next = crate::model::safe_next(query.read_untracked().get("next").as_deref());
    let initial_error = query.read_untracked().get("error");
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(initial_error);
    let busy = RwSignal::new(false);
    let next_for_submit = next.clone();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        let next = next_for_submit.clone();
        leptos::task::spawn_local(async move {
            match api::sign_in(username.get_untracked(), password.get_untracked()).await {
                // A full load, so every page renders on the server for the signed-in user.
                Ok(_) => reload_to(&next),
                Err(e) => {
                    error.set(Some(e.to_string()));
                    busy.set(false);
                }
            }
        });
    };
    view! {
        <Title text="Sign in · Moderato"/>
        <section class="login">
            <h1>"Staff sign-in"</h1>
            <form class="login-form" method="post" action="/api/session" on:submit=on_submit>
                <input type="hidden" name="next" value=next/>
                <div class="field">
                    <label for="l-user">"User name"</label>
                    <input
                        id="l-user"
                        name="username"
                        autocomplete="username"
                        required
                        prop:value=move || username.get()
                        on:input=move |ev| username.set(event_target_value(&ev))
                    />
                </div>
                <div class="field">
                    <label for="l-pass">"Password"</label>
                    <input
                        id="l-pass"
                        name="password"
                        type="password"
                        autocomplete="current-password"
                        required
                        prop:value=move || password.get()
                        on:input=move |ev| password.set(event_target_value(&ev))
                    />
                </div>
                {move || error.get().map(|e| view! { <p class="field-error" role="alert">{e}</p> })}
                <button type="submit" class="post" disabled=move || busy.get()>"Sign in"</button>
            </form>
        </section>
    }
}

/// The signed-in user in the site header, with the staff links and sign-out.
#[component]
pub fn SessionLinks() -> impl IntoView {
    let viewer = Resource::new_blocking(|| (), |_| api::viewer());
    let sign_out = move |_| {
        leptos::task::spawn_local(async move {
            let _ = api::sign_out().await;
            reload_to("/");
        });
    };
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let v = viewer.await;
                match v.name {
                    Some(name) => view! {
                        <nav class="session">
                            {v.staff.then(|| view! {
                                <a href="/moderation" rel="external">"Moderation"</a>
                                <a href="/moderation/spam" rel="external">"Spam filter"</a>
                                <a href="/moderation/audit" rel="external">"Audit log"</a>
                            })}
                            <span class="who">{name}</span>
                            <button type="button" class="link" on:click=sign_out>"Sign out"</button>
                        </nav>
                    }
                    .into_any(),
                    None => view! {
                        <nav class="session"><a href="/login" rel="external">"Staff sign-in"</a></nav>
                    }
                    .into_any(),
                }
            })}
        </Suspense>
    }
}

const QUEUE_TABS: [&str; 5] = ["held", "spam", "rejected", "removed", "all"];

/// `/moderation`: the queue, by status, newest first, with bulk actions.
#[component]
pub fn QueuePage() -> impl IntoView {
    let query = use_query_map();
    let status = move || query.read().get("status").unwrap_or_else(|| "held".into());
    let page = move || {
        query
            .read()
            .get("page")
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(1)
    };
    let data = Resource::new_blocking(move || (status(), page()), |(s, p)| api::queue(s, p));
    view! {
        <Title text="Moderation · Moderato"/>
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(q) => view! { <QueueView q current=status()/> }.into_any(),
                    Err(ApiError::Forbidden) => view! { <StaffOnly/> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
pub fn StaffOnly() -> impl IntoView {
    view! {
        <section class="staff-only">
            <h1>"Staff only"</h1>
            <p>
                "This page is for moderators. "
                <a href="/login?next=/moderation" rel="external">"Sign in"</a>
            </p>
        </section>
    }
}

#[derive(Clone)]
struct Row {
    status: ArcRwSignal<Option<Status>>,
    moderation: ArcRwSignal<Option<ModerationFlag>>,
}

#[component]
fn QueueView(q: QueueResponse, current: String) -> impl IntoView {
    let rows: StoredValue<BTreeMap<CommentId, Row>> = StoredValue::new(BTreeMap::new());
    let selected = RwSignal::new(Vec::<CommentId>::new());
    let bulk_error = RwSignal::new(None::<String>);
    let ids: Vec<CommentId> = q.comments.iter().map(|i| i.comment.id).collect();
    let all_ids = ids.clone();
    let tabs = QUEUE_TABS
        .iter()
        .map(|t| {
            let count = if *t == "all" {
                q.counts.values().sum::<i64>()
            } else {
                q.counts.get(*t).copied().unwrap_or(0)
            };
            let class = if *t == current { "tab active" } else { "tab" };
            view! { <a class=class href=format!("/moderation?status={t}") rel="external">{format!("{t} ({count})")}</a> }
        })
        .collect_view();
    let bulk = move |action: ModerationAction| {
        let ids = selected.get_untracked();
        if ids.is_empty() {
            return;
        }
        leptos::task::spawn_local(async move {
            match api::moderate_bulk(ids, action).await {
                Ok(resp) => {
                    rows.with_value(|rows| {
                        for c in resp.comments {
                            if let Some(r) = rows.get(&c.id) {
                                r.status.set(c.status);
                                r.moderation.set(c.moderation.clone());
                            }
                        }
                    });
                    selected.set(Vec::new());
                    bulk_error.set(None);
                }
                Err(e) => bulk_error.set(Some(e.to_string())),
            }
        });
    };
    let bulk_buttons = ModerationAction::ALL
        .into_iter()
        .map(|a| {
            view! {
                <button
                    type="button"
                    class="bulk-action"
                    data-action=a.as_str()
                    disabled=move || selected.with(|s| s.is_empty())
                    on:click=move |_| bulk(a)
                >
                    {format!("{} selected", a.as_str())}
                </button>
            }
        })
        .collect_view();
    let items = q
        .comments
        .into_iter()
        .map(|item| {
            let c = item.comment;
            let id = c.id;
            let status = ArcRwSignal::new(c.status);
            let moderation = ArcRwSignal::new(c.moderation.clone());
            rows.update_value(|r| {
                r.insert(
                    id,
                    Row {
                        status: status.clone(),
                        moderation: moderation.clone(),
                    },
                );
            });
            let link = format!("/t/{}#c{id}", api::encode_key(&item.thread));
            let on_done = Callback::new({
                let (status, moderation) = (status.clone(), moderation.clone());
                move |c: Comment| {
                    status.set(c.status);
                    moderation.set(c.moderation);
                }
            });
            view! {
                <li class="queue-item" data-id=id>
                    <label class="select">
                        <input
                            type="checkbox"
                            prop:checked=move || selected.with(|s| s.contains(&id))
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                selected.update(|s| {
                                    s.retain(|x| *x != id);
                                    if on {
                                        s.push(id);
                                    }
                                });
                            }
                        />
                    </label>
                    <div class="queue-body">
                        <CommentView comment=c>
                            <Byline slot>
                                " on "
                                <a href=link rel="external">{item.thread}</a>
                            </Byline>
                            <Tools slot>
                                <ModerationBar id status=status moderation=moderation on_done/>
                            </Tools>
                        </CommentView>
                    </div>
                </li>
            }
        })
        .collect_view();
    let pages = (q.total + q.per_page - 1) / q.per_page;
    let prev = (q.page > 1).then(|| {
        view! { <a href=format!("/moderation?status={current}&page={}", q.page - 1) rel="external">"← newer"</a> }
    });
    let next = (q.page < pages).then(|| {
        view! { <a href=format!("/moderation?status={current}&page={}", q.page + 1) rel="external">"older →"</a> }
    });
    let empty = ids.is_empty();
    view! {
        <section class="queue">
            <h1>"Moderation queue"</h1>
            <nav class="tabs">{tabs}</nav>
            <div class="bulk-bar">
                <label>
                    <input
                        type="checkbox"
                        class="select-all"
                        prop:checked=move || !all_ids.is_empty() && selected.with(|s| s.len() == all_ids.len())
                        on:change=move |ev| {
                            selected.set(if event_target_checked(&ev) { ids.clone() } else { Vec::new() });
                        }
                    />
                    " select all"
                </label>
                {bulk_buttons}
                {move || bulk_error.get().map(|e| view! { <span class="field-error">{e}</span> })}
            </div>
            {empty.then(|| view! { <p class="empty">"Nothing here."</p> })}
            <ul class="queue-list">{items}</ul>
            <nav class="pager">{prev}" "{next}</nav>
        </section>
    }
}

/// `/moderation/audit`: every staff action and moderator rejection.
#[component]
pub fn AuditPage() -> impl IntoView {
    let query = use_query_map();
    let page = move || {
        query
            .read()
            .get("page")
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(1)
    };
    let data = Resource::new_blocking(page, api::audit);
    view! {
        <Title text="Audit log · Moderato"/>
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(a) => {
                        let pages = (a.total + a.per_page - 1) / a.per_page;
                        let rows = a
                            .entries
                            .into_iter()
                            .map(|e| {
                                view! {
                                    <tr>
                                        <td><time datetime=e.at.clone()>{display_date(&e.at)}</time></td>
                                        <td class="actor">{e.actor}</td>
                                        <td class="action">{e.action}</td>
                                        <td>{e.comment_id.map(|c| format!("#{c}")).unwrap_or_default()}</td>
                                        <td class="before">{e.status_before.unwrap_or_else(|| "–".into())}</td>
                                        <td class="after">{e.status_after.unwrap_or_else(|| "–".into())}</td>
                                        <td class="detail">{e.detail.unwrap_or_default()}</td>
                                    </tr>
                                }
                            })
                            .collect_view();
                        view! {
                            <section class="audit">
                                <h1>"Audit log"</h1>
                                <table class="audit-table">
                                    <thead>
                                        <tr>
                                            <th>"When"</th><th>"Who"</th><th>"Action"</th><th>"Comment"</th>
                                            <th>"Before"</th><th>"After"</th><th>"Detail"</th>
                                        </tr>
                                    </thead>
                                    <tbody>{rows}</tbody>
                                </table>
                                <p class="pager">{format!("page {} of {}", a.page, pages.max(1))}
                                    {(a.page > 1).then(|| view! { " " <a href=format!("/moderation/audit?page={}", a.page - 1) rel="external">"← newer"</a> })}
                                    {(a.page < pages).then(|| view! { " " <a href=format!("/moderation/audit?page={}", a.page + 1) rel="external">"older →"</a> })}
                                </p>
                            </section>
                        }
                        .into_any()
                    }
                    Err(ApiError::Forbidden) => view! { <StaffOnly/> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}
