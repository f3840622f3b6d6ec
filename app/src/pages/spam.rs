//! `/moderation/spam`: how well the spam filter does, drawn, and the retrain button.

use crate::api;
use crate::model::{ApiError, SpamMetrics, SpamStatus, SpamTraining, display_date};
use crate::pages::staff::StaffOnly;
use leptos::prelude::*;
use leptos_meta::Title;

const CHART_W: f64 = 420.0;
const CHART_H: f64 = 220.0;
const PAD_L: f64 = 36.0;
const PAD_B: f64 = 28.0;

/// Precision, recall and F1 per label as grouped bars on a 0–1 scale.
fn metrics_chart(m: &SpamMetrics) -> impl IntoView + use<> {
    let plot_h = CHART_H - PAD_B - 10.0;
    let y = move |v: f64| 10.0 + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let grid = [0.0, 0.25, 0.5, 0.75, 1.0]
        .into_iter()
        .map(|g| {
            view! {
                <line x1=PAD_L x2=CHART_W y1=y(g) y2=y(g) class="grid"/>
                <text x=PAD_L - 6.0 y=y(g) + 4.0 text-anchor="end" class="axis">{format!("{g:.2}")}</text>
            }
        })
        .collect_view();
    let groups = [("spam", m.spam), ("ham", m.ham)];
    let group_w = (CHART_W - PAD_L) / groups.len() as f64;
    let bar_w = group_w / 4.5;
    let bars = groups
        .into_iter()
        .enumerate()
        .map(|(gi, (name, lm))| {
            let x0 = PAD_L + gi as f64 * group_w + bar_w * 0.6;
            let values = [("precision", lm.precision), ("recall", lm.recall), ("F1", lm.f1)];
            let rects = values
                .into_iter()
                .enumerate()
                .map(|(i, (metric, v))| {
                    let x = x0 + i as f64 * (bar_w + 4.0);
                    view! {
                        <rect
                            x=x
                            y=y(v)
                            width=bar_w
                            height=(y(0.0) - y(v)).max(0.0)
                            class=format!("bar bar-{}", metric.to_lowercase())
                        >
                            <title>{format!("{name} {metric}: {v:.3}")}</title>
                        </rect>
                        <text x=x + bar_w / 2.0 y=y(v) - 3.0 text-anchor="middle" class="value">{format!("{v:.3}")}</text>
                    }
                })
                .collect_view();
            view! {
                {rects}
                <text x=x0 + 1.5 * bar_w + 4.0 y=CHART_H - 8.0 text-anchor="middle" class="label">{name}</text>
            }
        })
        .collect_view();
    view! {
        <svg
            class="metrics-chart"
            role="img"
            aria-label="Precision, recall and F1 per label"
            viewBox=format!("0 0 {CHART_W} {CHART_H}")
            width=CHART_W
            height=CHART_H
        >
            {grid}
            {bars}
        </svg>
        <p class="legend">
            <span class="key bar-precision"></span>" precision "
            <span class="key bar-recall"></span>" recall "
            <span class="key bar-f1"></span>" F1"
        </p>
    }
}

/// Spam F1 across trainings, oldest to newest.
fn history_chart(history: &[SpamTraining]) -> impl IntoView + use<> {
    let points: Vec<f64> = history
        .iter()
        .rev()
        .filter_map(|t| t.metrics.map(|m| m.spam.f1))
        .collect();
    (points.len() >= 2).then(|| {
        let w = 240.0;
        let h = 60.0;
        let step = w / (points.len() - 1) as f64;
        let path: String = points
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { " L" },
                    i as f64 * step,
                    4.0 + (h - 8.0) * (1.0 - v)
                )
            })
            .collect();
        view! {
            <svg class="history-chart" role="img" aria-label="Spam F1 over trainings" viewBox=format!("0 0 {w} {h}") width=w height=h>
                <path d=path class="line"/>
            </svg>
        }
    })
}

