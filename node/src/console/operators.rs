//! The console's operators: the people who sign in, each with one role.
//! Kept in `NODE_DIR/operators.json` (mode 0600), written whole and renamed
//! into place, under an exclusive lock on `operators.lock` that the CLI
//! (`civmesh operator ...`) and the running node both take. Passwords are
//! stored as argon2id hashes; an enrolment code only as its SHA-256.
//!
//! A password is checked outside that lock (argon2id is slow: a sign-in
//! must not queue every other one behind it), and an unknown name is
//! checked against a dummy hash, so the answer takes as long as for a
//! known one. Each operator has a generation, bumped by `disable`, `reset`
//! and a lockout: a session opened at an older one no longer counts (see
//! [`OperatorStore::holds`]).

#[path = "operators_standing.rs"]
mod standing;

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use civmesh_certs::UnixMillis;
use civmesh_policy::command::OPERATOR_NAME_BYTES_MAX;

use crate::private_file::{PrivateFileError, PrivateList};
use serde::{Deserialize, Serialize};

/// The operator file's name inside the node directory.
pub const OPERATORS_FILE: &str = "operators.json";
/// The lock file the CLI and the node take while they change operators.
pub const OPERATORS_LOCK_FILE: &str = "operators.lock";
/// The most operators one node keeps.
pub const OPERATORS_MAX: usize = 1_000;
/// The largest operator file read, in bytes.
pub const OPERATORS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// The shortest password, in characters.
pub const PASSWORD_CHARS_MIN: usize = 10;
/// The longest password, in bytes.
pub const PASSWORD_BYTES_MAX: usize = 256;
/// Wrong passwords in a row before an account locks (`operator reset` unlocks).
pub const SIGN_IN_FAILURES_MAX: u32 = 5;
/// How long an enrolment code stays valid, in milliseconds.
pub const ENROLMENT_AGE_MS_MAX: u64 = 7 * 86_400_000;

/// What an unknown name's password is checked against: a well-formed
/// argon2id hash with the default parameters (a test holds them to
/// `Argon2::default()`), whose password nobody knows.
const DUMMY_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Y2l2bWVzaC1uby11c2VyIQ$Y2l2bWVzaCBzaWduLWluOiBubyBzdWNoIGFjY291bnQ";

/// The operator file's kind and bounds.
const OPERATOR_LIST: PrivateList = PrivateList {
    kind: "operator file",
    entries: "operators",
    bytes_max: OPERATORS_FILE_BYTES_MAX,
    entries_max: OPERATORS_MAX,
};

/// What an operator does in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Role {
    /// 街道工作人员: grants, listing, corrections.
    StreetWorker,
    /// 部门审核员: the correction inbox.
    Reviewer,
    /// 数据管理员: demands and grants.
    PolicyOfficer,
    /// 审计员: the access log and its verification.
    Auditor,
    /// Every page.
    Admin,
}

impl Role {
    /// The role's message key (`role.street-worker`).
    pub fn message_key(self) -> &'static str {
        match self {
            Role::StreetWorker => "role.street-worker",
            Role::Reviewer => "role.reviewer",
            Role::PolicyOfficer => "role.policy-officer",
            Role::Auditor => "role.auditor",
            Role::Admin => "role.admin",
        }
    }
}

/// One operator, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// The name they sign in with (`李伟`).
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// argon2id hash (PHC string) of their password, once enrolled.
    pub password_hash: Option<String>,
    /// SHA-256 (hex) of the one-time enrolment code, until used.
    pub enrolment_sha256: Option<String>,
    /// Until when the enrolment code is valid.
    pub enrolment_until_ms: UnixMillis,
    /// Wrong passwords since the last right one.
    pub failed_sign_ins: u32,
    /// Set by `operator disable`.
    pub disabled: bool,
    /// Bumped by `disable`, `reset` and a lockout: sessions opened before
    /// end (absent in files written before it existed: 0).
    #[serde(default)]
    pub generation: u64,
}

/// A sign-in or enrolment that succeeded: what the session records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedIn {
    /// The operator's role.
    pub role: Role,
    /// The operator's generation when they signed in.
    pub generation: u64,
}

