//! CORS for the buyer routes (DESIGN §3): the shop's page, served from its
//! own origin, calls bigtap from the browser.
//!
//! Owns the list of allowed origins (`--cors-origins`), the preflight answer
//! and the headers added to buyer answers. Invariants:
//!
//! - Only the buyer routes speak CORS; admin, backend and probe routes never
//!   carry a CORS header, so a browser page can never read them.
//! - An origin must match a configured one exactly (scheme, host and port,
//!   byte for byte). An unlisted origin gets no CORS header and no error: the
//!   browser itself withholds the answer from the page.
//! - Everything is answered from memory: the allowed origins are parsed into
//!   header values once at start-up, and a request's headers are only
//!   compared against them. A preflight costs one response head and never a
//!   lock, an allocation of its own or a Redis call; a refused preflight
//!   costs the same.
//! - With no origin configured (the default) nothing changes: `OPTIONS`
//!   stays 405 and answers carry no extra header.

use std::fmt;
use std::str::FromStr;

use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ALLOW, ORIGIN, VARY,
};
use hyper::{Response, StatusCode};

use super::response::{self, Body, Reply};

/// Methods a buyer route accepts from a browser.
const METHODS: HeaderValue = HeaderValue::from_static("GET, POST");
/// Request headers a page may send: the session and the JSON body's type.
const HEADERS: HeaderValue = HeaderValue::from_static("authorization, content-type");
/// The answer headers a page may read besides the safelisted ones: a page
/// that is told to wait must be able to see for how long.
const EXPOSE: HeaderValue = HeaderValue::from_static("Retry-After");
/// How long a browser may reuse a preflight answer (seconds). Ten minutes
/// spares a buyer's browser a round trip per click, while a changed origin
/// list still reaches every browser within minutes.
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const ORIGIN_VARIES: HeaderValue = HeaderValue::from_static("Origin");
/// Longest `Access-Control-Request-Headers` read. Browsers send the headers
/// a page set, lower-case and comma-separated; the two allowed ones fit in
/// 27 bytes. A longer list cannot be allowed anyway, and refusing it before
/// splitting keeps the work per preflight bounded.
pub const MAX_REQUEST_HEADERS_LEN: usize = 128;

/// Origins allowed to call the buyer routes from a browser.
#[derive(Clone, Default)]
pub struct Origins {
    allowed: Vec<HeaderValue>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error(
        "{0:?} is not an origin: expected scheme://host[:port] (http or https, no path, \
         no trailing slash, no wildcard)"
    )]
    Malformed(String),
}

impl Origins {
    /// Parses a comma-separated list of exact origins; an empty list turns
    /// CORS off.
    pub fn parse(list: &str) -> Result<Origins, OriginError> {
        let mut allowed = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !is_origin(item) {
                return Err(OriginError::Malformed(item.to_owned()));
            }
            HeaderValue::from_str(item).map_err(|_| OriginError::Malformed(item.to_owned()))?;
            if allowed
                .iter()
                .any(|a: &HeaderValue| a.as_bytes() == item.as_bytes())
            {
                continue;
            }
            // Leaked on purpose when the configuration is read (a few bytes
            // per origin, kept for the life of the process): a static value goes into an
            // answer as a plain pointer copy, where a shared one would make
            // every answer, on every worker thread, increment and decrement
            // one reference count on one cache line.
            allowed.push(HeaderValue::from_static(Box::leak(
                item.to_owned().into_boxed_str(),
            )));
        }
        Ok(Origins { allowed })
    }

    /// Whether any origin is configured.
    pub fn enabled(&self) -> bool {
        !self.allowed.is_empty()
    }

    /// Adds one origin (the demo adds its shop page's own).
    pub fn allow(&mut self, origin: &str) -> Result<(), OriginError> {
        for v in Origins::parse(origin)?.allowed {
            if !self.allowed.contains(&v) {
                self.allowed.push(v);
            }
        }
        Ok(())
    }

    /// The configured value matching the request's `Origin`, if listed. The
    /// value handed back is static: putting it into an answer copies a
    /// pointer, with no allocation and no atomic.
    pub fn matching(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        self.allowed
            .iter()
            .find(|a| a.as_bytes() == origin.as_bytes())
            .cloned()
    }
}

impl fmt::Debug for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.allowed.iter().map(|v| v.to_str().unwrap_or("?")))
            .finish()
    }
}

impl FromStr for Origins {
    type Err = OriginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origins::parse(s)
    }
}

/// `scheme://host[:port]` as a browser serialises it: http or https,
/// lower-case scheme, a host without path, query, user info or wildcard.
fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal has colons inside its brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// What the buyer answer must carry: `Some(origin)` when the request came
/// from a listed origin. Called before the request is consumed.
pub fn allowed_origin(origins: &Origins, headers: &HeaderMap) -> Option<HeaderValue> {
    if origins.enabled() {
        origins.matching(headers)
    } else {
        None
    }
}

/// Adds the CORS headers to a buyer answer from a listed origin.
pub fn decorate(origins: &Origins, allowed: Option<HeaderValue>, resp: &mut Response<Body>) {
    if let (true, Some(origin)) = (origins.enabled(), allowed) {
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE);
    }
}

/// Marks a cacheable buyer answer (the sale status, which a CDN may keep
/// for a second) as varying by `Origin` while CORS is on, so that a cache
/// never hands one origin's answer to another. Answers to `POST` are never
/// cached and go without it: the refused path stays as small as it can.
pub fn vary(origins: &Origins, resp: &mut Response<Body>) {
    if origins.enabled() {
        resp.headers_mut().insert(VARY, ORIGIN_VARIES);
    }
}

