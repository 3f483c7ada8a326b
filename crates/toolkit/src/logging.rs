//! Structured logs for Lambda: one JSON object per line, level from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .with_current_span(false)
        .with_ansi(false)
        .try_init();
}
