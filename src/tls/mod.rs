//! TLS toward clients: the CA, leaves minted per intercepted host, and a
//! bounded cache so a host costs one mint per validity period however many
//! connections arrive at once.

pub mod ca;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

pub use ca::{CaError, CertificateAuthority};

/// A cached leaf and when it must be minted again.
struct Entry {
    cell: Arc<tokio::sync::OnceCell<Arc<ServerConfig>>>,
    refresh_at: Instant,
}

/// Host -> server config holding the host's leaf. Bounded (least recently
/// used entries go first) and entries are re-minted after half the leaf's
/// validity, so a served leaf always has days left.
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    entries: Mutex<lru::LruCache<String, Entry>>,
    ttl: Duration,
}

impl LeafCache {
    pub fn new(ca: Arc<CertificateAuthority>, capacity: usize) -> LeafCache {
        let ttl = ca.leaf_validity() / 2;
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        LeafCache {
            ca,
            entries: Mutex::new(lru::LruCache::new(capacity)),
            ttl,
        }
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The server config for `host`; concurrent first callers share one mint.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match entries.get(host) {
                Some(entry) if entry.refresh_at > now => entry.cell.clone(),
                _ => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    entries.put(
                        host.to_string(),
                        Entry {
                            cell: cell.clone(),
                            refresh_at: now + self.ttl,
                        },
                    );
                    cell
                }
            }
        };
        let config = cell
            .get_or_try_init(|| async {
                let key = self.ca.mint_leaf(host)?;
                Ok::<_, CaError>(host_server_config(host, key))
            })
            .await?;
        Ok(config.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A server config that serves `key` for `host` only; shared by every
/// connection to that host (its session cache and tickets with it).
#[allow(clippy::expect_used)] // a constant: ring supports both versions
fn host_server_config(host: &str, key: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    let resolver = HostCert {
        host: host.to_string(),
        key,
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Per connection: the host's config with a resolver that records the SNI the
/// client sent, so that a mismatch is refused with a reason in the log.
pub fn connection_config(host_config: &Arc<ServerConfig>) -> (Arc<ServerConfig>, SniWitness) {
    let witness = SniWitness::default();
    let mut config = (**host_config).clone();
    config.cert_resolver = Arc::new(WitnessedResolver {
        inner: host_config.cert_resolver.clone(),
        witness: witness.clone(),
    });
    (Arc::new(config), witness)
}

/// What the client's hello named, for the log line of a refused handshake.
#[derive(Clone, Default, Debug)]
pub struct SniWitness(Arc<OnceLock<Option<String>>>);

impl SniWitness {
    /// `Some(sni)` when the client named a host other than the CONNECT host.
    pub fn mismatch(&self) -> Option<String> {
        self.0.get().cloned().flatten()
    }
}

#[derive(Debug)]
struct HostCert {
    host: String,
    key: Arc<CertifiedKey>,
}

impl ResolvesServerCert for HostCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(sni) if !sni_matches(sni, &self.host) => None,
            _ => Some(self.key.clone()),
        }
    }
}

#[derive(Debug)]
struct WitnessedResolver {
    inner: Arc<dyn ResolvesServerCert>,
    witness: SniWitness,
}

impl ResolvesServerCert for WitnessedResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_string);
        let key = self.inner.resolve(hello);
        if key.is_none() {
            let _ = self.witness.0.set(sni);
        }
        key
    }
}

fn sni_matches(sni: &str, host: &str) -> bool {
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    sni.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> (tempfile::TempDir, LeafCache) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(
            &dir.path().join("ca.pem"),
            &dir.path().join("ca-key.pem"),
            true,
            ca::DEFAULT_LEAF_VALIDITY,
        )
        .unwrap();
        (dir, LeafCache::new(Arc::new(ca), capacity))
    }

    #[tokio::test]
    async fn concurrent_first_requests_mint_once() {
        let (_dir, cache) = cache(16);
        let cache = Arc::new(cache);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.server_config("api.openai.com").await.unwrap() })
            })
            .collect();
        let mut configs = Vec::new();
        for t in tasks {
            configs.push(t.await.unwrap());
        }
        assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let (_dir, cache) = cache(4);
        for i in 0..10 {
            cache.server_config(&format!("h{i}.example")).await.unwrap();
        }
        assert_eq!(cache.len(), 4);
    }
}
