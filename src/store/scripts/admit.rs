//! `admit.lua` (beside this file): commit a batch of local wins.
//!
//! Not idempotent in its reply: a repeat answers `replay` for the winners
//! of the first run (the state is the same, the buyer would be told wrong).

use super::{refusal, Def, Op, Reply};
use crate::id::{SaleId, WarehouseId};
use crate::sale::{Issued, Placement};
use crate::store::redis::RedisStore;
use crate::store::{AdmitReply, Candidate, StoreError, Verdict};

pub static DEF: Def = Def::new(
    "admit",
    Op::Admit,
    false,
    include_str!("../../../lua/admit.lua"),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    node: &str,
    epoch: u64,
    batch: &[Candidate],
) -> Result<AdmitReply, StoreError> {
    let k = s.keys();
    let mut inv = DEF.script().prepare_invoke();
    inv.key(k.cfg(sale))
        .key(k.acct(sale))
        .key(k.leases(sale))
        .key(k.winners(sale))
        .key(k.tickets(sale))
        .key(k.eligible(sale))
        .key(k.orders(sale))
        .key(k.stockw(sale))
        .key(k.wcfg(sale))
        .key(k.digests(sale));
    inv.arg(sale.as_str()).arg(node).arg(epoch).arg(batch.len());
    let mut digests = Vec::with_capacity(8 * batch.len());
    for c in batch {
        inv.arg(c.user.as_str())
            .arg(c.ticket.as_str())
            .arg(c.ship_to.as_ref().map_or("", |r| r.as_str()));
        digests.extend_from_slice(&c.user.digest().to_be_bytes());
    }
    inv.arg(digests);
    let items = s.invoke(&DEF, &inv).await?;
    let mut r = Reply::new(&DEF, &items);
    let status = r.str()?;
    if status != "ok" {
        return Ok(AdmitReply::Refused(refusal(&r, status)?));
    }
    let lease_units_left = r.u64()?;
    let digests_len = r.u64()?;
    let mut verdicts = Vec::with_capacity(batch.len());
    for _ in batch {
        let code = r.str()?;
        let verdict = match code {
            "won" | "replay" => {
                let issued = Issued {
                    ticket: r.ticket()?,
                    issued_at_ms: r.u64()?,
                    expires_at_ms: r.u64()?,
                };
                let w = r.str()?;
                let placement = Placement {
                    warehouse: WarehouseId::parse(w)
                        .map_err(|_| r.protocol(format!("bad warehouse {w:?}")))?,
                    cross: r.u64()? == 1,
                };
                if code == "won" {
                    Verdict::WonAt(issued, placement)
                } else {
                    Verdict::ReplayAt(issued, placement)
                }
            }
            other => {
                let v = match other {
                    "not_eligible" => Verdict::NotEligible,
                    "fenced" => Verdict::Fenced,
                    "no_units" => Verdict::NoUnits,
                    _ => return Err(r.protocol(format!("unknown verdict {other:?}"))),
                };
                // ticket "", times 0, warehouse "", cross 0
                r.skip(5);
                v
            }
        };
        verdicts.push(verdict);
    }
    Ok(AdmitReply::Judged {
        lease_units_left,
        digests_len,
        verdicts,
    })
}
