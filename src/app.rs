//! Wiring: from a validated config to running pingora services.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{info, warn};
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;

use crate::admin::Admin;
use crate::audit::AuditLog;
use crate::config::{Config, ConfigError};
use crate::listener::FrontEnd;
use crate::policy::load::PolicyFiles;
use crate::proxy::forward::Forwarder;
use crate::proxy::EgressProxy;
use crate::route::targets_from_config;
use crate::source::{self, Rejection, ReloadHandle, Reloader, Source};
use crate::state::{Lifecycle, Parts, Recorders};
use crate::tls::{ca, CaError, CertificateAuthority, LeafCache};

/// Why ecluse cannot start; printed as is, then exit 1.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    #[error("{0}")]
    Policy(#[from] Rejection),
    #[error("{0}")]
    Setup(String),
}

pub const DEFAULT_LEAF_CACHE: usize = 4096;

pub fn load_ca(config: &Config) -> Result<CertificateAuthority, CaError> {
    // A configured CA (a mounted secret) is never created: a missing file
    // there is a deployment error, not a first start.
    let create = config.ca.cert_file.is_none();
    CertificateAuthority::load_or_create_with(
        &config.ca_cert_path(),
        &config.ca_key_path(),
        create,
        config.ca.leaf_validity.unwrap_or(ca::DEFAULT_LEAF_VALIDITY),
        config.ca.allow_group_readable_key && config.ca.key_file.is_some(),
    )
}

/// Runs a future on a short-lived runtime, before pingora's own exist.
#[allow(clippy::expect_used)] // building a runtime fails only without OS resources, at start
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime can be built")
        .block_on(future)
}

/// The policy files the configured source holds now (for the `policy`
/// commands), with their revision id and source, read as at start.
pub fn read_policy(config: &Config) -> Result<(PolicyFiles, String, String), String> {
    let source = Source::from_config(config);
    match block_on(crate::source::read_candidate(&source, None, |_| false)) {
        Ok(Some(candidate)) => Ok((candidate.files, candidate.revision, source.describe())),
        Ok(None) => Err(format!("{} gave no revision", source.describe())),
        Err(rejection) => Err(rejection.to_string()),
    }
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// reader never sees half a bundle.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The PEM bundle apps trust: the system's public roots plus ecluse's CA.
pub fn app_bundle(ca: &CertificateAuthority) -> Result<String, String> {
    let mut bundle = crate::upstream::system_roots_pem()?;
    bundle.push_str(ca.cert_pem());
    Ok(bundle)
}

/// Everything that must hold before listening: state dir, CA, policy,
/// upstream roots. Returns the shared parts and the roots file path.
pub fn prepare(config: Config) -> Result<(Parts, PathBuf, Source), StartError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        StartError::Setup(format!(
            "cannot create state_dir {}: {e}",
            config.state_dir.display()
        ))
    })?;
    let ca = load_ca(&config)?;
    info!(
        "CA ready: {} (key {})",
        config.ca_cert_path().display(),
        config.ca_key_path().display()
    );
    if let Some(out) = &config.ca.bundle_out {
        let bundle = app_bundle(&ca).map_err(StartError::Setup)?;
        write_atomically(out, bundle.as_bytes()).map_err(StartError::Setup)?;
        info!("wrote the app CA bundle to {}", out.display());
    }
    let roots = crate::upstream::upstream_roots_pem(config.upstream.extra_ca_file.as_deref())
        .map_err(StartError::Setup)?;
    let roots_path = config.state_dir.join("upstream-roots.pem");
    write_atomically(&roots_path, roots.as_bytes()).map_err(StartError::Setup)?;
    let targets =
        targets_from_config(&config.targets).map_err(|p| StartError::Setup(p.join("; ")))?;
    for problem in crate::route::check_key_files(&targets) {
        warn!("{problem}: reroutes to this target will get 503 until the key is readable");
    }
    let source = Source::from_config(&config);
    let (snapshot, status) = block_on(source::initial_snapshot(&config, &targets, &source))?;
    info!(
        "policy revision {} from {}",
        snapshot.revision, snapshot.source
    );
    let limits = crate::audit::QueueLimits {
        capacity: config.audit.queue_records.max(1),
        on_full: config.audit.on_full,
        max_wait: config.audit.max_wait,
    };
    let audit = AuditLog::open_with(config.audit.file.as_deref(), limits).map_err(|e| {
        StartError::Setup(format!(
            "cannot open the audit log {}: {e}",
            config
                .audit
                .file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "stdout".into())
        ))
    })?;
    let telemetry = crate::telemetry::Telemetry::init(&config.telemetry)
        .map_err(|e| StartError::Setup(format!("telemetry: {e}")))?;
    if telemetry.enabled() {
        info!("exporting traces over OTLP");
    }
    let cache_size = config.ca.leaf_cache_size.unwrap_or(DEFAULT_LEAF_CACHE);
    let leaves = LeafCache::new(Arc::new(ca), cache_size);
    Ok((
        Parts::new(config, snapshot, leaves, targets, audit, telemetry, status),
        roots_path,
        source,
    ))
}

