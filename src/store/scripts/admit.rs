//! `admit.lua` (beside this file): commit a batch of local wins.
//!
//! Not idempotent in its reply: a repeat answers `replay` for the winners
//! of the first run (the state is the same, the buyer would be told wrong).

use super::{refusal, Def, Op, Reply};
use crate::id::{SaleId, TicketId, WarehouseId};
use crate::sale::{Issued, Placement};
use crate::store::redis::RedisStore;
use crate::store::{AdmitReply, Candidate, StoreError, Verdict};

pub static DEF: Def = Def::new(
    "admit",
    Op::Admit,
    false,
    concat!(
        include_str!("../../../lua/records.lua"),
        include_str!("../../../lua/admit.lua")
    ),
);

pub async fn call(
    s: &RedisStore,
    sale: &SaleId,
    node: &str,
    epoch: u64,
    batch: &[Candidate],
) -> Result<AdmitReply, StoreError> {
    let k = s.keys();
    // 10 keys, 4 arguments, 3 per buyer and the digests; about 40 bytes a
    // buyer besides the digest.
    // Sizes rounded up to a power of two: a few sizes of buffer, which the
    // allocator reuses, rather than one per batch size.
    let room = batch.len().next_power_of_two();
    let mut cmd = DEF.evalsha(15 + 3 * room, 1024 + 48 * room);
    cmd.arg(10)
        .arg(k.cfg(sale))
        .arg(k.acct(sale))
        .arg(k.leases(sale))
        .arg(k.winners(sale))
        .arg(k.tickets(sale))
        .arg(k.eligible(sale))
        .arg(k.orders(sale))
        .arg(k.stockw(sale))
        .arg(k.wcfg(sale))
        .arg(k.digests(sale));
    cmd.arg(sale.as_str()).arg(node).arg(epoch).arg(batch.len());
    let mut digests = Vec::with_capacity(8 * room);
    for c in batch {
        // The script keeps the record under the user and rebuilds the
        // ticket from its tag (records.lua), so a ticket must name its user.
        let tag = match c.ticket.holder() {
            Some((tag, holder)) if holder == c.user => tag,
            _ => {
                return Err(super::protocol(
                    &DEF,
                    format!("ticket {} does not name user {}", c.ticket, c.user),
                ))
            }
        };
        cmd.arg(c.user.as_str())
            .arg(tag)
            .arg(c.ship_to.as_ref().map_or("", |r| r.as_str()));
        digests.extend_from_slice(&c.user.digest().to_be_bytes());
    }
    cmd.arg(digests);
    let items = s.invoke_cmd(&DEF, &cmd).await?;
    let mut r = Reply::new(&DEF, &items);
    let status = r.str()?;
    if status != "ok" {
        return Ok(AdmitReply::Refused(refusal(&r, status)?));
    }
    let lease_units_left = r.u64()?;
    let digests_len = r.u64()?;
    let issued_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let single = match r.str()? {
        "" => None,
        w => Some(warehouse(&r, w)?),
    };
    let mut verdicts = Vec::with_capacity(batch.len().next_power_of_two());
    for c in batch {
        let item = r.str()?;
        let verdict = match item.split_once(':') {
            None => match item {
                "w" => {
                    let warehouse = single.ok_or_else(|| {
                        r.protocol("a bare win from a sale of several warehouses".into())
                    })?;
                    let issued = Issued {
                        ticket: c.ticket,
                        issued_at_ms,
                        expires_at_ms,
                    };
                    Verdict::WonAt(
                        issued,
                        Placement {
                            warehouse,
                            cross: false,
                        },
                    )
                }
                "not_eligible" => Verdict::NotEligible,
                "fenced" => Verdict::Fenced,
                "no_units" => Verdict::NoUnits,
                other => return Err(r.protocol(format!("unknown verdict {other:?}"))),
            },
            Some(("w", rest)) => {
                let (w, cross) = rest
                    .split_once(':')
                    .ok_or_else(|| r.protocol(format!("bad win {item:?}")))?;
                let issued = Issued {
                    ticket: c.ticket,
                    issued_at_ms,
                    expires_at_ms,
                };
                let placement = Placement {
                    warehouse: warehouse(&r, w)?,
                    cross: cross == "1",
                };
                Verdict::WonAt(issued, placement)
            }
            Some(("r", rest)) => {
                let bad = || r.protocol(format!("bad replay {item:?}"));
                let mut f = rest.splitn(4, ':');
                let (Some(t), Some(i), Some(e), Some(w)) = (f.next(), f.next(), f.next(), f.next())
                else {
                    return Err(bad());
                };
                let issued = Issued {
                    ticket: TicketId::parse(t).map_err(|_| bad())?,
                    issued_at_ms: i.parse().map_err(|_| bad())?,
                    expires_at_ms: e.parse().map_err(|_| bad())?,
                };
                let placement = Placement {
                    warehouse: warehouse(&r, w)?,
                    cross: false,
                };
                Verdict::ReplayAt(issued, placement)
            }
            Some(_) => return Err(r.protocol(format!("unknown verdict {item:?}"))),
        };
        verdicts.push(verdict);
    }
    Ok(AdmitReply::Judged {
        lease_units_left,
        digests_len,
        verdicts,
    })
}

fn warehouse(r: &Reply<'_>, w: &str) -> Result<WarehouseId, StoreError> {
    WarehouseId::parse(w).map_err(|_| r.protocol(format!("bad warehouse {w:?}")))
}
