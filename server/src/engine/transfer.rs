//! Moving in and out: importing another system's export, exporting this site, backups. The
//! formats and the bulk writes live in [`crate::transfer`]; these are the use cases the CLI
//! and the tests call. All of it is staff-only data (emails, IPs, moderation).

use super::Engine;
use crate::auth::Staff;
use crate::transfer::backup::BackupConfig;
use crate::transfer::export::ExportError;
use crate::transfer::moderato::EndRecord;
use crate::transfer::{Format, ImportError, ImportOptions, Progress, Summary};
use std::path::Path;

impl Engine {
    /// Imports `path` in `format`: whole threads per transaction, idempotent, no live events
    /// (see docs/transfer.md). The spam filter is not retrained here: see `retrain_spam`.
    pub async fn import_file(
        &self,
        _staff: &Staff,
        format: Format,
        path: &Path,
        options: &ImportOptions,
        progress: Progress<'_>,
    ) -> Result<Summary, ImportError> {
        let options = ImportOptions {
            max_depth: self.config.comments.max_depth,
            ..options.clone()
        };
        crate::transfer::import_file(&self.store, format, path, &options, progress).await
    }

    /// Exports every thread (or one) to `path` as versioned JSON lines, gzip for `.gz`.
    pub async fn export_file(
        &self,
        _staff: &Staff,
        thread: Option<&str>,
        path: &Path,
    ) -> Result<EndRecord, ExportError> {
        crate::transfer::export::export_file(&self.store, thread, path).await
    }

    /// Starts the scheduled backups `config` asks for (none when it names no directory).
    pub fn spawn_backups(&self, config: &BackupConfig) -> Option<tokio::task::JoinHandle<()>> {
        crate::transfer::backup::spawn(self.store.clone(), config.clone())
    }
}
