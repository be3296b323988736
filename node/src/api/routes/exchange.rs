//! The rows of the route table for what moves between organisations:
//! queries, listings, subscriptions, the access log, corrections and the
//! evaluation of how departments serve them.

use crate::api::tokens::Scope;
use crate::api::{audit, query, received};
use crate::corrections::http as corrections;

use super::{Body, Doc, Route, Verb, BINARY, CORRECTION_ERRORS, DOC, JSON, LOG_ERRORS};

/// The routes of exchanges between organisations.
pub const EXCHANGE_ROUTES: &[Route] = &[
    Route {
        verb: Verb::Post,
        path: "/v1/query",
        scope: Scope::Query,
        handler: handler!(query::query_owner),
        doc: Doc {
            summary: "Ask a dataset's owner for records; the access is logged before anything is released",
            body: Body::Json { schema: "QuerySpec", required: true },
            answer: "{\"Released\": {records, not_found, access_log_position}} or \
                {\"Denied\": {reason, access_log_position}}",
            media: &[(JSON, "QueryAnswer")],
            errors: &[400, 404, 409, 502, 503],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/query/list",
        scope: Scope::Query,
        handler: handler!(query::list_records),
        doc: Doc {
            summary: "List, a page at a time, the records a grant lets this node see; each page is logged before it is released",
            description: "Filters are equality or prefix conditions on the dataset's indexed scope fields that the \
                grant gives unmasked. Pass the answer's next_cursor to get the next page; the last page has none. \
                Fields and purpose default to the grant's. A filter the owner cannot serve, a page over the owner's \
                bound, and a forged, altered or out-of-date cursor are 400s naming what is wrong.",
            body: Body::Json { schema: "ListSpec", required: true },
            answer: "{\"Page\": {records, next_cursor, access_log_position}} or \
                {\"Denied\": {reason, access_log_position}}",
            media: &[(JSON, "ListAnswer")],
            errors: &[400, 404, 409, 502, 503],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/access-log",
        scope: Scope::Read,
        handler: handler!(query::access_log),
        doc: Doc {
            summary: "The access log entries that concern this node's organisation, a page at a time",
            description: "Entries from `from` in log order that concern this node's organisation (its own \
                requests and accesses to its own datasets; an auditor's node: every entry), subjects only \
                as keyed hashes. `limit` (1..=1000) positions are looked at, and about 4 MiB returned; pass \
                next_from as `from` for the next page, absent at the end. `total` counts the whole log. A \
                node that joined by snapshot holds the entries after it only, and starts there.",
            parameters: &["AccessLogFrom", "AccessLogLimit"],
            answer: "A page of entries",
            media: &[(JSON, "AccessLogPage")],
            errors: &[500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/subscriptions",
        scope: Scope::Query,
        handler: handler!(query::subscribe),
        doc: Doc {
            summary: "Subscribe to a dataset's changes under a grant",
            description: "The owner pushes new versions, masked per the grant, each push logged first.",
            body: Body::Json { schema: "SubscriptionSpec", required: true },
            answer: "The subscription id",
            media: &[(JSON, "Subscription")],
            errors: &[400, 404, 409, 502, 503],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/subscriptions/{id}",
        scope: Scope::Query,
        handler: handler!(query::subscription),
        doc: Doc {
            summary: "One of this node's subscriptions: its initial listing's progress, its copy and its pushes",
            parameters: &["SubscriptionId"],
            answer: "The subscription's state",
            media: &[(JSON, "SubscriptionView")],
            errors: &[400, 404],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/subscriptions/{id}/records",
        scope: Scope::Query,
        handler: handler!(query::subscription_records),
        doc: Doc {
            summary: "A page of a subscription's copy: each subject once, at the newest version received",
            parameters: &["SubscriptionId"],
            body: Body::Json { schema: "CopyPageRequest", required: true },
            answer: "Records, and where the next page starts",
            media: &[(JSON, "CopyPage")],
            errors: &[400, 404],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/received",
        scope: Scope::Query,
        handler: handler!(received::received),
        doc: Doc {
            summary: "What other owners released to this node and it holds: each subscription's copy and the answers it kept, under their grants",
            answer: "Sources of received copies",
            media: &[(JSON, "ReceivedSources")],
            errors: &[500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/received/{id}/records",
        scope: Scope::Query,
        handler: handler!(query::subscription_records),
        doc: Doc {
            summary: "A page of one source's received copies: each subject once, at the newest version received",
            parameters: &["SubscriptionId"],
            body: Body::Json { schema: "CopyPageRequest", required: true },
            answer: "Records, and where the next page starts",
            media: &[(JSON, "CopyPage")],
            errors: &[400, 404],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/subscriptions/updates",
        scope: Scope::Query,
        handler: handler!(query::subscription_updates),
        doc: Doc {
            summary: "Pushes this node received as a subscriber, oldest first",
            answer: "Pushes",
            media: &[(JSON, "Pushes")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/audit/commands",
        scope: Scope::Audit,
        handler: handler!(audit::audit_commands),
        doc: Doc {
            summary: "The archive of every applied policy command with its outcome, in log order",
            description: "For `civmesh audit export`: the canonical bincode encoding of a list of \
                ArchivedCommand (docs/audit-bundle.md).",
            parameters: &["AuditFrom", "AuditLimit"],
            answer: "Archived commands",
            media: &[(BINARY, "Binary")],
            errors: &[500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/audit/checkpoints",
        scope: Scope::Audit,
        handler: handler!(audit::audit_checkpoints),
        doc: Doc {
            summary: "The access log's Merkle tree: its size and root now, the latest final checkpoint, a page \
                of the final ones and the open one",
            description: "Each checkpoint with its size, root, log index and cosigners. Final checkpoints are \
                numbered from 0; pass next_from as `from` for the next page, absent at the end. A node that \
                joined by snapshot holds those after it only, and its pages start there.",
            parameters: &["CheckpointsFrom", "CheckpointsLimit"],
            answer: "Checkpoints",
            media: &[(JSON, "Checkpoints")],
            errors: &[500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/audit/proofs/inclusion",
        scope: Scope::Audit,
        handler: handler!(audit::inclusion_proof),
        doc: Doc {
            summary: "An RFC 6962 proof that a leaf of the access log's tree is in the tree of a size",
            description: "Read from this replica's stored tree in O(log n). `tree_size` defaults to the latest \
                final checkpoint's (the applied tree's before any). The leaf's value is the access entry's \
                commitment (docs/audit-bundle.md). A leaf outside the tree is a 400; a size past what this \
                replica applied, or a leaf before it joined by snapshot, is a 404.",
            parameters: &["ProofLeaf", "ProofTreeSize"],
            answer: "The proof",
            media: &[(JSON, "InclusionProof")],
            errors: &[400, 404, 500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/audit/proofs/consistency",
        scope: Scope::Audit,
        handler: handler!(audit::consistency_proof),
        doc: Doc {
            summary: "An RFC 6962 proof that the access log's tree of one size is a prefix of the tree of a later size",
            description: "Read from this replica's stored tree in O(log n). `tree_size` defaults to the latest \
                final checkpoint's (the applied tree's before any); `from` is at least 1 and at most \
                `tree_size` (else a 400). A size past what this replica applied, or before it joined by \
                snapshot, is a 404.",
            parameters: &["ProofFrom", "ProofTreeSize"],
            answer: "The proof",
            media: &[(JSON, "ConsistencyProof")],
            errors: &[400, 404, 500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/corrections",
        scope: Scope::Corrections,
        handler: handler!(corrections::submit),
        doc: Doc {
            summary: "Sign a correction with this node's key, keep it in the outbox and deliver it to the owner",
            description: "The same content on the same base version again returns the existing correction's id.",
            body: Body::Json { schema: "CorrectionSpec", required: true },
            answer: "The correction id",
            media: &[(JSON, "Submitted")],
            errors: CORRECTION_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/corrections",
        scope: Scope::Corrections,
        handler: handler!(corrections::list),
        doc: Doc {
            summary: "This node's corrections (inbox and outbox), newest first",
            parameters: &["CorrectionStatus"],
            answer: "Corrections",
            media: &[(JSON, "Corrections")],
            errors: CORRECTION_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/corrections/stats",
        scope: Scope::Read,
        handler: handler!(corrections::stats),
        doc: Doc {
            summary: "Per owner and dataset: corrections by stage, p50/p90 turnaround, acceptance rate",
            description: "From the policy log, after a linearizable read: statistics every replica keeps as \
                each event is applied. A percentile is the upper bound of its fixed histogram bucket, at most \
                an eighth above the true value.",
            answer: "Statistics",
            media: &[(JSON, "CorrectionStats")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/corrections/attachments",
        scope: Scope::Corrections,
        handler: handler!(corrections::upload_attachment),
        doc: Doc {
            summary: "Keep a file (a photo or PDF, the raw body) at this node by its SHA-256",
            description: "For a correction to name in attachment_sha256; at most attachment_bytes_max bytes \
                ([corrections] in civmesh.toml), else 413 and nothing kept.",
            body: Body::Attachment,
            answer: "Kept",
            media: &[(JSON, "Uploaded")],
            errors: CORRECTION_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/evaluation",
        scope: Scope::Read,
        handler: handler!(corrections::evaluation),
        doc: Doc {
            summary: "The evaluation of departments from the policy log; equal on every node",
            description: "Per owner, dataset and time bucket (Asia/Shanghai): turnaround p50/p90 to the final \
                outcome (applied or rejected by the owner), acceptance rate, automatic rejections counted \
                against the submitter, conflicts, backlog and its oldest age, demand-to-grant time and demands \
                waiting; per street: submitted, share accepted and mistakes. A period of more buckets than the \
                evaluation allows is a 400.",
            parameters: &["EvaluationFrom", "EvaluationTo", "EvaluationBucket"],
            answer: "The evaluation: from, to, bucket, departments (rows), streets (rows), notes",
            media: &[(JSON, "Evaluation")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/corrections/{id}",
        scope: Scope::Corrections,
        handler: handler!(corrections::show),
        doc: Doc {
            summary: "One correction; at the owner, beside the record's base and current versions",
            parameters: &["CorrectionId"],
            answer: "The correction",
            media: &[(JSON, "Correction")],
            errors: CORRECTION_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/corrections/{id}/accept",
        scope: Scope::Review,
        handler: handler!(corrections::accept),
        doc: Doc {
            summary: "Accept a correction awaiting review (or superseded by an import)",
            description: "It is applied on the current version unless a corrected field changed since its base \
                version (then a conflict), and the outcome sent. The operator is recorded in the signed event.",
            parameters: &["CorrectionId"],
            body: Body::Json { schema: "Acceptance", required: true },
            answer: "The correction after the decision",
            media: &[(JSON, "Correction")],
            errors: CORRECTION_ERRORS,
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/corrections/{id}/reject",
        scope: Scope::Review,
        handler: handler!(corrections::reject),
        doc: Doc {
            summary: "Reject a correction awaiting review, with a reason for the submitter",
            description: "The operator is recorded in the signed event.",
            parameters: &["CorrectionId"],
            body: Body::Json { schema: "Rejection", required: true },
            answer: "The correction after the decision",
            media: &[(JSON, "Correction")],
            errors: CORRECTION_ERRORS,
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/corrections/{id}/attachments/{index}",
        // Attachments are evidence for the reviewer, and may show people.
        scope: Scope::Review,
        handler: handler!(corrections::attachment),
        doc: Doc {
            summary: "One attachment of a correction, as this node holds it, with the content type its bytes show",
            description: "At the owner: whole and checked against the signed SHA-256. A 404 if there is no such \
                correction or attachment here, or it has not (all) arrived.",
            parameters: &["CorrectionId", "AttachmentIndex"],
            answer: "The bytes",
            media: &[
                ("image/jpeg", "Binary"),
                ("image/png", "Binary"),
                ("application/pdf", "Binary"),
                (BINARY, "Binary"),
            ],
            errors: CORRECTION_ERRORS,
            ..DOC
        },
    },
];
