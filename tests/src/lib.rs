//! End-to-end tests live in tests/tests/. This library holds what several
//! of them share: the console's browser (`browser`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod browser;
