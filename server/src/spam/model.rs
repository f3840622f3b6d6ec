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
            return Err(not_learned(format!(
                "the model has no {} documents",
                sample.label
            )));
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

    pub(crate) fn scorer(&self) -> &Scorer {
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
            found if found > FORMAT_VERSION => Err(SpamError::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION,
            }),
            found => Err(SpamError::Inconsistent(format!(
                "unknown format version {found}"
            ))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(label: Label, author: &str, text: &str) -> Sample {
        Sample {
            label,
            author: author.to_owned(),
            text: text.to_owned(),
        }
    }

    fn words_only(alpha: f64, binary: bool) -> Options {
        Options {
            alpha,
            binary,
            features: Features::NONE,
        }
    }

    fn tiny() -> Vec<Sample> {
        vec![
            sample(Label::Spam, "", "buy cheap pills"),
            sample(Label::Spam, "", "cheap cheap offer"),
            sample(Label::Ham, "", "nice post thanks"),
        ]
    }

    fn odds_to_p(odds: f64) -> f64 {
        odds / (1.0 + odds)
    }

    #[test]
    fn hand_computed_counts_probability() {
        let m = Model::train(&tiny(), &words_only(1.0, false));
        // spam counts: buy 1, cheap 3, pills 1, offer 1 (N=6); ham: nice,
        // post, thanks 1 each (N=3); V = 7; docs 2 spam, 1 ham.
        assert_eq!(m.token_total(Label::Spam), 6);
        assert_eq!(m.token_total(Label::Ham), 3);
        assert_eq!(m.vocabulary_len(), 7);
        assert_eq!(m.token_count("cheap", Label::Spam), 3);
        // prior (2+1)/(1+1); "cheap": (3+1)/(6+7) vs (0+1)/(3+7);
        // "post": (0+1)/(6+7) vs (1+1)/(3+7).
        let odds = (3.0 / 2.0) * ((4.0 / 13.0) / (1.0 / 10.0)) * ((1.0 / 13.0) / (2.0 / 10.0));
        let p = m.spam_probability("", "Cheap post!");
        assert!(
            (p - odds_to_p(odds)).abs() < 1e-6,
            "{p} vs {}",
            odds_to_p(odds)
        );
        // Unseen words carry no evidence and change nothing.
        assert_eq!(m.spam_probability("", "cheap post zzz qqq"), p);
        // Repeats count in count mode: "cheap cheap" doubles its ratio.
        let odds2 = (3.0 / 2.0) * ((4.0_f64 / 13.0) / (1.0 / 10.0)).powi(2);
        let p2 = m.spam_probability("", "cheap cheap");
        assert!((p2 - odds_to_p(odds2)).abs() < 1e-6);
    }

    #[test]
    fn hand_computed_binary_probability() {
        let m = Model::train(&tiny(), &words_only(1.0, true));
        // Binary: "cheap" counts once per spam comment -> 2; N_spam = 5.
        assert_eq!(m.token_count("cheap", Label::Spam), 2);
        assert_eq!(m.token_total(Label::Spam), 5);
        // prior 3/2; "cheap" once: (2+1)/(5+7) vs (0+1)/(3+7).
        let odds = (3.0 / 2.0) * ((3.0 / 12.0) / (1.0 / 10.0));
        let p = m.spam_probability("", "cheap cheap cheap");
        assert!((p - odds_to_p(odds)).abs() < 1e-6);
    }

    #[test]
    fn lidstone_alpha_is_used() {
        let m = Model::train(&tiny(), &words_only(0.5, false));
        // "offer": (1+0.5)/(6+3.5) vs (0+0.5)/(3+3.5), prior 3/2.
        let odds = 1.5 * ((1.5 / 9.5) / (0.5 / 6.5));
        let p = m.spam_probability("", "offer");
        assert!((p - odds_to_p(odds)).abs() < 1e-6);
    }

    #[test]
    fn empty_and_extreme_inputs_stay_in_range() {
        let empty = Model::new(&Options::default());
        assert_eq!(empty.spam_probability("a", "anything at all"), 0.5);
        let m = Model::train(&tiny(), &words_only(1e-9, false));
        let long_spam = "cheap ".repeat(100_000);
        let long_ham = "thanks ".repeat(100_000);
        for (text, want) in [(long_spam.as_str(), 1.0), (long_ham.as_str(), 0.0)] {
            let p = m.spam_probability("", text);
            assert!(p.is_finite() && (0.0..=1.0).contains(&p));
            assert_eq!(p, want);
        }
        // Only the prior is left: (2+1)/(1+1) odds.
        assert!((m.spam_probability("", "") - odds_to_p(1.5)).abs() < 1e-12);
        let bad = Model::new(&Options {
            alpha: f64::NAN,
            ..Options::default()
        });
        assert_eq!(bad.options().alpha, 1.0);
    }

    fn corpus() -> Vec<Sample> {
        let spam = [
            "WIN a FREE prize now",
            "cheap pills http://x.biz/buy",
            "$$$ fast money!!!",
        ];
        let ham = [
            "Thanks, great post",
            "I disagree with point 2",
            "see www.rust-lang.org docs",
        ];
        (0..60)
            .map(|i| {
                let (label, base) = if i % 3 == 0 {
                    (Label::Spam, spam[(i / 3) % 3])
                } else {
                    (Label::Ham, ham[i % 3])
                };
                sample(
                    label,
                    &format!("user{} u{}@example.org", i % 7, i),
                    &format!("{base} {i}"),
                )
            })
            .collect()
    }

    #[test]
    fn incremental_updates_equal_retraining() {
        for options in [Options::default(), words_only(1.0, false)] {
            let all = corpus();
            let full = Model::train(&all, &options);
            let mut grown = Model::train(&all[..25], &options);
            for s in &all[25..] {
                grown.learn(s);
            }
            assert_eq!(grown, full);
            let mut reversed: Vec<Sample> = all.clone();
            reversed.reverse();
            assert_eq!(Model::train(&reversed, &options), full);
            let mut shrunk = full.clone();
            // Compile the scoring table first: unlearning must invalidate it.
            let _ = shrunk.spam_probability("x", "y");
            for s in all[25..].iter().rev() {
                shrunk.unlearn(s).expect("learned before");
            }
            let base = Model::train(&all[..25], &options);
            assert_eq!(shrunk, base);
            for s in &all {
                assert_eq!(
                    shrunk.spam_probability(&s.author, &s.text).to_bits(),
                    base.spam_probability(&s.author, &s.text).to_bits()
                );
                assert_eq!(
                    grown.spam_probability(&s.author, &s.text).to_bits(),
                    full.spam_probability(&s.author, &s.text).to_bits()
                );
            }
        }
    }

    #[test]
    fn unlearn_rejects_unknown_samples_without_changes() {
        let mut m = Model::train(&tiny(), &words_only(1.0, false));
        let before = m.clone();
        let never = sample(Label::Ham, "", "nice post brand new words");
        assert!(matches!(
            m.unlearn(&never),
            Err(SpamError::NotLearned { .. })
        ));
        let wrong_label = sample(Label::Ham, "", "buy cheap pills");
        assert!(m.unlearn(&wrong_label).is_err());
        assert_eq!(m, before);
        let mut empty = Model::new(&Options::default());
        assert!(empty.unlearn(&tiny()[0]).is_err());
    }

    #[test]
    fn json_round_trip() {
        let m = Model::train(&corpus(), &Options::default());
        let json = m.to_json();
        let back = Model::from_json(&json).expect("round trip");
        assert_eq!(back, m);
        assert_eq!(back.to_json(), json);
        for s in corpus() {
            assert_eq!(
                back.spam_probability(&s.author, &s.text).to_bits(),
                m.spam_probability(&s.author, &s.text).to_bits()
            );
        }
    }

    /// A version-1 file as written by the first release; it must keep loading.
    const V1_FILE: &str = r##"{"version":1,
        "options":{"alpha":1.0,"binary":false,"features":{"links":false,"domains":false,
            "numbers":false,"symbols":false,"caps":false,"author_prefix":false}},
        "docs":{"spam":2,"ham":1},"totals":{"spam":6,"ham":3},
        "tokens":{"buy":[1,0],"cheap":[3,0],"nice":[0,1],"offer":[1,0],
            "pills":[1,0],"post":[0,1],"thanks":[0,1]}}"##;

    #[test]
    fn reads_version_1_files() {
        let m = Model::from_json(V1_FILE).expect("v1 loads");
        assert_eq!(m, Model::train(&tiny(), &words_only(1.0, false)));
    }

    #[test]
    fn newer_or_broken_files_are_clear_errors() {
        let newer = V1_FILE.replace(r#""version":1"#, r#""version":7"#);
        let err = Model::from_json(&newer).expect_err("newer version");
        assert!(matches!(
            err,
            SpamError::UnsupportedVersion {
                found: 7,
                supported: FORMAT_VERSION
            }
        ));
        assert!(err.to_string().contains("version 7 is newer"), "{err}");
        let zero = V1_FILE.replace(r#""version":1"#, r#""version":0"#);
        assert!(matches!(
            Model::from_json(&zero),
            Err(SpamError::Inconsistent(_))
        ));
        let bad_totals = V1_FILE.replace(r#""spam":6"#, r#""spam":7"#);
        assert!(matches!(
            Model::from_json(&bad_totals),
            Err(SpamError::Inconsistent(_))
        ));
        assert!(matches!(Model::from_json("{}"), Err(SpamError::Json(_))));
        assert!(matches!(
            Model::from_json("not json"),
            Err(SpamError::Json(_))
        ));
    }

    #[test]
    fn batch_keeps_input_order() {
        let m = Model::train(&corpus(), &Options::default());
        let comments: Vec<Comment> = corpus()
            .into_iter()
            .cycle()
            .take(1000)
            .map(|s| Comment {
                author: s.author,
                text: s.text,
            })
            .collect();
        let batch = m.classify_batch(&comments);
        for (c, p) in comments.iter().zip(&batch) {
            assert_eq!(
                m.spam_probability(&c.author, &c.text).to_bits(),
                p.to_bits()
            );
        }
    }
}
