//! Verifying Google-signed ID tokens (GOOGLE.md §1, §4): RS256 only, keys from a JWKS URL
//! cached by `kid` per `Cache-Control`, refetched (single flight) on an unknown `kid`, last
//! good set kept when a fetch fails; `iss`, `aud`, `exp` (≤ 60 s leeway) required and checked.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Refetches forced by an unknown `kid` happen at most this often.
const MIN_REFETCH: Duration = Duration::from_secs(10);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm must be RS256")]
    Algorithm,
    #[error("token key id is unknown")]
    UnknownKey,
    #[error("signing keys are unavailable")]
    KeysUnavailable,
    #[error("token rejected: {0}")]
    Invalid(String),
}

impl TokenError {
    /// A fixed word for the reason, for metrics (`docket_token_verification_failures_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::Invalid(why) => match why.as_str() {
                "token has expired" => "expired",
                "token is not valid yet" => "not_yet_valid",
                "token issuer is not accepted" => "issuer",
                "token audience is not accepted" => "audience",
                "token signature is invalid" => "signature",
                "token lacks a required claim" => "missing_claim",
                _ => "claims",
            },
        }
    }
}

/// The cache key of a verified token: SHA-256 over each audience followed by a NUL, then a
/// 0x01 and the token (a JWT is base64url and dots).
fn verified_key(token: &str, audiences: &[String]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for a in audiences {
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update([1]);
    h.update(token.as_bytes());
    h.finalize().into()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Claims docket reads from an ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub email: Option<String>,
    /// Google sends a bool; some older tokens carry the string "true".
    #[serde(default)]
    pub email_verified: Option<serde_json::Value>,
    #[serde(default)]
    pub hd: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl IdClaims {
    pub fn email_verified(&self) -> bool {
        matches!(&self.email_verified, Some(serde_json::Value::Bool(true)))
            || matches!(&self.email_verified, Some(serde_json::Value::String(s)) if s == "true")
    }
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
}

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Instant,
    expires_at: Instant,
}

pub struct JwksCache {
    url: String,
    http: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
    refresh: tokio::sync::Mutex<()>,
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|d| d.trim().strip_prefix("max-age="))
                .find_map(|n| n.trim().parse::<u64>().ok())
        })
        .map(|s| Duration::from_secs(s.clamp(30, 86_400)))
        .unwrap_or(DEFAULT_MAX_AGE)
}

impl JwksCache {
    pub fn new(url: String) -> Self {
        JwksCache {
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current.read().expect("jwks lock").clone()
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        let resp = self.http.get(&self.url).send().await?.error_for_status()?;
        let ttl = max_age(resp.headers());
        let jwks: Jwks = resp.json().await?;
        let mut keys = HashMap::new();
        for k in jwks.keys {
            let usable = k.kty == "RSA"
                && k.alg.as_deref().is_none_or(|a| a == "RS256")
                && k.use_.as_deref().is_none_or(|u| u == "sig");
            if let (true, Some(kid), Some(n), Some(e)) = (usable, k.kid, k.n, k.e) {
                if let Ok(key) = DecodingKey::from_rsa_components(&n, &e) {
                    keys.insert(kid, key);
                }
            }
        }
        let now = Instant::now();
        Ok(KeySet {
            keys,
            fetched_at: now,
            expires_at: now + ttl,
        })
    }

    /// The key for `kid`, fetching the set when stale or when `kid` is new to us.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        let seen = self.snapshot();
        if let Some(set) = &seen {
            if Instant::now() < set.expires_at {
                if let Some(k) = set.keys.get(kid) {
                    return Ok(k.clone());
                }
            }
        }
        let _flight = self.refresh.lock().await;
        let latest = self.snapshot();
        let refreshed_meanwhile = match (&seen, &latest) {
            (Some(a), Some(b)) => a.fetched_at != b.fetched_at,
            (None, Some(_)) => true,
            _ => false,
        };
        if let Some(set) = &latest {
            let fresh = Instant::now() < set.expires_at;
            if let Some(k) = set.keys.get(kid) {
                if fresh || refreshed_meanwhile {
                    return Ok(k.clone());
                }
            } else if refreshed_meanwhile || (fresh && set.fetched_at.elapsed() < MIN_REFETCH) {
                return Err(TokenError::UnknownKey);
            }
        }
        match self.fetch().await {
            Ok(set) => {
                let found = set.keys.get(kid).cloned();
                *self.current.write().expect("jwks lock") = Some(Arc::new(set));
                found.ok_or(TokenError::UnknownKey)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the last good key set");
                match latest.and_then(|s| s.keys.get(kid).cloned()) {
                    Some(k) => Ok(k),
                    None => Err(TokenError::KeysUnavailable),
                }
            }
        }
    }
}

