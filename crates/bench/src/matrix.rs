//! `parley-bench matrix`: the shop benchmark at 1, 10 and 100 users on SQLite, and on
//! PostgreSQL with --pg.

use crate::shop::shop;
use crate::Cli;

/// The shop benchmark at 1, 10 and 100 users, on SQLite and (with `--pg URL`) PostgreSQL.
pub(crate) async fn matrix(cli: &Cli, seconds: u64, pg: Option<String>) -> anyhow::Result<()> {
    let stores: Vec<Option<String>> = std::iter::once(None).chain(pg.map(Some)).collect();
    for store in stores {
        for users in [1, 10, 100] {
            println!(
                "--- shop, {users} users, {}",
                store.as_deref().unwrap_or("sqlite")
            );
            let run = Cli {
                store: store.clone(),
                ..cli.clone()
            };
            shop(&run, users, seconds, false).await?;
        }
    }
    Ok(())
}
