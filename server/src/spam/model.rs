//! Multinomial Naive Bayes model: training, incremental updates, scoring and JSON.
//!
//! The model keeps only integer counts (documents per label, token counts per
//! label and their totals), so learning a sample and unlearning it again are
//! exact, and any sequence of `learn`/`unlearn` calls yields the same model as
//! training on the resulting set. Everything derived from the counts (the
//! smoothed log-probabilities) is computed from them on demand.
//!
//! For a comment with tokens `t` (each counted once in binary mode, or as
//! often as it occurs otherwise) the log-odds are
//!
//! ```text
//! ln((docs_spam + 1) / (docs_ham + 1))
//!   + Σ_t [ ln((n_spam,t + α) / (N_spam + α·V)) − ln((n_ham,t + α) / (N_ham + α·V)) ]
//! ```
//!
//! where `n_l,t` is how often `t` was counted for label `l`, `N_l` the sum of
//! those counts, `V` the vocabulary size and `α` the Lidstone smoothing.
//! Tokens never seen in training are skipped, as in scikit-learn, because they
//! carry no evidence. P(spam) is the logistic function of the log-odds, so
//! nothing underflows however long the comment is.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::scorer::{Scorer, TokenHash};
use super::tokenize::{DocTokens, Features};
use super::{Comment, Label, Sample, SpamError};

/// Version of the JSON format written by [`Model::to_json`].
///
/// [`Model::from_json`] reads this version and every older one; a newer
/// version is rejected with [`SpamError::UnsupportedVersion`].
pub const FORMAT_VERSION: u32 = 1;

/// Training settings. The defaults are the measured choices in `docs/spam.md`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Lidstone smoothing added to every token count (1.0 is Laplace).
    /// Values that are not finite and positive are replaced by 1.0.
    pub alpha: f64,
    /// Count each token at most once per comment (binarized multinomial NB).
    pub binary: bool,
    /// Extra feature tokens besides the words.
    pub features: Features,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            alpha: 0.1,
            binary: true,
            features: Features::default(),
        }
    }
}

impl Options {
    fn sanitized(mut self) -> Options {
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            self.alpha = 1.0;
        }
        self
    }
}

type Counts = HashMap<Box<str>, [u64; 2], TokenHash>;

/// A trained spam classifier.
///
/// Cheap to clone after the first classification (the compiled scoring table
/// is shared). `learn` and `unlearn` take `&mut self`; wrap the model in a lock
/// to update it while other threads classify.
#[derive(Clone, Debug)]
pub struct Model {
    options: Options,
    docs: [u64; 2],
    totals: [u64; 2],
    counts: Counts,
    scorer: ScorerCache,
}

/// Lazily built scoring table; not part of the model's identity.
#[derive(Clone, Default)]
struct ScorerCache(OnceLock<Arc<Scorer>>);

impl std::fmt::Debug for ScorerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "compiled"
        } else {
            "not compiled"
        })
    }
}

impl PartialEq for Model {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
            && self.docs == other.docs
            && self.totals == other.totals
            && self.counts == other.counts
    }
}

impl Model {
    /// An empty model: every comment scores 0.5 until it learns something.
    pub fn new(options: &Options) -> Model {
        Model {
            options: options.sanitized(),
            docs: [0; 2],
            totals: [0; 2],
            counts: Counts::default(),
            scorer: ScorerCache::default(),
        }
    }

    /// Trains a model on `samples`; the result equals `new` followed by
    /// `learn` on each sample.
    pub fn train(samples: &[Sample], options: &Options) -> Model {
        let refs: Vec<&Sample> = samples.iter().collect();
        Model::train_refs(&refs, options)
    }

    /// `train` over borrowed samples, so cross-validation can train on a fold
    /// without cloning the texts.
    pub(crate) fn train_refs(samples: &[&Sample], options: &Options) -> Model {
        let options = options.sanitized();
        // Counting is a sum, so per-chunk partial counts merged in any order
        // give exactly the sequential result while using both cores.
        let partial = samples
            .par_chunks(256)
            .map(|chunk| {
                let mut model = Model::new(&options);
                let mut doc = DocTokens::default();
                for s in chunk {
                    doc.collect(&s.author, &s.text, &options.features);
                    model.add_doc(s.label, &doc);
                }
                model
            })
            .reduce(|| Model::new(&options), Model::merged);
        Model {
            scorer: ScorerCache::default(),
            ..partial
        }
    }

