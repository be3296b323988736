//! The republication vectors: a new version of a dataset may not make a
//! field granted under a grant still in force personal or sensitive
//! without the retention or the impact assessment that grant would then
//! need (Appendix B 5.4 step 7). Grants not yet valid are in force; grants
//! revoked, or whose window ended at the entry time, are not. Refused and
//! accepted republications under a final checkpoint, then tampered copies
//! the replay catches with the grants it keeps.

use civmesh_policy::model::{FieldClass, SensitiveCategory};
use civmesh_policy::{DatasetSpec, GrantSpec};

use super::*;

/// How long after [`NOW_MS`] grant 3's window ends.
const GRANT_3_MS: u64 = 60_000;
/// When grant 3 ends, and the entry time of the bundle's last commands.
const END_MS: u64 = NOW_MS + GRANT_3_MS;

// Where some commands are in the republication bundle (`07`).
/// The republication refused for want of grant 2's retention.
const RETENTION_REFUSED: u64 = 18;
/// The republication making grant 3's field sensitive, at its end.
const AT_GRANT_END: u64 = 23;
/// Grant 2 revoked, then the republication it no longer refuses.
const REVOCATION: u64 = 24;
const AFTER_REVOCATION: u64 = 25;
/// The cosignature that makes the checkpoint over leaf 9 final.
const FINAL_COSIGNATURE: u64 = 28;

/// The enterprise registry with each of `changes` (a field, its new class)
/// made, and `title`.
fn republished(title: &str, changes: &[(&str, FieldClass)]) -> Command {
    let mut spec = DatasetSpec { title: title.into(), ..enterprise_dataset() };
    for (name, class) in changes {
        let field = spec.fields.iter_mut().find(|field| field.name == *name).unwrap();
        field.class = *class;
    }
    Command::PublishDataset(spec)
}

fn personal(name: &str) -> (&str, FieldClass) {
    (name, FieldClass::Personal)
}

fn sensitive(name: &str) -> (&str, FieldClass) {
    (name, FieldClass::Sensitive(SensitiveCategory::Whereabouts))
}

/// Commands 16 to 25: grants 2 (not yet valid) and 3 (ending a minute
/// later), both to the other street, with public fields and no retention;
/// republications refused: `name` made personal (grant 2 has no
/// retention; grant 1 has one), `operating_address` made sensitive (grant
/// 1 names no assessment), `name` made sensitive (grant 1, checked first,
/// names no assessment; grant 2 would lack its retention), `name` made
/// personal with a title of white space (the schema is checked first),
/// `street` made sensitive (grant 3 states neither: its retention is
/// checked first); a minute later, `street` made sensitive at grant 3's
/// end (accepted: it ended), grant 2 revoked, `name` made personal
/// (accepted).
fn republications(fx: &Fixture) -> Vec<Step<'_>> {
    use RejectionCode::*;
    let market = &fx.market.key;
    let other = &fx.nanjingxilu.org;
    let title = enterprise_dataset().title;
    let not_yet_valid = GrantSpec {
        valid_from_ms: NOW_MS + DAY_MS,
        retention: None,
        ..grant_spec(ENTERPRISES, other, &["name", "registered_address"], "inspection")
    };
    let ending = GrantSpec {
        valid_from_ms: NOW_MS - DAY_MS,
        valid_until_ms: END_MS,
        retention: None,
        ..grant_spec(ENTERPRISES, other, &["street"], "inspection")
    };
    let now = |command, refused| Step { key: market, at_ms: NOW_MS, command, refused };
    let at_end = |command, refused| Step { key: market, at_ms: END_MS, command, refused };
    vec![
        now(Command::IssueGrant(not_yet_valid), None),
        now(Command::IssueGrant(ending), None),
        now(republished(&title, &[personal("name")]), Some(RetentionMissing)),
        now(republished(&title, &[sensitive("operating_address")]), Some(AssessmentMissing)),
        now(republished(&title, &[sensitive("name")]), Some(AssessmentMissing)),
        now(republished(" \u{3000}", &[personal("name")]), Some(InvalidArgument)),
        now(republished(&title, &[sensitive("street")]), Some(RetentionMissing)),
        at_end(republished(&title, &[sensitive("street")]), None),
        at_end(Command::RevokeGrant { grant_id: 2, reason: "the campaign was called off".into() }, None),
        at_end(republished(&title, &[personal("name")]), None),
    ]
}

