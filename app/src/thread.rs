//! A thread's comments as plain data: the tree the thread page shows, what each change
//! (a page loaded, a post, a live event, a staff action) does to it, and the published count.
//!
//! No signals live here, so all of it is unit-tested without a browser. The reactive layer
//! (`components::tree`) keeps one of these and, after each change, wakes only the lists and
//! comments that the returned [`Changes`] name: inserting a reply re-renders the one list it
//! joins, never the whole thread.

use crate::live::Event;
use crate::model::{Comment, CommentId, ModerationFlag, Status};
use std::collections::HashMap;

struct Entry {
    comment: Comment,
    /// Replies, oldest first.
    children: Vec<CommentId>,
    /// The comment whose replies list holds this one (`None`: top level).
    under: Option<CommentId>,
    /// Taken down while the page was open (readers): kept, so a later reveal shows it in
    /// place, but hidden and not counted.
    gone: bool,
}

impl Entry {
    /// Whether the comment counts as published: a reader's copy carries no status (it is
    /// public, or the reader would not have it) unless marked held for its own author.
    fn counts(&self) -> bool {
        !self.gone && matches!(self.comment.status, None | Some(Status::Published))
    }
}

/// A list of comments in the tree: the top level, or the replies of one comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum List {
    Top,
    RepliesOf(CommentId),
}

/// What one change touched, so the view redraws only that.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Lists that gained comments, each named once, in the order they first grew.
    pub lists: Vec<List>,
    /// Comments already shown whose status, flag or visibility changed.
    pub updated: Vec<CommentId>,
    /// Comments that appeared for this viewer (new, or shown again after being hidden).
    pub appeared: Vec<CommentId>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.updated.is_empty() && self.appeared.is_empty()
    }

    fn grew(&mut self, list: List) {
        if !self.lists.contains(&list) {
            self.lists.push(list);
        }
    }
}

/// The comments of one thread as this viewer sees them, in tree order.
#[derive(Default)]
pub struct Tree {
    nodes: HashMap<CommentId, Entry>,
    roots: Vec<CommentId>,
    /// The thread's published comments, including those not loaded yet.
    published: i64,
}

impl Tree {
    /// An empty tree; [`Tree::load`] fills it.
    pub fn new() -> Self {
        Tree::default()
    }

    /// Takes in comments given in tree order (a page, "show more", a refetch) with the
    /// server's published count at that moment. Comments already present take the server's
    /// word for their status (a refetch after missed events shows one approved meanwhile);
    /// a reply whose parent this viewer does not have goes to the top level.
    pub fn load(&mut self, comments: impl IntoIterator<Item = Comment>, published: i64) -> Changes {
        let mut changes = Changes::default();
        for c in comments {
            match self.nodes.get_mut(&c.id) {
                Some(entry) => refresh(entry, &c, &mut changes),
                None => {
                    self.place(c, &mut changes);
                }
            }
        }
        self.published = published;
        changes
    }

    /// Adds one comment that is new to the thread (just posted here or arrived live).
    /// Skipped when already present, so a replayed event changes nothing.
    pub fn add(&mut self, comment: Comment) -> Changes {
        let mut changes = Changes::default();
        if let Some(id) = self.place(comment, &mut changes)
            && self.nodes[&id].counts()
        {
            self.published += 1;
        }
        changes
    }

    /// Takes a comment's new status and flag (a staff action, or its live echo). Comments not
    /// loaded are left alone: they show where they belong once their page is loaded.
    pub fn update(&mut self, comment: &Comment) -> Changes {
        let mut changes = Changes::default();
        if let Some(entry) = self.nodes.get_mut(&comment.id) {
            let counted = entry.counts();
            refresh(entry, comment, &mut changes);
            self.published += i64::from(entry.counts()) - i64::from(counted);
        }
        changes
    }

    /// A comment became public: shows it again in place, or adds it if this page never had
    /// it.
    pub fn reveal(&mut self, comment: Comment) -> Changes {
        if self.nodes.contains_key(&comment.id) {
            self.update(&comment)
        } else {
            self.add(comment)
        }
    }

    /// A comment stopped being public (readers): hidden in place, no longer counted.
    pub fn hide(&mut self, id: CommentId) -> Changes {
        let mut changes = Changes::default();
        if let Some(entry) = self.nodes.get_mut(&id)
            && !entry.gone
        {
            let counted = entry.counts();
            entry.gone = true;
            self.published -= i64::from(counted);
            changes.updated.push(id);
        }
        changes
    }

