//! The staff's `stats_update` after posts, written once for many posts.
//!
//! Every post changes the counts per status, and staff see them live. Writing a stats event
//! in each post's own transaction cost three of its ten statements on SQLite's one writer,
//! where every poster waits for the statements of those before it, and on PostgreSQL it made
//! every post hold the moderation room's counter row until its commit. Instead, a committed
//! post asks for a stats event, and one worker writes it in a transaction of its own. A
//! request that arrives while another is still waiting is covered by that one: the worker
//! reads the counts only after it has taken the request, so after the asking post's commit.
//! Under load that is at most one stats event per `STATS_GAP` instead of one per post. Staff
//! actions keep their stats event in their own transaction (they are few, and staff expect
//! the counts with the change).

use super::cluster::Fanout;
use crate::error::Result;
use crate::events;
use crate::live::MODERATION_ROOM;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The shortest time between two stats events written for posts: what staff wait at most
/// for the counts to follow a post that commits right after one.
const STATS_GAP: Duration = Duration::from_millis(100);

/// The handle posts ask through. The worker stops when this is dropped (with the engine).
pub(crate) struct StatsAfterPosts {
    wanted: mpsc::Sender<()>,
}

impl StatsAfterPosts {
    pub(crate) fn start(store: Store, fanout: Arc<Fanout>) -> StatsAfterPosts {
        // One slot: a request already waiting covers every later one until it is taken.
        let (wanted, mut asked) = mpsc::channel(1);
        tokio::spawn(async move {
            while asked.recv().await.is_some() {
                if let Err(e) = write_stats(&store, &fanout).await {
                    // Staff see the counts with the next post or action; nothing else waits.
                    tracing::warn!("the stats event after posts was not written: {e}");
                }
                // At most one stats event per gap: under a burst, posts that commit
                // meanwhile are counted by the next one, instead of a stats transaction
                // running back to back with the posts (on PostgreSQL each one is a commit
                // and a lock on the moderation room's counter row).
                tokio::time::sleep(STATS_GAP).await;
            }
        });
        StatsAfterPosts { wanted }
    }

    /// A post was committed: its counts reach staff with the next stats event.
    pub(crate) fn posted(&self) {
        // Full: a request is waiting and will read the counts after this commit.
        let _ = self.wanted.try_send(());
    }
}

async fn write_stats(store: &Store, fanout: &Arc<Fanout>) -> Result<()> {
    let mut tx = store.begin().await?;
    // Numbered in commit order, and counted after every stats event numbered before it.
    tx.lock_room(MODERATION_ROOM).await?;
    let stats = events::stats(&tx.status_counts().await?);
    let published = events::write(&mut tx, vec![stats]).await?;
    let fanout = fanout.clone();
    tx.commit_then(Some(Box::new(move || fanout.publish(published))))
        .await?;
    Ok(())
}
