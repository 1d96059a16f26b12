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
use crate::inventory::{Inventory, RawSpec};
use crate::store::{
    validate_stock_delta, Eligibility, PutOutcome, SaleSpec, Snapshot, StockChange, StoreError,
    TransferOutcome, WarehouseAccount, MAX_NUMBER,
};

/// Ticket TTL when none is given: 15 minutes to pay.
const DEFAULT_TICKET_TTL_MS: u64 = 15 * 60 * 1000;

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

/// `"warehouses": {"<w>": {"total","unsold","pending","confirmed"}}` (DESIGN §7).
pub fn warehouses(accounts: &[WarehouseAccount]) -> serde_json::Value {
    let mut m = serde_json::Map::with_capacity(accounts.len());
    for a in accounts {
        m.insert(
            a.warehouse.as_str().to_string(),
            json!({"total": a.total, "unsold": a.unsold, "pending": a.pending, "confirmed": a.confirmed}),
        );
    }
    serde_json::Value::Object(m)
}

async fn show(shared: &Shared, sale: SaleId) -> Reply {
    match shared.store.accounting(&sale).await {
        Ok(Some((s, w))) => {
            shared.metrics.warehouse_stock(&sale, &w);
            let mut v = accounting(&s);
            v["warehouses"] = warehouses(&w);
            reply(StatusCode::OK, v)
        }
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
    let raw = RawSpec {
        warehouses: b.warehouses,
        regions: b.regions,
        default_order: b.default_order,
    };
    let (stock, inventory) = match Inventory::from_spec(b.stock, &raw) {
        Ok(x) => x,
        Err(why) => return invalid(why),
    };
    let spec = SaleSpec {
        stock,
        starts_at_ms: b.starts_at_ms,
        ends_at_ms: b.ends_at_ms,
        ticket_ttl_ms: b.ticket_ttl_ms.unwrap_or(DEFAULT_TICKET_TTL_MS),
        eligibility,
    };
    if let Err(why) = spec.validate() {
        return invalid(why);
    }
    let status = match shared.store.put_sale_with(&sale, &spec, &inventory).await {
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
    if let Err(why) = validate_stock_delta(b.add) {
        return invalid(why);
    }
    let warehouse = match b.warehouse.as_deref().map(WarehouseId::parse) {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => return invalid(format!("warehouse: {e}")),
    };
    let r = match shared.store.add_stock_to(&sale, b.add, warehouse).await {
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
        Ok(StockChange::WarehouseRequired) => {
            return invalid("the sale has several warehouses: name one in \"warehouse\"")
        }
        Ok(StockChange::UnknownWarehouse) => return invalid("the sale has no such warehouse"),
        Err(e) => return store_failed(e),
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
    if from == to {
        return invalid("from and to must differ");
    }
    if b.units == 0 || b.units > MAX_NUMBER {
        return invalid("units must be 1 to 2^53 - 1");
    }
    match shared.store.transfer(&sale, from, to, b.units).await {
        Ok(TransferOutcome::Moved {
            from_unsold,
            to_unsold,
        }) => reply(
            StatusCode::OK,
            json!({"from": b.from, "to": b.to, "units": b.units, "from_unsold": from_unsold, "to_unsold": to_unsold}),
        ),
        Ok(TransferOutcome::Insufficient { unsold }) => reply(
            StatusCode::CONFLICT,
            json!({"error": "insufficient", "unsold": unsold}),
        ),
        Ok(TransferOutcome::UnknownSale) => Reply::plain(response::unknown_sale().resp).via_store(),
        Ok(TransferOutcome::UnknownWarehouse) => invalid("the sale has no warehouse named by from"),
        Ok(TransferOutcome::TooManyWarehouses) => invalid("a sale has at most 64 warehouses"),
        Err(e) => store_failed(e),
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
