//! Components of the thread page and the one comment renderer they share with the queue.

pub mod comment;
pub mod form;
pub mod live;
pub mod staff;
pub mod tree;
