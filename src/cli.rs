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
    /// SQLite: rewrite the database file with incremental auto-vacuum and every free page
    /// given back, so that retention can return space from then on (a database made by an
    /// earlier version keeps its mode until this). Stop the daemon first: it takes the whole
    /// database while it runs, and needs as much free disk again as the file. PostgreSQL:
    /// nothing to do (autovacuum).
    Compact {
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

/// The simulator's shop: a scratch store holding a copy of the first account's catalog (read
/// from the configured store, never written), where carts, orders and stock move as they
/// would; payments are simulated (`/pay`, `/expire`). It keeps real time, whatever the
/// simulator's clock says.
struct SimShop {
    shop: crate::commerce::scratch::ScratchShop,
    handle: tokio::runtime::Handle,
}

impl SimShop {
    async fn open(settings: &Settings) -> anyhow::Result<SimShop> {
        let (account, currency) = settings
            .accounts
            .first()
            .map(|a| (a.phone_number_id.clone(), a.currency))
            .unwrap_or_else(|| ("simulator".into(), Default::default()));
        let shop =
            crate::commerce::scratch::ScratchShop::open(account.clone(), currency, "simulator")
                .await?
                .with_payment_text(
                    "(a simulated payment: /pay marks it paid, /expire lets it expire)",
                );
        let filter = crate::store::ProductFilter {
            limit: 10_000,
            ..Default::default()
        };
        let copied = async {
            let source = crate::store::Store::connect(&settings.store.url, 1).await?;
            let products = source.products(&account, &filter).await?;
            source.close().await;
            Ok::<_, crate::store::StoreError>(products)
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), copied).await {
            Ok(Ok(products)) => {
                for p in &products {
                    shop.add_product(p).await?;
                }
                println!("(the shop: {} product(s) of account {account}, copied; nothing is written back)", products.len());
            }
            _ => println!(
                "(the shop: the store at {} could not be read; the catalog is empty)",
                crate::config::redact_url(&settings.store.url)
            ),
        }
        Ok(SimShop {
            shop,
            handle: tokio::runtime::Handle::current(),
        })
    }
}

/// Called from within `block_in_place`, on the command's runtime.
impl crate::flow::sandbox::Shop for SimShop {
    fn answer(&mut self, call: &crate::commerce::Call, _: i64) -> crate::commerce::Answer {
        self.handle
            .block_on(self.shop.answer(call, crate::store::now_ms()))
    }

    fn settle(
        &mut self,
        id: i64,
        report: crate::payments::GatewayStatus,
        paid: Option<&crate::domain::Money>,
        _: i64,
    ) -> Result<Option<crate::domain::PaymentStatus>, String> {
        self.handle
            .block_on(self.shop.settle(id, report, paid, crate::store::now_ms()))
            .map_err(|e| e.to_string())
    }
}