/// What the CLI shows of an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorSummary {
    /// The name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// `enrolling`, `active`, `locked` or `disabled`.
    pub state: &'static str,
}

/// Why the operator file could not be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The operator file or its lock could not be read, written or trusted.
    #[error(transparent)]
    File(#[from] PrivateFileError),
    /// `add` of a name that exists.
    #[error("an operator named {0:?} exists")]
    Exists(String),
    /// A name no operator has.
    #[error("no operator named {0:?}")]
    Unknown(String),
    /// A name that is empty, too long or has control characters.
    #[error(
        "an operator name is text of 1 to {OPERATOR_NAME_BYTES_MAX} bytes (about 40 Chinese characters), without control characters"
    )]
    NameInvalid,
    /// The node already keeps the most operators.
    #[error("a node keeps at most {OPERATORS_MAX} operators")]
    TooMany,
    /// The system's random source or the password hasher failed.
    #[error("cannot make a secret: {0}")]
    Secret(String),
}

/// Why a sign-in or an enrolment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefusal {
    /// Unknown name, wrong password or code (not told apart).
    Wrong,
    /// Too many wrong passwords: an administrator must reset the account.
    Locked,
    /// Disabled by an administrator.
    Disabled,
    /// The password is too short or too long, or the two differ.
    PasswordWeak,
}

impl SignInRefusal {
    /// The refusal's message key.
    pub fn message_key(self) -> &'static str {
        match self {
            SignInRefusal::Wrong => "sign-in.wrong",
            SignInRefusal::Locked => "sign-in.locked",
            SignInRefusal::Disabled => "sign-in.disabled",
            SignInRefusal::PasswordWeak => "enrol.password-weak",
        }
    }
}

/// The log's rule for an operator's name, so every account can act.
fn check_name(name: &str) -> Result<(), OperatorError> {
    if !civmesh_policy::command::operator_name_valid(name) {
        return Err(OperatorError::NameInvalid);
    }
    Ok(())
}

fn sha256_hex(text: &str) -> String {
    hex::encode(civmesh_certs::codec::sha256(text.as_bytes()))
}

/// A fresh one-time enrolment code: 16 random bytes, hex, in groups of four.
fn enrolment_code() -> Result<String, OperatorError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| OperatorError::Secret("the system random source failed".into()))?;
    let hex = hex::encode(bytes);
    Ok(hex
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join("-"))
}

/// The operators of one node directory.
pub struct OperatorStore {
    dir: PathBuf,
    /// What sessions need of the operators, as last read from the file.
    standings: standing::StandingCache,
}

impl OperatorStore {
    /// The store in `node_dir`.
    pub fn new(node_dir: &Path) -> Self {
        OperatorStore { dir: node_dir.to_path_buf(), standings: standing::StandingCache::default() }
    }

    /// Whether `name` still holds a session opened at `generation` with
    /// `role`: enrolled, not disabled or locked, not reset or locked since,
    /// same role. Reads the file only when it changed since the last call.
    pub fn holds(&self, name: &str, role: Role, generation: u64) -> Result<bool, OperatorError> {
        self.standings.holds(&self.path(), name, role, generation)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(OPERATORS_FILE)
    }

    fn read(&self) -> Result<Vec<Operator>, OperatorError> {
        Ok(OPERATOR_LIST.read(&self.path())?)
    }

    fn write(&self, operators: &[Operator]) -> Result<(), OperatorError> {
        Ok(OPERATOR_LIST.write(&self.path(), operators)?)
    }

    /// Runs `change` on the operators under the lock; writes them back when
    /// it says they changed. The lock is released when the file is closed.
    fn locked<T>(
        &self,
        change: impl FnOnce(&mut Vec<Operator>) -> Result<(T, bool), OperatorError>,
    ) -> Result<T, OperatorError> {
        let lock_path = self.dir.join(OPERATORS_LOCK_FILE);
        let io = |source| PrivateFileError::Io { path: lock_path.clone(), source };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        lock.lock().map_err(io)?;
        let mut operators = self.read()?;
        let (result, changed) = change(&mut operators)?;
        if changed {
            self.write(&operators)?;
        }
        Ok(result)
    }

