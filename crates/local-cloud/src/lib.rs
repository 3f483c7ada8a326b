//! orderflow's local cloud: the project's dev tooling around [`local_lambda`]. It owns the pinned tool installs
//! ([`tools`]), the AWS-API emulator processes and the moto launcher ([`emulator`]), the simulated payment provider
//! process ([`provider`]), the whole system in one value (the function list, the stacks of `infra/`, the runner:
//! [`cloud`]) and the demo scenario ([`scenario`]).
#![forbid(unsafe_code)]

pub mod cloud;
pub mod emulator;
pub mod issuer;
pub mod provider;
pub mod scenario;
pub mod tools;
