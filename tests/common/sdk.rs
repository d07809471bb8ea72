//! Apps as the official SDKs run them: through ecluse as `HTTPS_PROXY`,
//! trusting the CA bundle `ecluse ca bundle` writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::python::python;
use super::{ecluse_bin, Proxy};

/// The CA bundle an app is given (`ecluse ca bundle` for `proxy`'s config),
/// written next to that config.
pub fn ca_bundle(proxy: &Proxy) -> PathBuf {
    let bundle = proxy.dir.path().join("bundle.pem");
    write_ca_bundle(&proxy.dir.path().join("ecluse.yaml"), &bundle);
    bundle
}

/// `ecluse ca bundle --config config --out bundle`, which must succeed.
pub fn write_ca_bundle(config: &std::path::Path, bundle: &std::path::Path) {
    super::run_ok(
        Command::new(ecluse_bin())
            .args(["ca", "bundle", "--config"])
            .arg(config)
            .arg("--out")
            .arg(bundle),
        "ecluse ca bundle",
    );
}

/// Runs a Python `script` (with `args`) that calls the official SDKs as an
/// app does: through `proxy` as `HTTPS_PROXY`, trusting `bundle`, with
/// nothing from the environment that would send it elsewhere (base URLs,
/// `NO_PROXY`, cloud profiles), plus `env`. Its stdout, or a panic with its
/// output and ecluse's log.
pub fn run_python_sdk(
    script: &str,
    args: &[&str],
    proxy: &Proxy,
    bundle: &Path,
    env: &[(&str, &str)],
) -> String {
    let mut command = Command::new(python());
    command
        .args(["-c", script])
        .args(args)
        .env("HTTPS_PROXY", proxy.proxy_url())
        .env("SSL_CERT_FILE", bundle)
        .env("AWS_CA_BUNDLE", bundle)
        .env_remove("HTTP_PROXY")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("CO_API_URL")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{stdout}\n{}\n--- ecluse ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.logs()
    );
    stdout
}
