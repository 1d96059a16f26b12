//! Buyer routes: take a ticket, read a sale's status.
//!
//! Admission decides (`crate::admission`); this module reads the request
//! (body, `ship_to`, the door: address limit, session, per-user limit) and
//! translates an [`Outcome`] into its response, in one place.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::RequestBody;
use bytes::Buf;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH};
use hyper::{Request, StatusCode};
use tokio::time::Instant;

use super::response::{self, Reply};
use super::router::Routed;
use super::Shared;
use crate::admission::{Answer, Door, Mine, Outcome, Taking, Ticket, Turned};
use crate::auth::{bearer, KeyRing, TicketClaims};
use crate::id::{RegionId, SaleId, UserId};
use crate::limits::retry_after_secs;

/// The take body is empty or `{}`; anything longer is not a purchase.
const TAKE_BODY_LIMIT: usize = 1024;

pub fn take<B: RequestBody>(
    shared: &Arc<Shared>,
    sale_id: SaleId,
    req: Request<B>,
    peer: IpAddr,
) -> Routed<'_> {
    let deadline = Instant::now() + Duration::from_millis(shared.config.request_timeout_ms);
    let (parts, body) = req.into_parts();
    if !body.is_end_stream() {
        // Boxed whole: a body on this route is rare, and reading one would
        // otherwise add its state to every take's future.
        return Routed::Waiting(Box::pin(take_with_body(
            shared, sale_id, parts, body, peer, deadline,
        )));
    }
    Routed::Take {
        taking: begin(shared, sale_id, &parts.headers, None, peer, deadline),
        keys: &shared.ticket_keys,
        sale: sale_id,
    }
}

/// A take whose body must be read first for its `ship_to` (DESIGN §7).
async fn take_with_body<B: RequestBody>(
    shared: &Shared,
    sale_id: SaleId,
    parts: hyper::http::request::Parts,
    body: B,
    peer: IpAddr,
    deadline: Instant,
) -> Reply {
    let ship_to = match check_take_body(&parts.headers, body).await {
        Ok(region) => region,
        Err(r) => return r,
    };
    let answer = begin(shared, sale_id, &parts.headers, ship_to, peer, deadline).await;
    reply(&shared.ticket_keys, sale_id, answer)
}

/// Starts the take: every check from memory runs now (see
/// [`crate::admission::Admission::take`]).
fn begin(
    shared: &Shared,
    sale_id: SaleId,
    headers: &HeaderMap,
    ship_to: Option<RegionId>,
    peer: IpAddr,
    deadline: Instant,
) -> Taking {
    match shared.sales.get(&sale_id) {
        Some(admission) => {
            let door = BuyerDoor {
                shared,
                headers,
                peer,
            };
            admission.take(&door, ship_to, deadline)
        }
        None => Taking::Ready(Some(Answer {
            outcome: Outcome::NoSale,
            asked_store: false,
        })),
    }
}

/// The one mapping from a take's outcome to its response (DESIGN §3).
pub(super) fn reply(keys: &KeyRing, sale: SaleId, answer: Answer) -> Reply {
    let outcome = answer.outcome;
    let mut r = match outcome {
        Outcome::Won(t) => ticket(keys, sale, t, false),
        Outcome::Replay(t) => ticket(keys, sale, t, true),
        Outcome::SoldOut => response::sold_out(),
        Outcome::NotEligible => response::not_eligible(),
        Outcome::Ended => response::ended(),
        Outcome::NotStarted { starts_at_ms } => response::not_started(starts_at_ms),
        Outcome::Unknown => response::outcome_unknown(),
        Outcome::Unavailable => response::unavailable(),
        Outcome::NoSale => response::unknown_sale(),
        Outcome::Turned(t) => turned(t),
    };
    r.outcome = outcome.label();
    if answer.asked_store {
        r = r.via_store();
    }
    r
}

/// The node's door for one request: the per-address limit and the session
/// (who is buying), and the per-user limit.
struct BuyerDoor<'a> {
    shared: &'a Shared,
    headers: &'a HeaderMap,
    peer: IpAddr,
}

