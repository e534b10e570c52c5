//! HTTP Digest access authentication (RFC 7616) for the client side: parsing the
//! server's challenge and computing the `Authorization` header for each request.
//! SHA-256 is preferred when the server offers it; MD5 is accepted because many devices
//! offer nothing else. `qop=auth` is used when offered; `auth-int` and the `-sess`
//! variants are not.

use md5::Md5;
use sha2::{Digest, Sha256};

/// The hash a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, text: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(text.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(text.as_bytes())),
        }
    }
}

/// A server's digest challenge, with the nonce count used so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: Algorithm,
    qop_auth: bool,
    count: u32,
}

/// Split `key=value, key="quoted, value"` parameters.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut result = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((index, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = index + 1;
                        break;
                    }
                    other => value.push(other),
                }
            }
            (value, quoted.get(end..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (
                after.get(..end).unwrap_or("").trim().to_string(),
                after.get(end..).unwrap_or(""),
            )
        };
        result.push((key, value));
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    result
}

impl Challenge {
    /// The best digest challenge among `WWW-Authenticate` header values: SHA-256 before
    /// MD5; `None` if there is no usable one.
    pub(super) fn pick<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
        let mut best: Option<Challenge> = None;
        for value in values {
            let Some(rest) = value
                .trim()
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("digest "))
                .and_then(|_| value.trim().get(7..))
            else {
                continue;
            };
            let Some(challenge) = Challenge::parse(rest) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some(current) => {
                    current.algorithm == Algorithm::Md5 && challenge.algorithm == Algorithm::Sha256
                }
            };
            if better {
                best = Some(challenge);
            }
        }
        best
    }

    fn parse(text: &str) -> Option<Challenge> {
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = Some(Algorithm::Md5);
        let mut qop = None;
        for (key, value) in parameters(text) {
            match key.as_str() {
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "opaque" => opaque = Some(value),
                "qop" => qop = Some(value),
                "algorithm" => {
                    algorithm = match value.to_ascii_uppercase().as_str() {
                        "MD5" => Some(Algorithm::Md5),
                        "SHA-256" => Some(Algorithm::Sha256),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        let qop_auth = match qop {
            None => false,
            Some(list) => {
                if !list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
                {
                    return None;
                }
                true
            }
        };
        Some(Challenge {
            realm: realm?,
            nonce: nonce?,
            opaque,
            algorithm: algorithm?,
            qop_auth,
            count: 0,
        })
    }

    /// The `Authorization` value for `method` on `uri` (path and query), counting one
    /// more use of the nonce.
    pub(super) fn authorize(
        &mut self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        self.count = self.count.wrapping_add(1);
        let hash = |text: &str| self.algorithm.hash(text);
        let ha1 = hash(&format!("{username}:{}:{password}", self.realm));
        let ha2 = hash(&format!("{method}:{uri}"));
        let nc = format!("{:08x}", self.count);
        let response = if self.qop_auth {
            hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let quote = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{response}\"",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            self.algorithm.name(),
        );
        if self.qop_auth {
            header.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = &self.opaque {
            header.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7616_example_md5() {
        // RFC 7616 section 3.9.1, MD5 variant.
        let mut challenge = Challenge::pick(std::iter::once(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        ))
        .unwrap();
        let header = challenge.authorize(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            header.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#),
            "{header}"
        );
        assert!(header.contains("nc=00000001"));
    }

    #[test]
    fn rfc_7616_example_sha256_is_preferred() {
        let values = [
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        ];
        let mut challenge = Challenge::pick(values.into_iter()).unwrap();
        let header = challenge.authorize(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            header.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{header}"
        );
        let second = challenge.authorize("Mufasa", "Circle of Life", "GET", "/", "x");
        assert!(second.contains("nc=00000002"));
    }

    #[test]
    fn unusable_challenges_are_skipped() {
        assert!(Challenge::pick(std::iter::once(r#"Basic realm="x""#)).is_none());
        assert!(
            Challenge::pick(std::iter::once(
                r#"Digest realm="x", nonce="n", algorithm=SHA-512-256"#
            ))
            .is_none()
        );
        assert!(
            Challenge::pick(std::iter::once(
                r#"Digest realm="x", nonce="n", qop="auth-int""#
            ))
            .is_none()
        );
        assert!(Challenge::pick(std::iter::once(r#"Digest nonce="n""#)).is_none());
        assert_eq!(
            parameters(r#"a="x, \"y\"", b=2"#),
            vec![("a".into(), "x, \"y\"".into()), ("b".into(), "2".into())]
        );
    }
}
