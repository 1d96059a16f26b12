//! What `bigtap serve --demo` does before it serves: binds the shop page
//! next to bigtap, allows its origin, creates the demo sale through
//! [`crate::ops`], and prints the ready-to-paste commands of this run.

use std::io::Write;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::{Buyer, Shop};
use crate::app::App;
use crate::auth::{KeyError, KeyRing};
use crate::clock::unix_ms;
use crate::config::ServeConfig;
use crate::http::cors::OriginError;
use crate::id::{IdError, SaleId, UserId};
use crate::ops::{self, OpsError, PutSale};
use crate::store::StoreError;

/// The demo sale: its name, units and how long it stays open.
const SALE: &str = "demo";
const UNITS: u64 = 100;
const OPEN_MS: u64 = 3_600_000;
/// The buyers the shop page offers; alice and bob also get a curl line.
const BUYERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot bind the demo shop page")]
    Bind(#[source] std::io::Error),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Binds the demo shop page next to bigtap and allows its origin (under
/// both names a browser may use for the loopback address).
pub async fn shop_listener(config: &mut ServeConfig) -> Result<TcpListener, DemoError> {
    let listener = super::bind_next_to(config.listen)
        .await
        .map_err(DemoError::Bind)?;
    let addr: SocketAddr = listener.local_addr()?;
    config.cors_origins.allow(&format!("http://{addr}"))?;
    if addr.ip().is_loopback() {
        config
            .cors_origins
            .allow(&format!("http://localhost:{}", addr.port()))?;
    }
    Ok(listener)
}

/// Creates the demo sale, prints the shop page's address and ready-to-paste
/// commands, and returns the page's settings.
pub async fn create_sale(app: &App, shop: &TcpListener) -> Result<Shop, DemoError> {
    let sale = SaleId::parse(SALE)?;
    let now = unix_ms();
    let req = PutSale {
        stock: Some(UNITS),
        starts_at_ms: now,
        ends_at_ms: now + OPEN_MS,
        ..PutSale::default()
    };
    if !ops::put(&*app.shared().store, &sale, &req).await?.created {
        // A demo sale from an earlier run: give it a fresh window.
        tracing::info!("demo sale existed; its window was renewed");
    }
    app.shared().sales.load(sale).await?;
    let s = app.secrets();
    let ring = KeyRing::parse(&s.session_keys)?;
    let session_exp_s = now / 1000 + 3600;
    let session = |user: &str| -> Result<String, IdError> {
        Ok(ring.mint_session(&UserId::parse(user)?, session_exp_s))
    };
    let alice = session("alice")?;
    let bob = session("bob")?;
    let url = format!("http://{}", app.local_addr());
    let shop_url = format!("http://{}/", shop.local_addr()?);
    let buyers = BUYERS
        .into_iter()
        .map(|user| {
            Ok(Buyer {
                user: user.to_owned(),
                session: session(user)?,
            })
        })
        .collect::<Result<Vec<_>, IdError>>()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nbigtap demo shop: open {shop_url} in a browser (a page on another origin, buying through CORS)\n\n\
         bigtap demo: sale \"demo\" with 100 units is open at {url}\n\n\
         # take a ticket as alice (201 won; again: 200 replay)\n\
         curl -si -X POST {url}/v1/sales/demo/tickets -H 'Authorization: Bearer {alice}'\n\n\
         # bob\n\
         curl -si -X POST {url}/v1/sales/demo/tickets -H 'Authorization: Bearer {bob}'\n\n\
         # the sale and its accounting\n\
         curl -s {url}/v1/sales/demo\n\
         curl -s {url}/v1/admin/sales/demo -H 'Authorization: Bearer {admin}'\n\n\
         # the keys of this run (export them to use `bigtap users mint` and `bigtap ticket verify`)\n\
         export BIGTAP_SESSION_KEYS='{sk}' BIGTAP_TICKET_KEYS='{tk}' BIGTAP_ADMIN_KEY='{admin}' BIGTAP_BACKEND_KEY='{bk}' BIGTAP_REDIS_URL='{redis}'\n",
        admin = s.admin_key,
        sk = s.session_keys,
        tk = s.ticket_keys,
        bk = s.backend_key,
        redis = crate::store::redact(app.redis_url()),
    )?;
    Ok(Shop {
        api: url,
        sale: sale.as_str().to_owned(),
        buyers,
    })
}
