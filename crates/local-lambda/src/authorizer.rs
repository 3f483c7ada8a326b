//! API Gateway's JWT authorizer, as the HTTP API runs it before invoking a route's function: the token of the
//! identity source (`Authorization`, with or without `Bearer `) must be signed by a key of the issuer's key set
//! (RSA, found by `kid`), name the issuer, be unexpired and not early, and have `aud` (or, for access tokens
//! without one, `client_id`) among the audience; then a route with authorization scopes needs one of them in the
//! token's `scope` (or `scp`). A token that fails is `401 {"message":"Unauthorized"}`, a missing scope
//! `403 {"message":"Forbidden"}`, and the function is not invoked. The claims reach the function as
//! `requestContext.authorizer.jwt`.
//!
//! Signatures and time claims are checked by `jsonwebtoken`, never here.

use std::collections::BTreeSet;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

/// What the authorizer trusts: the `issuer`, the `audience` (app client ids) and the issuer's public keys.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: Vec<String>,
    pub keys: JwkSet,
}

/// Why a request was refused; [`Rejection::Unauthorized`]'s reason is for the log, never for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: the token has none of the scopes {0:?}")]
    Forbidden(Vec<String>),
}

/// The RSA algorithms API Gateway's JWT authorizer accepts.
const RSA_ALGORITHMS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

impl JwtConfig {
    /// The claims of a valid token, else why it is not.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        let unauthorized = |why: String| Rejection::Unauthorized(why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| unauthorized(format!("malformed token: {e}")))?;
        if !RSA_ALGORITHMS.contains(&header.alg) {
            return Err(unauthorized(format!("algorithm {:?} is not an RSA signature", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| unauthorized("the token names no key (kid)".into()))?;
        let jwk = self.keys.find(&kid).ok_or_else(|| unauthorized(format!("no key {kid:?} in the issuer's set")))?;
        if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
            return Err(unauthorized(format!("key {kid:?} is not an RSA key")));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| unauthorized(format!("key {kid:?}: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        // `aud` or `client_id`, checked below: Cognito's access tokens carry no `aud`.
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let audiences: Vec<&str> = match (claims.get("aud"), claims.get("client_id")) {
            (Some(Value::String(aud)), _) => vec![aud],
            (Some(Value::Array(auds)), _) => auds.iter().filter_map(Value::as_str).collect(),
            (None, Some(Value::String(client_id))) => vec![client_id],
            _ => Vec::new(),
        };
        if !audiences.iter().any(|aud| self.audience.iter().any(|allowed| allowed == aud)) {
            return Err(unauthorized(format!("audience {audiences:?} is not one of {:?}", self.audience)));
        }
        Ok(claims)
    }

    /// Authorizes a request to a route that needs `scopes` (any one of them; none: any valid token), given its
    /// `Authorization` header. The answer is the event's `requestContext.authorizer`.
    pub fn authorize(&self, authorization: Option<&str>, scopes: &[String]) -> Result<Value, Rejection> {
        let header = authorization.map(str::trim).filter(|value| !value.is_empty());
        let header = header.ok_or_else(|| Rejection::Unauthorized("no Authorization header".into()))?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => header,
        };
        let claims = self.verify(token)?;
        let granted: BTreeSet<String> = ["scope", "scp"]
            .iter()
            .filter_map(|name| claims.get(*name))
            .flat_map(|value| match value {
                Value::String(scopes) => scopes.split_whitespace().map(str::to_owned).collect::<Vec<_>>(),
                Value::Array(scopes) => scopes.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                _ => Vec::new(),
            })
            .collect();
        if !scopes.is_empty() && !scopes.iter().any(|scope| granted.contains(scope)) {
            return Err(Rejection::Forbidden(scopes.to_vec()));
        }
        // API Gateway passes every claim as a string.
        let claims: Map<String, Value> = claims
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                (name, Value::String(value))
            })
            .collect();
        let scopes = if scopes.is_empty() { Value::Null } else { json!(granted) };
        Ok(json!({ "jwt": { "claims": claims, "scopes": scopes } }))
    }
}
