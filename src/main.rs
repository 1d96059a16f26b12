//! The `bigtap` binary: parses arguments, sets up logging, calls the library.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use bigtap::auth::KeyRing;
use bigtap::clock::unix_ms;
use bigtap::id::WarehouseId;
use bigtap::sale::{Eligibility, PutOutcome, SaleSpec, StockChange};
use bigtap::shutdown::{cancel_on_signals, CancellationToken};
use bigtap::store::redis::RedisStore;
use bigtap::store::Store;
use bigtap::{App, SaleId, ServeConfig, UserId};

#[derive(Parser)]
#[command(
    name = "bigtap",
    version,
    about = "Flash-sale admission: a ticket machine that never oversells"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the front tier.
    Serve(Box<ServeConfig>),
    /// Deliver winners from the order streams to the order backend.
    Orders(bigtap::orders::OrdersArgs),
    /// Create and operate sales (talks to Redis directly).
    Sale(SaleCmd),
    /// Session tokens for load tests.
    Users {
        #[command(subcommand)]
        command: UsersCmd,
    },
    /// Purchase tokens.
    Ticket {
        #[command(subcommand)]
        command: TicketCmd,
    },
    /// Forward Alertmanager notifications to the pager, at most limit(n) per alert and anomaly period.
    Relay(bigtap::relay::RelayArgs),
}

#[derive(Args)]
struct StoreArgs {
    /// Redis URL: redis://, rediss:// (TLS), redis+cluster:// or
    /// rediss+cluster:// (a seed node of a Redis Cluster). A private CA for
    /// TLS: BIGTAP_REDIS_CA_FILE=ca.pem.
    #[arg(long, env = "BIGTAP_REDIS_URL", hide_env_values = true)]
    redis: String,
    /// Key prefix in Redis.
    #[arg(long, env = "BIGTAP_PREFIX", default_value = "bigtap")]
    prefix: String,
}

#[derive(Args)]
struct SaleCmd {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: SaleAction,
}

#[derive(Subcommand)]
enum SaleAction {
    /// Create a sale, or update its window, TTL and eligibility mode.
    Create {
        sale: SaleId,
        /// Units (required to create; an update never changes stock).
        #[arg(long)]
        stock: Option<u64>,
        /// Start, Unix ms (default: now).
        #[arg(long)]
        starts_at_ms: Option<u64>,
        /// End, Unix ms (default: start + 1 hour).
        #[arg(long)]
        ends_at_ms: Option<u64>,
        /// Time a winner has to pay.
        #[arg(long, default_value_t = 900_000)]
        ticket_ttl_ms: u64,
        /// open, or list (only users loaded with `sale eligible`).
        #[arg(long, default_value = "open")]
        eligibility: String,
        /// Warehouses and their units as JSON, e.g. '{"north":600,"south":400}'
        /// (the stock is their sum).
        #[arg(long)]
        warehouses: Option<String>,
        /// Each region's warehouse order as JSON, e.g. '{"eu":["north","south"]}'.
        #[arg(long)]
        regions: Option<String>,
        /// Warehouse order for buyers of no or an unknown region, comma-separated.
        #[arg(long, value_delimiter = ',')]
        default_order: Option<Vec<String>>,
    },
    /// Add (positive) or withdraw (negative) units.
    Stock {
        sale: SaleId,
        #[arg(long, allow_hyphen_values = true)]
        add: i64,
        /// The warehouse (required when the sale has several).
        #[arg(long)]
        warehouse: Option<WarehouseId>,
    },
    /// Move unleased unsold units from one sale to another (journaled: if
    /// interrupted, run the same command again to finish or undo it).
    Move {
        from: SaleId,
        to: SaleId,
        #[arg(long)]
        units: u64,
        /// The source warehouse (required when the source has several); the
        /// units arrive in the destination's warehouse of the same name.
        #[arg(long)]
        warehouse: Option<WarehouseId>,
        /// Move id (letters, digits, '_', '-'): re-running with the same id
        /// never moves twice. Default: a fresh random id.
        #[arg(long)]
        id: Option<SaleId>,
        /// Test only: abort right after step K (0-3), as a kill -9 would.
        #[arg(long, hide = true, env = "BIGTAP_TEST_MOVE_ABORT_AFTER")]
        abort_after: Option<u32>,
    },
    /// Move unsold units from one warehouse of the sale to another.
    Transfer {
        sale: SaleId,
        #[arg(long)]
        from: WarehouseId,
        #[arg(long)]
        to: WarehouseId,
        #[arg(long)]
        units: u64,
    },
    /// Add users to the eligibility list, one id per line.
    Eligible {
        sale: SaleId,
        /// File of user ids ("-" for standard input).
        #[arg(long)]
        file: String,
    },
    /// Stop admissions for good.
    Close { sale: SaleId },
    /// Print the accounting (JSON).
    Show { sale: SaleId },
    /// Reconcile ticket records, winners, the order stream, the accounting
    /// and (given the ids the order backend received) the backend; print
    /// every discrepancy, exit 1 if there is any.
    Audit {
        sale: SaleId,
        /// File of ticket ids the order backend recorded, one per line.
        #[arg(long)]
        delivered: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Print N session tokens, one per line (needs BIGTAP_SESSION_KEYS).
    Mint {
        #[arg(long)]
        count: u64,
        /// User ids are PREFIX followed by a 7-digit number.
        #[arg(long, default_value = "u")]
        prefix: String,
        /// First number.
        #[arg(long, default_value_t = 1)]
        start: u64,
        /// Token lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_s: u64,
        #[arg(long, env = "BIGTAP_SESSION_KEYS", hide_env_values = true)]
        session_keys: String,
    },
}

#[derive(Subcommand)]
enum TicketCmd {
    /// Verify a purchase token; prints its claims, exits 1 if invalid.
    Verify {
        token: String,
        #[arg(long, env = "BIGTAP_TICKET_KEYS", hide_env_values = true)]
        ticket_keys: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Users { command } => users(command),
        Command::Ticket { command } => ticket(command),
        command => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async_main(command))
        }
    }
}