/// Each flow's payment nodes against the configured providers: a provider the node names
/// must exist and take its method (errors); one an account would use by default likewise,
/// and an account with none is worth a warning (its customers' orders could not be paid).
fn payment_problems(
    settings: &Settings,
    flows: &crate::flow::FlowSet,
) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let providers = &settings.payments.providers;
    for r in flows.payment_refs() {
        let named: Vec<(Option<&str>, &str)> = match &r.provider {
            Some(p) => vec![(None, p.as_str())],
            None => {
                for a in settings.accounts.iter().filter(|a| a.payments.is_none()) {
                    warnings.push(format!(
                        "{}: account {} sets no `payments` provider, so its customers cannot pay here",
                        r.at, a.phone_number_id
                    ));
                }
                settings
                    .accounts
                    .iter()
                    .filter_map(|a| {
                        Some((Some(a.phone_number_id.as_str()), a.payments.as_deref()?))
                    })
                    .collect()
            }
        };
        for (account, name) in named {
            let whose = account
                .map(|a| format!(" (account {a}'s)"))
                .unwrap_or_default();
            match providers.get(name) {
                None => errors.push(format!(
                    "{}: payment provider `{name}`{whose} is not configured ([payments.providers.{name}])",
                    r.at
                )),
                Some(p) if !crate::payments::supports(p.kind, r.method) => errors.push(format!(
                    "{}: payment provider `{name}`{whose} is {}, which cannot take `{}` payments",
                    r.at, p.kind, r.method
                )),
                Some(_) => {}
            }
        }
    }
    (errors, warnings)
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
            let (errors, warnings) = payment_problems(&settings, &flows);
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            if !errors.is_empty() {
                anyhow::bail!("{}", errors.join("\n"));
            }
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
            let mut shop = SimShop::open(&settings).await?;
            let played = tokio::task::block_in_place(|| {
                crate::flow::simulate::run(
                    &flows,
                    &flow_id,
                    std::io::stdin().lock(),
                    std::io::stdout(),
                    &mut shop,
                )
            });
            shop.shop.close().await;
            played
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
        Command::Compact { config } => {
            let settings = Settings::load(config.as_deref())?;
            crate::telemetry::init(&settings.log);
            // A running daemon would stall behind the rewrite (its webhooks unanswered for
            // as long as it takes): refuse while one answers at its address.
            let listen = settings.http.listen.clone();
            let running = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                tokio::net::TcpStream::connect(&listen),
            )
            .await
            .is_ok_and(|c| c.is_ok());
            if running {
                anyhow::bail!(
                    "a daemon answers at {listen}: stop it first (compacting takes the whole database while it runs)"
                );
            }
            let store = Store::connect(&settings.store.url, 1)
                .await
                .context("Failed to open the store")?;
            match store
                .compact()
                .await
                .context("Failed to compact the store")?
            {
                None => println!("ok: nothing to do on PostgreSQL (autovacuum gives space back)"),
                Some(c) => println!(
                    "ok: auto_vacuum {} -> incremental, {} -> {} bytes",
                    c.was, c.bytes_before, c.bytes_after
                ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(node: &str) -> crate::flow::FlowSet {
        let yaml = format!("start: pay\nnodes:\n  pay:\n    payment: {node}\n");
        crate::flow::FlowSet::load(&[("shop.yaml".into(), yaml)]).expect("valid flow")
    }

    fn settings(provider: &str, kind: &str, account_default: Option<&str>) -> Settings {
        let mut s = Settings::load(None).expect("defaults");
        let p: crate::config::PaymentProviderSettings = serde_json::from_value(
            serde_json::json!({"kind": kind, "instructions": "BCA 123", "base_url": "https://x.example", "secret_key": "k", "callback_token": "t"}),
        )
        .expect("provider");
        s.payments.providers.insert(provider.into(), p);
        let mut a: crate::config::AccountSettings =
            serde_json::from_value(serde_json::json!({"phone_number_id": "111"})).unwrap();
        a.payments = account_default.map(str::to_string);
        s.accounts = vec![a];
        s
    }

    #[test]
    fn check_matches_payment_nodes_against_the_providers() {
        let va = flows("{method: va, bank: bca}");
        let (errors, warnings) = payment_problems(&settings("bank", "manual", Some("bank")), &va);
        assert_eq!(warnings, Vec::<String>::new());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("shop.yaml:4:")
                && errors[0].contains("payment provider `bank` (account 111's) is manual, which cannot take `va` payments"),
            "{errors:?}"
        );
        let (errors, _) = payment_problems(&settings("xnd", "xendit", Some("xnd")), &va);
        assert!(errors.is_empty(), "{errors:?}");
        let named = flows("{provider: stripe, method: link}");
        let (errors, _) = payment_problems(&settings("xnd", "xendit", Some("xnd")), &named);
        assert!(
            errors[0].contains("payment provider `stripe` is not configured"),
            "{errors:?}"
        );
        let (errors, warnings) = payment_problems(&settings("xnd", "xendit", None), &va);
        assert!(errors.is_empty());
        assert!(
            warnings[0].contains("account 111 sets no `payments` provider"),
            "{warnings:?}"
        );
    }
}
