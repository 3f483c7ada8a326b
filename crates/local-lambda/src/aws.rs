//! AWS SDK configuration for talking to the local emulators.

use std::error::Error as StdError;
use std::fmt::Debug;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The region every local stack lives in.
pub const REGION: &str = "us-east-1";
/// The static access key id the emulators accept (LocalStack and moto take any).
pub const ACCESS_KEY_ID: &str = "test";
/// The static secret access key that goes with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "test";

/// SDK configuration for an emulator at `endpoint` (e.g. `http://127.0.0.1:4566`): region
/// us-east-1, static test credentials, every service at that one endpoint. Build any client from
/// it (`aws_sdk_sqs::Client::new(&sdk_config(url))`).
///
/// Nothing is read from the environment or `~/.aws`, so a developer's real AWS profile can never
/// be used by a local run.
pub fn sdk_config(endpoint: &str) -> SdkConfig {
    let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "local-lambda");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .endpoint_url(endpoint)
        // Loopback connects are instant; a connect that hangs means the emulator is gone.
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build())
        .build()
}

/// A short description of an SDK call's failure: `Code: message` for an error the service
/// answered, the whole chain of causes otherwise (connection refused, timeout, ...). The SDK's own
/// `Display` says only "service error", and its `Debug` dumps the raw response.
pub fn describe_sdk_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: Debug,
{
    match err.as_service_error() {
        Some(service) => {
            format!("{}: {}", service.code().unwrap_or("unknown error"), service.message().unwrap_or("(no message)"))
        }
        None => DisplayErrorContext(err).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_every_client_at_the_endpoint() {
        let config = sdk_config("http://127.0.0.1:4566");
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!(config.region().map(|r| r.as_ref()), Some(REGION));
        assert!(config.credentials_provider().is_some());
    }
}
