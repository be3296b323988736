//! Commands an operator made through the console (`Command::ByOperator`):
//! decided by the signer's authority exactly as the command alone, with the
//! operator's name kept; only people's decisions may be wrapped, once, and
//! a refused wrapper still spends its nonce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use civmesh_policy::{Applied, Command, RejectionCode};
use support::*;

fn by(operator: &str, command: Command) -> Command {
    Command::ByOperator { operator: operator.into(), command: Box::new(command) }
}

#[test]
fn a_wrapped_grant_is_issued_as_the_grant_alone_would_be() {
    let mut fx = Fixture::new();
    let street = fx.nanjingxilu.org.clone();
    let spec = grant_spec(ENTERPRISES, &street, &["name"], "street-inspection");
    let issued = apply(&mut fx.state, &fx.market.key, by("王芳", Command::IssueGrant(spec.clone()))).unwrap();
    let Applied::GrantIssued(id) = issued else { panic!("{issued:?}") };
    assert_eq!(fx.state.grants[&id].grantee, street);
    // The owner's authority still decides: another organisation may not.
    let refused = apply(&mut fx.state, &fx.civil.key, by("王芳", Command::IssueGrant(spec))).unwrap_err();
    assert_eq!(refused.code, RejectionCode::NotAuthorised);
}

#[test]
fn only_peoples_decisions_may_be_wrapped_once_by_a_named_operator() {
    let revoke = Command::RevokeGrant { grant_id: 1, reason: "done".into() };
    let cases: Vec<(&str, Command, RejectionCode)> = vec![
        ("an empty name", by(" ", revoke.clone()), RejectionCode::InvalidArgument),
        ("a name too long", by(&"名".repeat(43), revoke.clone()), RejectionCode::InvalidArgument),
        ("a control character", by("李\n伟", revoke.clone()), RejectionCode::InvalidArgument),
        ("a wrapper in a wrapper", by("李伟", by("李伟", revoke.clone())), RejectionCode::NotAuthorised),
        (
            "a checkpoint cosignature",
            by("李伟", Command::CommitSubjectKeySecret { commitment: [0; 32] }),
            RejectionCode::NotAuthorised,
        ),
    ];
    for (case, command, code) in cases {
        let mut fx = Fixture::new();
        let street = fx.nanjingxilu.org.clone();
        fx.grant(grant_spec(ENTERPRISES, &street, &["name"], "street-inspection"));
        let envelope = sign(&fx.market.key, command);
        let refused = fx.state.apply(&envelope, NOW_MS).unwrap_err();
        assert_eq!(refused.code, code, "{case}: {refused}");
        // Its nonce is spent: the same envelope is a replay now.
        let again = fx.state.apply(&envelope, NOW_MS).unwrap_err();
        assert_eq!(again.code, RejectionCode::Replayed, "{case}");
        assert!(fx.state.grants[&1].revoked.is_none(), "{case}: nothing changed");
    }
}

#[test]
fn a_third_wrapper_does_not_decode_however_deep_the_nesting() {
    let mut fx = Fixture::new();
    let revoke = Command::RevokeGrant { grant_id: 1, reason: "done".into() };
    let three = by("李伟", by("李伟", by("李伟", revoke)));
    let refused = apply(&mut fx.state, &fx.market.key, three).unwrap_err();
    assert_eq!(refused.code, RejectionCode::SignatureInvalid, "{refused}");
    // A million wrappers (2 MB, under the envelope's bound) fail to decode
    // on a thread with a small stack, rather than overflowing it.
    let mut bytes = [20u8, 0].repeat(1_000_000);
    bytes.extend_from_slice(&[8, 1, 1, b'x']);
    let decoded = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            civmesh_certs::codec::decode_exact::<Command>(&bytes, civmesh_certs::codec::DECODE_BYTES_MAX)
                .is_ok()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(!decoded);
}
