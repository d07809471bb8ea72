//! The test PKI: a CA for mock upstreams, distinct from ecluse's own, and
//! server configs it signs. One file, included by the tests' harness and by
//! the load bench (`#[path]`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA for mock upstreams, distinct from ecluse's own.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "ecluse test upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_path, cert.pem()).unwrap();
        TestPki {
            dir,
            ca_path,
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS server config for `names`, signed by this CA, offering h2 and
    /// http/1.1.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        self.server_config_with_alpn(names, &[b"h2", b"http/1.1"])
    }

    /// The same, offering the protocols given.
    pub fn server_config_with_alpn(
        &self,
        names: &[&str],
        alpn: &[&[u8]],
    ) -> Arc<rustls::ServerConfig> {
        self.leaf_config(names, alpn, |_| {})
    }

    /// A server config for `names` signed by this CA, whose validity ended
    /// years ago.
    pub fn expired_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        self.leaf_config(names, &[b"h2", b"http/1.1"], |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    /// A server leaf for `names` signed by this CA, `adjust`ed before
    /// signing.
    fn leaf_config(
        &self,
        names: &[&str],
        alpn: &[&[u8]],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        server_config_for(cert.der().clone(), key, alpn)
    }

    /// A self-signed server config, trusted by nobody.
    pub fn self_signed_config(names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        server_config_for(cert.der().clone(), key, &[b"h2", b"http/1.1"])
    }
}

fn server_config_for(
    cert: CertificateDer<'static>,
    key: KeyPair,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