    /// Adds an operator who must enrol; returns the one-time enrolment code.
    pub fn add(&self, name: &str, role: Role, now_ms: UnixMillis) -> Result<String, OperatorError> {
        check_name(name)?;
        let code = enrolment_code()?;
        self.locked(|operators| {
            if operators.iter().any(|operator| operator.name == name) {
                return Err(OperatorError::Exists(name.to_string()));
            }
            if operators.len() >= OPERATORS_MAX {
                return Err(OperatorError::TooMany);
            }
            operators.push(Operator {
                name: name.to_string(),
                role,
                password_hash: None,
                enrolment_sha256: Some(sha256_hex(&code)),
                enrolment_until_ms: now_ms + ENROLMENT_AGE_MS_MAX,
                failed_sign_ins: 0,
                disabled: false,
                generation: 0,
            });
            Ok(((), true))
        })?;
        Ok(code)
    }

    /// Every operator, as the CLI lists them.
    pub fn list(&self) -> Result<Vec<OperatorSummary>, OperatorError> {
        let summary = |operator: &Operator| OperatorSummary {
            name: operator.name.clone(),
            role: operator.role,
            state: match operator {
                Operator { disabled: true, .. } => "disabled",
                Operator { failed_sign_ins, .. } if *failed_sign_ins >= SIGN_IN_FAILURES_MAX => "locked",
                Operator { password_hash: None, .. } => "enrolling",
                _ => "active",
            },
        };
        Ok(self.read()?.iter().map(summary).collect())
    }

    /// Disables `name`: no more sign-ins, and their sessions end.
    pub fn disable(&self, name: &str) -> Result<(), OperatorError> {
        self.change(name, |operator| {
            operator.disabled = true;
            operator.generation += 1;
        })
    }

    /// Clears `name`'s password, lock and disabled mark, ending their
    /// sessions; returns a new one-time enrolment code.
    pub fn reset(&self, name: &str, now_ms: UnixMillis) -> Result<String, OperatorError> {
        let code = enrolment_code()?;
        self.change(name, |operator| {
            operator.password_hash = None;
            operator.enrolment_sha256 = Some(sha256_hex(&code));
            operator.enrolment_until_ms = now_ms + ENROLMENT_AGE_MS_MAX;
            operator.failed_sign_ins = 0;
            operator.disabled = false;
            operator.generation += 1;
        })?;
        Ok(code)
    }

    fn change(&self, name: &str, change: impl FnOnce(&mut Operator)) -> Result<(), OperatorError> {
        self.locked(|operators| {
            let operator = operators
                .iter_mut()
                .find(|operator| operator.name == name)
                .ok_or_else(|| OperatorError::Unknown(name.to_string()))?;
            change(operator);
            Ok(((), true))
        })
    }

