//! The `parleyd` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{shutdown_signal, Application};
use crate::config::Settings;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "parleyd",
    version,
    about = "Parley: a WhatsApp conversation engine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration (and flows); exit 1 with one line per problem.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            crate::telemetry::init(&settings.log);
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Check { config } => {
            let settings = Settings::load(config.as_deref())?;
            println!(
                "ok: configuration valid ({} account(s), store {})",
                settings.accounts.len(),
                crate::app::redact_url(&settings.store.url)
            );
            Ok(())
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            crate::telemetry::init(&settings.log);
            let store = Store::connect(&settings.store.url, 1)
                .await
                .context("Failed to open the store")?;
            store
                .migrate()
                .await
                .context("Failed to apply migrations")?;
            println!("ok: migrations applied");
            Ok(())
        }
    }
}
