//! Built-in TLS with rustls (`tls.cert_file`, `tls.key_file`).
//!
//! - **Protocols and suites.** TLS 1.3 and TLS 1.2 only, with rustls' *ring* provider, whose
//!   suites are all AEAD with forward secrecy: TLS 1.3's AES-256-GCM, AES-128-GCM and
//!   ChaCha20-Poly1305, and TLS 1.2's ECDHE-ECDSA/ECDHE-RSA with the same three ciphers
//!   (RFC 8446; RFC 5289 and RFC 7905 for TLS 1.2). No CBC, no RSA key exchange, no
//!   TLS 1.0/1.1 (RFC 8996 deprecates them). ALPN offers `http/1.1`.
//! - **Certificate reload.** [`CertStore`] answers every handshake with the certificate it
//!   holds; it reloads both files when either one's modification time changes (checked every
//!   `tls.reload_interval_secs`, and at once on SIGHUP). A pair that does not load (a
//!   half-written file, a key that does not match) is logged and the old certificate kept,
//!   so a renewal in progress never takes the server down.
//! - **Redirect.** `tls.redirect_http_listen` adds a plain-HTTP listener whose every answer
//!   is a 308 to the same path on `https://`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The acceptor for `docket serve`, and the store behind it (for reloading).
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub store: Arc<CertStore>,
}

/// Loads the configured certificate and key; an error names the file and what is wrong.
pub fn load(cfg: &TlsConfig) -> anyhow::Result<Tls> {
    let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
        anyhow::bail!("TLS needs both `tls.cert_file` and `tls.key_file`");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let store = Arc::new(CertStore::open(cert, key, provider.clone())?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        store,
    })
}

/// The served certificate, reloaded from its files when they change.
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of (cert, key) when last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

impl CertStore {
    fn open(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> anyhow::Result<CertStore> {
        let stamps = (modified(cert), modified(key));
        let current = certified_key(cert, key, &provider)?;
        Ok(CertStore {
            cert_file: cert.to_path_buf(),
            key_file: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(current)),
            loaded: Mutex::new(stamps),
        })
    }

    /// Reloads the pair when either file's modification time changed. `Ok(true)`: a new
    /// certificate is served from the next handshake; `Err`: the files did not load and the
    /// old certificate stays.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let mut loaded = self.loaded.lock().expect("certificate stamps");
        if *loaded == stamps {
            return Ok(false);
        }
        let fresh = certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        *self.current.write().expect("certificate lock") = Arc::new(fresh);
        *loaded = stamps;
        Ok(true)
    }

    /// Checks the files every `every` and on SIGHUP, for as long as the process runs.
    pub fn spawn_reloader(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => drop(h.recv().await),
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                tokio::select! {
                    _ = tick.tick() => {}
                    () = hangup => {}
                }
                match self.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(file = %self.cert_file.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "TLS certificate not reloaded; the previous one is still served"
                    ),
                }
            }
        });
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The chain and key from two PEM files, checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "cannot read a PEM certificate chain from {}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {}",
            key.display(),
            cert.display()
        )
    })
}

/// Serves 308 redirects to `https://<host><path>` on `listener` until `shutdown`, through
/// docket's own accept loop (its head timeout and problem answers). The `Host` must be a
/// plain host name or address (no user info, not empty); anything else is a 400.
pub async fn redirect_http(
    listener: tokio::net::TcpListener,
    https_port: u16,
    limits: crate::http::serve::ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{header, HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        let Some(host) = redirect_host(&headers) else {
            let e = crate::error::AppError::bad_request(
                "invalid-host",
                "a Host header naming this server is required",
            );
            return e.into_response();
        };
        let port = match https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        let target = format!("https://{host}{port}{path}");
        (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, target)]).into_response()
    });
    crate::http::serve::serve(listener, app, limits, None, shutdown).await
}

/// The host part of `Host` when it is a plain DNS name or IP address (RFC 9110 §7.2).
fn redirect_host(headers: &axum::http::HeaderMap) -> Option<String> {
    let raw = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    let authority: axum::http::uri::Authority = raw.parse().ok()?;
    let host = authority.host();
    let plain = !raw.contains('@')
        && !host.is_empty()
        && host.len() <= 253
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    plain.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> (String, String) {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn served(store: &CertStore) -> CertificateDer<'static> {
        store.current.read().unwrap().cert[0].clone()
    }

    /// A renewal written file by file: while the certificate and key do not match, the old
    /// pair is still served; once they match, the new one is.
    #[test]
    fn a_pair_that_does_not_load_keeps_the_served_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (c1, k1) = leaf();
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let store = CertStore::open(&cert, &key, provider).unwrap();
        let first = served(&store);
        assert!(!store.reload_if_changed().unwrap(), "nothing changed");
        let (c2, k2) = leaf();
        std::fs::write(&cert, &c2).unwrap();
        let err = store.reload_if_changed().unwrap_err();
        assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
        assert_eq!(served(&store), first, "the old pair is still served");
        std::fs::write(&key, &k2).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert_ne!(served(&store), first);
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert_ne!(served(&store), first, "the renewed pair stays");
    }
}
