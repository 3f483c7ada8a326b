//! The local stand-in for the Cognito user pool: an RSA key of its own (made once, kept in `.local/issuer/`) that
//! signs access tokens shaped as Cognito's, and the JSON Web Key Set the local gateway verifies them with, as API
//! Gateway's JWT authorizer verifies Cognito's.
//!
//! A customer's token has the customer as `sub` and the customer app client as `client_id`; an operator's is a
//! client-credentials token as Cognito issues one: `sub` is the operator client, `scope` is `orderflow/admin`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use local_lambda::authorizer::JwtConfig;
use serde_json::json;

/// The `iss` of every local token (Cognito's is `https://cognito-idp.<region>.amazonaws.com/<pool id>`).
pub const ISSUER: &str = "https://orderflow.local/issuer";
/// The customer app client: the `client_id` of customers' tokens.
pub const CUSTOMER_CLIENT: &str = "orderflow-local-customers";
/// The operator app client: `client_id` and `sub` of operators' tokens.
pub const OPERATOR_CLIENT: &str = "orderflow-local-operators";
/// The scope of operators (the resource server `orderflow`, its scope `admin`).
pub const ADMIN_SCOPE: &str = "orderflow/admin";
/// How long a token is valid unless asked otherwise: Cognito's access tokens in infra/ last 60 minutes.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(3600);

const KEY_FILE: &str = "signing-key.pem";

/// Who a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Customer(String),
    Operator,
}

/// The local issuer: its signing key and the key set that verifies it.
#[derive(Clone)]
pub struct LocalIssuer {
    key: EncodingKey,
    key_id: String,
    jwks: JwkSet,
}

impl LocalIssuer {
    /// The issuer of the project at `project_root`, its key read from `.local/issuer/`, made there first if
    /// missing. Processes starting at once agree on one key: each writes its own and links it into place, and the
    /// first link wins.
    pub fn load_or_create(project_root: &Path) -> Result<Self> {
        let dir = project_root.join(".local/issuer");
        let path = dir.join(KEY_FILE);
        if !path.is_file() {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            create_key(&path)?;
        }
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_pem(&pem).with_context(|| format!("the signing key {}", path.display()))
    }

    fn from_pem(pem: &[u8]) -> Result<Self> {
        let key = EncodingKey::from_rsa_pem(pem).context("not an RSA private key in PEM")?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).context("the public key of the signing key")?;
        // The key id is the key's thumbprint (RFC 7638): a new key is a new id, as when Cognito rotates.
        let key_id = jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256);
        jwk.common.key_id = Some(key_id.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self { key, key_id, jwks: JwkSet { keys: vec![jwk] } })
    }

    /// The public keys, as Cognito serves them at `<issuer>/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// What the gateway's authorizer checks: this issuer, the two app clients as audience, these keys.
    pub fn jwt_config(&self) -> JwtConfig {
        JwtConfig {
            issuer: ISSUER.to_owned(),
            audience: vec![CUSTOMER_CLIENT.to_owned(), OPERATOR_CLIENT.to_owned()],
            keys: self.jwks.clone(),
        }
    }

    /// A signed access token for `subject`, valid for `validity` from now.
    pub fn token(&self, subject: &Subject, validity: Duration) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_secs();
        let expires = now.checked_add(validity.as_secs()).ok_or_else(|| anyhow!("validity {validity:?} overflows"))?;
        let (sub, client_id, scope) = match subject {
            Subject::Customer(id) => (id.as_str(), CUSTOMER_CLIENT, "aws.cognito.signin.user.admin"),
            Subject::Operator => (OPERATOR_CLIENT, OPERATOR_CLIENT, ADMIN_SCOPE),
        };
        let mut claims = json!({
            "sub": sub,
            "iss": ISSUER,
            "client_id": client_id,
            "token_use": "access",
            "scope": scope,
            "auth_time": now,
            "iat": now,
            "exp": expires,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Subject::Customer(id) = subject {
            claims["username"] = json!(id);
        }
        self.sign(&claims)
    }

    /// Signs any claims with the issuer's key: tests make expired, foreign-audience or otherwise wrong tokens with
    /// it, and the gateway must refuse them for their claims alone.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.key).context("signing a token")
    }
}

/// Makes a 2048-bit RSA key (Cognito's size) and puts it at `path` unless another process did first.
fn create_key(path: &Path) -> Result<()> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow!("generating an RSA key failed"))?;
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
        .map_err(|_| anyhow!("encoding the RSA key as PKCS#8 failed"))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).context("base64 is ASCII")?);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let staged = staged_path(path);
    std::fs::write(&staged, pem).with_context(|| format!("writing {}", staged.display()))?;
    let linked = std::fs::hard_link(&staged, path);
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err).with_context(|| format!("linking {}", path.display())),
    }
}