    fn merged(self, other: Model) -> Model {
        // Fold the smaller map into the larger one.
        let (mut big, small) = if self.counts.len() >= other.counts.len() {
            (self, other)
        } else {
            (other, self)
        };
        for l in 0..2 {
            big.docs[l] += small.docs[l];
            big.totals[l] += small.totals[l];
        }
        for (token, c) in small.counts {
            let e = big.counts.entry(token).or_insert([0; 2]);
            e[0] += c[0];
            e[1] += c[1];
        }
        big
    }

    /// Count a token contributes: 1 per comment in binary mode.
    fn per_doc(&self, count: u32) -> u64 {
        if self.options.binary {
            1
        } else {
            u64::from(count)
        }
    }

    fn add_doc(&mut self, label: Label, doc: &DocTokens) {
        let l = label.index();
        self.docs[l] += 1;
        for (token, e) in doc.iter() {
            let c = self.per_doc(e.count);
            self.totals[l] += c;
            match self.counts.get_mut(token) {
                Some(n) => n[l] += c,
                None => {
                    let mut n = [0; 2];
                    n[l] = c;
                    self.counts.insert(token.into(), n);
                }
            }
        }
    }

    /// Adds one sample, as if it had been part of the training set.
    pub fn learn(&mut self, sample: &Sample) {
        let mut doc = DocTokens::default();
        doc.collect(&sample.author, &sample.text, &self.options.features);
        self.add_doc(sample.label, &doc);
        self.scorer = ScorerCache::default();
    }

    /// Removes one previously learned sample, as if it had never been part of
    /// the training set.
    ///
    /// Fails without changing anything if the model cannot contain the
    /// sample (some count would go below zero), e.g. when it was learned with
    /// another label or never learned at all.
    pub fn unlearn(&mut self, sample: &Sample) -> Result<(), SpamError> {
        let l = sample.label.index();
        let mut doc = DocTokens::default();
        doc.collect(&sample.author, &sample.text, &self.options.features);
        let not_learned = |reason: String| SpamError::NotLearned {
            label: sample.label,
            reason,
        };
        if self.docs[l] == 0 {
            return Err(not_learned(format!("the model has no {} documents", sample.label)));
        }
        for (token, e) in doc.iter() {
            let c = self.per_doc(e.count);
            let have = self.counts.get(token).map_or(0, |n| n[l]);
            if have < c {
                return Err(not_learned(format!(
                    "token {token:?} has count {have}, need {c}"
                )));
            }
        }
        self.docs[l] -= 1;
        for (token, e) in doc.iter() {
            let c = self.per_doc(e.count);
            self.totals[l] -= c;
            if let Some(n) = self.counts.get_mut(token) {
                n[l] -= c;
                if *n == [0, 0] {
                    self.counts.remove(token);
                }
            }
        }
        self.scorer = ScorerCache::default();
        Ok(())
    }

    /// P(spam) for a comment, in [0, 1]. `author` is name + " " + email and
    /// `text` is title + "\n" + body, as for training.
    pub fn spam_probability(&self, author: &str, text: &str) -> f64 {
        self.scorer().probability(author, text)
    }

    /// P(spam) for each comment, in input order, using all cores.
    pub fn classify_batch(&self, comments: &[Comment]) -> Vec<f64> {
        let scorer = self.scorer();
        comments
            .par_iter()
            .with_min_len(64)
            .map(|c| scorer.probability(&c.author, &c.text))
            .collect()
    }

    /// P(spam) for each `(author, text)` pair, in input order, using all cores.
    pub fn classify_pairs(&self, pairs: &[(&str, &str)]) -> Vec<f64> {
        let scorer = self.scorer();
        pairs
            .par_iter()
            .with_min_len(64)
            .map(|&(author, text)| scorer.probability(author, text))
            .collect()
    }

    fn scorer(&self) -> &Scorer {
        self.scorer.0.get_or_init(|| Arc::new(Scorer::build(self)))
    }

