//! Naive Bayes spam filter for comments: shared types and the public API.
//!
//! The pieces live in submodules and are re-exported here:
//! - [`tokenize`]: the hand-written tokenizer (words plus optional feature tokens),
//! - `model`: the multinomial Naive Bayes [`Model`] with incremental updates and JSON I/O,
//! - `scorer`: the compiled lookup table that makes classification fast,
//! - `eval`: stratified k-fold cross-validation and metrics,
//! - `csv_io`: reading labelled/unlabelled CSV and writing `label,score` CSV.
//!
//! Typical use from the server:
//! ```
//! use server::spam::{DEFAULT_THRESHOLD, Label, Model, Options, Sample};
//!
//! let sample = |label, author: &str, text: &str| Sample {
//!     label,
//!     author: author.into(),
//!     text: text.into(),
//! };
//! let history = [
//!     sample(Label::Spam, "Cheap Pills pills@spam.example", "BUY NOW\nCheap pills, no prescription"),
//!     sample(Label::Ham, "Jane jane@example.org", "Nice post\nThe second example helped me"),
//! ];
//! let mut model = Model::train(&history, &Options::default());
//! let p = model.spam_probability("Jo jo@example.org", "Question\nDoes the second example scale?");
//! assert!(p < DEFAULT_THRESHOLD);
//! // A moderator's decision is learned incrementally; `unlearn` reverts it.
//! let decided = sample(Label::Ham, "Jo jo@example.org", "Question\nDoes the second example scale?");
//! model.learn(&decided);
//! let json = model.to_json();
//! assert_eq!(Model::from_json(&json).ok(), Some(model));
//! ```

mod csv_fast;
mod csv_io;
mod eval;
mod model;
mod scorer;
pub mod tokenize;

use serde::{Deserialize, Serialize};

pub use csv_io::{
    CsvError, classify_csv, classify_csv_bytes, classify_csv_file, read_comments, read_samples,
    write_scores,
};
pub use eval::{
    Confusion, CvOptions, Evaluation, LabelMetrics, cross_validate, out_of_fold_scores,
    stratified_folds,
};
pub use model::{FORMAT_VERSION, Model, Options};
pub use tokenize::Features;

/// The two strings a comment is judged (and learned) by: "name email" as the author, and
/// "title\nbody" as the text. Scoring a new comment and learning from a stored one both use
/// this, so incremental learning stays equal to a retrain on the same comments.
pub fn judged_text(
    name: &str,
    email: Option<&str>,
    title: Option<&str>,
    body: &str,
) -> (String, String) {
    let author = match email {
        Some(email) => format!("{name} {email}"),
        None => name.to_owned(),
    };
    (author, format!("{}\n{body}", title.unwrap_or("")))
}

/// Recommended `spam.threshold`: a comment whose P(spam) is at or above it is spam.
///
/// From the threshold sweep in `docs/spam.md`: Naive Bayes pushes almost all
/// scores to the ends, so spam F1 moves by at most 0.004 anywhere in 0.3–0.8;
/// 0.5 (the equal-cost Bayes decision) sits on that plateau. Where flagged
/// comments are deleted rather than queued for a moderator, 0.9 flags 18–43%
/// fewer legitimate comments for 0.001–0.005 less spam F1.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// The class of a comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Unwanted comment.
    Spam,
    /// Legitimate comment.
    Ham,
}

impl Label {
    /// Both labels, in the order used for per-label arrays.
    pub const ALL: [Label; 2] = [Label::Spam, Label::Ham];

    /// Position of this label in per-label arrays (`Spam` = 0, `Ham` = 1).
    pub const fn index(self) -> usize {
        match self {
            Label::Spam => 0,
            Label::Ham => 1,
        }
    }

    /// The lowercase name used in CSV and JSON (`"spam"` or `"ham"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Label::Spam => "spam",
            Label::Ham => "ham",
        }
    }

    /// Parses `spam` or `ham`, ignoring ASCII case and surrounding whitespace.
    pub fn parse(s: &str) -> Option<Label> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("spam") {
            Some(Label::Spam)
        } else if s.eq_ignore_ascii_case("ham") {
            Some(Label::Ham)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A labelled comment for training or evaluation.
///
/// The server builds `author` as `name + " " + email` and `text` as
/// `title + "\n" + body`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Whether the comment is spam.
    pub label: Label,
    /// Author name and e-mail, space separated.
    pub author: String,
    /// Title and body, newline separated.
    pub text: String,
}

/// An unlabelled comment to classify.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Author name and e-mail, space separated.
    pub author: String,
    /// Title and body, newline separated.
    pub text: String,
}

/// Errors from model (de)serialization, updates and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum SpamError {
    /// The JSON is not a model this code understands.
    #[error("invalid spam model JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The model was written by newer code with a format this code does not know.
    #[error(
        "spam model format version {found} is newer than this server supports \
         (up to {supported}); upgrade the server or retrain the model"
    )]
    UnsupportedVersion {
        /// Version found in the file.
        found: u32,
        /// Newest version this code reads.
        supported: u32,
    },
    /// The JSON parsed but its numbers contradict each other.
    #[error("inconsistent spam model: {0}")]
    Inconsistent(String),
    /// `unlearn` was asked to remove a sample the model cannot contain.
    #[error("cannot unlearn a {label} sample that was never learned: {reason}")]
    NotLearned {
        /// Label of the sample.
        label: Label,
        /// Which count would go below zero.
        reason: String,
    },
    /// Cross-validation settings that cannot work with the given data.
    #[error("cannot cross-validate: {0}")]
    Evaluation(String),
}
