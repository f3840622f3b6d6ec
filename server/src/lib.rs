//! Moderato's server: the engine (storage, comments, moderation) and its HTTP surface.

pub mod auth;
pub mod cli;
pub mod comment;
pub mod config;
pub mod demo;
pub mod engine;
pub mod events;
pub mod http;
pub mod live;
pub mod moderation;
pub mod spam;
pub mod store;
pub mod token;
pub mod transfer;
