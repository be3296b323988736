//! A small federation for policy tests: a CA, a hub, two departments, two
//! streets and an auditor, with genesis applied and two datasets published.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

pub mod recorded;

use civmesh_certs::{FederationCa, IssueRequest, NodeCertificate, NodeKey, OrgId, Role, SignedEnvelope};
use civmesh_policy::fixtures::{city_node, statutory_grant};
pub use civmesh_policy::fixtures::{enterprise_dataset, resident_dataset, ENTERPRISES, RESIDENTS};
use civmesh_policy::model::{FieldValue, SubjectKeyHash};
use civmesh_policy::{Applied, Command, GrantSpec, PolicyState, RecordFacts, Rejection, SignedCommand};

pub const NOW_MS: u64 = 1_800_000_000_000;
pub const DAY_MS: u64 = 86_400_000;

pub struct Node {
    pub key: NodeKey,
    pub certificate_der: Vec<u8>,
    pub org: OrgId,
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub ca: FederationCa,
    pub ca_key: NodeKey,
    pub hub: Node,
    pub market: Node,
    pub civil: Node,
    pub jingansi: Node,
    pub nanjingxilu: Node,
    pub auditor: Node,
    /// Issued but not admitted.
    pub outsider: Node,
    /// Genesis applied, both datasets published.
    pub state: PolicyState,
}

/// A key and certificate for the demo city's node `name`.
fn city(ca: &FederationCa, name: &str) -> Node {
    let city_node = city_node(name).unwrap();
    node(ca, city_node.org, city_node.role)
}

/// A key and a certificate for a node of `org` in `role`, not yet admitted.
pub fn node(ca: &FederationCa, org: &str, role: Role) -> Node {
    let key = NodeKey::generate().unwrap();
    let org = OrgId::new(org).unwrap();
    let request = IssueRequest::for_days(org.clone(), role, key.node_id(), NOW_MS, 365).unwrap();
    let certificate_der = NodeCertificate::from_pem(&ca.issue(&request).unwrap()).unwrap().der().to_vec();
    Node { key, certificate_der, org }
}

/// Signs `command` as `key` and applies it at [`NOW_MS`].
pub fn apply(state: &mut PolicyState, key: &NodeKey, command: Command) -> Result<Applied, Rejection> {
    state.apply(&sign(key, command), NOW_MS)
}

/// What `before` becomes when a command is rejected, given the state
/// `after` it: the counter moves on, the entry time is the latest, and
/// the replay window (the spent nonce, expired ones) and the digest are
/// `after`'s.
/// Nothing else may change.
pub fn after_rejection(before: &PolicyState, after: &PolicyState) -> PolicyState {
    let mut expected = before.clone();
    expected.commands_applied += 1;
    expected.last_entry_time_ms = after.last_entry_time_ms;
    expected.recent_commands = after.recent_commands.clone();
    expected.digest = after.digest;
    expected
}

pub fn sign(key: &NodeKey, command: Command) -> SignedCommand {
    SignedEnvelope::sign(key, &command, NOW_MS).unwrap()
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = FederationCa::init(&ca_dir, "test city", NOW_MS - DAY_MS, 3650).unwrap();
        let ca_key = NodeKey::load(&ca_dir.join("ca.key")).unwrap();
        let [hub, market, civil, jingansi, nanjingxilu, auditor] =
            ["hub", "market", "civil", "jingansi", "nanjingxilu", "auditor"].map(|name| city(&ca, name));
        let outsider = node(&ca, "street/outsider", Role::Street);
        let ca_der = civmesh_certs::CaCertificate::from_pem(ca.certificate_pem()).unwrap().der().to_vec();
        let mut state = PolicyState::default();
        let genesis = Command::Genesis {
            federation_name: "test city".into(),
            ca_certificate_der: ca_der,
            founding_member_certificates_der: [&hub, &market, &civil, &jingansi, &nanjingxilu, &auditor]
                .iter()
                .map(|node| node.certificate_der.clone())
                .collect(),
        };
        state.apply(&sign(&ca_key, genesis), NOW_MS).unwrap();
        let mut fixture = Fixture {
            _dir: dir,
            ca,
            ca_key,
            hub,
            market,
            civil,
            jingansi,
            nanjingxilu,
            auditor,
            outsider,
            state,
        };
        let enterprises = Command::PublishDataset(enterprise_dataset());
        let residents = Command::PublishDataset(resident_dataset());
        apply(&mut fixture.state, &fixture.market.key, enterprises).unwrap();
        apply(&mut fixture.state, &fixture.civil.key, residents).unwrap();
        fixture
    }

    pub fn grant(&mut self, spec: GrantSpec) -> u64 {
        let owner = if spec.dataset == ENTERPRISES { &self.market.key } else { &self.civil.key };
        match apply(&mut self.state, owner, Command::IssueGrant(spec)).unwrap() {
            Applied::GrantIssued(id) => id,
            other => panic!("expected a grant id, got {other:?}"),
        }
    }
}

/// The impact assessment the tests' grants of sensitive fields name.
pub const ASSESSMENT: civmesh_policy::deletion::AssessmentDigest =
    civmesh_policy::deletion::AssessmentDigest([0xa5; 32]);

pub fn grant_spec(dataset: &str, grantee: &OrgId, fields: &[&str], purpose: &str) -> GrantSpec {
    statutory_grant(dataset, grantee, fields, purpose, NOW_MS - DAY_MS..NOW_MS + 30 * DAY_MS)
}

/// A candidate record for `decide`.
pub struct Row {
    pub subject: SubjectKeyHash,
    pub values: BTreeMap<String, FieldValue>,
}

impl RecordFacts for Row {
    fn subject(&self) -> SubjectKeyHash {
        self.subject
    }
    fn value(&self, field: &str) -> Option<&FieldValue> {
        self.values.get(field)
    }
}

/// Signs `command` as `key` at `at_ms` and applies it at that entry time.
pub fn apply_at(
    state: &mut PolicyState,
    key: &NodeKey,
    command: Command,
    at_ms: u64,
) -> Result<Applied, Rejection> {
    state.apply(&SignedEnvelope::sign(key, &command, at_ms).unwrap(), at_ms)
}

impl Fixture {
    /// A node of `org` in `role`, admitted by the hub at [`NOW_MS`].
    pub fn admit(&mut self, org: &str, role: Role) -> Node {
        let admitted = node(&self.ca, org, role);
        let command = Command::AdmitMember { certificate_der: admitted.certificate_der.clone() };
        apply(&mut self.state, &self.hub.key, command).unwrap();
        admitted
    }
}