    /// Sets `name`'s password with their one-time `code`; the code is spent.
    pub fn enrol(
        &self,
        name: &str,
        code: &str,
        password: &str,
        now_ms: UnixMillis,
    ) -> Result<Result<SignedIn, SignInRefusal>, OperatorError> {
        let chars = password.chars().count();
        if chars < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
            return Ok(Err(SignInRefusal::PasswordWeak));
        }
        let hash = hash_password(password)?;
        self.locked(|operators| {
            let Some(operator) = operators.iter_mut().find(|operator| operator.name == name) else {
                return Ok((Err(SignInRefusal::Wrong), false));
            };
            let code_matches = operator.enrolment_sha256.as_deref().is_some_and(|stored| {
                use subtle::ConstantTimeEq;
                stored.as_bytes().ct_eq(sha256_hex(code.trim()).as_bytes()).into()
            });
            if !code_matches || now_ms > operator.enrolment_until_ms {
                return Ok((Err(SignInRefusal::Wrong), false));
            }
            if operator.disabled {
                return Ok((Err(SignInRefusal::Disabled), false));
            }
            operator.password_hash = Some(hash);
            operator.enrolment_sha256 = None;
            operator.failed_sign_ins = 0;
            Ok((Ok(SignedIn { role: operator.role, generation: operator.generation }), true))
        })
    }

    /// Checks `name`'s password; counts a wrong one, and locks the account
    /// (ending its sessions) at [`SIGN_IN_FAILURES_MAX`] in a row.
    ///
    /// The attempt is counted under the lock before the password is
    /// checked, and the lock is not held while argon2id runs; the outcome
    /// is then settled under the lock on the file as it is by then. So no
    /// more than [`SIGN_IN_FAILURES_MAX`] wrong guesses in a row are ever
    /// checked, even at once, and no other sign-in waits for this one's
    /// argon2id. An unknown name is checked against a dummy hash.
    pub fn sign_in(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Result<SignedIn, SignInRefusal>, OperatorError> {
        if password.len() > PASSWORD_BYTES_MAX {
            return Ok(Err(SignInRefusal::Wrong));
        }
        let counted = match self.count_attempt(name)? {
            Ok(counted) => counted,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let stored = counted.as_ref().and_then(|attempt| attempt.password_hash.as_deref());
        let right = verify_password(stored.unwrap_or(DUMMY_PASSWORD_HASH), password) && stored.is_some();
        match counted {
            Some(attempt) => self.settle_attempt(name, &attempt, right),
            None => Ok(Err(SignInRefusal::Wrong)),
        }
    }

    /// The first half of a sign-in, under the lock: refuses a disabled or
    /// locked account, else counts the attempt as wrong (until settled)
    /// and returns what to check. An unknown name (`None`) rewrites the
    /// file unchanged, so that its answer costs the same disk work.
    fn count_attempt(&self, name: &str) -> Result<Result<Option<Attempt>, SignInRefusal>, OperatorError> {
        self.locked(|operators| {
            let Some(operator) = operators.iter_mut().find(|operator| operator.name == name) else {
                return Ok((Ok(None), true));
            };
            if operator.disabled {
                return Ok((Err(SignInRefusal::Disabled), false));
            }
            if operator.failed_sign_ins >= SIGN_IN_FAILURES_MAX {
                return Ok((Err(SignInRefusal::Locked), false));
            }
            operator.failed_sign_ins += 1;
            let attempt =
                Attempt { password_hash: operator.password_hash.clone(), generation: operator.generation };
            Ok((Ok(Some(attempt)), true))
        })
    }

    /// The second half of a sign-in, under the lock again, on the file as
    /// it is now: a right password (for the account as it was checked)
    /// clears the count; a wrong one stays counted, and the one that locks
    /// the account bumps its generation.
    fn settle_attempt(
        &self,
        name: &str,
        attempt: &Attempt,
        right: bool,
    ) -> Result<Result<SignedIn, SignInRefusal>, OperatorError> {
        self.locked(|operators| {
            let Some(operator) = operators.iter_mut().find(|operator| operator.name == name) else {
                return Ok((Err(SignInRefusal::Wrong), false));
            };
            if operator.disabled {
                return Ok((Err(SignInRefusal::Disabled), false));
            }
            let same_account =
                operator.generation == attempt.generation && operator.password_hash == attempt.password_hash;
            if right && same_account {
                operator.failed_sign_ins = 0;
                return Ok((Ok(SignedIn { role: operator.role, generation: operator.generation }), true));
            }
            if operator.failed_sign_ins < SIGN_IN_FAILURES_MAX {
                return Ok((Err(SignInRefusal::Wrong), false));
            }
            let first_to_lock = operator.generation == attempt.generation;
            if first_to_lock {
                operator.generation += 1;
            }
            Ok((Err(SignInRefusal::Locked), first_to_lock))
        })
    }
}

/// A counted sign-in attempt: the account as it was when counted.
struct Attempt {
    /// The stored hash (none until enrolled).
    password_hash: Option<String>,
    /// The account's generation.
    generation: u64,
}

fn hash_password(password: &str) -> Result<String, OperatorError> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| OperatorError::Secret("the system random source failed".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|error| OperatorError::Secret(error.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| OperatorError::Secret(error.to_string()))
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
#[path = "operators_tests.rs"]
mod tests;
