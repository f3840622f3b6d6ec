//! Mail against a real SMTP server (aiosmtpd, started here on loopback): email_notification
//! through the durable outbox, retries while the server is down, no mail sent twice across a
//! restart, rate limits, and SMTP sign-in.

mod common;

use common::*;
use serde_json::json;
use server::ThreadSpec;
use server::config::Config;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PUBLIC_URL: &str = "https://comments.example.org";

struct SmtpServer {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Every mail received so far.
    fn mails(&self) -> Vec<String> {
        mails_in(self.maildir.path())
    }
}

fn mails_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("mail").join("new"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts tests/support/smtp.py with `args`; it prints the port it listens on.
async fn start_smtp_with(args: &[&str]) -> SmtpServer {
    use std::io::BufRead;
    let maildir = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(maildir.path().join("mail"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 tests/support/smtp.py (scripts/tools.sh test installs aiosmtpd)");
    let stdout = child.stdout.take().unwrap();
    let port = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).ok()?;
        line.trim().parse::<u16>().ok()
    })
    .await
    .unwrap()
    .expect("the SMTP server did not start (is aiosmtpd installed? pip install aiosmtpd)");
    SmtpServer {
        child,
        port,
        maildir,
    }
}

async fn start_smtp() -> SmtpServer {
    start_smtp_with(&[]).await
}

