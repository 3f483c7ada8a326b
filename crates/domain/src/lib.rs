//! The order domain of orderflow, free of AWS: the events of the saga, the order state machine, and the rules
//! of stock, payment and analytics. Functions hold the I/O; this crate holds the decisions.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod events;
pub mod inventory;
pub mod order;
pub mod payment;

pub use rust_decimal::Decimal;
