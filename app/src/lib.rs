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

/// Which browser code a page loads. The server decides per request and says so in context;
/// a page it says nothing about gets the whole app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bundle {
    /// The whole Leptos app, hydrating the page: staff, and every page but a reader's thread.
    #[default]
    Full,
    /// The light reader client (`frontend` built with its `reader` feature), which enhances
    /// the server-rendered thread page: a reader's `/t/{key}` and `/embed/t/{key}`. It has
    /// none of the staff pages' code and a tenth of the size.
    Reader,
}

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let scripts = match use_context::<Bundle>().unwrap_or_default() {
        Bundle::Full => view! { <HydrationScripts options=options.clone()/> }.into_any(),
        Bundle::Reader => {
            // Nothing hydrates this page, so its resources are not serialized into it for a
            // client that would never read them: on a big thread that was the whole first
            // page of comments a second time, as JSON, for the browser to parse.
            if let Some(sc) = Owner::current_shared_context() {
                sc.set_is_hydrating(false);
            }
            view! { <ReaderScripts options=options.clone()/> }.into_any()
        }
    };
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="stylesheet" href=asset_href(&options, "css")/>
                {scripts}
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Loads the reader client: both files are fetched at once (the hints), and the module runs
/// after the document is parsed, as module scripts do.
#[component]
fn ReaderScripts(options: LeptosOptions) -> impl IntoView {
    let js = asset_href(&options, "reader_js");
    let wasm = asset_href(&options, "reader_wasm");
    let nonce = leptos::nonce::use_nonce();
    let script = format!("import init from {js:?};init({{module_or_path:{wasm:?}}});");
    view! {
        <link rel="modulepreload" href=js/>
        <link rel="preload" href=wasm r#as="fetch" r#type="application/wasm" crossorigin=""/>
        <script type="module" nonce=nonce>{script}</script>
    }
}

/// Where one of the site's built files is. `scripts/assets.mjs` names them by content
/// (`/pkg/moderato.HASH.css`, `/pkg/reader.HASH.wasm`) and lists the hashes in the site's
/// `hash.txt` (read once per process); a site built without hashes has the plain names.
fn asset_href(options: &LeptosOptions, kind: &str) -> String {
    static HASHES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let pkg = &options.site_pkg_dir;
    let (stem, ext, plain) = match kind {
        "reader_js" => ("reader", "js", "reader.js"),
        "reader_wasm" => ("reader", "wasm", "reader_bg.wasm"),
        _ => ("moderato", "css", "moderato.css"),
    };
    if !options.hash_files {
        return format!("/{pkg}/{plain}");
    }
    let hashes = HASHES.get_or_init(|| {
        std::fs::read_to_string(&*options.hash_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (kind, hash) = line.split_once(':')?;
                Some((kind.trim().to_owned(), hash.trim().to_owned()))
            })
            .collect()
    });
    match hashes.iter().find(|(k, _)| k == kind) {
        Some((_, hash)) => format!("/{pkg}/{stem}.{hash}.{ext}"),
        None => format!("/{pkg}/{plain}"),
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
