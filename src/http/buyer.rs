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
use std::time::Duration;

use super::RequestBody;
use bytes::Buf;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH};
use hyper::{Request, StatusCode};
use tokio::time::Instant;

use super::response::{self, Reply};
use crate::admission::commit::Settled;
use crate::admission::lease::{self, Refill};
use crate::admission::sales::LiveSale;
use crate::admission::stock::{Sale, Window};
use crate::app::Shared;
use crate::auth::{bearer, TicketClaims};
use crate::id::{RegionId, SaleId, UserId, WarehouseId};
use crate::limits::retry_after_secs;
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

/// How long a buyer whose commit outlived the request deadline may wait
/// for one lookup that settles it (won, or still unknown). The outer
/// request timeout allows for it.
pub const SETTLE_GRACE: Duration = Duration::from_millis(500);

pub async fn take<B: RequestBody>(
    shared: &Arc<Shared>,
    sale_id: SaleId,
    req: Request<B>,
    peer: IpAddr,
) -> Reply {
    let deadline = Instant::now() + Duration::from_millis(shared.config.request_timeout_ms);
    let (parts, body) = req.into_parts();
    let ship_to = match check_take_body(&parts.headers, body).await {
        Ok(region) => region,
        Err(r) => return r,
    };
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
    let user = match buyer(shared, &parts.headers, peer, now) {
        Ok(user) => user,
        Err(why) => return why.reply(),
    };
    if sale.list_only() && !sale.is_eligible(&user) {
        return response::not_eligible();
    }
    if let Err(wait) = shared.limits.check_user(&user) {
        return response::rate_limited(retry_after_secs(wait));
    }
    if let Some((issued, warehouse)) = sale.winner(&user) {
        return ticket(shared, sale, user, issued, Some(warehouse), true);
    }
    // Boxed: the commit path's state stays off the rejected path's future.
    if sale.may_have_won(&user) {
        return Box::pin(won_elsewhere(shared, &live, user, ship_to, now, deadline)).await;
    }
    Box::pin(acquire(shared, &live, user, ship_to, now, deadline)).await
}

/// A buyer whose digest is in the winners replica but whose ticket this
/// node has not seen (won on another node): one lookup, then the ticket
/// is remembered here. A digest collision finds no ticket and buys on.
async fn won_elsewhere(
    shared: &Arc<Shared>,
    live: &Arc<LiveSale>,
    user: UserId,
    ship_to: Option<RegionId>,
    now: u64,
    deadline: Instant,
) -> Reply {
    let sale = &live.sale;
    match tokio::time::timeout_at(deadline, shared.store.winner(&sale.id, &user)).await {
        Ok(Ok(Some(rec))) => {
            let issued = rec.issued();
            sale.remember_winner(user, issued, rec.warehouse);
            ticket(shared, sale, user, issued, Some(rec.warehouse), true).via_store()
        }
        Ok(Ok(None)) => acquire(shared, live, user, ship_to, now, deadline).await,
        Ok(Err(_)) | Err(_) => response::unavailable().via_store(),
    }
}

/// Why a buyer was turned away before their user id was known.
enum Unknown {
    RateLimited(u64),
    InvalidSession,
}

impl Unknown {
    fn reply(self) -> Reply {
        match self {
            Unknown::RateLimited(secs) => response::rate_limited(secs),
            Unknown::InvalidSession => response::invalid_session(),
        }
    }
}

/// The per-address limit, then the session: who is buying.
fn buyer(shared: &Shared, headers: &HeaderMap, peer: IpAddr, now: u64) -> Result<UserId, Unknown> {
    let ip = client_ip(headers, peer, shared.config.trust_forwarded_for);
    if let Err(wait) = shared.limits.check_address(ip) {
        return Err(Unknown::RateLimited(retry_after_secs(wait)));
    }
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|h| bearer(h.as_bytes()))
        .ok_or(Unknown::InvalidSession)?;
    shared
        .session_keys
        .verify_session(token, now / 1000)
        .map_err(|_| Unknown::InvalidSession)
}

/// Takes a unit and commits it, refilling the lease as needed, within
/// `deadline`. Every wait is bounded by it; a commit still unsettled at
/// the deadline is settled by one lookup, or answered as unknown.
async fn acquire(
    shared: &Arc<Shared>,
    live: &Arc<LiveSale>,
    user: UserId,
    ship_to: Option<RegionId>,
    now: u64,
    deadline: Instant,
) -> Reply {
    let sale = &live.sale;
    let (mut fenced, mut refills) = (0, 0);
    while fenced < FENCED_ATTEMPTS && refills < REFILL_ROUNDS {
        if sale.is_sold_out() && sale.stock.units() == 0 {
            return sold_out(shared, sale, user).await;
        }
        let Some(unit) = sale.take_unit() else {
            refills += 1;
            match tokio::time::timeout_at(deadline, lease::refill(&shared.lease, sale)).await {
                Ok(Refill::Ready) => continue,
                // This buyer's request made the lease call: it reached Redis.
                Ok(Refill::SoldOut) => return sold_out(shared, sale, user).await.via_store(),
                Ok(Refill::Refused(r)) => return refusal(sale, r),
                // Nothing was taken: a plain 503.
                Ok(Refill::Failed) | Err(_) => return response::unavailable().via_store(),
            }
        };
        sale.last_take_ms.store(now, Relaxed);
        lease::maybe_prefetch(&shared.lease, sale);
        let settled =
            tokio::time::timeout_at(deadline, live.committer.commit(sale, user, ship_to, unit))
                .await;
        match settled {
            Ok(Settled::Judged(Verdict::NotEligible)) => {
                return response::not_eligible().via_store()
            }
            Ok(Settled::Judged(Verdict::Fenced | Verdict::NoUnits)) => fenced += 1,
            Ok(Settled::Judged(v)) => {
                // Every other verdict is a win or a replay.
                if let Some((issued, placement, replay)) = v.ticket() {
                    return ticket(
                        shared,
                        sale,
                        user,
                        issued,
                        Some(placement.warehouse),
                        replay,
                    )
                    .via_store();
                }
                fenced += 1;
            }
            Ok(Settled::Refused(r)) => return refusal(sale, r),
            Ok(Settled::NotSent) => return response::unavailable().via_store(),
            // Sent, and no verdict came back in time: it may have won.
            Ok(Settled::Failed) | Err(_) => return settle_unknown(shared, sale, user).await,
        }
    }
    response::unavailable().via_store()
}

