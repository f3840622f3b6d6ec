//! Import, export and backups, observed through the HTTP API as readers and staff see it.

mod common;

use common::*;
use serde_json::{Value, json};
use server::config::Config;
use server::transfer::{Format, ImportError, ImportOptions, KeyFrom, Position, Summary};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn import(app: &TestApp, format: Format, path: &Path) -> Summary {
    import_with(app, format, path, &ImportOptions::default())
        .await
        .unwrap_or_else(|e| panic!("import failed: {e}"))
}

async fn import_with(
    app: &TestApp,
    format: Format,
    path: &Path,
    options: &ImportOptions,
) -> Result<Summary, ImportError> {
    app.engine
        .import_file(
            &server::Staff::operator(),
            format,
            path,
            options,
            &|_, _, _| {},
        )
        .await
}

async fn staff(app: &TestApp) -> String {
    app.sign_in_as("staff", true).await
}

async fn thread_as(app: &TestApp, key: &str, cookie: Option<&str>) -> Value {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let r = app
        .send_with("GET", &format!("/api/threads/{key}"), &headers, None)
        .await;
    assert_eq!(r.status, 200, "{key}: {}", r.text);
    r.json()
}

fn names(thread: &Value) -> Vec<(String, i64)> {
    thread["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["author_name"].as_str().unwrap().to_owned(),
                c["depth"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn find<'a>(thread: &'a Value, name: &str) -> &'a Value {
    thread["comments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["author_name"] == name)
        .unwrap_or_else(|| panic!("no comment by {name} in {thread}"))
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(n, d)| (n.to_string(), *d)).collect()
}

/// The stored invariants every insert keeps: paths and depths follow the parents, and the
/// running counts equal the real ones.
async fn assert_consistent(app: &TestApp) {
    let rows: Vec<(i64, Option<i64>, String, i64)> =
        sqlx::query_as("SELECT id, parent_id, path, depth FROM comments ORDER BY id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let by_id: std::collections::HashMap<i64, (String, i64)> = rows
        .iter()
        .map(|(id, _, p, d)| (*id, (p.clone(), *d)))
        .collect();
    for (id, parent, path, depth) in &rows {
        let seg = format!("{:010}", *id);
        match parent {
            None => assert_eq!((path.as_str(), *depth), (seg.as_str(), 0), "comment {id}"),
            Some(p) => {
                let (pp, pd) = &by_id[p];
                assert_eq!(path, &format!("{pp}{seg}"), "comment {id}");
                assert_eq!(*depth, pd + 1, "comment {id}");
            }
        }
    }
    let running: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, n FROM comment_counts WHERE n > 0 ORDER BY status")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let real: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) AS n FROM comments GROUP BY status ORDER BY status",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(running, real);
}

#[tokio::test]
async fn a_disqus_export_becomes_threads_with_nested_replies_statuses_and_placeholders() {
    let app = spawn_app().await;
    let s = import(&app, Format::Disqus, &fixture("disqus.xml")).await;
    assert_eq!(s.threads_created, 3, "{s}");
    assert_eq!(s.threads_without_comments, 1, "{s}");
    assert_eq!(s.imported["published"], 6, "{s}");
    assert_eq!(s.imported["held"], 1, "{s}");
    assert_eq!(s.imported["spam"], 1, "{s}");
    assert_eq!(s.placeholders, 1, "{s}");
    assert_eq!(
        s.skipped["post of a thread that is not in the file"], 1,
        "{s}"
    );
    assert_eq!(s.skipped["post of a deleted thread"], 1, "{s}");
    assert_eq!(
        s.skipped["deleted at the source, without replies"], 1,
        "{s}"
    );

    // Readers: tree order, oldest first; the deleted parent keeps its reply in place.
    let t = thread_as(&app, "2020-hello-world", None).await;
    assert_eq!(t["thread"]["title"], "Hello world");
    assert_eq!(t["thread"]["comment_count"], 5);
    assert_eq!(
        names(&t),
        pairs(&[
            ("Ann", 0),
            ("Bob B.", 1),
            ("Dan", 2),
            ("[deleted]", 0),
            ("Carol", 1)
        ])
    );
    let ann = find(&t, "Ann");
    assert_eq!(ann["created_at"], "2020-01-01T10:00:00Z");
    let html = ann["body_html"].as_str().unwrap();
    assert!(html.contains("<strong>world</strong>"), "{html}");
    assert!(
        html.contains(
            r#"<a href="https://example.org/x" rel="nofollow ugc noopener noreferrer">this</a>"#
        ),
        "{html}"
    );
    assert!(html.contains("<p>Second paragraph</p>"), "{html}");
    assert_eq!(find(&t, "Bob B.")["body_html"], "<p>Reply &amp; more</p>\n");
    assert_eq!(find(&t, "[deleted]")["body_html"], "<p>[deleted]</p>\n");
    assert!(!t.to_string().contains("This comment was deleted"));
    // Staff-only data never reaches a reader.
    let text = t.to_string();
    for secret in [
        "ann@example.org",
        "192.0.2.1",
        "Buy cheap",
        "Waiting",
        "spam",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // Staff see the held and spam comments with why.
    let cookie = staff(&app).await;
    let t = thread_as(&app, "2020-hello-world", Some(&cookie)).await;
    assert_eq!(find(&t, "Pills")["status"], "spam");
    assert_eq!(
        find(&t, "Pills")["moderation"]["reason"],
        "Imported from disqus as spam."
    );
    assert_eq!(find(&t, "Fay")["status"], "held");

    // Imported spam is training data: a retrain counts it. The rest of this file's
    // published comments are the ham, but not the "[deleted]" placeholder: nobody decided it.
    let r = app
        .send_with("POST", "/api/spam/retrain", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["spam_count"], 1, "{}", r.text);
    assert_eq!(r.json()["ham_count"], 5, "{}", r.text);
    let status = app
        .send_with("GET", "/api/spam", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(status.json()["counts"]["ham"], 5, "{}", status.text);

    // Unicode survives; scripts do not.
    let u = thread_as(&app, "unicode", None).await;
    assert_eq!(u["thread"]["title"], "Ünïcödé 日本");
    let z = find(&u, "Zoë 山田")["body_html"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(z.contains("Grüße 😀"), "{z}");
    assert!(!z.contains("script") && !z.contains("alert"), "{z}");

    // The thread without posts exists, empty; the deleted one does not.
    let e = thread_as(&app, "empty-page", None).await;
    assert_eq!(e["comments"], json!([]));
    assert_eq!(app.get("/api/threads/removed").await.status, 404);

    // The staff-only fields are stored for staff.
    let email: Option<String> =
        sqlx::query_scalar("SELECT author_email FROM comments WHERE author_name = 'Ann'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(email.as_deref(), Some("ann@example.org"));
    assert_consistent(&app).await;
}

#[tokio::test]
async fn importing_the_same_file_twice_adds_nothing() {
    let app = spawn_app().await;
    let first = import(&app, Format::Disqus, &fixture("disqus.xml")).await;
    let comments = app.count_rows("comments").await;
    let threads = app.count_rows("threads").await;
    let second = import(&app, Format::Disqus, &fixture("disqus.xml")).await;
    assert_eq!(second.imported_total(), 0, "{second}");
    assert_eq!(second.already_imported, first.imported_total(), "{second}");
    assert_eq!(second.threads_created, 0);
    assert_eq!(app.count_rows("comments").await, comments);
    assert_eq!(app.count_rows("threads").await, threads);
    assert_consistent(&app).await;
}

#[tokio::test]
async fn a_later_export_adds_only_the_new_replies_under_their_old_parents() {
    let app = spawn_app().await;
    import(&app, Format::Disqus, &fixture("disqus.xml")).await;
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.xml");
    let text = std::fs::read_to_string(fixture("disqus.xml"))
        .unwrap()
        .replace(
            "</disqus>",
            r#"<post dsq:id="2000"><message><![CDATA[<p>late reply</p>]]></message>
           <createdAt>2021-01-01T00:00:00Z</createdAt><isDeleted>false</isDeleted>
           <isSpam>false</isSpam><author><name>Late</name></author>
           <thread dsq:id="100" /><parent dsq:id="1010" /></post></disqus>"#,
        );
    std::fs::write(&newer, text).unwrap();
    let s = import(&app, Format::Disqus, &newer).await;
    assert_eq!(s.imported_total(), 1, "{s}");
    let t = thread_as(&app, "2020-hello-world", None).await;
    assert_eq!(
        names(&t),
        pairs(&[
            ("Ann", 0),
            ("Bob B.", 1),
            ("Dan", 2),
            ("Late", 3),
            ("[deleted]", 0),
            ("Carol", 1)
        ])
    );
    assert_consistent(&app).await;
}

#[tokio::test]
async fn a_malformed_file_is_refused_with_its_position_and_changes_nothing() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(fixture("disqus.xml")).unwrap();

    // Cut short in the middle of the posts: the valid threads before it are not written.
    let cut = dir.path().join("cut.xml");
    std::fs::write(
        &cut,
        &original[..original.find("<post dsq:id=\"1004\">").unwrap()],
    )
    .unwrap();
    let err = import_with(&app, Format::Disqus, &cut, &ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
    assert!(err.to_string().contains("nothing was imported"), "{err}");

    // A bad date on a known line.
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        original.replace("2020-01-03T10:00:00Z", "yesterday at noon"),
    )
    .unwrap();
    let err = import_with(&app, Format::Disqus, &bad, &ImportOptions::default())
        .await
        .unwrap_err();
    let line = original
        .lines()
        .position(|l| l.contains("<post dsq:id=\"1005\">"))
        .unwrap() as u64
        + 1;
    match &err {
        ImportError::Malformed {
            at: Position::Byte {
                line: Some((l, _)), ..
            },
            message,
        } => {
            assert_eq!(*l, line, "{err}");
            assert!(message.contains("yesterday at noon"), "{err}");
        }
        other => panic!("{other:?}"),
    }

    // Mismatched tags.
    let broken = dir.path().join("broken.xml");
    std::fs::write(
        &broken,
        original.replace("</title>\n    <message />", "</titel>"),
    )
    .unwrap();
    let err = import_with(&app, Format::Disqus, &broken, &ImportOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err}");
    let line = original
        .lines()
        .position(|l| l.contains("<title>Hello world</title>"))
        .unwrap()
        + 1;
    assert!(
        err.to_string().starts_with(&format!("line {line}, column")),
        "{err}"
    );

    // A Moderato export with a damaged record.
    let lines = dir.path().join("bad.jsonl");
    std::fs::write(
        &lines,
        "{\"type\":\"header\",\"format\":\"moderato-export\",\"version\":1,\"instance\":\"x\",\"exported_at\":\"2026-01-01T00:00:00Z\",\"thread\":null}\n{\"type\":\"thread\",\"key\":\"a\"\n",
    )
    .unwrap();
    let err = import_with(&app, Format::Moderato, &lines, &ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("line 2, column"), "{err}");

    for table in ["threads", "comments", "import_sources", "audit_log"] {
        assert_eq!(app.count_rows(table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn a_wordpress_export_maps_approval_states_and_skips_pingbacks() {
    let app = spawn_app().await;
    let s = import(&app, Format::Wordpress, &fixture("wordpress.xml")).await;
    assert_eq!(s.threads_created, 2, "{s}");
    assert_eq!(s.threads_without_comments, 1, "{s}");
    assert_eq!(s.imported["published"], 5, "{s}");
    assert_eq!(s.imported["held"], 1, "{s}");
    assert_eq!(s.imported["spam"], 1, "{s}");
    assert_eq!(s.placeholders, 1, "{s}");
    assert_eq!(
        s.skipped["WordPress item that is not a post or page"], 2,
        "{s}"
    );
    assert_eq!(
        s.skipped["pingback or trackback (keep them with --keep-pingbacks)"], 1,
        "{s}"
    );
    assert_eq!(
        s.notes["a reply to a comment that is not in the file became a top-level comment"], 1,
        "{s}"
    );
    let t = thread_as(&app, "2021-05-hello", None).await;
    assert_eq!(t["thread"]["title"], "Hello WordPress");
    assert_eq!(
        names(&t),
        pairs(&[
            ("Ann", 0),
            ("Ben", 1),
            ("[deleted]", 0),
            ("Emil", 1),
            ("Fritz", 0)
        ])
    );
    let ann = find(&t, "Ann");
    assert_eq!(ann["created_at"], "2021-05-01T10:00:00Z");
    assert_eq!(
        ann["body_html"],
        "<p>First line<br>\nsecond line</p>\n<p>New <strong>paragraph</strong> &amp; more</p>\n"
    );
    assert_eq!(find(&t, "Ben")["author_url"], "http://ben.example/");
    assert!(thread_as(&app, "about", None).await["comments"] == json!([]));

    let cookie = staff(&app).await;
    let t = thread_as(&app, "2021-05-hello", Some(&cookie)).await;
    assert_eq!(find(&t, "Cleo")["status"], "held");
    assert_eq!(find(&t, "Cheap Watches")["status"], "spam");

    // With the flag the pingback comes in too, once.
    let s = import_with(
        &app,
        Format::Wordpress,
        &fixture("wordpress.xml"),
        &ImportOptions {
            keep_pingbacks: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.imported_total(), 1, "{s}");
    assert_consistent(&app).await;
}

#[tokio::test]
async fn keys_can_come_from_ids_or_a_rewritten_url() {
    let app = spawn_app().await;
    let by_id = ImportOptions {
        key_from: KeyFrom::Id,
        ..Default::default()
    };
    import_with(&app, Format::Wordpress, &fixture("wordpress.xml"), &by_id)
        .await
        .unwrap();
    assert_eq!(
        thread_as(&app, "hello", None).await["comments"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    let app = spawn_app().await;
    let moved = ImportOptions {
        key_from: KeyFrom::Url,
        url_prefixes: vec![("https://wp.example/".into(), "https://new.example/".into())],
        ..Default::default()
    };
    import_with(&app, Format::Wordpress, &fixture("wordpress.xml"), &moved)
        .await
        .unwrap();
    thread_as(&app, "new.example-2021-05-hello", None).await;
    let url: Option<String> =
        sqlx::query_scalar("SELECT url FROM threads WHERE key = 'new.example-2021-05-hello'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(url.as_deref(), Some("https://new.example/2021/05/hello/"));
}

/// An Isso database as Isso 0.13 creates it (isso/db/threads.py, comments.py).
async fn isso_db(path: &Path) {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    for sql in [
        // Isso does not enforce its foreign keys; real files have comments of lost threads.
        "PRAGMA foreign_keys = OFF",
        "CREATE TABLE threads (id INTEGER PRIMARY KEY, uri VARCHAR(256) UNIQUE, title VARCHAR(256))",
        "CREATE TABLE comments (tid REFERENCES threads(id), id INTEGER PRIMARY KEY, parent INTEGER, \
         created FLOAT NOT NULL, modified FLOAT, mode INTEGER, remote_addr VARCHAR, text VARCHAR, \
         author VARCHAR, email VARCHAR, website VARCHAR, likes INTEGER DEFAULT 0, \
         dislikes INTEGER DEFAULT 0, voters BLOB NOT NULL, notification INTEGER DEFAULT 0)",
        "INSERT INTO threads VALUES (1, '/posts/isso-one/', 'Isso one'), (2, '/empty/', 'Nothing here')",
        "INSERT INTO comments (tid, id, parent, created, mode, remote_addr, text, author, email, website, voters) VALUES \
         (1, 1, NULL, 1600000000.5, 1, '192.0.2.0', 'Hello *isso*', 'Ida', 'ida@isso.example', 'ida.example', x''), \
         (1, 2, 1, 1600000100.0, 1, '192.0.2.0', 'A reply', NULL, NULL, NULL, x''), \
         (1, 3, NULL, 1600000200.0, 4, NULL, '', NULL, NULL, NULL, x''), \
         (1, 4, 3, 1600000300.0, 1, NULL, 'Under a deleted one', 'Jon', NULL, NULL, x''), \
         (1, 5, NULL, 1600000400.0, 2, NULL, 'Held at Isso', 'Kim', NULL, NULL, x''), \
         (9, 6, NULL, 1600000500.0, 1, NULL, 'Orphan thread', 'Lou', NULL, NULL, x'')",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_isso_database_is_read_without_being_changed() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("isso.db");
    isso_db(&db).await;
    let before = std::fs::read(&db).unwrap();
    let s = import(&app, Format::Isso, &db).await;
    assert_eq!(std::fs::read(&db).unwrap(), before, "the Isso file changed");
    assert_eq!(s.threads_created, 2, "{s}");
    assert_eq!(s.imported["published"], 4, "{s}");
    assert_eq!(s.imported["held"], 1, "{s}");
    assert_eq!(
        s.skipped["comment of a thread that is not in the database"],
        1
    );
    let t = thread_as(&app, "posts-isso-one", None).await;
    assert_eq!(t["thread"]["title"], "Isso one");
    assert_eq!(
        names(&t),
        pairs(&[("Ida", 0), ("Anonymous", 1), ("[deleted]", 0), ("Jon", 1)])
    );
    let ida = find(&t, "Ida");
    assert_eq!(ida["body_html"], "<p>Hello <em>isso</em></p>\n");
    assert_eq!(ida["created_at"], "2020-09-13T12:26:40Z");
    assert_eq!(ida["author_url"], "http://ida.example/");

    // Not an Isso database: refused, nothing written.
    let app = spawn_app().await;
    let other = dir.path().join("other.db");
    {
        use sqlx::Connection;
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", other.display()))
                .await
                .unwrap();
        sqlx::query("CREATE TABLE x (y)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let err = import_with(&app, Format::Isso, &other, &ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an Isso database"), "{err}");
    assert_eq!(app.count_rows("threads").await, 0);
}

#[tokio::test]
async fn a_remark42_backup_and_a_commento_export_import() {
    let app = spawn_app().await;
    let s = import(&app, Format::Remark42, &fixture("remark42.jsonl")).await;
    assert_eq!(s.threads_created, 2, "{s}");
    assert_eq!(s.imported["published"], 5, "{s}");
    assert_eq!(s.placeholders, 1, "{s}");
    let t = thread_as(&app, "posts-first", None).await;
    assert_eq!(t["thread"]["title"], "First post");
    assert_eq!(
        names(&t),
        pairs(&[("Anna", 0), ("Бьорн", 1), ("[deleted]", 0), ("Cat", 1)])
    );
    assert_eq!(
        find(&t, "Anna")["body_html"],
        "<p>Top <strong>level</strong></p>\n"
    );
    assert_eq!(find(&t, "Anna")["created_at"], "2022-03-01T09:00:00Z");
    assert_eq!(
        find(&t, "Cat")["body_html"],
        "<p>Under a <em>deleted</em> comment</p>\n"
    );

    let s = import(&app, Format::Commento, &fixture("commento.json")).await;
    assert_eq!(s.threads_created, 2, "{s}");
    assert_eq!(s.imported["published"], 2, "{s}");
    assert_eq!(s.imported["held"], 2, "{s}");
    assert_eq!(
        s.skipped["deleted at the source, without replies"], 1,
        "{s}"
    );
    let t = thread_as(&app, "blog-one", None).await;
    assert_eq!(names(&t), pairs(&[("Una", 0), ("Anonymous", 1)]));
    assert_eq!(find(&t, "Una")["author_url"], "https://una.example/");
    assert_eq!(
        find(&t, "Una")["body_html"],
        "<p>First <strong>comment</strong></p>\n"
    );
    let cookie = staff(&app).await;
    let t = thread_as(&app, "blog-two", Some(&cookie)).await;
    assert_eq!(find(&t, "Vic")["status"], "held");
    assert_eq!(find(&t, "Vic")["author_url"], Value::Null);
    assert_consistent(&app).await;
}

/// A site with history: nested replies, held, spam and removed comments, staff actions.
async fn busy_site() -> (TestApp, String) {
    let app = spawn_app_with(
        Config::parse(
            "[moderation]\nbanned_words = [\"casino\"]\n[limits]\nposts_per_minute = 0\n",
        )
        .unwrap(),
    )
    .await;
    app.thread("alpha").await;
    app.thread("beta").await;
    let cookie = staff(&app).await;
    let a = app.publish("alpha", "Ann", "First *comment*", None).await;
    let b = app
        .publish(
            "alpha",
            "Ben",
            "A reply with a [link](https://example.org)",
            Some(a),
        )
        .await;
    app.publish("alpha", "Cy", "Deeper ünïcode 日本", Some(b))
        .await;
    let d = app.publish("alpha", "Dee", "To be removed", None).await;
    let r = app
        .post_comment(
            "alpha",
            json!({"name": "Eve", "email": "eve@example.org", "body": "Visit my casino"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let held = r.json()["comment_id"].as_i64().unwrap();
    let s = app.publish("beta", "Spammy", "Buy now", None).await;
    app.publish("beta", "Fay", "Something on beta", None).await;
    for (id, action) in [(d, "remove"), (s, "spam")] {
        let r = app
            .send_with(
                "POST",
                &format!("/api/comments/{id}/moderate"),
                &[("cookie", &cookie)],
                Some(&json!({ "action": action })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let _ = held;
    (app, cookie)
}

async fn views(app: &TestApp, cookie: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for key in ["alpha", "beta"] {
        for c in [None, Some(cookie)] {
            let mut t = thread_as(app, key, c).await;
            // The live-event cursor belongs to the server's event log, not to the data.
            t.as_object_mut().unwrap().remove("last_event_id");
            out.push(t);
        }
    }
    let q = app
        .send_with(
            "GET",
            "/api/moderation/queue?status=all",
            &[("cookie", cookie)],
            None,
        )
        .await;
    out.push(q.json());
    let a = app
        .send_with("GET", "/api/moderation/audit", &[("cookie", cookie)], None)
        .await;
    out.push(a.json());
    out
}

#[tokio::test]
async fn an_export_imported_into_an_empty_database_reproduces_every_page_and_the_queue() {
    let (app, cookie) = busy_site().await;
    let before = views(&app, &cookie).await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["export.jsonl", "export.jsonl.gz"] {
        let file = dir.path().join(name);
        let end = app
            .engine
            .export_file(&server::Staff::operator(), None, &file)
            .await
            .unwrap();
        assert_eq!((end.threads, end.comments), (2, 7));
        let copy = spawn_app().await;
        let s = import(&copy, Format::Moderato, &file).await;
        assert_eq!(s.imported_total(), 7, "{s}");
        assert_eq!(s.audit_entries, 2, "{s}");
        // The staff account is not part of the export.
        let copy_cookie = copy.sign_in_as("staff", true).await;
        let after = views(&copy, &copy_cookie).await;
        assert_eq!(after, before, "{name}");
        assert_consistent(&copy).await;

        // Again: nothing more, and a new post still gets a fresh id.
        let again = import(&copy, Format::Moderato, &file).await;
        assert_eq!(again.imported_total(), 0, "{again}");
        assert_eq!(again.audit_entries, 0, "{again}");
        let id = copy.publish("beta", "New", "after the restore", None).await;
        assert!(id > 7, "{id}");
    }
    // Restoring a backup into the database it came from adds nothing either.
    let file = dir.path().join("export.jsonl");
    let s = import(&app, Format::Moderato, &file).await;
    assert_eq!(s.imported_total(), 0, "{s}");
    assert_eq!(app.count_rows("comments").await, 7);
}

/// A spam score is optional: an export whose comments have one or not, in turn, restores every
/// score as it was. (On PostgreSQL sqlx's Any driver once typed a missing score as float4 in
/// the statement it kept, which then refused the next comment's real score.)
#[tokio::test]
async fn comments_with_and_without_a_score_are_restored_alike() {
    let app = spawn_app().await;
    let keys = ["a", "b", "c", "d"];
    for key in keys {
        app.thread(key).await;
        app.publish(key, "Ann", &format!("On {key}"), None).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (file, edited) = (dir.path().join("x.jsonl"), dir.path().join("scored.jsonl"));
    let export = |app: &TestApp, file: PathBuf| {
        let engine = app.engine.clone();
        async move {
            engine
                .export_file(&server::Staff::operator(), None, &file)
                .await
                .unwrap();
            std::fs::read_to_string(&file).unwrap()
        }
    };
    // Each thread's one comment goes in a statement of its own, the same statement each time.
    let scores = [Value::Null, json!(0.25), Value::Null, json!(0.75)];
    let mut lines = Vec::new();
    let mut n = 0;
    for line in export(&app, file).await.lines() {
        let mut record: Value = serde_json::from_str(line).unwrap();
        if record["type"] == "comment" {
            record["score"] = scores[n].clone();
            n += 1;
        }
        lines.push(record.to_string());
    }
    assert_eq!(n, 4);
    std::fs::write(&edited, lines.join("\n") + "\n").unwrap();

    let copy = spawn_app().await;
    let s = import(&copy, Format::Moderato, &edited).await;
    assert_eq!(s.imported_total(), 4, "{s}");
    let restored: Vec<Value> = export(&copy, dir.path().join("again.jsonl"))
        .await
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["type"] == "comment")
        .map(|r| r["score"].clone())
        .collect();
    assert_eq!(restored, scores);
}

#[tokio::test]
async fn one_thread_can_be_exported_alone_and_merged_into_another_site() {
    let (app, _) = busy_site().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("beta.jsonl");
    let end = app
        .engine
        .export_file(&server::Staff::operator(), Some("beta"), &file)
        .await
        .unwrap();
    assert_eq!((end.threads, end.comments, end.audit), (1, 2, 1));
    let other = spawn_app().await;
    other.thread("elsewhere").await;
    other
        .publish("elsewhere", "Local", "already here", None)
        .await;
    let s = import(&other, Format::Moderato, &file).await;
    assert_eq!(s.imported_total(), 2, "{s}");
    let t = thread_as(&other, "beta", None).await;
    assert_eq!(names(&t), pairs(&[("Fay", 0)]));
    assert_consistent(&other).await;
    let err = app
        .engine
        .export_file(&server::Staff::operator(), Some("nope"), &file)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no thread"), "{err}");
}

#[tokio::test]
async fn backups_run_on_schedule_and_keep_the_newest() {
    let (app, _) = busy_site().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&format!(
        "[backup]\ndir = \"{}\"\nevery_hours = 0.0003\nkeep = 2\n",
        dir.path().display()
    ))
    .unwrap();
    // 0.0003 hours = 1.08 s: backups at about 0, 1.1, 2.2 and 3.2 s.
    let task = app.engine.spawn_backups(&config.backup).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    app.publish("beta", "Later", "posted between two backups", None)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(2400)).await;
    task.abort();
    let files = server::transfer::backup::list(dir.path()).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    // The newest backup holds what was posted after the first one.
    let copy = spawn_app().await;
    let s = import(&copy, Format::Moderato, &files[0]).await;
    assert_eq!(s.imported_total(), 8, "{s}");
    let stamp = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stamp(&files[0]) > stamp(&files[1]));
    assert!(Config::parse("[backup]\nevery_hours = 0\n").is_err());
    assert!(Config::parse("[backup]\nkeep = 0\n").is_err());
}

#[tokio::test]
async fn the_cli_imports_exports_and_backs_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database_url(dir.path()).await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_moderato"))
            .args(args)
            .env("DATABASE_URL", &db)
            .env_remove("MODERATO_CONFIG")
            .output()
            .unwrap()
    };
    let xml = fixture("disqus.xml");
    let out = run(&["import", "--format", "disqus", xml.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("comments: 8 imported (1 held, 6 published, 1 spam)"),
        "{stdout}"
    );
    assert!(stdout.contains("spam filter retrained"), "{stdout}");

    let export = dir.path().join("all.jsonl.gz");
    let out = run(&["export", "--out", export.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&export).unwrap()),
        &mut text,
    )
    .unwrap();
    assert!(text.starts_with("{\"type\":\"header\",\"format\":\"moderato-export\",\"version\":1"));
    assert!(
        text.contains("ann@example.org"),
        "staff fields are in the export"
    );

    let backups = dir.path().join("backups");
    let out = run(&["backup", "now", "--dir", backups.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server::transfer::backup::list(&backups).unwrap().len(), 1);

    let out = run(&["import", "--format", "wordpress", xml.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2, column 1") && err.contains("WordPress"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = run(&[
        "import",
        "--format",
        "disqus",
        "--url-prefix",
        "nonsense",
        xml.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

/// An audit log longer than one of the import's transactions (they hold 1,000 entries, so
/// that a live server's posts never wait seconds for the write lock) comes in whole, is
/// counted once, and a second import adds none of it.
#[tokio::test]
async fn an_audit_log_longer_than_one_transaction_is_imported_whole_and_once() {
    let app = spawn_app().await;
    app.thread("t").await;
    app.publish("t", "Ann", "Hello", None).await;
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.jsonl");
    app.engine
        .export_file(&server::Staff::operator(), None, &small)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&small).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let end: Value = serde_json::from_str(&lines.pop().unwrap()).unwrap();
    assert_eq!(end["type"], "end");
    let entries = 2_500u64;
    for i in 1..=entries {
        lines.push(
            json!({"type": "audit", "id": i, "at": 1_700_000_000_000u64 + i, "actor": "staff:mod",
                   "action": "approve", "comment_id": null, "thread": "t",
                   "status_before": "held", "status_after": "published", "detail": null})
            .to_string(),
        );
    }
    lines.push(
        json!({"type": "end", "threads": end["threads"], "comments": end["comments"],
                      "audit": entries})
        .to_string(),
    );
    let big = dir.path().join("big.jsonl");
    std::fs::write(&big, lines.join("\n") + "\n").unwrap();

    let copy = spawn_app().await;
    let s = import(&copy, Format::Moderato, &big).await;
    assert_eq!(s.audit_entries, entries, "{s}");
    assert_eq!(copy.count_rows("audit_log").await, entries as i64);
    let again = import(&copy, Format::Moderato, &big).await;
    assert_eq!(again.audit_entries, 0, "{again}");
    assert_eq!(copy.count_rows("audit_log").await, entries as i64);
}
