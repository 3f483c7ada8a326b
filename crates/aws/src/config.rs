//! Configuration every function reads at start-up.

use aws_config::environment::{EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

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
/// A whole number of at least 1 from the environment variable `name`, `default` when it is unset.
pub fn positive_env_or(name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match env_or(name, default)? {
        0 => Err(ConfigError::Invalid { name, value: "0".into(), reason: "must be at least 1".into() }),
        value => Ok(value),
    }
}

pub fn env_or<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value.parse().map_err(|e: T::Err| ConfigError::Invalid { name, value, reason: e.to_string() }),
    }
}

/// The root certificates of Amazon Trust Services (Amazon Root CA 1-4 and Starfield Services Root CA - G2, which
/// cross-signs them), to which the certificate of every AWS service endpoint chains.
pub const AMAZON_TRUST_SERVICES_ROOTS: &str = include_str!("amazon-trust-services-roots.pem");

/// Environment variables that name a certificate store of the system's (OpenSSL's names).
const SYSTEM_STORE_VARIABLES: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// The SDK configuration from the environment (region, credentials, and `AWS_ENDPOINT_URL` for emulators).
/// Loading makes no network call; clients connect lazily on their first request.
///
/// Every client built from it shares one HTTPS client that trusts [`AMAZON_TRUST_SERVICES_ROOTS`] only, which is
/// all an AWS endpoint needs. The SDK's default trusts the system's store instead, which it reads and parses
/// when the first client is built: ~150 certificates, most of a function's init time after the runtime's own
/// (`cargo xtask bench`). Set `SSL_CERT_FILE` or `SSL_CERT_DIR` to trust a store of the system's instead (an
/// endpoint or proxy with its own CA).
pub async fn load_sdk_config() -> SdkConfig {
    let system_store = SYSTEM_STORE_VARIABLES.iter().any(|name| std::env::var_os(name).is_some());
    let trust_store = if system_store {
        TrustStore::default()
    } else {
        TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS)
    };
    // Building a context from a trust store cannot fail (the Result is for options not used here).
    let tls = TlsContext::builder().with_trust_store(trust_store).build().unwrap_or_default();
    // The SDK's default HTTPS client as aws-smithy-runtime builds it (rustls with aws-lc, the proxy from the
    // environment), with the trust store above; `build_https` would leave the proxy out.
    let https_client = Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.tls_context(tls.clone()).build()
    });
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client);
    // Lambda gives every function its credentials and region as environment variables, which the default chains
    // read first anyway; naming the environment providers skips building the rest of the chains (~0.4 ms).
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    if std::env::var_os("AWS_REGION").is_some() {
        loader = loader.region(EnvironmentVariableRegionProvider::new());
    }
    loader.load().await
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn the_amazon_roots_are_five_parsable_certificates() {
        let certificates: Vec<CertificateDer> = CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES_ROOTS.as_bytes())
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(certificates.len(), 5);
    }

    #[tokio::test]
    async fn clients_build_with_the_amazon_roots() {
        // Building a client makes the SDK build its TLS connector, which panics on a certificate it cannot parse.
        let config = load_sdk_config().await;
        let _ = aws_sdk_sqs::Client::new(&config);
        let _ = aws_sdk_dynamodb::Client::new(&config);
    }
}
