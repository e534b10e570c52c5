//! What a build is asked for, parsed at the edge: an exact commit, a package path that
//! stays inside the checkout, a repository with any credentials taken out of it.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::BuildError;

/// A full git commit id: 40 (SHA-1) or 64 (SHA-256) hex digits, kept lower-case. Branches, tags, abbreviations and
/// `HEAD~1` are refused: a build names exactly one tree, whatever a ref points to later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Commit(String);

impl Commit {
    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Commit {
    type Err = BuildError;

    fn from_str(text: &str) -> Result<Self, BuildError> {
        let lower = text.to_ascii_lowercase();
        if crate::component::is_full_commit(&lower) {
            Ok(Commit(lower))
        } else {
            Err(BuildError::InvalidInput(format!(
                "commit `{}` is not a full commit id (40 or 64 hex digits); branches, tags and \
                 abbreviated ids are not accepted because they can name other code later",
                text.escape_debug()
            )))
        }
    }
}

impl TryFrom<String> for Commit {
    type Error = BuildError;

    fn try_from(text: String) -> Result<Self, BuildError> {
        text.parse()
    }
}

impl From<Commit> for String {
    fn from(commit: Commit) -> String {
        commit.0
    }
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A package directory inside the repository, such as `drivers/pjlink`: relative, no
/// `..`, no `.` detours, so it cannot name anything outside the checkout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackagePath(String);

impl PackagePath {
    /// The path, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The package directory inside `checkout`.
    pub fn join_to(&self, checkout: &Path) -> PathBuf {
        checkout.join(&self.0)
    }
}

impl FromStr for PackagePath {
    type Err = BuildError;

    fn from_str(text: &str) -> Result<Self, BuildError> {
        let refuse = |why: &str| {
            Err(BuildError::InvalidInput(format!(
                "package path `{}` {why}",
                text.escape_debug()
            )))
        };
        let trimmed = text.trim_end_matches('/');
        if trimmed.is_empty() {
            return refuse("is empty; give the package's directory, such as drivers/pjlink");
        }
        if trimmed.contains('\\') || trimmed.chars().any(char::is_control) {
            return refuse("has a backslash or a control character");
        }
        let mut parts = Vec::new();
        for component in Path::new(trimmed).components() {
            match component {
                Component::Normal(part) => match part.to_str() {
                    Some(part) => parts.push(part),
                    None => return refuse("is not UTF-8"),
                },
                Component::CurDir => return refuse("has a `.` component"),
                Component::ParentDir => return refuse("leaves the repository with `..`"),
                Component::RootDir | Component::Prefix(_) => {
                    return refuse("is absolute; give it relative to the repository's root");
                }
            }
        }
        Ok(PackagePath(parts.join("/")))
    }
}

impl TryFrom<String> for PackagePath {
    type Error = BuildError;

    fn try_from(text: String) -> Result<Self, BuildError> {
        text.parse()
    }
}

impl From<PackagePath> for String {
    fn from(path: PackagePath) -> String {
        path.0
    }
}

impl fmt::Display for PackagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Credentials for an HTTP(S) git server, sent as an `Authorization` header. They reach
/// git through its environment (`GIT_CONFIG_*`), never its command line (which other
/// local users can read in `/proc`) nor the URL (which git repeats in its messages).
#[derive(Clone)]
pub enum GitCredentials {
    /// HTTP basic authentication; for hosted forges usually a user name and an access
    /// token as the password.
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: Zeroizing<String>,
    },
    /// A bearer token (`Authorization: Bearer …`).
    Bearer(Zeroizing<String>),
}

impl fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitCredentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            GitCredentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl GitCredentials {
    /// The `Authorization` header value.
    pub(super) fn header(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        match self {
            GitCredentials::Basic { username, password } => {
                let pair = Zeroizing::new(format!("{username}:{}", password.as_str()));
                let encoded = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
                );
                Zeroizing::new(format!("Authorization: Basic {}", encoded.as_str()))
            }
            GitCredentials::Bearer(token) => {
                Zeroizing::new(format!("Authorization: Bearer {}", token.as_str()))
            }
        }
    }

    /// The strings that must never appear in anything the builder keeps or shows.
    pub(super) fn secrets(&self) -> Vec<Zeroizing<String>> {
        let header = self.header();
        let mut secrets = vec![header.clone()];
        if let Some((_, encoded)) = header.rsplit_once(' ') {
            secrets.push(Zeroizing::new(encoded.to_string()));
        }
        match self {
            GitCredentials::Basic { password, .. } => secrets.push(password.clone()),
            GitCredentials::Bearer(token) => secrets.push(token.clone()),
        }
        // Blanking every `a` of the output would hide more than it protects.
        secrets.retain(|secret| secret.len() >= 4);
        secrets
    }
}

/// A repository as git is given it: a local path or a URL, with any `user:password@`
/// taken out into [`GitCredentials`].
#[derive(Debug, Clone)]
pub struct Repository {
    /// What git fetches from, without credentials.
    location: String,
    /// Credentials found in the URL.
    embedded: Option<GitCredentials>,
}

impl Repository {
    /// The location without credentials: what records and messages show.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Credentials that were written into the URL, if any.
    pub fn embedded_credentials(&self) -> Option<&GitCredentials> {
        self.embedded.as_ref()
    }
}

