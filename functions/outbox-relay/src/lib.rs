//! outbox-relay: the event store's and outboxes' stream to the bus. A library beside its binary so that the fuzz
//! targets decode stream images with the same [`handler::bus_entry`] the Lambda runs.
#![forbid(unsafe_code)]

pub mod handler;
