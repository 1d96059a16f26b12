//! Store URLs: which kind of store a URL names, and how to print it safely.
//!
//! `redis://` and `rediss://` (TLS) name one server; `redis+cluster://` and
//! `rediss+cluster://` name a seed node of a Redis Cluster (MemoryDB,
//! ElastiCache in cluster mode). A URL may carry a user and password
//! (`redis://user:secret@host:6379`); nothing bigtap prints (logs, errors,
//! `/metrics`, `--help`) ever shows the password: everything prints a
//! [`StoreUrl`] or [`redact`]ed text.

use std::fmt;

/// A parsed store URL. `Display` and `Debug` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The URL as the redis client takes it (`redis://` or `rediss://`):
    /// for a cluster, the seed node.
    url: String,
    cluster: bool,
}

/// The URL is not one bigtap can use.
#[derive(Debug, thiserror::Error)]
#[error("store URL {shown} is not usable: {why}")]
pub struct UrlError {
    shown: String,
    why: &'static str,
}

impl StoreUrl {
    pub fn parse(raw: &str) -> Result<StoreUrl, UrlError> {
        let raw = raw.trim();
        let err = |why| UrlError {
            shown: redact(raw),
            why,
        };
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| {
            err("expected redis://, rediss://, redis+cluster:// or rediss+cluster://")
        })?;
        let (base, cluster) = match scheme {
            "redis" | "rediss" => (scheme, false),
            "redis+cluster" => ("redis", true),
            "rediss+cluster" => ("rediss", true),
            _ => {
                return Err(err(
                    "expected redis://, rediss://, redis+cluster:// or rediss+cluster://",
                ))
            }
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(err("no host"));
        }
        Ok(StoreUrl {
            url: format!("{base}://{rest}"),
            cluster,
        })
    }

    /// The URL for the redis client (with credentials: never print it).
    pub(crate) fn client_url(&self) -> &str {
        &self.url
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = redact(&self.url);
        match (self.cluster, shown.split_once("://")) {
            (true, Some((scheme, rest))) => write!(f, "{scheme}+cluster://{rest}"),
            _ => f.write_str(&shown),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

/// `text` with the password of any `scheme://user:password@host` in it
/// replaced by `***` (a lone `scheme://secret@host` too, since Redis takes a
/// bare password there). Works on URLs and on messages that quote one.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_when_a_url_is_printed() {
        let u = StoreUrl::parse("rediss+cluster://app:s3cret@cfg.example:6379/0").unwrap();
        assert_eq!(u.to_string(), "rediss+cluster://app:***@cfg.example:6379/0");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!(u.is_cluster() && u.is_tls());
        assert_eq!(u.client_url(), "rediss://app:s3cret@cfg.example:6379/0");
        assert_eq!(
            redact("cannot reach redis://:pw@h:1/ (and https://u:p@x/y)"),
            "cannot reach redis://:***@h:1/ (and https://u:***@x/y)"
        );
        assert_eq!(redact("redis://secret@h"), "redis://***@h");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn each_scheme_names_its_kind_of_store() {
        let single = StoreUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert!(!single.is_cluster() && !single.is_tls());
        assert!(StoreUrl::parse("redis+cluster://127.0.0.1:7000")
            .unwrap()
            .is_cluster());
        assert!(StoreUrl::parse("http://127.0.0.1").is_err());
        let e = StoreUrl::parse("memcache://u:pw@h")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw"), "{e}");
    }
}
