//! The civmesh node: the `civmesh` command line and the services behind it.
//!
//! `main.rs` only parses arguments and sets up tracing; everything else starts
//! from [`execute`].

pub mod api;
pub mod assessments;
pub mod audit;
pub mod bounded_chunks;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod corrections;
pub mod deletions;
pub mod group_commit;
pub mod private_file;
pub mod query;
pub mod records;
pub mod run;
pub mod security;
pub mod subject_requests;
pub mod swarm;
pub mod tls;

pub use cli::execute;