impl FromStr for Repository {
    type Err = BuildError;

    fn from_str(text: &str) -> Result<Self, BuildError> {
        let refuse = |why: &str| Err(BuildError::InvalidInput(format!("repository {why}")));
        if text.is_empty() {
            return refuse("is empty");
        }
        if text.starts_with('-') {
            // git would read it as an option.
            return refuse("must not start with `-`");
        }
        if text.len() > 2048 || text.chars().any(char::is_control) {
            return refuse("must be at most 2048 characters without control characters");
        }
        // `transport::address` hands the address to a remote helper (`ext::` runs a
        // command).
        if text
            .split("://")
            .next()
            .is_some_and(|head| head.contains("::"))
        {
            return refuse("must not be a remote-helper address (`transport::address`)");
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            // A local path or scp-like `host:path`; a user name there is an SSH login.
            return Ok(Repository {
                location: text.to_string(),
                embedded: None,
            });
        };
        if !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
            return Err(BuildError::InvalidInput(format!(
                "repository scheme `{}` is not one of https, http, ssh, git, file",
                scheme.escape_debug()
            )));
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let Some((userinfo, host)) = authority.rsplit_once('@') else {
            return Ok(Repository {
                location: text.to_string(),
                embedded: None,
            });
        };
        let location = format!("{scheme}://{host}{path}");
        let embedded = match (scheme, userinfo.split_once(':')) {
            ("http" | "https", Some((username, password))) => Some(GitCredentials::Basic {
                username: percent_decode(username),
                password: Zeroizing::new(percent_decode(password)),
            }),
            ("http" | "https", None) => {
                return refuse("names a user but no password; pass credentials separately instead");
            }
            (_, Some(_)) => {
                return refuse(
                    "carries a password; SSH logs in with keys, and HTTPS credentials go \
                     separately",
                );
            }
            // ssh://user@host/…: the login name, not a secret.
            _ => {
                return Ok(Repository {
                    location: text.to_string(),
                    embedded: None,
                });
            }
        };
        Ok(Repository { location, embedded })
    }
}

/// `%XX` escapes of a URL's user information decoded (as git would).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (byte, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_commit_ids() {
        let sha = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(
            sha.parse::<Commit>().unwrap().as_str(),
            sha.to_ascii_lowercase()
        );
        for bad in [
            "main",
            "HEAD",
            "0123456",
            "0123456789abcdef0123456789abcdef0123456g",
            "0123456789abcdef0123456789abcdef012345678",
            "",
        ] {
            let error = bad.parse::<Commit>().unwrap_err();
            assert!(matches!(error, BuildError::InvalidInput(_)), "{bad}");
        }
    }

    #[test]
    fn package_paths_stay_inside_the_checkout() {
        assert_eq!(
            "drivers/pjlink/".parse::<PackagePath>().unwrap().as_str(),
            "drivers/pjlink"
        );
        assert_eq!(
            "drivers//pjlink".parse::<PackagePath>().unwrap().as_str(),
            "drivers/pjlink"
        );
        for bad in [
            "../pjlink",
            "drivers/../../etc",
            "/etc",
            "./drivers",
            "",
            "drivers\\pjlink",
        ] {
            assert!(bad.parse::<PackagePath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_taken_out_of_urls() {
        let repo: Repository = "https://bot:s%40cret@git.example/org/drivers.git"
            .parse()
            .unwrap();
        assert_eq!(repo.location(), "https://git.example/org/drivers.git");
        match repo.embedded_credentials().unwrap() {
            GitCredentials::Basic { username, password } => {
                assert_eq!(username, "bot");
                assert_eq!(password.as_str(), "s@cret");
            }
            other => panic!("{other:?}"),
        }
        let debug = format!("{:?}", repo);
        assert!(
            !debug.contains("s@cret") && !debug.contains("s%40cret"),
            "{debug}"
        );

        for plain in [
            "/srv/git/drivers",
            "git@git.example:org/drivers.git",
            "ssh://git@git.example/org/drivers.git",
            "https://git.example/org/drivers.git",
        ] {
            let repo: Repository = plain.parse().unwrap();
            assert_eq!(repo.location(), plain);
            assert!(repo.embedded_credentials().is_none());
        }
        for bad in [
            "--upload-pack=evil",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "ftp://git.example/x",
            "",
        ] {
            assert!(bad.parse::<Repository>().is_err(), "{bad}");
        }
        assert!("https://token@git.example/x".parse::<Repository>().is_err());
    }

    #[test]
    fn headers_and_secrets() {
        let basic = GitCredentials::Basic {
            username: "u".into(),
            password: Zeroizing::new("p".into()),
        };
        assert_eq!(basic.header().as_str(), "Authorization: Basic dTpw");
        assert!(basic.secrets().iter().any(|s| s.as_str() == "dTpw"));
        assert!(
            !basic.secrets().iter().any(|s| s.as_str() == "p"),
            "too short to blank out"
        );
        let bearer = GitCredentials::Bearer(Zeroizing::new("t0k".into()));
        assert_eq!(bearer.header().as_str(), "Authorization: Bearer t0k");
        assert_eq!(format!("{bearer:?}"), "Bearer(<redacted>)");
    }
}
