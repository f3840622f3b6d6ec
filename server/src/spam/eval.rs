//! Stratified k-fold cross-validation with per-label precision, recall and F1.

use serde::{Deserialize, Serialize};

use super::model::{Model, Options};
use super::{DEFAULT_THRESHOLD, Label, Sample, SpamError};

/// Cross-validation settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvOptions {
    /// Number of folds (at least 2).
    pub folds: usize,
    /// Seed of the deterministic shuffle; equal seeds give equal folds.
    pub seed: u64,
    /// P(spam) at or above which a comment counts as spam.
    pub threshold: f64,
}

impl Default for CvOptions {
    fn default() -> Self {
        CvOptions {
            folds: 3,
            seed: 0x5EED_2024,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

/// Outcome counts for one label, treating that label as "positive".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Label predicted and true.
    pub tp: u64,
    /// Label predicted, other label true.
    pub fp: u64,
    /// Other label predicted, this label true.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Other label predicted and true.
    pub tn: u64,
}

impl Confusion {
    fn add(&mut self, o: &Confusion) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
    }

    /// `tp / (tp + fp)`, or 0 when nothing was predicted as this label.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)`, or 0 when the label never occurs.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Harmonic mean of precision and recall, or 0 when both are 0.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Metrics for one label: precision, recall and F1 averaged over folds, and
/// the confusion counts summed over folds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    /// Mean over folds of the per-fold precision.
    pub precision: f64,
    /// Mean over folds of the per-fold recall.
    pub recall: f64,
    /// Mean over folds of the per-fold F1.
    pub f1: f64,
    /// Confusion counts over all folds, with this label as positive.
    pub confusion: Confusion,
}

/// Result of a cross-validation, serializing as
/// `{"spam":{"precision":..,"recall":..,"f1":..,"confusion":{..}},"ham":{..},"folds":3,"n":..,"threshold":..}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Metrics with spam as the positive label.
    pub spam: LabelMetrics,
    /// Metrics with ham as the positive label.
    pub ham: LabelMetrics,
    /// Number of folds.
    pub folds: usize,
    /// Number of samples evaluated.
    pub n: usize,
    /// Threshold used to turn P(spam) into a label.
    pub threshold: f64,
}

impl Evaluation {
    /// Scores already computed out of fold (`scores[i]` by a model that did
    /// not see sample `i`, which is in fold `fold_of[i]`), turned into metrics.
    pub fn from_scores(
        labels: &[Label],
        scores: &[f64],
        fold_of: &[usize],
        folds: usize,
        threshold: f64,
    ) -> Evaluation {
        let mut per_fold = vec![[Confusion::default(); 2]; folds];
        for ((&label, &score), &fold) in labels.iter().zip(scores).zip(fold_of) {
            let Some(c) = per_fold.get_mut(fold) else {
                continue;
            };
            let predicted = if score >= threshold {
                Label::Spam
            } else {
                Label::Ham
            };
            for positive in Label::ALL {
                let m = &mut c[positive.index()];
                match (predicted == positive, label == positive) {
                    (true, true) => m.tp += 1,
                    (true, false) => m.fp += 1,
                    (false, true) => m.fn_ += 1,
                    (false, false) => m.tn += 1,
                }
            }
        }
        let metrics = |l: Label| {
            let mut total = Confusion::default();
            let (mut p, mut r, mut f) = (0.0, 0.0, 0.0);
            for c in &per_fold {
                let c = &c[l.index()];
                total.add(c);
                p += c.precision();
                r += c.recall();
                f += c.f1();
            }
            let k = folds.max(1) as f64;
            LabelMetrics {
                precision: p / k,
                recall: r / k,
                f1: f / k,
                confusion: total,
            }
        };
        Evaluation {
            spam: metrics(Label::Spam),
            ham: metrics(Label::Ham),
            folds,
            n: labels.len().min(scores.len()),
            threshold,
        }
    }
}

/// SplitMix64: tiny, well-mixed, and enough for a reproducible shuffle.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// Assigns each sample a fold in `0..folds` so that every fold gets the same
/// share (±1) of each label. Deterministic for a given `seed`.
pub fn stratified_folds(labels: &[Label], folds: usize, seed: u64) -> Vec<usize> {
    let folds = folds.max(1);
    let mut rng = SplitMix(seed);
    let mut fold_of = vec![0; labels.len()];
    // Continue the round-robin across labels so fold sizes also stay within one.
    let mut next = 0;
    for label in Label::ALL {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == label).collect();
        for i in (1..idx.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            idx.swap(i, j);
        }
        for i in idx {
            fold_of[i] = next;
            next = (next + 1) % folds;
        }
    }
    fold_of
}