/// Runs until SIGTERM (drain, then exit) or SIGINT (exit now).
pub fn run(config: Config) -> Result<(), StartError> {
    let (parts, roots_path, source) = prepare(config)?;
    let Parts {
        gate,
        recorders,
        lifecycle,
    } = parts;
    let config = &gate.config;

    let threads = if config.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        config.threads
    };
    let conf = ServerConf {
        threads,
        // The drain happens in `Drain` below, which returns only when
        // in-flight calls are done or the grace is spent; pingora then stops.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    let mut options = ConnectorOptions::from_server_conf(&conf);
    options.ca_file = Some(roots_path.to_string_lossy().into_owned());
    let forwarder = Forwarder::new(
        Connector::new(Some(options)),
        conf.upstream_keepalive_pool_size,
        config.timeouts.clone(),
    );
    let proxy = pingora_proxy::http_proxy(
        &conf,
        EgressProxy::new(
            gate.clone(),
            recorders.clone(),
            lifecycle.clone(),
            forwarder,
        ),
    );
    let front_end = FrontEnd::new(gate.clone(), recorders.clone(), proxy);
    let transparent = (!config.transparent_listen.is_empty()).then(|| {
        let mut service = Service::new(
            "ecluse transparent".to_string(),
            front_end.transparent(config.transparent_listen.clone()),
        );
        for listen in &config.transparent_listen {
            service.add_listener(
                pingora_core::listeners::ListenerConfig::tcp(listen.to_string())
                    .l4_buffer(pingora_core::listeners::L4BufferSettings::new(0, 1460)),
            );
        }
        service
    });
    let mut front = Service::new("ecluse proxy".to_string(), front_end);
    // No L4 read buffer: every reader above the socket (the CONNECT head
    // reader, rustls, pingora's HTTP session, the tunnel relay) buffers on
    // its own, so pingora's default 64 KiB one per connection would only
    // copy bytes twice and dominate an idle connection's memory.
    front.add_listener(
        pingora_core::listeners::ListenerConfig::tcp(config.listen.to_string())
            .l4_buffer(pingora_core::listeners::L4BufferSettings::new(0, 1460)),
    );
    let mut admin = Service::new(
        "ecluse admin".to_string(),
        Admin::new(gate.clone(), recorders.clone(), lifecycle.clone()),
    );
    admin.add_tcp(&config.admin_listen.to_string());
    admin.threads = Some(1);
    server.add_service(front);
    if let Some(transparent) = transparent {
        let on: Vec<String> = config
            .transparent_listen
            .iter()
            .map(|a| a.to_string())
            .collect();
        info!("transparent listener on {}", on.join(", "));
        server.add_service(transparent);
    }
    server.add_service(admin);
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(8);
    let _ = lifecycle.reload.set(ReloadHandle(reload_tx));
    let reloader = Arc::new(Reloader::new(
        gate.clone(),
        lifecycle.clone(),
        recorders.clone(),
        source,
        reload_rx,
    ));
    server.add_service(pingora_core::services::background::background_service(
        "ecluse policy reloader",
        source::ReloadService(reloader),
    ));

    info!(
        "ecluse listening on {} (admin {}), mode {:?}",
        config.listen, config.admin_listen, config.mode
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain {
            grace: config.timeouts.shutdown_grace,
            lifecycle: lifecycle.clone(),
            recorders: recorders.clone(),
        }),
    });
    recorders.audit.close();
    recorders.telemetry.shutdown();
    info!("ecluse stopped");
    Ok(())
}

/// SIGTERM: stop being ready, let in-flight calls and tunnels finish (up to
/// `timeouts.shutdown_grace`), then shut down. SIGINT: shut down now.
struct Drain {
    grace: Duration,
    lifecycle: Arc<Lifecycle>,
    recorders: Arc<Recorders>,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            warn!("cannot install signal handlers; SIGTERM will stop ecluse without draining");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {
                info!("SIGINT: stopping now");
                return ShutdownSignal::FastShutdown;
            }
        }
        let grace = self.grace;
        info!("SIGTERM: draining for up to {grace:?}");
        self.lifecycle.draining.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + grace;
        let metrics = &self.recorders.metrics;
        loop {
            let busy = metrics.requests_active.load(Ordering::Relaxed)
                + metrics.tunnels_active.load(Ordering::Relaxed);
            if busy <= 0 {
                info!("drained: no call in flight");
                break;
            }
            if Instant::now() >= deadline {
                warn!("grace period over with {busy} calls or tunnels still open; closing them");
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}
