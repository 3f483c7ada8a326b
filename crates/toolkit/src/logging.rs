//! Structured logs for Lambda: one JSON object per line, levels from `RUST_LOG` (default `info`).

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the JSON subscriber. Calling it twice is harmless (the second call keeps the first subscriber).
///
/// Call it first in `main`, before the runtime takes events, so that start-up failures are logged too:
///
/// ```
/// orderflow_toolkit::logging::init();
/// orderflow_toolkit::logging::init();
/// assert!(tracing::dispatcher::has_been_set());
/// tracing::info!(order_id = "o-1", "one JSON object per line, with its fields");
/// ```
pub fn init() {
    let json = tracing_subscriber::fmt::layer().json().with_target(false).with_current_span(false).with_ansi(false);
    let levels = levels(std::env::var("RUST_LOG").ok().as_deref());
    let _ = tracing_subscriber::registry().with(json.with_filter(levels)).try_init();
}

/// The levels `RUST_LOG` sets: comma-separated `target=level` directives and a bare default level, e.g.
/// `warn,inventory=debug` (tracing-subscriber's `Targets`, which needs no regex engine in the binary, unlike
/// `EnvFilter`'s span and field directives); `info` when unset or invalid.
fn levels(rust_log: Option<&str>) -> Targets {
    let default = Targets::new().with_default(Level::INFO);
    let Some(value) = rust_log else { return default };
    value.parse().unwrap_or_else(|error| {
        eprintln!("RUST_LOG={value:?} is not a list of target=level directives ({error}); logging at info");
        default
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_sets_a_default_level_and_levels_per_target() {
        let levels = levels(Some("warn,inventory=debug"));
        assert!(levels.would_enable("inventory", &Level::DEBUG));
        assert!(levels.would_enable("aws_smithy_runtime", &Level::WARN));
        assert!(!levels.would_enable("aws_smithy_runtime", &Level::INFO));
    }

    #[test]
    fn unset_or_invalid_rust_log_logs_at_info() {
        for rust_log in [None, Some("inventory=loud")] {
            let levels = levels(rust_log);
            assert!(levels.would_enable("inventory", &Level::INFO), "{rust_log:?}");
            assert!(!levels.would_enable("inventory", &Level::DEBUG), "{rust_log:?}");
        }
    }
}
