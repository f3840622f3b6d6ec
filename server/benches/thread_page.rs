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
use server::Engine;
use server::config::Config;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

#[path = "support/big_thread.rs"]
mod big_thread;
use big_thread::{COMMENTS, TOP_LEVEL, seed};

const ROUNDS: usize = 60;

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
        // What rendering costs: the kept anonymous view (`[cache]`) would answer every
        // request after the first. `--bench load` measures readers with it.
        let mut config = Config::default();
        config.cache.pages_mb = 0;
        let engine = Arc::new(Engine::open(&url, config).await.expect("engine"));
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
