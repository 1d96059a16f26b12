//! Operations routes (`Authorization: Bearer <admin key>`): create and
//! update sales, stock, eligibility, close, accounting.
//!
//! Every body is parsed and validated completely before anything is
//! written, so a bad request changes nothing.

use std::sync::Arc;

use super::RequestBody;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::response::{self, Reply};
use crate::app::Shared;
use crate::auth::{bearer, secret_eq};
use crate::id::{SaleId, UserId};
use crate::store::{
    validate_stock_delta, Eligibility, PutOutcome, SaleSpec, Snapshot, StockChange, StoreError,
};

/// Ticket TTL when none is given: 15 minutes to pay.
const DEFAULT_TICKET_TTL_MS: u64 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Sale,
    Stock,
    Eligible,
    Close,
    Other,
}

impl Action {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            None => Action::Sale,
            Some("stock") => Action::Stock,
            Some("eligible") => Action::Eligible,
            Some("close") => Action::Close,
            Some(_) => Action::Other,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    stock: Option<u64>,
    starts_at_ms: u64,
    ends_at_ms: u64,
    ticket_ttl_ms: Option<u64>,
    eligibility: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    add: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EligibleBody {
    users: Vec<String>,
}

fn reply(status: StatusCode, v: serde_json::Value) -> Reply {
    Reply::plain(response::json(status, v.to_string())).via_store()
}

fn invalid(detail: impl std::fmt::Display) -> Reply {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_request", "detail": detail.to_string()}),
    )
}

fn store_failed(e: StoreError) -> Reply {
    tracing::error!(error = %e, "admin request failed at the store");
    Reply::plain(response::unavailable().resp).via_store()
}

pub fn authorized<B>(req: &Request<B>, key: &[u8]) -> bool {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|h| bearer(h.as_bytes()))
        .is_some_and(|t| secret_eq(t, key))
}

pub async fn route<B: RequestBody>(
    shared: &Arc<Shared>,
    sale: SaleId,
    action: Action,
    req: Request<B>,
) -> Reply {
    let method = req.method().clone();
    let allowed = match action {
        Action::Sale => "GET, PUT",
        Action::Stock | Action::Eligible | Action::Close => "POST",
        Action::Other => return Reply::plain(response::not_found().resp),
    };
    let ok_method = match action {
        Action::Sale => method == Method::GET || method == Method::PUT,
        _ => method == Method::POST,
    };
    if !ok_method {
        return Reply::plain(response::method_not_allowed(allowed).resp);
    }
    if !authorized(&req, &shared.admin_key) {
        return response::unauthorized();
    }
    let body = if method == Method::GET {
        bytes::Bytes::new()
    } else {
        match super::read_limited(req.into_body(), shared.config.body_limit).await {
            Ok(b) => b,
            Err(r) => return Reply::plain(r.resp),
        }
    };
    match (action, method) {
        (Action::Sale, Method::GET) => show(shared, sale).await,
        (Action::Sale, _) => put(shared, sale, &body).await,
        (Action::Stock, _) => stock(shared, sale, &body).await,
        (Action::Eligible, _) => eligible(shared, sale, &body).await,
        _ => close(shared, sale).await,
    }
}

/// The accounting of DESIGN §3 from one atomic snapshot.
pub fn accounting(s: &Snapshot) -> serde_json::Value {
    json!({
        "stock_total": s.stock_total,
        "available": s.available,
        "leased": s.leased,
        "pending": s.pending,
        "confirmed": s.confirmed,
        "released_total": s.released_total,
        "orders_enqueued": s.orders_enqueued,
        "balanced": s.balanced,
        "state": s.state().as_str(),
    })
}

async fn show(shared: &Shared, sale: SaleId) -> Reply {
    match shared.store.snapshot(&sale).await {
        Ok(Some(s)) => reply(StatusCode::OK, accounting(&s)),
        Ok(None) => Reply::plain(response::unknown_sale().resp).via_store(),
        Err(e) => store_failed(e),
    }
}

