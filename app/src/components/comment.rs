//! The one renderer of a comment.
//!
//! The thread tree, the moderation queue and the API's `html` field ([`comment_html`], the
//! same component rendered to a string on the server) all draw a comment with
//! [`CommentView`], so their markup cannot drift apart. What differs between them comes in
//! through slots (the tree's collapse toggle, reply link and replies; the queue's thread
//! link; the staff flag and actions) and through reactive marks that become classes.

use crate::model::{Comment, UGC_REL, display_date};
use leptos::prelude::*;

/// Before the author's name: the tree's collapse toggle.
#[slot]
pub struct Lead {
    children: Children,
}

/// Right after the author's name: where the comment was posted (the queue's thread link).
#[slot]
pub struct Byline {
    children: Children,
}

/// The end of the header: the staff flag and moderation actions.
#[slot]
pub struct Tools {
    children: Children,
}

/// After the text, inside the body: the reply link and the form when replying here.
#[slot]
pub struct Footer {
    children: Children,
}

/// The replies, below the body.
#[slot]
pub struct Replies {
    /// Past the deepest indent: replies keep the indent of the last level.
    #[prop(optional)]
    flat: bool,
    children: Children,
}

/// One comment: `article.comment#c{id}` with its header (author, date), title, text, and
/// whatever the slots add. Every mark defaults to off.
#[component]
pub fn CommentView(
    /// What is shown; its status and flag are not read here (staff tools come as a slot).
    comment: Comment,
    /// The comment just posted on this page.
    #[prop(optional, into)]
    highlight: Signal<bool>,
    /// The body and replies are folded away.
    #[prop(optional, into)]
    collapsed: Signal<bool>,
    /// Staff: the comment is not published.
    #[prop(optional, into)]
    moderated: Signal<bool>,
    /// Taken down while the page was open: hidden in place.
    #[prop(optional, into)]
    gone: Signal<bool>,
    /// Arrived live since the page loaded.
    #[prop(optional, into)]
    fresh: Signal<bool>,
    /// Its author's own held comment: marked as awaiting moderation.
    #[prop(optional, into)]
    awaiting: Signal<bool>,
    #[prop(optional)] lead: Option<Lead>,
    #[prop(optional)] byline: Option<Byline>,
    #[prop(optional)] tools: Option<Tools>,
    #[prop(optional)] footer: Option<Footer>,
    #[prop(optional)] replies: Option<Replies>,
) -> impl IntoView {
    let id = comment.id;
    let author = match comment.author_url {
        Some(url) => {
            view! { <a class="author" href=url rel=UGC_REL>{comment.author_name}</a> }.into_any()
        }
        None => view! { <span class="author">{comment.author_name}</span> }.into_any(),
    };
    let shown_date = display_date(&comment.created_at);
    view! {
        <article
            class="comment"
            id=format!("c{id}")
            data-id=id
            data-depth=comment.depth
            class:highlight=move || highlight.get()
            class:collapsed=move || collapsed.get()
            class:moderated=move || moderated.get()
            class:gone=move || gone.get()
            class:fresh=move || fresh.get()
        >
            <header class="comment-meta">
                {lead.map(|l| view! { {(l.children)()} " " })}
                {author}
                {byline.map(|b| (b.children)())}
                " "
                <a class="permalink" href=format!("#c{id}")>
                    <time datetime=comment.created_at>{shown_date}</time>
                </a>
                {move || {
                    awaiting.get().then(|| view! { <span class="awaiting">"(awaiting moderation)"</span> })
                }}
                {tools.map(|t| (t.children)())}
            </header>
            <div class="comment-body" class:hidden=move || collapsed.get()>
                {comment.title.map(|t| view! { <h3 class="comment-title">{t}</h3> })}
                <div class="comment-text" inner_html=comment.body_html></div>
                {footer.map(|f| (f.children)())}
            </div>
            {replies
                .map(|r| {
                    view! {
                        <div
                            class=if r.flat { "replies flat" } else { "replies" }
                            class:hidden=move || collapsed.get()
                        >
                            {(r.children)()}
                        </div>
                    }
                })}
        </article>
    }
}

/// A comment as a self-contained HTML fragment, for API clients that insert markup (the
/// `html` field of post and preview responses): [`CommentView`] without slots or marks,
/// rendered by Leptos exactly as the thread page renders it.
#[cfg(feature = "ssr")]
pub fn comment_html(comment: &Comment) -> String {
    // Rendering creates reactive nodes (the marks), which need an owner; dropping it at the
    // end frees them.
    let owner = Owner::new();
    owner.with(|| view! { <CommentView comment=comment.clone()/> }.to_html())
}

/// Test helpers: HTML as a reader's browser sees it, without the framework's marker comments
/// (`<!>`, which only guide hydration) and with class lists in one canonical spacing (marks
/// that are off leave spaces behind).
#[cfg(all(test, feature = "ssr"))]
pub(crate) fn normalize(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<!") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = if after.starts_with("<!--") {
            after.find("-->").map_or(after.len(), |e| e + 3)
        } else {
            after.find('>').map_or(after.len(), |e| e + 1)
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    let mut canonical = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(start) = rest.find(r#"class=""#) {
        let value_start = start + r#"class=""#.len();
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        canonical.push_str(&rest[..value_start]);
        let value = &rest[value_start..value_start + len];
        canonical.push_str(&value.split_whitespace().collect::<Vec<_>>().join(" "));
        rest = &rest[value_start + len..];
    }
    canonical.push_str(rest);
    canonical
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    fn sample() -> Comment {
        Comment {
            id: 7,
            parent_id: None,
            depth: 2,
            author_name: "<b>Eve</b>".into(),
            author_url: Some("https://e.example/?a=1&b=\"2\"".into()),
            title: Some("<i>t</i>".into()),
            body_html: "<p>ok</p>".into(),
            created_at: "2026-11-21T10:00:00Z".into(),
            status: None,
            moderation: None,
        }
    }

    #[test]
    fn comment_html_escapes_author_fields_and_keeps_the_sanitised_body() {
        let html = comment_html(&sample());
        assert!(html.contains("&lt;b&gt;Eve&lt;/b&gt;"), "{html}");
        assert!(html.contains("a=1&amp;b=&quot;2&quot;"), "{html}");
        assert!(html.contains("&lt;i&gt;t&lt;/i&gt;"), "{html}");
        assert!(
            html.contains(r#"<div class="comment-text"><p>ok</p></div>"#),
            "{html}"
        );
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<i>"), "{html}");
    }

    #[test]
    fn comment_html_has_the_ids_and_classes_pages_and_styles_rely_on() {
        let html = normalize(&comment_html(&sample()));
        assert_eq!(
            html,
            concat!(
                r#"<article id="c7" data-id="7" data-depth="2" class="comment">"#,
                r#"<header class="comment-meta">"#,
                r#"<a href="https://e.example/?a=1&amp;b=&quot;2&quot;" rel="nofollow ugc noopener noreferrer" class="author">&lt;b&gt;Eve&lt;/b&gt;</a>"#,
                r##" <a href="#c7" class="permalink"><time datetime="2026-11-21T10:00:00Z">2026-11-21 10:00 UTC</time></a>"##,
                r#"</header>"#,
                r#"<div class="comment-body"><h3 class="comment-title">&lt;i&gt;t&lt;/i&gt;</h3><div class="comment-text"><p>ok</p></div></div>"#,
                r#"</article>"#,
            )
        );
    }
}
