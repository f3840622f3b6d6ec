//! The spam filter as the server runs it: the model in use (loaded once, swapped whole
//! after retraining), training from moderated comments, incremental learning from staff
//! decisions, and its place in the moderator pipeline. The filter's core (tokenizer, model,
//! scorer, evaluation) is [`crate::spam`], which knows nothing of databases or runtimes; its
//! rows live in the store (`spam_models`).

use crate::moderation::{Candidate, Hold, Moderator};
use crate::spam::{
    self, CvOptions, Evaluation, Label, Model, Options, Sample, cross_validate, read_samples,
};
use crate::store::{Backend, CommentRow, NewSpamModelRow, Store, StoreError, Tx, now_ms};
use std::sync::{Arc, PoisonError, RwLock};

/// The labelled corpus shipped in the binary, so filtering works before any staff decision:
/// the SpamAssassin public corpus as short comment-like rows (see docs/spam.md).
const BUNDLED_CSV: &[u8] = include_bytes!("../spam-data/spamassassin-short.csv");

/// Where a training's samples came from.
pub const SOURCE_BUNDLED: &str = "bundled corpus";

/// The training sample for a stored comment: the same author/text split everywhere.
pub fn sample_of(row: &CommentRow, label: Label) -> Sample {
    let (author, text) = spam::judged_text(
        &row.author_name,
        row.author_email.as_deref(),
        row.title.as_deref(),
        // Trained on what it will judge: the text a reader sees.
        &crate::comment::plain_text(&row.body_source),
    );
    Sample {
        label,
        author,
        text,
    }
}

/// The training label a comment's status implies: published is ham, spam is spam; held,
/// rejected or removed comments are not training data.
pub fn label_of(status: &str) -> Option<Label> {
    match status {
        "published" => Some(Label::Ham),
        "spam" => Some(Label::Spam),
        _ => None,
    }
}

/// The shipped corpus.
pub fn bundled_samples() -> Vec<Sample> {
    // The file is part of the build and checked by a test, so it always parses.
    read_samples(BUNDLED_CSV).unwrap_or_default()
}

pub use app::model::{SpamCounts as TrainingCounts, SpamStatus, SpamTraining as Training};

/// The wire form of an evaluation.
pub fn metrics_of(e: &Evaluation) -> app::model::SpamMetrics {
    let label = |m: &spam::LabelMetrics| app::model::LabelMetrics {
        precision: m.precision,
        recall: m.recall,
        f1: m.f1,
        confusion: app::model::Confusion {
            tp: m.confusion.tp,
            fp: m.confusion.fp,
            fn_: m.confusion.fn_,
            tn: m.confusion.tn,
        },
    };
    app::model::SpamMetrics {
        spam: label(&e.spam),
        ham: label(&e.ham),
        folds: e.folds,
        n: e.n,
        threshold: e.threshold,
    }
}

/// Errors of training or loading.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("spam filter: {0}")]
    Spam(#[from] spam::SpamError),
    #[error("stored spam model is unreadable: {0}")]
    Corrupt(String),
}

/// The live filter.
pub struct SpamFilter {
    model: RwLock<Arc<Model>>,
    /// The stored row the model in use matches, as (id, updated_at); (0, 0) for none. Other
    /// instances on the same database change it (see `engine::cluster`).
    version: std::sync::Mutex<(i64, i64)>,
    /// Serialises writers (retrain, incremental learning); readers never wait for it.
    writer: tokio::sync::Mutex<()>,
    pub threshold: f64,
    /// Train on the shipped corpus as well as the site's own decisions.
    pub use_bundled: bool,
}

impl SpamFilter {
    /// Loads the newest stored model, or trains and stores one on first start.
    pub async fn load_or_train(
        store: &Store,
        threshold: f64,
        use_bundled: bool,
    ) -> Result<SpamFilter, FilterError> {
        let filter = SpamFilter {
            model: RwLock::new(Arc::new(Model::new(&Options::default()))),
            version: std::sync::Mutex::new((0, 0)),
            writer: tokio::sync::Mutex::new(()),
            threshold,
            use_bundled,
        };
        if !filter.load_latest(store).await? {
            filter.retrain(store, None, |_, _| {}).await?;
        }
        Ok(filter)
    }

    /// Swaps in the newest stored model; false when there is none.
    async fn load_latest(&self, store: &Store) -> Result<bool, FilterError> {
        // The version first: a change in between makes the row newer than the version,
        // which costs one more reload later, never a missed one.
        let version = store.spam_model_version().await?;
        let Some(row) = store.latest_spam_model().await? else {
            return Ok(false);
        };
        let version = version.unwrap_or((row.id, 0));
        let json = row.model;
        let model = tokio::task::spawn_blocking(move || Model::from_json(&json))
            .await
            .map_err(|e| FilterError::Corrupt(format!("loading task failed: {e}")))?
            .map_err(|e| FilterError::Corrupt(e.to_string()))?;
        self.swap(model);
        self.set_version(version);
        Ok(true)
    }

