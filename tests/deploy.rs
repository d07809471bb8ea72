//! Running as a sidecar: the examples parse and validate, the Kubernetes
//! overlays render and pass the Kubernetes schemas, the quick-start works,
//! and the CA bundle is on disk before ecluse reports ready.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_yaml_parses_and_every_ecluse_config_checks() {
    let mut files = Vec::new();
    yaml_files(&root().join("examples"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            <serde_yaml::Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let is_ecluse_config = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("ecluse"))
            || path.parent().is_some_and(|p| p.ends_with("examples"));
        if is_ecluse_config {
            assert_config_checks(path);
        }
    }
}

#[test]
fn kustomize_overlays_render_and_validate_against_kubernetes_schemas() {
    let validate = common::python::venv_dir().join("bin/kubernetes-validate");
    if !validate.exists() {
        let pip = common::python::python();
        let status = Command::new(pip)
            .args(["-m", "pip", "install", "--quiet", "kubernetes-validate"])
            .status()
            .unwrap();
        assert!(status.success(), "pip install kubernetes-validate");
    }
    let out_dir = tempfile::tempdir().unwrap();
    for overlay in [
        "base",
        "overlays/git",
        "overlays/cert-manager",
        "overlays/transparent",
    ] {
        let dir = root().join("examples/kubernetes").join(overlay);
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .expect("kubectl is installed");
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8(out.stdout).unwrap();
        // The sidecar shape the README promises.
        assert!(
            rendered.contains("restartPolicy: Always"),
            "{overlay}: no native sidecar"
        );
        assert!(rendered.contains("path: /readyz") && rendered.contains("path: /healthz"));
        let transparent = overlay.ends_with("transparent");
        // Every mode trusts ecluse's CA; only the HTTPS_PROXY modes set proxies.
        let proxy_env: &[&str] = &["HTTPS_PROXY", "NO_PROXY", "NODE_USE_ENV_PROXY"];
        for env in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "ECLUSE_NAMESPACE",
        ]
        .iter()
        .chain(if transparent { &[][..] } else { proxy_env })
        {
            assert!(rendered.contains(env), "{overlay}: {env} missing");
        }
        if transparent {
            for env in proxy_env.iter().chain(&["HTTP_PROXY"]) {
                assert!(!rendered.contains(env), "{overlay}: {env} still set");
            }
            transparent_shape(&rendered);
        }
        let file = out_dir
            .path()
            .join(format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, &rendered).unwrap();
        let out = Command::new(&validate)
            .args(["--strict", "--quiet", "-k", "1.32.0"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{overlay} does not validate:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The transparent overlay: the rules' init container runs first, as root
/// with NET_ADMIN, excluding the uid the sidecar runs as, on the port the
/// sidecar's `transparent_listen` binds.
fn transparent_shape(rendered: &str) {
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(rendered)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let inits = deployment["spec"]["template"]["spec"]["initContainers"]
        .as_sequence()
        .unwrap();
    let (rules, sidecar) = (&inits[0], &inits[1]);
    let args: Vec<&str> = rules["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        &args[..5],
        ["iptables", "--proxy-uid", "1337", "--port", "15001"]
    );
    assert!(
        rules["restartPolicy"].is_null(),
        "the rules container must exit"
    );
    assert_eq!(rules["securityContext"]["runAsUser"], 0);
    let added = &rules["securityContext"]["capabilities"]["add"];
    assert!(added
        .as_sequence()
        .unwrap()
        .iter()
        .any(|c| c == "NET_ADMIN"));
    assert_eq!(sidecar["name"], "ecluse");
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1337);
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["ecluse.yaml"].is_string())
        .expect("the ecluse config map");
    let config: serde_yaml::Value =
        serde_yaml::from_str(config["data"]["ecluse.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(config["transparent_listen"], "127.0.0.1:15001");
}

#[test]
fn the_local_quick_start_answers_through_ecluse() {
    let python = common::python::python();
    let out = Command::new(root().join("examples/quickstart/run.sh"))
        .env("ECLUSE", ecluse_bin())
        .env("PYTHON", &python)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Hello from the local mock, through ecluse."),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Declared personal data is refused by the default policy, same script.
    let out = Command::new(root().join("examples/quickstart/run.sh"))
        .env("ECLUSE", ecluse_bin())
        .env("PYTHON", &python)
        .env("DATA_CLASSIFICATION", "personal")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PermissionDeniedError"));
}

#[test]
fn the_ca_bundle_is_written_before_ecluse_reports_ready() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("shared/ca-bundle.pem");
    let listen = free_port();
    let admin = free_port();
    let config = dir.path().join("ecluse.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{listen}\nadmin_listen: 127.0.0.1:{admin}\nstate_dir: {}\nca: {{ bundle_out: {} }}\n",
            dir.path().join("state").display(),
            bundle.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(ecluse_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_ready = None;
    while Instant::now() < deadline {
        // Sample the bundle, then readiness: if ready is ever seen while the
        // bundle was missing just before, the order is wrong.
        let bundle_there = bundle.exists();
        if let Some((200, _)) = admin_get(admin_addr, "/readyz") {
            first_ready = Some(bundle_there);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        first_ready,
        Some(true),
        "ready before the bundle was written"
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let certs = ecluse::tls::ca::parse_pem_certs(&text).unwrap();
    assert!(certs.len() > 10, "no public roots in the bundle");
    let ca = ecluse::tls::ca::parse_pem_certs(
        &std::fs::read_to_string(dir.path().join("state/ca.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(certs.last(), ca.last(), "ecluse's CA is not in the bundle");
}
