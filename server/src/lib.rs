//! Moderato's server: the engine (storage, comments, moderation, spam filter, live updates)
//! and its doors: the HTTP router and the command line.
//!
//! The public surface is small on purpose: [`Engine`] and its use cases (plain Rust), the
//! HTTP [`http::router`], the CLI ([`cli::run`]), the configuration, and two reusable
//! parts with no knowledge of the rest: the live hub ([`live`], used by `moderato-load`) and
//! the spam filter's core ([`spam`]). Everything else is private to the crate, so the layers
//! can only meet where docs/architecture.md says they do.

mod auth;
pub mod cli;
mod comment;
pub mod config;
mod engine;
mod error;
mod events;
mod filter;
pub mod http;
pub mod live;
mod mail;
mod moderation;
mod net;
pub mod spam;
mod store;
#[cfg(test)]
mod test_rng;
mod token;
pub mod transfer;
mod webhook;

pub use auth::{Staff, Viewer};
pub use comment::render_markdown;
pub use engine::{Engine, LiveCredentials, PostOutcome, Posted, ThreadSpec, valid_thread_key};
pub use error::{Error, FieldErrors};
pub use store::now_ms;
