//! Delivery chaos for SQS event sources, off unless [`RunnerConfig::chaos`](crate::runner::RunnerConfig) is set:
//! duplicated deliveries and shuffled batches, as SQS standard queues allow (at-least-once, no order).
//!
//! A duplicate is a real redelivery: before a batch is invoked, a true copy of some of its messages (same body,
//! same message attributes) is sent back to the queue with `SendMessage`, so the copy reaches the function in a
//! later batch, possibly in another instance while the original is still being processed. Copies are never copied
//! again.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use aws_sdk_sqs::types::Message;

/// What chaos to apply to SQS deliveries.
#[derive(Clone, Debug, PartialEq)]
pub struct Chaos {
    /// Probability (0..=1) that a received message is delivered a second time.
    pub duplicate_rate: f64,
    /// Shuffle the records of every batch.
    pub shuffle: bool,
    /// Seed of the decisions (runs with one seed make the same decisions for the same sequence of batches).
    pub seed: u64,
}

/// What the chaos did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    /// Copies sent back to their queue.
    pub duplicates_sent: u64,
    /// Copies the function received (a copy received twice, after a failure, counts twice).
    pub duplicates_delivered: u64,
    /// Batches of two records or more whose order was shuffled.
    pub batches_shuffled: u64,
    /// Copies that could not be sent (the emulator refused).
    pub send_failures: u64,
}

/// The shared state of the chaos of one runner.
#[derive(Debug)]
pub struct ChaosState {
    config: Chaos,
    rng: AtomicU64,
    copies: Mutex<HashSet<String>>,
    duplicates_sent: AtomicU64,
    duplicates_delivered: AtomicU64,
    batches_shuffled: AtomicU64,
    send_failures: AtomicU64,
}

impl ChaosState {
    pub fn new(config: Chaos) -> Self {
        let seed = config.seed ^ 0x9E37_79B9_7F4A_7C15;
        Self {
            config,
            rng: AtomicU64::new(seed.max(1)),
            copies: Mutex::default(),
            duplicates_sent: AtomicU64::new(0),
            duplicates_delivered: AtomicU64::new(0),
            batches_shuffled: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> ChaosStats {
        ChaosStats {
            duplicates_sent: self.duplicates_sent.load(Ordering::Relaxed),
            duplicates_delivered: self.duplicates_delivered.load(Ordering::Relaxed),
            batches_shuffled: self.batches_shuffled.load(Ordering::Relaxed),
            send_failures: self.send_failures.load(Ordering::Relaxed),
        }
    }

    /// xorshift64*, uniform in [0, 1).
    fn next_unit(&self) -> f64 {
        let step = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let previous = self.rng.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x))).unwrap_or(1);
        let x = step(previous).wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn is_copy(&self, message_id: &str) -> bool {
        self.copies.lock().unwrap_or_else(|e| e.into_inner()).contains(message_id)
    }

    /// Shuffles the batch (when configured), counts the copies in it, and sends copies of some of its
    /// originals back to the queue.
    pub async fn apply(&self, client: &aws_sdk_sqs::Client, queue_url: &str, mut batch: Vec<Message>) -> Vec<Message> {
        if self.config.shuffle && batch.len() > 1 {
            self.shuffle(&mut batch);
            self.batches_shuffled.fetch_add(1, Ordering::Relaxed);
        }
        for message in &batch {
            let id = message.message_id().unwrap_or_default();
            if self.is_copy(id) {
                self.duplicates_delivered.fetch_add(1, Ordering::Relaxed);
            } else if self.config.duplicate_rate > 0.0 && self.next_unit() < self.config.duplicate_rate {
                match send_copy(client, queue_url, message).await {
                    Ok(copy_id) => {
                        self.copies.lock().unwrap_or_else(|e| e.into_inner()).insert(copy_id);
                        self.duplicates_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        self.send_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(queue = queue_url, error = %format!("{err:#}"), "chaos: sending a duplicate failed");
                    }
                }
            }
        }
        batch
    }

    fn shuffle<T>(&self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = ((self.next_unit() * (i + 1) as f64) as usize).min(i);
            items.swap(i, j);
        }
    }
}

/// Sends a true copy of `message` (body and message attributes) to the queue; returns the copy's message id.
async fn send_copy(client: &aws_sdk_sqs::Client, queue_url: &str, message: &Message) -> Result<String> {
    let output = client
        .send_message()
        .queue_url(queue_url)
        .message_body(message.body().unwrap_or_default())
        .set_message_attributes(message.message_attributes().cloned())
        .send()
        .await
        .with_context(|| format!("SendMessage (duplicate) to {queue_url}"))?;
    output.message_id().map(str::to_owned).context("SendMessage returned no message id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shuffle_is_a_permutation_and_moves_things() {
        let state = ChaosState::new(Chaos { duplicate_rate: 0.0, shuffle: true, seed: 3 });
        let mut moved = 0;
        for _ in 0..100 {
            let mut items: Vec<u32> = (0..10).collect();
            state.shuffle(&mut items);
            let mut sorted = items.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
            moved += usize::from(items != (0..10).collect::<Vec<_>>());
        }
        assert!(moved > 90, "{moved}");
    }

    #[test]
    fn decisions_are_uniform_and_seeded() {
        let draws = |seed| {
            let state = ChaosState::new(Chaos { duplicate_rate: 0.2, shuffle: false, seed });
            (0..10_000).map(|_| state.next_unit()).collect::<Vec<_>>()
        };
        let a = draws(1);
        assert_eq!(a, draws(1));
        assert_ne!(a, draws(2));
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let below = a.iter().filter(|&&x| x < 0.2).count();
        assert!((1800..2200).contains(&below), "{below}");
    }
}
