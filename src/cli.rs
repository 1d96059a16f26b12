//! The commands of the `bigtap` binary that no service module owns:
//! `serve` (start-up, the demo, run until a signal), `sale` (the
//! operations of [`crate::ops`] from flags), `users mint` and `ticket
//! verify`.
//!
//! Each command is its clap arguments and one function answering an
//! [`ExitCode`] or a [`CliError`]; the binary only parses and calls. Flags
//! are parsed into typed inputs here, at the edge; the operations
//! themselves, their validation and their output lines live in `ops`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::app::{App, AppError};
use crate::auth::{KeyError, KeyRing};
use crate::clock::unix_ms;
use crate::config::ServeConfig;
use crate::demo::setup::{self as demo, DemoError};
use crate::id::{IdError, SaleId, UserId, WarehouseId};
use crate::inventory::RawSpec;
use crate::moves::Plan;
use crate::ops::{self, OpsError, PutSale, StockDelta, Transfer, DEFAULT_TICKET_TTL_MS};
use crate::sale::Eligibility;
use crate::shutdown::{cancel_on_signals, CancellationToken};
use crate::store::redis::RedisStore;
use crate::store::StoreError;

/// How long a sale created from the command line stays open by default.
const DEFAULT_SALE_MS: u64 = 3_600_000;
/// Time allowed for each store call of a `sale` command (but the audit).
const SALE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command failed; printed by the binary with its causes, exit 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis at {url} is not reachable")]
    Unreachable {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("--warehouses must be a JSON object of warehouse to units")]
    Warehouses(#[source] serde_json::Error),
    #[error("--regions must be a JSON object of region to warehouse list")]
    Regions(#[source] serde_json::Error),
    #[error("--eligibility must be open or list, not {0:?}")]
    Eligibility(String),
    #[error("cannot open {0}")]
    Open(String, #[source] std::io::Error),
    #[error("line {line}: {text:?}")]
    User {
        line: usize,
        text: String,
        #[source]
        source: IdError,
    },
    #[error("--prefix makes invalid user ids")]
    Prefix(#[source] IdError),
    #[error("{0}")]
    Keys(&'static str, #[source] KeyError),
    #[error("cannot start bigtap serve")]
    Start(#[source] AppError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs the front tier until a signal stops it (with `--demo`, the shop
/// page and the demo sale too).
pub async fn serve(mut config: ServeConfig) -> Result<ExitCode, CliError> {
    // Signals first: a stop requested during start-up is honoured once the
    // node runs, with the usual drain and lease return.
    let token = CancellationToken::new();
    cancel_on_signals(token.clone());
    // The demo's shop page lives on an origin of its own, which bigtap must
    // allow before it starts.
    let shop = match config.demo {
        true => Some(demo::shop_listener(&mut config).await?),
        false => None,
    };
    let app = App::build(config).await.map_err(CliError::Start)?;
    let addr = app.local_addr();
    if let Some(listener) = shop {
        let page = demo::create_sale(&app, &listener).await?;
        tokio::spawn(crate::demo::serve(listener, page, token.clone()));
    }
    let redis = crate::store::redact(app.redis_url());
    tracing::info!(%addr, node = app.node_id(), %redis, "bigtap serving");
    app.run_until_stopped(token).await;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Redis URL: redis://, rediss:// (TLS), redis+cluster:// or
    /// rediss+cluster:// (a seed node of a Redis Cluster). A private CA for
    /// TLS: BIGTAP_REDIS_CA_FILE=ca.pem.
    #[arg(long, env = "BIGTAP_REDIS_URL", hide_env_values = true)]
    pub redis: String,
    /// Key prefix in Redis.
    #[arg(long, env = "BIGTAP_PREFIX", default_value = crate::config::DEFAULT_PREFIX)]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct SaleCmd {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: SaleAction,
}

#[derive(Debug, Subcommand)]
pub enum SaleAction {
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
        #[arg(long, default_value_t = DEFAULT_TICKET_TTL_MS)]
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
        delivered: Option<PathBuf>,
    },
}

/// `bigtap sale …`: one operation against the store, its result printed.
pub async fn sale(cmd: SaleCmd) -> Result<ExitCode, CliError> {
    // The audit reads a whole sale in one step: give it longer.
    let timeout = match cmd.command {
        SaleAction::Audit { .. } => crate::audit::AUDIT_TIMEOUT,
        _ => SALE_TIMEOUT,
    };
    let store = RedisStore::open(&cmd.store.redis, &cmd.store.prefix, timeout, None)?;
    store
        .wait_ready(SALE_TIMEOUT)
        .await
        .map_err(|source| CliError::Unreachable {
            url: store.url().to_string(),
            source,
        })?;
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
            let inventory = RawSpec {
                warehouses: warehouses
                    .map(|j| serde_json::from_str(&j))
                    .transpose()
                    .map_err(CliError::Warehouses)?,
                regions: regions
                    .map(|j| serde_json::from_str(&j))
                    .transpose()
                    .map_err(CliError::Regions)?,
                default_order,
            };
            let starts_at_ms = starts_at_ms.unwrap_or_else(unix_ms);
            let req = PutSale {
                stock,
                starts_at_ms,
                ends_at_ms: ends_at_ms.unwrap_or(starts_at_ms + DEFAULT_SALE_MS),
                ticket_ttl_ms: Some(ticket_ttl_ms),
                eligibility: Some(
                    Eligibility::parse(&eligibility).ok_or(CliError::Eligibility(eligibility))?,
                ),
                inventory,
            };
            println!("{}", ops::put(&store, &sale, &req).await?);
        }
        SaleAction::Stock {
            sale,
            add,
            warehouse,
        } => {
            let delta = StockDelta::new(add)?;
            println!("{}", ops::stock(&store, &sale, delta, warehouse).await?);
        }
        SaleAction::Move {
            from,
            to,
            units,
            warehouse,
            id,
            abort_after,
        } => {
            let plan = Plan {
                from,
                to,
                units,
                warehouse,
                id: id.map(|i| i.as_str().to_owned()),
            };
            let done =
                ops::move_units(&store, &plan, abort_after, |line| println!("{line}")).await?;
            println!("{done}");
        }
        SaleAction::Transfer {
            sale,
            from,
            to,
            units,
        } => {
            let t = Transfer { from, to, units };
            println!("{}", ops::transfer(&store, &sale, t).await?);
        }
        SaleAction::Audit { sale, delivered } => {
            let report = ops::audit(&store, &sale, delivered.as_deref()).await?;
            println!("{report}");
            if !report.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        SaleAction::Eligible { sale, file } => {
            let users = read_users(&file)?;
            println!("{}", ops::eligible(&store, &sale, &users).await?);
        }
        SaleAction::Close { sale } => println!("{}", ops::close(&store, &sale).await?),
        SaleAction::Show { sale } => println!("{}", ops::show(&store, &sale).await?),
    }
    Ok(ExitCode::SUCCESS)
}

/// User ids, one a line, from a file or standard input ("-"); blank lines
/// are skipped, and the first malformed id names its line.
fn read_users(file: &str) -> Result<Vec<UserId>, CliError> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).map_err(|e| CliError::Open(file.to_owned(), e))?,
        ))
    };
    let mut users = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        users.push(UserId::parse(text).map_err(|source| CliError::User {
            line: n + 1,
            text: text.to_owned(),
            source,
        })?);
    }
    Ok(users)
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
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

