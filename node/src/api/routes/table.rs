//! The rows of the route table for the node itself: status, cluster,
//! policy, demands and grants, impact assessments, the catalog, records,
//! subjects' requests, audit.

use crate::api::tokens::Scope;
use crate::api::{
    assessments, cluster, consents, deletions, grants, openapi, policy, records, status, subject_requests,
};

use super::{Body, Doc, Route, Verb, DOC, JSON, LOG_ERRORS};

/// The node's own routes.
pub const NODE_ROUTES: &[Route] = &[
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
                number, or none while the warnings wait for confirm. Before signing, the owner checks that a \
                grant of personal fields states a retention, and that one of sensitive fields names an impact \
                assessment this node keeps, for the grant's dataset and purpose, covering every sensitive \
                field granted: else a 400 naming what is missing. A rejection by the policy log is a 409.",
            body: Body::Json { schema: "GrantRequest", required: true },
            answer: "The grant's number, if issued, and the warnings",
            media: &[(JSON, "GrantIssue")],
            errors: &[400, 409, 500, 503],
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
        verb: Verb::Post,
        path: "/v1/consents",
        scope: Scope::Policy,
        handler: handler!(consents::record_consent),
        doc: Doc {
            summary: "Record a subject's consent, or its withdrawal, for a grantee and purpose (at the dataset's owner)",
            description: "The record key is hashed under the key this organisation shares with the grantee; \
                only the hash is logged. A withdrawal stops every further release relying on it and makes \
                every holder delete that subject's copies.",
            body: Body::Json { schema: "ConsentRequest", required: true },
            answer: "Recorded",
            media: &[(JSON, "ConsentRecorded")],
            errors: &[404, 409, 503],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/deletions",
        scope: Scope::Read,
        handler: handler!(deletions::deletions),
        doc: Doc {
            summary: "Who holds copies under which grant, the deletions they confirmed, and those overdue",
            answer: "Holdings and overdue deletions",
            media: &[(JSON, "Deletions")],
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
        verb: Verb::Post,
        path: "/v1/assessments",
        scope: Scope::Policy,
        handler: handler!(assessments::create),
        doc: Doc {
            summary: "Record a personal-information impact assessment (PIPL Art. 55-56), signed by this node",
            description: "Its digest (SHA-256 of the signed envelope's body) is what a grant of sensitive \
                fields names. Texts are trimmed and bounded in bytes of UTF-8, without control characters \
                (line breaks and tabs allowed in statements): a 400 names what is wrong. Kept at least three \
                years, never deleted by the node; a 507 when it keeps as many as it may.",
            body: Body::Json { schema: "Assessment", required: true },
            answer: "The assessment's digest",
            media: &[(JSON, "AssessmentCreated")],
            errors: &[400, 500, 507],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/assessments",
        scope: Scope::Read,
        handler: handler!(assessments::list),
        doc: Doc {
            summary: "The impact assessments this node keeps, the oldest first, without their statements",
            parameters: &["AssessmentDataset"],
            answer: "Assessments (at most 1,000)",
            media: &[(JSON, "AssessmentSummaries")],
            errors: &[500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/assessments/{id}",
        scope: Scope::Read,
        handler: handler!(assessments::show),
        doc: Doc {
            summary: "One impact assessment this node keeps, with its signed envelope",
            parameters: &["AssessmentId"],
            answer: "The assessment",
            media: &[(JSON, "AssessmentRecord")],
            errors: &[404, 500],
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
        handler: handler!(records::count_records),
        doc: Doc {
            summary: "How many records one of this organisation's datasets holds",
            description: "Only the dataset goes in the URL; read a record with POST /v1/records/show.",
            parameters: &["Dataset"],
            answer: "The count (record null, history empty)",
            media: &[(JSON, "RecordAnswer")],
            errors: &[403, 404, 500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/records/show",
        scope: Scope::Records,
        handler: handler!(records::show_record),
        doc: Doc {
            summary: "One of this organisation's records and its history",
            description: "The record key travels in the body, never in the URL: it may be personal data.",
            body: Body::Json { schema: "RecordLookup", required: true },
            answer: "The record (latest, or as of at_ms) and every version",
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
                field changed. 503: too many record writes wait to be pushed to subscribers; nothing of this \
                request was written.",
            parameters: &["Dataset"],
            body: Body::Json { schema: "ImportRequest", required: true },
            answer: "Written and refused rows",
            media: &[(JSON, "ImportResponse")],
            errors: &[403, 404, 503, 507],
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/subject-requests",
        scope: Scope::Query,
        handler: handler!(subject_requests::file),
        doc: Doc {
            summary: "Take a resident's request (access, correction, deletion) and file it at the dataset's owner",
            description: "PIPL Art. 44-47. The record key travels in the body only; the log keeps its keyed \
                hash, the kind, the dataset and the deadline (deadline_days, else the node's \
                [subject_requests] deadline_days, 15 by default). The owner first checks the whole request \
                as the log will (a refusal never depends on the record), then logs it only if it holds the \
                record: a 404 record_unknown logs nothing, and counts as a security event for the intake \
                at the owner, which takes [limits] subject_requests_per_peer_per_minute from each intake. \
                A request carrying a correction submits it too: it needs the corrections scope besides this \
                one (403 without it) and names who took it (operator; required with the admin token). \
                503: the owner is unreachable, or it keeps as many keys for this intake as it may.",
            body: Body::Json { schema: "SubjectRequestIntake", required: true },
            answer: "The request's id and deadline",
            media: &[(JSON, "SubjectRequestFiled")],
            errors: &[400, 404, 409, 500, 502, 503],
            ..DOC
        },
    },
    Route {
        verb: Verb::Get,
        path: "/v1/subject-requests",
        scope: Scope::Read,
        handler: handler!(subject_requests::list),
        doc: Doc {
            summary: "The open subjects' requests this organisation answers or took, and those it answered",
            answer: "Open requests (at most 1,000, the earliest deadline first) and answered counts",
            media: &[(JSON, "SubjectRequestList")],
            errors: &[500],
            ..DOC
        },
    },
    Route {
        verb: Verb::Post,
        path: "/v1/subject-requests/{id}/answer",
        scope: Scope::Policy,
        handler: handler!(subject_requests::answer),
        doc: Doc {
            summary: "Answer an open subject request at the dataset's owner: done, or refused with why",
            description: "Done acts first, on the kept record key only if it hashes to the request's logged \
                subject (else 409 record_key_mismatch): an access request's report (every access to the \
                record in this replica's access log, newest first, saying from which entry it starts and \
                whether it is complete) is returned; a deletion request's record is deleted from this \
                node's store (every version, then compaction; 409 record_gone, deleting nothing, if it is \
                no longer there); a correction's answer records the decision (the correction itself \
                travels through the correction loop). Then the answer is logged and the record key \
                forgotten.",
            parameters: &["SubjectRequestId"],
            body: Body::Json { schema: "SubjectRequestAnswer", required: true },
            answer: "The answer, with the report or the versions deleted",
            media: &[(JSON, "SubjectRequestAnswered")],
            errors: &[400, 404, 409, 500, 503],
        },
    },
];