    fn version(&self) -> (i64, i64) {
        *self.version.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_version(&self, v: (i64, i64)) {
        *self.version.lock().unwrap_or_else(PoisonError::into_inner) = v;
    }

    /// Loads the stored model when another instance retrained or learned since this one
    /// last did; true when it did.
    pub async fn reload_if_changed(&self, store: &Store) -> Result<bool, FilterError> {
        let _guard = self.writer.lock().await;
        self.reload_locked(store).await
    }

    async fn reload_locked(&self, store: &Store) -> Result<bool, FilterError> {
        match store.spam_model_version().await? {
            Some(v) if v != self.version() => self.load_latest(store).await,
            _ => Ok(false),
        }
    }

    /// Other instances on the same PostgreSQL wait while this one changes the stored model
    /// (until the returned transaction ends); nothing on SQLite.
    async fn take_turn(store: &Store) -> Result<Option<Tx>, FilterError> {
        if store.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut tx = store.begin().await?;
        tx.advisory_lock(crate::engine::cluster::SPAM_MODEL_LOCK)
            .await?;
        Ok(Some(tx))
    }

    /// The model in use; a retrain never changes a model a request already holds.
    pub fn current(&self) -> Arc<Model> {
        self.model
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn swap(&self, model: Model) {
        let model = Arc::new(model);
        match self.model.write() {
            Ok(mut m) => *m = model,
            Err(poisoned) => *poisoned.into_inner() = model,
        }
    }

    /// P(spam) of a comment.
    pub fn score(&self, author: &str, text: &str) -> f64 {
        self.current().spam_probability(author, text)
    }

    /// Retrains from scratch on `samples` (a CSV) or, when `None`, on the moderated
    /// comments in the database (plus the shipped corpus, unless switched off); evaluates
    /// with 3-fold cross-validation; stores and swaps in the new model. `progress` is told
    /// each step (`step`, `of`).
    pub async fn retrain(
        &self,
        store: &Store,
        samples: Option<(Vec<Sample>, String)>,
        progress: impl Fn(u64, u64),
    ) -> Result<Training, FilterError> {
        let _guard = self.writer.lock().await;
        progress(0, 4);
        let (samples, source) = match samples {
            Some(s) => s,
            None => {
                let mut samples = if self.use_bundled {
                    bundled_samples()
                } else {
                    Vec::new()
                };
                let from_db = moderated_samples(store).await?;
                let source = if self.use_bundled {
                    format!("{SOURCE_BUNDLED} + {} moderated comments", from_db.len())
                } else {
                    format!("{} moderated comments", from_db.len())
                };
                samples.extend(from_db);
                (samples, source)
            }
        };
        progress(1, 4);
        let options = Options::default();
        let threshold = self.threshold;
        let (model, metrics, samples) = tokio::task::spawn_blocking(move || {
            let model = Model::train(&samples, &options);
            let has_both = Label::ALL
                .iter()
                .all(|l| samples.iter().filter(|s| s.label == *l).count() >= 3);
            let metrics = if has_both {
                cross_validate(
                    &samples,
                    &options,
                    &CvOptions {
                        threshold,
                        ..CvOptions::default()
                    },
                )
                .ok()
            } else {
                None
            };
            (model, metrics, samples)
        })
        .await
        .map_err(|e| FilterError::Corrupt(format!("training task failed: {e}")))?;
        progress(3, 4);
        let spam_count = samples.iter().filter(|s| s.label == Label::Spam).count() as i64;
        let ham_count = samples.len() as i64 - spam_count;
        let now = now_ms();
        let turn = Self::take_turn(store).await?;
        store
            .insert_spam_model(&NewSpamModelRow {
                trained_at: now,
                source: &source,
                model: model.to_json(),
                metrics: metrics.as_ref().and_then(|m| serde_json::to_string(m).ok()),
                spam_count,
                ham_count,
            })
            .await?;
        if let Some(v) = store.spam_model_version().await? {
            self.set_version(v);
        }
        self.swap(model);
        if let Some(turn) = turn {
            turn.commit().await?;
        }
        progress(4, 4);
        Ok(Training {
            trained_at: crate::comment::rfc3339(now),
            source,
            metrics: metrics.as_ref().map(metrics_of),
            spam_count,
            ham_count,
        })
    }

    /// Learns from staff decisions at once, without a retrain: each comment's old label (if
    /// any) is unlearned and its new one learned, so the model stays what a retrain on the
    /// current data would give. True when the model changed (other instances should reload).
    pub async fn apply_decisions(
        &self,
        store: &Store,
        changes: &[(String, CommentRow)],
    ) -> Result<bool, FilterError> {
        let relevant: Vec<_> = changes
            .iter()
            .filter(|(before, after)| label_of(before) != label_of(&after.status))
            .collect();
        if relevant.is_empty() {
            return Ok(false);
        }
        let _guard = self.writer.lock().await;
        // With other instances: one at a time, each starting from what the last one stored,
        // so no instance's learning overwrites another's.
        let turn = Self::take_turn(store).await?;
        if turn.is_some() {
            self.reload_locked(store).await?;
        }
        let mut model = (*self.current()).clone();
        for (before, row) in relevant {
            if let Some(old) = label_of(before) {
                // A comment that predates the model was never learned: nothing to take back.
                let _ = model.unlearn(&sample_of(row, old));
            }
            if let Some(new) = label_of(&row.status) {
                model.learn(&sample_of(row, new));
            }
        }
        if let Some((id, updated_at)) = store.spam_model_version().await? {
            // Strictly newer, so that every instance sees a new version.
            let at = now_ms().max(updated_at + 1);
            store.update_spam_model(id, &model.to_json(), at).await?;
            self.set_version((id, at));
        }
        self.swap(model);
        if let Some(turn) = turn {
            turn.commit().await?;
        }
        Ok(true)
    }

    /// What the spam page shows.
    pub async fn status(&self, store: &Store) -> Result<SpamStatus, FilterError> {
        let rows = store.spam_models(20).await?;
        let history: Vec<Training> = rows
            .iter()
            .map(|r| Training {
                trained_at: crate::comment::rfc3339(r.trained_at),
                source: r.source.clone(),
                metrics: r
                    .metrics
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<Evaluation>(m).ok())
                    .map(|e| metrics_of(&e)),
                spam_count: r.spam_count,
                ham_count: r.ham_count,
            })
            .collect();
        let counts = training_counts(store).await?;
        let newest = history.first().cloned();
        Ok(SpamStatus {
            trained_at: newest.as_ref().map(|t| t.trained_at.clone()),
            source: newest.as_ref().map(|t| t.source.clone()),
            metrics: newest.and_then(|t| t.metrics),
            threshold: self.threshold,
            counts,
            history,
        })
    }
}

async fn training_counts(store: &Store) -> Result<TrainingCounts, StoreError> {
    let mut counts = TrainingCounts::default();
    for (status, n) in store.training_status_counts().await? {
        match label_of(&status) {
            Some(Label::Spam) => counts.spam += n,
            Some(Label::Ham) => counts.ham += n,
            None => {}
        }
    }
    Ok(counts)
}

/// Every moderated comment as a training sample.
pub async fn moderated_samples(store: &Store) -> Result<Vec<Sample>, StoreError> {
    let rows = store.training_comments(&["published", "spam"]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| label_of(&r.status).map(|l| sample_of(r, l)))
        .collect())
}

