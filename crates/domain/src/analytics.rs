//! Event stream processing rules: tumbling windows and the fraud signal.

use time::OffsetDateTime;

/// The start of the tumbling window of `window_seconds` that contains `at`.
pub fn window_start(at: OffsetDateTime, window_seconds: u32) -> OffsetDateTime {
    let window = i64::from(window_seconds.max(1));
    let seconds = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(window)).expect("a window start is a valid time")
}

/// A customer is suspected of fraud by the order that takes them past `max_orders` in one window; only that
/// order raises the signal, so it fires once per customer and window.
pub fn raises_fraud_signal(orders_in_window: u32, max_orders: u32) -> bool {
    orders_in_window == max_orders + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_are_aligned_tumbling_buckets() {
        assert_eq!(window_start(datetime!(2026-11-24 10:00:59 UTC), 60), datetime!(2026-11-24 10:00:00 UTC));
        assert_eq!(window_start(datetime!(2026-11-24 10:01:00 UTC), 60), datetime!(2026-11-24 10:01:00 UTC));
    }

    #[test]
    fn fraud_signal_fires_once_when_the_threshold_is_crossed() {
        let fired: Vec<u32> = (1..=10).filter(|&n| raises_fraud_signal(n, 5)).collect();
        assert_eq!(fired, [6]);
    }
}
