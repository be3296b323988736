//! Console sessions: a random id in a Secure, HttpOnly, SameSite=Strict
//! cookie, kept by this node in memory (by the id's SHA-256) with the
//! operator, their role, their generation and the session's CSRF token.
//! A session ends when its operator signs out, after
//! [`SESSION_IDLE_MS_MAX`] without a request, [`SESSION_AGE_MS_MAX`] after
//! sign-in, or at the first visit after its operator was disabled, reset or
//! locked (see [`Sessions::get_held`]); at most [`SESSIONS_MAX`] are kept,
//! the least recently used dropped first.

use std::collections::HashMap;
use std::sync::Mutex;

use civmesh_certs::UnixMillis;

use super::operators::{OperatorStore, Role, SignedIn};

/// Sessions kept at most.
pub const SESSIONS_MAX: usize = 10_000;
/// How long a session lives without a request, in milliseconds.
pub const SESSION_IDLE_MS_MAX: u64 = 30 * 60 * 1000;
/// How long a session lives after sign-in however busy, in milliseconds.
pub const SESSION_AGE_MS_MAX: u64 = 12 * 60 * 60 * 1000;

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Their name.
    pub operator: String,
    /// Their role.
    pub role: Role,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The operator's generation at sign-in.
    generation: u64,
    opened_ms: UnixMillis,
    last_seen_ms: UnixMillis,
}

