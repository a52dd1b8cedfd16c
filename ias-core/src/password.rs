//! User passwords: complexity rules, argon2id hashing and verification.
//!
//! A password is stored only as an argon2id hash in PHC string form
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), with at least the
//! parameters OWASP recommends: 19 MiB of memory, 2 iterations, 1 lane.
//!
//! # Rules
//!
//! A new password must follow every rule below; [`check`] lists each one it
//! breaks, so a user fixes them all at once:
//!
//! - at least [`MIN_CHARS`] and at most [`MAX_CHARS`] characters (Unicode
//!   scalar values);
//! - at least three of four kinds of character: lowercase letters,
//!   uppercase letters, digits, and symbols (anything else, spaces included);
//! - it does not contain the user's email name, the part before `@`
//!   (ignoring letter case), nor any piece of it of three characters or
//!   more between `.`, `+`, `-` and `_`;
//! - it is not one of the common passwords shipped with ias
//!   (`ias-core/data/common-passwords.txt`, ignoring letter case).
//!
//! Neither a password nor its hash ever appears in an error, a log line or
//! the audit log.

use std::fmt;
use std::sync::LazyLock;

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::UserStore;

/// The fewest characters a password may have.
pub const MIN_CHARS: usize = 12;

/// The most characters a password may have.
pub const MAX_CHARS: usize = 128;

/// Argon2id memory cost in KiB (19 MiB, OWASP's minimum).
pub const MEMORY_KIB: u32 = 19 * 1024;

/// Argon2id iterations (OWASP's minimum for 19 MiB).
pub const ITERATIONS: u32 = 2;

/// Argon2id lanes.
pub const LANES: u32 = 1;

/// The shipped list of common passwords, one a line, `#` for comments.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// Email names shorter than this are not looked for inside passwords.
const MIN_NAME_CHARS: usize = 3;

/// A complexity rule that a password can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Fewer than [`MIN_CHARS`] characters.
    TooShort,
    /// More than [`MAX_CHARS`] characters.
    TooLong,
    /// Fewer than three of lowercase, uppercase, digits and symbols.
    TooFewKinds,
    /// Contains the email's name (the part before `@`) or a piece of it.
    ContainsEmailName,
    /// One of the shipped common passwords.
    Common,
}

impl Rule {
    /// What the rule asks for, as shown in errors.
    pub fn message(self) -> &'static str {
        match self {
            Rule::TooShort => "must have at least 12 characters",
            Rule::TooLong => "must have at most 128 characters",
            Rule::TooFewKinds => {
                "must mix at least three of lowercase letters, uppercase letters, digits and symbols"
            }
            Rule::ContainsEmailName => "must not contain the name before `@` in the user's email",
            Rule::Common => "must not be a commonly used password",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Every rule that `password`, chosen for the user with `email`, breaks; empty if none.
pub fn check(password: &str, email: &str) -> Vec<Rule> {
    let chars = password.chars().count();
    let lower = password.to_lowercase();
    let mut broken = Vec::new();
    if chars < MIN_CHARS {
        broken.push(Rule::TooShort);
    }
    if chars > MAX_CHARS {
        broken.push(Rule::TooLong);
    }
    if kinds(password) < 3 {
        broken.push(Rule::TooFewKinds);
    }
    if email_names(email).any(|name| lower.contains(&name)) {
        broken.push(Rule::ContainsEmailName);
    }
    if is_common(&lower) {
        broken.push(Rule::Common);
    }
    broken
}

/// Checks `password` against every rule; [`Error::WeakPassword`] lists each one broken.
pub fn validate(password: &str, email: &str) -> Result<()> {
    let broken = check(password, email);
    if broken.is_empty() {
        Ok(())
    } else {
        Err(Error::WeakPassword { broken })
    }
}

/// How many of the four kinds of character `password` uses.
fn kinds(password: &str) -> usize {
    let has = |test: fn(char) -> bool| password.chars().any(test);
    [
        has(char::is_lowercase),
        has(char::is_uppercase),
        has(char::is_numeric),
        has(|c| !c.is_lowercase() && !c.is_uppercase() && !c.is_numeric()),
    ]
    .into_iter()
    .filter(|present| *present)
    .count()
}

/// The email's name and its pieces, lowercase, each of at least three characters.
fn email_names(email: &str) -> impl Iterator<Item = String> {
    let name = email.split('@').next().unwrap_or_default().to_lowercase();
    let pieces: Vec<String> = name
        .split(['.', '+', '-', '_'])
        .map(str::to_owned)
        .collect();
    std::iter::once(name)
        .chain(pieces)
        .filter(|n| n.chars().count() >= MIN_NAME_CHARS)
}

/// Whether the lowercase `password` is in the shipped list.
fn is_common(lower: &str) -> bool {
    COMMON_PASSWORDS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .any(|common| common == lower)
}

/// An argon2id hash in PHC string form, as stored in `users.password_hash`.
///
/// Its `Debug` output hides the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedPassword(String);

impl HashedPassword {
    /// Wraps a PHC string read from a store.
    pub fn from_phc(phc: String) -> Self {
        HashedPassword(phc)
    }

    /// The PHC string, to be stored.
    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashedPassword(..)")
    }
}

/// The hasher with ias's parameters.
fn argon2id() -> Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).map_err(hashing_failed)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hashing_failed(err: impl fmt::Display) -> Error {
    Error::PasswordHashing {
        reason: err.to_string(),
    }
}

