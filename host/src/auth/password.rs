//! Local passwords: scrypt, stored as PHC strings.
//!
//! Hashing runs on the blocking pool, at most [`PasswordHasher::concurrency`] at a time
//! (one per core by default), so a burst of sign-ins queues instead of starving the async
//! runtime or exhausting memory (each hash holds `128 · r · 2^log_n` bytes: 32 MiB at the
//! default). A user that does not exist is checked against a dummy hash of the same cost,
//! so the answer takes as long either way. A hash made with a lower cost than the current
//! one is reported for re-hashing, so raising the cost takes effect at each user's next
//! sign-in. The comparison inside scrypt's verifier is constant-time.

use std::sync::Arc;

use scrypt::Scrypt;
use scrypt::password_hash::rand_core::OsRng;
use scrypt::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest (bytes): longer inputs only cost hashing time.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// scrypt's cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScryptCost {
    /// log2 of N, the CPU/memory cost.
    pub log_n: u8,
    /// Block size.
    pub r: u32,
    /// Parallelism.
    pub p: u32,
}

impl Default for ScryptCost {
    /// N = 2^16, r = 8, p = 1: 64 MiB and about 170 ms per hash on one core of the
    /// reference machine, inside the 100–400 ms the design asks for (N = 2^15 measured
    /// 70 ms; see docs/performance.md, "Sign-in").
    fn default() -> Self {
        ScryptCost {
            log_n: 16,
            r: 8,
            p: 1,
        }
    }
}

impl ScryptCost {
    fn params(self) -> Result<scrypt::Params, PasswordError> {
        if !(10..=22).contains(&self.log_n)
            || self.r == 0
            || self.r > 32
            || self.p == 0
            || self.p > 16
        {
            return Err(PasswordError::Cost(format!(
                "log_n {} r {} p {} (log_n 10..=22, r 1..=32, p 1..=16)",
                self.log_n, self.r, self.p
            )));
        }
        scrypt::Params::new(self.log_n, self.r, self.p, scrypt::Params::RECOMMENDED_LEN)
            .map_err(|error| PasswordError::Cost(error.to_string()))
    }

    /// Whether a hash made with `other` is weaker than one made with this cost.
    fn stronger_than(self, other: &scrypt::Params) -> bool {
        self.log_n > other.log_n() || self.r > other.r() || self.p > other.p()
    }
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The cost parameters are out of range.
    #[error("scrypt cost out of range: {0}")]
    Cost(String),
    /// A password that may not be set.
    #[error("{0}")]
    Weak(String),
    /// A stored hash that is not a scrypt PHC string.
    #[error("stored password hash is unusable: {0}")]
    Stored(String),
    /// The hashing task failed.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// It matches; `rehash` holds a new hash when the stored one was made with a lower cost.
    Match {
        /// The password hashed at the current cost, to store.
        rehash: Option<Zeroizing<String>>,
    },
    /// It does not match (or there was no user).
    Mismatch,
}

/// Hashes and checks passwords at a fixed cost with bounded concurrency.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    cost: ScryptCost,
    params: scrypt::Params,
    permits: Arc<Semaphore>,
    concurrency: usize,
    /// What an unknown user's password is checked against.
    dummy: Arc<String>,
}

impl PasswordHasher {
    /// A hasher at `cost`, running at most `concurrency` hashes at once. Computes the
    /// dummy hash (one hash's time).
    pub fn new(cost: ScryptCost, concurrency: usize) -> Result<PasswordHasher, PasswordError> {
        let params = cost.params()?;
        let dummy = hash_with(params, b"warden: no such user")?;
        let concurrency = concurrency.max(1);
        Ok(PasswordHasher {
            cost,
            params,
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            dummy: Arc::new(dummy.to_string()),
        })
    }

    /// The cost of new hashes.
    pub fn cost(&self) -> ScryptCost {
        self.cost
    }

