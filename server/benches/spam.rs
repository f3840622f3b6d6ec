//! Spam filter benchmark: prints the headline figures, then runs criterion.
//!
//! `cargo bench --bench spam` prints
//! - classification throughput (word tokens/s on all cores) on a large input,
//! - the time to train on 10,000 comments,
//! - spam/ham F1 from 3-fold cross-validation on every prepared corpus,
//!
//! then runs the criterion measurements. Set `SPAM_FIGURES_ONLY=1` to stop
//! after the figures. Under `cargo test --benches` only criterion's one-shot
//! smoke run happens. Corpora are the `*.csv` files made by
//! `spam-data/prepare.py` (looked up in `$SPAM_DATA_DIR`, else in
//! `spam-data/` next to this crate's manifest); without them the figures use
//! a synthetic corpus, which is fine for speed but says nothing about F1.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;
use server::spam::{
    Comment, CvOptions, DEFAULT_THRESHOLD, Label, Model, Options, Sample, classify_csv_file,
    cross_validate, read_samples, tokenize,
};

/// SplitMix64, so the synthetic corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Roughly Zipf-distributed rank in `0..n`, like word frequencies.
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) as usize).saturating_sub(1).min(n - 1)
    }
}

/// Comments built from a 50,000-word made-up vocabulary; spam and ham favour
/// different (overlapping) word ranks, and spam carries more links.
fn synthetic(n: usize, seed: u64) -> Vec<Sample> {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ter", "sun", "ba", "re", "tion", "an", "po", "del", "qui", "ra", "ne",
        "st", "or",
    ];
    let mut rng = Rng(seed);
    let vocab: Vec<String> = (0..50_000)
        .map(|_| {
            let k = 1 + rng.below(4);
            (0..k).map(|_| SYLLABLES[rng.below(16)]).collect()
        })
        .collect();
    (0..n)
        .map(|i| {
            let spam = i % 3 == 0;
            let len = 10 + rng.zipf(400);
            let mut text = String::new();
            for w in 0..len {
                let r = rng.zipf(vocab.len());
                let r = if spam { (r * 7 + 13) % vocab.len() } else { r };
                if w > 0 {
                    text.push(if w % 12 == 0 { '\n' } else { ' ' });
                }
                text.push_str(&vocab[r]);
                if w % 9 == 4 {
                    text.push(',');
                }
            }
            if spam && rng.below(2) == 0 {
                text.push_str(" https://www.example.com/offer");
            }
            Sample {
                label: if spam { Label::Spam } else { Label::Ham },
                author: format!("{} {}@mail.example", vocab[rng.below(5000)], vocab[i % 997]),
                text,
            }
        })
        .collect()
}

fn corpora() -> Vec<(String, Vec<Sample>)> {
    let dir = std::env::var_os("SPAM_DATA_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spam-data"),
        PathBuf::from,
    );
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "csv"));
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let name = p.file_stem()?.to_string_lossy().into_owned();
            let file = std::fs::File::open(&p).ok()?;
            match read_samples(file) {
                Ok(s) => Some((name, s)),
                Err(e) => {
                    eprintln!("skipping {}: {e}", p.display());
                    None
                }
            }
        })
        .collect()
}

/// CPU seconds used by this process so far (Linux `/proc`; `None` elsewhere).
/// Dividing work by CPU time gives a rate that other load on the machine
/// does not distort, unlike wall time.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux configuration in practice.
    Some(ticks / 100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Runs `f` `runs` times; returns the fastest wall time, the least CPU time
/// of a run (if known) and the last result.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Option<f64>, T) {
    let mut best = Duration::MAX;
    let mut best_cpu: Option<f64> = None;
    let mut out = None;
    for _ in 0..runs.max(1) {
        let cpu = process_cpu_seconds();
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        if let Some(used) = cpu.zip(process_cpu_seconds()).map(|(a, b)| b - a) {
            best_cpu = Some(best_cpu.map_or(used, |c| c.min(used)));
        }
        out = Some(r);
    }
    match out {
        Some(r) => (best, best_cpu, r),
        None => (best, best_cpu, f()),
    }
}

fn throughput(name: &str, samples: &[Sample], min_tokens: usize) {
    let model = Model::train(samples, &Options::default());
    let per_round: usize = samples
        .iter()
        .map(|s| tokenize::count_words(&s.author, &s.text))
        .sum();
    let rounds = min_tokens.div_ceil(per_round.max(1));
    let input: Vec<Comment> = (0..rounds)
        .flat_map(|_| samples.iter())
        .map(|s| Comment {
            author: s.author.clone(),
            text: s.text.clone(),
        })
        .collect();
    let tokens = per_round * rounds;
    let bytes: usize = input.iter().map(|c| c.author.len() + c.text.len()).sum();
    // Warm-up compiles the scoring table, which `learn` would invalidate anyway.
    black_box(model.spam_probability("warm", "up"));
    let (t, cpu, scores) = best_of(5, || model.classify_batch(black_box(&input)));
    black_box(scores);
    let secs = t.as_secs_f64();
    let threads = rayon::current_num_threads();
    println!(
        "classify {name}: {} comments, {:.1} M tokens, {:.0} MB in {:.3} s on {threads} threads \
         -> {:.1} M tokens/s ({:.0} MB/s; load average {})",
        input.len(),
        tokens as f64 / 1e6,
        bytes as f64 / 1e6,
        secs,
        tokens as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6,
        load_average(),
    );
    if let Some(cpu) = cpu.filter(|&c| c > 0.0) {
        println!(
            "  {:.1} M tokens per CPU-second, i.e. {:.1} M tokens/s on {threads} otherwise idle cores",
            tokens as f64 / cpu / 1e6,
            tokens as f64 / cpu / 1e6 * threads as f64,
        );
    }
    csv_end_to_end(name, &model, &input, tokens);
}

