//! A 10,000-comment thread seeded straight into a database, shared by the benches that
//! read one (`thread_page`, `load`).

use server::{Engine, ThreadSpec, now_ms};

pub const COMMENTS: i64 = 10_000;
pub const TOP_LEVEL: i64 = 2_000;

/// The materialised path segment of one comment id (as the store writes it: 10 digits).
fn path_segment(id: i64) -> String {
    format!("{id:010}")
}

/// Seeds straight into the database file (with a pool of its own), as a bulk load would:
/// 10,000 posts through the API would measure posting, not reading.
pub async fn seed(engine: &Engine, pool: &sqlx::AnyPool) -> i64 {
    engine
        .set_thread(&ThreadSpec {
            key: "big".into(),
            title: Some("A very busy thread".into()),
            ..Default::default()
        })
        .await
        .expect("thread");
    let thread_id: i64 = sqlx::query_scalar("SELECT id FROM threads WHERE key = 'big'")
        .fetch_one(pool)
        .await
        .expect("thread id");
    let mut tx = pool.begin().await.expect("begin");
    // A deterministic shuffle (LCG) picks each reply's parent among recent comments.
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut paths: Vec<(String, i64)> = Vec::with_capacity(COMMENTS as usize);
    let start = now_ms() - COMMENTS * 1000;
    for id in 1..=COMMENTS {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let top = id <= TOP_LEVEL || (rng >> 33).is_multiple_of(5);
        let (parent, path, depth) = if top || paths.is_empty() {
            (None, path_segment(id), 0)
        } else {
            let back = 1 + ((rng >> 40) as usize % 20).min(paths.len() - 1);
            let pi = paths.len() - back;
            let (pp, pd) = paths[pi].clone();
            if pd >= 7 {
                (None, path_segment(id), 0)
            } else {
                (
                    Some(pi as i64 + 1),
                    format!("{pp}{}", path_segment(id)),
                    pd + 1,
                )
            }
        };
        let body = format!(
            "Comment number {id}: *some* markdown with a [link](https://example.org/{id})."
        );
        sqlx::query(
            "INSERT INTO comments (id, thread_id, parent_id, depth, path, author_name, \
             body_source, body_html, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'published', $9, $9)",
        )
        .bind(id)
        .bind(thread_id)
        .bind(parent)
        .bind(depth)
        .bind(&path)
        .bind(format!("Reader {}", id % 97))
        .bind(&body)
        .bind(server::render_markdown(&body))
        .bind(start + id * 1000)
        .execute(&mut *tx)
        .await
        .expect("insert");
        paths.push((path, depth));
    }
    tx.commit().await.expect("commit");
    thread_id
}
