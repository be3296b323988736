//! civmesh policy: what the federation has agreed, and what it allows.
//!
//! - [`model`]: members, datasets and schemas (PIPL field classes), the
//!   demand and negative lists, grants, consents.
//! - [`command`]: the signed commands the policy log carries.
//! - [`audit`]: the access log's Merkle tree, checkpoints, the audit bundle
//!   and its offline verification by replay.
//! - [`correction`]: correction requests, their lifecycle in the log, and
//!   the per-owner statistics.
//! - [`state`]: [`PolicyState`] and its deterministic `apply`, which checks
//!   every signature and the signer's authority at apply time.
//! - [`decide`](mod@decide): the deny-by-default access decision.
//! - [`deletion`]: retention on grants, and the holders' deletion receipts.
//! - [`evaluation`]: how each department serves the streets, per dataset
//!   and time bucket, from the log alone.
//! - [`report`]: the `catalog match` report.
//! - [`signatures`]: every signature a command carries, checked singly or
//!   in ZIP 215 batches.
//! - [`hex_digest`]: digests as hex in JSON, raw in the canonical encoding.
//! - [`subject_request`]: the subject's own requests (access, correction,
//!   deletion), metadata only.
//! - [`subject_keys`]: pairwise subject keys, so only the owner, the
//!   requester and an auditor can link an access to a citizen.
//! - `fixtures` (feature `fixtures`): the demo city's organisations and
//!   datasets, for tests, benchmarks and the demo.
//!
//! Pure and synchronous: no I/O, no async runtime, no clock (time is passed
//! in), so every replica and every auditor computes the same answers.

pub mod access;
pub mod audit;
pub mod command;
pub mod correction;
pub mod correction_tally;
pub mod decide;
pub mod deletion;
pub mod evaluation;
mod field_value;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod hex_digest;
pub mod model;
mod reason_code;
pub mod report;
pub mod signatures;
pub mod state;
pub mod subject_keys;
pub mod subject_request;

pub use access::{AccessKind, AccessLogEntry, AccessOutcome, AccessRecord, QueryHeader, SubjectRelease};
pub use command::{Command, CommandKind, DatasetSpec, DemandSpec, GrantSpec, SignedCommand};
pub use correction::CorrectionReasonCode;
pub use decide::{
    decide, AccessRequest, ConsentCoverage, Decision, FieldAction, ReasonCode, RecordFacts, RecordPlan,
};
pub use deletion::{DeletionCause, DeletionReceipt, Retention};
pub use report::{catalog_match, CatalogMatch};
pub use state::{
    Appended, Applied, CorrectionClearance, CorrectionRefusal, DeletionDue, DemandStatus, GrantWarning,
    PolicyState, Rejection, RejectionCode, GRANT_EXPIRY_WARNING_DAYS,
};
