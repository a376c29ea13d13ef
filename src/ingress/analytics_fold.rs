//! The task that keeps the analytics snapshots current: every
//! [`crate::analytics::FOLD_EVERY_MS`] it folds what the store recorded since its last pass
//! (store/analytics), off the message path. On a first start over an existing database it
//! folds the history there is, a batch at a time, before it waits between passes. The
//! accounts' time zones are read on each pass, so a reload applies to the days after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::analytics::{Zones, FOLD_EVERY_MS};
use crate::config::Settings;
use crate::domain::Zone;
use crate::engine::Engine;
use crate::store::FoldMemory;

/// A pause between the batches of a backlog, so the writers keep their turn.
const BACKLOG_PAUSE: Duration = Duration::from_millis(20);

/// Each configured account's time zone.
pub fn zones_of(settings: &Settings) -> Zones {
    Zones(
        settings
            .accounts
            .iter()
            .filter_map(|a| {
                Some((
                    a.phone_number_id.to_string(),
                    Zone::parse(&a.timezone).ok()?,
                ))
            })
            .collect::<HashMap<_, _>>(),
    )
}

/// Start the folder (it runs until the process ends).
pub fn spawn(engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut memory = FoldMemory::default();
        let mut failing = false;
        loop {
            let zones = zones_of(&engine.settings());
            let pause = match engine
                .store
                .fold_analytics(&zones, engine.clock.now_ms(), &mut memory)
                .await
            {
                Ok(pass) => {
                    if failing {
                        tracing::info!("Analytics are folded again.");
                        failing = false;
                    }
                    if pass.more {
                        BACKLOG_PAUSE
                    } else {
                        Duration::from_millis(FOLD_EVERY_MS as u64)
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "Cannot fold the analytics; the next pass tries again (nothing is lost: it reads from where it stopped).");
                        failing = true;
                    }
                    Duration::from_millis(FOLD_EVERY_MS as u64)
                }
            };
            tokio::time::sleep(pause).await;
        }
    })
}
