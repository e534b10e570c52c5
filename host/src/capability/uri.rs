//! The base URI of an HTTP driver's module and the origin it fixes.
//!
//! The deployer writes `https://display-17.example.org:8443/api`; the scheme, host and port
//! form the module's [`Origin`], the only place its requests and redirects may go, and the
//! path is the prefix under which the driver's own paths are appended.

use std::fmt;

use super::{Endpoint, EndpointError};

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme's default port.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// The scheme as written in a URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Scheme, host and port: where an HTTP request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host (lower case) and port, the default port filled in.
    pub endpoint: Endpoint,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.endpoint)
    }
}

impl Origin {
    /// The origin of an absolute URI, or `None` for a relative one or another scheme.
    pub fn of(uri: &http::Uri) -> Option<Origin> {
        let scheme = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("http") => Scheme::Http,
            s if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        Some(Origin {
            scheme,
            endpoint: Endpoint {
                host: host.to_ascii_lowercase(),
                port,
            },
        })
    }
}

/// A module's base URI: an origin and a path prefix (without a trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseUri {
    /// Where every request goes.
    pub origin: Origin,
    /// The path prefix, `""` for the root; never ends with `/`.
    pub path: String,
}

impl fmt::Display for BaseUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.path)
    }
}

/// Why a base URI was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    /// Not an absolute `http://` or `https://` URI.
    #[error("base URI `{0}` must be an absolute http:// or https:// URI")]
    NotHttp(String),
    /// User information, a query or a fragment in a base URI.
    #[error("base URI `{0}` must not contain user information, a query or a fragment")]
    Extra(String),
    /// The host or port is invalid.
    #[error("base URI `{uri}`: {error}")]
    Endpoint {
        /// The URI as given.
        uri: String,
        /// What is wrong with its host or port.
        error: EndpointError,
    },
}

impl std::str::FromStr for BaseUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let not_http = || UriError::NotHttp(text.to_string());
        let uri: http::Uri = text.parse().map_err(|_| not_http())?;
        if text.contains(['?', '#']) {
            return Err(UriError::Extra(text.to_string()));
        }
        let origin = Origin::of(&uri).ok_or_else(|| {
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                UriError::Extra(text.to_string())
            } else {
                not_http()
            }
        })?;
        // Validate the host the same way as a `host:port` endpoint.
        let endpoint: Endpoint =
            origin
                .endpoint
                .to_string()
                .parse()
                .map_err(|error| UriError::Endpoint {
                    uri: text.to_string(),
                    error,
                })?;
        let path = uri.path().trim_end_matches('/').to_string();
        if path
            .split('/')
            .any(|segment| segment == ".." || segment == ".")
        {
            return Err(not_http());
        }
        Ok(BaseUri {
            origin: Origin {
                scheme: origin.scheme,
                endpoint,
            },
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_uris_parse_with_default_ports_and_no_trailing_slash() {
        let base: BaseUri = "https://Display.Example.org/api/".parse().unwrap();
        assert_eq!(base.origin.scheme, Scheme::Https);
        assert_eq!(base.origin.endpoint.host, "display.example.org");
        assert_eq!(base.origin.endpoint.port, 443);
        assert_eq!(base.path, "/api");
        assert_eq!(base.to_string(), "https://display.example.org:443/api");
        let plain: BaseUri = "http://10.0.0.5:8080".parse().unwrap();
        assert_eq!(plain.origin.endpoint.port, 8080);
        assert_eq!(plain.path, "");
        let v6: BaseUri = "http://[::1]:8080/x".parse().unwrap();
        assert_eq!(v6.origin.endpoint.host, "::1");
    }

    #[test]
    fn base_uris_refuse_what_would_blur_the_origin() {
        for bad in [
            "ftp://host/",
            "host:80",
            "/relative",
            "https://user:pw@host/",
            "https://host/?q=1",
            "https://host/#frag",
            "https://host/a/../b",
            "https://ho st/",
            "https://host:0/",
        ] {
            assert!(bad.parse::<BaseUri>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Origin::of(&"https://h.example/x".parse().unwrap()).unwrap();
        let b = Origin::of(&"https://H.EXAMPLE:443/y".parse().unwrap()).unwrap();
        let c = Origin::of(&"http://h.example/x".parse().unwrap()).unwrap();
        let d = Origin::of(&"https://h.example:8443/x".parse().unwrap()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(Origin::of(&"/relative".parse().unwrap()).is_none());
        assert!(Origin::of(&"https://u@h.example/".parse().unwrap()).is_none());
    }
}
