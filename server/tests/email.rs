//! email_notification against a real SMTP server (aiosmtpd, started here on loopback).

mod common;

use common::*;
use serde_json::json;
use server::ThreadSpec;
use server::config::Config;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

async fn start_smtp() -> SmtpServer {
    use std::io::BufRead;
    let maildir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(maildir.path().join("mail"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 tests/support/smtp.py (scripts/tools.sh test installs aiosmtpd)");
    // The server binds port 0 and prints the port it got: no race with other tests for a port.
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

async fn wait_for_mail(dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let new = dir.join("mail").join("new");
        if let Ok(entries) = std::fs::read_dir(&new) {
            let mails: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect();
            if !mails.is_empty() {
                return mails;
            }
        }
        assert!(Instant::now() < deadline, "no mail arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn staff_are_emailed_about_a_new_comment() {
    let smtp = start_smtp().await;
    let config = Config::parse(&format!(
        "[moderation]\nnotify_emails = [\"Staff <staff@example.org>\"]\n\
         [moderation.kinds.post]\nemail_notification = true\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"moderato@example.org\"\n",
        smtp.port
    ))
    .unwrap();
    let app = spawn_app_with(config).await;
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

    let mails = wait_for_mail(smtp.maildir.path()).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    let mail = mail.replace("\r\n", "\n");
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
    assert!(body.contains("/t/news#c"), "{body}");
}

#[tokio::test]
async fn threads_of_kinds_without_email_notification_send_nothing() {
    let smtp = start_smtp().await;
    let config = Config::parse(&format!(
        "[moderation]\nnotify_emails = [\"staff@example.org\"]\n[smtp]\nport = {}\n",
        smtp.port
    ))
    .unwrap();
    let app = spawn_app_with(config).await;
    app.thread("page").await;
    app.publish("page", "Ann", "quiet", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        std::fs::read_dir(smtp.maildir.path().join("mail").join("new"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}
