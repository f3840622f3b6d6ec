//! The home page: the list of threads.

use crate::api;
use leptos::prelude::*;

/// Lists every thread with its comment count.
#[component]
pub fn HomePage() -> impl IntoView {
    let threads = Resource::new_blocking(|| (), |_| api::threads());
    view! {
        <h1>"Threads"</h1>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match threads.await {
                    Ok(list) if list.is_empty() => {
                        view! { <p class="empty">"No threads yet."</p> }.into_any()
                    }
                    Ok(list) => {
                        view! {
                            <ul class="thread-list">
                                {list
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