/// For every sample, P(spam) from a model trained on the other folds.
/// Returns the scores and each sample's fold.
pub fn out_of_fold_scores(
    samples: &[Sample],
    options: &Options,
    folds: usize,
    seed: u64,
) -> Result<(Vec<f64>, Vec<usize>), SpamError> {
    if folds < 2 {
        return Err(SpamError::Evaluation(format!(
            "need at least 2 folds, got {folds}"
        )));
    }
    if samples.len() < folds {
        return Err(SpamError::Evaluation(format!(
            "need at least as many samples as folds ({folds}), got {}",
            samples.len()
        )));
    }
    let labels: Vec<Label> = samples.iter().map(|s| s.label).collect();
    let fold_of = stratified_folds(&labels, folds, seed);
    let mut scores = vec![0.0; samples.len()];
    for k in 0..folds {
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..samples.len()).partition(|&i| fold_of[i] == k);
        let train: Vec<&Sample> = train.into_iter().map(|i| &samples[i]).collect();
        let model = Model::train_refs(&train, options);
        let pairs: Vec<(&str, &str)> = test
            .iter()
            .map(|&i| (samples[i].author.as_str(), samples[i].text.as_str()))
            .collect();
        let p = model.classify_pairs(&pairs);
        for (i, p) in test.into_iter().zip(p) {
            scores[i] = p;
        }
    }
    Ok((scores, fold_of))
}

/// Stratified k-fold cross-validation of a model trained with `options`.
pub fn cross_validate(
    samples: &[Sample],
    options: &Options,
    cv: &CvOptions,
) -> Result<Evaluation, SpamError> {
    let (scores, fold_of) = out_of_fold_scores(samples, options, cv.folds, cv.seed)?;
    let labels: Vec<Label> = samples.iter().map(|s| s.label).collect();
    Ok(Evaluation::from_scores(
        &labels,
        &scores,
        &fold_of,
        cv.folds,
        cv.threshold,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_folds_keep_label_proportions() {
        let labels: Vec<Label> = (0..100)
            .map(|i| if i % 10 < 3 { Label::Spam } else { Label::Ham })
            .collect();
        let folds = stratified_folds(&labels, 3, 7);
        for k in 0..3 {
            let spam = (0..100)
                .filter(|&i| folds[i] == k && labels[i] == Label::Spam)
                .count();
            let ham = (0..100)
                .filter(|&i| folds[i] == k && labels[i] == Label::Ham)
                .count();
            // 30 spam and 70 ham over 3 folds: 10 spam and 23 or 24 ham each.
            assert_eq!(spam, 10, "fold {k}");
            assert!((23..=24).contains(&ham), "fold {k}: {ham}");
        }
        assert_eq!(stratified_folds(&labels, 3, 7), folds);
        assert_ne!(stratified_folds(&labels, 3, 8), folds);
    }

    #[test]
    fn metrics_by_hand() {
        use Label::{Ham, Spam};
        // Fold 0: spam 0.95 (tp), spam 0.2 (fn), ham 0.91 (fp), ham 0.1 (tn).
        // Fold 1: spam 0.99 (tp), ham 0.0 (tn).
        let labels = [Spam, Spam, Ham, Ham, Spam, Ham];
        let scores = [0.95, 0.2, 0.91, 0.1, 0.99, 0.0];
        let folds = [0, 0, 0, 0, 1, 1];
        let e = Evaluation::from_scores(&labels, &scores, &folds, 2, 0.9);
        // Spam: fold 0 P = 1/2, R = 1/2, F1 = 1/2; fold 1 P = R = F1 = 1.
        assert!((e.spam.precision - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        assert!((e.spam.recall - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        assert!((e.spam.f1 - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        assert_eq!(
            e.spam.confusion,
            Confusion {
                tp: 2,
                fp: 1,
                fn_: 1,
                tn: 2
            }
        );
        // Ham: fold 0 P = 1/2, R = 1/2; fold 1 P = R = 1.
        assert!((e.ham.f1 - 0.75).abs() < 1e-12);
        assert_eq!(e.n, 6);
        assert_eq!(e.folds, 2);
    }

    #[test]
    fn evaluation_json_shape() {
        let e = Evaluation::from_scores(&[Label::Spam], &[1.0], &[0], 3, 0.9);
        let v: serde_json::Value = serde_json::to_value(&e).expect("serialize");
        for label in ["spam", "ham"] {
            for key in ["precision", "recall", "f1"] {
                assert!(v[label][key].is_f64(), "{label}.{key}");
            }
        }
        assert_eq!(v["folds"], 3);
        assert_eq!(v["n"], 1);
        assert_eq!(v["spam"]["confusion"]["fn"], 0);
    }

    #[test]
    fn cross_validation_separates_an_easy_corpus() {
        let samples: Vec<Sample> = (0..90)
            .map(|i| {
                let spam = i % 3 == 0;
                Sample {
                    label: if spam { Label::Spam } else { Label::Ham },
                    author: format!("user{i}"),
                    text: if spam {
                        format!("buy cheap pills {i} now")
                    } else {
                        format!("thanks for the post {i}")
                    },
                }
            })
            .collect();
        let e =
            cross_validate(&samples, &Options::default(), &CvOptions::default()).expect("cv runs");
        assert_eq!(e.spam.f1, 1.0);
        assert_eq!(e.ham.f1, 1.0);
        assert_eq!(e.n, 90);
        let bad = CvOptions {
            folds: 1,
            ..CvOptions::default()
        };
        assert!(cross_validate(&samples, &Options::default(), &bad).is_err());
        assert!(cross_validate(&samples[..2], &Options::default(), &CvOptions::default()).is_err());
    }
}
