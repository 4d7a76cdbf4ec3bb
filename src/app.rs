//! `Application::build(config, mode)` → a bound server with `port()` and `run_until_stopped()`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;

use crate::auth::google::GoogleVerifier;
use crate::config::{Config, GOOGLE_JWKS_URL};
use crate::dev::{self, TokenIssuer, DEV_CLIENT_ID, DEV_ISSUER};
use crate::http::{self, AppState, StateInner};
use crate::storage::crypto::Key;
use crate::tenancy::Catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: explicit master key and Google settings required.
    Serve,
    /// Laptop: loopback only, dev issuer, generated master key, demo data.
    Dev,
}

/// The key-encryption key: configured, else (dev and operator CLI on a dev data dir) the
/// dev key file, generated when `generate` is set.
pub fn master_key(config: &Config, mode: Mode, generate: bool) -> anyhow::Result<Key> {
    if let Some(k) = config.master_key_bytes()? {
        return Ok(Key::from_bytes(&k));
    }
    let dev_file = config.data_dir.join("dev").join("master.key");
    if mode == Mode::Dev {
        if !dev_file.exists() && generate {
            let (_, raw) = Key::generate();
            dev::write_private(&dev_file, hex::encode(raw.as_ref()).as_bytes())?;
        }
        if dev_file.exists() {
            let text = std::fs::read_to_string(&dev_file)?;
            return Ok(Key::from_bytes(&crate::config::parse_master_key(&text)?));
        }
    }
    bail!("invalid configuration: `master_key` is missing: set DOCKET_MASTER_KEY or DOCKET_MASTER_KEY_FILE (32 bytes, hex or base64)")
}

pub async fn open_catalog(config: &Config, key: Key) -> anyhow::Result<Catalog> {
    let storage = crate::storage::Storage::from_config(&config.storage)?;
    Ok(Catalog::open(&config.data_dir, &config.database, key)
        .await?
        .with_storage(storage))
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// With `tls.*`: the certificate, loaded at start (a bad pair stops the start).
    tls: Option<http::tls::Tls>,
    /// With `tls.redirect_http_listen`: the plain-HTTP listener that redirects to HTTPS.
    redirect: Option<TcpListener>,
    /// `GET /metrics` (`metrics.listen`), unless `off`.
    metrics: Option<TcpListener>,
    /// SQLite: the data dir's serve lock, held while serving (no in-place restore meanwhile).
    _serve_lock: Option<std::fs::File>,
}