/// `spam classify` end to end: reading the CSV file, parsing, scoring and
/// formatting `label,score` rows (all on all cores).
fn csv_end_to_end(name: &str, model: &Model, input: &[Comment], tokens: usize) {
    let mut csv = String::from("author,text\n");
    for c in input {
        for (i, field) in [&c.author, &c.text].into_iter().enumerate() {
            csv.push_str(if i == 0 { "\"" } else { ",\"" });
            csv.push_str(&field.replace('"', "\"\""));
            csv.push('"');
        }
        csv.push('\n');
    }
    // Through a file, as `moderato spam classify --csv FILE` reads it.
    let path = std::env::temp_dir().join(format!("moderato-bench-{}.csv", std::process::id()));
    if let Err(e) = std::fs::write(&path, &csv) {
        println!("classify_csv {name}: cannot write {}: {e}", path.display());
        return;
    }
    let (t, _, rows) = best_of(3, || {
        classify_csv_file(model, black_box(&path), std::io::sink(), DEFAULT_THRESHOLD)
    });
    let _ = std::fs::remove_file(&path);
    match rows {
        Ok(rows) => println!(
            "classify_csv {name}: {rows} rows, {:.0} MB of CSV in {:.3} s -> {:.1} M tokens/s end to end",
            csv.len() as f64 / 1e6,
            t.as_secs_f64(),
            tokens as f64 / t.as_secs_f64() / 1e6
        ),
        Err(e) => println!("classify_csv {name}: {e}"),
    }
}

fn training(name: &str, samples: &[Sample]) {
    let ten_k: Vec<Sample> = samples.iter().cycle().take(10_000).cloned().collect();
    let tokens: usize = ten_k
        .iter()
        .map(|s| tokenize::count_words(&s.author, &s.text))
        .sum();
    let (t, _, model) = best_of(3, || Model::train(black_box(&ten_k), &Options::default()));
    println!(
        "train {name}: 10,000 comments ({:.1} M tokens, vocabulary {}) in {:.3} s",
        tokens as f64 / 1e6,
        model.vocabulary_len(),
        t.as_secs_f64()
    );
}

fn figures(corpora: &[(String, Vec<Sample>)]) {
    println!("== spam filter figures ==");
    let synthetic = synthetic(20_000, 42);
    throughput("synthetic", &synthetic, 50_000_000);
    training("synthetic", &synthetic);
    for (name, samples) in corpora {
        throughput(name, samples, 50_000_000);
        training(name, samples);
        // The same texts at SMS length (at most 160 characters, no author): the fixed cost
        // per row weighs most here.
        let sms: Vec<Sample> = samples
            .iter()
            .map(|s| Sample {
                label: s.label,
                author: String::new(),
                text: s.text.chars().take(160).collect(),
            })
            .collect();
        throughput(&format!("{name} at SMS length"), &sms, 50_000_000);
    }
    if corpora.is_empty() {
        println!("no corpus CSV found: run spam-data/prepare.py for F1 figures");
    }
    for (name, samples) in corpora {
        let cv = CvOptions::default();
        match cross_validate(samples, &Options::default(), &cv) {
            Ok(e) => println!(
                "F1 {name} ({} rows, {}-fold, threshold {}): spam {:.4} (P {:.4} R {:.4}), \
                 ham {:.4}",
                e.n, e.folds, e.threshold, e.spam.f1, e.spam.precision, e.spam.recall, e.ham.f1
            ),
            Err(e) => println!("F1 {name}: {e}"),
        }
    }
}

fn benches(c: &mut Criterion, corpora: &[(String, Vec<Sample>)]) {
    let samples = corpora
        .first()
        .map_or_else(|| synthetic(5_000, 7), |(_, s)| s.clone());
    let model = Model::train(&samples, &Options::default());
    let short = "Great article, thanks! I tried the second approach and it worked.";
    c.bench_function("spam_probability/short comment", |b| {
        b.iter(|| model.spam_probability(black_box("Jane jane@example.org"), black_box(short)))
    });
    let comments: Vec<Comment> = samples
        .iter()
        .take(1_000)
        .map(|s| Comment {
            author: s.author.clone(),
            text: s.text.clone(),
        })
        .collect();
    c.bench_function("classify_batch/1000 comments", |b| {
        b.iter(|| model.classify_batch(black_box(&comments)))
    });
    let thousand: Vec<Sample> = samples.iter().take(1_000).cloned().collect();
    c.bench_function("train/1000 comments", |b| {
        b.iter(|| Model::train(black_box(&thousand), &Options::default()))
    });
}

fn main() {
    let corpora = corpora();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then only the quick criterion smoke run below should happen.
    if std::env::args().any(|a| a == "--bench") {
        figures(&corpora);
        if std::env::var_os("SPAM_FIGURES_ONLY").is_some() {
            return;
        }
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &corpora);
    c.final_summary();
}