pub struct GoogleVerifier {
    jwks: JwksCache,
    issuers: Vec<String>,
    leeway: u64,
    /// Tokens already verified, by SHA-256 of (audiences, token), until their `exp`: the
    /// add-on sends the same ID token with every request of a session, and an RS256
    /// verification costs more CPU than the rest of a small filing's request handling.
    verified: std::sync::Mutex<HashMap<[u8; 32], IdClaims>>,
}

/// At most this many verified tokens are remembered (about 4 MB).
const MAX_VERIFIED: usize = 10_000;

impl GoogleVerifier {
    pub fn new(jwks_url: String, issuers: Vec<String>, leeway: u64) -> Self {
        GoogleVerifier {
            jwks: JwksCache::new(jwks_url),
            issuers,
            leeway: leeway.min(60),
            verified: Default::default(),
        }
    }

    /// Verifies signature, `iss`, `aud` ∈ `audiences`, `exp`/`nbf`. Callers then check the
    /// claims their use needs (`email_verified`, the service account, …).
    pub async fn verify(&self, token: &str, audiences: &[String]) -> Result<IdClaims, TokenError> {
        if audiences.is_empty() {
            return Err(TokenError::Invalid("no audience is configured".into()));
        }
        let key = verified_key(token, audiences);
        if let Some(claims) = self.remembered(&key) {
            return Ok(claims);
        }
        let claims = self
            .verify_signature_and_claims(token, audiences)
            .await
            .inspect_err(|e| crate::metrics::global().token_refused(e.reason()))?;
        let mut verified = self.verified.lock().expect("verified tokens");
        if verified.len() >= MAX_VERIFIED {
            let now = unix_now();
            verified.retain(|_, c| c.exp.saturating_add(self.leeway) > now);
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
        }
        verified.insert(key, claims.clone());
        Ok(claims)
    }

    /// A token verified before for the same audiences, while it has not expired.
    fn remembered(&self, key: &[u8; 32]) -> Option<IdClaims> {
        let mut verified = self.verified.lock().expect("verified tokens");
        let claims = verified.get(key)?;
        if claims.exp.saturating_add(self.leeway) > unix_now() {
            return Some(claims.clone());
        }
        verified.remove(key);
        None
    }

    async fn verify_signature_and_claims(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<IdClaims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.jwks.key(&kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.algorithms = vec![Algorithm::RS256];
        v.set_issuer(&self.issuers);
        v.set_audience(audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        decode::<IdClaims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind::*;
                TokenError::Invalid(
                    match e.kind() {
                        ExpiredSignature => "token has expired",
                        ImmatureSignature => "token is not valid yet",
                        InvalidIssuer => "token issuer is not accepted",
                        InvalidAudience => "token audience is not accepted",
                        InvalidSignature => "token signature is invalid",
                        MissingRequiredClaim(_) => "token lacks a required claim",
                        _ => "token claims are invalid",
                    }
                    .into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> IdClaims {
        IdClaims {
            iss: "https://accounts.google.com".into(),
            sub: "1".into(),
            exp,
            email: Some("alice@a.test".into()),
            email_verified: None,
            hd: None,
            name: None,
        }
    }

    #[test]
    fn a_remembered_token_is_kept_only_until_it_expires_and_only_for_its_audiences() {
        let v = GoogleVerifier::new("http://127.0.0.1:9/jwks".into(), vec![], 0);
        let aud = vec!["client-a".to_string()];
        let live = verified_key("tok.en.one", &aud);
        let dead = verified_key("tok.en.two", &aud);
        {
            let mut m = v.verified.lock().unwrap();
            m.insert(live, claims(unix_now() + 600));
            m.insert(dead, claims(unix_now() - 1));
        }
        assert!(v.remembered(&live).is_some());
        assert!(
            v.remembered(&dead).is_none(),
            "expired: verified again (and refused)"
        );
        assert!(!v.verified.lock().unwrap().contains_key(&dead));
        assert_ne!(live, verified_key("tok.en.one", &["client-b".to_string()]));
        assert_ne!(live, verified_key("tok.en.onf", &aud));
    }
}
