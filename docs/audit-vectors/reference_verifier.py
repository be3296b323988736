#!/usr/bin/env python3
"""Independent reference verifier for civmesh audit bundles, format version 3.

Written from the documents alone: docs/audit-bundle.md ("main"), Appendix A
docs/audit-bundle-layouts.md ("A") and Appendix B docs/audit-bundle-rules.md
("B"). Python 3 standard library only; Ed25519 (RFC 8032) and the DER reading
are implemented here. Operators' commands (B 2.5) and grants' retention,
impact assessments and deletion receipts (A 5.3, B 5.9 step 9, B 5.19;
main section 9), then format version 3 (a receipt's earliest copy held and
the bounds on its times), then the subjects' requests (A 5.2-5.3, B 5.20), then
the protection a republication keeps (B 5.4 step 7) and the open requests per
intake (B 5.20 step 5), were added later, from the same documents.

Usage:
  reference_verifier.py VECTOR_DIR
      run every vector of VECTOR_DIR/vectors.json against VECTOR_DIR/ca.pem;
      exit 0 only if every result agrees with the expected one.
  reference_verifier.py BUNDLE --ca CA.pem [--seen SIZE:ROOTHEX ...] [--require-anchored]
      verify one bundle and print a JSON result; exit 0 only if it verifies.
"""

import base64
import calendar
import hashlib
import json
import os
import sys

# ---------------------------------------------------------------------------
# Constants (B section 0; A section 2; main section 5)
# ---------------------------------------------------------------------------
SKEW_MS = 300_000                      # COMMAND_SKEW_MS_MAX
NONCES_MAX = 1_000_000                 # COMMAND_NONCES_MAX
NONCES_PER_SIGNER_MAX = 50_000         # COMMAND_NONCES_PER_SIGNER_MAX
CHECKPOINT_OPEN_MS_MAX = 300_000
NAME_BYTES_MAX = 128
REASON_BYTES_MAX = 1024
SCHEMA_FIELDS_MAX = 256
SCOPE_FIELDS_MAX = 8
QUERY_SUBJECTS_MAX = 1000
CORRECTION_CHANGES_MAX = 64
CORRECTION_TEXT_BYTES_MAX = 4096
CORRECTION_CLOSED_KEPT_MS = 86_400_000
CORRECTIONS_OPEN_PER_SUBMITTER_MAX = 10_000   # B 5.14 step 7.4
CORRECTIONS_RELEASED_PER_COMMAND_MAX = 8
CERTIFICATE_BYTES_MAX = 16_384
ENVELOPE_BYTES_MAX = 4_194_304
ORG_BYTES_MAX = 128
OPERATOR_NAME_BYTES_MAX = 128          # B 2.5
OPERATOR_WRAPPERS_MAX = 2              # A 5.2 (ByOperator), B 2.5
HEADER_BYTES_MAX = 1_048_576           # A section 2
COMMAND_BYTES_MAX = ENVELOPE_BYTES_MAX + 1024
MAGIC = b"CIVAUDIT"
FORMAT_VERSION = 3                     # BUNDLE_FORMAT_VERSION (main section 3, section 9)
ENVELOPE_PREFIX = b"civmesh/envelope/v1\x00"          # main section 4, A 4.4
DIGEST_PREFIX = b"civmesh/applied-digest/v1\x00"      # B 2.4

# RejectionCode indices (A section 7, B 6.1)
REJECTION_CODES = [
    "signature_invalid", "future_dated", "stale", "replayed", "signer_unknown",
    "signer_revoked", "not_authorised", "genesis_order", "certificate_invalid",
    "already_member", "member_unknown", "dataset_unknown", "field_unknown",
    "grant_unknown", "grant_already_revoked", "demand_unknown",
    "negative_list_entry_unknown", "negative_listed", "dataset_not_shared",
    "invalid_argument", "overloaded", "permit_not_justified",
    "correction_unknown", "correction_duplicate", "correction_stage_out_of_order",
    "auto_accept_rule_unknown", "checkpoint_duplicate", "checkpoint_conflict",
    "entry_time_went_back", "signer_certificate_expired",
    "decision_time_out_of_window", "correction_not_granted",
    "retention_missing", "assessment_missing", "deletion_not_holder",
    "deletion_not_due", "deletion_duplicate", "subject_request_unknown",
    "subject_request_duplicate",
]
# CorrectionReasonCode names (A 5.4 / section 6, B 6.3): a string, "" = none
CORRECTION_REASON_CODES = {
    "", "rejected_by_reviewer", "invalid_request", "dataset_unknown",
    "dataset_not_visible", "field_unknown", "subject_key_immutable",
    "field_not_visible", "field_masked", "record_out_of_scope",
    "record_unknown", "wrong_type",
}
# Command variant indices (A 5.1 / section 6)
GENESIS, ADMIT, REVOKE_MEMBER, PUBLISH, ADD_NL, REMOVE_NL, FILE_DEMAND, \
    ISSUE_GRANT, REVOKE_GRANT, RECORD_ACCESS, RECORD_PUSH, RECORD_CONSENT, \
    RECORD_CORRECTION, SET_AUTO, COSIGN, REMOVE_AUTO, COMMIT_SECRET, \
    FILE_DEMAND_REASON, REFUSE_DEMAND, RECORD_LISTING, BY_OPERATOR, \
    CONFIRM_DELETION, FILE_SUBJECT_REQUEST, ANSWER_SUBJECT_REQUEST = range(24)
COMMAND_VARIANTS = 24
ACCESS_KINDS = {RECORD_ACCESS: "query", RECORD_PUSH: "push", RECORD_LISTING: "listing"}
# The commands an operator may make (B 2.5): a wrapper of any other is refused
OPERATOR_MAY_MAKE = {PUBLISH, ADD_NL, REMOVE_NL, FILE_DEMAND, FILE_DEMAND_REASON,
                     REFUSE_DEMAND, ISSUE_GRANT, REVOKE_GRANT, RECORD_CONSENT, SET_AUTO,
                     REMOVE_AUTO, REVOKE_MEMBER, ANSWER_SUBJECT_REQUEST}
# Enum sizes and a few indices (A section 6)
SHARING_UNCONDITIONAL, SHARING_NOT_SHARED = 0, 2
FIELD_TYPE_TEXT = 0
CLASS_PUBLIC, CLASS_PERSONAL, CLASS_SENSITIVE = 0, 2, 3
LEGAL_BASIS_CONSENT = 0
STAGES = ["submitted", "delivered", "accepted", "rejected", "conflict",
          "applied", "outcome_delivered"]
OWNER_DECISIONS = {"accepted", "rejected", "conflict", "applied"}      # B 5.14
OWNER_OUTCOMES = {"rejected", "conflict", "applied"}                   # leaves
STAGE_MAY_FOLLOW = {"delivered": {"submitted"}, "accepted": {"delivered"},
                    "rejected": {"delivered"}, "conflict": {"delivered"},
                    "applied": {"accepted"},
                    "outcome_delivered": {"rejected", "conflict", "applied"}}
# Retention bounds (B section 0, 5.9): keep 1 s .. 10 years, delete within 1 s .. 30 days
DAY_MS = 86_400_000
RETENTION_MS_MIN = 1_000
RETENTION_KEEP_MS_MAX = 10 * 365 * DAY_MS
DELETION_WITHIN_MS_MAX = 30 * DAY_MS
DELETION_WITHIN_MS_DEFAULT = DAY_MS
# DeletionCause indices (A 5.3)
RETENTION_ENDED, GRANT_ENDED, CONSENT_WITHDRAWN = range(3)
# Subjects' requests (B section 0, 5.20): a deadline 1 to 60 days after filing
SUBJECT_REQUEST_DEADLINE_MS_MIN = DAY_MS
SUBJECT_REQUEST_DEADLINE_MS_MAX = 60 * DAY_MS
SUBJECT_REQUESTS_OPEN_MAX = 100_000
SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX = 1_000   # B 5.20 step 5: per intake organisation
SUBJECT_REQUEST_KINDS = 3               # 0 access, 1 correction, 2 deletion (A 5.3)
OUTCOME_DONE, OUTCOME_REFUSED = range(2)  # SubjectRequestOutcome (A 5.2)
# Applied variants (A section 7, B 2.4)
DONE, DEMAND_FILED, GRANT_ISSUED, ACCESS_LOGGED, CORRECTION_LOGGED = range(5)

class Undecodable(Exception):
    """Bytes that do not decode canonically (A section 1)."""

class Reject(Exception):
    """A rejection by apply, with its RejectionCode name (B 6.1)."""

    def __init__(self, code, detail=""):
        super().__init__(code)
        self.code, self.detail = code, detail

class BundleError(Exception):
    """An error of main section 7: no report."""

    def __init__(self, name, detail=""):
        super().__init__(name)
        self.name, self.detail = name, detail

def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()

def u64le(v):
    return v.to_bytes(8, "little")

# ---------------------------------------------------------------------------
# Ed25519 verification, RFC 8032 section 5.1 (reference-code style)
# ---------------------------------------------------------------------------
P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D_CONST = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

def _pt_add(p1, p2):                    # extended coordinates, RFC 8032 5.1.4
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D_CONST % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)

def _pt_mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _pt_add(q, pt)
        pt = _pt_add(pt, pt)
        s >>= 1
    return q

def _pt_compress(pt):
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")

