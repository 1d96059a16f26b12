//! Micro-batched commits of winners.
//!
//! A buyer who took a local unit hands a [`Job`] to its sale's committer
//! and waits for the verdict. The committer takes a permit (at most
//! `commit_concurrency` batches in flight), then drains whatever jobs are
//! queued, up to `commit_batch`, into one `admit` script call. Under light
//! load a batch is one buyer and adds no wait; under heavy load the queue
//! that builds while a batch is in flight becomes the next batch, so Redis
//! round trips grow far slower than buyers.
//!
//! While a batch is out, the next one keeps filling and leaves when that
//! batch returns, when it is full, or once `overlap_after` has passed,
//! whichever is first. A store call has a fixed price (its arguments, its
//! reads of the sale's settings and lease, its counter writes, and with
//! `appendfsync always` an fsync per event-loop pass), so one batch of 2k
//! costs Redis less than two of k; with buyers arriving all the time, a
//! second batch sent at once would only be smaller, not earlier in the
//! store's queue (`loadtest/run --vs-naive`: about a quarter less Redis CPU
//! per winner at the same winners/s). The deadline keeps a slow or stalled call from
//! holding the next batch back: past it, batches overlap as before. A
//! batch gives its slot back the moment the store answers, before its
//! buyers are told: telling them takes the node longer than the store takes
//! for the next batch, which would otherwise wait for it.
//!
//! Settling a job keeps the local counter honest: units of buyers who were
//! not admitted for their own reasons (replay, not eligible) go back; units
//! of a fenced or exhausted lease are dropped; units of a failed call of
//! unknown outcome are kept out (selling less, never more).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::stock::{Epoch, Sale, Taken};
use crate::id::{RegionId, TicketId, UserId};
use crate::metrics::Metrics;
use crate::sale::Placement;
use crate::store::{AdmitReply, Candidate, Refusal, Store, StoreError, Verdict};

/// Jobs waiting for a batch; beyond this buyers get 503 at once.
const QUEUE_DEPTH: usize = 16 * 1024;

/// How a commit ended for one buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Judged(Verdict),
    Refused(Refusal),
    /// Sent, and Redis failed or timed out: the outcome is unknown; a retry
    /// replays the ticket if the win was recorded.
    Failed,
    /// Never sent (queue full, node stopping): nothing was taken.
    NotSent,
}

/// One buyer's unit on its way to Redis. The job owns the unit's flight
/// (see `Sale::take_unit`): it ends exactly once, when the job is
/// settled or, failing that, dropped. The buyer may be gone by then (hung
/// up, timed out); the job does not depend on it.
pub struct Job {
    user: UserId,
    /// The buyer's region, which picks the warehouse order (DESIGN §7).
    ship_to: Option<RegionId>,
    epoch: Epoch,
    reply: Option<oneshot::Sender<Settled>>,
    sale: Arc<Sale>,
}

impl Job {
    /// Ends the unit's flight and tells the buyer, if still there.
    fn settle(mut self, s: Settled) {
        if let Some(reply) = self.reply.take() {
            self.sale.settle_one();
            let _ = reply.send(s);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // Dropped unsettled (its batch task died): the outcome is unknown,
        // so the unit stays out of the counter, but its flight ends, or the
        // lease would never again look quiet enough to renew or return.
        if self.reply.take().is_some() {
            self.sale.settle_one();
        }
    }
}

/// What a committer needs from the server.
#[derive(Clone)]
pub struct CommitCtx {
    pub store: Arc<dyn Store>,
    pub node: Arc<str>,
    pub metrics: Arc<Metrics>,
    pub batch: usize,
    pub concurrency: usize,
    /// How long the next batch waits for the one out before it goes too.
    pub overlap_after: Duration,
}

/// The sending side of one sale's committer.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committer task of `sale`; it ends when `stop` is cancelled
    /// and its queue is empty.
    pub fn spawn(
        ctx: CommitCtx,
        sale: Arc<Sale>,
        stop: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tasks.spawn(run(ctx, sale, rx, stop));
        Committer { tx }
    }

