//! Buyer routes: take a ticket, read a sale's status.
//!
//! The take route runs DESIGN §3's checks cheapest first. Everything up to
//! the sold-out answer is decided from memory: the sale registry, the sale
//! window, the rate limiters, the session HMAC, the eligibility and winners
//! replicas and the sold-out flag. Only a buyer holding a local unit (or a
//! sold-out miss while the winners replica may still be behind) reaches
//! Redis.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::RequestBody;
use bytes::Buf;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH};
use hyper::{Request, StatusCode};

use super::response::{self, Reply};
use crate::app::Shared;
use crate::auth::{bearer, TicketClaims};
use crate::commit::Settled;
use crate::id::{SaleId, UserId};
use crate::lease::{self, Refill};
use crate::limits::retry_after_secs;
use crate::sales::LiveSale;
use crate::stock::{Sale, Window};
use crate::store::{Issued, Refusal, Verdict};

/// The take body is empty or `{}`; anything longer is not a purchase.
const TAKE_BODY_LIMIT: usize = 1024;
/// Commits a buyer may see fenced or short of units (a lease moved under
/// it) before giving up with 503.
const FENCED_ATTEMPTS: usize = 4;
/// Refills a buyer may wait through while others take the new units first.
/// Each costs a Redis round trip, so this bounds the time as well; the
/// per-request timeout bounds it too.
const REFILL_ROUNDS: usize = 64;

pub async fn take<B: RequestBody>(
    shared: &Arc<Shared>,
    sale_id: SaleId,
    req: Request<B>,
    peer: IpAddr,
) -> Reply {
    let (parts, body) = req.into_parts();
    if let Err(r) = check_take_body(&parts.headers, body).await {
        return r;
    }
    let Some(live) = shared.sales.get(&sale_id) else {
        return response::unknown_sale();
    };
    let sale = &live.sale;
    let now = shared.clock.now_ms();
    match sale.window(now) {
        Window::NotStarted { starts_at_ms } => return response::not_started(starts_at_ms),
        Window::Ended => return response::ended(),
        Window::Open => {}
    }
    let ip = client_ip(&parts.headers, peer, shared.config.trust_forwarded_for);
    if let Err(wait) = shared.limits.check_address(ip) {
        return response::rate_limited(retry_after_secs(wait));
    }
    let Some(token) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|h| bearer(h.as_bytes()))
    else {
        return response::invalid_session();
    };
    let Ok(user) = shared.session_keys.verify_session(token, now / 1000) else {
        return response::invalid_session();
    };
    if sale.list_only() && !sale.is_eligible(&user) {
        return response::not_eligible();
    }
    if let Err(wait) = shared.limits.check_user(&user) {
        return response::rate_limited(retry_after_secs(wait));
    }
    if let Some(issued) = sale.winner(&user) {
        return ticket(shared, sale, user, issued, true);
    }
    // Boxed: the commit path's state stays off the rejected path's future.
    Box::pin(acquire(shared, &live, user, now)).await
}

/// Takes a unit and commits it, refilling the lease as needed.
async fn acquire(shared: &Arc<Shared>, live: &Arc<LiveSale>, user: UserId, now: u64) -> Reply {
    let sale = &live.sale;
    let (mut fenced, mut refills) = (0, 0);
    while fenced < FENCED_ATTEMPTS && refills < REFILL_ROUNDS {
        if sale.is_sold_out() && sale.stock.units() == 0 {
            return sold_out(shared, sale, user).await;
        }
        let Some(epoch) = sale.stock.take() else {
            refills += 1;
            match lease::refill(&shared.lease, sale).await {
                Refill::Ready => continue,
                // This buyer's request made the lease call: it reached Redis.
                Refill::SoldOut => return sold_out(shared, sale, user).await.via_store(),
                Refill::Refused(r) => return refusal(sale, r),
                Refill::Failed => return response::unavailable().via_store(),
            }
        };
        sale.last_take_ms.store(now, Relaxed);
        lease::maybe_prefetch(&shared.lease, sale);
        match live.committer.commit(sale, user, epoch).await {
            Settled::Judged(Verdict::Won(issued)) => {
                return ticket(shared, sale, user, issued, false).via_store()
            }
            Settled::Judged(Verdict::Replay(issued)) => {
                return ticket(shared, sale, user, issued, true).via_store()
            }
            Settled::Judged(Verdict::NotEligible) => return response::not_eligible().via_store(),
            Settled::Judged(Verdict::Fenced | Verdict::NoUnits) => fenced += 1,
            Settled::Refused(r) => return refusal(sale, r),
            Settled::Failed => return response::unavailable().via_store(),
        }
    }
    response::unavailable().via_store()
}

/// The sold-out answer, after making sure the buyer did not win elsewhere.
async fn sold_out(shared: &Shared, sale: &Sale, user: UserId) -> Reply {
    if sale.replica_complete() {
        return response::sold_out();
    }
    match shared.store.winner(&sale.id, &user).await {
        Ok(Some(rec)) => {
            let issued = Issued {
                ticket: rec.ticket,
                issued_at_ms: rec.issued_at_ms,
                expires_at_ms: rec.expires_at_ms,
            };
            sale.remember_winner(user, issued);
            ticket(shared, sale, user, issued, true).via_store()
        }
        Ok(None) => response::sold_out().via_store(),
        Err(_) => response::unavailable().via_store(),
    }
}

fn refusal(sale: &Sale, r: Refusal) -> Reply {
    match r {
        Refusal::UnknownSale => response::unknown_sale(),
        Refusal::NotStarted => response::not_started(sale.starts_at_ms()),
        Refusal::Ended | Refusal::Closed => response::ended(),
    }
    .via_store()
}

/// 201 for a new win, 200 with `"replay":true` for a repeat.
fn ticket(shared: &Shared, sale: &Sale, user: UserId, issued: Issued, replay: bool) -> Reply {
    let token = shared.ticket_keys.sign_ticket(&TicketClaims {
        sale: sale.id,
        ticket: issued.ticket,
        user,
        expires_at_ms: issued.expires_at_ms,
    });
    // Ids and tokens are of a JSON-safe alphabet, so no escaping is needed.
    let body = format!(
        "{{\"outcome\":\"won\",\"sale\":\"{}\",\"ticket\":\"{}\",\"token\":\"{}\",\"expires_at_ms\":{}{}}}",
        sale.id,
        issued.ticket,
        token,
        issued.expires_at_ms,
        if replay { ",\"replay\":true" } else { "" }
    );
    let (status, outcome) = if replay {
        (StatusCode::OK, "replay")
    } else {
        (StatusCode::CREATED, "won")
    };
    Reply::new(response::json(status, body), outcome)
}

/// Refuses bodies other than empty or a JSON object, reading at most
/// [`TAKE_BODY_LIMIT`] bytes.
async fn check_take_body<B: RequestBody>(headers: &HeaderMap, body: B) -> Result<(), Reply> {
    if body.is_end_stream() {
        return Ok(());
    }
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
    if trimmed.is_empty()
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(trimmed).is_ok()
    {
        Ok(())
    } else {
        Err(response::bad_request("body_must_be_empty_or_an_object"))
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
    let Some(live) = shared.sales.get(&sale_id) else {
        return response::unknown_sale();
    };
    let s = &live.sale;
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
