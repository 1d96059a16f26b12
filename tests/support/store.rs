//! A store double that forwards every call of the [`Store`] trait to a real
//! store, except the few a test breaks on purpose. The forwarding is written
//! once here; a test writes only its faults, as an implementation of
//! [`Faults`] whose methods it overrides.
//!
//! Invariant: a method of `Faults` left alone forwards to the inner store
//! unchanged, so a double with no overrides is the inner store.

#![allow(dead_code)]

use async_trait::async_trait;
use bigtap::id::WarehouseId;
use bigtap::inventory::Inventory;
use bigtap::sale::{
    Pool, PutOutcome, SaleSpec, Snapshot, StockChange, TicketRecord, TransferOutcome, Transition,
    WarehouseAccount,
};
use bigtap::store::redis::RedisStore;
use bigtap::store::{
    AdmitReply, Candidate, Head, LeaseReply, PollHead, RenewReply, ReturnReply, SafetyReport,
    Store, StoreError,
};
use bigtap::{SaleId, TicketId, UserId};
use std::time::Duration;

/// The calls a test may break. Each default forwards to `inner`.
#[async_trait]
pub trait Faults: Send + Sync + 'static {
    async fn admit(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        batch: &[Candidate],
    ) -> Result<AdmitReply, StoreError> {
        inner.admit(sale, node, epoch, batch).await
    }
    /// A sale watcher's poll (its view, pool and digest reads).
    async fn poll(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        head: PollHead,
        offset: u64,
        max: u64,
    ) -> Result<(Head, Vec<u8>), StoreError> {
        inner.poll(sale, head, offset, max).await
    }
    async fn lease(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        node: &str,
        want: u64,
        ttl_ms: u64,
    ) -> Result<LeaseReply, StoreError> {
        inner.lease(sale, node, want, ttl_ms).await
    }
    async fn renew(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        ttl_ms: u64,
    ) -> Result<RenewReply, StoreError> {
        inner.renew(sale, node, epoch, ttl_ms).await
    }
    async fn return_lease(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        node: &str,
        epoch: u64,
    ) -> Result<ReturnReply, StoreError> {
        inner.return_lease(sale, node, epoch).await
    }
    async fn reclaim(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        every: Duration,
    ) -> Result<(u64, u64), StoreError> {
        inner.reclaim(sale, every).await
    }
    /// A buyer's lookup by user (a replica miss the node could not prove).
    async fn winner(
        &self,
        inner: &RedisStore,
        sale: &SaleId,
        user: &UserId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        inner.winner(sale, user).await
    }
}

/// The Redis store, with `faults` in the way of the calls it overrides.
pub struct Forward<F> {
    pub inner: RedisStore,
    pub faults: F,
}

impl<F: Faults> Forward<F> {
    pub fn new(inner: RedisStore, faults: F) -> Self {
        Forward { inner, faults }
    }
}

/// A test reaches its switches through the double: `flaky.admit`.
impl<F> std::ops::Deref for Forward<F> {
    type Target = F;
    fn deref(&self) -> &F {
        &self.faults
    }
}

