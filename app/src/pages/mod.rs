//! Routed pages.

pub mod embed;
pub mod home;
pub mod spam;
pub mod staff;
pub mod thread;

use leptos::prelude::*;

/// Marks the response 404 while rendering on the server; a no-op in the browser.
pub fn set_not_found() {
    #[cfg(feature = "ssr")]
    if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
        resp.set_status(http::StatusCode::NOT_FOUND);
    }
}

/// Shown for any unknown path.
#[component]
pub fn NotFound() -> impl IntoView {
    set_not_found();
    view! {
        <section class="not-found">
            <h1>"Not found"</h1>
            <p>"There is nothing at this address."</p>
        </section>
    }
}
