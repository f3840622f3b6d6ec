//! The framed thread view, `/embed/t/{key}`: the same thread page in a layout without the
//! site's chrome, themed by the embedding page, with the small script that reports its
//! height to the parent (`app/assets/frame.js`).

use crate::embed::FRAME_JS_VERSION;
use crate::pages::staff::LoginPage;
use crate::pages::thread::ThreadPage;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// The CSS custom properties an embedding page may set (as `--moderato-NAME` on its
/// element; embed.js passes them as `css-NAME`), and the property each one sets here.
/// A background also paints the frame, which is otherwise transparent on a light theme.
const STYLE_VARS: [(&str, &[&str]); 7] = [
    ("accent", &["--accent"]),
    ("fg", &["--fg"]),
    ("bg", &["--bg", "--embed-bg"]),
    ("muted", &["--muted"]),
    ("line", &["--line"]),
    ("soft", &["--soft"]),
    ("font", &["--font"]),
];

/// A value safe to place in a style attribute: colours, lengths, font names; nothing that
/// could end the declaration (`;`), open a string or name a URL scheme.
fn safe_css_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, ' ' | '#' | '%' | '(' | ')' | ',' | '.' | '-')
        })
}

/// An origin as embed.js sends it (`location.origin`); the server has already refused any
/// that is not allowed, this only keeps the attribute well-formed.
fn plausible_origin(o: &str) -> bool {
    let host = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .unwrap_or("");
    !host.is_empty()
        && host.len() <= 200
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// The thread view inside another site's page.
#[component]
pub fn EmbedThreadPage() -> impl IntoView {
    view! {
        <EmbedLayout>
            <ThreadPage/>
            <StaffLink/>
        </EmbedLayout>
    }
}

/// Staff sign-in inside the frame (`/embed/login`): a session started here lives in this
/// embedding site's cookie jar (see `server::http::embed::embed_session_cookie`).
#[component]
pub fn EmbedLoginPage() -> impl IntoView {
    view! {
        <EmbedLayout>
            <LoginPage/>
        </EmbedLayout>
    }
}

/// A quiet link under the thread for staff to sign in without leaving the host page; gone
/// once signed in.
#[component]
fn StaffLink() -> impl IntoView {
    let location = leptos_router::hooks::use_location();
    let (pathname, search) = (location.pathname, location.search);
    let query = use_query_map();
    let viewer = Resource::new_blocking(|| (), |_| crate::api::viewer());
    let href = move || {
        // The raw query string, with or without its "?" depending on the side.
        let search = search.get();
        let search = search.trim_start_matches('?');
        let here = if search.is_empty() {
            pathname.get()
        } else {
            format!("{}?{search}", pathname.get())
        };
        let origin = query.read().get("origin").unwrap_or_default();
        format!(
            "/embed/login?{}",
            [("origin", origin.as_str()), ("next", here.as_str())]
                .iter()
                .map(|(k, v)| format!("{k}={}", crate::api::encode_key(v)))
                .collect::<Vec<_>>()
                .join("&")
        )
    };
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                (viewer.await.name.is_none())
                    .then(|| view! { <p class="embed-staff"><a href=href rel="external">"Staff sign-in"</a></p> })
            })}
        </Suspense>
    }
}

/// The frame around an embedded page: theme, the host's style values, the checked parent
/// origin the frame script posts to, and that script.
#[component]
fn EmbedLayout(children: Children) -> impl IntoView {
    let query = use_query_map();
    let q = query.read_untracked();
    let theme = match q.get("theme").as_deref() {
        Some("dark") => "dark",
        Some("auto") => "auto",
        _ => "light",
    };
    let origin = q.get("origin").filter(|o| plausible_origin(o));
    let comment = q
        .get("comment")
        .filter(|c| !c.is_empty() && c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit()));
    let style: String = STYLE_VARS
        .iter()
        .filter_map(|(name, props)| {
            q.get(&format!("css-{name}"))
                .filter(|v| safe_css_value(v))
                .map(|v| {
                    props
                        .iter()
                        .map(|p| format!("{p}:{v};"))
                        .collect::<String>()
                })
        })
        .collect();
    drop(q);
    view! {
        <div
            class="embed"
            data-moderato-embed=""
            data-theme=theme
            data-parent-origin=origin
            data-comment=comment
            style=(!style.is_empty()).then_some(style)
        >
            {children()}
        </div>
        <script src=format!("/embed/frame.js?v={FRAME_JS_VERSION:x}") defer></script>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_values_cannot_leave_their_declaration() {
        assert!(safe_css_value("#c00"));
        assert!(safe_css_value("rgb(10, 20, 30)"));
        assert!(safe_css_value("Georgia, serif"));
        assert!(!safe_css_value("red;background:url(x)"));
        assert!(!safe_css_value("red}body{"));
        assert!(!safe_css_value("\"x\""));
        assert!(!safe_css_value("url(https://x)"));
        assert!(!safe_css_value(""));
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert!(plausible_origin("http://127.0.0.1:8080"));
        assert!(plausible_origin("https://blog.example.org"));
        assert!(!plausible_origin("https://blog.example.org/path"));
        assert!(!plausible_origin("javascript:alert(1)"));
        assert!(!plausible_origin("https://"));
    }
}
