//! `warden serve`: the long-running host. Opens (or creates) the data directory, starts
//! every module stored as running, and serves the API over HTTPS until SIGTERM or ctrl-c,
//! then stops accepting, lets requests in flight finish, stops the modules cleanly (they
//! stay marked running and start again next time) and closes the store.
//!
//! Configuration comes from `warden.toml` (`--config`, else `./warden.toml` when it
//! exists; every key is documented on [`ServeConfig`] and in docs/configuration.md), and
//! command-line options override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio::sync::watch;

use crate::api::tls::{CertificateSource, CertificateStore};
use crate::api::{self, ApiState};
use crate::auth::{Auth, AuthConfig};
use crate::control::{Control, ControlConfig};
use crate::data_dir::DataDir;
use crate::runtime::{Runtime, RuntimeConfig};

/// Where the API listens unless configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The configuration file, `warden.toml`. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address and port of the HTTPS API (default `127.0.0.1:8443`).
    pub listen: Option<SocketAddr>,
    /// The data directory (default `./warden-data`).
    pub data_dir: Option<PathBuf>,
    /// A database URL instead of SQLite in the data directory (`postgres://…`).
    pub database_url: Option<String>,
    /// TLS certificate.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Device history.
    #[serde(default)]
    pub history: HistoryConfig,
    /// Modules.
    #[serde(default)]
    pub modules: ModulesConfig,
    /// Driver builds.
    #[serde(default)]
    pub builds: BuildsConfig,
    /// Sign-in: token lifetimes, the issuer URL, the password hashing cost, identity
    /// providers.
    #[serde(default)]
    pub auth: AuthConfig,
}

/// `[tls]`: PEM files, or a generated self-signed certificate when both are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub certificate: Option<PathBuf>,
    /// Its private key, PEM.
    pub key: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the self-signed certificate.
    #[serde(default)]
    pub self_signed_names: Vec<String>,
}

/// `[history]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Days of online/offline history kept (default 31).
    pub retention_days: Option<u64>,
}

/// `[builds]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildsConfig {
    /// Build drivers from registered repositories (in `<data dir>/builds`; needs git,
    /// rustup with the pinned toolchains and bubblewrap on the host). Default true.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl Default for BuildsConfig {
    fn default() -> Self {
        BuildsConfig { enabled: true }
    }
}

/// `[modules]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesConfig {
    /// Most modules this host runs (default 10,000).
    pub max: Option<u32>,
    /// Linear memory per module, MiB (default 64).
    pub memory_mib: Option<usize>,
    /// Start modules of drivers no reviewer approved. Development only: logged at every
    /// start. Default false.
    #[serde(default)]
    pub danger_allow_unapproved: bool,
}

impl ServeConfig {
    /// Read `path`; unknown keys and wrong types are errors naming the key.
    pub fn load(path: &Path) -> anyhow::Result<ServeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid configuration", path.display()))
    }
}

