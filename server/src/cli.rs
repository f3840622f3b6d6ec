//! The `moderato` command line.

use crate::config::Config;
use crate::engine::Engine;
use crate::store::{Store, ThreadSpec};
use anyhow::{Context, Result, bail};
use axum::serve::ListenerExt;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Moderato: a real-time, threaded, moderated comment system.
#[derive(Parser, Debug)]
#[command(name = "moderato", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Database URL: sqlite://FILE (created if missing) or postgres://...
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://moderato.db",
        global = true
    )]
    pub database: String,
    /// TOML configuration file (every key optional).
    #[arg(long, env = "MODERATO_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the web server.
    Serve(ServeArgs),
    /// Manage threads.
    #[command(subcommand)]
    Thread(ThreadCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys for programmatic staff access.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Train, evaluate and run the spam filter.
    #[command(subcommand)]
    Spam(SpamCommand),
    /// Import comments from Disqus, WordPress, Isso, Remark42, Commento or a Moderato export.
    Import(crate::transfer::cli::ImportArgs),
    /// Export threads, comments and the audit log as JSON lines (docs/transfer.md).
    Export(crate::transfer::cli::ExportArgs),
    /// Back up the database as an export.
    #[command(subcommand)]
    Backup(crate::transfer::cli::BackupCommand),
}

#[derive(Subcommand, Debug)]
pub enum SpamCommand {
    /// Cross-validate a filter trained on a labelled CSV (label,author,text) and print the
    /// metrics as JSON.
    Eval {
        #[arg(long)]
        csv: PathBuf,
        #[arg(long, default_value_t = 3)]
        folds: usize,
    },
    /// Retrain the stored filter from a labelled CSV, or from the moderated comments in the
    /// database when no CSV is given.
    Train {
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Score each row (author,text) of a CSV with the stored filter; prints `label,score`.
    Classify {
        #[arg(long)]
        csv: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (or reset an existing one's password); the password comes from
    /// MODERATO_PASSWORD or the first line of standard input.
    Add {
        name: String,
        /// Give the user staff rights (moderation).
        #[arg(long)]
        staff: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create an API key for a user and print it (it is stored only as a hash).
    Create {
        /// The user the key acts as.
        user: String,
        /// A label to recognise the key by.
        #[arg(long, default_value = "api")]
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MODERATO_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// On an empty database, create a `welcome` thread with a few comments.
    #[arg(long)]
    pub demo: bool,
    /// Where cargo-leptos put the site (JS, wasm, CSS).
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: String,
}

#[derive(Subcommand, Debug)]
pub enum ThreadCommand {
    /// Create a thread, or update the given fields of an existing one.
    Set(ThreadSetArgs),
}

#[derive(Args, Debug)]
pub struct ThreadSetArgs {
    /// The thread's key, as in /t/KEY.
    pub key: String,
    /// Thread kind (selects `[moderation.kinds.KIND]`).
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    pub comments_enabled: Option<bool>,
    /// RFC 3339 time, e.g. 2026-11-01T09:00:00Z.
    #[arg(long)]
    pub published_at: Option<String>,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

async fn open_engine(common: &Common) -> Result<Engine> {
    let config = load_config(common.config.as_ref())?;
    let store = Store::open(&common.database)
        .await
        .with_context(|| format!("cannot open database {}", common.database))?;
    Ok(Engine::new(store, config).await?)
}

/// Parses the command line and runs it.
pub async fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&cli.common, args).await,
        Command::Thread(ThreadCommand::Set(args)) => thread_set(&cli.common, args).await,
        Command::User(UserCommand::Add { name, staff }) => {
            user_add(&cli.common, &name, staff).await
        }
        Command::Key(KeyCommand::Create { user, name }) => {
            key_create(&cli.common, &user, &name).await
        }
        Command::Spam(cmd) => spam(&cli.common, cmd).await,
        Command::Import(args) => crate::transfer::cli::import(&cli.common, args).await,
        Command::Export(args) => crate::transfer::cli::export_cmd(&cli.common, args).await,
        Command::Backup(cmd) => crate::transfer::cli::backup_cmd(&cli.common, cmd).await,
    }
}

fn read_password() -> Result<String> {
    if let Ok(p) = std::env::var("MODERATO_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn user_add(common: &Common, name: &str, staff: bool) -> Result<()> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        bail!("the user name must be 1 to 100 characters, without control characters");
    }
    let password = read_password()?;
    if password.chars().count() < 8 {
        bail!("the password must be at least 8 characters (set MODERATO_PASSWORD or pipe it in)");
    }
    let engine = open_engine(common).await?;
    let hash = crate::auth::hash_password(&password);
    let created = match engine.store.create_user(name, &hash, staff).await {
        Ok(_) => true,
        Err(e) if e.is_unique_violation() => {
            engine.store.update_user(name, &hash, staff).await?;
            false
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "{} user {name}{}",
        if created { "created" } else { "updated" },
        if staff { " (staff)" } else { "" }
    );
    Ok(())
}

async fn key_create(common: &Common, user: &str, name: &str) -> Result<()> {
    let engine = open_engine(common).await?;
    let Some(u) = engine.store.user_by_name(user).await? else {
        bail!("no user {user:?} (create it with `moderato user add`)");
    };
    let (key, hash) = crate::auth::new_api_key();
    engine.store.insert_api_key(name, &hash, u.id).await?;
    // The key itself is shown this once; only its hash is stored.
    println!("{key}");
    Ok(())
}

async fn thread_set(common: &Common, args: ThreadSetArgs) -> Result<()> {
    let published_at = match &args.published_at {
        None => None,
        Some(s) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--published-at {s:?} is not an RFC 3339 time"))?;
            Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
        }
    };
    if args.title.as_deref().is_some_and(|t| t.trim().is_empty()) {
        bail!("--title must not be empty");
    }
    let engine = open_engine(common).await?;
    let t = engine
        .set_thread(&ThreadSpec {
            key: args.key,
            kind: args.kind,
            title: args.title,
            comments_enabled: args.comments_enabled,
            published_at,
        })
        .await?;
    println!(
        "thread {} (kind {}, comments {}): {}",
        t.key,
        t.kind,
        if t.comments_enabled != 0 {
            "enabled"
        } else {
            "disabled"
        },
        t.title
    );
    Ok(())
}

async fn serve(common: &Common, args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let engine = Arc::new(open_engine(common).await?);
    if args.demo && crate::demo::seed(&engine).await? {
        tracing::info!("created the demo thread at /t/welcome");
    }
    let site_root = args.site_root.clone();
    if !std::path::Path::new(&site_root).join("pkg").is_dir() {
        tracing::warn!(
            site_root,
            "no built site here: pages render but stay static (build with `cargo leptos build --release`)"
        );
    }
    let app = crate::http::router(engine.clone(), crate::http::leptos_options(&site_root));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?
        .tap_io(crate::http::low_latency);
    tracing::info!(addr = %args.addr, database = %common.database, "Moderato is listening");
    // Housekeeping: forget spent form nonces and live events past the retention window.
    let housekeeping = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let now = crate::store::now_ms();
                if let Err(e) = engine.store.purge_nonces(now).await {
                    tracing::warn!(error = %e, "purging form nonces failed");
                }
                let retention = engine.config.live.retention_hours as i64 * 3_600_000;
                if let Err(e) = crate::events::prune(&engine.store, now - retention).await {
                    tracing::warn!(error = %e, "pruning live events failed");
                }
            }
        })
    };
    let backups =
        crate::transfer::backup::spawn(engine.store.clone(), engine.config.backup.clone());
    let hub = engine.hub.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        // WebSocket tasks are not tracked by axum: tell them and give them time to close.
        hub.shutdown("The server is restarting; reconnecting shortly.");
        hub.wait_closed(std::time::Duration::from_secs(5)).await;
    })
    .await?;
    housekeeping.abort();
    if let Some(b) = backups {
        b.abort();
    }
    engine.store.pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