def _recover_x(y, sign):                # RFC 8032 5.1.3, as ZIP 215 reads it
    x2 = (y * y - 1) * pow(D_CONST * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return 0                        # ZIP 215: "-0" (x = 0, sign 1) is accepted
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x

def _pt_decompress(s):
    """ZIP 215: any 32 bytes whose y (the low 255 bits, reduced mod p, so
    non-canonical encodings too) is on the curve."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y = (y & ((1 << 255) - 1)) % P
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)

def _pt_neg(pt):
    return ((P - pt[0]) % P, pt[1], pt[2], (P - pt[3]) % P)

def _is_identity(pt):
    x, y, z, _ = pt
    return x % P == 0 and (y - z) % P == 0

_GY = 4 * pow(5, P - 2, P) % P
_B = (_recover_x(_GY, 0), _GY, 1, _recover_x(_GY, 0) * _GY % P)
_VERIFY_CACHE = {}

def ed25519_verify(public, message, signature):
    """ZIP 215 (main document, section 8): S < L; A and R any encoding of a
    curve point; [8]([S]B - R - [k]A) is the identity, k = SHA-512(R || A || M)
    over the bytes as given."""
    key = (public, message, signature)
    if key in _VERIFY_CACHE:
        return _VERIFY_CACHE[key]
    ok = False
    if len(public) == 32 and len(signature) == 64:
        a = _pt_decompress(public)
        r = _pt_decompress(signature[:32])
        s = int.from_bytes(signature[32:], "little")
        if a is not None and r is not None and s < L:
            k = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(),
                               "little") % L
            check = _pt_add(_pt_add(_pt_mul(s, _B), _pt_neg(r)), _pt_mul(k, _pt_neg(a)))
            ok = _is_identity(_pt_mul(8, check))
    _VERIFY_CACHE[key] = ok
    return ok

# ---------------------------------------------------------------------------
# Canonical bincode 2 decoding (main section 2, A section 1)
# Checking while decoding is equivalent to decode/re-encode/compare.
# ---------------------------------------------------------------------------
class Reader:
    def __init__(self, data):
        self.b, self.i = bytes(data), 0

    def take(self, n):
        if n > len(self.b) - self.i:
            raise Undecodable("cut short")
        out = self.b[self.i:self.i + n]
        self.i += n
        return out

    def u8(self):
        return self.take(1)[0]

    def varint(self, bits=64):
        """A section 1: shortest form only; fe/ff always errors; fd for u32."""
        tag = self.u8()
        if tag < 251:
            return tag
        size = {251: 2, 252: 4, 253: 8}.get(tag)
        if size is None or size * 8 > bits:
            raise Undecodable("bad varint tag %#x" % tag)
        value = int.from_bytes(self.take(size), "little")
        if value < {2: 251, 4: 1 << 16, 8: 1 << 32}[size]:
            raise Undecodable("non-canonical varint")
        return value

    def bool(self):
        v = self.u8()
        if v > 1:
            raise Undecodable("bad bool")
        return v == 1

    def option(self, fn):
        tag = self.u8()
        if tag > 1:
            raise Undecodable("bad Option tag")
        return fn(self) if tag else None

    def bytes(self):
        return self.take(self.varint())

    def string(self):
        try:
            return self.bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise Undecodable("bad UTF-8")

    def enum(self, count):
        idx = self.varint(32)
        if idx >= count:
            raise Undecodable("variant index %d out of range" % idx)
        return idx

    def vec(self, fn):
        return [fn(self) for _ in range(self.varint())]

    def set(self, fn, key=lambda v: v):
        """A section 1: elements strictly ascending in the type's Ord."""
        items = self.vec(fn)
        for a, b in zip(items, items[1:]):
            if not key(a) < key(b):
                raise Undecodable("set not strictly ascending")
        return items

    def done(self):
        if self.i != len(self.b):
            raise Undecodable("%d bytes left over" % (len(self.b) - self.i))

def r_u64(r):
    return r.varint()

def r_str(r):
    return r.string()

def r_str_set(r):                       # String Ord = bytewise UTF-8 (A section 1)
    return r.set(r_str, key=lambda s: s.encode())

def r_hash(r):
    return r.take(32)

def valid_org(s):
    """OrgId (A 5.4, B 3.2): kind/name, <= 128 bytes, [a-z0-9-]+ each part."""
    if len(s.encode()) > ORG_BYTES_MAX or s.count("/") != 1:
        return False
    ok = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return all(part and set(part) <= ok for part in s.split("/"))

def r_org(r):
    s = r.string()
    if not valid_org(s):
        raise Undecodable("invalid OrgId %r" % s)
    return s

def r_i64(r):                           # zigzag (A section 1)
    z = r.varint()
    return (z >> 1) ^ -(z & 1)

def r_field_value(r):                   # TaggedFieldValue (A 5.3)
    idx = r.enum(4)
    value = [None, Reader.bool, r_i64, r_str][idx](r) if idx else None
    return (idx, value)

def field_value_key(v):                 # FieldValue Ord (A section 1)
    idx, value = v
    return (idx, value.encode() if idx == 3 else value if idx else 0)

def r_field_class(r):                   # FieldClass, Sensitive is newtype (A 5.3)
    idx = r.enum(4)
    return (idx, r.enum(7)) if idx == CLASS_SENSITIVE else (idx, None)

def r_dataset_spec(r):
    spec = {"id": r.string(), "title": r.string(), "subject_key_field": r.string(),
            "sharing": r.enum(3)}
    spec["fields"] = r.vec(lambda r: {"name": r.string(), "type": r.enum(4),
                                      "class": r_field_class(r)})
    spec["scope_fields"] = r.vec(r_str)
    return spec

def r_masking_rule(r):
    idx = r.enum(3)
    return (idx, r.u8() if idx < 2 else None)

def r_grant_spec(r):
    g = {"dataset": r.string(), "grantee": r_org(r), "fields": r_str_set(r),
         "purpose": r.string(), "legal_basis": r.enum(7)}
    g["scope"] = r.vec(lambda r: {"field": r.string(),
                                  "allowed": r.set(r_field_value, field_value_key)})
    g["valid_from_ms"], g["valid_until_ms"] = r.varint(), r.varint()
    keys_rules = r.vec(lambda r: (r.string(), r_masking_rule(r)))
    for a, b in zip(keys_rules, keys_rules[1:]):
        if not a[0].encode() < b[0].encode():
            raise Undecodable("map keys not strictly ascending")
    g["masking"] = dict(keys_rules)
    g["consent_required"] = r.bool()
    g["demand"] = r.option(r_u64)
    g["retention"] = r.option(lambda r: {"keep_ms": r.varint(), "delete_within_ms": r.varint()})
    g["assessment"] = r.option(r_hash)
    return g

def r_deletion_receipt(r):              # A 5.3 DeletionReceipt, DeletionCause
    rec = {"grant": r.varint()}
    cause = r.enum(3)
    rec["cause"] = cause
    rec["received_before_ms"] = r.varint() if cause == RETENTION_ENDED else None
    rec["subject"] = r.take(32) if cause == CONSENT_WITHDRAWN else None
    rec["records_deleted"] = r.varint()
    rec["subjects_commitment"] = r.take(32)
    rec["deleted_at_ms"] = r.varint()
    rec["earliest_held_ms"] = r.option(r_u64)
    return rec

def r_subject_answer(r):                # A 5.2, 23 AnswerSubjectRequest
    answer = {"id": r.take(32), "outcome": r.enum(2)}
    answer["reason"] = r.string() if answer["outcome"] == OUTCOME_REFUSED else None
    return answer

def r_access_record(r):                 # A 5.3; request in nested form (A 4.2)
    rec = {"request_body": r.bytes(), "request_signature": r.bytes()}
    if r.enum(2) == 0:
        rec["permit"] = r.vec(lambda r: {"subject": r.take(32), "fields": r.vec(r_str)})
        rec["deny"] = None
    else:
        rec["permit"], rec["deny"] = None, r.enum(21)
    rec["decided_at_ms"] = r.varint()
    return rec

def r_correction_event(r):
    e = {"correction": r.take(32), "dataset": r.string(), "subject": r.take(32),
         "submitter": r.take(32), "stage": STAGES[r.enum(7)],
         "payload_sha256": r.take(32), "fields": r_str_set(r)}
    e["reason_code"] = r.string()
    if e["reason_code"] not in CORRECTION_REASON_CODES:
        raise Undecodable("unknown correction reason code")
    e["version"] = r.option(r_u64)
    e["operator"] = r.string()
    e["record_written_at_ms"] = r.option(r_u64)
    return e

def _fields(*spec):
    """A struct variant decoder from (name, reader) pairs."""
    return lambda r: {name: fn(r) for name, fn in spec}

COMMAND_DECODERS = {                     # A 5.1-5.3
    GENESIS: _fields(("federation_name", r_str), ("ca_certificate_der", Reader.bytes),
                     ("founding", lambda r: r.vec(Reader.bytes))),
    ADMIT: _fields(("certificate_der", Reader.bytes)),
    REVOKE_MEMBER: _fields(("node_id", r_hash), ("reason", r_str)),
    PUBLISH: r_dataset_spec,
    ADD_NL: _fields(("dataset", r_str), ("field", lambda r: r.option(r_str)),
                    ("reason", r_str)),
    REMOVE_NL: _fields(("dataset", r_str), ("field", lambda r: r.option(r_str))),
    FILE_DEMAND: _fields(("dataset", r_str), ("fields", r_str_set), ("purpose", r_str),
                         ("legal_basis", lambda r: r.enum(7))),
    ISSUE_GRANT: r_grant_spec,
    REVOKE_GRANT: _fields(("grant_id", r_u64), ("reason", r_str)),
    RECORD_ACCESS: r_access_record,
    RECORD_PUSH: r_access_record,
    RECORD_CONSENT: _fields(("subject", r_hash), ("dataset", r_str), ("grantee", r_org),
                            ("purpose", r_str), ("given", Reader.bool),
                            ("covers_sensitive", Reader.bool), ("channel", r_str)),
    RECORD_CORRECTION: r_correction_event,
    SET_AUTO: _fields(("dataset", r_str), ("submitter", r_org), ("fields", r_str_set)),
    COSIGN: _fields(("tree_size", r_u64), ("root", r_hash), ("log_index", r_u64)),
    REMOVE_AUTO: _fields(("dataset", r_str), ("submitter", r_org)),
    COMMIT_SECRET: _fields(("commitment", r_hash)),
    FILE_DEMAND_REASON: _fields(("dataset", r_str), ("fields", r_str_set),
                                ("purpose", r_str), ("legal_basis", lambda r: r.enum(7)),
                                ("reason", r_str), ("until_ms", lambda r: r.option(r_u64))),
    REFUSE_DEMAND: _fields(("demand_id", r_u64), ("reason", r_str)),
    RECORD_LISTING: r_access_record,
    CONFIRM_DELETION: r_deletion_receipt,
    FILE_SUBJECT_REQUEST: _fields(("id", r_hash),
                                  ("request_kind", lambda r: r.enum(SUBJECT_REQUEST_KINDS)),
                                  ("dataset", r_str), ("subject", r_hash),
                                  ("deadline_ms", r_u64)),
    ANSWER_SUBJECT_REQUEST: r_subject_answer,
}

def r_command(r, wrappers=0):
    """A Command (A 5.1); `wrappers`: how many ByOperator wrappers enclose it."""
    kind = r.enum(COMMAND_VARIANTS)
    if kind == BY_OPERATOR:              # A 5.2: operator, then the command in place
        cmd = {"operator": r.string()}
        if wrappers >= OPERATOR_WRAPPERS_MAX:  # a third wrapper does not decode
            raise Undecodable("more than %d operator wrappers" % OPERATOR_WRAPPERS_MAX)
        cmd["command"] = r_command(r, wrappers + 1)
    else:
        cmd = COMMAND_DECODERS[kind](r)
    cmd["kind"] = kind
    return cmd

def r_query_header(r):                  # A 5.3 QueryHeader
    return {"dataset": r.string(), "subjects": r.vec(r_hash), "fields": r.vec(r_str),
            "purpose": r.string(), "grant": r.option(r_u64)}

def decode_envelope_body(body, payload_reader):
    """EnvelopeBody<T> (A 4.3): payload, signer, issued_at_ms, nonce; canonical."""
    if len(body) > ENVELOPE_BYTES_MAX:
        raise Undecodable("body over 4 MiB")
    r = Reader(body)
    env = {"payload": payload_reader(r), "signer": r.take(32),
           "issued_at_ms": r.varint(), "nonce": r.take(16)}
    r.done()
    return env

def decode_wire(data):
    """EnvelopeWire (A 4.1): version u8 = 1, body bytes, signature bytes."""
    if len(data) > ENVELOPE_BYTES_MAX:
        raise Undecodable("wire form over 4 MiB")
    r = Reader(data)
    version, body, signature = r.u8(), r.bytes(), r.bytes()
    r.done()
    if version != 1:
        raise Undecodable("envelope version %d" % version)
    return {"raw": bytes(data), "body": body, "signature": signature}

# ---------------------------------------------------------------------------
# Minimal DER / X.509 reading (A 5.5, B 3.1-3.3)
# ---------------------------------------------------------------------------
class CertError(Exception):
    pass

OID_ED25519 = bytes.fromhex("2b6570")            # 1.3.101.112
OID_CN, OID_O, OID_OU = bytes.fromhex("550403"), bytes.fromhex("55040a"), bytes.fromhex("55040b")
OID_BASIC_CONSTRAINTS = bytes.fromhex("551d13")  # 2.5.29.19
STRING_TAGS = {0x12, 0x13, 0x0C, 0x16}           # Numeric, Printable, UTF8, IA5 (B 3.2)

def der_tlv(data, i, end):
    """One DER TLV at data[i:end]: (tag, content start, content end). Definite,
    minimal lengths; single-byte tags only."""
    if i + 2 > end:
        raise CertError("DER cut short")
    tag, length = data[i], data[i + 1]
    if tag & 0x1F == 0x1F:
        raise CertError("multi-byte tag")
    i += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or i + n > end or data[i] == 0:
            raise CertError("bad DER length")
        length = int.from_bytes(data[i:i + n], "big")
        if length < 128:
            raise CertError("non-minimal DER length")
        i += n
    if i + length > end:
        raise CertError("DER value cut short")
    return tag, i, i + length

def der_children(data, start, end):
    out, i = [], start
    while i < end:
        tag, cs, ce = der_tlv(data, i, end)
        out.append((tag, cs, ce, i))             # i: start of the whole TLV
        i = ce
    return out

def der_expect(node, tag):
    if node[0] != tag:
        raise CertError("expected tag %#x, got %#x" % (tag, node[0]))
    return node

def der_time_ms(data, node):
    """UTCTime / GeneralizedTime -> Unix ms, negative -> 0 (A 5.5, B 3.2.5).
    Fractional seconds are dropped (B section 7 assumption)."""
    tag, cs, ce, _ = node
    text = data[cs:ce].decode("ascii")
    if not text.endswith("Z"):
        raise CertError("time not in Z")
    if tag == 0x17:
        yy = int(text[0:2])
        year, rest = (1900 + yy if yy >= 50 else 2000 + yy), text[2:-1]
    elif tag == 0x18:
        year, rest = int(text[0:4]), text[4:-1].split(".")[0]
    else:
        raise CertError("not a time")
    if len(rest) != 10 or not rest.isdigit():
        raise CertError("bad time")
    secs = calendar.timegm((year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]),
                            int(rest[6:8]), int(rest[8:10]), 0, 0, 0))
    return max(secs, 0) * 1000

