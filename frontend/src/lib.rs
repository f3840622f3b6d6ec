//! The browser entry point: hydrates the server-rendered page.

// The thread view's nested view types (comment, slots, queue) are deep; the default limit
// of 128 is not enough to compute their layout in the wasm build.
#![recursion_limit = "512"]

/// Called by the generated JS once the wasm module is loaded.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