/// Waits until `count` mails are in the server's mailbox (15 s at most).
async fn wait_for_mails(smtp: &SmtpServer, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mails = smtp.mails();
        if mails.len() >= count {
            return mails;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} mails arrived",
            mails.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A configuration mailing `Staff <staff@example.org>` about every comment on "post" threads
/// through the SMTP server on `port`, retrying after 1 s; `extra` is more TOML.
fn mail_config(port: u16, extra: &str) -> Config {
    Config::parse(&format!(
        "[site]\npublic_url = \"{PUBLIC_URL}/\"\n\
         [moderation]\nnotify_emails = [\"Staff <staff@example.org>\"]\n\
         [moderation.kinds.post]\nemail_notification = true\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"moderato@example.org\"\n\
         retry_after_secs = 1\n{extra}"
    ))
    .unwrap()
}

async fn news_thread(app: &TestApp) {
    app.thread_with(ThreadSpec {
        key: "news".into(),
        kind: Some("post".into()),
        ..Default::default()
    })
    .await;
}

/// (sent, dropped, attempts, last_error) of every outbox row, oldest first.
async fn outbox(app: &TestApp) -> Vec<(bool, Option<String>, i64, Option<String>)> {
    sqlx::query_as::<_, (Option<i64>, Option<String>, i64, Option<String>)>(
        "SELECT sent_at, dropped, attempts, last_error FROM mail_outbox ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .map(|(sent, dropped, attempts, error)| (sent.is_some(), dropped, attempts, error))
    .collect()
}

/// Waits until the outbox satisfies `ready` (15 s at most).
async fn wait_for_outbox(
    app: &TestApp,
    what: &str,
    ready: impl Fn(&[(bool, Option<String>, i64, Option<String>)]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = outbox(app).await;
        if ready(&rows) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn staff_are_emailed_about_a_new_comment() {
    let smtp = start_smtp().await;
    let app = spawn_app_with(mail_config(smtp.port, "")).await;
    let _worker = app.engine.spawn_mail_outbox().expect("mail is configured");
    // A title that tries to smuggle in a header.
    app.thread_with(ThreadSpec {
        key: "news".into(),
        kind: Some("post".into()),
        title: Some("Launch\r\nBcc: victim@example.org".into()),
        ..Default::default()
    })
    .await;
    let r = app
        .post_comment(
            "news",
            json!({"name": "Ann", "body": "Congratulations on the launch!"}),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text);
    let id = r.json()["comment_id"].as_i64().unwrap();

    let mails = wait_for_mails(&smtp, 1).await;
    assert_eq!(mails.len(), 1);
    let mail = mails[0].replace("\r\n", "\n");
    let (head, body) = mail.split_once("\n\n").unwrap();
    // Unfold continuation lines, as a mail reader does.
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    assert!(head.contains("To: Staff <staff@example.org>"), "{head}");
    assert!(head.contains("From: moderato@example.org"), "{head}");
    let subject = head.lines().find(|l| l.starts_with("Subject:")).unwrap();
    assert!(subject.contains("New comment from Ann"), "{subject}");
    assert!(
        !head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "header injected: {head}"
    );
    assert!(body.contains("Congratulations on the launch!"), "{body}");
    // The link works from a mail reader: absolute, from site.public_url.
    assert!(
        body.contains(&format!("{PUBLIC_URL}/t/news#c{id}")),
        "{body}"
    );
    wait_for_outbox(&app, "marked sent once", |rows| {
        rows.len() == 1 && rows[0].0 && rows[0].2 == 1
    })
    .await;
}

#[tokio::test]
async fn threads_of_kinds_without_email_notification_send_nothing() {
    let smtp = start_smtp().await;
    let app = spawn_app_with(mail_config(smtp.port, "")).await;
    let _worker = app.engine.spawn_mail_outbox();
    app.thread("page").await;
    app.publish("page", "Ann", "quiet", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(smtp.mails().is_empty());
    assert!(outbox(&app).await.is_empty());
}

#[tokio::test]
async fn mail_without_a_public_url_is_refused_at_startup() {
    let mut config = mail_config(25, "");
    config.site.public_url = String::new();
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let err = server::Engine::open(&url, config).await.err().unwrap();
    assert!(err.to_string().contains("site.public_url"), "{err}");
}

/// The mail server is down when the comment is posted: the mail waits in the outbox, is
/// retried, arrives once the server is up, and a restarted server does not send it again.
#[tokio::test]
async fn a_mail_server_that_is_down_loses_nothing_and_nothing_is_sent_twice() {
    // A port with nothing listening yet (the server starts on it later).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = mail_config(port, "");
    let app = spawn_app_with(config.clone()).await;
    let worker = app.engine.spawn_mail_outbox().unwrap();
    news_thread(&app).await;
    app.publish("news", "Ann", "Posted while the mail server is down.", None)
        .await;
    wait_for_outbox(&app, "a failed try is recorded", |rows| {
        rows.len() == 1 && !rows[0].0 && rows[0].2 >= 1 && rows[0].3.is_some()
    })
    .await;

    let smtp = start_smtp_with(&["--port", &port.to_string()]).await;
    let mails = wait_for_mails(&smtp, 1).await;
    assert!(mails[0].contains("Posted while the mail server is down."));
    wait_for_outbox(&app, "marked sent", |rows| rows[0].0).await;

    // A restart: a new engine and worker on the same database send nothing again.
    worker.abort();
    let restarted = std::sync::Arc::new(
        server::Engine::open(&app.database_url, config)
            .await
            .unwrap(),
    );
    let _worker = restarted.spawn_mail_outbox().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(smtp.mails().len(), 1, "sent once");
}

#[tokio::test]
async fn a_flood_of_comments_is_not_a_flood_of_mail() {
    let smtp = start_smtp().await;
    let app = spawn_app_with(mail_config(smtp.port, "max_per_recipient_per_hour = 2\n")).await;
    let _worker = app.engine.spawn_mail_outbox().unwrap();
    news_thread(&app).await;
    for i in 0..4 {
        app.publish("news", "Ann", &format!("comment {i}"), None)
            .await;
    }
    wait_for_outbox(&app, "every mail sent or dropped", |rows| {
        rows.len() == 4 && rows.iter().all(|r| r.0 || r.1.is_some())
    })
    .await;
    let rows = outbox(&app).await;
    assert_eq!(rows.iter().filter(|r| r.0).count(), 2, "{rows:?}");
    for r in rows.iter().filter(|r| !r.0) {
        assert!(
            r.1.as_deref()
                .unwrap()
                .contains("max_per_recipient_per_hour"),
            "{rows:?}"
        );
    }
    assert_eq!(smtp.mails().len(), 2);
}

#[tokio::test]
async fn the_daily_cap_holds_for_everyone_together() {
    let smtp = start_smtp().await;
    let app = spawn_app_with(mail_config(
        smtp.port,
        "max_per_day = 2\nmax_per_recipient_per_hour = 0\n",
    ))
    .await;
    let _worker = app.engine.spawn_mail_outbox().unwrap();
    news_thread(&app).await;
    for i in 0..3 {
        app.publish("news", "Ann", &format!("comment {i}"), None)
            .await;
    }
    wait_for_outbox(&app, "every mail sent or dropped", |rows| {
        rows.len() == 3 && rows.iter().all(|r| r.0 || r.1.is_some())
    })
    .await;
    let rows = outbox(&app).await;
    assert_eq!(rows.iter().filter(|r| r.0).count(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.1.as_deref().is_some_and(|d| d.contains("max_per_day")))
    );
    assert_eq!(smtp.mails().len(), 2);
}

#[tokio::test]
async fn mail_is_sent_after_signing_in_to_the_mail_server() {
    let smtp = start_smtp_with(&["--auth", "moderato:s3cret-pass"]).await;
    let password_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password_file.path(), "s3cret-pass\n").unwrap();
    let app = spawn_app_with(mail_config(
        smtp.port,
        &format!(
            "username = \"moderato\"\npassword_file = \"{}\"\n",
            password_file.path().display()
        ),
    ))
    .await;
    let _worker = app.engine.spawn_mail_outbox().unwrap();
    news_thread(&app).await;
    app.publish("news", "Ann", "Signed in.", None).await;
    assert!(wait_for_mails(&smtp, 1).await[0].contains("Signed in."));

    // The wrong password: nothing is delivered, and the outbox says why.
    let smtp = start_smtp_with(&["--auth", "moderato:s3cret-pass"]).await;
    let app = spawn_app_with(mail_config(
        smtp.port,
        "username = \"moderato\"\npassword = \"wrong\"\ntimeout_secs = 2\n",
    ))
    .await;
    let _worker = app.engine.spawn_mail_outbox().unwrap();
    news_thread(&app).await;
    app.publish("news", "Ann", "Not signed in.", None).await;
    wait_for_outbox(&app, "a refused sign-in is recorded", |rows| {
        rows.len() == 1 && rows[0].3.is_some()
    })
    .await;
    assert!(smtp.mails().is_empty());
}

/// A mail as its reader sees it: quoted-printable soft line breaks and `=XX` escapes undone
/// (lettre encodes bodies with long lines, such as links, that way).
fn decoded(mail: &str) -> String {
    let text = mail.replace("\r\n", "\n").replace("=\n", "");
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first link in `mail` that starts with `prefix`.
fn link_in(mail: &str, prefix: &str) -> String {
    let mail = decoded(mail);
    let start = mail
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {mail}"));
    mail[start..]
        .split(|c: char| c.is_whitespace() || c == '>')
        .next()
        .unwrap()
        .to_owned()
}

/// The staff action link after `label` in `mail`.
fn labelled_link(mail: &str, label: &str) -> String {
    let text = decoded(mail);
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label} in {text}"));
    let link = text[at + label.len()..].split_whitespace().next().unwrap();
    assert!(
        link.starts_with(&format!("{PUBLIC_URL}/mail/moderate?t=")),
        "{link}"
    );
    link.to_owned()
}

/// The path and query of an absolute link to this site.
fn local(url: &str) -> &str {
    url.strip_prefix(PUBLIC_URL).expect("a link to this site")
}

/// A reader asks for reply mail: confirms through the link's page (a GET alone changes
/// nothing), is mailed about published replies only (not held ones until approved, not their
/// own), with one-click unsubscribe headers, and nothing after unsubscribing.
#[tokio::test]
async fn a_reader_is_mailed_about_replies_once_confirmed_and_never_after_unsubscribing() {
    let smtp = start_smtp().await;
    let config = Config::parse(&format!(
        "[site]\npublic_url = \"{PUBLIC_URL}\"\n\
         [comments]\nreply_notifications = true\n\
         [moderation]\nbanned_words = [\"holdme\"]\n\
         [smtp]\nport = {}\nfrom = \"moderato@example.org\"\nretry_after_secs = 1\n",
        smtp.port
    ))
    .unwrap();
    let app = spawn_app_with(config).await;
    let _worker = app.engine.spawn_mail_outbox().unwrap();
    app.thread("news").await;
    let page = app.get("/t/news").await.text;
    assert!(page.contains(r#"name="notify""#), "the form offers it");

    // Without an email there is nobody to mail: a clear error.
    let r = app
        .post_comment("news", json!({"name": "Ann", "body": "Hi", "notify": true}))
        .await;
    assert_eq!(
        r.status,
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        r.text
    );
    assert!(r.json()["errors"]["notify"].is_string(), "{}", r.text);

    let r = app
        .post_comment(
            "news",
            json!({"name": "Ann", "email": "Ann@Example.org", "body": "First!", "notify": true}),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text);
    let ann = r.json()["comment_id"].as_i64().unwrap();
    let confirmation = wait_for_mails(&smtp, 1).await.remove(0);
    assert!(
        confirmation.contains("To: ann@example.org"),
        "{confirmation}"
    );
    let confirm = link_in(&confirmation, &format!("{PUBLIC_URL}/mail/confirm?t="));

    // Unconfirmed: a reply sends nothing.
    app.publish("news", "Bob", "Before you confirmed.", Some(ann))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.mails().len(), 1);

    // Opening the link only asks; the button confirms.
    let shown = app.get(local(&confirm)).await;
    assert_eq!(
        shown.status,
        axum::http::StatusCode::OK,
        "{confirm}: {}",
        shown.text
    );
    assert!(shown.text.contains("<button"), "{}", shown.text);
    let token = confirm.split("t=").nth(1).unwrap();
    let confirmed: Option<i64> =
        sqlx::query_scalar("SELECT confirmed_at FROM subscribers WHERE email = 'ann@example.org'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(confirmed, None, "a GET confirms nothing");
    let r = app
        .post_raw(
            "/mail/confirm",
            "application/x-www-form-urlencoded",
            format!("t={token}"),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("Confirmed"), "{}", r.text);

    // A published reply: mailed, with an absolute link and one-click unsubscribe headers.
    let bob = app
        .publish("news", "Bob", "Welcome aboard.", Some(ann))
        .await;
    let mails = wait_for_mails(&smtp, 2).await;
    let notification = mails
        .iter()
        .find(|m| m.contains("Welcome aboard."))
        .expect("the notification")
        .replace("\r\n", "\n");
    // As received by the SMTP server (shown in the test log).
    println!("--- a reply notification as received ---\n{notification}\n---");
    let (head, body) = notification.split_once("\n\n").unwrap();
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let body = decoded(body);
    assert!(head.contains("Bob replied to your comment"), "{head}");
    assert!(
        head.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{head}"
    );
    let one_click = link_in(&head, &format!("{PUBLIC_URL}/mail/unsubscribe?t="));
    assert!(
        body.contains(&format!("{PUBLIC_URL}/t/news#c{bob}")),
        "{body}"
    );

    // Ann answering herself (known by her address, as a name is anyone's) is no news to her.
    let r = app
        .post_comment(
            "news",
            json!({"name": "Ann", "email": "ann@example.org", "body": "Me again", "parent_id": ann}),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text);
    // A held reply is news only once approved.
    let r = app
        .post_comment(
            "news",
            json!({"name": "Carol", "body": "holdme please", "parent_id": ann}),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::ACCEPTED, "{}", r.text);
    let held = r.json()["comment_id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.mails().len(), 2, "nothing for her own or a held reply");
    let cookie = app.sign_in_as("mod", true).await;
    let r = app
        .send_with(
            "POST",
            &format!("/api/comments/{held}/moderate"),
            &[("cookie", &cookie), ("content-type", "application/json")],
            Some(&json!({"action": "approve"})),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
    let mails = wait_for_mails(&smtp, 3).await;
    assert!(mails.iter().any(|m| m.contains("holdme please")));

    // One click (RFC 8058), and no more mail.
    let r = app
        .post_raw(
            local(&one_click),
            "application/x-www-form-urlencoded",
            "List-Unsubscribe=One-Click",
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
    app.publish("news", "Bob", "Still there?", Some(ann)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.mails().len(), 3, "nothing after unsubscribing");
    // A link that was tampered with does nothing.
    let r = app.get("/mail/unsubscribe?t=not-a-token").await;
    assert_eq!(r.status, axum::http::StatusCode::BAD_REQUEST);
}

/// With `mail_staff`, a held comment is mailed to each staff account with an address, with
/// the reason and signed approve / reject / spam links: opening one only asks, the button
/// acts as that staff member (the audit log says so), and a demoted account's links stop.
#[tokio::test]
async fn staff_mail_about_a_held_comment_has_links_that_act_as_that_staff_member() {
    let smtp = start_smtp().await;
    let config = Config::parse(&format!(
        "[site]\npublic_url = \"{PUBLIC_URL}\"\n\
         [moderation]\nmail_staff = true\nbanned_words = [\"casino\"]\n\
         [smtp]\nport = {}\nfrom = \"moderato@example.org\"\nretry_after_secs = 1\n",
        smtp.port
    ))
    .unwrap();
    let app = spawn_app_with(config).await;
    let _worker = app.engine.spawn_mail_outbox().unwrap();
    let operator = server::Staff::operator();
    for (name, staff) in [("mod", true), ("reader", false)] {
        app.engine
            .add_user(&operator, name, "password123", staff)
            .await
            .unwrap();
        app.engine
            .set_user_email(&operator, name, Some(&format!("{name}@example.org")))
            .await
            .unwrap();
    }
    app.thread("news").await;
    let r = app
        .post_comment(
            "news",
            json!({"name": "Eve", "body": "Best casino in town"}),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json()["comment_id"].as_i64().unwrap();

    let mail = wait_for_mails(&smtp, 1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 1, "staff only: {:?}", smtp.mails());
    let text = decoded(&mail);
    assert!(text.contains("To: mod@example.org"), "{text}");
    assert!(text.contains("Best casino in town"), "{text}");
    assert!(text.contains("banned word"), "the reason: {text}");
    let approve = labelled_link(&mail, "Approve: ");
    assert_ne!(labelled_link(&mail, "Reject: "), approve);
    assert_ne!(labelled_link(&mail, "Mark as spam: "), approve);

    // A mail scanner's GET changes nothing.
    let shown = app.get(local(&approve)).await;
    assert_eq!(shown.status, axum::http::StatusCode::OK, "{}", shown.text);
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM comments WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    assert_eq!(status().await, "held");
    let token = approve.split("t=").nth(1).unwrap();
    let r = app
        .post_raw(
            "/mail/moderate",
            "application/x-www-form-urlencoded",
            format!("t={token}"),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
    assert_eq!(status().await, "published");
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM audit_log WHERE comment_id = $1 AND action = 'approve'",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(actor, "mod");

    // Once the account is no longer staff, its links do nothing.
    app.engine
        .add_user(&operator, "mod", "password123", false)
        .await
        .unwrap();
    let reject = labelled_link(&mail, "Reject: ");
    let token = reject.split("t=").nth(1).unwrap();
    let r = app
        .post_raw(
            "/mail/moderate",
            "application/x-www-form-urlencoded",
            format!("t={token}"),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(status().await, "published");
}