    /// Applies a live event of this thread's room. Idempotent: the same event twice changes
    /// nothing the second time. `staff` says whose copies of events this page receives.
    pub fn apply(&mut self, event: &Event, staff: bool) -> Changes {
        match event {
            Event::CommentPosted {
                comment,
                awaiting_moderation,
            } => {
                let mut comment = comment.clone();
                // The author's copy of a held comment carries no status: mark it, so the
                // author sees it as awaiting moderation and it is not counted.
                if *awaiting_moderation && comment.status.is_none() {
                    comment.status = Some(Status::Held);
                }
                self.add(comment)
            }
            Event::CommentStatusChanged {
                comment_id,
                visible,
                comment,
                ..
            } => match (visible, comment) {
                (None, Some(c)) if staff => self.update(c),
                (Some(true), Some(c)) => self.reveal(c.clone()),
                (Some(false), _) => self.hide(*comment_id),
                _ => Changes::default(),
            },
            // Other rooms' events and notices do not touch the tree.
            _ => Changes::default(),
        }
    }

    /// Inserts a comment unless present; returns its id when it was new.
    fn place(&mut self, c: Comment, changes: &mut Changes) -> Option<CommentId> {
        if self.nodes.contains_key(&c.id) {
            return None;
        }
        let id = c.id;
        // A reply past the depth cap is stored at the cap beside its parent: it hangs under
        // the nearest ancestor one level up, so nesting (and the view's recursion) never
        // passes the cap however long a reply chain grows.
        let mut under = c.parent_id.filter(|p| self.nodes.contains_key(p));
        while let Some(p) = under {
            let parent = &self.nodes[&p];
            if c.depth == 0 || parent.comment.depth < c.depth {
                break;
            }
            under = parent.under;
        }
        let list = match under {
            Some(p) => List::RepliesOf(p),
            None => List::Top,
        };
        match list {
            List::Top => self.roots.push(id),
            List::RepliesOf(p) => {
                if let Some(parent) = self.nodes.get_mut(&p) {
                    parent.children.push(id);
                }
            }
        }
        self.nodes.insert(
            id,
            Entry {
                comment: c,
                children: Vec::new(),
                under,
                gone: false,
            },
        );
        changes.grew(list);
        changes.appeared.push(id);
        Some(id)
    }

    /// The comments of one list, in order.
    pub fn list(&self, list: List) -> &[CommentId] {
        match list {
            List::Top => &self.roots,
            List::RepliesOf(id) => self.nodes.get(&id).map_or(&[], |e| &e.children),
        }
    }

    /// A comment as loaded, with its current status and flag.
    pub fn comment(&self, id: CommentId) -> Option<&Comment> {
        self.nodes.get(&id).map(|e| &e.comment)
    }

    /// A comment's current status (staff, or a held comment's author); `None` for readers.
    pub fn status(&self, id: CommentId) -> Option<Status> {
        self.nodes.get(&id).and_then(|e| e.comment.status)
    }

    /// A comment's current moderation flag (staff only).
    pub fn moderation(&self, id: CommentId) -> Option<ModerationFlag> {
        self.nodes
            .get(&id)
            .and_then(|e| e.comment.moderation.clone())
    }

    /// Whether a comment was taken down while the page was open.
    pub fn is_gone(&self, id: CommentId) -> bool {
        self.nodes.get(&id).is_some_and(|e| e.gone)
    }

    /// Whether the tree holds a comment.
    pub fn contains(&self, id: CommentId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// The thread's published comments, as far as this page knows.
    pub fn published(&self) -> i64 {
        self.published
    }

    /// Replies below a comment, at any depth, among those loaded and not hidden.
    pub fn descendant_count(&self, id: CommentId) -> usize {
        let mut count = 0;
        let mut stack = vec![id];
        while let Some(i) = stack.pop() {
            for kid in self.list(List::RepliesOf(i)) {
                if !self.is_gone(*kid) {
                    count += 1;
                    stack.push(*kid);
                }
            }
        }
        count
    }

    /// Every comment in display order (depth first), for tests and debugging.
    pub fn in_order(&self) -> Vec<CommentId> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<CommentId> = self.roots.iter().rev().copied().collect();
        while let Some(id) = stack.pop() {
            out.push(id);
            stack.extend(self.list(List::RepliesOf(id)).iter().rev());
        }
        out
    }
}

