//! The access log's audit side on a running node: the checkpoint task that
//! cosigns RFC 6962 roots.

pub mod checkpoints;
pub mod seen;
