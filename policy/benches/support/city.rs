//! The benchmarks' federation: a CA, a hub, two departments and a street,
//! the enterprise registry and a grant of it to the street.

use civmesh_certs::{FederationCa, IssueRequest, NodeCertificate, NodeKey, OrgId, Role, SignedEnvelope};
use civmesh_policy::fixtures::{enterprise_dataset, statutory_grant, ENTERPRISES};
use civmesh_policy::{Command, SignedCommand};

pub const NOW_MS: u64 = 1_800_000_000_000;
pub const DAY_MS: u64 = 86_400_000;
pub const FEDERATION: &str = "bench city";

pub struct Node {
    pub key: NodeKey,
    pub certificate_der: Vec<u8>,
}

fn node(ca: &FederationCa, org: &str, role: Role) -> Node {
    let key = NodeKey::generate().unwrap();
    let request = IssueRequest::for_days(OrgId::new(org).unwrap(), role, key.node_id(), NOW_MS, 365).unwrap();
    let certificate_der = NodeCertificate::from_pem(&ca.issue(&request).unwrap()).unwrap().der().to_vec();
    Node { key, certificate_der }
}

pub struct City {
    _dir: tempfile::TempDir,
    pub ca_key: NodeKey,
    pub ca_der: Vec<u8>,
    pub hub: Node,
    pub market: Node,
    pub civil: Node,
    pub street: Node,
}

/// `make(index)` for every index of `indices`, computed on every core, in
/// index order.
pub fn on_every_core<T: Send>(indices: std::ops::Range<u64>, make: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let make = &make;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let indices = indices.clone();
                scope.spawn(move || {
                    (indices.start + thread..indices.end)
                        .step_by(threads as usize)
                        .map(|index| (index, make(index)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect();
        all.sort_by_key(|(index, _)| *index);
        all.into_iter().map(|(_, made)| made).collect()
    })
}

pub fn sign(key: &NodeKey, command: Command, at_ms: u64) -> SignedCommand {
    SignedEnvelope::sign(key, &command, at_ms).unwrap()
}

impl City {
    pub fn new() -> City {
        let dir = tempfile::tempdir().unwrap();
        let ca = FederationCa::init(&dir.path().join("ca"), FEDERATION, NOW_MS - DAY_MS, 3650).unwrap();
        let ca_key = NodeKey::load(&dir.path().join("ca").join("ca.key")).unwrap();
        let ca_der = civmesh_certs::CaCertificate::from_pem(ca.certificate_pem()).unwrap().der().to_vec();
        City {
            hub: node(&ca, "hub/city", Role::Hub),
            market: node(&ca, "dept/market-supervision", Role::Department),
            civil: node(&ca, "dept/civil-affairs", Role::Department),
            street: node(&ca, "street/jingansi", Role::Street),
            ca_key,
            ca_der,
            _dir: dir,
        }
    }

    /// Genesis at `NOW_MS`, the registry published at +1 ms and granted
    /// to the street (`fields`, a year) at +2 ms, each with its entry time.
    pub fn setup(&self, fields: &[&str]) -> Vec<(SignedCommand, u64)> {
        let genesis = Command::Genesis {
            federation_name: FEDERATION.into(),
            ca_certificate_der: self.ca_der.clone(),
            founding_member_certificates_der: [&self.hub, &self.market, &self.civil, &self.street]
                .iter()
                .map(|n| n.certificate_der.clone())
                .collect(),
        };
        let street_org = OrgId::new("street/jingansi").unwrap();
        let grant = statutory_grant(
            ENTERPRISES,
            &street_org,
            fields,
            "inspection",
            NOW_MS - DAY_MS..NOW_MS + 365 * DAY_MS,
        );
        vec![
            (sign(&self.ca_key, genesis, NOW_MS), NOW_MS),
            (sign(&self.market.key, Command::PublishDataset(enterprise_dataset()), NOW_MS + 1), NOW_MS + 1),
            (sign(&self.market.key, Command::IssueGrant(grant), NOW_MS + 2), NOW_MS + 2),
        ]
    }
}