/// Takes a comment's status and flag as given, and shows it again if it was hidden.
fn refresh(entry: &mut Entry, c: &Comment, changes: &mut Changes) {
    if entry.comment.status == c.status && entry.comment.moderation == c.moderation && !entry.gone {
        return;
    }
    entry.comment.status = c.status;
    entry.comment.moderation = c.moderation.clone();
    changes.updated.push(c.id);
    if entry.gone {
        entry.gone = false;
        changes.appeared.push(c.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: CommentId, parent: Option<CommentId>) -> Comment {
        Comment {
            id,
            parent_id: parent,
            depth: 0,
            author_name: format!("a{id}"),
            author_url: None,
            title: None,
            body_html: "<p>x</p>".into(),
            created_at: "2026-11-21T10:00:00Z".into(),
            status: None,
            moderation: None,
        }
    }

    fn with_status(mut comment: Comment, s: Status) -> Comment {
        comment.status = Some(s);
        comment
    }

    fn posted(comment: Comment, awaiting: bool) -> Event {
        Event::CommentPosted {
            comment,
            awaiting_moderation: awaiting,
        }
    }

    fn reader_visible(id: CommentId, comment: Option<Comment>, visible: bool) -> Event {
        Event::CommentStatusChanged {
            comment_id: id,
            visible: Some(visible),
            status_before: None,
            comment,
        }
    }

    fn staff_changed(comment: Comment, before: Status) -> Event {
        Event::CommentStatusChanged {
            comment_id: comment.id,
            visible: None,
            status_before: Some(before),
            comment: Some(comment),
        }
    }

    #[test]
    fn a_page_loads_in_tree_order_and_duplicates_are_skipped() {
        let mut t = Tree::new();
        let ch = t.load(
            [
                c(1, None),
                c(2, Some(1)),
                c(3, Some(2)),
                c(4, None),
                c(2, Some(1)),
            ],
            5,
        );
        assert_eq!(t.in_order(), vec![1, 2, 3, 4]);
        assert_eq!(
            ch.lists,
            vec![List::Top, List::RepliesOf(1), List::RepliesOf(2)]
        );
        // "Show more" brings the rest of 1's subtree and a new top-level comment.
        t.load([c(5, Some(1)), c(6, None), c(3, Some(2))], 6);
        assert_eq!(t.in_order(), vec![1, 2, 3, 5, 4, 6]);
        assert_eq!(
            t.published(),
            6,
            "the server's count at the time of the page"
        );
    }

    #[test]
    fn a_reply_whose_parent_is_unknown_goes_to_the_top() {
        let mut t = Tree::new();
        t.load([c(1, None)], 1);
        let ch = t.add(c(9, Some(7)));
        assert_eq!(t.list(List::Top), &[1, 9]);
        assert_eq!(ch.lists, vec![List::Top]);
        // A later reply to it nests under it.
        t.add(c(10, Some(9)));
        assert_eq!(t.in_order(), vec![1, 9, 10]);
    }

    #[test]
    fn a_live_reply_joins_only_its_parents_list_and_counts_once() {
        let mut t = Tree::new();
        t.load([c(1, None), c(2, Some(1))], 2);
        let ch = t.apply(&posted(c(3, Some(1)), false), false);
        assert_eq!(ch.lists, vec![List::RepliesOf(1)]);
        assert_eq!(ch.appeared, vec![3]);
        assert_eq!(t.in_order(), vec![1, 2, 3]);
        assert_eq!(t.published(), 3);
        // The same event replayed after a reconnect.
        assert!(t.apply(&posted(c(3, Some(1)), false), false).is_empty());
        assert_eq!(t.published(), 3);
    }

    #[test]
    fn replies_stored_at_the_depth_cap_hang_beside_their_parent() {
        let at = |id, parent, depth| Comment {
            depth,
            ..c(id, parent)
        };
        // A chain 1 <- 2 <- 3 <- 4 <- 5 with the cap at depth 2: 4 and 5 answer 3 and 4 but
        // are stored at depth 2, like 3.
        let mut t = Tree::new();
        t.load(
            [
                at(1, None, 0),
                at(2, Some(1), 1),
                at(3, Some(2), 2),
                at(4, Some(3), 2),
            ],
            4,
        );
        let ch = t.apply(&posted(at(5, Some(4), 2), false), false);
        assert_eq!(ch.lists, vec![List::RepliesOf(2)]);
        assert_eq!(t.list(List::RepliesOf(2)), &[3, 4, 5]);
        assert!(t.list(List::RepliesOf(3)).is_empty());
        assert_eq!(t.in_order(), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            t.comment(5).unwrap().parent_id,
            Some(4),
            "still names whom it answers"
        );
    }

    #[test]
    fn the_authors_held_comment_shows_awaiting_but_is_not_counted_until_approved() {
        let mut t = Tree::new();
        t.apply(&posted(c(4, None), true), false);
        assert_eq!(t.status(4), Some(Status::Held));
        assert_eq!(t.published(), 0);
        // Approved: readers (and so the author) get it as visible.
        let ch = t.apply(&reader_visible(4, Some(c(4, None)), true), false);
        assert_eq!(ch.updated, vec![4]);
        assert!(ch.appeared.is_empty(), "already on the page: not new");
        assert_eq!(t.status(4), None);
        assert_eq!(t.published(), 1);
    }

    #[test]
    fn readers_see_a_comment_appear_vanish_and_return() {
        let mut t = Tree::new();
        let ch = t.apply(&reader_visible(8, Some(c(8, None)), true), false);
        assert_eq!(ch.appeared, vec![8]);
        assert_eq!(t.published(), 1);
        t.apply(&reader_visible(8, None, false), false);
        assert!(t.is_gone(8));
        assert_eq!(t.published(), 0);
        // Removing twice counts once.
        assert!(t.apply(&reader_visible(8, None, false), false).is_empty());
        assert_eq!(t.published(), 0);
        let ch = t.apply(&reader_visible(8, Some(c(8, None)), true), false);
        assert_eq!(ch.appeared, vec![8]);
        assert!(!t.is_gone(8));
        assert_eq!(t.published(), 1);
        assert_eq!(t.in_order(), vec![8]);
    }

    #[test]
    fn staff_counts_follow_status_changes() {
        let mut t = Tree::new();
        t.load([with_status(c(1, None), Status::Published)], 1);
        // A held comment arrives flagged; it is not published.
        t.apply(&posted(with_status(c(2, None), Status::Held), false), true);
        assert_eq!(t.published(), 1);
        t.apply(
            &staff_changed(with_status(c(2, None), Status::Published), Status::Held),
            true,
        );
        assert_eq!(t.published(), 2);
        // The echo of the staff member's own action changes nothing more.
        t.apply(
            &staff_changed(with_status(c(2, None), Status::Published), Status::Held),
            true,
        );
        assert_eq!(t.published(), 2);
        t.apply(
            &staff_changed(with_status(c(1, None), Status::Removed), Status::Published),
            true,
        );
        assert_eq!(t.published(), 1);
        // Staff keep seeing removed comments, flagged.
        assert!(!t.is_gone(1));
        assert_eq!(t.status(1), Some(Status::Removed));
        // A staff copy never carries `visible`; a reader page ignores one without it.
        let mut readers = Tree::new();
        let ch = readers.apply(
            &staff_changed(with_status(c(5, None), Status::Published), Status::Held),
            false,
        );
        assert!(ch.is_empty());
    }

    #[test]
    fn a_refetch_shows_what_was_approved_while_offline() {
        let mut t = Tree::new();
        t.load([c(1, None), c(2, None)], 2);
        t.hide(2);
        assert_eq!(t.published(), 1);
        // Reconnected too late to replay: the page again, where 2 is public once more.
        let ch = t.load([c(1, None), c(2, None), c(3, Some(1))], 3);
        assert_eq!(ch.appeared, vec![2, 3]);
        assert!(!t.is_gone(2));
        assert_eq!(t.in_order(), vec![1, 3, 2]);
        assert_eq!(t.published(), 3);
    }

    #[test]
    fn descendant_counts_skip_hidden_subtrees() {
        let mut t = Tree::new();
        t.load(
            [
                c(1, None),
                c(2, Some(1)),
                c(3, Some(2)),
                c(4, Some(1)),
                c(5, None),
            ],
            5,
        );
        assert_eq!(t.descendant_count(1), 3);
        assert_eq!(t.descendant_count(5), 0);
        t.hide(2);
        assert_eq!(t.descendant_count(1), 1);
        assert_eq!(t.descendant_count(99), 0);
    }
}
