//! Components of the thread page.

pub mod form;
pub mod live;
pub mod staff;
pub mod tree;
