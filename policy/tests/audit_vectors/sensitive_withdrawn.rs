//! The vectors of the separate consent for sensitive fields (Art. 29)
//! withdrawn alone: a consent recorded again still given but no longer
//! covering sensitive fields makes its subject's copies due for deletion
//! only at holders of grants relying on the consent that grant a field
//! whose class in the dataset is sensitive (Appendix B 5.11, 5.19
//! "withdrawal"). Receipts accepted and refused under a final checkpoint,
//! then tampered copies a verifier without that rule, or applying it to
//! every grant, gets wrong.

use civmesh_certs::NodeKey;
use civmesh_policy::deletion::DeletionCause;
use civmesh_policy::fixtures::RETENTION;
use civmesh_policy::GrantSpec;

use super::deletions::{receipt, release, resident_hash};
use super::*;

/// The resident whose consent is recorded three times.
const RESIDENT: u8 = 14;

// Where some commands are in the bundle (`08`).
/// The consent recorded again, given without the sensitive fields.
const SENSITIVE_WITHDRAWAL: u64 = 22;
/// The street's receipt for the subject under grant 2 (sensitive): accepted.
const SENSITIVE_RECEIPT: u64 = 23;
/// The street's receipt for the subject under grant 3 (names): not due.
const NAMES_RECEIPT: u64 = 24;
/// The street's receipt under grant 2 again, after the consent was
/// recorded once more without the sensitive fields: not due.
const SENSITIVE_RECEIPT_AGAIN: u64 = 26;
/// The last command before the closing access and checkpoint.
const LAST_STEP: u64 = 28;
/// The cosignature that makes the checkpoint over leaf 11 final.
const FINAL_COSIGNATURE: u64 = 31;

/// A grant of residents' `fields` to the street for elderly care, under
/// consent, with the fixtures' retention and `assessment`.
fn by_consent(fx: &Fixture, fields: &[&str], assessment: bool) -> GrantSpec {
    GrantSpec {
        legal_basis: LegalBasis::Consent,
        retention: Some(RETENTION),
        assessment: assessment.then_some(ASSESSMENT),
        ..grant_spec(RESIDENTS, &fx.jingansi.org, fields, "elderly-care")
    }
}

/// The resident's consent to the street's elderly care.
fn consent(fx: &Fixture, given: bool, covers_sensitive: bool) -> Command {
    Command::RecordConsent {
        subject: resident_hash(fx, RESIDENT),
        dataset: RESIDENTS.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: "elderly-care".into(),
        given,
        covers_sensitive,
        channel: "street_window".into(),
    }
}

/// Commands 16 to 28, with the code each is refused with (`None`:
/// accepted): the residents published; grants 2 (name and the sensitive
/// flag) and 3 (name alone) to the street under consent; the consent given
/// with the sensitive fields; a release under each grant; the consent
/// given again without them; the street's receipts for the subject under
/// grant 2 (due) and grant 3 (not due); the consent recorded without them
/// once more (no withdrawal: they were not covered); the receipt under
/// grant 2 again (not due); the consent withdrawn; the receipt under
/// grant 3 again (now due).
fn steps(fx: &Fixture) -> Vec<(&NodeKey, Command, Option<RejectionCode>)> {
    let (civil, street) = (&fx.civil.key, &fx.jingansi.key);
    let resident = resident_hash(fx, RESIDENT);
    let care = (RESIDENTS, "elderly-care");
    let withdrawn = || DeletionCause::ConsentWithdrawn { subject: resident };
    vec![
        (civil, Command::PublishDataset(resident_dataset()), None),
        (civil, Command::IssueGrant(by_consent(fx, &["name", "lives_alone_80_plus"], true)), None),
        (civil, Command::IssueGrant(by_consent(fx, &["name"], false)), None),
        (civil, consent(fx, true, true), None),
        (civil, release(street, care, resident, &["name", "lives_alone_80_plus"], 2), None),
        (civil, release(street, care, resident, &["name"], 3), None),
        (civil, consent(fx, true, false), None),
        (street, receipt(2, withdrawn(), &[resident]), None),
        (street, receipt(3, withdrawn(), &[resident]), Some(RejectionCode::DeletionNotDue)),
        (civil, consent(fx, true, false), None),
        (street, receipt(2, withdrawn(), &[resident]), Some(RejectionCode::DeletionNotDue)),
        (civil, consent(fx, false, false), None),
        (street, receipt(3, withdrawn(), &[resident]), None),
    ]
}