/// `log` and the republication commands (16 to 25), then an access under
/// grant 1 (26, leaf 9) and a final checkpoint over it (27, 28): its root
/// binds every outcome before it.
fn with_republications(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut more = continued(log, republications(fx));
    assert_eq!(more.commands.len() as u64, AFTER_REVOCATION);
    let registry = &more.state.datasets[ENTERPRISES];
    assert_eq!(registry.version, 3, "published, then republished twice");
    assert_eq!(registry.field("name").map(|field| field.class), Some(FieldClass::Personal));
    let last = (&fx.market.key, access(&fx.jingansi.key, 15, Some(1), true));
    close_with_checkpoint(&mut more, END_MS, last, [&fx.hub.key, &fx.civil.key], (9, FINAL_COSIGNATURE));
    more
}

/// The republication bundle, and copies whose flags, commands or entry
/// times the replay of the grants in force contradicts.
pub(super) fn republication_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    use FailureKind::*;
    let republications = with_republications(fx, log);
    let summary = Summary {
        commands: FINAL_COSIGNATURE,
        access_entries: 9,
        leaves: 9,
        permits: 7,
        checkpoints: 3,
        anchored_leaves: 9,
        root: hex_root(&republications, 9),
        ..genuine_summary(log)
    };
    let replay_failed = |kind, sequence| failed(kind, Some(sequence), None, None);
    let tampered = |tamper: &dyn Fn(&mut Vec<ArchivedCommand>)| tampered(&republications, tamper);
    vec![
        made(
            "07-republished.bundle",
            "00, then: grant 2 (name and registered address to the other street, valid from the next day, \
             no retention: no personal field) and grant 3 (the street field to the other street, ending a \
             minute later, no retention) issued (16, 17); new versions of the enterprise registry refused: \
             the name made personal (18: grant 2, not yet valid, is in force and states no retention; \
             grant 1 states one), the operating address made sensitive (19: grant 1 names no impact \
             assessment), the name made sensitive (20: refused for grant 1's assessment, checked first, \
             not grant 2's retention), the name made personal with a title of white space (21: refused \
             for the title), the street field made sensitive (22: grant 3 states neither a retention nor \
             an assessment, refused for the retention); a minute later, at grant 3's end, the street field \
             made sensitive (23: accepted, grant 3 ended), grant 2 revoked (24), the name made personal \
             (25: accepted); an access under grant 1 and a final checkpoint at 9",
            encoded(&republications, republications.commands.clone()),
            Expect::Verified(summary),
        ),
        made(
            "52-republish-refused-marked-accepted.bundle",
            "07 with command 18, the name made personal under grant 2, which states no retention, marked \
             accepted",
            tampered(&|c| c[index(RETENTION_REFUSED)].accepted = true),
            replay_failed(ReplayRejected, RETENTION_REFUSED),
        ),
        made(
            "53-republish-revocation-dropped.bundle",
            "07 with grant 2's revocation (24) left out, renumbered: the name made personal (25, now 24) \
             is refused, grant 2 still in force",
            tampered(&|c| {
                c.remove(index(REVOCATION));
                renumber(c);
            }),
            replay_failed(ReplayRejected, AFTER_REVOCATION - 1),
        ),
        made(
            "54-republish-before-grant-end.bundle",
            "07 with command 23, the street field made sensitive, 1 ms before grant 3's end: refused, \
             grant 3 still in force with no retention",
            tampered(&|c| c[index(AT_GRANT_END)].entry_time_ms = END_MS - 1),
            replay_failed(ReplayRejected, AT_GRANT_END),
        ),
    ]
}