#[async_trait]
impl<F: Faults> Store for Forward<F> {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn safety(&self) -> Result<SafetyReport, StoreError> {
        self.inner.safety().await
    }
    async fn sales(&self) -> Result<Vec<SaleId>, StoreError> {
        self.inner.sales().await
    }
    async fn put_sale(&self, sale: &SaleId, spec: &SaleSpec) -> Result<PutOutcome, StoreError> {
        self.inner.put_sale(sale, spec).await
    }
    async fn add_stock(&self, sale: &SaleId, delta: i64) -> Result<StockChange, StoreError> {
        self.inner.add_stock(sale, delta).await
    }
    async fn put_sale_with(
        &self,
        sale: &SaleId,
        spec: &SaleSpec,
        inventory: &Inventory,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put_sale_with(sale, spec, inventory).await
    }
    async fn add_stock_to(
        &self,
        sale: &SaleId,
        delta: i64,
        warehouse: Option<WarehouseId>,
    ) -> Result<StockChange, StoreError> {
        self.inner.add_stock_to(sale, delta, warehouse).await
    }
    async fn transfer(
        &self,
        sale: &SaleId,
        from: WarehouseId,
        to: WarehouseId,
        units: u64,
    ) -> Result<TransferOutcome, StoreError> {
        self.inner.transfer(sale, from, to, units).await
    }
    async fn accounting(
        &self,
        sale: &SaleId,
    ) -> Result<Option<(Snapshot, Vec<WarehouseAccount>)>, StoreError> {
        self.inner.accounting(sale).await
    }
    async fn add_eligible(
        &self,
        sale: &SaleId,
        users: &[UserId],
    ) -> Result<Option<u64>, StoreError> {
        self.inner.add_eligible(sale, users).await
    }
    async fn close(&self, sale: &SaleId) -> Result<bool, StoreError> {
        self.inner.close(sale).await
    }
    async fn snapshot(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.snapshot(sale).await
    }
    async fn view(&self, sale: &SaleId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.view(sale).await
    }
    async fn eligible_users(&self, sale: &SaleId) -> Result<Vec<UserId>, StoreError> {
        self.inner.eligible_users(sale).await
    }
    async fn lease(
        &self,
        sale: &SaleId,
        node: &str,
        want: u64,
        ttl_ms: u64,
    ) -> Result<LeaseReply, StoreError> {
        self.faults
            .lease(&self.inner, sale, node, want, ttl_ms)
            .await
    }
    async fn renew(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        ttl_ms: u64,
    ) -> Result<RenewReply, StoreError> {
        self.faults
            .renew(&self.inner, sale, node, epoch, ttl_ms)
            .await
    }
    async fn return_lease(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
    ) -> Result<ReturnReply, StoreError> {
        self.faults
            .return_lease(&self.inner, sale, node, epoch)
            .await
    }
    async fn reclaim(&self, sale: &SaleId, every: Duration) -> Result<(u64, u64), StoreError> {
        self.faults.reclaim(&self.inner, sale, every).await
    }
    async fn admit(
        &self,
        sale: &SaleId,
        node: &str,
        epoch: u64,
        batch: &[Candidate],
    ) -> Result<AdmitReply, StoreError> {
        self.faults
            .admit(&self.inner, sale, node, epoch, batch)
            .await
    }
    async fn winner(
        &self,
        sale: &SaleId,
        user: &UserId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        self.faults.winner(&self.inner, sale, user).await
    }
    async fn ticket(
        &self,
        sale: &SaleId,
        ticket: &TicketId,
    ) -> Result<Option<TicketRecord>, StoreError> {
        self.inner.ticket(sale, ticket).await
    }
    async fn confirm(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError> {
        self.inner.confirm(sale, ticket).await
    }
    async fn release(&self, sale: &SaleId, ticket: &TicketId) -> Result<Transition, StoreError> {
        self.inner.release(sale, ticket).await
    }
    async fn sweep(&self, sale: &SaleId, limit: u64) -> Result<bigtap::store::Swept, StoreError> {
        self.inner.sweep(sale, limit).await
    }
    async fn read_digests(
        &self,
        sale: &SaleId,
        offset: u64,
        max: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.inner.read_digests(sale, offset, max).await
    }
    async fn poll(
        &self,
        sale: &SaleId,
        head: PollHead,
        offset: u64,
        max: u64,
    ) -> Result<(Head, Vec<u8>), StoreError> {
        self.faults.poll(&self.inner, sale, head, offset, max).await
    }
    async fn pool(&self, sale: &SaleId) -> Result<Option<Pool>, StoreError> {
        self.inner.pool(sale).await
    }
}

/// `admit` candidates for `users`, each with the ticket id a node proposes
/// for them ([`TicketId::for_user`]) and no region.
pub fn candidates(users: &[&str]) -> Vec<Candidate> {
    users
        .iter()
        .map(|u| {
            let user = UserId::parse(u).expect("a valid user id");
            Candidate {
                user,
                ticket: TicketId::for_user(&user),
                ship_to: None,
            }
        })
        .collect()
}
