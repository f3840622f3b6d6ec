//! Staff tools shown in place: the "(moderated)" flag and the action buttons.

use crate::api;
use crate::model::{Comment, CommentId, ModerationAction, ModerationFlag, Status};
use leptos::prelude::*;

fn label(action: ModerationAction) -> &'static str {
    match action {
        ModerationAction::Approve => "approve",
        ModerationAction::Reject => "reject",
        ModerationAction::Spam => "spam",
        ModerationAction::Ham => "not spam",
        ModerationAction::Remove => "remove",
    }
}

/// Describes a flag: status, moderator's reason and spam score.
pub fn flag_text(status: Option<Status>, flag: Option<&ModerationFlag>) -> Option<String> {
    let status = status?;
    if status == Status::Published {
        return None;
    }
    let mut text = format!("(moderated) {}", status.as_str());
    if let Some(f) = flag {
        if let Some(reason) = &f.reason {
            text.push_str(": ");
            text.push_str(reason);
        }
        if let Some(score) = f.score {
            text.push_str(&format!(" · spam score {score:.2}"));
        }
    }
    Some(text)
}

/// The staff concern of the thread view: whether the viewer is staff (flags and moderation
/// buttons show), and where the result of an action goes.
#[derive(Clone, Copy)]
pub struct StaffState {
    pub enabled: bool,
    /// Takes a comment as it is after an action into the page.
    pub applied: Callback<Comment>,
}

/// The flag and the buttons for one comment. The bar holds no copy of the comment's state:
/// it shows what its owner gives it and hands the result of an action to `on_done`.
#[component]
pub fn ModerationBar(
    id: CommentId,
    #[prop(into)] status: Signal<Option<Status>>,
    #[prop(into)] moderation: Signal<Option<ModerationFlag>>,
    /// Called with the updated comment after an action succeeded.
    #[prop(into)]
    on_done: Callback<Comment>,
) -> impl IntoView {
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let flag = move || moderation.with(|m| flag_text(status.get(), m.as_ref()));
    let buttons = ModerationAction::ALL
        .into_iter()
        .map(|action| {
            // The button that would change nothing is disabled: the action is already done.
            let done = move || status.get() == Some(action.target());
            let run = move |_| {
                if busy.get_untracked() {
                    return;
                }
                busy.set(true);
                leptos::task::spawn_local(async move {
                    match api::moderate(id, action).await {
                        Ok(c) => {
                            error.set(None);
                            on_done.run(c);
                        }
                        Err(e) => error.set(Some(e.to_string())),
                    }
                    busy.set(false);
                });
            };
            view! {
                <button
                    type="button"
                    class=format!("mod-action mod-{}", action.as_str())
                    data-action=action.as_str()
                    disabled=move || busy.get() || done()
                    on:click=run
                >
                    {label(action)}
                </button>
            }
        })
        .collect_view();
    view! {
        <span class="mod-bar">
            {move || flag().map(|t| view! { <span class="mod-flag">{t}</span> })}
            <span class="mod-actions">{buttons}</span>
            {move || error.get().map(|e| view! { <span class="field-error">{e}</span> })}
        </span>
    }
}
