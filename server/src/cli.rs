//! The `moderato` command line.

use crate::auth::Staff;
use crate::config::Config;
use crate::engine::{Engine, ThreadSpec};
use anyhow::{Context, Result, bail};
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
    /// Put the comments on another site.
    #[command(subcommand)]
    Embed(EmbedCommand),
}

#[derive(Subcommand, Debug)]
pub enum EmbedCommand {
    /// Print the HTML to paste into a page of an allowed site (`[embed] allowed_origins`),
    /// for the configured `site.public_url`.
    Snippet {
        /// The thread's key; without it, each page's path becomes its key.
        #[arg(long)]
        thread: Option<String>,
        /// The thread's title, used when the embed creates the thread.
        #[arg(long)]
        title: Option<String>,
        /// Also print a comment-count span and count.js, for list pages.
        #[arg(long)]
        count: bool,
    },
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
    /// Set a user's password (from MODERATO_PASSWORD or the first line of standard input),
    /// keeping their rights, and sign them out everywhere.
    SetPassword { name: String },
    /// Set (or, without EMAIL, remove) a user's address: with `[moderation] mail_staff`, a
    /// staff account with one is mailed about held comments, with links that act as it.
    SetEmail { name: String, email: Option<String> },
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
    /// Revoke a user's API keys: all of them, or those with one label.
    Revoke {
        /// The user whose keys stop working.
        user: String,
        /// Only the keys with this label.
        #[arg(long)]
        name: Option<String>,
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
    Engine::open(&common.database, config)
        .await
        .with_context(|| format!("cannot open database {}", common.database))
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
        Command::User(UserCommand::SetEmail { name, email }) => {
            let engine = open_engine(&cli.common).await?;
            engine
                .set_user_email(&Staff::operator(), &name, email.as_deref())
                .await?;
            match email {
                Some(e) => println!("address of {} set to {e}", name.trim()),
                None => println!("address of {} removed", name.trim()),
            }
            Ok(())
        }
        Command::User(UserCommand::SetPassword { name }) => {
            let password = read_password()?;
            let engine = open_engine(&cli.common).await?;
            let ended = engine
                .set_password(&Staff::operator(), &name, &password)
                .await?;
            println!("password of {} set; {ended} session(s) ended", name.trim());
            Ok(())
        }
        Command::Key(KeyCommand::Create { user, name }) => {
            key_create(&cli.common, &user, &name).await
        }
        Command::Key(KeyCommand::Revoke { user, name }) => {
            let engine = open_engine(&cli.common).await?;
            let n = engine
                .revoke_api_keys(&Staff::operator(), &user, name.as_deref())
                .await?;
            println!("{n} key(s) of {user} revoked");
            Ok(())
        }
        Command::Spam(cmd) => spam(&cli.common, cmd).await,
        Command::Embed(EmbedCommand::Snippet {
            thread,
            title,
            count,
        }) => {
            let config = load_config(cli.common.config.as_ref())?;
            print!(
                "{}",
                embed_snippet(&config, thread.as_deref(), title.as_deref(), count)?
            );
            Ok(())
        }
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
    let password = read_password()?;
    let engine = open_engine(common).await?;
    let created = engine
        .add_user(&Staff::operator(), name, &password, staff)
        .await?;
    let name = name.trim();
    println!(
        "{} user {name}{}",
        if created { "created" } else { "updated" },
        if staff { " (staff)" } else { "" }
    );
    Ok(())
}

async fn key_create(common: &Common, user: &str, name: &str) -> Result<()> {
    let engine = open_engine(common).await?;
    let key = engine
        .create_api_key(&Staff::operator(), user, name)
        .await?;
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
        match &t.closed_reason {
            None => "open".to_owned(),
            Some(reason) => format!("closed: {reason}"),
        },
        t.title
    );
    Ok(())
}

/// The snippet a site owner pastes: the thread's element and embed.js from this server.
pub fn embed_snippet(
    config: &Config,
    thread: Option<&str>,
    title: Option<&str>,
    count: bool,
) -> Result<String> {
    let base = config.site.public_url.trim_end_matches('/');
    if crate::engine::embed::normalise_origin(base).is_none() {
        bail!(
            "set [site] public_url to this server's address (e.g. \"https://comments.example.org\") \
             in the configuration first"
        );
    }
    if let Some(key) = thread
        && !crate::engine::usable_thread_key(key)
    {
        bail!(
            "--thread {key:?} is not a usable thread key: use 1 to 200 letters, digits, '-', '_', '.' or '~'"
        );
    }
    let attr = |name: &str, v: Option<&str>| {
        v.map(|v| format!(" {name}=\"{}\"", ammonia::clean_text(v)))
            .unwrap_or_default()
    };
    let mut out = format!(
        "<div id=\"moderato-thread\"{}{}></div>\n<script src=\"{base}/embed.js\" async></script>\n",
        attr("data-thread", thread),
        attr("data-title", title),
    );
    if count {
        out.push_str(&format!(
            "<span data-moderato-count=\"{}\"></span>\n<script src=\"{base}/count.js\" async></script>\n",
            ammonia::clean_text(thread.unwrap_or("THREAD-KEY"))
        ));
    }
    Ok(out)
}

async fn serve(common: &Common, args: ServeArgs) -> Result<()> {
    // Logs go to stderr, as the README says (fmt's default is stdout), and in colour only
    // on a terminal, so a log file holds plain lines.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let engine = Arc::new(open_engine(common).await?);
    if args.demo && engine.seed_demo().await? {
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
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let limits = &engine.config().limits;
    let serve_limits = crate::http::ServeLimits {
        header_timeout: std::time::Duration::from_secs(limits.header_timeout_secs.max(1)),
        max_connections: limits.max_connections,
        shutdown_grace: std::time::Duration::from_secs(10),
    };
    tracing::info!(addr = %args.addr, database = %common.database, "Moderato is listening");
    // On PostgreSQL: live events and model changes of the other instances on the database.
    let cluster = engine
        .start_cluster()
        .await
        .context("cannot listen for the other instances' events")?;
    // Housekeeping (spent form nonces, live events past the retention window...), backups,
    // the mail and webhook outboxes: on PostgreSQL, in one instance at a time.
    let jobs = engine.spawn_background_jobs();
    let hub = engine.hub().clone();
    crate::http::serve(listener, app, serve_limits, async move {
        shutdown_signal().await;
        // Upgraded WebSockets are not HTTP connections any more: tell them and give them
        // time to close.
        hub.shutdown("The server is restarting; reconnecting shortly.");
        hub.wait_closed(std::time::Duration::from_secs(5)).await;
    })
    .await;
    for task in [Some(jobs), cluster].into_iter().flatten() {
        task.abort();
    }
    engine.close().await;
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
            let engine = open_engine(common).await?;
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
            // The same use case as the API's retrain, so staff watching see it announced.
            let training = engine
                .retrain_spam(&Staff::operator(), samples, |step, _of| {
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
            let engine = open_engine(common).await?;
            let model = engine.spam_model();
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            crate::spam::classify_csv_file(&model, &csv, out, config.spam.threshold)
                .with_context(|| format!("{}", csv.display()))?;
        }
    }
    Ok(())
}
