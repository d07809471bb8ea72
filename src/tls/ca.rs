//! The CA that apps trust: created on first start or loaded from files, and the
//! leaves it mints for intercepted hosts.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// A problem with the CA or with minting. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file can be read by other users: the CA would be theirs too.
    #[error(
        "CA key file {path} is readable by group or others (mode {mode:04o}); \
         run `chmod 600 {path}` (for a Kubernetes secret mounted with an fsGroup, set \
         ca.allow_group_readable_key)"
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    /// Only one of the two files exists.
    #[error("found {present} but not {missing}; give both or neither")]
    HalfPresent { present: PathBuf, missing: PathBuf },
    /// The certificate or key is not usable.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Building a certificate failed.
    #[error("minting a certificate for {subject} failed: {reason}")]
    Mint { subject: String, reason: String },
}

/// The loaded CA: its certificate chain (PEM and DER) and its issuing key.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    chain_der: Vec<CertificateDer<'static>>,
    cert_pem: String,
    leaf_validity: Duration,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The issuing key stays out of every Debug output.
        f.debug_struct("CertificateAuthority")
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(3 * 86_400);
/// Leaves start an hour in the past so that a client whose clock lags a
/// little does not reject them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(3600);

impl CertificateAuthority {
    /// Loads the CA from `cert_path`/`key_path`, creating both when neither
    /// exists and `create` is set.
    pub fn load_or_create(
        cert_path: &Path,
        key_path: &Path,
        create: bool,
        leaf_validity: Duration,
    ) -> Result<CertificateAuthority, CaError> {
        Self::load_or_create_with(cert_path, key_path, create, leaf_validity, false)
    }

    /// As [`Self::load_or_create`]; `allow_group_readable` accepts a key
    /// the file's group may read (a Kubernetes secret mounted with an
    /// `fsGroup`), never one others may read.
    pub fn load_or_create_with(
        cert_path: &Path,
        key_path: &Path,
        create: bool,
        leaf_validity: Duration,
        allow_group_readable: bool,
    ) -> Result<CertificateAuthority, CaError> {
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                check_key_mode(key_path, allow_group_readable)?;
                Self::load_checked(cert_path, key_path, leaf_validity)
            }
            (false, false) if create => {
                Self::create_files(cert_path, key_path)?;
                Self::load(cert_path, key_path, leaf_validity)
            }
            (false, false) => Err(CaError::Invalid {
                path: cert_path.to_owned(),
                reason: "CA certificate not found".to_string(),
            }),
            (true, false) => Err(CaError::HalfPresent {
                present: cert_path.to_owned(),
                missing: key_path.to_owned(),
            }),
            (false, true) => Err(CaError::HalfPresent {
                present: key_path.to_owned(),
                missing: cert_path.to_owned(),
            }),
        }
    }

    /// Writes a new ECDSA P-256 CA: the key with mode 0600, created exclusively
    /// so an existing key is never overwritten.
    pub fn create_files(cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Mint {
            subject: "CA".into(),
            reason: e.to_string(),
        })?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "ecluse");
        name.push(
            DnType::CommonName,
            format!("ecluse egress CA {}", random_hex(4)),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|e| CaError::Mint {
            subject: "CA".into(),
            reason: e.to_string(),
        })?;

        for path in [cert_path, key_path] {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(|source| CaError::Io {
                    action: "creating directory",
                    path: dir.to_owned(),
                    source,
                })?;
            }
        }
        write_private(key_path, key.serialize_pem().as_bytes())?;
        fs::write(cert_path, cert.pem()).map_err(|source| CaError::Io {
            action: "writing",
            path: cert_path.to_owned(),
            source,
        })?;
        Ok(())
    }

    /// Loads the CA; the key's mode is checked by the caller
    /// ([`Self::load_or_create_with`]) or here with the strict rule.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        leaf_validity: Duration,
    ) -> Result<CertificateAuthority, CaError> {
        check_key_mode(key_path, true)?;
        Self::load_checked(cert_path, key_path, leaf_validity)
    }

    fn load_checked(
        cert_path: &Path,
        key_path: &Path,
        leaf_validity: Duration,
    ) -> Result<CertificateAuthority, CaError> {
        let key_pem = fs::read_to_string(key_path).map_err(|source| CaError::Io {
            action: "reading",
            path: key_path.to_owned(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: key_path.to_owned(),
            reason: format!(
                "not a usable private key ({e}); ecluse reads PKCS#8 PEM \
                 (cert-manager: privateKey.encoding: PKCS8)"
            ),
        })?;
        let cert_pem = fs::read_to_string(cert_path).map_err(|source| CaError::Io {
            action: "reading",
            path: cert_path.to_owned(),
            source,
        })?;
        let chain_der = parse_pem_certs(&cert_pem).map_err(|reason| CaError::Invalid {
            path: cert_path.to_owned(),
            reason,
        })?;
        let issuer =
            Issuer::from_ca_cert_der(&chain_der[0], key).map_err(|e| CaError::Invalid {
                path: cert_path.to_owned(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        let ca = CertificateAuthority {
            issuer,
            chain_der,
            cert_pem,
            leaf_validity,
        };
        // A key that does not match the certificate would mint leaves no
        // client can verify; find out now rather than at the first call.
        ca.check_key_matches_cert(cert_path)?;
        Ok(ca)
    }

    fn check_key_matches_cert(&self, cert_path: &Path) -> Result<(), CaError> {
        use rcgen::PublicKeyData;
        let (_, cert) = x509_parser::parse_x509_certificate(&self.chain_der[0]).map_err(|e| {
            CaError::Invalid {
                path: cert_path.to_owned(),
                reason: format!("unparsable certificate: {e}"),
            }
        })?;
        let cert_key = cert.public_key().subject_public_key.data.as_ref();
        if cert_key != self.issuer.key().der_bytes() {
            return Err(CaError::Invalid {
                path: cert_path.to_owned(),
                reason: "the CA key does not belong to this certificate".to_string(),
            });
        }
        Ok(())
    }

    /// The CA certificate (and any chain given with it) as PEM, for apps to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Mints a leaf for `host` with its own P-256 key: SAN = host, EKU
    /// serverAuth, AKI = the CA's key identifier, not a CA, short validity.
    pub fn mint_leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let mint_err = |reason: String| CaError::Mint {
            subject: host.to_string(),
            reason,
        };
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| mint_err(e.to_string()))?;
        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|e: rcgen::Error| mint_err(e.to_string()))?,
            ),
        };
        params.subject_alt_names = vec![san];
        let mut name = DistinguishedName::new();
        // CommonName is limited to 64 characters; the SAN is what clients check.
        name.push(
            DnType::CommonName,
            host.chars().take(64).collect::<String>(),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + self.leaf_validity;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| mint_err(e.to_string()))?;

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| mint_err(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + self.chain_der.len());
        chain.push(cert.der().clone());
        chain.extend(self.chain_der.iter().cloned());
        Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
    }

    pub fn leaf_validity(&self) -> Duration {
        self.leaf_validity
    }
}

