//! The comment tree: its reactive state and the recursive comment component.
//!
//! Comments arrive as a flat list in tree order (from the page, "show more", or a post).
//! Each comment's children live in their own signal, so inserting a reply re-renders only
//! the list it joins, never the whole thread: that keeps 10,000-comment threads responsive.

use crate::components::form::{CommentForm, Draft};
use crate::components::staff::ModerationBar;
use crate::model::{
    Comment, CommentId, FormSettings, FormToken, ModerationFlag, Status, ThreadResponse, UGC_REL,
    display_date,
};
use leptos::prelude::*;
use std::collections::HashMap;

#[derive(Clone)]
struct Node {
    comment: Comment,
    /// Staff only: where the comment stands, updated in place by staff actions.
    status: ArcRwSignal<Option<Status>>,
    moderation: ArcRwSignal<Option<ModerationFlag>>,
    /// Taken down while this page was open (readers): hidden in place.
    gone: ArcRwSignal<bool>,
    children: ArcRwSignal<Vec<CommentId>>,
}

/// Everything the thread page's components share, provided as context.
#[derive(Clone, Copy)]
pub struct ThreadState {
    pub key: StoredValue<String>,
    nodes: StoredValue<HashMap<CommentId, Node>>,
    /// Top-level comments, in order.
    pub roots: RwSignal<Vec<CommentId>>,
    /// The comment the form replies to; `None` puts the form under the thread.
    pub reply_to: RwSignal<Option<CommentId>>,
    /// The comment just posted, highlighted until the next one.
    pub highlighted: RwSignal<Option<CommentId>>,
    pub settings: StoredValue<FormSettings>,
    pub open: RwSignal<bool>,
    /// Why comments are closed, when they are.
    pub closed_reason: StoredValue<Option<String>>,
    pub token: RwSignal<Option<FormToken>>,
    /// Cursor of the next page, when there is one.
    pub next: RwSignal<Option<String>>,
    pub remaining_top_level: RwSignal<i64>,
    pub comment_count: RwSignal<i64>,
    /// What the reader has typed: kept here so the form can move between reply spots.
    pub draft: Draft,
    /// The viewer is staff: flags and moderation buttons show.
    pub staff: bool,
    /// The newest live event this page reflects (the catch-up cursor).
    pub cursor: StoredValue<i64>,
    /// The live socket is connected.
    pub live: RwSignal<bool>,
    /// Comments that arrived live and were not yet looked at, oldest first.
    pub unseen: RwSignal<Vec<CommentId>>,
    /// Comments that arrived live, marked until the next reload.
    pub fresh: RwSignal<Vec<CommentId>>,
}

impl ThreadState {
    /// Builds the state from the first page of a thread.
    pub fn new(
        data: ThreadResponse,
        token: Option<FormToken>,
        reply_to: Option<CommentId>,
        staff: bool,
    ) -> Self {
        let state = ThreadState {
            key: StoredValue::new(data.thread.key.clone()),
            nodes: StoredValue::new(HashMap::with_capacity(data.comments.len())),
            roots: RwSignal::new(Vec::new()),
            reply_to: RwSignal::new(reply_to),
            highlighted: RwSignal::new(None),
            settings: StoredValue::new(data.form_settings.clone()),
            open: RwSignal::new(data.thread.comments_open),
            closed_reason: StoredValue::new(data.thread.closed_reason.clone()),
            token: RwSignal::new(token),
            next: RwSignal::new(data.next.clone()),
            remaining_top_level: RwSignal::new(data.remaining_top_level),
            comment_count: RwSignal::new(data.thread.comment_count),
            draft: Draft::new(&data.thread.key),
            staff,
            cursor: StoredValue::new(data.last_event_id),
            live: RwSignal::new(false),
            unseen: RwSignal::new(Vec::new()),
            fresh: RwSignal::new(Vec::new()),
        };
        state.insert_all(data.comments);
        state
    }

    /// Adds comments given in tree order; ones already present are skipped.
    pub fn insert_all(&self, comments: Vec<Comment>) {
        // Batch the new top-level ids so the root list is written once, not per comment.
        let mut new_roots = Vec::new();
        let mut child_updates: Vec<(ArcRwSignal<Vec<CommentId>>, CommentId)> = Vec::new();
        self.nodes.update_value(|nodes| {
            for c in comments {
                if nodes.contains_key(&c.id) {
                    continue;
                }
                let id = c.id;
                let parent = c
                    .parent_id
                    .and_then(|p| nodes.get(&p))
                    .map(|p| p.children.clone());
                nodes.insert(
                    id,
                    Node {
                        status: ArcRwSignal::new(c.status),
                        moderation: ArcRwSignal::new(c.moderation.clone()),
                        gone: ArcRwSignal::new(false),
                        comment: c,
                        children: ArcRwSignal::new(Vec::new()),
                    },
                );
                match parent {
                    Some(children) => child_updates.push((children, id)),
                    // A reply whose parent is not visible to this viewer still shows, at the top.
                    None => new_roots.push(id),
                }
            }
        });
        for (children, id) in child_updates {
            children.update(|v| v.push(id));
        }
        if !new_roots.is_empty() {
            self.roots.update(|r| r.extend(new_roots));
        }
    }

    /// Adds one comment (e.g. just posted) and returns whether it was new.
    pub fn insert(&self, comment: Comment) -> bool {
        let id = comment.id;
        let known = self.nodes.with_value(|n| n.contains_key(&id));
        if !known {
            self.insert_all(vec![comment]);
            self.comment_count.update(|n| *n += 1);
        }
        !known
    }