/// The spam filter's place in the pipeline: holds a comment as spam when P(spam) reaches
/// the threshold, recording the score.
pub struct SpamModerator {
    pub filter: Arc<SpamFilter>,
    /// Shorter comments (in words) are not judged.
    pub min_words: usize,
}

#[async_trait::async_trait]
impl Moderator for SpamModerator {
    fn name(&self) -> &str {
        "spam"
    }

    async fn moderate(&self, c: &Candidate<'_>) -> Result<Option<Hold>, StoreError> {
        let n = c.comment;
        let (author, text) =
            spam::judged_text(&n.name, n.email.as_deref(), n.title.as_deref(), c.text);
        if spam::tokenize::count_words("", &text) < self.min_words {
            return Ok(None);
        }
        let p = self.filter.score(&author, &text);
        Ok((p >= self.filter.threshold).then(|| Hold {
            reason: format!("Spam filter: P(spam) = {p:.3}"),
            score: Some(p),
            spam: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_corpus_parses_and_has_both_labels() {
        let s = bundled_samples();
        assert!(s.len() > 1000, "{}", s.len());
        assert!(s.iter().any(|x| x.label == Label::Spam));
        assert!(s.iter().any(|x| x.label == Label::Ham));
    }

    #[test]
    fn only_published_and_spam_comments_are_training_data() {
        assert_eq!(label_of("published"), Some(Label::Ham));
        assert_eq!(label_of("spam"), Some(Label::Spam));
        for s in ["held", "rejected", "removed"] {
            assert_eq!(label_of(s), None);
        }
    }
}