    /// Commits one buyer holding a unit taken from `sale`.
    ///
    /// Once queued, the commit runs to its end even if this future is
    /// dropped; only the verdict is then lost (a retry replays the ticket).
    pub async fn commit(
        &self,
        sale: &Arc<Sale>,
        user: UserId,
        ship_to: Option<RegionId>,
        unit: Taken<'_>,
    ) -> Settled {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            user,
            ship_to,
            epoch: unit.epoch,
            reply: Some(reply),
            sale: sale.clone(),
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                let _ = unit.hand_over();
            }
            Err(e) => {
                // Queue full or committer gone: the unit never left this
                // node, and dropping `unit` gives it back.
                let mut job = e.into_inner();
                job.reply = None;
                return Settled::NotSent;
            }
        }
        rx.await.unwrap_or(Settled::Failed)
    }
}

async fn run(
    ctx: CommitCtx,
    sale: Arc<Sale>,
    mut rx: mpsc::Receiver<Job>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(ctx.concurrency));
    // Woken each time a batch returns (after its permit is back).
    let returned = Arc::new(Notify::new());
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = tokio::select! {
            job = rx.recv() => job,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        // Room for a full batch: growing it moves every job.
        let mut jobs = Vec::with_capacity(ctx.batch);
        jobs.push(first);
        drain(&mut rx, &mut jobs, ctx.batch);
        // This task holds one permit; any other taken is a batch out.
        let out = |p: &Semaphore| p.available_permits() + 1 < ctx.concurrency;
        if jobs.len() < ctx.batch && out(&permits) && !ctx.overlap_after.is_zero() {
            let deadline = tokio::time::sleep(ctx.overlap_after);
            tokio::pin!(deadline);
            // Made once for the whole wait, not once per buyer who joins
            // the batch: arming a `Notified` and polling a cancellation
            // each take a lock.
            let stopped = stop.cancelled();
            tokio::pin!(stopped);
            // Registered before the check, so a return between the check
            // and the wait still wakes this task; armed again after each
            // return it reports.
            let back = returned.notified();
            tokio::pin!(back);
            back.as_mut().enable();
            loop {
                if jobs.len() >= ctx.batch || !out(&permits) {
                    break;
                }
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(j) => {
                            jobs.push(j);
                            drain(&mut rx, &mut jobs, ctx.batch);
                        }
                        None => break,
                    },
                    _ = back.as_mut() => {
                        back.set(returned.notified());
                        back.as_mut().enable();
                    }
                    _ = &mut deadline => break,
                    _ = &mut stopped => break,
                }
            }
        }
        let ctx = ctx.clone();
        let sale = sale.clone();
        let back = Back {
            permit,
            returned: returned.clone(),
        };
        tokio::spawn(async move { commit_batch(&ctx, &sale, jobs, back).await });
    }
    // Stopping: answer whatever is still queued rather than leave buyers
    // hanging (they get 503; their units are given back).
    rx.close();
    while let Ok(j) = rx.try_recv() {
        sale.stock.give_back(j.epoch);
        j.settle(Settled::NotSent);
    }
}

