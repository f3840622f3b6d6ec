//! Moderato's user interface and the types it shares with the server.
//!
//! Compiled twice: with `ssr` into the server (rendering pages to HTML) and with `hydrate`
//! into the browser's wasm (making those pages interactive).

#![recursion_limit = "256"]

pub mod api;
pub mod components;
pub mod embed;
pub mod live;
pub mod model;
pub mod pages;
pub mod thread;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
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
                <link rel="stylesheet" href=stylesheet_href(&options)/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Where the page's CSS is: `/pkg/moderato.HASH.css` when the site was built with hashed
/// names (the hash is read from the site's `hash.txt` once per process), else the plain
/// `/pkg/moderato.css`.
fn stylesheet_href(options: &LeptosOptions) -> String {
    static HREF: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let pkg = &options.site_pkg_dir;
    if !options.hash_files {
        return format!("/{pkg}/moderato.css");
    }
    HREF.get_or_init(|| {
        let hash = std::fs::read_to_string(&*options.hash_file)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let (kind, hash) = line.split_once(':')?;
                    (kind.trim() == "css").then(|| hash.trim().to_owned())
                })
            });
        match hash {
            Some(hash) => format!("/{pkg}/moderato.{hash}.css"),
            None => format!("/{pkg}/moderato.css"),
        }
    })
    .clone()
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
        <Title text="Moderato"/>
        <Router>
            <SiteHeader/>
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
                    <Route
                        path=(StaticSegment("embed"), StaticSegment("t"), ParamSegment("key"))
                        view=pages::embed::EmbedThreadPage
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=(StaticSegment("embed"), StaticSegment("login"))
                        view=pages::embed::EmbedLoginPage
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

/// The site's header; not on the framed thread view (`/embed/...`), which sits inside
/// another site's page.
#[component]
fn SiteHeader() -> impl IntoView {
    let path = leptos_router::hooks::use_location()
        .pathname
        .get_untracked();
    (!path.starts_with("/embed/")).then(|| {
        view! {
            <header class="site-header">
                <a href="/" class="brand" rel="external">"Moderato"</a>
                <pages::staff::SessionLinks/>
            </header>
        }
    })
}
