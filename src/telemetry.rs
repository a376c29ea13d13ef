//! Logging: human-readable on a terminal, JSON otherwise. Phone numbers are masked;
//! message bodies are only logged at trace; secrets never (they are `SecretString`).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use serde::Deserialize;

/// `[log]`: the format and the level filter.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: default_log_level(),
        }
    }
}

fn default_log_format() -> LogFormat {
    LogFormat::Auto
}
fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

/// The installed filter, swapped by a reload of `log.level`.
struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` chose the filter: it wins over `log.level`, at start and on reload.
    from_env: bool,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// The filter for a `log.level` value (`info`, `debug,parley::outbox=trace`).
pub fn filter_for(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(format!("{level},sqlx=warn"))
        .map_err(|e| format!("is not a log filter (like info or warn,parley=debug): {e}"))
}

/// Install the global subscriber. `RUST_LOG` overrides `log.level`.
pub fn init(settings: &LogSettings) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let is_env = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| {
        filter_for(&settings.level).unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
    });
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let layer = fmt::layer().with_writer(std::io::stderr);
    let installed = if json {
        tracing_subscriber::registry()
            .with(filter)
            .with(layer.json().flatten_event(true))
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .try_init()
    };
    if installed.is_ok() {
        let _ = CONTROL.set(LogControl {
            filter: handle,
            from_env: is_env,
        });
    }
}

/// A reload changed `log.level`: swap the filter (events already filtered are not replayed).
/// Nothing changes while `RUST_LOG` is set, or when this process installed no subscriber.
pub fn set_level(filter: EnvFilter) {
    let Some(control) = CONTROL.get() else {
        return;
    };
    if control.from_env {
        tracing::info!("log.level changed, but RUST_LOG is set and keeps deciding what is logged.");
        return;
    }
    if let Err(e) = control.filter.reload(filter) {
        tracing::warn!(error = %e, "Could not swap the log filter.");
    }
}

/// Mask a phone number or user id for logs: keep the last 4 characters.
pub fn mask(id: &str) -> String {
    let n = id.chars().count();
    if n <= 4 {
        return "*".repeat(n);
    }
    let tail: String = id.chars().skip(n - 4).collect();
    format!("{}{}", "*".repeat(n - 4), tail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_keeps_the_last_four() {
        assert_eq!(super::mask("6281234567890"), "*********7890");
        assert_eq!(super::mask("123"), "***");
    }
}
