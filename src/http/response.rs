//! Contract responses (DESIGN §3) and their metric labels.
//!
//! Rejections use static bodies, so refusing a buyer allocates nothing
//! beyond the response head.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

pub type Body = Full<Bytes>;

/// A response plus what it means, for metrics.
pub struct Reply {
    pub resp: Response<Body>,
    /// The `outcome` label (buyer outcomes on the take route, else ok/error).
    pub outcome: &'static str,
    /// True when answered without Redis.
    pub from_memory: bool,
}

impl Reply {
    pub fn new(resp: Response<Body>, outcome: &'static str) -> Self {
        Reply {
            resp,
            outcome,
            from_memory: true,
        }
    }

    pub fn via_store(mut self) -> Self {
        self.from_memory = false;
        self
    }

    /// A reply for a non-buyer route: outcome from the status class.
    pub fn plain(resp: Response<Body>) -> Self {
        let outcome = if resp.status().as_u16() < 400 {
            "ok"
        } else {
            "error"
        };
        Reply::new(resp, outcome)
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

fn retry_after(mut r: Response<Body>, secs: u64) -> Response<Body> {
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}

pub fn sold_out() -> Reply {
    Reply::new(
        json(StatusCode::GONE, &b"{\"outcome\":\"sold_out\"}"[..]),
        "sold_out",
    )
}

pub fn ended() -> Reply {
    Reply::new(
        json(StatusCode::GONE, &b"{\"outcome\":\"ended\"}"[..]),
        "ended",
    )
}

pub fn not_started(starts_at_ms: u64) -> Reply {
    let body = format!("{{\"outcome\":\"not_started\",\"starts_at_ms\":{starts_at_ms}}}");
    Reply::new(json(StatusCode::TOO_EARLY, body), "not_started")
}

pub fn not_eligible() -> Reply {
    Reply::new(
        json(
            StatusCode::FORBIDDEN,
            &b"{\"outcome\":\"not_eligible\"}"[..],
        ),
        "not_eligible",
    )
}

pub fn rate_limited(secs: u64) -> Reply {
    let r = json(
        StatusCode::TOO_MANY_REQUESTS,
        &b"{\"outcome\":\"rate_limited\"}"[..],
    );
    Reply::new(retry_after(r, secs), "rate_limited")
}

pub fn invalid_session() -> Reply {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &b"{\"error\":\"invalid_session\"}"[..],
    );
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Reply::new(r, "invalid_session")
}

/// 401 for admin and backend routes.
pub fn unauthorized() -> Reply {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &b"{\"error\":\"unauthorized\"}"[..],
    );
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Reply::plain(r)
}

pub fn unknown_sale() -> Reply {
    Reply::new(
        json(StatusCode::NOT_FOUND, &b"{\"error\":\"unknown_sale\"}"[..]),
        "unknown_sale",
    )
}

pub fn unavailable() -> Reply {
    let r = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &b"{\"error\":\"unavailable\"}"[..],
    );
    Reply::new(retry_after(r, 1), "unavailable")
}

/// 503 for a commit that was sent and whose result is not known: a retry
/// or `GET …/tickets/mine` tells (DESIGN §3).
pub fn outcome_unknown() -> Reply {
    let r = json(
        StatusCode::SERVICE_UNAVAILABLE,
        &b"{\"error\":\"unavailable\",\"outcome\":\"unknown\"}"[..],
    );
    Reply::new(retry_after(r, 1), "unknown")
}

/// 404 from `…/tickets/mine`: this buyer holds no ticket of the sale.
pub fn no_ticket() -> Reply {
    Reply::new(
        json(StatusCode::NOT_FOUND, &b"{\"outcome\":\"none\"}"[..]),
        "none",
    )
}

pub fn not_found() -> Reply {
    Reply::new(
        json(StatusCode::NOT_FOUND, &b"{\"error\":\"not_found\"}"[..]),
        "bad_request",
    )
}

/// 400 with a short machine-readable reason.
pub fn bad_request(reason: &'static str) -> Reply {
    let body = format!("{{\"error\":\"{reason}\"}}");
    Reply::new(json(StatusCode::BAD_REQUEST, body), "bad_request")
}

pub fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &b"{\"error\":\"method_not_allowed\"}"[..],
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    Reply::new(r, "bad_request")
}

pub fn too_large() -> Reply {
    Reply::new(
        json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &b"{\"error\":\"body_too_large\"}"[..],
        ),
        "bad_request",
    )
}

/// The (status, outcome) pairs a route can answer, numbered for the
/// request counters. Unknown pairs share the last slot.
pub fn slot(status: u16, outcome: &str) -> usize {
    const PAIRS: [(u16, &str); 31] = [
        (201, "won"),
        (200, "replay"),
        (410, "sold_out"),
        (410, "ended"),
        (425, "not_started"),
        (403, "not_eligible"),
        (429, "rate_limited"),
        (401, "invalid_session"),
        (404, "unknown_sale"),
        (503, "unavailable"),
        (503, "unknown"),
        (404, "none"),
        (400, "bad_request"),
        (404, "bad_request"),
        (405, "bad_request"),
        (413, "bad_request"),
        (431, "bad_request"),
        (408, "bad_request"),
        (204, "preflight"),
        (403, "bad_request"),
        (200, "ok"),
        (201, "ok"),
        (400, "error"),
        (401, "error"),
        (403, "error"),
        (404, "error"),
        (405, "error"),
        (409, "error"),
        (413, "error"),
        (500, "error"),
        (503, "error"),
    ];
    PAIRS
        .iter()
        .position(|&(s, o)| s == status && o == outcome)
        .unwrap_or(crate::metrics::ANSWER_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_fits_the_counter_table() {
        assert!(slot(503, "error") < crate::metrics::ANSWER_SLOTS - 1);
        assert_eq!(slot(299, "odd"), crate::metrics::ANSWER_SLOTS - 1);
    }

    #[test]
    fn rejections_carry_the_contract_headers() {
        assert_eq!(rate_limited(3).resp.headers()[RETRY_AFTER], "3");
        assert_eq!(unavailable().resp.headers()[RETRY_AFTER], "1");
        assert_eq!(invalid_session().resp.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(sold_out().resp.status(), StatusCode::GONE);
    }
}