async fn async_main(command: Command) -> Result<()> {
    match command {
        Command::Serve(config) => serve(*config).await,
        Command::Orders(args) => {
            let token = CancellationToken::new();
            cancel_on_signals(token.clone());
            bigtap::orders::run(args, token)
                .await
                .context("order consumer failed")
        }
        Command::Sale(cmd) => sale(cmd).await,
        Command::Relay(args) => Ok(bigtap::relay::run_until_signalled(args).await?),
        Command::Users { .. } | Command::Ticket { .. } => Ok(()),
    }
}

async fn serve(mut config: ServeConfig) -> Result<()> {
    let demo = config.demo;
    // Signals first: a stop requested during start-up is honoured once the
    // node runs, with the usual drain and lease return.
    let token = CancellationToken::new();
    cancel_on_signals(token.clone());
    // The demo's shop page lives on an origin of its own, which bigtap must
    // allow before it starts.
    let shop = match demo {
        true => Some(demo_shop_listener(&mut config).await?),
        false => None,
    };
    let app = App::build(config)
        .await
        .context("cannot start bigtap serve")?;
    let addr = app.local_addr();
    if let Some(listener) = shop {
        let page = demo_sale(&app, &listener).await?;
        tokio::spawn(bigtap::demo::serve(listener, page, token.clone()));
    }
    let redis = bigtap::store::redact(app.redis_url());
    tracing::info!(%addr, node = app.node_id(), %redis, "bigtap serving");
    app.run_until_stopped(token).await;
    Ok(())
}