/// What `warden serve` was asked for on the command line, over the file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The configuration file given with `--config`.
    pub config: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--danger-no-auth`: every request is an administrator.
    pub danger_no_auth: bool,
    /// `--danger-allow-unapproved`.
    pub danger_allow_unapproved: bool,
}

/// Run the host until SIGTERM or ctrl-c.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let config = match &options.config {
        Some(path) => ServeConfig::load(path)?,
        None if Path::new("warden.toml").is_file() => ServeConfig::load(Path::new("warden.toml"))?,
        None => ServeConfig::default(),
    };
    let data_dir = DataDir::from_options(
        options.data_dir.clone().or(config.data_dir.clone()),
        options.database_url.clone().or(config.database_url.clone()),
    );
    let store = data_dir
        .open_store(true)
        .await
        .context("opening the store")?;
    // The key that signs approvals exists from the first start, so that it can be
    // published (`GET /signing_keys`) before the first approval.
    let signing_key = store
        .signing_key()
        .await
        .context("the approval signing key")?;
    println!(
        "warden: approvals are signed with {}",
        signing_key.public_key().id()
    );
    println!(
        "warden: data directory {} ({})",
        data_dir.root().display(),
        match data_dir.sqlite_file() {
            Some(_) => "SQLite",
            None => "database URL",
        }
    );

    let mut runtime_config = RuntimeConfig::new(data_dir.root().join("components"));
    runtime_config.max_modules = config.modules.max.unwrap_or(10_000);
    let runtime = Runtime::new(runtime_config)?;
    let mut control_config = ControlConfig::default();
    if let Some(days) = config.history.retention_days {
        control_config.history_retention = Duration::from_secs(days.saturating_mul(86_400));
    }
    if let Some(mib) = config.modules.memory_mib {
        control_config.limits.memory_bytes = mib.saturating_mul(1 << 20);
    }
    control_config.danger_allow_unapproved =
        options.danger_allow_unapproved || config.modules.danger_allow_unapproved;
    if control_config.danger_allow_unapproved {
        tracing::warn!("danger_allow_unapproved: modules of unapproved drivers will start");
        eprintln!("warden: WARNING: modules of drivers no reviewer approved will start");
    }
    if config.builds.enabled {
        control_config.build_dir = Some(data_dir.root().join("builds"));
    }
    // The search index: rebuilt from the store in the background when it is missing,
    // damaged or of an older schema (searches meanwhile return what is indexed so far).
    let search_dir = data_dir.root().join("search");
    let search = match crate::search::Search::open(&search_dir) {
        Ok(search) => Some(search),
        Err(error) => {
            tracing::error!(
                "search index in {} unusable, keeping one in memory: {error}",
                search_dir.display()
            );
            crate::search::Search::in_memory().ok()
        }
    };
    let control = Control::with_search(store.clone(), runtime, control_config, search);
    let failures = control.start_running().await?;
    println!(
        "warden: {} modules running, {} could not start",
        control.runtime().module_ids().len(),
        failures.len()
    );

    let source = match (&config.tls.certificate, &config.tls.key) {
        (Some(certificate), Some(key)) => CertificateSource::Files {
            certificate: certificate.clone(),
            key: key.clone(),
        },
        (None, None) => CertificateSource::SelfSigned {
            dir: data_dir.root().join("tls"),
            names: config.tls.self_signed_names.clone(),
        },
        _ => anyhow::bail!("[tls] needs both certificate and key, or neither"),
    };
    let certificates = Arc::new(CertificateStore::load(source, unix_now())?);
    println!(
        "warden: TLS certificate SHA-256 fingerprint {}",
        certificates.fingerprint()
    );
    let tls = Arc::new(api::tls::server_config(Arc::clone(&certificates))?);

    let listen = options
        .listen
        .or(config.listen)
        .map_or_else(|| DEFAULT_LISTEN.parse(), Ok)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    if options.danger_no_auth {
        tracing::warn!("danger_no_auth: every API request is treated as an administrator");
        eprintln!(
            "warden: WARNING: --danger-no-auth: every request is an administrator; never \
             expose this host"
        );
    }
    let address = listener.local_addr()?;
    println!("warden: listening on https://{address}{}", api::BASE);
    let auth = Auth::new(store.clone(), &config.auth, &format!("https://{address}"))
        .context("setting up sign-in")?;
    if !options.danger_no_auth
        && let Some(token) = auth.issue_setup_token().await?
    {
        // The one way in on a new installation: printed for the operator, never logged.
        println!(
            "warden: no administrator exists yet. Create the first one at\n  \
             {issuer}/auth/setup\nwith this one-time setup token (valid until this host stops \
             or it is used):\n  {token}\nor stop the host and run `warden user create --admin`.",
            issuer = auth.issuer(),
            token = token.expose()
        );
    }

    let (stop, stopped) = watch::channel(false);
    let renewal = tokio::spawn(renew_daily(Arc::clone(&certificates)));
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    let pruning = tokio::spawn(prune_hourly(auth.clone()));
    let app = api::app(ApiState {
        control: control.clone(),
        auth,
        danger_no_auth: options.danger_no_auth,
    });
    api::server::serve(listener, tls, app, stopped).await;
    println!("warden: stopping");
    signals.abort();
    renewal.abort();
    pruning.abort();
    control.shutdown().await;
    store.close().await;
    println!("warden: stopped");
    Ok(())
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Delete expired codes, tokens and sessions every hour.
async fn prune_hourly(auth: Auth) {
    let mut timer = tokio::time::interval(Duration::from_secs(60 * 60));
    loop {
        timer.tick().await;
        if let Err(error) = auth.prune(auth.now()).await {
            tracing::warn!("pruning expired sign-in records failed: {error}");
        }
    }
}

async fn renew_daily(certificates: Arc<CertificateStore>) {
    let mut timer = tokio::time::interval(Duration::from_secs(24 * 60 * 60));
    timer.tick().await;
    loop {
        timer.tick().await;
        match certificates.renew_if_due(unix_now()) {
            Ok(true) => println!(
                "warden: renewed the self-signed certificate; SHA-256 fingerprint {}",
                certificates.fingerprint()
            ),
            Ok(false) => {}
            Err(error) => tracing::error!("renewing the TLS certificate failed: {error}"),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
