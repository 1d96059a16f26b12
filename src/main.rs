//! The `bigtap` binary: parses arguments, sets up logging, calls the
//! library, and turns its answer into an exit code. Every command's logic
//! lives in the library ([`bigtap::cli`], [`bigtap::orders`],
//! [`bigtap::relay`]).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use bigtap::cli::{SaleCmd, TicketCmd, UsersCmd};
use bigtap::shutdown::{cancel_on_signals, CancellationToken};
use bigtap::ServeConfig;

/// A node allocates and frees small objects on every request from two or
/// more threads at once (request futures, response bodies, commit
/// batches); mimalloc's per-thread free lists serve that with less work
/// than the system allocator (README, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Users { command } => Ok(bigtap::cli::users(command)?),
        Command::Ticket { command } => Ok(bigtap::cli::ticket(command)?),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(command)),
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(config) => Ok(bigtap::cli::serve(*config).await?),
        Command::Orders(args) => {
            let token = CancellationToken::new();
            cancel_on_signals(token.clone());
            bigtap::orders::run(args, token)
                .await
                .context("order consumer failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sale(cmd) => Ok(bigtap::cli::sale(cmd).await?),
        Command::Relay(args) => {
            bigtap::relay::run_until_signalled(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Users { .. } | Command::Ticket { .. } => Ok(ExitCode::SUCCESS),
    }
}