impl Door for BuyerDoor<'_> {
    fn identify(&self, now_ms: u64) -> Result<UserId, Turned> {
        let shared = self.shared;
        let ip = client_ip(self.headers, self.peer, shared.config.trust_forwarded_for);
        if let Err(wait) = shared.limits.check_address(ip) {
            return Err(Turned::RateLimited {
                retry_after_s: retry_after_secs(wait),
            });
        }
        let token = self
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| bearer(h.as_bytes()))
            .ok_or(Turned::InvalidSession)?;
        shared
            .session_keys
            .verify_session(token, now_ms / 1000)
            .map_err(|_| Turned::InvalidSession)
    }

    fn pace(&self, user: &UserId) -> Result<(), Turned> {
        self.shared
            .limits
            .check_user(user)
            .map_err(|wait| Turned::RateLimited {
                retry_after_s: retry_after_secs(wait),
            })
    }
}

/// `GET /v1/sales/{sale}/tickets/mine`: the buyer's own ticket, before,
/// during and after the window, so a buyer whose answer got lost can
/// always learn the outcome.
pub async fn mine<B: RequestBody>(
    shared: &Arc<Shared>,
    sale_id: SaleId,
    req: Request<B>,
    peer: IpAddr,
) -> Reply {
    let Some(admission) = shared.sales.get(&sale_id) else {
        return response::unknown_sale();
    };
    let door = BuyerDoor {
        shared,
        headers: req.headers(),
        peer,
    };
    let answer = admission.mine(&door).await;
    let r = match answer.outcome {
        Mine::Ticket(t, state) => {
            let body = ticket_body(&shared.ticket_keys, sale_id, t, state.as_str(), false);
            Reply::new(response::json(StatusCode::OK, body), "ok")
        }
        Mine::NoTicket => response::no_ticket(),
        Mine::Unavailable => response::unavailable(),
        Mine::Turned(t) => turned(t),
    };
    if answer.asked_store {
        r.via_store()
    } else {
        r
    }
}

/// The door's refusals, on either buyer route.
fn turned(t: Turned) -> Reply {
    match t {
        Turned::RateLimited { retry_after_s } => response::rate_limited(retry_after_s),
        Turned::InvalidSession => response::invalid_session(),
    }
}

/// 201 for a new win, 200 with `"replay":true` for a repeat.
fn ticket(keys: &KeyRing, sale: SaleId, t: Ticket, replay: bool) -> Reply {
    let body = ticket_body(keys, sale, t, "", replay);
    let status = if replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Reply::new(response::json(status, body), "won")
}

/// The win body of DESIGN §3, with `"state"` when `state` is not empty
/// and `"warehouse"` (DESIGN §7).
fn ticket_body(keys: &KeyRing, sale: SaleId, t: Ticket, state: &str, replay: bool) -> String {
    let token = keys.sign_ticket(&TicketClaims {
        sale,
        ticket: t.issued.ticket,
        user: t.user,
        expires_at_ms: t.issued.expires_at_ms,
    });
    // Ids, tokens and states are of a JSON-safe alphabet: no escaping needed.
    format!(
        "{{\"outcome\":\"won\",\"sale\":\"{}\",\"ticket\":\"{}\",\"token\":\"{}\",\"expires_at_ms\":{},\"warehouse\":\"{}\"{}{}{}{}}}",
        sale,
        t.issued.ticket,
        token,
        t.issued.expires_at_ms,
        t.warehouse.as_str(),
        if replay { ",\"replay\":true" } else { "" },
        if state.is_empty() { "" } else { ",\"state\":\"" },
        state,
        if state.is_empty() { "" } else { "\"" },
    )
}

/// The fields of the take body bigtap reads; any others are ignored.
/// Borrowed, so parsing allocates nothing.
#[derive(serde::Deserialize)]
struct TakeBody<'a> {
    #[serde(borrow, default)]
    ship_to: Option<&'a str>,
}