fn open_csv(path: &PathBuf) -> Result<std::io::BufReader<std::fs::File>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(std::io::BufReader::new(file))
}

fn read_labelled(path: &PathBuf) -> Result<Vec<crate::spam::Sample>> {
    crate::spam::read_samples(open_csv(path)?).with_context(|| format!("{}", path.display()))
}

/// The database and the spam filter stored in it (trained on first use).
async fn open_filter(
    common: &Common,
    config: &Config,
) -> Result<(Store, crate::spam::service::SpamFilter)> {
    let store = Store::open(&common.database)
        .await
        .with_context(|| format!("cannot open database {}", common.database))?;
    let filter = crate::spam::service::SpamFilter::load_or_train(
        &store,
        config.spam.threshold,
        config.spam.bundled_corpus,
    )
    .await?;
    Ok((store, filter))
}

async fn spam(common: &Common, cmd: SpamCommand) -> Result<()> {
    let config = load_config(common.config.as_ref())?;
    match cmd {
        SpamCommand::Eval { csv, folds } => {
            if folds < 2 {
                bail!("--folds must be at least 2");
            }
            let samples = read_labelled(&csv)?;
            let cv = crate::spam::CvOptions {
                folds,
                threshold: config.spam.threshold,
                ..Default::default()
            };
            let eval =
                crate::spam::cross_validate(&samples, &crate::spam::Options::default(), &cv)?;
            println!("{}", serde_json::to_string(&eval)?);
        }
        SpamCommand::Train { csv } => {
            let samples = match &csv {
                Some(path) => Some((read_labelled(path)?, format!("CSV {}", path.display()))),
                None => None,
            };
            let (store, filter) = open_filter(common, &config).await?;
            let bar = indicatif::ProgressBar::new(4);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} training [{bar:30}] {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let steps = [
                "reading samples",
                "training and cross-validating",
                "training and cross-validating",
                "storing the model",
                "done",
            ];
            let training = filter
                .retrain(&store, samples, |step, _of| {
                    bar.set_position(step);
                    bar.set_message(steps[step as usize % steps.len()]);
                })
                .await?;
            bar.finish_and_clear();
            println!(
                "trained on {} spam and {} ham ({})",
                training.spam_count, training.ham_count, training.source
            );
            if let Some(m) = training.metrics {
                println!(
                    "3-fold cross-validation: spam P {:.3} R {:.3} F1 {:.3}; ham P {:.3} R {:.3} F1 {:.3}",
                    m.spam.precision,
                    m.spam.recall,
                    m.spam.f1,
                    m.ham.precision,
                    m.ham.recall,
                    m.ham.f1
                );
            }
        }
        SpamCommand::Classify { csv } => {
            // Fail on a missing file before touching the database.
            std::fs::metadata(&csv).with_context(|| format!("cannot open {}", csv.display()))?;
            let (_store, filter) = open_filter(common, &config).await?;
            let model = filter.current();
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            crate::spam::classify_csv_file(&model, &csv, out, config.spam.threshold)
                .with_context(|| format!("{}", csv.display()))?;
        }
    }
    Ok(())
}
