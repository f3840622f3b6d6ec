//! The `/ws` messages as WebSocket frames. The messages themselves are defined once, in
//! [`app::live`]; this module turns them into axum frames.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};

pub use app::live::{ClientMessage, ErrorCode, MAX_THREAD_KEY_BYTES, ServerMessage};

/// A server message as a WebSocket text frame.
pub(crate) trait ToFrame {
    /// The encoded text, shareable between subscribers (cloning `Utf8Bytes` bumps a count).
    fn encode_bytes(&self) -> Utf8Bytes;
    /// This message as a text frame.
    fn to_message(&self) -> Message {
        Message::Text(self.encode_bytes())
    }
}

impl ToFrame for ServerMessage {
    fn encode_bytes(&self) -> Utf8Bytes {
        Utf8Bytes::from(self.encode())
    }
}

/// A close frame with a code and a short reason.
pub fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}
