//! The one place where the UI reaches data.
//!
//! During server rendering the engine is called directly through [`Backend`], which the server
//! puts in Leptos context for each request (so `app` never depends on `server`). In the browser
//! the same functions call the public JSON API.

use crate::model::*;

/// What the server's engine offers the UI while rendering on the server.
#[cfg(feature = "ssr")]
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A page of threads for the home page, newest first.
    async fn threads(&self, page: i64) -> Result<ThreadList, ApiError>;
    /// A page of a thread (the first, or the one after `after`) as the requesting viewer may
    /// see it, with a form token.
    async fn thread_page(&self, key: &str, after: Option<&str>) -> Result<ThreadPage, ApiError>;
    /// Who is asking.
    async fn viewer(&self) -> ViewerInfo;
    /// The moderation queue (staff only: `Forbidden` otherwise).
    async fn queue(&self, status: &str, page: i64) -> Result<QueueResponse, ApiError>;
    /// The audit log (staff only).
    async fn audit(&self, page: i64) -> Result<AuditResponse, ApiError>;
    /// The spam filter's metrics and history (staff only).
    async fn spam_status(&self) -> Result<SpamStatus, ApiError>;
}

/// The request's backend, as stored in Leptos context.
#[cfg(feature = "ssr")]
pub type SharedBackend = std::sync::Arc<dyn Backend>;

#[cfg(feature = "ssr")]
fn backend() -> Result<SharedBackend, ApiError> {
    leptos::prelude::use_context::<SharedBackend>()
        .ok_or_else(|| ApiError::Other("no backend in context".into()))
}

/// Path segment encoding for thread keys (keys are slugs, but never trust that).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Loads the thread page (a page of comments plus a form token).
pub async fn thread_page(key: String, after: Option<String>) -> Result<ThreadPage, ApiError> {
    #[cfg(feature = "ssr")]
    {
        backend()?.thread_page(&key, after.as_deref()).await
    }
    #[cfg(not(feature = "ssr"))]
    {
        let mut url = format!("/api/threads/{}/page", encode_key(&key));
        if let Some(after) = after {
            url.push_str("?after=");
            url.push_str(&encode_key(&after));
        }
        get_json(&url).await
    }
}

/// Loads page `page` (from 1) of the thread list for the home page.
pub async fn threads(page: i64) -> Result<ThreadList, ApiError> {
    #[cfg(feature = "ssr")]
    {
        backend()?.threads(page).await
    }
    #[cfg(not(feature = "ssr"))]
    {
        get_json::<ThreadList>(&format!("/api/threads?page={page}")).await
    }
}

/// Who is signed in.
pub async fn viewer() -> ViewerInfo {
    #[cfg(feature = "ssr")]
    {
        match backend() {
            Ok(b) => b.viewer().await,
            Err(_) => ViewerInfo::default(),
        }
    }
    #[cfg(not(feature = "ssr"))]
    {
        get_json("/api/session").await.unwrap_or_default()
    }
}

/// The moderation queue.
pub async fn queue(status: String, page: i64) -> Result<QueueResponse, ApiError> {
    #[cfg(feature = "ssr")]
    {
        backend()?.queue(&status, page).await
    }
    #[cfg(not(feature = "ssr"))]
    {
        get_json(&format!(
            "/api/moderation/queue?status={}&page={page}",
            encode_key(&status)
        ))
        .await
    }
}

/// The audit log.
pub async fn audit(page: i64) -> Result<AuditResponse, ApiError> {
    #[cfg(feature = "ssr")]
    {
        backend()?.audit(page).await
    }
    #[cfg(not(feature = "ssr"))]
    {
        get_json(&format!("/api/moderation/audit?page={page}")).await
    }
}

/// The spam filter's metrics and history.
pub async fn spam_status() -> Result<SpamStatus, ApiError> {
    #[cfg(feature = "ssr")]
    {
        backend()?.spam_status().await
    }
    #[cfg(not(feature = "ssr"))]
    {
        get_json("/api/spam").await
    }
}

/// Retrains the spam filter from the moderated comments.
pub async fn spam_retrain() -> Result<SpamTraining, ApiError> {
    send_json("POST", "/api/spam/retrain", &()).await
}

/// Applies a staff action to one comment; returns it as it is now.
pub async fn moderate(id: CommentId, action: ModerationAction) -> Result<Comment, ApiError> {
    send_json(
        "POST",
        &format!("/api/comments/{id}/moderate"),
        &ModerateRequest { action },
    )
    .await
}

/// Applies a staff action to several comments at once.
pub async fn moderate_bulk(
    ids: Vec<CommentId>,
    action: ModerationAction,
) -> Result<BulkModerateResponse, ApiError> {
    send_json(
        "POST",
        "/api/moderation/bulk",
        &BulkModerateRequest { ids, action },
    )
    .await
}