/// Binds the demo shop page next to bigtap and allows its origin (under
/// both names a browser may use for the loopback address).
async fn demo_shop_listener(config: &mut ServeConfig) -> Result<tokio::net::TcpListener> {
    let listener = bigtap::demo::bind_next_to(config.listen)
        .await
        .context("cannot bind the demo shop page")?;
    let addr = listener.local_addr()?;
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
async fn demo_sale(app: &App, shop: &tokio::net::TcpListener) -> Result<bigtap::demo::Shop> {
    let sale = SaleId::parse("demo")?;
    let now = unix_ms();
    let spec = SaleSpec {
        stock: Some(100),
        starts_at_ms: now,
        ends_at_ms: now + 3_600_000,
        ticket_ttl_ms: 900_000,
        eligibility: Eligibility::Open,
    };
    let store = &app.shared().store;
    if store.put_sale(&sale, &spec).await? == PutOutcome::Updated {
        // A demo sale from an earlier run: give it a fresh window.
        tracing::info!("demo sale existed; its window was renewed");
    }
    app.shared().sales.load(sale).await?;
    let s = app.secrets();
    let ring = KeyRing::parse(&s.session_keys)?;
    let alice = ring.mint_session(&UserId::parse("alice")?, now / 1000 + 3600);
    let bob = ring.mint_session(&UserId::parse("bob")?, now / 1000 + 3600);
    let url = format!("http://{}", app.local_addr());
    let shop_url = format!("http://{}/", shop.local_addr()?);
    let buyers = ["alice", "bob", "carol", "dave"]
        .into_iter()
        .map(|user| -> Result<bigtap::demo::Buyer> {
            Ok(bigtap::demo::Buyer {
                user: user.to_owned(),
                session: ring.mint_session(&UserId::parse(user)?, now / 1000 + 3600),
            })
        })
        .collect::<Result<Vec<_>>>()?;
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
        redis = bigtap::store::redact(app.redis_url()),
    )?;
    Ok(bigtap::demo::Shop {
        api: url,
        sale: sale.as_str().to_owned(),
        buyers,
    })
}

