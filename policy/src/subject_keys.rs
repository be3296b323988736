//! Pairwise subject keys: who can tell which citizen an access names.
//!
//! Subjects enter the log only as keyed hashes ([`SubjectKeyHash`]). The key
//! is not one federation-wide secret every node holds: it is the pair key
//! of the dataset's owner organisation and the requesting organisation,
//! `K(O, R) = HMAC(org key of O, label ‖ R)`, where the org key of O is
//! `HMAC(federation secret, label ‖ O)`. A node holds its own org key only;
//! the owner derives `K(O, R)` for a requester and hands it to R's nodes,
//! and nobody else. The federation secret is the auditor's: it derives
//! every pair key. So only the owner, the requester and an auditor can link
//! an entry to a record key, and two organisations' accesses to one
//! subject carry unrelated hashes. Consents the owner records for grantee R
//! are keyed by `K(O, R)` too, so apply matches them to R's releases.

use std::collections::BTreeMap;

use civmesh_certs::OrgId;

use crate::model::SubjectKeyHash;

/// The label of an organisation's key (it holds a NUL, which no
/// organisation name may).
pub const ORG_SUBJECT_KEY_LABEL: &[u8] = b"civmesh/org-subject-key/v1\0";
/// The label of a pair key.
pub const PAIR_SUBJECT_KEY_LABEL: &[u8] = b"civmesh/pair-subject-key/v1\0";
/// The bytes of an org or pair key.
pub const SUBJECT_KEY_BYTES: usize = 32;

fn hmac(key: &[u8], label: &[u8], org: &OrgId) -> [u8; SUBJECT_KEY_BYTES] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(label);
    context.update(org.as_str().as_bytes());
    let mut out = [0u8; SUBJECT_KEY_BYTES];
    out.copy_from_slice(context.sign().as_ref());
    out
}

/// Organisation `org`'s subject key, from the federation's subject-key
/// secret (which only the CA's custodian and auditors hold).
pub fn org_subject_key(federation_secret: &[u8], org: &OrgId) -> [u8; SUBJECT_KEY_BYTES] {
    hmac(federation_secret, ORG_SUBJECT_KEY_LABEL, org)
}

/// The key of the subjects `requester` asks the owner about, from the
/// owner organisation's key.
pub fn pair_subject_key(
    owner_org_key: &[u8; SUBJECT_KEY_BYTES],
    requester: &OrgId,
) -> [u8; SUBJECT_KEY_BYTES] {
    hmac(owner_org_key, PAIR_SUBJECT_KEY_LABEL, requester)
}

/// The auditor's view of one record key: its hash in the entries of every
/// (owner, requester) pair, each derived once.
pub struct SubjectLookup {
    federation_secret: Vec<u8>,
    record_key: String,
    hashes: BTreeMap<(OrgId, OrgId), SubjectKeyHash>,
}

impl SubjectLookup {
    /// The most pairs kept; past it the map starts again (each is cheap to
    /// derive, and a city has a few thousand pairs that talk).
    pub const PAIRS_MAX: usize = 65_536;

    /// A lookup of `record_key` under the federation's secret.
    pub fn new(federation_secret: &[u8], record_key: &str) -> Self {
        SubjectLookup {
            federation_secret: federation_secret.to_vec(),
            record_key: record_key.to_string(),
            hashes: BTreeMap::new(),
        }
    }

    /// The record key's hash in entries of `requester` at `owner`.
    pub fn hash(&mut self, owner: &OrgId, requester: &OrgId) -> SubjectKeyHash {
        let pair = (owner.clone(), requester.clone());
        if let Some(hash) = self.hashes.get(&pair) {
            return *hash;
        }
        if self.hashes.len() >= Self::PAIRS_MAX {
            self.hashes.clear();
        }
        let pair_key = pair_subject_key(&org_subject_key(&self.federation_secret, owner), requester);
        let hash = SubjectKeyHash::of(&pair_key, &self.record_key);
        self.hashes.insert(pair, hash);
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(name: &str) -> OrgId {
        OrgId::new(name).unwrap()
    }

    #[test]
    fn each_pair_hashes_a_subject_differently_and_the_auditor_derives_each() {
        let secret = b"federation secret";
        let (market, civil) = (org("dept/market"), org("dept/civil"));
        let (jingansi, nanjingxilu) = (org("street/jingansi"), org("street/nanjingxilu"));
        let market_key = org_subject_key(secret, &market);
        assert_ne!(market_key, org_subject_key(secret, &civil));
        assert_ne!(market_key, org_subject_key(b"another secret", &market));
        let hash =
            |owner_key, requester| SubjectKeyHash::of(&pair_subject_key(owner_key, requester), "310101");
        let at_market_for_jingansi = hash(&market_key, &jingansi);
        assert_ne!(at_market_for_jingansi, hash(&market_key, &nanjingxilu));
        assert_ne!(at_market_for_jingansi, hash(&org_subject_key(secret, &civil), &jingansi));
        let mut lookup = SubjectLookup::new(secret, "310101");
        assert_eq!(lookup.hash(&market, &jingansi), at_market_for_jingansi);
        assert_eq!(lookup.hash(&market, &jingansi), at_market_for_jingansi, "the same, kept");
        assert_ne!(SubjectLookup::new(secret, "310102").hash(&market, &jingansi), at_market_for_jingansi);
    }
}
