//! Event stream processing rules: tumbling windows and the fraud signal.

use time::{OffsetDateTime, PrimitiveDateTime};

/// The start (in UTC) of the tumbling window of `window_seconds` that contains `at`. The window of the earliest
/// representable times may start before them: it is clamped to the earliest one.
pub fn window_start(at: OffsetDateTime, window_seconds: u32) -> OffsetDateTime {
    let window = i64::from(window_seconds.max(1));
    let seconds = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(window))
        .unwrap_or_else(|_| PrimitiveDateTime::MIN.assume_utc())
}

/// A customer is suspected of fraud by the order that takes them past `max_orders` in one window; only that
/// order raises the signal, so it fires once per customer and window.
pub fn raises_fraud_signal(orders_in_window: u32, max_orders: u32) -> bool {
    orders_in_window == max_orders + 1
}

#[cfg(test)]
mod tests {
    use time::UtcOffset;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn windows_are_aligned_tumbling_buckets() {
        assert_eq!(window_start(datetime!(2026-11-24 10:00:59 UTC), 60), datetime!(2026-11-24 10:00:00 UTC));
        assert_eq!(window_start(datetime!(2026-11-24 10:01:00 UTC), 60), datetime!(2026-11-24 10:01:00 UTC));
    }

    #[test]
    fn a_window_starts_in_utc_whatever_the_offset_of_its_event() {
        let start = window_start(datetime!(2026-11-24 12:00:59 +02:00), 60);
        assert_eq!((start, start.offset()), (datetime!(2026-11-24 10:00:00 UTC), UtcOffset::UTC));
    }

    #[test]
    fn the_window_of_the_earliest_time_is_clamped_to_it() {
        let earliest = PrimitiveDateTime::MIN.assume_utc();
        assert_ne!(earliest.unix_timestamp().rem_euclid(7), 0, "its window would start before it");
        assert_eq!(window_start(earliest, 7), earliest);
    }

    #[test]
    fn fraud_signal_fires_once_when_the_threshold_is_crossed() {
        let fired: Vec<u32> = (1..=10).filter(|&n| raises_fraud_signal(n, 5)).collect();
        assert_eq!(fired, [6]);
    }
}
