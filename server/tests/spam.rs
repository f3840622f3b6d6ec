//! The spam filter in the server: holding spam, learning from staff decisions, retraining,
//! persistence, and the `moderato spam` commands.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use server::config::Config;
use server::spam::Model;

const SPAMMY: &str = "FREE money!!! Click here to claim your $1000 prize now. Limited offer, \
     order today: http://cheap-deals.example/buy Unsubscribe at any time.";
const HAMMY: &str = "Thanks for the clear write-up. The second example about the borrow \
     checker finally made lifetimes click for me.";

#[tokio::test]
async fn out_of_the_box_obvious_spam_is_held_with_its_score_and_normal_comments_publish() {
    let app = spawn_app_with_spam(Config::default()).await;
    app.thread("t").await;
    let r = app
        .post_comment("t", json!({"name": "Best Deals", "email": "deals@cheap-deals.example", "title": "You WON", "body": SPAMMY}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let spam_id = r.json()["comment_id"].as_i64().unwrap();
    let r = app
        .post_comment("t", json!({"name": "Jo", "body": HAMMY}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Too short to judge (this one scores 0.99 on the e-mail corpus): published.
    let r = app
        .post_comment("t", json!({"name": "Seed", "body": "A reply"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let cookie = app.sign_in_as("mod", true).await;
    let q = app
        .send_with(
            "GET",
            "/api/moderation/queue?status=spam",
            &[("cookie", &cookie)],
            None,
        )
        .await
        .json();
    let held = &q["comments"][0];
    assert_eq!(held["id"], spam_id);
    assert_eq!(held["status"], "spam");
    let score = held["moderation"]["score"].as_f64().unwrap();
    assert!(score >= 0.9, "{score}");
    assert!(
        held["moderation"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("Spam filter")
    );
    // Readers never see it.
    assert_eq!(app.comments("t").await.len(), 2);
}

/// Markup that renders away (entities, emphasis inside words, a link over its address) does
/// not change what the filter sees: the score is that of the text a reader would see.
#[tokio::test]
async fn spam_dressed_in_markup_scores_as_the_text_a_reader_sees() {
    let app = spawn_app_with_spam(Config::default()).await;
    app.thread("t").await;
    let dressed = "F&#82;EE mo**ney**!!! Cl*ick* here to cl&#97;im your $1000 pr**ize** now. \
                   Lim*ited* off**er**, order today: [http://cheap-deals.example/buy](http://cheap-deals.example/buy) \
                   Unsub**scribe** at any time.";
    let r = app
        .post_comment("t", json!({"name": "Best Deals", "body": dressed}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let cookie = app.sign_in_as("mod", true).await;
    let q = app
        .send_with(
            "GET",
            "/api/moderation/queue?status=spam",
            &[("cookie", &cookie)],
            None,
        )
        .await
        .json();
    let score = q["comments"][0]["moderation"]["score"].as_f64().unwrap();
    let plain = app.engine.spam_score("Best Deals", None, None, SPAMMY);
    assert!((score - plain).abs() < 1e-9, "{score} vs {plain}");
}

#[tokio::test]
async fn staff_decisions_teach_the_filter_at_once_and_equal_a_retrain() {
    let app = spawn_app().await; // empty filter: it knows only what staff teach it
    app.thread("t").await;
    let cookie = app.sign_in_as("mod", true).await;
    let before = app.engine.spam_score("Spammer", None, None, SPAMMY);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.publish("t", "Spammer", &format!("{SPAMMY} {i}"), None)
                .await,
        );
        app.publish("t", "Reader", &format!("{HAMMY} {i}"), None)
            .await;
    }
    // Retrain: published comments become ham training data.
    let r = app
        .send_with("POST", "/api/spam/retrain", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for id in &ids {
        let r = app
            .send_with(
                "POST",
                &format!("/api/comments/{id}/moderate"),
                &[("cookie", &cookie)],
                Some(&json!({"action": "spam"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Change a mind: one goes back to published, then is removed (no longer training data).
    for action in ["ham", "remove"] {
        app.send_with(
            "POST",
            &format!("/api/comments/{}/moderate", ids[0]),
            &[("cookie", &cookie)],
            Some(&json!({"action": action})),
        )
        .await;
    }
    let after = app.engine.spam_score("Spammer", None, None, SPAMMY);
    assert!(after > before, "{before} -> {after}");
    assert!(after > 0.5, "{after}");

    // The incrementally updated model is exactly a fresh one trained on the same data.
    let operator = server::Staff::operator();
    let samples = app.engine.spam_training_samples(&operator).await.unwrap();
    assert_eq!(samples.len(), 3 + 2, "3 published ham + 2 spam");
    let retrained = Model::train(&samples, app.engine.spam_model().options());
    assert_eq!(*app.engine.spam_model(), retrained);

    // The stored model is the updated one too: a restart loads it.
    let mut config = Config::default();
    config.spam.bundled_corpus = false;
    let restarted = server::Engine::open(&app.database_url, config)
        .await
        .unwrap();
    assert_eq!(*restarted.spam_model(), retrained);
}

#[tokio::test]
async fn retraining_reports_cross_validated_metrics_and_keeps_history() {
    let app = spawn_app_with_spam(Config::default()).await;
    app.thread("t").await;
    assert_eq!(app.get("/api/spam").await.status, StatusCode::UNAUTHORIZED);
    let user = app.sign_in_as("reader", false).await;
    assert_eq!(
        app.send_with("POST", "/api/spam/retrain", &[("cookie", &user)], None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let cookie = app.sign_in_as("mod", true).await;
    app.publish("t", "Jo", HAMMY, None).await;
    let r = app
        .send_with("POST", "/api/spam/retrain", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t = r.json();
    assert!(
        t["source"]
            .as_str()
            .unwrap()
            .contains("1 moderated comments"),
        "{t}"
    );
    let spam_f1 = t["metrics"]["spam"]["f1"].as_f64().unwrap();
    assert!(spam_f1 > 0.9, "{spam_f1}");
    assert_eq!(t["metrics"]["folds"], 3);

    let s = app
        .send_with("GET", "/api/spam", &[("cookie", &cookie)], None)
        .await
        .json();
    assert_eq!(
        s["history"].as_array().unwrap().len(),
        2,
        "first start + retrain"
    );
    assert_eq!(s["counts"]["ham"], 1);
    assert_eq!(s["counts"]["spam"], 0);
    assert_eq!(s["threshold"], 0.9);
    for key in ["precision", "recall", "f1"] {
        assert!(s["metrics"]["ham"][key].is_f64(), "{key}");
    }
    assert!(s["metrics"]["spam"]["confusion"]["tp"].as_u64().unwrap() > 0);
}

fn write_csv(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn moderato(args: &[&str], db: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_moderato"))
        .args(args)
        .env("DATABASE_URL", db)
        .env_remove("MODERATO_CONFIG")
        .output()
        .unwrap()
}

fn labelled_csv(n: usize) -> String {
    let mut csv = String::from("label,author,text\n");
    for i in 0..n {
        csv.push_str(&format!("spam,Deals {i},\"{SPAMMY} offer {i}\"\n"));
        csv.push_str(&format!("ham,Reader {i},\"{HAMMY} note {i}\"\n"));
    }
    csv
}

#[tokio::test]
async fn spam_eval_prints_the_contract_json() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), "l.csv", &labelled_csv(12));
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let out = moderato(
        &[
            "spam",
            "eval",
            "--csv",
            csv.to_str().unwrap(),
            "--folds",
            "3",
        ],
        &db,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for label in ["spam", "ham"] {
        for key in ["precision", "recall", "f1"] {
            let x = v[label][key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{label}.{key} = {x}");
        }
    }
    assert_eq!(v["folds"], 3);
    assert_eq!(v["n"], 24);
}

#[tokio::test]
async fn spam_train_and_classify_use_the_stored_filter() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database_url(dir.path()).await;
    let csv = write_csv(dir.path(), "l.csv", &labelled_csv(10));
    let out = moderato(&["spam", "train", "--csv", csv.to_str().unwrap()], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("trained on 10 spam and 10 ham"));

    let input = write_csv(
        dir.path(),
        "in.csv",
        &format!("author,text\nDeals,\"{SPAMMY}\"\nReader,\"{HAMMY}\"\n"),
    );
    let out = moderato(&["spam", "classify", "--csv", input.to_str().unwrap()], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "label,score");
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with("spam,"), "{text}");
    assert!(lines[2].starts_with("ham,"), "{text}");
}

#[tokio::test]
async fn a_bad_csv_is_a_one_line_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    for (name, body, needle) in [
        ("missing.csv", "label,author\nspam,x\n", "text"),
        (
            "label.csv",
            "label,author,text\nspam,a,b\nmaybe,a,b\n",
            "line 3",
        ),
        (
            "quote.csv",
            "label,author,text\nspam,a,b\nham,a,\"unterminated\n",
            "line 3",
        ),
    ] {
        let csv = write_csv(dir.path(), name, body);
        let out = moderato(&["spam", "eval", "--csv", csv.to_str().unwrap()], &db);
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
    }
}