async fn put(shared: &Shared, sale: SaleId, body: &[u8]) -> Reply {
    let b: PutBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    let eligibility = match b.eligibility.as_deref() {
        None | Some("open") => Eligibility::Open,
        Some("list") => Eligibility::List,
        Some(_) => return invalid("eligibility must be \"open\" or \"list\""),
    };
    let spec = SaleSpec {
        stock: b.stock,
        starts_at_ms: b.starts_at_ms,
        ends_at_ms: b.ends_at_ms,
        ticket_ttl_ms: b.ticket_ttl_ms.unwrap_or(DEFAULT_TICKET_TTL_MS),
        eligibility,
    };
    if let Err(why) = spec.validate() {
        return invalid(why);
    }
    let status = match shared.store.put_sale(&sale, &spec).await {
        Ok(PutOutcome::Created) => StatusCode::CREATED,
        Ok(PutOutcome::Updated) => StatusCode::OK,
        Ok(PutOutcome::StockRequired) => return invalid("stock is required to create a sale"),
        Err(e) => return store_failed(e),
    };
    sync_sale(shared, sale).await;
    match shared.store.snapshot(&sale).await {
        Ok(Some(s)) => {
            let mut v = accounting(&s);
            v["sale"] = json!(sale.as_str());
            v["starts_at_ms"] = json!(s.starts_at_ms);
            v["ends_at_ms"] = json!(s.ends_at_ms);
            v["ticket_ttl_ms"] = json!(s.ticket_ttl_ms);
            v["eligibility"] = json!(if s.list_only { "list" } else { "open" });
            reply(status, v)
        }
        Ok(None) => Reply::plain(response::unknown_sale().resp).via_store(),
        Err(e) => store_failed(e),
    }
}

/// Makes this node serve `sale` with its newest settings at once (other
/// nodes follow within a refresh interval).
async fn sync_sale(shared: &Shared, sale: SaleId) {
    match shared.sales.load(sale).await {
        Ok(Some(live)) => {
            let _ = crate::sales::refresh(&*shared.store, &live.sale).await;
            // Load an eligibility change now, on this node, whatever the
            // debounce that protects the fleet from rescans decides.
            if live.sale.list_only() {
                let _ = crate::sales::reload_eligible(&*shared.store, &live.sale).await;
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(sale = %sale, error = %e, "could not load sale"),
    }
}

async fn stock(shared: &Shared, sale: SaleId, body: &[u8]) -> Reply {
    let b: StockBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    if let Err(why) = validate_stock_delta(b.add) {
        return invalid(why);
    }
    let r = match shared.store.add_stock(&sale, b.add).await {
        Ok(StockChange::Changed { total, available }) => reply(
            StatusCode::OK,
            json!({"stock_total": total, "available": available}),
        ),
        Ok(StockChange::Insufficient { total, available }) => reply(
            StatusCode::CONFLICT,
            json!({"error": "insufficient_available", "stock_total": total, "available": available}),
        ),
        Ok(StockChange::UnknownSale) => {
            return Reply::plain(response::unknown_sale().resp).via_store()
        }
        Err(e) => return store_failed(e),
    };
    sync_sale(shared, sale).await;
    r
}

async fn eligible(shared: &Shared, sale: SaleId, body: &[u8]) -> Reply {
    let b: EligibleBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    let mut users = Vec::with_capacity(b.users.len());
    for (i, u) in b.users.iter().enumerate() {
        match UserId::parse(u) {
            Ok(u) => users.push(u),
            Err(e) => return invalid(format!("users[{i}] {u:?}: {e}")),
        }
    }
    if users.is_empty() {
        return invalid("users must not be empty");
    }
    match shared.store.add_eligible(&sale, &users).await {
        Ok(Some(added)) => {
            sync_sale(shared, sale).await;
            reply(
                StatusCode::OK,
                json!({"added": added, "given": users.len()}),
            )
        }
        Ok(None) => Reply::plain(response::unknown_sale().resp).via_store(),
        Err(e) => store_failed(e),
    }
}

async fn close(shared: &Shared, sale: SaleId) -> Reply {
    match shared.store.close(&sale).await {
        Ok(true) => {
            sync_sale(shared, sale).await;
            reply(StatusCode::OK, json!({"state": "closed"}))
        }
        Ok(false) => Reply::plain(response::unknown_sale().resp).via_store(),
        Err(e) => store_failed(e),
    }
}