    /// Takes a comment's new status and flag (after a staff action) into the tree.
    pub fn update(&self, comment: &Comment) {
        if let Some(node) = self.node(comment.id) {
            node.status.set(comment.status);
            node.moderation.set(comment.moderation.clone());
            node.gone.set(false);
        }
    }

    /// Shows a comment that became public, or adds it if this page never had it.
    pub fn reveal(&self, comment: Comment) -> bool {
        match self.node(comment.id) {
            Some(node) => {
                let was_gone = node.gone.get_untracked();
                node.gone.set(false);
                node.status.set(comment.status);
                was_gone
            }
            None => self.insert(comment),
        }
    }

    /// Hides a comment that was taken down (for readers).
    pub fn hide(&self, id: CommentId) {
        if let Some(node) = self.node(id)
            && !node.gone.get_untracked()
        {
            node.gone.set(true);
            self.comment_count.update(|n| *n = (*n - 1).max(0));
        }
    }

    fn node(&self, id: CommentId) -> Option<Node> {
        self.nodes.with_value(|n| n.get(&id).cloned())
    }

    /// Replies below a comment, at any depth, among those loaded.
    pub fn descendant_count(&self, id: CommentId) -> usize {
        self.nodes.with_value(|nodes| {
            let mut count = 0;
            let mut stack = vec![id];
            while let Some(i) = stack.pop() {
                if let Some(n) = nodes.get(&i) {
                    let kids = n.children.get_untracked();
                    count += kids.len();
                    stack.extend(kids);
                }
            }
            count
        })
    }
}

/// The whole tree: top-level comments and, recursively, their replies.
#[component]
pub fn CommentTree() -> impl IntoView {
    let state = expect_context::<ThreadState>();
    view! {
        <div class="comment-tree">
            <For
                each=move || state.roots.get()
                key=|id| *id
                children=move |id| view! { <CommentNode id/> }
            />
        </div>
    }
}

/// One comment, its reply link and its collapsible replies.
#[component]
pub fn CommentNode(id: CommentId) -> impl IntoView {
    let state = expect_context::<ThreadState>();
    let Some(Node {
        comment,
        status,
        moderation,
        gone,
        children,
    }) = state.node(id)
    else {
        return ().into_any();
    };
    let flagged = {
        let status = status.clone();
        move || status.get().is_some_and(|s| s != Status::Published)
    };
    let collapsed = RwSignal::new(false);
    let max_depth = state.settings.with_value(|s| s.max_depth);
    // Past max_depth, replies keep the indent of the last level instead of narrowing on.
    let replies_class = if comment.depth + 1 >= max_depth {
        "replies flat"
    } else {
        "replies"
    };
    let author = match comment.author_url.clone() {
        Some(url) => {
            view! { <a class="author" href=url rel=UGC_REL>{comment.author_name.clone()}</a> }
                .into_any()
        }
        None => view! { <span class="author">{comment.author_name.clone()}</span> }.into_any(),
    };
    let shown_date = display_date(&comment.created_at);
    let toggle_label = move || {
        if collapsed.get() {
            let n = state.descendant_count(id);
            match n {
                0 => "[+]".to_owned(),
                1 => "[+] 1 reply".to_owned(),
                n => format!("[+] {n} replies"),
            }
        } else {
            "[–]".to_owned()
        }
    };
    let kids = children.clone();
    let on_reply = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        state.reply_to.set(Some(id));
    };
    view! {
        <article
            class="comment"
            id=format!("c{id}")
            data-id=id
            data-depth=comment.depth
            class:highlight=move || state.highlighted.get() == Some(id)
            class:collapsed=move || collapsed.get()
            class:moderated=flagged
            class:gone=move || gone.get()
            class:fresh=move || state.fresh.with(|f| f.contains(&id))
        >
            <header class="comment-meta">
                <button
                    class="toggle"
                    type="button"
                    title="Collapse or expand this comment and its replies"
                    aria-expanded=move || (!collapsed.get()).to_string()
                    on:click=move |_| collapsed.update(|c| *c = !*c)
                >
                    {toggle_label}
                </button>
                " "
                {author}
                " "
                <a class="permalink" href=format!("#c{id}")>
                    <time datetime=comment.created_at.clone()>{shown_date}</time>
                </a>
                {
                    let own_status = status.clone();
                    move || {
                        (!state.staff && own_status.get() == Some(Status::Held))
                            .then(|| view! { <span class="awaiting">"(awaiting moderation)"</span> })
                    }
                }
                {state.staff.then(|| view! { <ModerationBar id status moderation/> })}
            </header>
            <div class="comment-body" class:hidden=move || collapsed.get()>
                {comment.title.clone().map(|t| view! { <h3 class="comment-title">{t}</h3> })}
                <div class="comment-text" inner_html=comment.body_html.clone()></div>
                <Show when=move || state.open.get()>
                    <a class="reply-link" href=format!("?reply={id}#comment-form") on:click=on_reply>
                        "reply"
                    </a>
                </Show>
                <Show when=move || state.reply_to.get() == Some(id)>
                    <CommentForm/>
                </Show>
            </div>
            <div class=replies_class class:hidden=move || collapsed.get()>
                <For
                    each=move || kids.get()
                    key=|id| *id
                    children=move |id| view! { <CommentNode id/> }
                />
            </div>
        </article>
    }
    .into_any()
}
