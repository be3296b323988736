//! The names civmesh gives to nodes and organisations: [`NodeId`] (an Ed25519
//! public key, shown as a libp2p PeerId), [`OrgId`] (`kind/name`) and
//! [`Role`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The PeerId text or bytes are not a valid libp2p PeerId.
    #[error("not a valid libp2p PeerId: {0}")]
    PeerIdMalformed(String),
    /// The PeerId is valid but is not an inline Ed25519 key (e.g. a hashed
    /// RSA or secp256k1 key); civmesh nodes use Ed25519 only.
    #[error("PeerId {0} does not carry an Ed25519 public key")]
    PeerIdNotEd25519(String),
    /// The organisation id is not of the form `kind/name`.
    #[error("organisation id {0:?} is not of the form kind/name (lowercase letters, digits, '-')")]
    OrgIdMalformed(String),
    /// The role is not one of hub, department, street, auditor.
    #[error("unknown role {0:?}: expected one of hub, department, street, auditor")]
    RoleUnknown(String),
}

/// A node's identity: its Ed25519 public key. Displayed and parsed as the
/// libp2p PeerId that inlines this key, so the libp2p handshake and civmesh
/// signatures name a node the same way.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The libp2p PeerId for this key. Fails only for 32 bytes that are not
    /// an Ed25519 point, which no [`crate::NodeKey`] produces.
    pub fn to_peer_id(&self) -> Result<libp2p_identity::PeerId, IdentityError> {
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0)
            .map_err(|_| IdentityError::PeerIdMalformed(hex_string(&self.0)))?;
        Ok(libp2p_identity::PublicKey::from(key).to_peer_id())
    }

    /// The NodeId inside a libp2p PeerId; fails unless the PeerId inlines an
    /// Ed25519 key.
    pub fn from_peer_id(peer_id: &libp2p_identity::PeerId) -> Result<Self, IdentityError> {
        let multihash = peer_id.as_ref();
        const IDENTITY_MULTIHASH_CODE: u64 = 0;
        if multihash.code() != IDENTITY_MULTIHASH_CODE {
            return Err(IdentityError::PeerIdNotEd25519(peer_id.to_base58()));
        }
        let public = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| IdentityError::PeerIdMalformed(peer_id.to_base58()))?;
        let ed25519 =
            public.try_into_ed25519().map_err(|_| IdentityError::PeerIdNotEd25519(peer_id.to_base58()))?;
        Ok(NodeId(ed25519.to_bytes()))
    }
}

impl FromStr for NodeId {
    type Err = IdentityError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let peer_id = libp2p_identity::PeerId::from_str(text.trim())
            .map_err(|_| IdentityError::PeerIdMalformed(text.to_string()))?;
        Self::from_peer_id(&peer_id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_peer_id() {
            Ok(peer_id) => write!(f, "{peer_id}"),
            Err(_) => write!(f, "invalid-ed25519:{}", hex_string(&self.0)),
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An organisation id of the form `kind/name`, e.g. `street/jingansi` or
/// `dept/market-supervision`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    /// The longest organisation id accepted, in bytes.
    pub const BYTES_MAX: usize = 128;

    /// Parses and validates `kind/name`.
    pub fn new(text: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::OrgIdMalformed(text.to_string());
        if text.len() > Self::BYTES_MAX {
            return Err(malformed());
        }
        let (kind, name) = text.split_once('/').ok_or_else(malformed)?;
        let part_ok = |part: &str| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !part_ok(kind) || !part_ok(name) {
            return Err(malformed());
        }
        Ok(OrgId(text.to_string()))
    }

    /// The organisation civmesh attributes to commands the federation CA
    /// signs itself.
    pub fn federation_ca() -> Self {
        OrgId("federation/ca".to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrgId {
    type Error = IdentityError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(&text)
    }
}

impl From<OrgId> for String {
    fn from(org: OrgId) -> String {
        org.0
    }
}

impl FromStr for OrgId {
    type Err = IdentityError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({})", self.0)
    }
}

/// What a node does in the federation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The coordinating node: admits and revokes members.
    Hub,
    /// A department that owns datasets.
    Department,
    /// A street office: consumes data and submits corrections.
    Street,
    /// An auditor: reads and verifies the access log.
    Auditor,
}

impl Role {
    /// The role's name as written in certificates and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Department => "department",
            Role::Street => "street",
            Role::Auditor => "auditor",
        }
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "hub" => Ok(Role::Hub),
            "department" => Ok(Role::Department),
            "street" => Ok(Role::Street),
            "auditor" => Ok(Role::Auditor),
            other => Err(IdentityError::RoleUnknown(other.to_string())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids_are_validated() {
        for good in ["street/jingansi", "dept/market-supervision", "auditor/municipal-audit", "hub/a1"] {
            assert_eq!(OrgId::new(good).map(|o| o.to_string()), Ok(good.to_string()));
        }
        for bad in ["", "street", "/x", "x/", "Street/x", "a/b/c", "a/b c", "a/\u{4e2d}"] {
            assert!(matches!(OrgId::new(bad), Err(IdentityError::OrgIdMalformed(_))), "{bad}");
        }
        assert!(OrgId::new(&format!("a/{}", "b".repeat(OrgId::BYTES_MAX))).is_err());
    }

    #[test]
    fn roles_round_trip_and_unknown_is_typed() {
        for role in [Role::Hub, Role::Department, Role::Street, Role::Auditor] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!("mayor".parse::<Role>(), Err(IdentityError::RoleUnknown("mayor".into())));
    }

    #[test]
    fn non_ed25519_peer_id_is_refused() {
        // A SHA-256 multihash PeerId, as for RSA keys: no inline key.
        let mut sha256_multihash = vec![0x12, 0x20];
        sha256_multihash.extend_from_slice(&[7u8; 32]);
        let hashed = libp2p_identity::PeerId::from_bytes(&sha256_multihash).unwrap();
        assert!(matches!(NodeId::from_peer_id(&hashed), Err(IdentityError::PeerIdNotEd25519(_))));
        assert!(matches!("not-a-peer-id".parse::<NodeId>(), Err(IdentityError::PeerIdMalformed(_))));
    }
}
