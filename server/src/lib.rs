//! Moderato's server: the engine (storage, comments, moderation) and its HTTP surface.

pub mod cli;
pub mod comment;
pub mod config;
pub mod demo;
pub mod engine;
pub mod http;
pub mod store;
pub mod token;
