//! Placeholder, replaced below in this change.
fn main() {}