/// Moves queued jobs into `jobs` until it holds `batch` or the queue is empty.
fn drain(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, batch: usize) {
    while jobs.len() < batch {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

/// A batch's slot: held while its store call is out, given back (waking
/// the committer) the moment the store answers.
struct Back {
    permit: OwnedSemaphorePermit,
    returned: Arc<Notify>,
}

impl Back {
    /// The store has answered: the next batch may leave while this one's
    /// buyers are told. Telling them (signing, answering, a task wake-up
    /// each) takes the node longer than the store takes for a batch, and
    /// done first it would leave the store idle in between.
    fn give_back(self) {
        let Back { permit, returned } = self;
        drop(permit);
        returned.notify_waiters();
    }
}

async fn commit_batch(ctx: &CommitCtx, sale: &Sale, mut jobs: Vec<Job>, back: Back) {
    let mut back = Some(back);
    // Units of different epochs cannot share a call (the lease is checked
    // once per call); a batch spanning a lease change is rare, so split it
    // then, and only then (a split allocates).
    while !jobs.is_empty() {
        let epoch = jobs[0].epoch;
        let later: Vec<Job> = if jobs.iter().all(|j| j.epoch == epoch) {
            Vec::new()
        } else {
            let (now, later) = jobs.into_iter().partition(|j| j.epoch == epoch);
            jobs = now;
            later
        };
        let reply = send_group(ctx, sale, epoch, &jobs).await;
        if later.is_empty() {
            if let Some(b) = back.take() {
                b.give_back();
            }
        }
        settle_group(ctx, sale, epoch, jobs, reply);
        jobs = later;
    }
}

async fn send_group(
    ctx: &CommitCtx,
    sale: &Sale,
    epoch: Epoch,
    jobs: &[Job],
) -> Result<AdmitReply, StoreError> {
    // Room for a full batch, whatever this one holds: buffers of one size
    // are reused by the allocator, where a size per batch costs it fresh
    // memory each time.
    let mut candidates: Vec<Candidate> = Vec::with_capacity(ctx.batch.max(jobs.len()));
    candidates.extend(jobs.iter().map(|j| Candidate {
        user: j.user,
        ticket: TicketId::for_user(&j.user),
        ship_to: j.ship_to,
    }));
    ctx.metrics.commit_batch.record(jobs.len() as f64);
    ctx.store
        .admit(&sale.id, &ctx.node, u64::from(epoch), &candidates)
        .await
}

fn settle_group(
    ctx: &CommitCtx,
    sale: &Sale,
    epoch: Epoch,
    jobs: Vec<Job>,
    reply: Result<AdmitReply, StoreError>,
) {
    let m = &sale.gauges.commits;
    match reply {
        Ok(AdmitReply::Judged {
            verdicts,
            digests_len,
            ..
        }) if verdicts.len() == jobs.len() => {
            let wins = verdicts
                .iter()
                .filter(|v| matches!(v, Verdict::Won(_) | Verdict::WonAt(..)))
                .count() as u64;
            // Wins per (warehouse, cross-shipped), counted once per batch:
            // a batch uses few warehouses, and a counter lookup per winner
            // would cost more than the tally.
            let mut by_warehouse: Vec<(Placement, u64)> = Vec::new();
            for (job, v) in jobs.into_iter().zip(verdicts) {
                match v {
                    Verdict::Won(_) | Verdict::WonAt(..) => {
                        if let Verdict::WonAt(_, p) = v {
                            tally_warehouse(&mut by_warehouse, p);
                        }
                        if let Some((issued, p, _)) = v.ticket() {
                            sale.remember_winner(job.user, issued, p.warehouse);
                        }
                    }
                    Verdict::Replay(_) | Verdict::ReplayAt(..) => {
                        m.replay.increment(1);
                        sale.stock.give_back(epoch);
                        if let Some((issued, p, _)) = v.ticket() {
                            sale.remember_winner(job.user, issued, p.warehouse);
                        }
                    }
                    Verdict::NotEligible => {
                        m.not_eligible.increment(1);
                        sale.stock.give_back(epoch);
                    }
                    Verdict::Fenced => {
                        m.fenced.increment(1);
                        sale.stock.clear(epoch);
                    }
                    Verdict::NoUnits => {
                        m.no_units.increment(1);
                        sale.stock.clear(epoch);
                    }
                }
                job.settle(Settled::Judged(v));
            }
            if wins > 0 {
                m.won.increment(wins);
                sale.appended_digests(wins, digests_len);
            }
            for (p, n) in by_warehouse {
                ctx.metrics
                    .warehouse_wins(&sale.id, p.warehouse, p.cross, n);
            }
        }
        Ok(AdmitReply::Judged { .. }) => {
            // A reply that does not match the batch is a protocol fault.
            m.error.increment(jobs.len() as u64);
            for job in jobs {
                job.settle(Settled::Failed);
            }
        }
        Ok(AdmitReply::Refused(r)) => {
            m.closed.increment(jobs.len() as u64);
            for job in jobs {
                sale.stock.give_back(epoch);
                job.settle(Settled::Refused(r));
            }
        }
        Err(e) => {
            tracing::warn!(sale = %sale.id, error = %e, buyers = jobs.len(), "commit failed");
            m.error.increment(jobs.len() as u64);
            let applied = e.maybe_applied();
            for job in jobs {
                if applied {
                    job.settle(Settled::Failed);
                } else {
                    // Never reached Redis: the units are still this node's.
                    sale.stock.give_back(epoch);
                    job.settle(Settled::NotSent);
                }
            }
        }
    }
}

fn tally_warehouse(tally: &mut Vec<(Placement, u64)>, p: Placement) {
    match tally.iter_mut().find(|(q, _)| *q == p) {
        Some((_, n)) => *n += 1,
        None => tally.push((p, 1)),
    }
}
