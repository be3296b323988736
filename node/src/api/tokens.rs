//! Scoped API tokens: besides the node's admin token (`DATA_DIR/api-token`,
//! every scope), an operator can hand a department system a token that may
//! only do what its scopes name. Tokens are stored as SHA-256 hashes in
//! `DATA_DIR/api-tokens.json` (mode 0600), made by `civmesh token create`,
//! and picked up by a running node when the file changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The scoped-token file's name inside the data directory.
pub const API_TOKENS_FILE: &str = "api-tokens.json";
/// The most scoped tokens one node keeps.
pub const API_TOKENS_MAX: usize = 1_000;
/// The largest scoped-token file read, in bytes.
pub const API_TOKENS_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read status, metrics, the catalog, records, corrections, the access log.
    Read,
    /// Ask other nodes for records; subscribe.
    Query,
    /// Import this organisation's records.
    Records,
    /// Submit signed policy commands.
    Policy,
    /// Submit corrections.
    Corrections,
    /// Accept or reject corrections at the owner.
    Review,
    /// Initialise the cluster, add learners, change voters.
    Cluster,
    /// Export the command archive and read checkpoints.
    Audit,
}

/// One scoped token, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedToken {
    /// Who holds it (for the operator).
    pub name: String,
    /// SHA-256 of the token, hex.
    pub token_sha256: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
}

/// Why the token file could not be used.
pub type TokenFileError = crate::private_file::PrivateFileError;

/// The scoped-token file's kind and bounds.
const TOKEN_LIST: crate::private_file::PrivateList = crate::private_file::PrivateList {
    kind: "scoped-token file",
    entries: "tokens",
    bytes_max: API_TOKENS_FILE_BYTES_MAX,
    entries_max: API_TOKENS_MAX,
};

fn hash_hex(token: &str) -> String {
    civmesh_certs::codec::sha256(token.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads the scoped tokens (none if the file does not exist).
pub fn read_tokens(path: &Path) -> Result<Vec<ScopedToken>, TokenFileError> {
    TOKEN_LIST.read(path)
}

/// Adds a token named `name` with `scopes` to the file in `data_dir`
/// (rewritten whole, mode 0600, synced); returns the token, shown once.
pub fn create_token(data_dir: &Path, name: &str, scopes: BTreeSet<Scope>) -> Result<String, TokenFileError> {
    use ring::rand::SecureRandom;
    let path = data_dir.join(API_TOKENS_FILE);
    let mut tokens = read_tokens(&path)?;
    if tokens.iter().any(|token| token.name == name) {
        return Err(TOKEN_LIST.invalid(&path, format!("a token named {name:?} exists")));
    }
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| TOKEN_LIST.invalid(&path, "the system random source failed"))?;
    let token: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
    tokens.push(ScopedToken { name: name.to_string(), token_sha256: hash_hex(&token), scopes });
    TOKEN_LIST.write(&path, &tokens)?;
    Ok(token)
}

/// The scoped tokens of a running node, re-read when the file changes.
pub struct TokenRegistry {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<ScopedToken>)>,
}

impl TokenRegistry {
    /// The registry of the file in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        TokenRegistry { path: data_dir.join(API_TOKENS_FILE), cache: Mutex::new((None, Vec::new())) }
    }

    /// The scopes of a presented token, if it is a scoped token.
    pub fn scopes_of(&self, presented: &str) -> Option<BTreeSet<Scope>> {
        self.token_of(presented).map(|token| token.scopes)
    }

    /// The scoped token presented (its holder's name and scopes), if any.
    pub fn token_of(&self, presented: &str) -> Option<ScopedToken> {
        let modified = std::fs::metadata(&self.path).and_then(|meta| meta.modified()).ok();
        let mut cache = self.cache.lock().ok()?;
        if cache.0 != modified {
            match read_tokens(&self.path) {
                Ok(tokens) => *cache = (modified, tokens),
                Err(error) => {
                    tracing::warn!(%error, "scoped tokens not reloaded");
                }
            }
        }
        let wanted = hash_hex(presented);
        cache.1.iter().find(|token| token.token_sha256 == wanted).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_are_stored_hashed_and_found_by_their_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let token =
            create_token(dir.path(), "district-portal", BTreeSet::from([Scope::Read, Scope::Query])).unwrap();
        let stored = std::fs::read_to_string(dir.path().join(API_TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&token), "the token itself is never stored");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(API_TOKENS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let registry = TokenRegistry::new(dir.path());
        assert_eq!(registry.scopes_of(&token), Some(BTreeSet::from([Scope::Read, Scope::Query])));
        assert_eq!(registry.scopes_of("not-a-token"), None);
        assert!(create_token(dir.path(), "district-portal", BTreeSet::new()).is_err(), "names are unique");
        std::fs::set_permissions(dir.path().join(API_TOKENS_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(
            matches!(read_tokens(&dir.path().join(API_TOKENS_FILE)), Err(TokenFileError::Invalid(..))),
            "a token file others may read is refused"
        );
        std::fs::set_permissions(dir.path().join(API_TOKENS_FILE), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(dir.path().join(API_TOKENS_FILE), b"{corrupt").unwrap();
        assert!(matches!(read_tokens(&dir.path().join(API_TOKENS_FILE)), Err(TokenFileError::Invalid(..))));
    }
}
