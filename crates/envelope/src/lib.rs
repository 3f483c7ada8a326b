//! The versioned event envelope of the public contract, on its own so that a crate of event types (the domain)
//! needs nothing else: the [`Envelope`] and its [`EnvelopeError`]s, the [`RawEnvelope`] a consumer reads before it
//! knows the type, the [`Event`] trait of one version of one type, and the [`Registry`] of the types and versions
//! a consumer reads, which upcasts older versions (including legacy, envelope-less shapes) and rejects unknown
//! types and versions with a reason. `orderflow-toolkit` re-exports all of it at the same names.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod registry;

pub use envelope::{Envelope, EnvelopeError, Event, RawEnvelope};
pub use registry::Registry;