/// `log` and commands 16 to 28, then a denial (29, leaf 11) and a final
/// checkpoint over it (30, 31): its root binds every outcome before it.
fn with_sensitive_withdrawn(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let steps = steps(fx).into_iter().map(|(key, command, refused)| step(key, command, refused));
    let mut more = continued(log, steps);
    assert_eq!(more.commands.len() as u64, LAST_STEP);
    let street = fx.jingansi.key.node_id();
    let due = |grant: u64| more.state.holdings[&grant][&street].withdrawals_due.len();
    // The withdrawal (27) made the subject due under grant 2 again.
    assert_eq!((due(2), due(3)), (1, 0));
    let last = (&fx.market.key, access(&fx.jingansi.key, 13, None, false));
    close_with_checkpoint(&mut more, NOW_MS, last, [&fx.hub.key, &fx.market.key], (11, FINAL_COSIGNATURE));
    more
}

/// The bundle, and copies whose flags or commands the replay of the
/// sensitive-only withdrawal contradicts.
pub(super) fn sensitive_withdrawal_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    use FailureKind::*;
    let withdrawn = with_sensitive_withdrawn(fx, log);
    let summary = Summary {
        commands: FINAL_COSIGNATURE,
        access_entries: 11,
        leaves: 11,
        permits: 8,
        denials: 3,
        checkpoints: 3,
        anchored_leaves: 11,
        root: hex_root(&withdrawn, 11),
        ..genuine_summary(log)
    };
    let replay_failed = |kind, sequence| failed(kind, Some(sequence), None, None);
    let tampered = |tamper: &dyn Fn(&mut Vec<ArchivedCommand>)| tampered(&withdrawn, tamper);
    vec![
        made(
            "08-sensitive-withdrawn.bundle",
            "00, then: the residents published (16); grant 2 (name and the sensitive flag lives_alone_80_plus, \
             with an impact assessment) and grant 3 (name alone) to the street for elderly care, under \
             consent, with a retention (17, 18); a resident's consent given with the sensitive fields \
             (19); a release to the street under each grant (20: the sensitive flag, 21: the name); the \
             consent recorded again, still given but without the sensitive fields (22: the separate \
             consent for them withdrawn alone); the street's receipts for the subject under grant 2 (23: \
             accepted, it grants a sensitive field) and grant 3 (24: deletion_not_due, it grants none); \
             the consent recorded without the sensitive fields once more (25: no withdrawal, they were \
             not covered); the receipt under grant 2 again (26: deletion_not_due); the consent withdrawn \
             (27); the receipt under grant 3 again (28: accepted); a denial and a final checkpoint at 11",
            encoded(&withdrawn, withdrawn.commands.clone()),
            Expect::Verified(summary),
        ),
        made(
            "55-sensitive-withdrawal-receipt-marked-rejected.bundle",
            "08 with command 23, the receipt under the grant of a sensitive field after the sensitive \
             consent alone was withdrawn, marked rejected (a verifier that makes nothing due when the \
             consent stays given agrees with the flag)",
            tampered(&|c| c[index(SENSITIVE_RECEIPT)].accepted = false),
            replay_failed(ReplayAccepted, SENSITIVE_RECEIPT),
        ),
        made(
            "56-names-receipt-marked-accepted.bundle",
            "08 with command 24, the receipt under the grant of no sensitive field after the sensitive \
             consent alone was withdrawn, marked accepted (a verifier that makes the subject due at every \
             grant relying on the consent agrees with the flag)",
            tampered(&|c| c[index(NAMES_RECEIPT)].accepted = true),
            replay_failed(ReplayRejected, NAMES_RECEIPT),
        ),
        made(
            "57-sensitive-withdrawal-dropped.bundle",
            "08 with the consent recorded without the sensitive fields (22) left out, renumbered: the \
             receipt under grant 2 (23, now 22) is not due",
            tampered(&|c| {
                c.remove(index(SENSITIVE_WITHDRAWAL));
                renumber(c);
            }),
            replay_failed(ReplayRejected, SENSITIVE_RECEIPT - 1),
        ),
        made(
            "58-sensitive-receipt-again-marked-accepted.bundle",
            "08 with command 26, the receipt under grant 2 after the consent was recorded without the \
             sensitive fields a second time, marked accepted (a verifier that takes any consent recorded \
             given without them over one given for a withdrawal agrees with the flag)",
            tampered(&|c| c[index(SENSITIVE_RECEIPT_AGAIN)].accepted = true),
            replay_failed(ReplayRejected, SENSITIVE_RECEIPT_AGAIN),
        ),
    ]
}
