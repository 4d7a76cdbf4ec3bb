//! Local accounts for the admin console and admin API: sessions, personal access tokens,
//! passwords, TOTP, sign-in protection, login audit, admin-mediated resets.

pub mod login;
pub mod password;
pub mod reset;
pub mod session;
pub mod tokens;
pub mod totp;

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::AdminConfig;

/// 256 random bits, base64url without padding.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// How secrets (session tokens, access tokens, reset links, recovery codes) are stored:
/// SHA-256 hex. They carry 128+ random bits, so a fast hash is right here.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time string equality (CSRF tokens and the like).
pub fn same(a: &str, b: &str) -> bool {
    use subtle_eq::ct_eq;
    ct_eq(a.as_bytes(), b.as_bytes())
}

mod subtle_eq {
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The client's address: the socket peer, unless the peer is a configured trusted proxy,
/// in which case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
/// A spoofed header from anyone else is ignored.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, cfg: &AdminConfig) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let trusted = |ip: &IpAddr| cfg.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer_ip) {
        return peer_ip;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else { return peer_ip };
        for part in v.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip.to_canonical()),
                Err(_) => return peer_ip,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted(ip))
        .unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(proxies: &[&str]) -> AdminConfig {
        AdminConfig {
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            ..AdminConfig::default()
        }
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn spoofed_forwarded_for_from_untrusted_peer_is_ignored() {
        let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        assert_eq!(
            client_ip(peer, &xff("1.2.3.4"), &cfg(&[])).to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            client_ip(peer, &xff("1.2.3.4"), &cfg(&["10.0.0.0/8"])).to_string(),
            "203.0.113.9"
        );
    }

    #[test]
    fn trusted_proxy_forwarded_for_is_used_right_to_left() {
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let c = cfg(&["10.0.0.0/8"]);
        // The client prepended a fake hop; the proxy appended the real one.
        assert_eq!(
            client_ip(peer, &xff("6.6.6.6, 198.51.100.7"), &c).to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            client_ip(peer, &xff("198.51.100.7, 10.0.0.3"), &c).to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &c).to_string(),
            "10.0.0.2"
        );
        assert_eq!(client_ip(peer, &xff("garbage"), &c).to_string(), "10.0.0.2");
    }

    #[test]
    fn secrets_are_long_and_hashed() {
        let s = random_secret();
        assert_eq!(s.len(), 43);
        assert_ne!(random_secret(), s);
        assert_eq!(hash_secret(&s).len(), 64);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
