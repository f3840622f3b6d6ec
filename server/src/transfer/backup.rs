//! Scheduled backups: `[backup]` makes the server write a consistent export (the format of
//! `moderato export`, gzip-compressed) every `every_hours`, keeping the newest `keep` files;
//! `moderato backup now` writes one at once. Restore with `moderato import --format moderato`.

use super::export::{ExportError, export_file};
use crate::store::Store;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[backup]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Where backups go; empty turns scheduled backups off.
    pub dir: String,
    /// Hours between backups; fractions are allowed (0.5 is every 30 minutes).
    pub every_hours: f64,
    /// How many backups to keep; older ones are deleted.
    pub keep: usize,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: String::new(),
            every_hours: 24.0,
            keep: 10,
        }
    }
}

impl BackupConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        // One second at the least: less would back up in a tight loop.
        if !self.every_hours.is_finite() || self.every_hours < 1.0 / 3600.0 {
            return Err("backup.every_hours must be a number of hours of at least 1/3600".into());
        }
        if self.keep == 0 {
            return Err("backup.keep must be at least 1".into());
        }
        Ok(())
    }

    /// The time between backups.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.every_hours * 3600.0)
    }
}

const PREFIX: &str = "moderato-";
const SUFFIX: &str = ".jsonl.gz";

/// The backups in `dir`, newest first (their names sort by time).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            found.push(path);
        }
    }
    found.sort();
    found.reverse();
    Ok(found)
}

/// Writes one backup into `dir` and deletes all but the newest `keep`; returns its path.
pub(crate) async fn backup_now(
    store: &Store,
    dir: &Path,
    keep: usize,
) -> Result<PathBuf, ExportError> {
    let io = |source: std::io::Error| ExportError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let stamp = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
    );
    let name = format!(
        "{PREFIX}{}{SUFFIX}",
        stamp.format(&format).unwrap_or_default()
    );
    let path = dir.join(name);
    export_file(store, None, &path).await?;
    for old in list(dir).map_err(io)?.into_iter().skip(keep.max(1)) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), error = %e, "cannot delete an old backup");
        }
    }
    Ok(path)
}

/// How long until the next backup is due, given the newest one in `dir`: a server restarted
/// more often than the interval still backs up on time.
fn first_delay(dir: &Path, interval: Duration) -> Duration {
    let newest = list(dir).ok().and_then(|l| l.into_iter().next());
    let age = newest
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok());
    match age {
        Some(age) => interval.saturating_sub(age),
        None => Duration::ZERO,
    }
}

/// Starts the backup schedule, when `[backup] dir` is set.
pub(crate) fn spawn(store: Store, config: BackupConfig) -> Option<tokio::task::JoinHandle<()>> {
    if config.dir.trim().is_empty() {
        return None;
    }
    let dir = PathBuf::from(&config.dir);
    let interval = config.interval();
    Some(tokio::spawn(async move {
        tokio::time::sleep(first_delay(&dir, interval)).await;
        loop {
            let started = std::time::Instant::now();
            match backup_now(&store, &dir, config.keep).await {
                Ok(path) => tracing::info!(path = %path.display(), "backup written"),
                Err(e) => tracing::error!(error = %e, "backup failed"),
            }
            tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
        }
    }))
}