    /// How many hashes run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Refuse passwords that are too short or too long, or equal to the login names.
    pub fn check_policy(password: &str, names: &[&str]) -> Result<(), PasswordError> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(PasswordError::Weak(format!(
                "a password has at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::Weak(format!(
                "a password has at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        if names
            .iter()
            .any(|name| !name.is_empty() && password.eq_ignore_ascii_case(name))
        {
            return Err(PasswordError::Weak(
                "a password may not be the email or username".to_string(),
            ));
        }
        Ok(())
    }

    /// Hash `password` at the current cost.
    pub async fn hash(
        &self,
        password: Zeroizing<String>,
    ) -> Result<Zeroizing<String>, PasswordError> {
        let params = self.params;
        self.run(move || hash_with(params, password.as_bytes()))
            .await?
    }

    /// Check `password` against `stored` (a PHC string), or against the dummy hash when
    /// there is none, taking the same time either way.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<Zeroizing<String>>,
    ) -> Result<Verified, PasswordError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| Zeroizing::new(self.dummy.to_string()));
        let cost = self.cost;
        let params = self.params;
        let too_long = password.len() > MAX_PASSWORD_BYTES;
        self.run(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|error| PasswordError::Stored(error.to_string()))?;
            // An over-long input is checked as an empty one: same time, never a match.
            let candidate: &[u8] = if too_long { b"" } else { password.as_bytes() };
            let matches = Scrypt.verify_password(candidate, &parsed).is_ok() && known && !too_long;
            if !matches {
                return Ok(Verified::Mismatch);
            }
            let current = scrypt::Params::try_from(&parsed)
                .map_err(|error| PasswordError::Stored(error.to_string()))?;
            let rehash = if cost.stronger_than(&current) {
                Some(hash_with(params, password.as_bytes())?)
            } else {
                None
            };
            Ok(Verified::Match { rehash })
        })
        .await?
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|error| PasswordError::Failed(error.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| PasswordError::Failed(error.to_string()))
    }
}

fn hash_with(params: scrypt::Params, password: &[u8]) -> Result<Zeroizing<String>, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Scrypt
        .hash_password_customized(password, None, None, params, &salt)
        .map(|hash| Zeroizing::new(hash.to_string()))
        .map_err(|error| PasswordError::Failed(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap(log_n: u8) -> PasswordHasher {
        PasswordHasher::new(ScryptCost { log_n, r: 8, p: 1 }, 2).unwrap()
    }

    #[tokio::test]
    async fn a_password_matches_only_its_own_hash_and_weaker_hashes_are_raised() {
        let weak = cheap(10);
        let hash = weak
            .hash(Zeroizing::new("correct horse battery".into()))
            .await
            .unwrap();
        assert!(hash.starts_with("$scrypt$ln=10,"), "{}", hash.as_str());
        let check = |hasher: PasswordHasher, password: &str| {
            let hash = hash.clone();
            let password = Zeroizing::new(password.to_string());
            async move { hasher.verify(password, Some(hash)).await.unwrap() }
        };
        assert_eq!(
            check(weak.clone(), "correct horse battery").await,
            Verified::Match { rehash: None }
        );
        assert_eq!(
            check(weak.clone(), "correct horse batterz").await,
            Verified::Mismatch
        );
        // A stronger hasher accepts the old hash and hands back a new one at its cost.
        let strong = cheap(11);
        match check(strong.clone(), "correct horse battery").await {
            Verified::Match { rehash: Some(new) } => assert!(new.starts_with("$scrypt$ln=11,")),
            other => panic!("{other:?}"),
        }
        // No stored hash: never a match, even for the dummy's own input.
        assert_eq!(
            weak.verify(Zeroizing::new("warden: no such user".into()), None)
                .await
                .unwrap(),
            Verified::Mismatch
        );
    }

    #[test]
    fn the_policy_refuses_short_long_and_name_passwords() {
        assert!(PasswordHasher::check_policy("short", &[]).is_err());
        assert!(PasswordHasher::check_policy(&"x".repeat(2000), &[]).is_err());
        assert!(PasswordHasher::check_policy("admin@example.org", &["Admin@example.org"]).is_err());
        assert!(PasswordHasher::check_policy("a long enough passphrase", &["a@b"]).is_ok());
        assert!(
            PasswordHasher::new(
                ScryptCost {
                    log_n: 30,
                    r: 8,
                    p: 1
                },
                1
            )
            .is_err()
        );
    }
}