async fn sale(cmd: SaleCmd) -> Result<()> {
    // The audit reads a whole sale in one step: give it longer.
    let timeout = match cmd.command {
        SaleAction::Audit { .. } => bigtap::audit::AUDIT_TIMEOUT,
        _ => Duration::from_secs(5),
    };
    let store = RedisStore::open(&cmd.store.redis, &cmd.store.prefix, timeout, None)?;
    store
        .wait_ready(Duration::from_secs(5))
        .await
        .with_context(|| format!("redis at {} is not reachable", store.url()))?;
    match cmd.command {
        SaleAction::Create {
            sale,
            stock,
            starts_at_ms,
            ends_at_ms,
            ticket_ttl_ms,
            eligibility,
            warehouses,
            regions,
            default_order,
        } => {
            let raw = bigtap::inventory::RawSpec {
                warehouses: warehouses
                    .map(|j| serde_json::from_str(&j))
                    .transpose()
                    .context("--warehouses must be a JSON object of warehouse to units")?,
                regions: regions
                    .map(|j| serde_json::from_str(&j))
                    .transpose()
                    .context("--regions must be a JSON object of region to warehouse list")?,
                default_order,
            };
            let (stock, inventory) = bigtap::inventory::Inventory::from_spec(stock, &raw)?;
            let starts_at_ms = starts_at_ms.unwrap_or_else(unix_ms);
            let spec = SaleSpec {
                stock,
                starts_at_ms,
                ends_at_ms: ends_at_ms.unwrap_or(starts_at_ms + 3_600_000),
                ticket_ttl_ms,
                eligibility: match eligibility.as_str() {
                    "open" => Eligibility::Open,
                    "list" => Eligibility::List,
                    other => bail!("--eligibility must be open or list, not {other:?}"),
                },
            };
            if let Err(why) = spec.validate() {
                bail!("{why}");
            }
            match store.put_sale_with(&sale, &spec, &inventory).await? {
                PutOutcome::Created => println!("created sale {sale}"),
                PutOutcome::Updated => println!("updated sale {sale} (stock unchanged)"),
                PutOutcome::StockRequired => bail!("--stock is required to create a sale"),
            }
        }
        SaleAction::Stock {
            sale,
            add,
            warehouse,
        } => {
            bigtap::sale::validate_stock_delta(add).map_err(anyhow::Error::msg)?;
            match store.add_stock_to(&sale, add, warehouse).await? {
                StockChange::Changed { total, available } => {
                    println!("stock_total {total}, available {available}")
                }
                StockChange::Insufficient { available, .. } => {
                    bail!(
                        "only {available} units are unleased; cannot withdraw {}",
                        -add
                    )
                }
                StockChange::UnknownSale => bail!("unknown sale {sale}"),
                StockChange::WarehouseRequired => {
                    bail!("sale {sale} has several warehouses: give --warehouse")
                }
                StockChange::UnknownWarehouse => bail!("sale {sale} has no such warehouse"),
            }
        }
        SaleAction::Move {
            from,
            to,
            units,
            warehouse,
            id,
            abort_after,
        } => {
            let plan = bigtap::moves::Plan {
                from,
                to,
                units,
                warehouse,
                id: id.map(|i| i.as_str().to_owned()),
            };
            let done =
                bigtap::moves::run(&store, &plan, abort_after, |line| println!("{line}")).await?;
            println!("{done}");
        }
        SaleAction::Transfer {
            sale,
            from,
            to,
            units,
        } => {
            use bigtap::sale::TransferOutcome as T;
            if from == to || units == 0 {
                bail!("--from and --to must differ and --units must be positive");
            }
            match store.transfer(&sale, from, to, units).await? {
                T::Moved {
                    from_unsold,
                    to_unsold,
                } => {
                    println!("moved {units}: {from} has {from_unsold} unsold, {to} has {to_unsold} unsold")
                }
                T::Insufficient { unsold } => bail!("{from} has only {unsold} unsold units"),
                T::UnknownSale => bail!("unknown sale {sale}"),
                T::UnknownWarehouse => bail!("sale {sale} has no warehouse {from}"),
                T::TooManyWarehouses => bail!("a sale has at most 64 warehouses"),
            }
        }
        SaleAction::Audit { sale, delivered } => {
            let report = bigtap::audit::audit_store(&store, &sale, delivered.as_deref()).await?;
            println!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
        }
        SaleAction::Eligible { sale, file } => {
            let reader: Box<dyn BufRead> = if file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(&file).with_context(|| format!("cannot open {file}"))?,
                ))
            };
            let mut users = Vec::new();
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                users.push(
                    UserId::parse(line).with_context(|| format!("line {}: {line:?}", n + 1))?,
                );
            }
            match store.add_eligible(&sale, &users).await? {
                Some(added) => println!("{added} users added ({} given)", users.len()),
                None => bail!("unknown sale {sale}"),
            }
        }
        SaleAction::Close { sale } => {
            if !store.close(&sale).await? {
                bail!("unknown sale {sale}");
            }
            println!("closed sale {sale}");
        }
        SaleAction::Show { sale } => match store.accounting(&sale).await? {
            Some((s, w)) => {
                let mut v = bigtap::http::accounting_json(&s);
                v["warehouses"] = bigtap::http::warehouses_json(&w);
                println!("{v}")
            }
            None => bail!("unknown sale {sale}"),
        },
    }
    Ok(())
}

fn users(cmd: UsersCmd) -> Result<()> {
    let UsersCmd::Mint {
        count,
        prefix,
        start,
        ttl_s,
        session_keys,
    } = cmd;
    let ring = KeyRing::parse(&session_keys).context("BIGTAP_SESSION_KEYS")?;
    let exp = unix_ms() / 1000 + ttl_s;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in start..start + count {
        let user =
            UserId::parse(&format!("{prefix}{i:07}")).context("--prefix makes invalid user ids")?;
        writeln!(out, "{}", ring.mint_session(&user, exp))?;
    }
    out.flush()?;
    Ok(())
}

fn ticket(cmd: TicketCmd) -> Result<()> {
    let TicketCmd::Verify { token, ticket_keys } = cmd;
    let ring = KeyRing::parse(&ticket_keys).context("BIGTAP_TICKET_KEYS")?;
    match ring.verify_ticket(token.trim()) {
        Ok(c) => {
            println!(
                "{}",
                serde_json::json!({
                    "valid": true,
                    "sale": c.sale.as_str(),
                    "ticket": c.ticket.as_str(),
                    "user": c.user.as_str(),
                    "expires_at_ms": c.expires_at_ms,
                    "expired": c.expires_at_ms <= unix_ms(),
                })
            );
            Ok(())
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"valid": false, "error": e.to_string()})
            );
            std::process::exit(1);
        }
    }
}
