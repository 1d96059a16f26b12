//! Order-backend routes (`Authorization: Bearer <backend key>`): read a
//! ticket, confirm it (paid), release it (payment failed).

use super::RequestBody;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::admin::authorized;
use super::response::{self, Reply};
use super::Shared;
use crate::id::{SaleId, TicketId};
use crate::sale::{TicketState, Transition};
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Confirm,
    Release,
    Other,
}

impl Action {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            None => Action::Read,
            Some("confirm") => Action::Confirm,
            Some("release") => Action::Release,
            Some(_) => Action::Other,
        }
    }
}

fn reply(status: StatusCode, v: serde_json::Value) -> Reply {
    Reply::plain(response::json(status, v.to_string())).via_store()
}

fn unknown_ticket() -> Reply {
    reply(StatusCode::NOT_FOUND, json!({"error": "unknown_ticket"}))
}

fn failed(e: StoreError) -> Reply {
    tracing::error!(error = %e, "backend request failed at the store");
    Reply::plain(response::unavailable().resp).via_store()
}

pub async fn route<B: RequestBody>(
    shared: &Shared,
    sale: SaleId,
    ticket: TicketId,
    action: Action,
    req: Request<B>,
) -> Reply {
    let want = match action {
        Action::Read => Method::GET,
        Action::Confirm | Action::Release => Method::POST,
        Action::Other => return Reply::plain(response::not_found().resp),
    };
    if req.method() != want {
        return Reply::plain(
            response::method_not_allowed(if want == Method::GET { "GET" } else { "POST" }).resp,
        );
    }
    if !authorized(&req, &shared.backend_key) {
        return response::unauthorized();
    }
    let settled = |r: &Result<Transition, StoreError>| {
        if let (Ok(Some(_)), Some(live)) = (r, shared.sales.get(&sale)) {
            live.sale().ask_sweep();
        }
    };
    match action {
        Action::Read => match shared.store.ticket(&sale, &ticket).await {
            Ok(Some(t)) => reply(
                StatusCode::OK,
                json!({"ticket": t.ticket.as_str(), "user": t.user.as_str(), "state": t.state.as_str(), "expires_at_ms": t.expires_at_ms, "warehouse": t.warehouse.as_str()}),
            ),
            Ok(None) => unknown_ticket(),
            Err(e) => failed(e),
        },
        Action::Confirm => {
            let r = shared.store.confirm(&sale, &ticket).await;
            settled(&r);
            settle(r, TicketState::Confirmed)
        }
        _ => {
            let r = shared.store.release(&sale, &ticket).await;
            settled(&r);
            settle(r, TicketState::Released)
        }
    }
}

/// 200 when the ticket ended in the state asked for, 409 with the state it
/// is in otherwise.
fn settle(r: Result<Transition, StoreError>, wanted: TicketState) -> Reply {
    match r {
        Ok(Some((state, _))) => {
            let status = if state == wanted {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            reply(status, json!({"state": state.as_str()}))
        }
        Ok(None) => unknown_ticket(),
        Err(e) => failed(e),
    }
}
