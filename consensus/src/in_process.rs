//! An in-process [`Transport`] for unit and integration tests of this
//! crate: members call each other's handlers directly, and any member can be
//! cut off to simulate a partition. The node uses libp2p instead.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civmesh_certs::NodeId;

use crate::network::{Transport, TransportError};
use crate::policy_log::PolicyLog;
use crate::types::RaftPeer;

type Answer = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
type Handler = Arc<dyn Fn(NodeId, Vec<u8>) -> Answer + Send + Sync>;

/// The members of an in-process network, and who is cut off.
#[derive(Clone, Default)]
pub struct InProcessNetwork {
    handlers: Arc<Mutex<HashMap<NodeId, Handler>>>,
    cut_off: Arc<Mutex<BTreeSet<NodeId>>>,
}

impl InProcessNetwork {
    /// A transport that sends as `from`.
    pub fn transport(&self, from: NodeId) -> InProcessTransport {
        InProcessTransport { network: self.clone(), from }
    }

    /// Makes `member` reachable.
    pub fn register(&self, member: PolicyLog<InProcessTransport>) {
        let node_id = member.me().node_id;
        let handler: Handler = Arc::new(move |from: NodeId, bytes: Vec<u8>| {
            let member = member.clone();
            Box::pin(async move { member.handle_peer_request(&from, &bytes).await.bytes })
        });
        if let Ok(mut handlers) = self.handlers.lock() {
            handlers.insert(node_id, handler);
        }
    }

    /// Cuts `node` off from everyone (both directions), or heals it.
    pub fn set_cut_off(&self, node: NodeId, cut: bool) {
        if let Ok(mut cut_off) = self.cut_off.lock() {
            if cut {
                cut_off.insert(node);
            } else {
                cut_off.remove(&node);
            }
        }
    }

    fn route(&self, from: &NodeId, to: &NodeId) -> Option<Handler> {
        let cut = self.cut_off.lock().ok()?;
        if cut.contains(from) || cut.contains(to) {
            return None;
        }
        self.handlers.lock().ok()?.get(to).cloned()
    }
}

/// One member's view of an [`InProcessNetwork`].
#[derive(Clone)]
pub struct InProcessTransport {
    network: InProcessNetwork,
    from: NodeId,
}

impl Transport for InProcessTransport {
    fn request(
        &self,
        target: &RaftPeer,
        request: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let route = self.network.route(&self.from, &target.node_id);
        let from = self.from;
        async move {
            let handler =
                route.ok_or_else(|| TransportError::Unreachable("cut off or unknown".to_string()))?;
            tokio::time::timeout(timeout, handler(from, request))
                .await
                .map_err(|_| TransportError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)))
        }
    }
}
