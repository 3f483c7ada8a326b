//! The order domain of orderflow, free of AWS: the events of the saga, the order state machine, and the rules
//! of stock, payment and analytics. Functions hold the I/O; this crate holds the decisions.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod events;
pub mod inventory;
pub mod order;
pub mod payment;

pub use rust_decimal::Decimal;

/// A stable 32-bit hash of `text` (FNV-1a), for spreading items over shards: unlike the standard library's
/// hasher it is the same in every build, so an item keeps its shard across deployments.
pub fn stable_hash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}