impl Session {
    /// Whether the session is over at `now_ms`: idle or old too long.
    fn expired(&self, now_ms: UnixMillis) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > SESSION_IDLE_MS_MAX
            || now_ms.saturating_sub(self.opened_ms) > SESSION_AGE_MS_MAX
    }
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
    /// Opens a session for `operator`, who signed in as `signed_in`;
    /// returns its id (for the cookie).
    pub fn open(&self, operator: &str, signed_in: SignedIn, now_ms: UnixMillis) -> Option<String> {
        let (id, csrf) = (random_token()?, random_token()?);
        let mut sessions = self.by_id_sha256.lock().ok()?;
        sessions.retain(|_, session| !session.expired(now_ms));
        while sessions.len() >= SESSIONS_MAX {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, session)| session.last_seen_ms)
                .map(|(key, _)| key.clone())?;
            sessions.remove(&oldest);
        }
        let session = Session {
            operator: operator.to_string(),
            role: signed_in.role,
            csrf,
            generation: signed_in.generation,
            opened_ms: now_ms,
            last_seen_ms: now_ms,
        };
        sessions.insert(key(&id), session);
        debug_assert!(sessions.len() <= SESSIONS_MAX);
        Some(id)
    }

    /// The session `id` names, if it is open and neither idle nor old too
    /// long; marks it seen.
    pub fn get(&self, id: &str, now_ms: UnixMillis) -> Option<Session> {
        let mut sessions = self.by_id_sha256.lock().ok()?;
        let key = key(id);
        let session = sessions.get_mut(&key)?;
        if session.expired(now_ms) {
            sessions.remove(&key);
            return None;
        }
        session.last_seen_ms = now_ms;
        Some(session.clone())
    }

    /// [`Sessions::get`], if the session's operator still holds it (see
    /// [`OperatorStore::holds`]: enrolled, active, not disabled, reset or
    /// locked since sign-in, same role); a session they no longer hold is
    /// closed. While the operator file cannot be read, no session counts
    /// (nor is closed).
    pub fn get_held(&self, id: &str, now_ms: UnixMillis, operators: &OperatorStore) -> Option<Session> {
        let session = self.get(id, now_ms)?;
        match operators.holds(&session.operator, session.role, session.generation) {
            Ok(true) => Some(session),
            Ok(false) => {
                self.close(id);
                None
            }
            Err(error) => {
                tracing::warn!(%error, "operators unavailable: a session is not honoured");
                None
            }
        }
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
    use super::super::operators::{OPERATORS_FILE, SIGN_IN_FAILURES_MAX};
    use super::*;

    const STREET_WORKER: SignedIn = SignedIn { role: Role::StreetWorker, generation: 0 };

    #[test]
    fn a_session_lives_until_closed_or_idle_too_long() {
        let sessions = Sessions::default();
        let id = sessions.open("李伟", STREET_WORKER, 1_000).unwrap();
        let session = sessions.get(&id, 2_000).unwrap();
        assert_eq!((session.operator.as_str(), session.role), ("李伟", Role::StreetWorker));
        assert_eq!(session.csrf.len(), 64);
        assert!(sessions.get("not-a-session", 2_000).is_none());
        assert!(sessions.get(&id, 2_000 + SESSION_IDLE_MS_MAX).is_some(), "seen at 2,000: still alive");
        assert!(sessions.get(&id, 3_000 + 2 * SESSION_IDLE_MS_MAX).is_none(), "idle too long");
        let id = sessions.open("李伟", STREET_WORKER, 5_000).unwrap();
        sessions.close(&id);
        assert!(sessions.get(&id, 5_000).is_none());
    }

    #[test]
    fn a_busy_session_ends_at_its_age_bound() {
        let sessions = Sessions::default();
        let opened_ms = 1_000;
        let id = sessions.open("李伟", STREET_WORKER, opened_ms).unwrap();
        let step_ms = SESSION_IDLE_MS_MAX / 2;
        let mut now_ms = opened_ms;
        while now_ms + step_ms <= opened_ms + SESSION_AGE_MS_MAX {
            now_ms += step_ms;
            assert!(sessions.get(&id, now_ms).is_some(), "{now_ms}: busy, not yet old");
        }
        assert!(sessions.get(&id, opened_ms + SESSION_AGE_MS_MAX + 1).is_none(), "too old");
        assert!(sessions.get(&id, opened_ms + SESSION_AGE_MS_MAX).is_none(), "closed for good");
    }

    /// An enrolled operator's store and a session of theirs, opened now.
    fn signed_in_session(dir: &std::path::Path, role: Role) -> (OperatorStore, Sessions, String, u64) {
        let store = OperatorStore::new(dir);
        let code = store.add("李伟", role, 1_000).unwrap();
        store.enrol("李伟", &code, "long enough pass", 2_000).unwrap().unwrap();
        let signed_in = store.sign_in("李伟", "long enough pass").unwrap().unwrap();
        let sessions = Sessions::default();
        let now_ms = civmesh_certs::now_unix_millis();
        let id = sessions.open("李伟", signed_in, now_ms).unwrap();
        (store, sessions, id, now_ms)
    }

    #[test]
    fn a_session_ends_at_the_next_visit_once_its_operator_is_disabled_reset_or_locked() {
        let lock_out = |store: &OperatorStore| {
            for _ in 0..SIGN_IN_FAILURES_MAX {
                let _ = store.sign_in("李伟", "wrong password").unwrap();
            }
        };
        let reset_and_enrol_again = |store: &OperatorStore| {
            let code = store.reset("李伟", 3_000).unwrap();
            store.enrol("李伟", &code, "long enough pass", 3_000).unwrap().unwrap();
        };
        type Change<'a> = &'a dyn Fn(&OperatorStore);
        let cases: [(&str, Change); 5] = [
            ("disabled", &|store| store.disable("李伟").unwrap()),
            ("reset", &|store| drop(store.reset("李伟", 3_000).unwrap())),
            ("reset, then enrolled again", &reset_and_enrol_again),
            ("locked", &lock_out),
            ("disabled, then reset and enrolled again", &|store| {
                store.disable("李伟").unwrap();
                reset_and_enrol_again(store);
            }),
        ];
        for (change, apply) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (store, sessions, id, now_ms) = signed_in_session(dir.path(), Role::StreetWorker);
            assert!(sessions.get_held(&id, now_ms, &store).is_some(), "{change}: held before");
            apply(&store);
            assert!(sessions.get_held(&id, now_ms + 1, &store).is_none(), "{change}");
            assert!(sessions.get(&id, now_ms + 2).is_none(), "{change}: closed, not just refused");
        }
    }

    #[test]
    fn a_session_survives_what_does_not_concern_it_and_not_a_changed_role() {
        let dir = tempfile::tempdir().unwrap();
        let (store, sessions, id, now_ms) = signed_in_session(dir.path(), Role::Reviewer);
        let _ = store.sign_in("李伟", "one wrong password").unwrap();
        let other_code = store.add("王芳", Role::Auditor, 1_000).unwrap();
        store.enrol("王芳", &other_code, "her own password", 2_000).unwrap().unwrap();
        store.disable("王芳").unwrap();
        assert!(store.sign_in("李伟", "long enough pass").unwrap().is_ok(), "another sign-in of hers");
        assert!(sessions.get_held(&id, now_ms + 1, &store).is_some(), "nothing that ends it");

        let path = dir.path().join(OPERATORS_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("\"reviewer\"", "\"admin\"");
        std::fs::write(&path, text).unwrap();
        assert!(sessions.get_held(&id, now_ms + 2, &store).is_none(), "the role changed");
        assert!(sessions.get(&id, now_ms + 3).is_none());
    }
}
