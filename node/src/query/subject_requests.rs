//! Subjects' requests on `/civmesh/query/1`
//! ([`QueryProtocolMessage::SubjectRequest`]): the intake sends one to the
//! dataset's owner, which answers signed. What both sides do is in
//! [`crate::subject_requests`].

use civmesh_certs::{codec, NodeId};
use civmesh_consensus::RaftPeer;

use super::requester::owner_answer;
use super::{AskError, QueryProtocolMessage, QueryService};
use crate::subject_requests::{OwnerReply, SubjectRequestWire};

/// The largest encoded request taken, in bytes: an envelope and a key.
const SUBJECT_REQUEST_WIRE_BYTES_MAX: usize = 64 * 1024;

impl QueryService {
    /// Answers a subject request from `peer` (an encoded
    /// [`SubjectRequestWire`]), signed. A request that is not logged (its
    /// record unknown, or refused) counts as a security event for `peer`:
    /// each tells the peer something about a person's record.
    pub(super) async fn take_subject_request(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        let reply = match codec::decode_exact::<SubjectRequestWire>(bytes, SUBJECT_REQUEST_WIRE_BYTES_MAX) {
            Ok(wire) => crate::subject_requests::take(self, peer, wire).await,
            Err(_) => {
                self.report(&peer, "subject_request_malformed");
                return self.signed(&OwnerReply::refused("the request does not decode".to_string()));
            }
        };
        if let Some(kind) = crate::subject_requests::security_event(&reply.outcome) {
            self.report(&peer, kind);
        }
        self.signed(&reply)
    }

    /// The intake's side: sends an encoded request to `owner` and returns
    /// its reply, once its signature verifies as the owner's.
    pub async fn send_subject_request(
        &self,
        owner: &RaftPeer,
        wire: Vec<u8>,
    ) -> Result<OwnerReply, AskError> {
        owner_answer(&self.swarm, owner, &QueryProtocolMessage::SubjectRequest(wire)).await
    }
}
