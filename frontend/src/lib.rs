//! The browser entry points, one per build (see `Cargo.toml`'s features):
//! `hydrate()` hydrates the whole Leptos app (staff, and every page but a reader's thread
//! page); the `reader` module is the light client of a reader's thread page.

// The thread view's nested view types (comment, slots, queue) are deep; the default limit
// of 128 is not enough to compute their layout in the wasm build.
#![recursion_limit = "512"]

#[cfg(feature = "reader")]
pub mod reader;

/// Called by the generated JS once the wasm module is loaded.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
