//! How fast is the thread page of a 10,000-comment thread? (The rivals' top complaint.)
//!
//! Seeds a thread of 10,000 comments (2,000 top-level, replies up to 7 deep) in a SQLite file,
//! then measures, through the real router in-process:
//! - the server-rendered first page `GET /t/big` (the goal: at most 50 ms median);
//! - as a baseline, the whole thread as JSON `GET /api/threads/big`, which is what a page
//!   without paging would have to load and render.
//!
//! Run: `cargo bench -p server --bench thread_page` (prints figures and the ratio).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use server::config::Config;
use server::{Engine, ThreadSpec, now_ms};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const COMMENTS: i64 = 10_000;
const TOP_LEVEL: i64 = 2_000;
const ROUNDS: usize = 60;

/// The materialised path segment of one comment id (as the store writes it: 10 digits).
fn path_segment(id: i64) -> String {
    format!("{id:010}")
}

/// Seeds straight into the database file (with a pool of its own), as a bulk load would:
/// 10,000 posts through the API would measure posting, not reading.
async fn seed(engine: &Engine, pool: &sqlx::AnyPool) -> i64 {
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

async fn time_get(router: &axum::Router, path: &str) -> (Duration, usize) {
    let started = Instant::now();
    let resp = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (started.elapsed(), bytes.len())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

async fn measure(router: &axum::Router, path: &str) -> (Duration, Duration, usize) {
    for _ in 0..5 {
        time_get(router, path).await;
    }
    let mut times = Vec::with_capacity(ROUNDS);
    let mut size = 0;
    for _ in 0..ROUNDS {
        let (t, n) = time_get(router, path).await;
        times.push(t);
        size = n;
    }
    (median(times.clone()), p95(times), size)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let engine = Arc::new(Engine::open(&url, Config::default()).await.expect("engine"));
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.expect("pool");
        let seeding = Instant::now();
        seed(&engine, &pool).await;
        println!(
            "seeded {COMMENTS} comments ({TOP_LEVEL}+ top-level) in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );
        let router =
            server::http::router(engine.clone(), server::http::leptos_options("target/site"));

        let (page_med, page_p95, page_size) = measure(&router, "/t/big").await;
        let (all_med, all_p95, all_size) = measure(&router, "/api/threads/big").await;
        println!();
        println!(
            "{:<44} {:>10} {:>10} {:>10}",
            "request (10,000-comment thread)", "median ms", "p95 ms", "KiB"
        );
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>10}",
            "GET /t/big (SSR, first page)",
            ms(page_med),
            ms(page_p95),
            page_size / 1024
        );
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>10}",
            "GET /api/threads/big (whole thread, JSON)",
            ms(all_med),
            ms(all_p95),
            all_size / 1024
        );
        println!();
        println!(
            "first page is {:.1}x faster than loading the whole thread; goal <= 50 ms median: {}",
            all_med.as_secs_f64() / page_med.as_secs_f64(),
            if ms(page_med) <= 50.0 {
                "met"
            } else {
                "NOT met"
            }
        );
    });
}