fn confusion_table(m: &SpamMetrics) -> impl IntoView + use<> {
    // With spam as positive: tp = spam caught, fn = spam missed, fp = ham flagged.
    let c = m.spam.confusion;
    view! {
        <table class="confusion">
            <thead>
                <tr><th></th><th>"predicted spam"</th><th>"predicted ham"</th></tr>
            </thead>
            <tbody>
                <tr><th>"actual spam"</th><td class="good">{c.tp}</td><td class="bad">{c.fn_}</td></tr>
                <tr><th>"actual ham"</th><td class="bad">{c.fp}</td><td class="good">{c.tn}</td></tr>
            </tbody>
        </table>
    }
}

/// The spam filter page.
#[component]
pub fn SpamPage() -> impl IntoView {
    let data = Resource::new_blocking(|| (), |_| api::spam_status());
    view! {
        <Title text="Spam filter · Moderato"/>
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok(s) => view! { <SpamView s/> }.into_any(),
                    Err(ApiError::Forbidden) => view! { <StaffOnly/> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn SpamView(s: SpamStatus) -> impl IntoView {
    let status = RwSignal::new(s);
    let running = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let retrain = move |_| {
        running.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::spam_retrain().await {
                Ok(t) => {
                    status.update(|s| {
                        s.trained_at = Some(t.trained_at.clone());
                        s.source = Some(t.source.clone());
                        s.metrics = t.metrics;
                        s.history.insert(0, t);
                    });
                    // Training data counts may have moved too.
                    if let Ok(fresh) = api::spam_status().await {
                        status.set(fresh);
                    }
                }
                Err(e) => error.set(Some(e.to_string())),
            }
            running.set(false);
        });
    };
    view! {
        <section class="spam-page">
            <h1>"Spam filter"</h1>
            {move || {
                let s = status.get();
                view! {
                    <p class="trained">
                        {match (&s.trained_at, &s.source) {
                            (Some(at), Some(src)) => format!("Trained {} on {}.", display_date(at), src),
                            _ => "Not trained yet.".to_owned(),
                        }}
                        {format!(" Threshold: P(spam) ≥ {:.2} is held as spam.", s.threshold)}
                    </p>
                    <p class="counts">
                        {format!(
                            "Training data in this site: {} spam, {} ham (published) comments.",
                            s.counts.spam, s.counts.ham
                        )}
                    </p>
                    {match s.metrics {
                        Some(m) => view! {
                            <h2>{format!("3-fold cross-validation over {} samples", m.n)}</h2>
                            <div class="metrics">
                                <div>{metrics_chart(&m)}</div>
                                <div>
                                    <h3>"Confusion matrix"</h3>
                                    {confusion_table(&m)}
                                </div>
                            </div>
                        }
                        .into_any(),
                        None => view! { <p>"No metrics yet: both labels need a few examples."</p> }.into_any(),
                    }}
                    <h2>"History"</h2>
                    {history_chart(&s.history)}
                    <table class="history">
                        <thead>
                            <tr><th>"Trained"</th><th>"Source"</th><th>"Spam"</th><th>"Ham"</th><th>"Spam F1"</th><th>"Ham F1"</th></tr>
                        </thead>
                        <tbody>
                            {s.history.iter().map(|t| view! {
                                <tr>
                                    <td>{display_date(&t.trained_at)}</td>
                                    <td>{t.source.clone()}</td>
                                    <td>{t.spam_count}</td>
                                    <td>{t.ham_count}</td>
                                    <td>{t.metrics.map(|m| format!("{:.3}", m.spam.f1)).unwrap_or_else(|| "–".into())}</td>
                                    <td>{t.metrics.map(|m| format!("{:.3}", m.ham.f1)).unwrap_or_else(|| "–".into())}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }
            }}
            <div class="retrain">
                <button type="button" class="post" on:click=retrain disabled=move || running.get()>
                    {move || if running.get() { "Retraining…" } else { "Retrain from moderated comments" }}
                </button>
                <Show when=move || running.get()>
                    <progress class="retrain-progress" aria-label="Retraining"></progress>
                </Show>
                {move || error.get().map(|e| view! { <span class="field-error">{e}</span> })}
            </div>
        </section>
    }
}
