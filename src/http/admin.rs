//! Operations routes (`Authorization: Bearer <admin key>`): create and
//! update sales, stock, eligibility, close, accounting, and moves of
//! unsold units between a sale's warehouses (DESIGN §7).
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
use super::Shared;
use crate::auth::{bearer, secret_eq};
use crate::id::{SaleId, UserId, WarehouseId};
use crate::inventory::RawSpec;
use crate::ops::{self, OpsError, PutSale, StockDelta, Transfer};
use crate::sale::Eligibility;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Sale,
    Stock,
    Eligible,
    Close,
    Transfer,
    Other,
}

impl Action {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            None => Action::Sale,
            Some("stock") => Action::Stock,
            Some("eligible") => Action::Eligible,
            Some("close") => Action::Close,
            Some("transfer") => Action::Transfer,
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
    warehouses: Option<std::collections::BTreeMap<String, u64>>,
    regions: Option<std::collections::BTreeMap<String, Vec<String>>>,
    default_order: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    add: i64,
    warehouse: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    from: String,
    to: String,
    units: u64,
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

/// The contract's answer to an operation that did nothing.
fn refused(e: OpsError) -> Reply {
    match e {
        OpsError::UnknownSale(_) => Reply::plain(response::unknown_sale().resp).via_store(),
        OpsError::Invalid(why) => invalid(why),
        OpsError::Spec(why) => invalid(why),
        OpsError::StockRequired => invalid("stock is required to create a sale"),
        OpsError::WarehouseRequired(_) => {
            invalid("the sale has several warehouses: name one in \"warehouse\"")
        }
        OpsError::UnknownWarehouse(_) => invalid("the sale has no such warehouse"),
        OpsError::InsufficientAvailable {
            total, available, ..
        } => reply(
            StatusCode::CONFLICT,
            json!({"error": "insufficient_available", "stock_total": total, "available": available}),
        ),
        OpsError::InsufficientUnsold { unsold, .. } => reply(
            StatusCode::CONFLICT,
            json!({"error": "insufficient", "unsold": unsold}),
        ),
        OpsError::UnknownSource(_) => invalid("the sale has no warehouse named by from"),
        OpsError::TooManyWarehouses => invalid("a sale has at most 64 warehouses"),
        OpsError::SameWarehouse => invalid("from and to must differ"),
        OpsError::NoUnits | OpsError::TooManyUnits => invalid("units must be 1 to 2^53 - 1"),
        // Store failures, and the CLI-only operations (move, audit) should
        // one ever be routed here: nothing is known to have happened.
        e @ (OpsError::Store(_) | OpsError::Move(_) | OpsError::Audit(_)) => {
            tracing::error!(error = %e, "admin request failed at the store");
            Reply::plain(response::unavailable().resp).via_store()
        }
    }
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
        Action::Stock | Action::Eligible | Action::Close | Action::Transfer => "POST",
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
        (Action::Transfer, _) => transfer(shared, sale, &body).await,
        _ => close(shared, sale).await,
    }
}

async fn show(shared: &Shared, sale: SaleId) -> Reply {
    match ops::show(&*shared.store, &sale).await {
        Ok(a) => {
            shared.metrics.warehouse_stock(&sale, &a.warehouses);
            reply(StatusCode::OK, a.to_json())
        }
        Err(e) => refused(e),
    }
}

async fn put(shared: &Shared, sale: SaleId, body: &[u8]) -> Reply {
    let b: PutBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    let eligibility = match b.eligibility.as_deref().map(Eligibility::parse) {
        None => None,
        Some(Some(e)) => Some(e),
        Some(None) => return invalid("eligibility must be \"open\" or \"list\""),
    };
    let req = PutSale {
        stock: b.stock,
        starts_at_ms: b.starts_at_ms,
        ends_at_ms: b.ends_at_ms,
        ticket_ttl_ms: b.ticket_ttl_ms,
        eligibility,
        inventory: RawSpec {
            warehouses: b.warehouses,
            regions: b.regions,
            default_order: b.default_order,
        },
    };
    let status = match ops::put(&*shared.store, &sale, &req).await {
        Ok(p) if p.created => StatusCode::CREATED,
        Ok(_) => StatusCode::OK,
        Err(e) => return refused(e),
    };
    sync_sale(shared, sale).await;
    match ops::settings(&*shared.store, &sale).await {
        Ok(s) => reply(status, s.to_json()),
        Err(e) => refused(e),
    }
}

/// Makes this node serve `sale` with its newest settings at once (other
/// nodes follow within a refresh interval).
async fn sync_sale(shared: &Shared, sale: SaleId) {
    match shared.sales.load(sale).await {
        Ok(Some(live)) => {
            let _ = crate::admission::sales::refresh(&*shared.store, live.sale()).await;
            // Load an eligibility change now, on this node, whatever the
            // debounce that protects the fleet from rescans decides.
            if live.sale().list_only() {
                let _ = crate::admission::sales::reload_eligible(&*shared.store, live.sale()).await;
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
    let delta = match StockDelta::new(b.add) {
        Ok(d) => d,
        Err(e) => return refused(e),
    };
    let warehouse = match b.warehouse.as_deref().map(WarehouseId::parse) {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => return invalid(format!("warehouse: {e}")),
    };
    let r = match ops::stock(&*shared.store, &sale, delta, warehouse).await {
        Ok(stocked) => reply(StatusCode::OK, stocked.to_json()),
        // A refused withdrawal refreshes this node's view of the pool too.
        Err(e @ OpsError::InsufficientAvailable { .. }) => refused(e),
        Err(e) => return refused(e),
    };
    sync_sale(shared, sale).await;
    r
}

/// `POST …/transfer`: moves unsold units between two warehouses of a sale
/// in one atomic step; the pool and the leases do not change.
async fn transfer(shared: &Shared, sale: SaleId, body: &[u8]) -> Reply {
    let b: TransferBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    let (from, to) = match (WarehouseId::parse(&b.from), WarehouseId::parse(&b.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) => return invalid(format!("from: {e}")),
        (_, Err(e)) => return invalid(format!("to: {e}")),
    };
    let t = Transfer {
        from,
        to,
        units: b.units,
    };
    match ops::transfer(&*shared.store, &sale, t).await {
        Ok(moved) => reply(StatusCode::OK, moved.to_json()),
        Err(e) => refused(e),
    }
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
    match ops::eligible(&*shared.store, &sale, &users).await {
        Ok(added) => {
            sync_sale(shared, sale).await;
            reply(StatusCode::OK, added.to_json())
        }
        Err(e) => refused(e),
    }
}

async fn close(shared: &Shared, sale: SaleId) -> Reply {
    match ops::close(&*shared.store, &sale).await {
        Ok(closed) => {
            sync_sale(shared, sale).await;
            reply(StatusCode::OK, closed.to_json())
        }
        Err(e) => refused(e),
    }
}