fn staged_path(path: &Path) -> PathBuf {
    path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_starting_at_once_share_one_key() {
        let root = std::env::temp_dir().join(format!("issuer-{}", uuid::Uuid::new_v4().simple()));
        let issuers: Vec<LocalIssuer> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| LocalIssuer::load_or_create(&root))).collect();
            handles.into_iter().map(|handle| handle.join().expect("no panic").expect("issuer")).collect()
        });
        let ids: Vec<&str> = issuers.iter().map(|issuer| issuer.key_id.as_str()).collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let again = LocalIssuer::load_or_create(&root).unwrap();
        assert_eq!(again.key_id, ids[0]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_customer_token_names_the_customer_and_an_operator_token_carries_the_admin_scope() {
        let root = std::env::temp_dir().join(format!("issuer-{}", uuid::Uuid::new_v4().simple()));
        let issuer = LocalIssuer::load_or_create(&root).unwrap();
        let config = issuer.jwt_config();

        let customer = issuer.token(&Subject::Customer("c-1".into()), DEFAULT_VALIDITY).unwrap();
        let claims = config.verify(&customer).unwrap();
        assert_eq!((claims["sub"].as_str(), claims["client_id"].as_str()), (Some("c-1"), Some(CUSTOMER_CLIENT)));

        let operator = issuer.token(&Subject::Operator, DEFAULT_VALIDITY).unwrap();
        let claims = config.verify(&operator).unwrap();
        assert_eq!(claims["scope"].as_str(), Some(ADMIN_SCOPE));
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn refused(issuer: &LocalIssuer, token: &str) -> String {
        match issuer.jwt_config().authorize(Some(&format!("Bearer {token}")), &[]) {
            Err(local_lambda::authorizer::Rejection::Unauthorized(why)) => why,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn the_authorizer_refuses_tampered_expired_foreign_and_missing_tokens() {
        let root = std::env::temp_dir().join(format!("issuer-{}", uuid::Uuid::new_v4().simple()));
        let issuer = LocalIssuer::load_or_create(&root).unwrap();
        let valid = issuer.token(&Subject::Customer("c-1".into()), DEFAULT_VALIDITY).unwrap();
        assert!(issuer.jwt_config().authorize(Some(&format!("Bearer {valid}")), &[]).is_ok());
        assert!(issuer.jwt_config().authorize(Some(&valid), &[]).is_ok(), "Bearer is optional, as on API Gateway");

        // Another customer's claims under the valid signature.
        let parts: Vec<&str> = valid.split('.').collect();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = json!("c-2");
        let tampered = format!("{}.{}.{}", parts[0], engine.encode(claims.to_string()), parts[2]);
        assert!(refused(&issuer, &tampered).contains("invalid token"));

        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut expired = claims.clone();
        expired["sub"] = json!("c-1");
        expired["exp"] = json!(now - 1);
        assert!(refused(&issuer, &issuer.sign(&expired).unwrap()).contains("invalid token"));

        let mut foreign = expired.clone();
        foreign["exp"] = json!(now + 600);
        foreign["client_id"] = json!("another-app");
        assert!(refused(&issuer, &issuer.sign(&foreign).unwrap()).contains("audience"));

        let mut other_issuer = foreign.clone();
        other_issuer["client_id"] = json!(CUSTOMER_CLIENT);
        other_issuer["iss"] = json!("https://cognito-idp.us-east-1.amazonaws.com/elsewhere");
        assert!(refused(&issuer, &issuer.sign(&other_issuer).unwrap()).contains("invalid token"));

        let stranger_root = std::env::temp_dir().join(format!("issuer-{}", uuid::Uuid::new_v4().simple()));
        let stranger = LocalIssuer::load_or_create(&stranger_root).unwrap();
        let foreign_key = stranger.token(&Subject::Operator, DEFAULT_VALIDITY).unwrap();
        assert!(refused(&issuer, &foreign_key).contains("no key"));

        assert!(matches!(
            issuer.jwt_config().authorize(None, &[]),
            Err(local_lambda::authorizer::Rejection::Unauthorized(_))
        ));
        for root in [root, stranger_root] {
            std::fs::remove_dir_all(root).unwrap();
        }
    }

    #[test]
    fn a_route_with_scopes_forbids_a_token_without_them_and_passes_claims_as_strings() {
        let root = std::env::temp_dir().join(format!("issuer-{}", uuid::Uuid::new_v4().simple()));
        let issuer = LocalIssuer::load_or_create(&root).unwrap();
        let admin = vec![ADMIN_SCOPE.to_owned()];
        let customer = issuer.token(&Subject::Customer("c-1".into()), DEFAULT_VALIDITY).unwrap();
        assert_eq!(
            issuer.jwt_config().authorize(Some(&customer), &admin),
            Err(local_lambda::authorizer::Rejection::Forbidden(admin.clone()))
        );
        let operator = issuer.token(&Subject::Operator, DEFAULT_VALIDITY).unwrap();
        let context = issuer.jwt_config().authorize(Some(&operator), &admin).unwrap();
        assert_eq!(context["jwt"]["scopes"], json!([ADMIN_SCOPE]));
        assert!(context["jwt"]["claims"]["exp"].is_string());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
