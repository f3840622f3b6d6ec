//! The comment tree on the thread page: the reactive wrapper around [`thread::Tree`] and the
//! recursive component that draws it with [`CommentView`].
//!
//! Comments arrive as a flat list in tree order (from the page, "show more", a post or a live
//! event). The plain-Rust tree decides where each goes and reports what changed; this layer
//! holds one trigger per list and per comment and wakes only those, so inserting a reply
//! re-renders only the list it joins, never the whole thread: that keeps 10,000-comment
//! threads responsive.

use crate::components::comment::{CommentView, Footer, Lead, Replies, Tools};
use crate::components::form::{CommentForm, FormState};
use crate::components::live::LiveState;
use crate::components::staff::{ModerationBar, StaffState};
use crate::live::Event;
use crate::model::{Comment, CommentId, ModerationFlag, Status, ThreadResponse};
use crate::thread::{Changes, List, Tree};
use leptos::prelude::*;
use std::collections::HashMap;

/// What a trigger wakes: the views of one list, or of one comment's status and visibility.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Watch {
    List(List),
    Comment(CommentId),
}

/// The tree concern of the thread view: the comments, the published count, paging and the
/// highlight. Provided as context by the thread page.
#[derive(Clone, Copy)]
pub struct TreeState {
    pub key: StoredValue<String>,
    tree: StoredValue<Tree>,
    /// Made when a view first watches something; a change without watchers wakes nothing.
    triggers: StoredValue<HashMap<Watch, ArcTrigger>>,
    count: RwSignal<i64>,
    /// The comment just posted, highlighted until the next one.
    pub highlighted: RwSignal<Option<CommentId>>,
    /// Cursor of the next page, when there is one.
    pub next: RwSignal<Option<String>>,
    pub remaining_top_level: RwSignal<i64>,
    /// Replies deeper than this keep the indent of this level.
    pub max_depth: u32,
}

impl TreeState {
    /// Builds the tree from the first page of a thread.
    pub fn new(data: &ThreadResponse) -> Self {
        let mut tree = Tree::new();
        tree.load(data.comments.iter().cloned(), data.thread.comment_count);
        TreeState {
            key: StoredValue::new(data.thread.key.clone()),
            count: RwSignal::new(tree.published()),
            tree: StoredValue::new(tree),
            triggers: StoredValue::new(HashMap::new()),
            highlighted: RwSignal::new(None),
            next: RwSignal::new(data.next.clone()),
            remaining_top_level: RwSignal::new(data.remaining_top_level),
            max_depth: data.form_settings.max_depth,
        }
    }

    /// Changes the tree and wakes the views of what changed.
    fn change(&self, f: impl FnOnce(&mut Tree) -> Changes) -> Changes {
        let Some((changes, count)) = self.tree.try_update_value(|t| {
            let changes = f(t);
            (changes, t.published())
        }) else {
            return Changes::default();
        };
        // Woken after the tree is released: a woken view reads it.
        self.triggers.with_value(|triggers| {
            let lists = changes.lists.iter().map(|l| Watch::List(*l));
            let comments = changes.updated.iter().map(|id| Watch::Comment(*id));
            for watch in lists.chain(comments) {
                if let Some(t) = triggers.get(&watch) {
                    t.notify();
                }
            }
        });
        if self.count.get_untracked() != count {
            self.count.set(count);
        }
        changes
    }

    fn watch(&self, watch: Watch) {
        let trigger = self
            .triggers
            .try_update_value(|t| t.entry(watch).or_insert_with(ArcTrigger::new).clone());
        if let Some(t) = trigger {
            t.track();
        }
    }

    /// Takes in a page of comments (first page, "show more", refetch) and the server's count.
    pub fn load(&self, comments: Vec<Comment>, published: i64) -> Changes {
        self.change(|t| t.load(comments, published))
    }

    /// Adds one comment just posted here; returns whether it was new.
    pub fn add(&self, comment: Comment) -> bool {
        let id = comment.id;
        self.change(|t| t.add(comment)).appeared.contains(&id)
    }

    /// Takes a comment's new status and flag after a staff action.
    pub fn update(&self, comment: &Comment) {
        self.change(|t| t.update(comment));
    }

    /// Applies a live event; returns what changed (what appeared is marked new).
    pub fn apply(&self, event: &Event, staff: bool) -> Changes {
        self.change(|t| t.apply(event, staff))
    }

    /// The comments of a list, in order (tracked).
    fn list(&self, list: List) -> Vec<CommentId> {
        self.watch(Watch::List(list));
        self.tree.with_value(|t| t.list(list).to_vec())
    }

    fn comment(&self, id: CommentId) -> Option<Comment> {
        self.tree.with_value(|t| t.comment(id).cloned())
    }

