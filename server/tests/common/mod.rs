//! Black-box test helpers: a fresh database per test (a SQLite file, or a new database on the
//! PostgreSQL server named by MODERATO_TEST_PG_URL) and the real router, called in-process.
#![allow(dead_code)]

pub mod process;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use server::config::Config;
use server::{Engine, Staff, ThreadSpec};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub engine: Arc<Engine>,
    pub database_url: String,
    /// A connection pool of the test's own on the same database, to look at (or tamper with)
    /// the stored rows the way an operator with a SQL shell would.
    pub db: sqlx::AnyPool,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// The `name=value` of the session cookie a reply sets, if any.
pub fn session_cookie(r: &Reply) -> Option<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(server::http::SESSION_COOKIE))
        .map(|c| c.split(';').next().unwrap_or("").to_owned())
}

/// A database URL no other test uses.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    match std::env::var("MODERATO_TEST_PG_URL") {
        Ok(base) if !base.is_empty() => {
            use sqlx::Connection;
            let name = format!(
                "t_{}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst),
                server::now_ms()
            );
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .expect("PostgreSQL is reachable");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create a test database");
            let (prefix, _) = base.rsplit_once('/').expect("URL has a database part");
            format!("{prefix}/{name}")
        }
        _ => format!("sqlite://{}", dir.join("test.db").display()),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Config::default()).await
}

/// Other tests start with an empty spam filter, so their comments are judged only by the
/// moderators under test; the spam tests train on the shipped corpus.
pub async fn spawn_app_with(mut config: Config) -> TestApp {
    config.spam.bundled_corpus = false;
    spawn_app_with_spam(config).await
}

pub async fn spawn_app_with_spam(config: Config) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = fresh_database_url(dir.path()).await;
    let engine = Arc::new(Engine::open(&database_url, config).await.expect("engine"));
    let router = server::http::router(engine.clone(), server::http::leptos_options("target/site"));
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&database_url)
        .await
        .expect("a second pool on the test database");
    TestApp {
        router,
        engine,
        database_url,
        db,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn thread(&self, key: &str) {
        self.thread_with(ThreadSpec {
            key: key.into(),
            title: Some(format!("Thread {key}")),
            ..Default::default()
        })
        .await;
    }

    pub async fn thread_with(&self, spec: ThreadSpec) {
        self.engine.set_thread(&spec).await.expect("thread set");
    }

    pub async fn send(&self, mut req: Request<Body>) -> Reply {
        if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        }
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Sends with extra headers (e.g. a session cookie or an API key).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    /// Creates a user and signs in; returns the session cookie ("name=value").
    pub async fn sign_in_as(&self, name: &str, staff: bool) -> String {
        self.engine
            .add_user(&Staff::operator(), name, "password123", staff)
            .await
            .unwrap();
        let r = self
            .post_json(
                "/api/session",
                &json!({"username": name, "password": "password123"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        session_cookie(&r).expect("a session cookie")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<Body>) -> Reply {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, content_type)
                .body(body.into())
                .unwrap(),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, "application/json", body.to_string())
            .await
    }

    /// A fresh form token for a thread.
    pub async fn token(&self, key: &str) -> String {
        let r = self.get(&format!("/api/threads/{key}/form")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["token"].as_str().unwrap().to_owned()
    }

    /// Posts `fields` to a thread with a fresh token.
    pub async fn post_comment(&self, key: &str, mut fields: Value) -> Reply {
        fields["form_token"] = json!(self.token(key).await);
        self.post_json(&format!("/api/threads/{key}/comments"), &fields)
            .await
    }

    /// Posts a comment that must be published; returns its id.
    pub async fn publish(&self, key: &str, name: &str, body: &str, parent: Option<i64>) -> i64 {
        let r = self
            .post_comment(
                key,
                json!({"name": name, "body": body, "parent_id": parent}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json()["comment_id"].as_i64().unwrap()
    }

    /// Every comment of a thread as a reader gets it.
    pub async fn comments(&self, key: &str) -> Vec<Value> {
        let r = self.get(&format!("/api/threads/{key}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["comments"].as_array().unwrap().clone()
    }

    pub async fn count_rows(&self, table: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}