/// Refuses bodies other than empty or a JSON object, reading at most
/// [`TAKE_BODY_LIMIT`] bytes, and returns the buyer's `ship_to` region
/// (DESIGN §7), which must be an id when given.
async fn check_take_body<B: RequestBody>(
    headers: &HeaderMap,
    body: B,
) -> Result<Option<RegionId>, Reply> {
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > TAKE_BODY_LIMIT as u64 {
            return Err(response::too_large());
        }
    }
    let bytes = super::read_limited(body, TAKE_BODY_LIMIT).await?;
    let trimmed = bytes.chunk().trim_ascii();
    if trimmed.is_empty() {
        return Ok(None);
    }
    // An object is the only JSON that starts with '{'; serde reads other
    // shapes into a struct too (a sequence), so check it first.
    if trimmed.first() != Some(&b'{') {
        return Err(response::bad_request("body_must_be_empty_or_an_object"));
    }
    match serde_json::from_slice::<TakeBody<'_>>(trimmed) {
        Ok(TakeBody { ship_to: None }) => Ok(None),
        Ok(TakeBody { ship_to: Some(r) }) => RegionId::parse(r)
            .map(Some)
            .map_err(|_| response::bad_request("ship_to_must_be_a_region_id")),
        Err(e) if e.is_data() => Err(response::bad_request("ship_to_must_be_a_region_id")),
        Err(_) => Err(response::bad_request("body_must_be_empty_or_an_object")),
    }
}

/// The buyer's address: the peer, or behind a trusted balancer the last
/// `X-Forwarded-For` entry (the one the balancer appended; earlier entries
/// are whatever the client claimed).
fn client_ip(headers: &HeaderMap, peer: IpAddr, trust_forwarded: bool) -> IpAddr {
    if !trust_forwarded {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

/// `GET /v1/sales/{sale}` from this node's view (at most one refresh old).
pub fn status(shared: &Shared, sale_id: SaleId) -> Reply {
    let Some(admission) = shared.sales.get(&sale_id) else {
        return response::unknown_sale();
    };
    let s = admission.sale();
    let body = format!(
        "{{\"sale\":\"{}\",\"state\":\"{}\",\"starts_at_ms\":{},\"ends_at_ms\":{},\"stock_total\":{},\"remaining_hint\":{}}}",
        s.id,
        s.state(shared.clock.now_ms()).as_str(),
        s.starts_at_ms(),
        s.ends_at_ms(),
        s.stock_total(),
        s.remaining_hint()
    );
    let mut r = response::json(StatusCode::OK, body);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
    Reply::plain(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_answers_its_contract_status_under_a_counted_label() {
        let keys = KeyRing::generate("t1").0;
        let sale = SaleId::parse("s").expect("an id");
        let t = Ticket::sample("u");
        let cases = [
            (Outcome::Won(t), 201),
            (Outcome::Replay(t), 200),
            (Outcome::SoldOut, 410),
            (Outcome::NotEligible, 403),
            (Outcome::Ended, 410),
            (Outcome::NotStarted { starts_at_ms: 5 }, 425),
            (Outcome::Unknown, 503),
            (Outcome::Unavailable, 503),
            (Outcome::NoSale, 404),
            (
                Outcome::Turned(Turned::RateLimited { retry_after_s: 3 }),
                429,
            ),
            (Outcome::Turned(Turned::InvalidSession), 401),
        ];
        for (outcome, status) in cases {
            let answer = Answer {
                outcome,
                asked_store: true,
            };
            let r = reply(&keys, sale, answer);
            assert_eq!(r.resp.status().as_u16(), status, "{outcome:?}");
            assert_eq!(r.outcome, outcome.label());
            assert!(!r.from_memory);
            assert!(
                response::slot(status, r.outcome) < crate::metrics::ANSWER_SLOTS - 1,
                "{outcome:?} has a request counter of its own"
            );
        }
    }

    #[test]
    fn the_client_address_is_the_peer_unless_the_balancer_is_trusted() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.0.0.7"),
        );
        let peer: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(client_ip(&h, peer, false), peer);
        assert_eq!(client_ip(&h, peer, true), IpAddr::from([10, 0, 0, 7]));
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(&h, peer, true), peer);
    }
}
