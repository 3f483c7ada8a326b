//! Configuration every function reads at start-up.

use aws_config::{BehaviorVersion, SdkConfig};

/// A function started without the configuration its IaC gives it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set (the function's IaC sets it)")]
    Missing(&'static str),
    #[error("environment variable {name} = {value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

/// The value of a required environment variable.
pub fn required_env(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name).map_err(|_| ConfigError::Missing(name))
}

/// An optional environment variable parsed as `T`, or `default` when unset.
pub fn env_or<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value.parse().map_err(|e: T::Err| ConfigError::Invalid { name, value, reason: e.to_string() }),
    }
}

/// The SDK configuration from the environment (region, credentials, and `AWS_ENDPOINT_URL` for emulators).
/// Loading makes no network call; clients connect lazily on their first request.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}