/// Why a preflight from a listed origin was refused. Each reason has its
/// own static body, so a refusal allocates nothing but its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Access-Control-Request-Method` is neither GET nor POST.
    Method,
    /// A requested header is not one of the allowed ones.
    Header,
    /// `Access-Control-Request-Headers` is longer than any allowed list.
    HeadersTooLong,
}

/// Checks a preflight's requested method and headers.
pub fn check_preflight(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(ACCESS_CONTROL_REQUEST_METHOD) {
        // The Fetch standard upper-cases only the standard methods, so the
        // comparison is exact.
        Some(m) if m.as_bytes() == b"POST" || m.as_bytes() == b"GET" => {}
        _ => return Err(Refusal::Method),
    }
    // Several header lines are one comma-separated list.
    let mut total = 0;
    for line in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
        total += line.len();
        if total > MAX_REQUEST_HEADERS_LEN {
            return Err(Refusal::HeadersTooLong);
        }
        for name in line.as_bytes().split(|&b| b == b',') {
            let name = name.trim_ascii();
            if !name.is_empty()
                && !name.eq_ignore_ascii_case(b"authorization")
                && !name.eq_ignore_ascii_case(b"content-type")
            {
                return Err(Refusal::Header);
            }
        }
    }
    Ok(())
}

/// The answer to `OPTIONS` on a buyer route while CORS is on.
///
/// - A listed origin with an acceptable preflight: 204 with the allow
///   headers.
/// - A listed origin asking for another method or header, or a header list
///   longer than any allowed one: 403 with the reason, no allow header.
/// - An unlisted origin: 204 with no CORS header; the browser blocks the
///   page, the server reports no error.
/// - No `Origin` (not a browser's preflight): 204 with `Allow`.
pub fn preflight(origins: &Origins, headers: &HeaderMap) -> Reply {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(VARY, ORIGIN_VARIES);
    if headers.get(ORIGIN).is_none() {
        h.insert(ALLOW, METHODS);
        return Reply::new(r, "preflight");
    }
    let Some(origin) = origins.matching(headers) else {
        return Reply::new(r, "preflight");
    };
    if let Err(why) = check_preflight(headers) {
        let body: &'static [u8] = match why {
            Refusal::Method => b"{\"error\":\"cors_method_not_allowed\"}",
            Refusal::Header => b"{\"error\":\"cors_header_not_allowed\"}",
            Refusal::HeadersTooLong => b"{\"error\":\"cors_request_headers_too_long\"}",
        };
        let mut r = response::json(StatusCode::FORBIDDEN, body);
        r.headers_mut().insert(VARY, ORIGIN_VARIES);
        return Reply::new(r, "bad_request");
    }
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(ACCESS_CONTROL_ALLOW_METHODS, METHODS);
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, HEADERS);
    h.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    Reply::new(r, "preflight")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins_are_exact_scheme_host_and_port() {
        let o = Origins::parse(" https://shop.example , http://127.0.0.1:8081,").unwrap();
        assert_eq!(
            format!("{o:?}"),
            r#"["https://shop.example", "http://127.0.0.1:8081"]"#
        );
        assert!(Origins::parse("").unwrap().allowed.is_empty());
        assert!(Origins::parse("http://[::1]:8081").is_ok());
        for bad in [
            "*",
            "shop.example",
            "https://shop.example/",
            "https://shop.example/buy",
            "ftp://shop.example",
            "https://",
            "https://shop.example:",
            "https://shop.example:99999",
            "https://user@shop.example",
            "https://*.shop.example",
        ] {
            assert!(Origins::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn only_a_listed_origin_matches_and_only_byte_for_byte() {
        let o = Origins::parse("https://shop.example").unwrap();
        let m = |v| o.matching(&headers(&[("origin", v)]));
        assert_eq!(m("https://shop.example").unwrap(), "https://shop.example");
        assert!(m("https://shop.example:443").is_none());
        assert!(m("http://shop.example").is_none());
        assert!(m("https://evil.example").is_none());
        assert!(m("null").is_none());
        assert!(o.matching(&HeaderMap::new()).is_none());
    }

    #[test]
    fn a_preflight_may_ask_for_the_session_and_json_headers_only() {
        let ok = |pairs| check_preflight(&headers(pairs));
        assert_eq!(ok(&[("access-control-request-method", "POST")]), Ok(()));
        assert_eq!(
            ok(&[
                ("access-control-request-method", "GET"),
                (
                    "access-control-request-headers",
                    "authorization,content-type"
                ),
            ]),
            Ok(())
        );
        assert_eq!(
            ok(&[
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "Authorization , Content-Type"
                ),
            ]),
            Ok(())
        );
        assert_eq!(
            ok(&[("access-control-request-method", "DELETE")]),
            Err(Refusal::Method)
        );
        assert_eq!(
            ok(&[("access-control-request-method", "post")]),
            Err(Refusal::Method)
        );
        assert_eq!(ok(&[]), Err(Refusal::Method));
        assert_eq!(
            ok(&[
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization,x-debug"),
            ]),
            Err(Refusal::Header)
        );
        let long: &'static str = Box::leak(["authorization"; 20].join(",").into_boxed_str());
        assert_eq!(
            ok(&[
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", long),
            ]),
            Err(Refusal::HeadersTooLong)
        );
    }
}