/// Refuses a key file that others (and, unless allowed, the group) can
/// read (SECURITY #19).
pub fn check_key_mode(path: &Path, allow_group_readable: bool) -> Result<(), CaError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|source| CaError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        let forbidden = if allow_group_readable { 0o007 } else { 0o077 };
        if mode & forbidden != 0 {
            return Err(CaError::KeyTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| CaError::Io {
        action: "creating",
        path: path.to_owned(),
        source,
    })?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(|source| CaError::Io {
            action: "writing",
            path: path.to_owned(),
            source,
        })
}

/// Every certificate in a PEM text, in order.
pub fn parse_pem_certs(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".to_string());
    }
    Ok(certs)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive serial with no leading zero byte encodes in exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::ParsedExtension;

    fn ca_in(dir: &Path) -> CertificateAuthority {
        CertificateAuthority::load_or_create(
            &dir.join("ca.pem"),
            &dir.join("ca-key.pem"),
            true,
            DEFAULT_LEAF_VALIDITY,
        )
        .unwrap()
    }

    #[test]
    fn created_key_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_in(dir.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = ca_in(dir.path());
        assert_eq!(ca.cert_pem(), again.cert_pem());
    }

    #[cfg(unix)]
    #[test]
    fn open_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        ca_in(dir.path());
        let key = dir.path().join("ca-key.pem");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err =
            CertificateAuthority::load(&dir.path().join("ca.pem"), &key, DEFAULT_LEAF_VALIDITY)
                .unwrap_err();
        assert!(
            matches!(err, CaError::KeyTooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        ca_in(a.path());
        ca_in(b.path());
        let err = CertificateAuthority::load(
            &a.path().join("ca.pem"),
            &b.path().join("ca-key.pem"),
            DEFAULT_LEAF_VALIDITY,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn half_present_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ca_in(dir.path());
        fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
        let err = CertificateAuthority::load_or_create(
            &dir.path().join("ca.pem"),
            &dir.path().join("ca-key.pem"),
            true,
            DEFAULT_LEAF_VALIDITY,
        )
        .unwrap_err();
        assert!(matches!(err, CaError::HalfPresent { .. }), "{err}");
    }

    #[test]
    fn leaf_has_the_fields_strict_verifiers_require() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_in(dir.path());
        let leaf = ca.mint_leaf("api.openai.com").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&leaf.cert[1]).unwrap();

        let mut saw = (false, false, false, false);
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    let names: Vec<String> =
                        san.general_names.iter().map(|n| n.to_string()).collect();
                    assert_eq!(names, vec!["DNSName(api.openai.com)".to_string()]);
                    saw.0 = true;
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    assert!(eku.server_auth);
                    saw.1 = true;
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    let ca_ski = ca_cert
                        .extensions()
                        .iter()
                        .find_map(|e| match e.parsed_extension() {
                            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0.to_vec()),
                            _ => None,
                        })
                        .expect("CA has a subject key identifier");
                    assert_eq!(aki.key_identifier.as_ref().unwrap().0, ca_ski.as_slice());
                    saw.2 = true;
                }
                ParsedExtension::BasicConstraints(bc) => {
                    assert!(!bc.ca);
                    saw.3 = true;
                }
                _ => {}
            }
        }
        assert_eq!(
            saw,
            (true, true, true, true),
            "SAN, EKU, AKI, basicConstraints"
        );
        assert_ne!(
            cert.public_key().raw,
            ca_cert.public_key().raw,
            "leaf has its own key"
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        assert!(not_before < now - 1800, "backdated");
        assert!(not_after - now <= 7 * 86_400, "short validity");
        assert!(not_after > now + 86_400);
    }

    #[test]
    fn leaf_for_ip_literal_uses_ip_san() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_in(dir.path());
        let leaf = ca.mint_leaf("127.0.0.1").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(matches!(
            san.value.general_names[0],
            x509_parser::extensions::GeneralName::IPAddress(&[127, 0, 0, 1])
        ));
    }
}
