//! Small helpers over web-sys and js-sys: elements, JSON values read by key, `fetch`, timers.
//!
//! JSON goes through the browser's own `JSON.parse`/`JSON.stringify` and is read with
//! `Reflect`, not serde: serde_json and derived deserialisers would be most of this wasm.

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, Element, Window};

pub fn window() -> Option<Window> {
    web_sys::window()
}

pub fn document() -> Option<Document> {
    window()?.document()
}

/// A new element with a class (none when `class` is empty).
pub fn el(doc: &Document, tag: &str, class: &str) -> Option<Element> {
    let e = doc.create_element(tag).ok()?;
    if !class.is_empty() {
        e.set_class_name(class);
    }
    Some(e)
}

/// A new element holding `text` as text (never parsed as markup).
pub fn text_el(doc: &Document, tag: &str, class: &str, text: &str) -> Option<Element> {
    let e = el(doc, tag, class)?;
    e.set_text_content(Some(text));
    Some(e)
}

/// The first element under `root` matching `selector`.
pub fn find(root: &Element, selector: &str) -> Option<Element> {
    root.query_selector(selector).ok().flatten()
}

/// The direct child of `parent` carrying `class`.
pub fn child_with_class(parent: &Element, class: &str) -> Option<Element> {
    let kids = parent.children();
    (0..kids.length())
        .filter_map(|i| kids.item(i))
        .find(|k| k.class_list().contains(class))
}

/// Sets or clears a class.
pub fn set_class(e: &Element, class: &str, on: bool) {
    let _ = e.class_list().toggle_with_force(class, on);
}

/// Scrolls an element into the middle of the view, smoothly.
pub fn scroll_to(e: &Element) {
    let opts = web_sys::ScrollIntoViewOptions::new();
    opts.set_behavior(web_sys::ScrollBehavior::Smooth);
    opts.set_block(web_sys::ScrollLogicalPosition::Center);
    e.scroll_into_view_with_scroll_into_view_options(&opts);
}

/// `value[key]`, undefined when absent.
pub fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

pub fn get_str(value: &JsValue, key: &str) -> Option<String> {
    get(value, key).as_string()
}

/// A JSON number that is an id or a count (JSON numbers are f64 in the browser).
pub fn get_i64(value: &JsValue, key: &str) -> Option<i64> {
    get(value, key).as_f64().map(|n| n as i64)
}

pub fn get_bool(value: &JsValue, key: &str) -> bool {
    get(value, key).as_bool().unwrap_or(false)
}

/// A JSON object under construction.
pub struct Json(Object);

impl Json {
    pub fn new() -> Self {
        Json(Object::new())
    }

    pub fn set(self, key: &str, value: impl Into<JsValue>) -> Self {
        let _ = Reflect::set(&self.0, &JsValue::from_str(key), &value.into());
        self
    }

    pub fn into_value(self) -> JsValue {
        self.0.into()
    }

    pub fn text(&self) -> String {
        js_sys::JSON::stringify(&self.0)
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default()
    }
}

pub fn parse_json(text: &str) -> Option<JsValue> {
    js_sys::JSON::parse(text).ok()
}

/// What came back from a request: the status, the JSON body (null when it was not JSON)
/// and one response header asked for.
pub struct Reply {
    pub status: u16,
    pub body: JsValue,
    pub header: Option<String>,
}

/// `fetch` with an optional JSON body and extra headers; `want_header` names a response
/// header to hand back. Errors are sentences for people (the network failed).
pub async fn fetch(
    method: &str,
    url: &str,
    body: Option<String>,
    headers: &[(&str, String)],
    want_header: Option<&str>,
) -> Result<Reply, String> {
    let win = window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let h = web_sys::Headers::new().map_err(|_| "headers")?;
    let _ = h.set("accept", "application/json");
    if let Some(body) = body {
        let _ = h.set("content-type", "application/json");
        init.set_body(&JsValue::from_str(&body));
    }
    for (k, v) in headers {
        let _ = h.set(k, v);
    }
    init.set_headers(&h);
    let resp = JsFuture::from(win.fetch_with_str_and_init(url, &init))
        .await
        .map_err(|_| "network error".to_owned())?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| "bad response")?;
    let header = want_header.and_then(|name| resp.headers().get(name).ok().flatten());
    let body = match resp.json() {
        Ok(p) => JsFuture::from(p).await.unwrap_or(JsValue::NULL),
        Err(_) => JsValue::NULL,
    };
    Ok(Reply {
        status: resp.status(),
        body,
        header,
    })
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        if let Some(w) = window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Percent-encodes a path segment or query value, as the server's `encode_key` does.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}
