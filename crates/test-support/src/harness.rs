//! An SQS consumer's runtime in a test: the toolkit's [`SqsBatchProcessor`] with its dead letters in memory, and
//! what a test reads from its results.

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use orderflow_toolkit::{
    DeadLetter, HandlerError, MemoryDeadLetters, OutboxRecord, RawEnvelope, SqsBatchProcessor, SqsRecord,
};

/// Processes SQS batches as `orderflow_aws::run_sqs_consumer` does, with a [`MemoryDeadLetters`] for the DLQ that
/// keeps every batch's dead letters.
#[derive(Debug, Clone)]
pub struct SqsHarness {
    processor: SqsBatchProcessor<MemoryDeadLetters>,
    dead_letters: MemoryDeadLetters,
}

impl Default for SqsHarness {
    /// One record at a time, as [`SqsBatchProcessor::new`].
    fn default() -> Self {
        let dead_letters = MemoryDeadLetters::default();
        Self { processor: SqsBatchProcessor::new(dead_letters.clone()), dead_letters }
    }
}

impl SqsHarness {
    /// Up to `concurrency` records in flight, as [`SqsBatchProcessor::with_concurrency`].
    pub fn with_concurrency(concurrency: usize) -> Self {
        let harness = Self::default();
        Self { processor: harness.processor.with_concurrency(concurrency), ..harness }
    }

    /// The processor, for runtimes built on it (e.g. a retry queue's).
    pub fn processor(&self) -> &SqsBatchProcessor<MemoryDeadLetters> {
        &self.processor
    }

    /// Runs `handler` on every record of `event` and returns the partial batch response. A batch the processor
    /// cannot answer (a record without a message id) is a panic: test batches always have ids.
    pub async fn process<F, Fut>(&self, event: SqsEvent, handler: F) -> SqsBatchResponse
    where
        F: Fn(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        self.processor.process(event, handler).await.unwrap_or_else(|error| panic!("{error}"))
    }

    /// Every dead letter sent so far, in the order they were sent.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.letters()
    }
}

/// The message ids a batch response reports as failed, in order: the records the queue delivers again.
pub fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|failure| failure.item_identifier.clone()).collect()
}

/// The envelopes of outbox records, in order: what a handler emitted, to decode with [`RawEnvelope::decode`].
pub fn envelopes(outbox: &[OutboxRecord]) -> Vec<RawEnvelope> {
    let envelope = |record: &OutboxRecord| {
        serde_json::from_str(&record.detail)
            .unwrap_or_else(|error| panic!("outbox record {} is not an envelope: {error}", record.event_id))
    };
    outbox.iter().map(envelope).collect()
}

#[cfg(test)]
mod tests {
    use crate::sqs_batch;

    use super::*;

    #[tokio::test]
    async fn transient_failures_are_reported_and_permanent_ones_dead_lettered_across_batches() {
        let sqs = SqsHarness::with_concurrency(2);
        let outcome = |record: SqsRecord| async move {
            match record.body.as_str() {
                "ok" => Ok(()),
                "later" => Err(HandlerError::transient("not yet")),
                _ => Err(HandlerError::permanent("poison")),
            }
        };

        let first = sqs.process(sqs_batch(&["ok".into(), "later".into(), "bad".into()]), outcome).await;
        let second = sqs.process(sqs_batch(&["bad".into()]), outcome).await;

        assert_eq!(failed_ids(&first), ["m-1"]);
        assert!(failed_ids(&second).is_empty());
        let letters: Vec<_> = sqs.dead_letters().into_iter().map(|l| (l.message_id, l.reason)).collect();
        assert_eq!(letters, [("m-2".into(), "poison".into()), ("m-0".into(), "poison".into())]);
    }
}
