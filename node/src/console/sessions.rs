//! Console sessions: a random id in a Secure, HttpOnly, SameSite=Strict
//! cookie, kept by this node in memory (by the id's SHA-256) with the
//! operator, their role and the session's CSRF token. A session ends when
//! its operator signs out or after [`SESSION_IDLE_MS_MAX`] without a request;
//! at most [`SESSIONS_MAX`] are kept, the least recently used dropped first.

use std::collections::HashMap;
use std::sync::Mutex;

use civmesh_certs::UnixMillis;

use super::operators::Role;

/// Sessions kept at most.
pub const SESSIONS_MAX: usize = 10_000;
/// How long a session lives without a request, in milliseconds.
pub const SESSION_IDLE_MS_MAX: u64 = 30 * 60 * 1000;

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Their name.
    pub operator: String,
    /// Their role.
    pub role: Role,
    /// The token every form of this session carries.
    pub csrf: String,
    last_seen_ms: UnixMillis,
}

/// A fresh random token: 32 bytes, hex.
pub fn random_token() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

fn key(id: &str) -> String {
    hex::encode(civmesh_certs::codec::sha256(id.as_bytes()))
}

/// The sessions of one node.
#[derive(Default)]
pub struct Sessions {
    by_id_sha256: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for `operator`; returns its id (for the cookie).
    pub fn open(&self, operator: &str, role: Role, now_ms: UnixMillis) -> Option<String> {
        let (id, csrf) = (random_token()?, random_token()?);
        let mut sessions = self.by_id_sha256.lock().ok()?;
        sessions.retain(|_, session| now_ms.saturating_sub(session.last_seen_ms) <= SESSION_IDLE_MS_MAX);
        while sessions.len() >= SESSIONS_MAX {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, session)| session.last_seen_ms)
                .map(|(key, _)| key.clone())?;
            sessions.remove(&oldest);
        }
        sessions
            .insert(key(&id), Session { operator: operator.to_string(), role, csrf, last_seen_ms: now_ms });
        debug_assert!(sessions.len() <= SESSIONS_MAX);
        Some(id)
    }

    /// The session `id` names, if it is open and not idle too long; marks it seen.
    pub fn get(&self, id: &str, now_ms: UnixMillis) -> Option<Session> {
        let mut sessions = self.by_id_sha256.lock().ok()?;
        let key = key(id);
        let session = sessions.get_mut(&key)?;
        if now_ms.saturating_sub(session.last_seen_ms) > SESSION_IDLE_MS_MAX {
            sessions.remove(&key);
            return None;
        }
        session.last_seen_ms = now_ms;
        Some(session.clone())
    }

    /// Ends the session `id` names.
    pub fn close(&self, id: &str) {
        if let Ok(mut sessions) = self.by_id_sha256.lock() {
            sessions.remove(&key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_closed_or_idle_too_long() {
        let sessions = Sessions::default();
        let id = sessions.open("李伟", Role::StreetWorker, 1_000).unwrap();
        let session = sessions.get(&id, 2_000).unwrap();
        assert_eq!((session.operator.as_str(), session.role), ("李伟", Role::StreetWorker));
        assert_eq!(session.csrf.len(), 64);
        assert!(sessions.get("not-a-session", 2_000).is_none());
        assert!(sessions.get(&id, 2_000 + SESSION_IDLE_MS_MAX).is_some(), "seen at 2,000: still alive");
        assert!(sessions.get(&id, 3_000 + 2 * SESSION_IDLE_MS_MAX).is_none(), "idle too long");
        let id = sessions.open("李伟", Role::StreetWorker, 5_000).unwrap();
        sessions.close(&id);
        assert!(sessions.get(&id, 5_000).is_none());
    }
}
