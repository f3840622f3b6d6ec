//! The `import`, `export` and `backup` subcommands.

use super::{Format, ImportOptions, KeyFrom, backup, export, import_file};
use crate::cli::Common;
use crate::config::Config;
use crate::store::Store;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// What wrote the file.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The export (`.gz` files are decompressed on the fly), or Isso's database file.
    pub file: PathBuf,
    /// Where thread keys come from.
    #[arg(long, value_enum, default_value_t = KeyFrom::Path)]
    pub key_from: KeyFrom,
    /// Rewrite thread URLs that start with OLD to start with NEW (repeatable), for a site
    /// that moved: --url-prefix http://old.example=https://new.example
    #[arg(long = "url-prefix", value_name = "OLD=NEW")]
    pub url_prefix: Vec<String>,
    /// Import WordPress pingbacks and trackbacks too.
    #[arg(long)]
    pub keep_pingbacks: bool,
    /// Do not create threads that have no comments (Disqus lists every page it saw).
    #[arg(long)]
    pub skip_empty_threads: bool,
    /// Do not retrain the spam filter afterwards.
    #[arg(long)]
    pub no_retrain: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Export only this thread.
    #[arg(long)]
    pub thread: Option<String>,
    /// Write here instead of standard output; a name ending in `.gz` is gzip-compressed.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Write a backup now into `[backup] dir` (or --dir), keeping the newest `keep`.
    Now {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        keep: Option<usize>,
    },
}

fn config(common: &Common) -> Result<Config> {
    Ok(match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

async fn store(common: &Common) -> Result<Store> {
    Store::open(&common.database)
        .await
        .with_context(|| format!("cannot open database {}", common.database))
}

/// Parses `OLD=NEW`.
pub fn parse_prefix(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((old, new)) if !old.is_empty() => Ok((old.to_owned(), new.to_owned())),
        _ => bail!("--url-prefix {s:?}: use OLD=NEW, e.g. http://old.example=https://new.example"),
    }
}

fn bar(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub async fn import(common: &Common, args: ImportArgs) -> Result<()> {
    let config = config(common)?;
    let options = ImportOptions {
        key_from: args.key_from,
        url_prefixes: args
            .url_prefix
            .iter()
            .map(|p| parse_prefix(p))
            .collect::<Result<_>>()?,
        keep_pingbacks: args.keep_pingbacks,
        skip_empty_threads: args.skip_empty_threads,
        // The engine sets it from `comments.max_depth`.
        max_depth: 0,
    };
    if !args.file.is_file() {
        bail!("cannot read {}: no such file", args.file.display());
    }
    let store = store(common).await?;
    let progress = bar("{msg:10} [{bar:30}] {pos}/{len} ({elapsed})");
    let report = |phase: &str, done: u64, total: u64| {
        if progress.message() != phase {
            progress.set_message(phase.to_owned());
        }
        progress.set_length(total.max(done));
        progress.set_position(done);
    };
    let summary = import_file(&store, args.format, &args.file, &options, &report)
        .await
        .with_context(|| args.file.display().to_string())?;
    progress.finish_and_clear();
    print!("{summary}");
    if summary.imported_total() > 0 && !args.no_retrain {
        // The same use case as the API's retrain (so staff watching see it announced).
        let engine = crate::Engine::open(&common.database, config).await?;
        let training = bar("retraining the spam filter [{bar:30}] {pos}/{len}");
        let t = engine
            .retrain_spam(&crate::Staff::operator(), None, |step, of| {
                training.set_length(of);
                training.set_position(step);
            })
            .await?;
        training.finish_and_clear();
        println!(
            "spam filter retrained on {} spam and {} ham ({})",
            t.spam_count, t.ham_count, t.source
        );
    }
    Ok(())
}

pub async fn export_cmd(common: &Common, args: ExportArgs) -> Result<()> {
    let store = store(common).await?;
    let end = match &args.out {
        Some(path) => export::export_file(&store, args.thread.as_deref(), path).await?,
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            export::export_to(&store, args.thread.as_deref(), &mut out, "standard output").await?
        }
    };
    eprintln!(
        "exported {} threads, {} comments, {} audit entries",
        end.threads, end.comments, end.audit
    );
    Ok(())
}

pub async fn backup_cmd(common: &Common, cmd: BackupCommand) -> Result<()> {
    let config = config(common)?;
    let BackupCommand::Now { dir, keep } = cmd;
    let dir = match dir {
        Some(d) => d,
        None if !config.backup.dir.trim().is_empty() => PathBuf::from(&config.backup.dir),
        None => bail!("no backup directory: set [backup] dir in the configuration or pass --dir"),
    };
    let keep = keep.unwrap_or(config.backup.keep);
    if keep == 0 {
        bail!("--keep must be at least 1");
    }
    let store = store(common).await?;
    let path = backup::backup_now(&store, &dir, keep).await?;
    println!("{}", path.display());
    Ok(())
}
