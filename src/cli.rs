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
    /// Ask the running daemon to reload its flows and re-read its configuration, and wait:
    /// exit 1 with every error if a file is invalid (the running version stays) or a changed
    /// config key needs a restart. Uses the admin API at `http.listen` with `admin.token`.
    Reload {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How long to wait for the daemon's answer.
        #[arg(long, default_value = "60s", value_parser = crate::config::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Chat with a flow in the terminal: no WhatsApp, no store. `#id` taps a button or list
    /// row, `/wait 2h` advances the clock, `/vars` shows the variables, `/reset` starts over.
    Simulate {
        flow_id: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Flow tools.
    Flows {
        #[command(subcommand)]
        command: FlowsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// List the flows in `flows.dir` with their versions.
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of flow files (kept in flows/flow.schema.json).
    Schema,
    /// Print a flow as a Mermaid diagram.
    Graph {
        flow_id: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Every flow of `flows.dir`, or every error as `file:line:col: message` lines.
/// The bots of `flows.dir/bots/` are checked with them (their providers against the config).
fn load_flows(settings: &Settings) -> anyhow::Result<crate::flow::FlowSet> {
    crate::behaviour::load_all(&settings.flows.dir, Some(&settings.ai.names()))
        .map(|(flows, _)| flows)
        .map_err(|errors| anyhow::anyhow!("{}", errors.join("\n")))
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
            let strict = settings.strict_problems();
            if !strict.is_empty() {
                anyhow::bail!("{}", strict.join("\n"));
            }
            // Valid, but worth knowing before the daemon runs with it (the exit stays 0).
            for warning in settings.warnings() {
                eprintln!("warning: {warning}");
            }
            let flows = load_flows(&settings)?;
            println!(
                "ok: configuration valid ({} account(s), store {}); {} flow(s) valid",
                settings.accounts.len(),
                crate::config::redact_url(&settings.store.url),
                flows.ids().len()
            );
            Ok(())
        }
        Command::Reload { config, timeout } => {
            let settings = Settings::load(config.as_deref())?;
            println!("{}", crate::reload::request(&settings, timeout).await?);
            Ok(())
        }
        Command::Simulate { flow_id, config } => {
            let settings = Settings::load(config.as_deref())?;
            let flows = load_flows(&settings)?;
            crate::flow::simulate::run(&flows, &flow_id, std::io::stdin().lock(), std::io::stdout())
        }
        Command::Flows {
            command: FlowsCommand::Schema,
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::flow::flow_schema())?
            );
            Ok(())
        }
        Command::Flows {
            command: FlowsCommand::Graph { flow_id, config },
        } => {
            let settings = Settings::load(config.as_deref())?;
            let flows = load_flows(&settings)?;
            let flow = flows.get(&flow_id).ok_or_else(|| {
                anyhow::anyhow!(
                    "no flow `{flow_id}`; the flows are: {}",
                    flows.ids().join(", ")
                )
            })?;
            print!("{}", crate::flow::graph::mermaid(flow));
            Ok(())
        }
        Command::Flows {
            command: FlowsCommand::List { config },
        } => {
            let settings = Settings::load(config.as_deref())?;
            let flows = load_flows(&settings)?;
            for flow in flows.flows() {
                println!(
                    "{}\tversion {}\t{} node(s)",
                    flow.id,
                    flow.version,
                    flow.nodes.len()
                );
            }
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
