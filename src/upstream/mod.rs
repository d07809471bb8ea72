//! Toward upstreams: where to dial (resolution, address policy) and which
//! roots verify them.

pub mod addr;
pub mod resolve;

use std::path::Path;

use rustls::pki_types::CertificateDer;

/// PEM of the system's trusted roots (honouring `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), one certificate per block.
pub fn system_roots_pem() -> Result<String, String> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no certificates found".into());
        return Err(format!("cannot load the system's CA roots: {why}"));
    }
    Ok(found.certs.iter().map(pem_encode).collect())
}

/// PEM of the roots that verify upstreams: the system's plus
/// `upstream.extra_ca_file`.
pub fn upstream_roots_pem(extra_ca_file: Option<&Path>) -> Result<String, String> {
    let mut pem = system_roots_pem()?;
    if let Some(path) = extra_ca_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("upstream.extra_ca_file {}: {e}", path.display()))?;
        let certs = crate::tls::ca::parse_pem_certs(&text)
            .map_err(|e| format!("upstream.extra_ca_file {}: {e}", path.display()))?;
        for cert in &certs {
            pem.push_str(&pem_encode(cert));
        }
    }
    Ok(pem)
}

pub fn pem_encode(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::ca::CertificateAuthority::create_files(
            &dir.path().join("ca.pem"),
            &dir.path().join("k.pem"),
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let certs = crate::tls::ca::parse_pem_certs(&text).unwrap();
        let again = crate::tls::ca::parse_pem_certs(&pem_encode(&certs[0])).unwrap();
        assert_eq!(certs, again);
    }
}
