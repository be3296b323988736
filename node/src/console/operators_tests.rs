//! The operator store's tests: enrolment, sign-in, lockout, and what a
//! sign-in costs whether or not the name exists.

use super::*;

/// A street worker signed in at `generation`.
fn street_worker(generation: u64) -> SignedIn {
    SignedIn { role: Role::StreetWorker, generation }
}

#[test]
fn an_operator_enrols_once_signs_in_and_locks_after_five_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let store = OperatorStore::new(dir.path());
    let code = store.add("李伟", Role::StreetWorker, 1_000).unwrap();
    assert!(matches!(store.add("李伟", Role::Reviewer, 1_000), Err(OperatorError::Exists(_))));
    assert!(matches!(store.add("", Role::Reviewer, 1_000), Err(OperatorError::NameInvalid)));
    assert_eq!(store.sign_in("李伟", "anything at all").unwrap(), Err(SignInRefusal::Wrong), "not enrolled");
    assert_eq!(store.enrol("李伟", &code, "short", 2_000).unwrap(), Err(SignInRefusal::PasswordWeak));
    assert_eq!(
        store.enrol("李伟", "0000-0000", "long enough pass", 2_000).unwrap(),
        Err(SignInRefusal::Wrong)
    );
    let late = 1_000 + ENROLMENT_AGE_MS_MAX + 1;
    assert_eq!(store.enrol("李伟", &code, "long enough pass", late).unwrap(), Err(SignInRefusal::Wrong));
    assert_eq!(store.enrol("李伟", &code, "long enough pass", 2_000).unwrap(), Ok(street_worker(0)));
    assert_eq!(
        store.enrol("李伟", &code, "another password", 2_000).unwrap(),
        Err(SignInRefusal::Wrong),
        "spent"
    );
    assert_eq!(store.sign_in("李伟", "long enough pass").unwrap(), Ok(street_worker(0)));
    for attempt in 1..SIGN_IN_FAILURES_MAX {
        assert_eq!(store.sign_in("李伟", "wrong password").unwrap(), Err(SignInRefusal::Wrong), "{attempt}");
    }
    assert_eq!(store.sign_in("李伟", "wrong password").unwrap(), Err(SignInRefusal::Locked));
    assert_eq!(
        store.sign_in("李伟", "long enough pass").unwrap(),
        Err(SignInRefusal::Locked),
        "even the right one"
    );
    assert_eq!(store.list().unwrap()[0].state, "locked");
    let code = store.reset("李伟", 3_000).unwrap();
    assert_eq!(store.list().unwrap()[0].state, "enrolling");
    let locked_and_reset = street_worker(2);
    assert_eq!(store.enrol("李伟", &code, "a new password", 3_000).unwrap(), Ok(locked_and_reset));
    store.disable("李伟").unwrap();
    assert_eq!(store.sign_in("李伟", "a new password").unwrap(), Err(SignInRefusal::Disabled));
    assert!(matches!(store.disable("王芳"), Err(OperatorError::Unknown(_))));
    let text = std::fs::read_to_string(dir.path().join(OPERATORS_FILE)).unwrap();
    assert!(!text.contains("a new password") && !text.contains(&code), "only hashes are kept");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(OPERATORS_FILE)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_dummy_hash_costs_what_a_real_one_does() {
    let dummy = PasswordHash::new(DUMMY_PASSWORD_HASH).unwrap();
    let real = hash_password("long enough pass").unwrap();
    let real = PasswordHash::new(&real).unwrap();
    assert_eq!(dummy.algorithm, real.algorithm);
    assert_eq!(dummy.version, real.version);
    assert_eq!(dummy.params, real.params, "the dummy must use Argon2::default()'s parameters");
    assert_eq!(dummy.hash.map(|output| output.len()), real.hash.map(|output| output.len()));
    assert!(!verify_password(DUMMY_PASSWORD_HASH, "long enough pass"));
}

#[test]
fn an_unknown_name_takes_as_long_as_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let store = OperatorStore::new(dir.path());
    let code = store.add("李伟", Role::StreetWorker, 1_000).unwrap();
    store.enrol("李伟", &code, "long enough pass", 2_000).unwrap().unwrap();
    let fastest = |name: &str| {
        (0..3)
            .map(|_| {
                let started = std::time::Instant::now();
                assert_eq!(store.sign_in(name, "wrong password").unwrap(), Err(SignInRefusal::Wrong));
                started.elapsed()
            })
            .min()
            .unwrap()
    };
    let (known, unknown) = (fastest("李伟"), fastest("王芳"));
    assert!(unknown * 2 > known, "unknown {unknown:?}, known {known:?}: argon2id was skipped");
    let verify = std::time::Instant::now();
    verify_password(DUMMY_PASSWORD_HASH, "wrong password");
    assert!(unknown * 2 > verify.elapsed(), "unknown {unknown:?}: argon2id was skipped");
}

/// `password` tried for 李伟 `times` at once.
fn at_once(store: &OperatorStore, times: u32, password: &str) -> Vec<Result<SignedIn, SignInRefusal>> {
    std::thread::scope(|scope| {
        let attempts: Vec<_> = (0..times).map(|_| scope.spawn(|| store.sign_in("李伟", password))).collect();
        attempts.into_iter().map(|attempt| attempt.join().unwrap().unwrap()).collect()
    })
}

#[test]
fn sign_ins_at_once_lose_no_count_and_check_no_more_guesses_than_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = OperatorStore::new(dir.path());
    let code = store.add("李伟", Role::StreetWorker, 1_000).unwrap();
    store.enrol("李伟", &code, "long enough pass", 2_000).unwrap().unwrap();
    let failures = || store.read().unwrap()[0].failed_sign_ins;

    let below_the_lock = SIGN_IN_FAILURES_MAX - 1;
    let outcomes = at_once(&store, below_the_lock, "wrong password");
    assert!(outcomes.iter().all(|outcome| *outcome == Err(SignInRefusal::Wrong)), "{outcomes:?}");
    assert_eq!(failures(), below_the_lock, "every one counted");
    assert_eq!(at_once(&store, 1, "long enough pass"), [Ok(street_worker(0))], "not locked");
    assert_eq!(failures(), 0);

    // Three times the allowance at once: only the allowance is counted and
    // checked, the others are refused before argon2id; then it is locked.
    let outcomes = at_once(&store, 3 * SIGN_IN_FAILURES_MAX, "wrong password");
    let wrong = outcomes.iter().filter(|outcome| **outcome == Err(SignInRefusal::Wrong)).count();
    let locked = outcomes.iter().filter(|outcome| **outcome == Err(SignInRefusal::Locked)).count();
    assert_eq!(failures(), SIGN_IN_FAILURES_MAX);
    assert!(wrong < SIGN_IN_FAILURES_MAX as usize && wrong + locked == outcomes.len(), "{outcomes:?}");
    let outcomes = at_once(&store, 3, "long enough pass");
    assert!(outcomes.iter().all(|outcome| *outcome == Err(SignInRefusal::Locked)), "{outcomes:?}");
    assert_eq!(store.list().unwrap()[0].state, "locked");
}