def alg_is_ed25519(data, node):
    kids = der_children(data, node[1], node[2])
    return len(kids) == 1 and kids[0][0] == 0x06 and data[kids[0][1]:kids[0][2]] == OID_ED25519

def parse_certificate(der):
    """The parts of an X.509 v3 certificate civmesh reads (A 5.5)."""
    if len(der) > CERTIFICATE_BYTES_MAX:
        raise CertError("certificate over 16 KiB")
    try:
        tag, cs, ce = der_tlv(der, 0, len(der))
        if tag != 0x30 or ce != len(der):
            raise CertError("not one certificate, or trailing bytes")
        top = der_children(der, cs, ce)
        if len(top) != 3:
            raise CertError("certificate is not 3 elements")
        tbs, sig_alg, sig_value = top
        der_expect(tbs, 0x30), der_expect(sig_alg, 0x30), der_expect(sig_value, 0x03)
        kids = der_children(der, tbs[1], tbs[2])
        if kids and kids[0][0] == 0xA0:          # [0] EXPLICIT version
            kids = kids[1:]
        serial, _tbs_alg, issuer, validity, subject, spki = [
            der_expect(k, t) for k, t in zip(kids[:6], (0x02, 0x30, 0x30, 0x30, 0x30, 0x30))]
        extensions = []
        for k in kids[6:]:
            if k[0] == 0xA3:
                seq = der_expect(der_children(der, k[1], k[2])[0], 0x30)
                for ext in der_children(der, seq[1], seq[2]):
                    parts = der_children(der, ext[1], ext[2])
                    extensions.append((der[parts[0][1]:parts[0][2]],
                                       der[parts[-1][1]:parts[-1][2]]))
        nb, na = der_children(der, validity[1], validity[2])
        spki_alg, spki_key = der_children(der, spki[1], spki[2])
        key = der[spki_key[1]:spki_key[2]]
        if not alg_is_ed25519(der, spki_alg) or spki_key[0] != 0x03 or key[:1] != b"\x00" \
                or len(key) != 33:
            raise CertError("subject key is not a 32-byte Ed25519 key")
        attrs = {}                               # first attribute of each type (B 3.2.3)
        for rdn in der_children(der, subject[1], subject[2]):
            for atv in der_children(der, rdn[1], rdn[2]):
                oid, value = der_children(der, atv[1], atv[2])[:2]
                oid_bytes = der[oid[1]:oid[2]]
                if oid_bytes not in attrs:
                    text = None
                    if value[0] in STRING_TAGS:
                        text = der[value[1]:value[2]].decode("utf-8")
                    attrs[oid_bytes] = text
        sig = der[sig_value[1]:sig_value[2]]
        return {
            "tbs": der[tbs[3]:tbs[2]], "sig_alg_ed25519": alg_is_ed25519(der, sig_alg),
            "signature": sig[1:] if sig[:1] == b"\x00" else b"",
            "serial": der[serial[1]:serial[2]],
            "issuer": der[issuer[3]:issuer[2]], "subject": der[subject[3]:subject[2]],
            "not_before_ms": der_time_ms(der, nb), "not_after_ms": der_time_ms(der, na),
            "key": key[1:], "attrs": attrs, "extensions": extensions,
        }
    except (CertError, IndexError, ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise CertError(str(e) or "malformed certificate")

def check_ca_certificate(der):
    """B 3.1: Ed25519 key, basicConstraints cA = TRUE, self-signed. -> CA cert."""
    cert = parse_certificate(der)
    ca_flag = False
    for oid, value in cert["extensions"]:
        if oid == OID_BASIC_CONSTRAINTS:
            tag, cs, ce = der_tlv(value, 0, len(value))
            kids = der_children(value, cs, ce)
            if tag == 0x30 and kids and kids[0][0] == 0x01:
                ca_flag = value[kids[0][1]:kids[0][2]] != b"\x00"
    if not ca_flag:
        raise CertError("no basicConstraints cA = TRUE")
    if not cert["sig_alg_ed25519"] or not ed25519_verify(cert["key"], cert["tbs"],
                                                        cert["signature"]):
        raise CertError("CA certificate not self-signed")
    return cert

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

def peer_id_key(text):
    """B 3.2.3: base58btc identity multihash of the libp2p protobuf PublicKey.
    Only the normal form 00 24 08 01 12 20 || K is accepted here."""
    text = text.strip()
    n = 0
    for ch in text:
        if ch not in B58:
            raise CertError("CN not base58")
        n = n * 58 + B58.index(ch)
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    raw = b"\x00" * (len(text) - len(text.lstrip("1"))) + raw
    if len(raw) != 38 or raw[:6] != bytes.fromhex("002408011220"):
        raise CertError("CN is not an Ed25519 PeerId")
    return raw[6:]

def read_member_certificate(der):
    """B 3.2: node id, org, role, serial, validity."""
    cert = parse_certificate(der)
    cn, org, role = (cert["attrs"].get(o) for o in (OID_CN, OID_O, OID_OU))
    if cn is None or peer_id_key(cn) != cert["key"]:
        raise CertError("CN does not name the certificate's key")
    if org is None or not valid_org(org):
        raise CertError("bad O")
    if role not in ("hub", "department", "street", "auditor"):
        raise CertError("bad OU")
    cert.update(node_id=cert["key"], org=org, role=role)
    return cert

def check_member_certificate(der, ca_cert, T, revoked_ids, revoked_serials):
    """B 3.2 then 3.3 -> the member record; any failure certificate_invalid."""
    try:
        cert = read_member_certificate(der)
        if cert["issuer"] != ca_cert["subject"]:
            raise CertError("issuer is not the CA")
        if not cert["sig_alg_ed25519"] or not ed25519_verify(ca_cert["key"], cert["tbs"],
                                                            cert["signature"]):
            raise CertError("not signed by the CA")
        if not cert["not_before_ms"] <= T <= cert["not_after_ms"]:
            raise CertError("not valid at T")
        if cert["node_id"] in revoked_ids or cert["serial"] in revoked_serials:
            raise CertError("revoked")
    except CertError as e:
        raise Reject("certificate_invalid", str(e))
    return {"node_id": cert["node_id"], "org": cert["org"], "role": cert["role"],
            "certificate_der": der, "serial": cert["serial"],
            "not_after_ms": cert["not_after_ms"], "admitted_at_ms": T, "revoked": None}

# ---------------------------------------------------------------------------
# The state (B section 1) and the replay window (B 2.3)
# ---------------------------------------------------------------------------
class Window:
    def __init__(self):
        self.now_latest = 0
        self.entries = {}                    # (signer, nonce) -> issued_at_ms
        self.per_signer = {}

    def check(self, signer, nonce, issued, now):
        now2 = max(now, self.now_latest)
        if issued < max(0, now2 - SKEW_MS) or issued > now2 + SKEW_MS:
            return "OUTSIDE"
        if (signer, nonce) in self.entries:
            return "REPLAYED"
        return None

    def record(self, signer, nonce, issued, now):
        failure = self.check(signer, nonce, issued, now)
        if failure:
            return failure
        self.now_latest = max(now, self.now_latest)
        cutoff = max(0, self.now_latest - SKEW_MS)       # lazy expiry
        for key in [k for k, v in self.entries.items() if v < cutoff]:
            del self.entries[key]
            self.per_signer[key[0]] -= 1
        if len(self.entries) >= NONCES_MAX:
            return "FULL"
        if self.per_signer.get(signer, 0) >= NONCES_PER_SIGNER_MAX:
            return "QUOTA"
        self.entries[(signer, nonce)] = issued
        self.per_signer[signer] = self.per_signer.get(signer, 0) + 1
        return None

def spend_nonce(window, signer, nonce, issued, T):
    """record() with the code mapping of B 2.3."""
    failure = window.record(signer, nonce, issued, T)
    if failure:
        raise Reject({"REPLAYED": "replayed", "OUTSIDE": "stale"}.get(failure, "overloaded"),
                     "nonce " + failure)

class State:
    def __init__(self):
        self.federation = None               # {name, ca_certificate_der, ca_node_id, ca_cert}
        self.members, self.datasets, self.negative_list = {}, {}, {}
        self.demands, self.grants, self.consents = {}, {}, {}
        self.next_demand_id = self.next_grant_id = 1
        self.access_log_length = 0
        self.leaves = []                     # the audit tree's leaves (its size is read)
        self.corrections, self.auto_accept_rules = {}, {}
        self.corrections_closed = []         # (closed at T, id), in order (B 2.6)
        self.corrections_open_by_submitter = {}   # submitting org -> open tracks (B 5.14)
        self.pending_checkpoints = []
        self.checkpoints_final = 0
        self.last_checkpoint = None
        self.commands_applied = 0
        self.digest = bytes(32)
        self.last_entry_time_ms = 0
        self.window = Window()
        self.subject_key_commitment = None
        self.holdings = {}                   # grant id -> {holder node -> holding} (B 5.19)
        self.subject_requests = {}           # open request id -> request (B 5.20)
        self.subject_request_counts = {}     # owner org -> answered, late, refused
        self.subject_requests_open_by_intake = {}   # intake org -> open requests (B 5.20)
        # verifier bookkeeping, not state
        self.just_final = None
        self.permits = self.denials = 0

WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                  "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

def reject_if(condition, code, detail=""):
    """One check of Appendix B: reject with `code` when `condition` holds."""
    if condition:
        raise Reject(code, detail)

def text_check(value, maximum, what):
    """B notation: trimmed (Unicode White_Space) not empty, UTF-8 <= max bytes."""
    if not trimmed(value) or len(value.encode()) > maximum:
        raise Reject("invalid_argument", "text check " + what)

def in_force(st, node, T):
    """B 3.4: checkpoint signer in force."""
    m = st.members.get(node)
    return (m is not None and m["revoked"] is None and m["role"] in ("hub", "department")
            and m["not_after_ms"] > T)

def schema(ds):
    return {f["name"]: f for f in ds["fields"]}

def grant_usable(g, org, dataset, purpose, t):
    """B 5.12 Usable."""
    return (g["dataset"] == dataset and g["grantee"] == org and g["revoked"] is None
            and t >= g["valid_from_ms"] and t < g["valid_until_ms"]
            and (purpose is None or purpose == g["purpose"]))

def consent_for(st, g, subject):
    """B 5.12 Consent: 'all', 'not_sensitive' or 'missing'."""
    if not g["consent_required"] and g["legal_basis"] != LEGAL_BASIS_CONSENT:
        return "all"
    c = st.consents.get((subject, g["dataset"], g["grantee"], g["purpose"]))
    if c and c["given"]:
        return "all" if c["covers_sensitive"] else "not_sensitive"
    return "missing"

# ---------------------------------------------------------------------------
# apply (B section 2)
# ---------------------------------------------------------------------------
def apply(st, wire, T):
    """B 2.2: returns ('ok', (applied variant, value)) or ('err', code, detail)."""
    st.commands_applied += 1
    n = st.commands_applied
    before = st.digest
    st.just_final = None
    try:
        applied = run(st, wire, T)
        outcome = ("ok", applied)
        outcome_bytes = b"\x00" + bytes([applied[0]]) + \
            (encode_varint(applied[1]) if applied[0] in (1, 2, 3) else b"")
        if applied[0] in (ACCESS_LOGGED, CORRECTION_LOGGED):           # B 2.4 leaf
            st.leaves.append(sha256(before, u64le(n), u64le(T), wire["raw"]))
    except Reject as e:
        outcome = ("err", e.code, e.detail)
        outcome_bytes = b"\x01" + bytes([REJECTION_CODES.index(e.code)])
    envelope_digest = sha256(u64le(len(wire["body"])), wire["body"], wire["signature"])
    st.digest = sha256(DIGEST_PREFIX, before, u64le(T), envelope_digest, outcome_bytes)
    release_closed_corrections(st)
    return outcome

def release_closed_corrections(st):
    """B 2.6: after every command, closed corrections kept a day leave."""
    released = 0
    while (st.corrections_closed and released < CORRECTIONS_RELEASED_PER_COMMAND_MAX
           and st.corrections_closed[0][0] + CORRECTION_CLOSED_KEPT_MS <= st.last_entry_time_ms):
        _, correction = st.corrections_closed.pop(0)
        del st.corrections[correction]
        released += 1

def encode_varint(v):
    if v < 251:
        return bytes([v])
    if v < 1 << 16:
        return b"\xfb" + v.to_bytes(2, "little")
    if v < 1 << 32:
        return b"\xfc" + v.to_bytes(4, "little")
    return b"\xfd" + v.to_bytes(8, "little")

def run(st, wire, T):
    # R1 entry time
    reject_if(T < st.last_entry_time_ms, "entry_time_went_back")
    st.last_entry_time_ms = T
    # R2 envelope: canonical body, signature
    try:
        env = decode_envelope_body(wire["body"], r_command)
    except Undecodable as e:
        raise Reject("signature_invalid", "body: %s" % e)
    S = env["signer"]
    if not ed25519_verify(S, ENVELOPE_PREFIX + wire["body"], wire["signature"]):
        raise Reject("signature_invalid", "bad signature")
    # R3 command time
    reject_if(env["issued_at_ms"] > T + SKEW_MS, "future_dated")
    reject_if(env["issued_at_ms"] < max(0, T - SKEW_MS), "stale")
    cmd = env["payload"]
    # R4 nonce, for a genesis or a known signer
    known = (st.federation is not None and S == st.federation["ca_node_id"]) or S in st.members
    if cmd["kind"] == GENESIS or known:
        spend_nonce(st.window, S, env["nonce"], env["issued_at_ms"], T)
    # R5 an operator's command: unwrapped; the rest is the wrapped command's
    if cmd["kind"] == BY_OPERATOR:
        cmd = unwrap_operator(cmd)
    # R6 genesis
    if cmd["kind"] == GENESIS:
        return apply_genesis(st, cmd, S, T)
    # R7
    reject_if(st.federation is None, "genesis_order")
    # R8 authority
    O, query = authority(st, cmd, S, T)
    # R10 access rules; R9 + R11 otherwise
    if cmd["kind"] in ACCESS_KINDS:
        return apply_access(st, cmd, query, T)
    return RULES[cmd["kind"]](st, cmd, S, O, T)

def is_control(ch):
    """General category Cc (B 2.5): U+0000..U+001F and U+007F..U+009F."""
    return ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F

def trimmed(value):
    """`value` without leading and trailing Unicode White_Space (B notation)."""
    start, end = 0, len(value)
    while start < end and value[start] in WHITE_SPACE:
        start += 1
    while end > start and value[end - 1] in WHITE_SPACE:
        end -= 1
    return value[start:end]

def unwrap_operator(cmd):
    """B 2.5: the operator's name, then whether an operator may make the
    wrapped command. -> the wrapped command."""
    name = cmd["operator"]
    if not trimmed(name) or len(name.encode()) > OPERATOR_NAME_BYTES_MAX \
            or any(is_control(ch) for ch in name):
        raise Reject("invalid_argument", "operator name")
    inner = cmd["command"]
    reject_if(inner["kind"] not in OPERATOR_MAY_MAKE, "not_authorised",
              "an operator may not make command %d" % inner["kind"])
    return inner

def apply_genesis(st, cmd, S, T):
    """B 5.1."""
    reject_if(st.federation is not None, "genesis_order")
    text_check(cmd["federation_name"], NAME_BYTES_MAX, "federation_name")
    try:
        ca = check_ca_certificate(cmd["ca_certificate_der"])
    except CertError as e:
        raise Reject("certificate_invalid", str(e))
    reject_if(ca["key"] != S, "not_authorised", "genesis not signed by its CA key")
    members = {}
    for der in cmd["founding"]:
        m = check_member_certificate(der, ca, T, set(), set())
        members[m["node_id"]] = m                   # a duplicate replaces
    if not any(m["role"] == "hub" for m in members.values()):
        raise Reject("invalid_argument", "no founding hub")
    st.federation = {"name": cmd["federation_name"], "ca_certificate_der":
                     cmd["ca_certificate_der"], "ca_node_id": S, "ca_cert": ca}
    st.members = members
    return (DONE, None)

def owner_of(st, dataset, O):
    """B section 4: 'owner of X'."""
    ds = st.datasets.get(dataset)
    reject_if(ds is None, "dataset_unknown", dataset)
    reject_if(ds["owner"] != O, "not_authorised", "not the owner of " + dataset)
    return ds

def authority(st, cmd, S, T):
    """B section 4 (R8): standing, then the table. -> (org, decoded query or None)."""
    kind, query = cmd["kind"], None
    if S == st.federation["ca_node_id"]:
        if kind not in (ADMIT, REVOKE_MEMBER, COMMIT_SECRET):
            raise Reject("not_authorised", "the CA may not sign this")
        return "federation/ca", None
    m = st.members.get(S)
    reject_if(m is None, "signer_unknown")
    reject_if(m["revoked"] is not None, "signer_revoked")
    reject_if(m["not_after_ms"] <= T, "signer_certificate_expired")
    O, role = m["org"], m["role"]
    if kind in (ADMIT, REVOKE_MEMBER) and role != "hub":
        raise Reject("not_authorised", "membership command by a non-hub")
    reject_if(kind == COMMIT_SECRET, "not_authorised", "only the CA commits the secret")
    if kind == PUBLISH:
        ds = st.datasets.get(cmd["id"])
        if ds is not None and ds["owner"] != O:
            raise Reject("not_authorised", "republication by a non-owner")
    elif kind in (ADD_NL, REMOVE_NL, RECORD_CONSENT, SET_AUTO, REMOVE_AUTO, ISSUE_GRANT):
        owner_of(st, cmd["dataset"], O)
    elif kind == REVOKE_GRANT:
        g = st.grants.get(cmd["grant_id"])
        reject_if(g is None, "grant_unknown")
        owner_of(st, g["dataset"], O)
    elif kind in ACCESS_KINDS:
        try:                                    # decoded without its signature
            query = decode_envelope_body(cmd["request_body"], r_query_header)
        except Undecodable as e:
            raise Reject("signature_invalid", "request: %s" % e)
        owner_of(st, query["payload"]["dataset"], O)
    elif kind == RECORD_CORRECTION:
        if cmd["stage"] in ("submitted", "outcome_delivered"):
            reject_if(S != cmd["submitter"], "not_authorised", "not the submitter")
        elif cmd["correction"] in st.corrections:
            if st.corrections[cmd["correction"]]["owner"] != O:
                raise Reject("not_authorised", "not the track's owner")
        else:
            owner_of(st, cmd["dataset"], O)
    elif kind == COSIGN:
        if role not in ("hub", "department"):
            raise Reject("not_authorised", "cosigner not hub/department")
    elif kind == REFUSE_DEMAND:
        demand = st.demands.get(cmd["demand_id"])
        reject_if(demand is None, "demand_unknown")
        owner_of(st, demand["dataset"], O)
    elif kind == ANSWER_SUBJECT_REQUEST:
        request = st.subject_requests.get(cmd["id"])
        reject_if(request is None, "subject_request_unknown", "no open request")
        owner_of(st, request["dataset"], O)
    return O, query

def revoked_sets(st):
    revoked = [m for m in st.members.values() if m["revoked"] is not None]
    return {m["node_id"] for m in revoked}, {m["serial"] for m in revoked}

def rule_admit(st, cmd, S, O, T):                                    # B 5.2
    ids, serials = revoked_sets(st)
    m = check_member_certificate(cmd["certificate_der"], st.federation["ca_cert"], T,
                                 ids, serials)
    reject_if(m["node_id"] in st.members, "already_member")
    st.members[m["node_id"]] = m
    return (DONE, None)

def rule_revoke_member(st, cmd, S, O, T):                            # B 5.3
    text_check(cmd["reason"], REASON_BYTES_MAX, "reason")
    m = st.members.get(cmd["node_id"])
    reject_if(m is None or m["revoked"] is not None, "member_unknown")
    m["revoked"] = {"at_ms": T, "by": S, "reason": cmd["reason"]}
    return (DONE, None)

def rule_publish(st, cmd, S, O, T):                                  # B 5.4
    text_check(cmd["id"], NAME_BYTES_MAX, "id")
    text_check(cmd["title"], REASON_BYTES_MAX, "title")
    if not cmd["fields"] or len(cmd["fields"]) > SCHEMA_FIELDS_MAX:
        raise Reject("invalid_argument", "field count")
    names = {}
    for f in cmd["fields"]:
        text_check(f["name"], NAME_BYTES_MAX, "field name")
        reject_if(f["name"] in names, "invalid_argument", "duplicate field")
        names[f["name"]] = f
    reject_if(cmd["subject_key_field"] not in names, "field_unknown", "subject_key_field")
    if len(cmd["scope_fields"]) > SCOPE_FIELDS_MAX:
        raise Reject("invalid_argument", "too many scope fields")
    seen = set()
    for sf in cmd["scope_fields"]:
        reject_if(sf not in names, "field_unknown", "scope field")
        if names[sf]["type"] != FIELD_TYPE_TEXT or sf in seen:
            raise Reject("invalid_argument", "scope field")
        seen.add(sf)
    check_republished_protection(st, cmd, T)
    old = st.datasets.get(cmd["id"])
    st.datasets[cmd["id"]] = dict(cmd, owner=O, version=old["version"] + 1 if old else 1)
    return (DONE, None)

def rule_add_nl(st, cmd, S, O, T):                                   # B 5.5
    text_check(cmd["reason"], REASON_BYTES_MAX, "reason")
    if cmd["field"] is not None and cmd["field"] not in schema(st.datasets[cmd["dataset"]]):
        raise Reject("field_unknown")
    st.negative_list[(cmd["dataset"], cmd["field"])] = cmd
    return (DONE, None)

def rule_remove_nl(st, cmd, S, O, T):                                # B 5.6
    reject_if((cmd["dataset"], cmd["field"]) not in st.negative_list, "negative_list_entry_unknown")
    del st.negative_list[(cmd["dataset"], cmd["field"])]
    return (DONE, None)

def rule_file_demand(st, cmd, S, O, T):                              # B 5.7
    text_check(cmd["dataset"], NAME_BYTES_MAX, "dataset")
    text_check(cmd["purpose"], NAME_BYTES_MAX, "purpose")
    reject_if(not cmd["fields"], "invalid_argument", "no fields")
    for f in cmd["fields"]:
        text_check(f, NAME_BYTES_MAX, "field")
    ds = st.datasets.get(cmd["dataset"])
    reject_if(ds is not None and any(f not in schema(ds) for f in cmd["fields"]), "field_unknown")
    if cmd["kind"] == FILE_DEMAND_REASON:
        text_check(cmd["reason"], REASON_BYTES_MAX, "reason")
    demand_id = st.next_demand_id
    st.next_demand_id += 1
    st.demands[demand_id] = dict(cmd, id=demand_id, requester=O, filed_at_ms=T,
                                 reason=cmd.get("reason"), until_ms=cmd.get("until_ms"),
                                 refused=None)
    return (DEMAND_FILED, demand_id)

def rule_refuse_demand(st, cmd, S, O, T):                            # B 5.8
    text_check(cmd["reason"], REASON_BYTES_MAX, "reason")
    demand = st.demands[cmd["demand_id"]]
    reject_if(demand["refused"] is not None, "invalid_argument", "already refused")
    if any(g["demand"] == cmd["demand_id"] for g in st.grants.values()):
        raise Reject("invalid_argument", "already answered by a grant")
    demand["refused"] = {"at_ms": T, "by": S, "reason": cmd["reason"]}
    return (DONE, None)

def rule_issue_grant(st, cmd, S, O, T):                              # B 5.9
    ds = st.datasets[cmd["dataset"]]
    names = schema(ds)
    text_check(cmd["purpose"], NAME_BYTES_MAX, "purpose")
    reject_if(not cmd["fields"], "invalid_argument", "no fields")
    reject_if(cmd["valid_until_ms"] <= cmd["valid_from_ms"], "invalid_argument", "empty validity")
    reject_if(cmd["grantee"] == O, "invalid_argument", "grant to own org")
    for f in list(cmd["fields"]) + list(cmd["masking"]) + [c["field"] for c in cmd["scope"]]:
        reject_if(f not in names, "field_unknown", f)
    for c in cmd["scope"]:
        if c["field"] not in ds["scope_fields"] or not c["allowed"]:
            raise Reject("invalid_argument", "scope condition")
    if any(k not in cmd["fields"] for k in cmd["masking"]):
        raise Reject("invalid_argument", "masking key not granted")
    reject_if(ds["sharing"] == SHARING_NOT_SHARED, "dataset_not_shared")
    if (cmd["dataset"], None) in st.negative_list or \
            any((cmd["dataset"], f) in st.negative_list for f in cmd["fields"]):
        raise Reject("negative_listed")
    check_protection(ds, cmd)
    if cmd["demand"] is not None:
        demand = st.demands.get(cmd["demand"])
        reject_if(demand is None, "demand_unknown")
        reject_if(demand["refused"] is not None, "invalid_argument", "demand refused")
    if not any(m["org"] == cmd["grantee"] and m["revoked"] is None
               for m in st.members.values()):
        raise Reject("member_unknown", "no active grantee node")
    grant_id = st.next_grant_id
    st.next_grant_id += 1
    st.grants[grant_id] = dict(cmd, id=grant_id, grantor=O, issued_at_ms=T, revoked=None)
    return (GRANT_ISSUED, grant_id)

def retention_valid(retention):
    """B 5.9 step 9: keep 1 s .. 10 years, delete within 1 s .. 30 days."""
    return (RETENTION_MS_MIN <= retention["keep_ms"] <= RETENTION_KEEP_MS_MAX
            and RETENTION_MS_MIN <= retention["delete_within_ms"] <= DELETION_WITHIN_MS_MAX)

def check_protection(ds, spec):
    """B 5.9 step 9, for a grant's fields in the dataset's schema."""
    classes = [schema(ds)[f]["class"][0] for f in spec["fields"]]
    check_protection_of(classes, spec["retention"], spec["assessment"])

def check_protection_of(classes, retention, assessment, grant=""):
    """B 5.9 step 9: a retention in bounds, required with a personal or
    sensitive field; an impact assessment with a sensitive field."""
    personal = any(c in (CLASS_PERSONAL, CLASS_SENSITIVE) for c in classes)
    if retention is not None and not retention_valid(retention):
        raise Reject("retention_missing", grant + "retention out of bounds")
    reject_if(retention is None and personal, "retention_missing", grant + "personal fields")
    reject_if(CLASS_SENSITIVE in classes and assessment is None, "assessment_missing",
              grant + "sensitive fields")

def check_republished_protection(st, spec, T):
    """B 5.4 step 7: every grant of the dataset in force at T (not ended:
    not revoked, window not over; one not yet valid is in force), in id
    order, protects the new schema's classes of the fields it grants."""
    for grant_id, g in sorted(st.grants.items()):
        if g["dataset"] != spec["id"] or grant_ended_at(g, T) is not None:
            continue
        classes = [f["class"][0] for f in spec["fields"] if f["name"] in g["fields"]]
        check_protection_of(classes, g["retention"], g["assessment"], "grant %d: " % grant_id)

def rule_revoke_grant(st, cmd, S, O, T):                             # B 5.10
    text_check(cmd["reason"], REASON_BYTES_MAX, "reason")
    g = st.grants[cmd["grant_id"]]
    reject_if(g["revoked"] is not None, "grant_already_revoked")
    g["revoked"] = {"at_ms": T, "by": S, "reason": cmd["reason"]}
    return (DONE, None)

def rule_consent(st, cmd, S, O, T):                                  # B 5.11
    text_check(cmd["purpose"], NAME_BYTES_MAX, "purpose")
    text_check(cmd["channel"], NAME_BYTES_MAX, "channel")
    key = (cmd["subject"], cmd["dataset"], cmd["grantee"], cmd["purpose"])
    held = st.consents.get(key)
    if not cmd["given"] and held is not None and held["given"]:
        note_consent_withdrawn(st, key, T)
    elif (cmd["given"] and not cmd["covers_sensitive"] and held is not None and held["given"]
          and held["covers_sensitive"]):   # the separate consent for sensitive fields alone
        note_consent_withdrawn(st, key, T, sensitive_only=True)
    st.consents[key] = {"given": cmd["given"], "covers_sensitive": cmd["covers_sensitive"],
                        "recorded_by": O, "recorded_at_ms": T, "channel": cmd["channel"]}
    return (DONE, None)

def apply_access(st, cmd, query, T):
    """B 5.13, steps 1-10 (R10)."""
    kind = ACCESS_KINDS[cmd["kind"]]
    q, requester = query["payload"], query["signer"]
    pnj = "permit_not_justified"
    if not ed25519_verify(requester, ENVELOPE_PREFIX + cmd["request_body"],
                          cmd["request_signature"]):                         # 1
        raise Reject("signature_invalid", "request signature")
    if len(q["subjects"]) > QUERY_SUBJECTS_MAX or not q["fields"]:           # 2
        raise Reject("invalid_argument", "request shape")
    if abs(cmd["decided_at_ms"] - T) > SKEW_MS:                              # 3
        raise Reject("decision_time_out_of_window")
    ds = st.datasets.get(q["dataset"])
    if ds is None:                                                           # 4
        raise Reject("dataset_unknown")
    member = st.members.get(requester)
    if member is None:                                                       # 5
        raise Reject("signer_unknown", "requester")
    if kind in ("query", "listing"):                                         # 6
        failure = st.window.check(requester, query["nonce"], query["issued_at_ms"], T)
        reject_if(failure, "replayed" if failure == "REPLAYED" else "stale", "request")
    if kind in ("listing", "push") and q["subjects"]:                        # 7
        raise Reject(pnj, "listing/push naming subjects")
    if kind == "push" and cmd["permit"] is None:                             # 8
        raise Reject(pnj, "push without a permit")
    if cmd["permit"] is not None:                                            # 9
        released = cmd["permit"]
        reject_if(len(released) > QUERY_SUBJECTS_MAX, "invalid_argument", "too many released")
        reject_if(member["revoked"] is not None, pnj, "requester revoked")
        reject_if(member["not_after_ms"] <= T, "signer_certificate_expired", "requester")
        if ds["sharing"] == SHARING_NOT_SHARED or (q["dataset"], None) in st.negative_list:
            raise Reject(pnj, "dataset not shared or negative-listed")
        grant = None
        if q["grant"] is not None:
            grant = st.grants.get(q["grant"])
            if grant is None or not grant_usable(grant, member["org"], q["dataset"],
                                                 q["purpose"], cmd["decided_at_ms"]):
                raise Reject(pnj, "grant not usable")
        names, releasable = schema(ds), {}                                   # 9.6
        for f in q["fields"]:
            if f not in names or (q["dataset"], f) in st.negative_list:
                continue
            cls = names[f]["class"][0]
            if (f in grant["fields"]) if grant else \
                    (ds["sharing"] == SHARING_UNCONDITIONAL and cls == CLASS_PUBLIC):
                releasable[f] = cls == CLASS_SENSITIVE
        for entry in released:                                               # 9.7
            if kind == "query" and entry["subject"] not in q["subjects"]:
                raise Reject(pnj, "subject not asked for")
            consent = consent_for(st, grant, entry["subject"]) if grant else "all"
            reject_if(consent == "missing", pnj, "consent missing")
            for f in entry["fields"]:
                if f not in releasable or (releasable[f] and consent != "all"):
                    raise Reject(pnj, "field %r not releasable" % f)
    if kind in ("query", "listing"):                                         # 10
        spend_nonce(st.window, requester, query["nonce"], query["issued_at_ms"], T)
    position = st.access_log_length
    st.access_log_length += 1
    if cmd["permit"] and q["grant"] is not None:       # at least one released entry
        note_release(st, q["grant"], requester, T)
    if cmd["permit"] is not None:
        st.permits += 1
    else:
        st.denials += 1
    return (ACCESS_LOGGED, position)

def rule_correction(st, cmd, S, O, T):                               # B 5.14
    stage = cmd["stage"]
    reject_if(cmd["payload_sha256"] != cmd["correction"], "invalid_argument", "payload_sha256")
    if not cmd["fields"] or len(cmd["fields"]) > CORRECTION_CHANGES_MAX:
        raise Reject("invalid_argument", "field count")
    for f in cmd["fields"]:
        text_check(f, NAME_BYTES_MAX, "field")
    if len(cmd["operator"].encode()) > CORRECTION_TEXT_BYTES_MAX:
        raise Reject("invalid_argument", "operator")
    if cmd["record_written_at_ms"] is not None:
        if stage not in OWNER_DECISIONS or cmd["record_written_at_ms"] > T + SKEW_MS:
            raise Reject("invalid_argument", "record_written_at_ms")
    ds = st.datasets.get(cmd["dataset"])
    reject_if(ds is None, "dataset_unknown")
    track = st.corrections.get(cmd["correction"])
    if track is None:
        reject_if(stage != "submitted", "correction_unknown")
        reject_if(ds["owner"] == O, "invalid_argument", "submitter owns the dataset")
        if not any(grant_usable(g, O, cmd["dataset"], None, T)
                   and all(f in g["fields"] and f not in g["masking"] for f in cmd["fields"])
                   for g in st.grants.values()):
            raise Reject("correction_not_granted")
        open_by_submitter = st.corrections_open_by_submitter
        reject_if(open_by_submitter.get(O, 0) >= CORRECTIONS_OPEN_PER_SUBMITTER_MAX, "overloaded",
                  "corrections open")
        open_by_submitter[O] = open_by_submitter.get(O, 0) + 1
        st.corrections[cmd["correction"]] = {
            "dataset": cmd["dataset"], "owner": ds["owner"], "submitter_org": O,
            "submitter": cmd["submitter"], "subject": cmd["subject"],
            "fields": cmd["fields"], "stages": [("submitted", T)], "reason_code": None,
            "applied_version": None, "record_written_at_ms": None}
        return (DONE, None)
    reject_if(stage == "submitted", "correction_duplicate")
    if track["submitter"] != cmd["submitter"] or track["dataset"] != cmd["dataset"]:
        raise Reject("invalid_argument", "track mismatch")
    if track["stages"][-1][0] not in STAGE_MAY_FOLLOW[stage]:
        raise Reject("correction_stage_out_of_order")
    track["stages"].append((stage, T))
    if cmd["record_written_at_ms"] is not None:
        track["record_written_at_ms"] = cmd["record_written_at_ms"]
    if stage == "rejected":
        track["reason_code"] = cmd["reason_code"]
    if stage == "applied":
        track["applied_version"] = cmd["version"]
    if stage == "outcome_delivered":
        st.corrections_closed.append((T, cmd["correction"]))
        open_by_submitter = st.corrections_open_by_submitter
        open_by_submitter[track["submitter_org"]] -= 1
        if open_by_submitter[track["submitter_org"]] == 0:
            del open_by_submitter[track["submitter_org"]]
    return (CORRECTION_LOGGED, None) if stage in OWNER_OUTCOMES else (DONE, None)

def rule_set_auto(st, cmd, S, O, T):                                 # B 5.15
    reject_if(not cmd["fields"], "invalid_argument", "no fields")
    if any(f not in schema(st.datasets[cmd["dataset"]]) for f in cmd["fields"]):
        raise Reject("field_unknown")
    reject_if(cmd["submitter"] == O, "invalid_argument", "rule for own org")
    st.auto_accept_rules[(cmd["dataset"], cmd["submitter"])] = set(cmd["fields"])
    return (DONE, None)

def rule_remove_auto(st, cmd, S, O, T):                              # B 5.16
    if (cmd["dataset"], cmd["submitter"]) not in st.auto_accept_rules:
        raise Reject("auto_accept_rule_unknown")
    del st.auto_accept_rules[(cmd["dataset"], cmd["submitter"])]
    return (DONE, None)

def rule_cosign(st, cmd, S, O, T):                                   # B 5.17
    body = (cmd["tree_size"], cmd["root"], cmd["log_index"])
    final_size = st.last_checkpoint["body"][0] if st.last_checkpoint else 0
    if body[0] <= final_size or body[0] > len(st.leaves):
        raise Reject("invalid_argument", "tree_size %d outside (%d, %d]"
                     % (body[0], final_size, len(st.leaves)))
    if any(c["body"] == body and S in c["cosigners"] for c in st.pending_checkpoints):
        raise Reject("checkpoint_duplicate")
    pending = [c for c in st.pending_checkpoints
               if T < c["opened_at_ms"] + CHECKPOINT_OPEN_MS_MAX]            # change 1
    for c in pending:                                                        # change 2
        c["cosigners"] = {x for x in c["cosigners"] if x != S and in_force(st, x, T)}
    pending = [c for c in pending if c["cosigners"] or c["body"] == body]    # change 3
    current = next((c for c in pending if c["body"] == body), None)         # change 4
    if current is None:
        current = {"body": body, "opened_at_ms": T, "cosigners": set()}
        pending.append(current)
    current["cosigners"].add(S)
    orgs_in_force = {m["org"] for x, m in st.members.items() if in_force(st, x, T)}  # 5
    cosigning = {st.members[x]["org"] for x in current["cosigners"] if in_force(st, x, T)}
    if 2 * len(cosigning) > len(orgs_in_force):                              # change 6
        pending.remove(current)
        st.last_checkpoint = {"body": body, "cosigners": set(current["cosigners"]),
                              "cosigning_orgs": cosigning,
                              "signer_orgs_in_force": len(orgs_in_force), "final_at_ms": T}
        st.checkpoints_final += 1
        pending = [c for c in pending if c["body"][0] > body[0]]
        st.just_final = st.last_checkpoint
    st.pending_checkpoints = pending
    return (DONE, None)

def rule_commit_secret(st, cmd, S, O, T):                            # B 5.18
    reject_if(st.subject_key_commitment is not None, "invalid_argument", "commitment exists")
    st.subject_key_commitment = cmd["commitment"]
    return (DONE, None)

# ---------------------------------------------------------------------------
# Holdings and deletion receipts (B 5.19)
# ---------------------------------------------------------------------------
U64_MAX = 2 ** 64 - 1

def grant_ended_at(g, t):
    """B 5.19: the revocation or the window's end, whichever is first, once it is <= t."""
    end = g["valid_until_ms"]
    if g["revoked"] is not None:
        end = min(g["revoked"]["at_ms"], end)
    return end if end <= t else None

def delete_within_ms(g):
    return g["retention"]["delete_within_ms"] if g["retention"] else DELETION_WITHIN_MS_DEFAULT

def needs_consent(g):
    return g["consent_required"] or g["legal_basis"] == LEGAL_BASIS_CONSENT

def note_release(st, grant_id, holder, T):
    holding = st.holdings.setdefault(grant_id, {}).setdefault(holder, {
        "last_release_ms": 0, "retained_since_ms": None, "deleted_before_ms": 0,
        "ended_deleted_at_ms": None, "withdrawals_due": {}, "receipts": 0})
    holding["last_release_ms"] = T
    if holding["retained_since_ms"] is None:
        holding["retained_since_ms"] = T

def grants_sensitive_field(st, g):
    """B 5.19: a field of g.fields whose class in the dataset's current version is sensitive."""
    ds = st.datasets.get(g["dataset"])
    return ds is not None and any(f["name"] in g["fields"] and f["class"][0] == CLASS_SENSITIVE
                                  for f in ds["fields"])

def note_consent_withdrawn(st, key, T, sensitive_only=False):
    subject, dataset, grantee, purpose = key
    for grant_id, g in sorted(st.grants.items()):
        if not (needs_consent(g) and g["dataset"] == dataset and g["grantee"] == grantee
                and g["purpose"] == purpose):
            continue
        if sensitive_only and not grants_sensitive_field(st, g):
            continue
        due = min(T + delete_within_ms(g), U64_MAX)
        for holding in st.holdings.get(grant_id, {}).values():
            if holding["ended_deleted_at_ms"] is None:
                holding["withdrawals_due"].setdefault(subject, due)

def check_deletion_time(g, holding, cmd, T):                           # B 5.19 step 3
    """Not deleted in the future, nor (within the skew) before what it deletes."""
    deleted_at = cmd["deleted_at_ms"]
    reject_if(deleted_at > min(T + SKEW_MS, U64_MAX), "invalid_argument", "deleted in the future")
    cause = cmd["cause"]
    reject_if(cause != RETENTION_ENDED and cmd["earliest_held_ms"] is not None,
              "invalid_argument", "only a retention receipt names a copy still kept")
    if cause == GRANT_ENDED:
        ended = grant_ended_at(g, T)
        after = max(holding["last_release_ms"], T if ended is None else ended)
    elif cause == RETENTION_ENDED:
        after = cmd["received_before_ms"]
    else:                               # the withdrawal's time; none due: no bound
        due = holding["withdrawals_due"].get(cmd["subject"])
        after = 0 if due is None else max(due - delete_within_ms(g), 0)
    reject_if(min(deleted_at + SKEW_MS, U64_MAX) < after, "invalid_argument",
              "deleted before the copies it covers were due")

def rule_confirm_deletion(st, cmd, S, O, T):                         # B 5.19
    g = st.grants.get(cmd["grant"])
    reject_if(g is None, "grant_unknown")
    holding = st.holdings.get(cmd["grant"], {}).get(S)
    reject_if(holding is None or g["grantee"] != O, "deletion_not_holder")
    check_deletion_time(g, holding, cmd, T)
    reject_if(holding["ended_deleted_at_ms"] is not None, "deletion_duplicate", "grant ended")
    cause = cmd["cause"]
    if cause == RETENTION_ENDED:
        before, earliest = cmd["received_before_ms"], cmd["earliest_held_ms"]
        reject_if(g["retention"] is None, "deletion_not_due", "no retention")
        reject_if(before > T, "invalid_argument", "received_before_ms in the future")
        reject_if(earliest is not None
                  and (earliest < before or earliest > min(T + SKEW_MS, U64_MAX)),
                  "invalid_argument", "earliest copy held out of bounds")
        reject_if(before <= holding["deleted_before_ms"], "deletion_duplicate", "retention")
    elif cause == GRANT_ENDED:
        reject_if(grant_ended_at(g, T) is None, "deletion_not_due", "grant not ended")
    else:
        reject_if(cmd["subject"] not in holding["withdrawals_due"], "deletion_not_due",
                  "no withdrawal due")
    holding["receipts"] += 1
    if cause == RETENTION_ENDED:
        holding["deleted_before_ms"] = before
        since = max(before if holding["retained_since_ms"] is None
                    else holding["retained_since_ms"], before)
        if earliest is not None:                    # what the holder says it keeps
            holding["retained_since_ms"] = max(earliest, since)
        elif holding["last_release_ms"] >= before:  # copies released since the cutoff
            holding["retained_since_ms"] = since
        else:
            holding["retained_since_ms"] = None
    elif cause == GRANT_ENDED:
        holding["ended_deleted_at_ms"] = T
        holding["retained_since_ms"] = None
        holding["withdrawals_due"].clear()
    else:
        del holding["withdrawals_due"][cmd["subject"]]
    return (DONE, None)

# ---------------------------------------------------------------------------
# Subjects' requests (B 5.20)
# ---------------------------------------------------------------------------
def rule_file_subject_request(st, cmd, S, O, T):                     # B 5.20
    ds = st.datasets.get(cmd["dataset"])
    reject_if(ds is None, "dataset_unknown", cmd["dataset"])
    earliest = min(T + SUBJECT_REQUEST_DEADLINE_MS_MIN, U64_MAX)
    latest = min(T + SUBJECT_REQUEST_DEADLINE_MS_MAX, U64_MAX)
    reject_if(not earliest <= cmd["deadline_ms"] <= latest, "invalid_argument",
              "deadline not 1 to 60 days after filing")
    reject_if(cmd["id"] in st.subject_requests, "subject_request_duplicate")
    reject_if(len(st.subject_requests) >= SUBJECT_REQUESTS_OPEN_MAX, "overloaded",
              "too many open requests")
    open_by_intake = st.subject_requests_open_by_intake
    reject_if(open_by_intake.get(O, 0) >= SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX, "overloaded",
              "%s has too many open requests" % O)
    open_by_intake[O] = open_by_intake.get(O, 0) + 1
    st.subject_requests[cmd["id"]] = dict(cmd, owner=ds["owner"], intake=O, filed_at_ms=T)
    return (DONE, None)

def rule_answer_subject_request(st, cmd, S, O, T):                   # B 5.20
    reject_if(cmd["id"] not in st.subject_requests, "subject_request_unknown")
    if cmd["outcome"] == OUTCOME_REFUSED:
        text_check(cmd["reason"], REASON_BYTES_MAX, "reason")
    request = st.subject_requests.pop(cmd["id"])
    open_by_intake = st.subject_requests_open_by_intake
    open_by_intake[request["intake"]] -= 1
    if open_by_intake[request["intake"]] == 0:
        del open_by_intake[request["intake"]]
    counts = st.subject_request_counts.setdefault(
        request["owner"], {"answered": 0, "answered_late": 0, "refused": 0})
    counts["answered"] += 1
    counts["answered_late"] += T > request["deadline_ms"]
    counts["refused"] += cmd["outcome"] == OUTCOME_REFUSED
    return (DONE, None)

RULES = {ADMIT: rule_admit, REVOKE_MEMBER: rule_revoke_member, PUBLISH: rule_publish,
         ADD_NL: rule_add_nl, REMOVE_NL: rule_remove_nl, FILE_DEMAND: rule_file_demand,
         FILE_DEMAND_REASON: rule_file_demand, REFUSE_DEMAND: rule_refuse_demand,
         ISSUE_GRANT: rule_issue_grant, REVOKE_GRANT: rule_revoke_grant,
         RECORD_CONSENT: rule_consent, RECORD_CORRECTION: rule_correction,
         SET_AUTO: rule_set_auto, REMOVE_AUTO: rule_remove_auto, COSIGN: rule_cosign,
         COMMIT_SECRET: rule_commit_secret, CONFIRM_DELETION: rule_confirm_deletion,
         FILE_SUBJECT_REQUEST: rule_file_subject_request,
         ANSWER_SUBJECT_REQUEST: rule_answer_subject_request}

# ---------------------------------------------------------------------------
# RFC 6962 Merkle tree (main section 5, step 4)
# ---------------------------------------------------------------------------
def merkle_root(leaves):
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return sha256(b"\x00", leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha256(b"\x01", merkle_root(leaves[:k]), merkle_root(leaves[k:]))

# ---------------------------------------------------------------------------
# The file (main section 3, A section 2) and verification (main section 5)
# ---------------------------------------------------------------------------
def read_bundle(data):
    """-> (header, [archived commands]); BundleError on the errors of A section 2."""
    if len(data) < 12 or data[:8] != MAGIC:
        raise BundleError("not_a_bundle")
    version = int.from_bytes(data[8:12], "little")
    if version != FORMAT_VERSION:
        raise BundleError("unknown_format_version", "version %d" % version)
    pos = 12

    def piece(name, bound, decoder):
        nonlocal pos
        at = pos
        if pos + 4 > len(data):
            raise BundleError("corrupt", "%s at byte %d: length cut short" % (name, at))
        length = int.from_bytes(data[pos:pos + 4], "little")
        if length > bound:
            raise BundleError("corrupt", "%s at byte %d: over its bound" % (name, at))
        if pos + 4 + length > len(data):
            raise BundleError("corrupt", "%s at byte %d: cut short" % (name, at))
        r = Reader(data[pos + 4:pos + 4 + length])
        try:
            value = decoder(r)
            r.done()
        except Undecodable as e:
            raise BundleError("corrupt", "%s at byte %d: %s" % (name, at, e))
        pos += 4 + length
        return value

    header = piece("the header", HEADER_BYTES_MAX, lambda r: {
        "federation_name": r.string(), "ca_certificate_der": r.bytes(),
        "exported_by": r.take(32), "exported_at_ms": r.varint(),
        "from_entry": r.varint(), "to_entry": r.varint(), "command_count": r.varint()})
    commands = []
    for i in range(1, header["command_count"] + 1):
        commands.append(piece("command %d" % i, COMMAND_BYTES_MAX, lambda r: {
            "sequence": r.varint(), "log_index": r.varint(), "entry_time_ms": r.varint(),
            "envelope": r.bytes(), "accepted": r.bool()}))
    if pos != len(data):
        raise BundleError("corrupt", "%d bytes after the last command" % (len(data) - pos))
    return header, commands

def check_federation(header, commands, trusted_ca_der):
    """Main section 5 step 1 (after reading): other_federation, no_genesis."""
    if header["ca_certificate_der"] != trusted_ca_der:
        raise BundleError("other_federation")
    if not commands:
        raise BundleError("no_genesis", "no commands")
    try:
        wire = decode_wire(commands[0]["envelope"])
        genesis = decode_envelope_body(wire["body"], r_command)["payload"]
    except Undecodable as e:
        raise BundleError("no_genesis", "first command does not decode: %s" % e)
    if genesis["kind"] != GENESIS:
        raise BundleError("no_genesis", "first command is not a genesis")
    if genesis["federation_name"] != header["federation_name"] or \
            genesis["ca_certificate_der"] != header["ca_certificate_der"]:
        raise BundleError("no_genesis", "genesis names another federation or CA")
    return genesis

def failure(kind, seq=None, entry=None, leaf=None, detail=""):
    return {"command_sequence": seq, "access_entry": entry, "leaf": leaf,
            "kind": kind, "detail": detail}

def verify(data, trusted_ca_der, seen=(), require_anchored=False):
    """Main section 5, steps 1-7. -> report dict, or BundleError.

    Choices where the documents leave room (not settled by any vector):
    - failures are collected per command in log order (step 2's sequence_gap,
      then step 3, then step 5 for that command), then steps 7 and 6;
    - the replay's own outcome, not `accepted`, drives the state (a command
      the log accepted but the replay rejects makes no leaf);
    - `command_sequence` is the archived `sequence` field, and a
      release_not_allowed's `access_entry` is the position the entry would
      have taken (access_log_length before the command);
    - a malformed_command is reported whatever its `accepted` flag says.
    """
    header, commands = read_bundle(data)                                      # step 1
    genesis = check_federation(header, commands, trusted_ca_der)
    st, failures = State(), []
    for position, ac in enumerate(commands, start=1):
        seq = ac["sequence"]
        if seq != position:                                                    # step 2
            failures.append(failure("sequence_gap", seq, detail="at position %d" % position))
        try:                                                                   # step 3
            wire = decode_wire(ac["envelope"])
        except Undecodable as e:
            st.commands_applied += 1          # counts, changes nothing else (B 2.1)
            failures.append(failure("malformed_command", seq, detail=str(e)))
            continue
        entry_before = st.access_log_length
        outcome = apply(st, wire, ac["entry_time_ms"])
        if ac["accepted"] and outcome[0] == "err":
            detail = "%s: %s" % (outcome[1], outcome[2])
            if outcome[1] == "permit_not_justified":
                failures.append(failure("release_not_allowed", seq, entry_before,
                                        detail=detail))
            else:
                failures.append(failure("replay_rejected", seq, detail=detail))
        elif not ac["accepted"] and outcome[0] == "ok":
            failures.append(failure("replay_accepted", seq))
        cp = st.just_final                                                     # step 5
        if cp is not None:
            size, root, _ = cp["body"]
            if merkle_root(st.leaves[:size]) != root:
                failures.append(failure("checkpoint_root_mismatch", seq, leaf=size - 1))
            if not 2 * len(cp["cosigning_orgs"]) > cp["signer_orgs_in_force"]:
                failures.append(failure("checkpoint_quorum", seq))
    leaves = st.leaves
    full_root = merkle_root(leaves)
    for size, root in seen:                                                    # step 7
        # With every leaf at hand, the RFC 6962 consistency proof from (size, root)
        # to this tree verifies iff the first `size` leaves hash to `root`.
        if len(leaves) < size or merkle_root(leaves[:size]) != root:
            failures.append(failure("history_rewritten", leaf=size - 1,
                                    detail="seen (%d, %s)" % (size, root.hex())))
    anchored = st.last_checkpoint["body"][0] if st.last_checkpoint else 0     # step 6
    if require_anchored and len(leaves) > anchored:
        failures.append(failure("unanchored", leaf=anchored))
    last = st.last_checkpoint
    return {
        "ok": not failures, "federation": genesis["federation_name"],
        "commands": len(commands), "access_entries": st.access_log_length,
        "leaves": len(leaves), "permits": st.permits, "denials": st.denials,
        "checkpoints": st.checkpoints_final, "anchored_leaves": anchored,
        "unanchored_leaves": len(leaves) - anchored,
        "latest_checkpoint": None if last is None else {
            "tree_size": last["body"][0], "root": last["body"][1].hex(),
            "log_index": last["body"][2]},
        "root": full_root.hex(), "failures": failures,
    }

def verify_to_json(data, ca_der, seen=(), require_anchored=False):
    try:
        return verify(data, ca_der, seen, require_anchored)
    except BundleError as e:
        return {"error": e.name, "detail": e.detail}

def read_pem(path):
    text = open(path).read()
    b64 = text.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return base64.b64decode("".join(b64.split()))

def summarize(result):
    """A result in the shape of vectors.json's `expect`."""
    if "error" in result:
        return {"error": result["error"]}
    if result["failures"]:
        f = result["failures"][0]
        return {"failed": {k: f[k] for k in ("kind", "command_sequence", "access_entry",
                                             "leaf")}}
    keys = ("commands", "access_entries", "leaves", "permits", "denials", "checkpoints",
            "anchored_leaves", "unanchored_leaves", "root")
    return {"verified": {k: result[k] for k in keys}}

def run_vectors(directory):
    ca_der = read_pem(os.path.join(directory, "ca.pem"))
    vectors = json.load(open(os.path.join(directory, "vectors.json")))
    agree = 0
    for v in vectors:
        seen = [(s["tree_size"], bytes.fromhex(s["root"])) for s in v.get("seen", [])]
        data = open(os.path.join(directory, v["file"]), "rb").read()
        result = verify_to_json(data, ca_der, seen, v.get("require_anchored", False))
        got = summarize(result)
        same = got == v["expect"]
        agree += same
        print("%-34s %s\n  expected %s\n  got      %s" % (
            v["file"], "AGREE" if same else "DISAGREE",
            json.dumps(v["expect"], sort_keys=True), json.dumps(got, sort_keys=True)))
        if not same and result.get("failures"):
            print("  detail   %s" % result["failures"][0]["detail"])
    print("%d of %d vectors agree" % (agree, len(vectors)))
    return 0 if agree == len(vectors) else 1

def main(argv):
    if len(argv) == 1 and os.path.isdir(argv[0]):
        return run_vectors(argv[0])
    args, ca, seen, require = list(argv), None, [], False
    bundle = None
    while args:
        a = args.pop(0)
        if a == "--ca":
            ca = args.pop(0)
        elif a == "--seen":
            size, root = args.pop(0).split(":")
            seen.append((int(size), bytes.fromhex(root)))
        elif a == "--require-anchored":
            require = True
        else:
            bundle = a
    if bundle is None or ca is None:
        print(__doc__, file=sys.stderr)
        return 2
    result = verify_to_json(open(bundle, "rb").read(), read_pem(ca), seen, require)
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
