//! The rows of the route table, by capability.

use crate::api::tokens::Scope;
use crate::api::{audit, cluster, grants, openapi, policy, query, records, status};
use crate::corrections::http as corrections;

use super::{Body, Doc, Route, Verb, BINARY, CORRECTION_ERRORS, DOC, JSON, LOG_ERRORS};

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    Route {
        verb: Verb::Get,
        path: "/v1/status",
        scope: Scope::Read,
        handler: handler!(status::status),
        doc: Doc {
            summary: "This node and its view of the policy log",
            answer: "Node status",
            media: &[(JSON, "NodeStatus")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/metrics",
        scope: Scope::Read,
        handler: handler!(status::metrics),
        doc: Doc {
            summary: "Prometheus metrics (OpenMetrics text)",
            answer: "Metrics",
            media: &[("application/openmetrics-text", "Text")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/openapi.json",
        scope: Scope::Read,
        handler: handler!(openapi::serve),
        doc: Doc { summary: "This document", answer: "OpenAPI 3 document", media: &[(JSON, "Document")], ..DOC },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/certificate",
        scope: Scope::Read,
        handler: handler!(status::certificate),
        doc: Doc {
            summary: "This node's certificate",
            answer: "PEM",
            media: &[(JSON, "Certificate")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/cluster/initialize",
        scope: Scope::Cluster,
        handler: handler!(cluster::initialize),
        doc: Doc {
            summary: "Initialise the policy log with its founding voters (once, on one voter)",
            body: Body::Json { schema: "InitializeRequest", required: true },
            answer: "This node's view of the policy log",
            media: &[(JSON, "RaftStatus")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/cluster/learners",
        scope: Scope::Cluster,
        handler: handler!(cluster::add_learner),
        doc: Doc {
            summary: "Add a learner (on the leader); returns once it has caught up",
            body: Body::Json { schema: "PeerAddress", required: true },
            answer: "This node's view of the policy log",
            media: &[(JSON, "RaftStatus")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Put,
        path: "/v1/cluster/voters",
        scope: Scope::Cluster,
        handler: handler!(cluster::change_voters),
        doc: Doc {
            summary: "Make exactly these PeerIds the voters (on the leader)",
            body: Body::Json { schema: "VotersRequest", required: true },
            answer: "This node's view of the policy log",
            media: &[(JSON, "RaftStatus")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/commands",
        scope: Scope::Policy,
        handler: handler!(policy::submit_commands),
        doc: Doc {
            summary: "Commit signed policy commands in one log entry (forwarded to the leader)",
            body: Body::Json { schema: "CommandsRequest", required: true },
            answer: "One outcome per command",
            media: &[(JSON, "CommandsResponse")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/read-index",
        scope: Scope::Read,
        handler: handler!(status::read_index),
        doc: Doc {
            summary: "Linearizable read: wait until this replica has applied what the leader had committed",
            answer: "Indexes",
            media: &[(JSON, "ReadIndex")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/policy/summary",
        scope: Scope::Read,
        handler: handler!(policy::policy_summary),
        doc: Doc {
            summary: "Sizes of the replicated policy state and its hash",
            answer: "Summary",
            media: &[(JSON, "PolicySummary")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/policy/demands",
        scope: Scope::Read,
        handler: handler!(policy::policy_demands),
        doc: Doc { summary: "The demand list", answer: "Demands", media: &[(JSON, "Demands")], ..DOC },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/demands",
        scope: Scope::Read,
        handler: handler!(grants::demands),
        doc: Doc {
            summary: "The demand list: each demand's fields, purpose, basis, reason and status",
            description: "Status is waiting, granted (with the first grant answering it) or refused (with the \
                owner's reason).",
            answer: "Demands",
            media: &[(JSON, "DemandViews")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/catalog",
        scope: Scope::Read,
        handler: handler!(grants::catalog),
        doc: Doc {
            summary: "Every dataset with its owner, fields and classes, and which of this node's organisation's \
                grants (usable now) cover each field",
            answer: "The catalog",
            media: &[(JSON, "Catalog")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/demands",
        scope: Scope::Policy,
        handler: handler!(grants::file_demand),
        doc: Doc {
            summary: "File a demand for this node's organisation (signed by this node)",
            description: "A rejection by the policy log (an unknown dataset or field, a bad purpose) is a 409 \
                naming its code.",
            body: Body::Json { schema: "DemandSpec", required: true },
            answer: "The demand's number",
            media: &[(JSON, "DemandFiled")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/demands/{id}/refuse",
        scope: Scope::Policy,
        handler: handler!(grants::refuse_demand),
        doc: Doc {
            summary: "Refuse a demand no grant answers yet, with a reason (at the dataset's owner)",
            description: "A 409 naming the code if this node's organisation does not own the dataset, or the \
                demand is unknown, granted or refused already.",
            parameters: &["DemandId"],
            body: Body::Json { schema: "Reason", required: true },
            answer: "The demand's number",
            media: &[(JSON, "DemandFiled")],
            errors: LOG_ERRORS,
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/grants",
        scope: Scope::Policy,
        handler: handler!(grants::issue_grant),
        doc: Doc {
            summary: "Issue a grant (at the dataset's owner; signed by this node), unless it has warnings \
                and confirm is not set",
            description: "The answer carries the warnings (as POST /v1/grants/check) and the new grant's \
                number, or none while the warnings wait for confirm. A rejection by the policy log is a 409.",
            body: Body::Json { schema: "GrantRequest", required: true },
            answer: "The grant's number, if issued, and the warnings",
            media: &[(JSON, "GrantIssue")],
            errors: LOG_ERRORS,
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/grants/{id}/revoke",
        scope: Scope::Policy,
        handler: handler!(grants::revoke_grant),
        doc: Doc {
            summary: "Revoke a grant, with a reason (at the dataset's owner)",
            description: "A 409 naming the code if this node's organisation does not own the dataset, or the \
                grant is unknown or revoked already.",
            parameters: &["GrantId"],
            body: Body::Json { schema: "Reason", required: true },
            answer: "The grant's number",
            media: &[(JSON, "GrantRevoked")],
            errors: LOG_ERRORS,
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/grants",
        scope: Scope::Read,
        handler: handler!(grants::grants),
        doc: Doc {
            summary: "Every grant, revoked and expired ones included, in the order issued",
            answer: "Grants",
            media: &[(JSON, "Grants")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/grants/{id}",
        scope: Scope::Read,
        handler: handler!(grants::grant),
        doc: Doc {
            summary: "One grant",
            parameters: &["GrantId"],
            answer: "The grant",
            media: &[(JSON, "Grant")],
            errors: &[404],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/grants/check",
        scope: Scope::Read,
        handler: handler!(grants::check_grant),
        doc: Doc {
            summary: "What to confirm before issuing a grant: an ended or ending window, sensitive fields \
                without consent, more than its demand asked for",
            description: "Issuing it is a signed IssueGrant command (POST /v1/commands). An empty list: nothing \
                to confirm.",
            body: Body::Json { schema: "GrantSpec", required: true },
            answer: "The warnings",
            media: &[(JSON, "GrantWarnings")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/policy/match",
        scope: Scope::Read,
        handler: handler!(policy::policy_match),
        doc: Doc {
            summary: "Catalog match: demands without producer or grant, expiring grants, undemanded datasets",
            parameters: &["ExpiryDays"],
            answer: "Report",
            media: &[(JSON, "CatalogMatch")],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/datasets",
        scope: Scope::Read,
        handler: handler!(policy::datasets),
        doc: Doc { summary: "The catalog", answer: "Datasets", media: &[(JSON, "Datasets")], ..DOC },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/records",
        // Record values need more than `read`, which sees counts and
        // metadata only.
        scope: Scope::Records,
        handler: handler!(records::read_record),
        doc: Doc {
            summary: "One of this organisation's records and its history",
            parameters: &["Dataset", "RecordKey", "AtMs"],
            answer: "Record",
            media: &[(JSON, "RecordAnswer")],
            errors: &[403, 404, 500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/records/import",
        scope: Scope::Records,
        handler: handler!(records::import_records),
        doc: Doc {
            summary: "Import rows into a dataset this organisation owns",
            description: "Every row names every declared field; a key appears once per request. If any row is \
                refused (each reported by line) nothing is written, unless partial. A row equal to the record \
                now, or to what the last import wrote, writes no version and pushes nothing. Corrections \
                awaiting review on a changed record become superseded_by_import, or conflicts if a corrected \
                field changed.",
            parameters: &["Dataset"],
            body: Body::Json { schema: "ImportRequest", required: true },
            answer: "Written and refused rows",
            media: &[(JSON, "ImportResponse")],
            errors: &[403, 404, 507],
        },
    },
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
            summary: "The replicated access log (subjects only as keyed hashes)",
            answer: "Entries",
            media: &[(JSON, "AccessLog")],
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
            summary: "Final checkpoints of the access log's Merkle tree and the open one",
            description: "Each with its size, root, log index and cosigners.",
            answer: "Checkpoints",
            media: &[(JSON, "Checkpoints")],
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
            description: "From the policy log, after a linearizable read.",
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