/// `bigtap users mint`: session tokens for load tests, one a line.
pub fn users(cmd: UsersCmd) -> Result<ExitCode, CliError> {
    let UsersCmd::Mint {
        count,
        prefix,
        start,
        ttl_s,
        session_keys,
    } = cmd;
    let ring =
        KeyRing::parse(&session_keys).map_err(|e| CliError::Keys("BIGTAP_SESSION_KEYS", e))?;
    let exp = unix_ms() / 1000 + ttl_s;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in start..start + count {
        let user = UserId::parse(&format!("{prefix}{i:07}")).map_err(CliError::Prefix)?;
        writeln!(out, "{}", ring.mint_session(&user, exp))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TicketCmd {
    /// Verify a purchase token; prints its claims, exits 1 if invalid.
    Verify {
        token: String,
        #[arg(long, env = "BIGTAP_TICKET_KEYS", hide_env_values = true)]
        ticket_keys: String,
    },
}

/// `bigtap ticket verify`: the token's claims as JSON; exit 1 if invalid.
pub fn ticket(cmd: TicketCmd) -> Result<ExitCode, CliError> {
    let TicketCmd::Verify { token, ticket_keys } = cmd;
    let ring = KeyRing::parse(&ticket_keys).map_err(|e| CliError::Keys("BIGTAP_TICKET_KEYS", e))?;
    let (verdict, code) = match ring.verify_ticket(token.trim()) {
        Ok(c) => (
            serde_json::json!({
                "valid": true,
                "sale": c.sale.as_str(),
                "ticket": c.ticket.as_str(),
                "user": c.user.as_str(),
                "expires_at_ms": c.expires_at_ms,
                "expired": c.expires_at_ms <= unix_ms(),
            }),
            ExitCode::SUCCESS,
        ),
        Err(e) => (
            serde_json::json!({"valid": false, "error": e.to_string()}),
            ExitCode::FAILURE,
        ),
    };
    println!("{verdict}");
    Ok(code)
}