impl Application {
    pub async fn build(mut config: Config, mode: Mode) -> anyhow::Result<Application> {
        if mode == Mode::Dev && !config.listen.ip().is_loopback() {
            bail!("invalid configuration: `listen` (DOCKET_LISTEN): dev mode binds to loopback only, not {}", config.listen);
        }
        if mode == Mode::Serve && config.google.client_ids.is_empty() {
            bail!("invalid configuration: `google.client_ids` (DOCKET_GOOGLE__CLIENT_IDS) is required: the OAuth client id(s) your add-on's tokens are issued for");
        }
        let key = master_key(&config, mode, true)?;
        if mode == Mode::Dev && config.tls.enabled() {
            bail!(
                "`docket dev` serves plain HTTP on loopback; TLS (`tls.*`) is for `docket serve`"
            );
        }
        let tls = match config.tls.enabled() {
            true => Some(http::tls::load(&config.tls).context("invalid TLS configuration")?),
            false => None,
        };
        let redirect = match config.tls.redirect_http_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (`tls.redirect_http_listen`)")
            })?),
            None => None,
        };
        let metrics = match config.metrics.address()? {
            // `docket dev` must not collide with a server (or another dev) on the default.
            Some(_) if mode == Mode::Dev
                && config.metrics.listen == crate::config::DEFAULT_METRICS_LISTEN =>
            {
                Some(TcpListener::bind("127.0.0.1:0").await?)
            }
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for metrics (`metrics.listen`, DOCKET_METRICS__LISTEN; `off` turns metrics off)")
            })?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (`listen`, DOCKET_LISTEN)",
                config.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let dev = if mode == Mode::Dev {
            let issuer = TokenIssuer::load_or_create(
                &config.data_dir.join("dev").join("issuer.pem"),
                DEV_ISSUER,
            )?;
            if config.google.jwks_url.is_none() {
                config.google.jwks_url = Some(format!("http://{addr}/dev/jwks.json"));
            }
            if config.google.issuers.is_none() {
                config.google.issuers = Some(vec![DEV_ISSUER.to_string()]);
            }
            if config.google.client_ids.is_empty() {
                config.google.client_ids = vec![DEV_CLIENT_ID.to_string()];
            }
            let hosts = dev::dev_hosts(addr, config.addon.public_url.as_deref());
            let a = &mut config.addon;
            a.public_url.get_or_insert_with(|| format!("http://{addr}"));
            a.service_account
                .get_or_insert_with(|| dev::DEV_ADDON_SERVICE_ACCOUNT.to_string());
            a.oauth_client_id
                .get_or_insert_with(|| DEV_CLIENT_ID.to_string());
            if a.gmail_api_url == crate::config::AddonConfig::default().gmail_api_url {
                a.gmail_api_url = format!("http://{addr}/dev/gmail/");
            }
            if a.endpoint_audiences.is_empty() {
                // Dev system tokens carry one audience for every add-on endpoint.
                a.endpoint_audiences = vec![format!("http://{addr}/addon")];
            }
            let mailbox = config.data_dir.join("dev").join("mail");
            crate::tenancy::create_private_dir(&mailbox)?;
            for (name, body) in dev::sample_mailbox() {
                let path = mailbox.join(name);
                if !path.exists() {
                    std::fs::write(path, body)?;
                }
            }
            Some(Arc::new(dev::DevRuntime::new(issuer, mailbox, hosts)))
        } else {
            None
        };
        let catalog = open_catalog(&config, key).await?;
        let serve_lock = match catalog.backend() {
            crate::tenancy::db::Backend::Sqlite => {
                Some(crate::tenancy::lock_serving(catalog.data_dir())?)
            }
            crate::tenancy::db::Backend::Postgres => None,
        };
        let verifier = GoogleVerifier::new(
            config
                .google
                .jwks_url
                .clone()
                .unwrap_or_else(|| GOOGLE_JWKS_URL.to_string()),
            config.issuers(),
            config.google.leeway_secs,
        );
        let gmail = crate::gmail::GmailClient::new(
            &config.addon.gmail_api_url,
            std::time::Duration::from_secs(config.addon.gmail_timeout_secs),
            config.limits.max_message_bytes,
        );
        let state = AppState::new(StateInner {
            gmail,
            budget: crate::budget::Budget::new(config.limits.max_bytes_in_flight),
            config,
            catalog: Arc::new(catalog),
            verifier,
            dev,
        });
        Ok(Application {
            listener,
            state,
            tls,
            redirect,
            metrics,
            _serve_lock: serve_lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }
    /// The metrics listener's address (`metrics.listen`), unless `off`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }
    /// The plain-HTTP redirect listener's address (`tls.redirect_http_listen`), if any.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
    }
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until SIGTERM or Ctrl-C, finishing requests in flight.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run(shutdown_signal()).await
    }

    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let catalog = self.state.catalog.clone();
        let m = &self.state.config.maintenance;
        if m.sweep_interval_minutes > 0 {
            crate::maintenance::spawn_schedule(
                catalog.clone(),
                std::time::Duration::from_secs(m.sweep_interval_minutes * 60),
                std::time::Duration::from_secs(m.sweep_grace_minutes * 60),
            );
        }
        crate::audit::anchor::spawn_schedule(catalog.clone());
        crate::retention::spawn_schedule(
            catalog.clone(),
            std::time::Duration::from_secs(24 * 3600),
        );
        if m.purge_interval_minutes > 0 {
            crate::purge::spawn_schedule(
                catalog.clone(),
                std::time::Duration::from_secs(m.purge_interval_minutes * 60),
            );
        }
        let limits = &self.state.config.limits;
        let timeouts = http::serve::ConnectionLimits {
            header_read: std::time::Duration::from_secs(limits.header_read_timeout_secs),
            send_stall: std::time::Duration::from_secs(limits.send_stall_timeout_secs),
            max_connections: limits.max_connections,
        };
        http::serve::make_room_for(limits.max_connections);
        let reload_every = self.state.config.tls.reload_interval_secs;
        let acceptor = self.tls.map(|tls| {
            tls.store
                .spawn_reloader(std::time::Duration::from_secs(reload_every));
            tls.acceptor
        });
        let shutdown = futures_util::FutureExt::shared(Box::pin(shutdown));
        if let Some(metrics) = self.metrics {
            tracing::info!(addr = %metrics.local_addr()?, "metrics at /metrics");
            let state = self.state.clone();
            tokio::spawn(crate::metrics::serve(metrics, state, shutdown.clone()));
        }
        if let Some(redirect) = self.redirect {
            let https_port = self.listener.local_addr()?.port();
            tokio::spawn(http::tls::redirect_http(
                redirect,
                https_port,
                timeouts,
                shutdown.clone(),
            ));
        }
        let app = http::router(self.state);
        http::serve::serve(self.listener, app, timeouts, acceptor, shutdown).await?;
        catalog.close().await;
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