    /// The options the model was trained with (and classifies with).
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Number of learned documents with `label`.
    pub fn doc_count(&self, label: Label) -> u64 {
        self.docs[label.index()]
    }

    pub(crate) fn doc_counts(&self) -> [u64; 2] {
        self.docs
    }

    /// Sum of all token counts for `label` (`N_label` in the module docs).
    pub fn token_total(&self, label: Label) -> u64 {
        self.totals[label.index()]
    }

    /// How often `token` was counted for `label`.
    pub fn token_count(&self, token: &str, label: Label) -> u64 {
        self.counts.get(token).map_or(0, |c| c[label.index()])
    }

    /// Number of distinct tokens (`V` in the module docs).
    pub fn vocabulary_len(&self) -> usize {
        self.counts.len()
    }

    /// `(token, ln P(t|spam) − ln P(t|ham))` for every known token.
    pub(crate) fn log_ratios(&self) -> impl Iterator<Item = (&str, f64)> {
        let a = self.options.alpha;
        let v = self.counts.len() as f64;
        let norm = ((self.totals[1] as f64 + a * v) / (self.totals[0] as f64 + a * v)).ln();
        self.counts.iter().map(move |(t, c)| {
            let ratio = ((c[0] as f64 + a) / (c[1] as f64 + a)).ln() + norm;
            (&**t, ratio)
        })
    }

    /// Serializes the model (tokens sorted, so equal models give equal JSON).
    pub fn to_json(&self) -> String {
        let file = FileRef {
            version: FORMAT_VERSION,
            options: &self.options,
            docs: PerLabel::from(self.docs),
            totals: PerLabel::from(self.totals),
            tokens: self.counts.iter().map(|(t, c)| (&**t, *c)).collect(),
        };
        // Serializing plain maps of strings and integers cannot fail; an
        // empty string would be caught by `from_json` rather than panicking.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads a model written by [`Model::to_json`] of this or an older version.
    pub fn from_json(json: &str) -> Result<Model, SpamError> {
        let VersionOnly { version } = serde_json::from_str(json)?;
        match version {
            1 => serde_json::from_str::<FileV1>(json)?.into_model(),
            found => Err(SpamError::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION,
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerLabel {
    spam: u64,
    ham: u64,
}

impl From<[u64; 2]> for PerLabel {
    fn from(a: [u64; 2]) -> Self {
        PerLabel {
            spam: a[0],
            ham: a[1],
        }
    }
}

#[derive(Serialize)]
struct FileRef<'a> {
    version: u32,
    options: &'a Options,
    docs: PerLabel,
    totals: PerLabel,
    tokens: BTreeMap<&'a str, [u64; 2]>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Version 1 of the file format. When the format changes, keep this struct
/// and its conversion so old files still load with the semantics they were
/// trained with (e.g. a feature added later must default to off for them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    #[serde(rename = "version")]
    _version: u32,
    options: Options,
    docs: PerLabel,
    totals: PerLabel,
    tokens: HashMap<String, [u64; 2]>,
}

impl FileV1 {
    fn into_model(self) -> Result<Model, SpamError> {
        let o = self.options;
        if !(o.alpha.is_finite() && o.alpha > 0.0) {
            return Err(SpamError::Inconsistent(format!(
                "alpha must be positive, got {}",
                o.alpha
            )));
        }
        let mut sums = [0u64; 2];
        let mut counts = Counts::default();
        counts.reserve(self.tokens.len());
        for (token, c) in self.tokens {
            if c == [0, 0] {
                return Err(SpamError::Inconsistent(format!(
                    "token {token:?} has zero counts"
                )));
            }
            sums[0] = sums[0].saturating_add(c[0]);
            sums[1] = sums[1].saturating_add(c[1]);
            counts.insert(token.into_boxed_str(), c);
        }
        let totals = [self.totals.spam, self.totals.ham];
        if sums != totals {
            return Err(SpamError::Inconsistent(format!(
                "token counts add up to {sums:?} but totals say {totals:?}"
            )));
        }
        Ok(Model {
            options: o,
            docs: [self.docs.spam, self.docs.ham],
            totals,
            counts,
            scorer: ScorerCache::default(),
        })
    }
}