/// Signs in; `Err` carries the message to show.
pub async fn sign_in(username: String, password: String) -> Result<ViewerInfo, ApiError> {
    send_json("POST", "/api/session", &SignIn { username, password }).await
}

/// Signs out.
pub async fn sign_out() -> Result<ViewerInfo, ApiError> {
    send_json("DELETE", "/api/session", &()).await
}

/// Loads the page of comments after `cursor` (browser only).
pub async fn more_comments(key: String, cursor: String) -> Result<ThreadResponse, ApiError> {
    get_json(&format!(
        "/api/threads/{}?after={}",
        encode_key(&key),
        encode_key(&cursor)
    ))
    .await
}

/// Asks for a fresh form token (browser only; a token is single-use).
pub async fn form_token(key: String) -> Result<FormToken, ApiError> {
    get_json(&format!("/api/threads/{}/form", encode_key(&key))).await
}

/// Posts (or previews) a comment; any status code with a JSON body is an answer.
pub async fn post_comment(key: String, req: PostComment) -> Result<PostResponse, ApiError> {
    #[cfg(feature = "hydrate")]
    {
        let mut builder =
            gloo_net::http::Request::post(&format!("/api/threads/{}/comments", encode_key(&key)));
        // Framed on a site whose browser blocks third-party cookies, the author cookie never
        // comes back: the token kept in the frame's storage stands in for it.
        if let Some(token) = crate::embed::stored_author_token() {
            builder = builder.header(crate::embed::AUTHOR_HEADER, &token);
        }
        let resp = builder
            .json(&req)
            .map_err(|e| ApiError::Other(e.to_string()))?
            .send()
            .await
            .map_err(|e| ApiError::Other(format!("network error: {e}")))?;
        if let Some(token) = resp.headers().get(crate::embed::AUTHOR_HEADER) {
            crate::embed::store_author_token(&token);
        }
        if resp.status() == 429 {
            return Ok(PostResponse::error(
                &key,
                if req.preview {
                    PostAction::Preview
                } else {
                    PostAction::Post
                },
                "__all__",
                "You are posting too fast; wait a minute and try again.",
            ));
        }
        resp.json::<PostResponse>()
            .await
            .map_err(|e| ApiError::Other(format!("bad response ({}): {e}", resp.status())))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (key, req);
        Err(ApiError::Other("only available in the browser".into()))
    }
}

/// Sends JSON and reads JSON back; an error status becomes `Err` with the server's message.
#[cfg(feature = "hydrate")]
async fn send_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    method: &str,
    url: &str,
    body: &B,
) -> Result<T, ApiError> {
    let builder = match method {
        "DELETE" => gloo_net::http::Request::delete(url),
        _ => gloo_net::http::Request::post(url),
    };
    let resp = builder
        .json(body)
        .map_err(|e| ApiError::Other(e.to_string()))?
        .send()
        .await
        .map_err(|e| ApiError::Other(format!("network error: {e}")))?;
    if resp.status() == 404 {
        return Err(ApiError::NotFound);
    }
    if !resp.ok() {
        #[derive(serde::Deserialize)]
        struct Msg {
            error: String,
        }
        let msg = resp
            .json::<Msg>()
            .await
            .map(|m| m.error)
            .unwrap_or_else(|_| format!("the server answered {}", resp.status()));
        return Err(ApiError::Other(msg));
    }
    resp.json::<T>()
        .await
        .map_err(|e| ApiError::Other(e.to_string()))
}

#[cfg(not(feature = "hydrate"))]
async fn send_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    method: &str,
    url: &str,
    body: &B,
) -> Result<T, ApiError> {
    let _ = (method, url, body);
    Err(ApiError::Other("only available in the browser".into()))
}

#[cfg(feature = "hydrate")]
async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, ApiError> {
    let url = url.to_owned();
    send_wrapper::SendWrapper::new(async move {
        let resp = gloo_net::http::Request::get(&url)
            .send()
            .await
            .map_err(|e| ApiError::Other(format!("network error: {e}")))?;
        if resp.status() == 404 {
            return Err(ApiError::NotFound);
        }
        if !resp.ok() {
            return Err(ApiError::Other(format!(
                "server answered {}",
                resp.status()
            )));
        }
        resp.json::<T>()
            .await
            .map_err(|e| ApiError::Other(e.to_string()))
    })
    .await
}

#[cfg(not(feature = "hydrate"))]
async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, ApiError> {
    let _ = url;
    Err(ApiError::Other("only available in the browser".into()))
}