/// Hashes `password` with argon2id and a fresh random salt.
///
/// Takes tens of milliseconds on purpose; async callers use [`hash_off_thread`].
pub fn hash(password: &str) -> Result<HashedPassword> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(hashing_failed)?;
    let phc = argon2id()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(hashing_failed)?;
    Ok(HashedPassword(phc.to_string()))
}

/// Whether `password` matches `stored`, using the parameters recorded in the hash.
pub fn verify(password: &str, stored: &HashedPassword) -> Result<bool> {
    let parsed = password_hash::PasswordHash::new(stored.as_phc())
        .map_err(|_| hashing_failed("the stored password hash is not a PHC string"))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(err) => Err(hashing_failed(err)),
    }
}

/// [`hash`] on tokio's blocking pool when a runtime is running, so no worker stalls.
pub async fn hash_off_thread(password: &str) -> Result<HashedPassword> {
    let password = password.to_owned();
    off_thread(move || hash(&password)).await
}

/// [`verify`] on tokio's blocking pool when a runtime is running.
pub async fn verify_off_thread(password: &str, stored: &HashedPassword) -> Result<bool> {
    let (password, stored) = (password.to_owned(), stored.clone());
    off_thread(move || verify(&password, &stored)).await
}

async fn off_thread<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime
            .spawn_blocking(work)
            .await
            .map_err(|err| hashing_failed(format!("hashing task failed: {err}")))?,
        Err(_) => work(),
    }
}

/// A hash of a random password, checked against when a user has none, so
/// that an unknown user takes as long to refuse as a wrong password.
static DECOY: LazyLock<Option<HashedPassword>> = LazyLock::new(|| {
    let random: [u8; 24] = rand::random();
    hash(&hex::encode(random)).ok()
});

/// Whether `password` is the password of the user `user`, as a login would check it.
///
/// Checks no permission and writes no audit entry: it only answers yes or
/// no. An unknown user, or one without a password, answers `false` after
/// the same hashing work as a wrong password, so the answer's timing does
/// not tell which users exist.
pub async fn verify_password<S>(
    store: &S,
    user: impl Into<crate::domain::UserRef>,
    password: &str,
) -> Result<bool>
where
    S: UserStore + ?Sized,
{
    let found = match user.into() {
        crate::domain::UserRef::Id(id) => store.user_by_id(id).await?,
        crate::domain::UserRef::Email(email) => {
            store
                .user_by_email(&crate::validate::email(&email)?)
                .await?
        }
    };
    let stored = match found {
        Some(user) => store.password_hash(user.id).await?,
        None => None,
    };
    match (stored, DECOY.as_ref()) {
        (Some(stored), _) => verify_off_thread(password, &stored).await,
        (None, Some(decoy)) => verify_off_thread(password, decoy).await.map(|_| false),
        (None, None) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "john.smith@example.com";

    #[test]
    fn a_strong_password_breaks_no_rule() {
        assert_eq!(check("Tr0ub4dor&3-horse", EMAIL), []);
        assert_eq!(check("correct horse battery 9", EMAIL), []);
    }

    #[test]
    fn every_broken_rule_is_listed() {
        assert_eq!(
            check("password", EMAIL),
            [Rule::TooShort, Rule::TooFewKinds, Rule::Common]
        );
        assert_eq!(check("Password123!", EMAIL), [Rule::Common]);
        assert_eq!(
            check("JOHNSMITH", EMAIL),
            [Rule::TooShort, Rule::TooFewKinds, Rule::ContainsEmailName]
        );
        assert_eq!(check("xJohn-Rocks-2026", EMAIL), [Rule::ContainsEmailName]);
        let long = format!("Aa1!{}", "x".repeat(MAX_CHARS));
        assert_eq!(check(&long, EMAIL), [Rule::TooLong]);
    }

    #[test]
    fn short_email_names_are_not_looked_for() {
        assert_eq!(check("Xy9-abcdefgh-Q", "ab@example.com"), []);
    }

    #[test]
    fn the_error_lists_rules_without_the_password() {
        let err = validate("password", EMAIL).unwrap_err().to_string();
        assert!(err.contains("at least 12 characters"), "{err}");
        assert!(err.contains("three of"), "{err}");
        assert!(err.contains("commonly used"), "{err}");
        assert!(!err.contains("`password`"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify() {
        let hashed = hash("Tr0ub4dor&3-horse").unwrap();
        assert!(
            hashed
                .as_phc()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            hashed.as_phc()
        );
        assert!(verify("Tr0ub4dor&3-horse", &hashed).unwrap());
        assert!(!verify("Tr0ub4dor&3-horsE", &hashed).unwrap());
        assert_ne!(hash("Tr0ub4dor&3-horse").unwrap(), hashed);
        assert_eq!(format!("{hashed:?}"), "HashedPassword(..)");
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_error() {
        let corrupt = HashedPassword::from_phc("not a hash".into());
        assert!(matches!(
            verify("x", &corrupt),
            Err(Error::PasswordHashing { .. })
        ));
    }
}
