//! End-to-end tests live in tests/tests/. This library holds what several
//! of them share: the console's browser (`browser`), the policy log's
//! waits and bulk access records (`policy_log`), a street's subscription
//! (`subscriptions`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod browser;
pub mod policy_log;
pub mod subscriptions;
