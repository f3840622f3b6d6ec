//! Moderato's user interface and the types it shares with the server.
//!
//! Compiled twice: with `ssr` into the server (rendering pages to HTML) and with `hydrate`
//! into the browser's wasm (making those pages interactive).

#![recursion_limit = "256"]

pub mod api;
pub mod components;
pub mod live;
pub mod model;
pub mod pages;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::{
    ParamSegment, SsrMode, StaticSegment,
    components::{Route, Router, Routes},
};

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The routed application.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser, after hydration: tests and scripts wait for this mark.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(body) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.body())
        {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
    view! {
        <Stylesheet id="leptos" href="/pkg/moderato.css"/>
        <Title text="Moderato"/>
        <Router>
            <header class="site-header">
                <a href="/" class="brand" rel="external">"Moderato"</a>
                <pages::staff::SessionLinks/>
            </header>
            <main>
                <Routes fallback=pages::NotFound>
                    <Route path=StaticSegment("") view=pages::home::HomePage ssr=SsrMode::Async/>
                    // Async: the whole comment tree is in the first HTML, so it reads without
                    // JavaScript and search engines see it.
                    <Route
                        path=(StaticSegment("t"), ParamSegment("key"))
                        view=pages::thread::ThreadPage
                        ssr=SsrMode::Async
                    />
                    <Route path=StaticSegment("login") view=pages::staff::LoginPage ssr=SsrMode::Async/>
                    <Route path=StaticSegment("moderation") view=pages::staff::QueuePage ssr=SsrMode::Async/>
                    <Route
                        path=(StaticSegment("moderation"), StaticSegment("spam"))
                        view=pages::spam::SpamPage
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=(StaticSegment("moderation"), StaticSegment("audit"))
                        view=pages::staff::AuditPage
                        ssr=SsrMode::Async
                    />
                </Routes>
            </main>
        </Router>
    }
}
