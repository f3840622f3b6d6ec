//! Components of the thread page.

pub mod form;
pub mod staff;
pub mod tree;