    /// A comment's status (tracked).
    fn status(&self, id: CommentId) -> Option<Status> {
        self.watch(Watch::Comment(id));
        self.tree.with_value(|t| t.status(id))
    }

    /// A comment's moderation flag (tracked).
    fn moderation(&self, id: CommentId) -> Option<ModerationFlag> {
        self.watch(Watch::Comment(id));
        self.tree.with_value(|t| t.moderation(id))
    }

    /// Whether a comment was taken down while the page was open (tracked).
    fn is_gone(&self, id: CommentId) -> bool {
        self.watch(Watch::Comment(id));
        self.tree.with_value(|t| t.is_gone(id))
    }

    /// The thread's published comments (tracked).
    pub fn count(&self) -> i64 {
        self.count.get()
    }

    /// Replies below a comment, at any depth, among those loaded and shown.
    pub fn descendant_count(&self, id: CommentId) -> usize {
        self.tree.with_value(|t| t.descendant_count(id))
    }
}

/// The whole tree: top-level comments and, recursively, their replies.
#[component]
pub fn CommentTree() -> impl IntoView {
    let tree = expect_context::<TreeState>();
    view! {
        <div class="comment-tree">
            <For
                each=move || tree.list(List::Top)
                key=|id| *id
                children=move |id| view! { <CommentNode id/> }
            />
        </div>
    }
}

