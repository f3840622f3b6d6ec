//! Import benchmark: generates a Disqus export of 100,000 comments (2,000 threads, replies up
//! to several levels deep, posts of all threads interleaved as in real exports, some deleted
//! or spam) and imports it into a fresh SQLite database, printing the time and the peak
//! memory (VmHWM), which stays bounded because the XML is streamed, not loaded; then imports
//! the same file again as the same-run baseline (everything is read, cleaned and matched,
//! nothing is new) and prints the ratio.
//!
//! `cargo bench -p server --bench import` (release build). `MODERATO_BENCH_COMMENTS=N`
//! changes the size.

use server::transfer::{Format, ImportOptions};
use std::io::Write;
use std::time::Instant;

/// A small deterministic generator: the benchmark needs no randomness crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn generate(path: &std::path::Path, comments: u64, threads: u64) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        r#"<?xml version="1.0" encoding="utf-8"?>
<disqus xmlns="http://disqus.com" xmlns:dsq="http://disqus.com/disqus-internals">"#
    )?;
    for t in 0..threads {
        writeln!(
            out,
            "  <thread dsq:id=\"t{t}\">\n    <id>post-{t}</id>\n    <forum>bench</forum>\n    \
             <link>https://bench.example/{}/post-{t}/</link>\n    <title>Post number {t}</title>\n    \
             <createdAt>2015-01-01T00:00:00Z</createdAt>\n    <isDeleted>false</isDeleted>\n  </thread>",
            2015 + t % 10
        )?;
    }
    let mut rng = Lcg(42);
    // Posts made so far per thread, so a reply names an earlier post of its own thread.
    let mut per_thread: Vec<Vec<u64>> = vec![Vec::new(); threads as usize];
    for p in 0..comments {
        let t = rng.below(threads) as usize;
        let earlier = &per_thread[t];
        let parent = if !earlier.is_empty() && rng.below(10) < 6 {
            Some(earlier[rng.below(earlier.len() as u64) as usize])
        } else {
            None
        };
        let roll = rng.below(100);
        let (deleted, spam) = (roll < 3, (3..6).contains(&roll));
        let secs = p * 60;
        let time = time::OffsetDateTime::from_unix_timestamp(1_420_070_400 + secs as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        write!(
            out,
            "  <post dsq:id=\"{p}\">\n    <id />\n    <message><![CDATA[<p>Comment {p} on post {t}: \
             this is a <b>fairly</b> ordinary comment with <a href=\"https://example.org/{p}\">a link</a> \
             and some words about the post, the weather and the state of things.</p><p>Second \
             paragraph &amp; more.</p>]]></message>\n    <createdAt>{time}</createdAt>\n    \
             <isDeleted>{deleted}</isDeleted>\n    <isSpam>{spam}</isSpam>\n    <author>\n      \
             <email>reader{}@example.org</email>\n      <name>Reader {}</name>\n      \
             <isAnonymous>true</isAnonymous>\n    </author>\n    <ipAddress>192.0.2.{}</ipAddress>\n    \
             <thread dsq:id=\"t{t}\" />\n",
            p % 5000,
            p % 5000,
            p % 250
        )?;
        if let Some(parent) = parent {
            writeln!(out, "    <parent dsq:id=\"{parent}\" />")?;
        }
        writeln!(out, "  </post>")?;
        per_thread[t].push(p);
    }
    writeln!(out, "</disqus>")?;
    out.flush()
}

#[tokio::main]
async fn main() {
    let comments: u64 = std::env::var("MODERATO_BENCH_COMMENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let threads = (comments / 50).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let xml = dir.path().join("disqus.xml");
    let started = Instant::now();
    generate(&xml, comments, threads).expect("write the export");
    let size = std::fs::metadata(&xml).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {comments} comments in {threads} threads: {:.1} MB in {:.2} s",
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let mut config = server::config::Config::default();
    // The import is measured, not the training of the shipped corpus at start.
    config.spam.bundled_corpus = false;
    let engine = server::Engine::open(
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
        config,
    )
    .await
    .expect("open the database");
    let before = vm_hwm_kib();
    let started = Instant::now();
    let summary = engine
        .import_file(
            &server::Staff::operator(),
            Format::Disqus,
            &xml,
            &ImportOptions::default(),
            &|_, _, _| {},
        )
        .await
        .expect("import");
    let secs = started.elapsed().as_secs_f64();
    let after = vm_hwm_kib();
    print!("{summary}");
    println!(
        "import: {:.2} s, {:.0} comments/s (goal: under 10 s for 100,000)",
        secs,
        summary.imported_total() as f64 / secs
    );
    println!(
        "peak memory (VmHWM): {:.1} MiB before the import, {:.1} MiB after; the file is {:.1} MiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        size as f64 / 1_048_576.0
    );
    // Baseline from the same run: importing the same file again reads, parses, cleans and
    // renders every record and matches it against what is stored, but has nothing to write
    // (every source id is known), so the ratio is what writing costs on top of the rest.
    let started = Instant::now();
    let again = engine
        .import_file(
            &server::Staff::operator(),
            Format::Disqus,
            &xml,
            &ImportOptions::default(),
            &|_, _, _| {},
        )
        .await
        .expect("import again");
    let baseline = started.elapsed().as_secs_f64();
    assert_eq!(again.imported_total(), 0, "a second import adds nothing");
    println!(
        "baseline, the same file again (all read, cleaned and matched; nothing new to write): \
         {baseline:.2} s; the import took {:.2}x that",
        secs / baseline
    );
}
