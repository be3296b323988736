//! Pairwise subject keys on a node ([`civmesh_policy::subject_keys`]): an
//! owner derives a requesting organisation's key from its own org key and
//! gives it to that organisation's nodes only; a requester asks each owner
//! organisation once and keeps the key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use civmesh_certs::{NodeId, OrgId};
use civmesh_consensus::RaftPeer;
use civmesh_policy::subject_keys::{pair_subject_key, SUBJECT_KEY_BYTES};
use civmesh_policy::PolicyState;

use super::requester::owner_answer;
use super::{AskError, PairKeyAnswer, QueryProtocolMessage, QueryService};

/// The most pair keys a requester keeps: one per owner organisation.
pub const PAIR_KEYS_KEPT_MAX: usize = 4_096;

/// An org or pair key.
pub type SubjectKey = [u8; SUBJECT_KEY_BYTES];

/// This node's subject keys: its organisation's key (to answer as an
/// owner) and the pair keys owners gave it (to ask as a requester).
pub struct SubjectKeys {
    org_key: Option<SubjectKey>,
    pair_keys: Mutex<BTreeMap<OrgId, SubjectKey>>,
}

impl SubjectKeys {
    /// Keys with this organisation's key, if the node has one.
    pub fn new(org_key: Option<SubjectKey>) -> Self {
        SubjectKeys { org_key, pair_keys: Mutex::new(BTreeMap::new()) }
    }

    /// The owner's side: the key of the subjects `requester` names.
    pub fn for_requester(&self, requester: &OrgId) -> Option<SubjectKey> {
        self.org_key.map(|org_key| pair_subject_key(&org_key, requester))
    }

    /// The owner's side: the key of the subjects `peer` names, if `policy`
    /// has it as an active member. For callers already reading the state
    /// (its lock must not be taken twice).
    pub fn for_member(&self, policy: &PolicyState, peer: &NodeId) -> Option<SubjectKey> {
        self.for_requester(&policy.active_member(peer)?.org)
    }

    fn kept(&self, owner: &OrgId) -> Option<SubjectKey> {
        self.pair_keys.lock().ok()?.get(owner).copied()
    }

    fn keep(&self, owner: OrgId, key: SubjectKey) {
        if let Ok(mut kept) = self.pair_keys.lock() {
            if kept.len() >= PAIR_KEYS_KEPT_MAX {
                kept.clear();
            }
            kept.insert(owner, key);
        }
    }
}

impl QueryService {
    /// The owner's side: the key of the subjects `peer` names, if it is an
    /// active member and this node has its organisation's key.
    pub fn pair_key_of(&self, peer: &NodeId) -> Option<SubjectKey> {
        self.log.state().read(|applied| self.subject_keys.for_member(&applied.policy, peer))
    }

    /// Answers [`QueryProtocolMessage::PairKey`] from `peer`, signed.
    pub(super) fn answer_pair_key(&self, peer: &NodeId) -> Vec<u8> {
        let answer = match self.pair_key_of(peer) {
            Some(key) => PairKeyAnswer::Granted(key),
            None => {
                self.report(peer, "pair_key_refused");
                PairKeyAnswer::Refused(
                    "not an active member, or this node holds no subject key for its organisation"
                        .to_string(),
                )
            }
        };
        self.signed(&answer)
    }

    /// The requester's side: the key to hash the subjects this node names
    /// to `owner`; kept, or asked of the owner once.
    pub async fn pair_key_for(&self, owner: &RaftPeer) -> Result<SubjectKey, AskError> {
        let owner_org = self
            .log
            .state()
            .read(|applied| applied.policy.members.get(&owner.node_id).map(|member| member.org.clone()))
            .ok_or(AskError::NotFromOwner)?;
        if let Some(key) = self.subject_keys.kept(&owner_org) {
            return Ok(key);
        }
        match owner_answer(&self.swarm, owner, &QueryProtocolMessage::PairKey).await? {
            PairKeyAnswer::Granted(key) => {
                self.subject_keys.keep(owner_org, key);
                Ok(key)
            }
            PairKeyAnswer::Refused(reason) => Err(AskError::Refused(reason)),
        }
    }
}