/// A commit whose verdict never came back (store timeout, reply lost) may
/// have recorded the win. One bounded lookup of the buyer's ticket settles
/// it when the store answers; otherwise the buyer is told the outcome is
/// unknown (DESIGN §3), never a plain "nothing was taken".
async fn settle_unknown(shared: &Shared, sale: &Sale, user: UserId) -> Reply {
    if let Some((issued, warehouse)) = sale.winner(&user) {
        return ticket(shared, sale, user, issued, Some(warehouse), false).via_store();
    }
    match tokio::time::timeout(SETTLE_GRACE, shared.store.winner(&sale.id, &user)).await {
        Ok(Ok(Some(rec))) => {
            let issued = rec.issued();
            sale.remember_winner(user, issued, rec.warehouse);
            ticket(shared, sale, user, issued, Some(rec.warehouse), false).via_store()
        }
        _ => response::outcome_unknown().via_store(),
    }
}

/// The sold-out answer, after making sure the buyer did not win elsewhere.
async fn sold_out(shared: &Shared, sale: &Sale, user: UserId) -> Reply {
    if sale.replica_complete(shared.clock.now_ms()) && !sale.may_have_won(&user) {
        return response::sold_out();
    }
    match shared.store.winner(&sale.id, &user).await {
        Ok(Some(rec)) => {
            let issued = rec.issued();
            sale.remember_winner(user, issued, rec.warehouse);
            ticket(shared, sale, user, issued, Some(rec.warehouse), true).via_store()
        }
        Ok(None) => response::sold_out().via_store(),
        Err(_) => response::unavailable().via_store(),
    }
}

/// `GET /v1/sales/{sale}/tickets/mine`: the buyer's own ticket, before,
/// during and after the window, so a buyer whose answer got lost can
/// always learn the outcome. A miss that the winners replica proves is
/// answered from memory; a ticket's state comes from Redis.
pub async fn mine<B: RequestBody>(
    shared: &Arc<Shared>,
    sale_id: SaleId,
    req: Request<B>,
    peer: IpAddr,
) -> Reply {
    let Some(live) = shared.sales.get(&sale_id) else {
        return response::unknown_sale();
    };
    let sale = &live.sale;
    let now = shared.clock.now_ms();
    let user = match buyer(shared, req.headers(), peer, now) {
        Ok(user) => user,
        Err(why) => return why.reply(),
    };
    if let Err(wait) = shared.limits.check_user(&user) {
        return response::rate_limited(retry_after_secs(wait));
    }
    if !sale.may_have_won(&user) && sale.replica_complete(now) {
        return response::no_ticket();
    }
    Box::pin(async move {
        match shared.store.winner(&sale.id, &user).await {
            Ok(Some(rec)) => {
                let issued = rec.issued();
                sale.remember_winner(user, issued, rec.warehouse);
                let body = ticket_body(
                    shared,
                    sale,
                    user,
                    issued,
                    Some(rec.warehouse),
                    rec.state.as_str(),
                    false,
                );
                Reply::new(response::json(StatusCode::OK, body), "ok").via_store()
            }
            Ok(None) => response::no_ticket().via_store(),
            Err(_) => response::unavailable().via_store(),
        }
    })
    .await
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
fn ticket(
    shared: &Shared,
    sale: &Sale,
    user: UserId,
    issued: Issued,
    warehouse: Option<WarehouseId>,
    replay: bool,
) -> Reply {
    let body = ticket_body(shared, sale, user, issued, warehouse, "", replay);
    let (status, outcome) = if replay {
        (StatusCode::OK, "replay")
    } else {
        (StatusCode::CREATED, "won")
    };
    Reply::new(response::json(status, body), outcome)
}

/// The win body of DESIGN §3, with `"state"` when `state` is not empty
/// and `"warehouse"` (DESIGN §7) when known.
fn ticket_body(
    shared: &Shared,
    sale: &Sale,
    user: UserId,
    issued: Issued,
    warehouse: Option<WarehouseId>,
    state: &str,
    replay: bool,
) -> String {
    let token = shared.ticket_keys.sign_ticket(&TicketClaims {
        sale: sale.id,
        ticket: issued.ticket,
        user,
        expires_at_ms: issued.expires_at_ms,
    });
    // Ids, tokens and states are of a JSON-safe alphabet: no escaping needed.
    format!(
        "{{\"outcome\":\"won\",\"sale\":\"{}\",\"ticket\":\"{}\",\"token\":\"{}\",\"expires_at_ms\":{}{}{}{}{}{}{}{}}}",
        sale.id,
        issued.ticket,
        token,
        issued.expires_at_ms,
        if warehouse.is_some() { ",\"warehouse\":\"" } else { "" },
        warehouse.as_ref().map_or("", |w| w.as_str()),
        if warehouse.is_some() { "\"" } else { "" },
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
    if body.is_end_stream() {
        return Ok(None);
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
