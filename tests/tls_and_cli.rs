//! The minted certificates under strict verifiers, the CA's file rules, and
//! the command line (`check`, `ca init`, `ca bundle`).

mod common;

use std::process::Command;

use common::*;

async fn leaf_through_proxy(
    proxy: &Proxy,
    host: &str,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let tls = proxy
        .connect_tls(&format!("{host}:443"), &[b"http/1.1"])
        .await;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates().unwrap().to_vec()
}

fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_leaf_passes_rustls_and_openssl_strict_verification() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(
        &[("api.openai.com:443", mock.addr)],
        Some(&pki.ca_path),
    ));
    // connect_tls verifies with rustls/webpki against ecluse's CA only.
    let chain = leaf_through_proxy(&proxy, "api.openai.com").await;
    let leaf_path = proxy.dir.path().join("leaf.pem");
    std::fs::write(&leaf_path, to_pem(&chain[0])).unwrap();
    let out = Command::new("openssl")
        .args([
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "api.openai.com",
            "-CAfile",
        ])
        .arg(proxy.ca_path())
        .arg(&leaf_path)
        .output()
        .expect("openssl is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl verify failed: {text}");
    // And for a name it was not minted for, the same check fails.
    let out = Command::new("openssl")
        .args([
            "verify",
            "-x509_strict",
            "-verify_hostname",
            "api.anthropic.com",
            "-CAfile",
        ])
        .arg(proxy.ca_path())
        .arg(&leaf_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_leaf_passes_python_strict_mode() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        openai_handler(),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(
        &[("api.openai.com:443", mock.addr)],
        Some(&pki.ca_path),
    ));
    let script = r#"
import http.client, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=20)
conn.set_tunnel("api.openai.com", 443)
conn.request("GET", "/v1/models")
resp = conn.getresponse()
print(resp.status, resp.read().decode())
"#;
    let out = tokio::task::spawn_blocking({
        let ca = proxy.ca_path();
        let listen = proxy.listen;
        move || {
            Command::new("python3")
                .args([
                    "-c",
                    script,
                    &listen.ip().to_string(),
                    &listen.port().to_string(),
                ])
                .arg(ca)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("200 "),
        "python strict verification failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("gpt-4o"));
}

#[test]
fn ca_key_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = Command::new(ecluse_bin())
        .args(["ca", "init", "--dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = state.join("ca-key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nstate_dir: {}\n",
            free_port(),
            free_port(),
            state.display()
        ),
    )
    .unwrap();
    let out = Command::new(ecluse_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(
        !stderr.contains("PRIVATE KEY"),
        "key material in output: {stderr}"
    );
}

#[test]
fn ca_bundle_holds_public_roots_and_the_ecluse_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("state_dir: {}\n", dir.path().join("s").display()),
    )
    .unwrap();
    let bundle = dir.path().join("bundle.pem");
    common::sdk::write_ca_bundle(&config, &bundle);
    let text = std::fs::read_to_string(&bundle).unwrap();
    let certs = ecluse::tls::ca::parse_pem_certs(&text).unwrap();
    assert!(
        certs.len() > 10,
        "only {} certificates: no public roots?",
        certs.len()
    );
    let ca = std::fs::read_to_string(dir.path().join("s/ca.pem")).unwrap();
    let ca_der = ecluse::tls::ca::parse_pem_certs(&ca).unwrap();
    assert_eq!(certs.last(), ca_der.last());
}

#[test]
fn check_reports_every_problem_and_passes_good_configs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:1\nlimts: {}\n").unwrap();
    let out = Command::new(ecluse_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("limts"), "{stdout}");

    let inconsistent = dir.path().join("inconsistent.yaml");
    std::fs::write(
        &inconsistent,
        "listen: 127.0.0.1:5\nadmin_listen: 127.0.0.1:5\nupstream: { connect_ports: [] }\n",
    )
    .unwrap();
    let out = Command::new(ecluse_bin())
        .args(["check", "--config"])
        .arg(&inconsistent)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("2 problem(s)"), "{stdout}");

    // Every example config is checked by tests/deploy.rs; one good config
    // passing is this command's other half.
    assert_config_checks(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/ecluse.yaml"
    )));
}