/// One comment of the tree with its toggle, reply link, staff tools and collapsible replies.
#[component]
pub fn CommentNode(id: CommentId) -> impl IntoView {
    let tree = expect_context::<TreeState>();
    let form = expect_context::<FormState>();
    let live = expect_context::<LiveState>();
    let staff = expect_context::<StaffState>();
    let Some(comment) = tree.comment(id) else {
        return ().into_any();
    };
    let collapsed = RwSignal::new(false);
    // Past max_depth, replies keep the indent of the last level instead of narrowing on.
    let flat = comment.depth + 1 >= tree.max_depth;
    let status = Signal::derive(move || tree.status(id));
    let toggle_label = move || {
        if collapsed.get() {
            match tree.descendant_count(id) {
                0 => "[+]".to_owned(),
                1 => "[+] 1 reply".to_owned(),
                n => format!("[+] {n} replies"),
            }
        } else {
            "[–]".to_owned()
        }
    };
    let on_reply = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        form.reply_to.set(Some(id));
    };
    let open = form.open;
    view! {
        <CommentView
            comment
            highlight=Signal::derive(move || tree.highlighted.get() == Some(id))
            collapsed=collapsed
            moderated=Signal::derive(move || {
                staff.enabled && status.get().is_some_and(|s| s != Status::Published)
            })
            gone=Signal::derive(move || tree.is_gone(id))
            fresh=Signal::derive(move || live.fresh.with(|f| f.contains(&id)))
            awaiting=Signal::derive(move || !staff.enabled && status.get() == Some(Status::Held))
        >
            <Lead slot>
                <button
                    class="toggle"
                    type="button"
                    title="Collapse or expand this comment and its replies"
                    aria-expanded=move || (!collapsed.get()).to_string()
                    on:click=move |_| collapsed.update(|c| *c = !*c)
                >
                    {toggle_label}
                </button>
            </Lead>
            <Tools slot>
                {staff
                    .enabled
                    .then(|| {
                        view! {
                            <ModerationBar
                                id
                                status
                                moderation=Signal::derive(move || tree.moderation(id))
                                on_done=staff.applied
                            />
                        }
                    })}
            </Tools>
            <Footer slot>
                {open
                    .then(|| {
                        view! {
                            <a
                                class="reply-link"
                                href=format!("?reply={id}#comment-form")
                                on:click=on_reply
                            >
                                "reply"
                            </a>
                        }
                    })}
                <Show when=move || form.reply_to.get() == Some(id)>
                    <CommentForm/>
                </Show>
            </Footer>
            <Replies slot flat>
                <For
                    each=move || tree.list(List::RepliesOf(id))
                    key=|id| *id
                    children=move |id| view! { <CommentNode id/> }
                />
            </Replies>
        </CommentView>
    }
    .into_any()
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use crate::components::comment::{comment_html, normalize};
    use crate::model::{FormSettings, ModerationFlag, ThreadInfo};

    fn comment(id: CommentId, parent: Option<CommentId>, depth: u32) -> Comment {
        Comment {
            id,
            parent_id: parent,
            depth,
            author_name: format!("<b>Author {id}</b>"),
            author_url: Some("https://a.example/?x=1&y=2".into()),
            title: Some(format!("Title {id}")),
            body_html: format!("<p>Text {id}</p>"),
            created_at: "2026-11-21T10:00:00Z".into(),
            status: None,
            moderation: None,
        }
    }

    fn page(comments: Vec<Comment>, published: i64) -> ThreadResponse {
        ThreadResponse {
            thread: ThreadInfo {
                key: "t".into(),
                title: "T".into(),
                kind: "page".into(),
                comments_open: true,
                closed_reason: None,
                comment_count: published,
            },
            comments,
            threaded: true,
            next: None,
            remaining_top_level: 0,
            last_event_id: 0,
            form_settings: FormSettings {
                exclude_fields: Vec::new(),
                max_length: 1000,
                max_depth: 5,
                reply_notifications: false,
            },
        }
    }

    /// Renders the thread page's tree for `data` as the server does, after `then` ran
    /// against its tree state.
    fn render(data: &ThreadResponse, staff: bool, then: impl FnOnce(TreeState)) -> String {
        let owner = Owner::new();
        owner.with(|| {
            let tree = TreeState::new(data);
            provide_context(tree);
            provide_context(FormState::new(data, None, None));
            provide_context(LiveState::new(data));
            provide_context(StaffState {
                enabled: staff,
                applied: Callback::new(move |c: Comment| tree.update(&c)),
            });
            then(tree);
            normalize(&view! { <CommentTree/> }.to_html())
        })
    }

    /// Where the part of `html` from `start` up to and including the next `end` lies.
    fn cut(html: &str, start: &str, end: &str) -> Option<(usize, usize)> {
        let a = html.find(start)?;
        let b = html[a..].find(end)? + a + end.len();
        Some((a, b))
    }

    #[test]
    fn the_api_html_is_the_page_comment_without_its_slots() {
        let leaf = comment(2, Some(1), 1);
        let data = page(vec![comment(1, None, 0), leaf.clone()], 2);
        let html = render(&data, false, |_| {});
        let (a, _) = cut(&html, r#"<article id="c2""#, ">").unwrap();
        let mut article = html[a..].to_owned();
        // A leaf: its markup ends at the first closing article tag.
        let end = article.find("</article>").unwrap() + "</article>".len();
        article.truncate(end);
        // Take away what the tree's slots add: the toggle, the reply link, the reply list.
        let slots = [
            (r#"<button type="button" title="Collapse"#, "</button> "),
            (r#"<a href="?reply=2#comment-form""#, "</a>"),
            (r#"<div class="replies">"#, "</div>"),
        ];
        for (start, end) in slots {
            let (a, b) = cut(&article, start, end).expect("the page's comment has its slots");
            article.replace_range(a..b, "");
        }
        assert_eq!(article, normalize(&comment_html(&leaf)));
    }

    #[test]
    fn readers_get_no_staff_tools_and_staff_get_the_flag_in_place() {
        let mut held = comment(1, None, 0);
        let reader_html = render(&page(vec![held.clone()], 1), false, |_| {});
        assert!(!reader_html.contains("mod-bar"), "{reader_html}");
        assert!(!reader_html.contains("moderated"), "{reader_html}");

        held.status = Some(Status::Held);
        held.moderation = Some(ModerationFlag {
            flagged: true,
            reason: Some("too many links".into()),
            score: Some(0.25),
        });
        let staff_html = render(&page(vec![held], 0), true, |_| {});
        assert!(
            staff_html.contains(r#"data-depth="0" class="comment moderated">"#),
            "{staff_html}"
        );
        assert!(
            staff_html.contains("(moderated) held: too many links · spam score 0.25</span>"),
            "{staff_html}"
        );
        // The bar sits in the comment's header, where the tree's CSS expects it.
        let header = cut(&staff_html, r#"<header class="comment-meta">"#, "</header>").unwrap();
        assert!(staff_html[header.0..header.1].contains(r#"<span class="mod-bar">"#));
    }

    #[test]
    fn live_changes_render_where_they_belong() {
        let data = page(vec![comment(1, None, 0), comment(2, None, 0)], 2);
        let html = render(&data, false, |tree| {
            tree.apply(
                &Event::CommentPosted {
                    comment: comment(3, Some(1), 1),
                    awaiting_moderation: false,
                },
                false,
            );
            tree.apply(
                &Event::CommentStatusChanged {
                    comment_id: 2,
                    visible: Some(false),
                    status_before: None,
                    comment: None,
                },
                false,
            );
            assert_eq!(tree.count.get_untracked(), 2);
        });
        // 3 is inside 1's replies, which come before 2; 2 is hidden in place.
        let replies_of_1 = html.find(r#"<div class="replies">"#).unwrap();
        let c3 = html.find(r#"id="c3""#).unwrap();
        let c2 = html
            .find(r#"<article id="c2" data-id="2" data-depth="0" class="comment gone">"#)
            .unwrap();
        assert!(replies_of_1 < c3 && c3 < c2, "{html}");
    }
}
