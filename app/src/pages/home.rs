//! The home page: the list of threads, a page at a time (`/?page=N`).

use crate::api;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// Lists the threads, newest first, with their comment counts and links to the pages
/// before and after.
#[component]
pub fn HomePage() -> impl IntoView {
    let query = use_query_map();
    let page = move || {
        query
            .read()
            .get("page")
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1)
    };
    let threads = Resource::new_blocking(page, api::threads);
    view! {
        <h1>"Threads"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match threads.await {
                    Ok(list) if list.threads.is_empty() && list.page == 1 => {
                        view! { <p class="empty">"No threads yet."</p> }.into_any()
                    }
                    Ok(list) => {
                        let page = list.page;
                        let older = list.has_more().then(|| page + 1);
                        let newer = (page > 1).then(|| page - 1);
                        view! {
                            <ul class="thread-list">
                                {list
                                    .threads
                                    .into_iter()
                                    .map(|t| {
                                        let href = format!("/t/{}", api::encode_key(&t.key));
                                        let count = match t.comment_count {
                                            1 => "1 comment".to_owned(),
                                            n => format!("{n} comments"),
                                        };
                                        view! {
                                            <li>
                                                // A full page load: the thread page is rendered on the server.
                                                <a href=href rel="external">{t.title}</a>
                                                " "
                                                <span class="count">{count}</span>
                                                {(!t.comments_open).then(|| view! { <span class="closed">" (closed)"</span> })}
                                            </li>
                                        }
                                    })
                                    .collect_view()}
                            </ul>
                            <nav class="pages">
                                {newer.map(|p| view! { <a href=format!("/?page={p}") rel="prev">"Newer threads"</a> })}
                                " "
                                {older.map(|p| view! { <a href=format!("/?page={p}") rel="next">"Older threads"</a> })}
                            </nav>
                        }
                            .into_any()
                    }
                    Err(_) => {
                        view! { <p class="error">"Threads could not be loaded."</p> }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}
