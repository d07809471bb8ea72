//! The `ecluse` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app;
use crate::config::Config;
use crate::tls::ca::{self, CertificateAuthority};

#[derive(Parser, Debug)]
#[command(
    name = "ecluse",
    version,
    about = "An egress proxy that keeps an organisation's LLM traffic lawful"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (defaults: 127.0.0.1:3128, admin 127.0.0.1:9901, state in ./.ecluse).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the config, CA, targets, registry and policies (with their tests); exit 1 listing every problem.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check the configuration alone: do not fetch a Git policy source nor
        /// look for files mounted at run time (secrets, a mounted CA).
        #[arg(long)]
        offline: bool,
    },
    /// Manage the CA that apps trust.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Test and try policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check, replay and report decision audit logs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Install (or remove, or print) the rules sending every uid's outbound
    /// TCP 80/443 except ecluse's own to the transparent listener, and
    /// dropping their UDP 443 (QUIC). Needs NET_ADMIN; an init container runs it.
    Iptables {
        /// The uid ecluse runs as: its connections are not redirected.
        #[arg(long)]
        proxy_uid: u32,
        /// The port of `transparent_listen`.
        #[arg(long)]
        port: u16,
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
        /// Remove ecluse's chains and jumps.
        #[arg(long)]
        remove: bool,
        /// A destination range never redirected (the cluster's service CIDR, ...); repeatable.
        #[arg(long, value_name = "CIDR")]
        exclude: Vec<crate::iptables::Cidr>,
        /// Install IPv6 rules too (auto: when ip6tables works here).
        #[arg(long, value_enum, default_value = "auto")]
        ipv6: crate::iptables::Ipv6,
        /// The iptables binary (iptables-legacy, iptables-nft, a path);
        /// ip6tables is derived from it.
        #[arg(long, default_value = "iptables")]
        iptables_cmd: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check each file's chain; exit 1 naming the first record edited,
    /// removed, inserted or reordered.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Evaluate every record's input again under the revision it names and
    /// compare with the recorded decision; exit 1 listing each mismatch.
    /// Nothing is sent anywhere.
    Replay {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Policy directory for `sha256:` revisions (its content must hash to the revision).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Git repository for commit revisions (each commit is fetched by its SHA).
        #[arg(long)]
        git: Option<String>,
        /// The sidecar's config: its targets (data.targets), evaluation limit and Git credentials.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Summarise audit logs as a record of processing: who sent what to which entity, and what was decided.
    Report {
        /// Audit logs (JSON lines), read in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "html")]
        format: crate::audit_report::Format,
        /// Records at or after this RFC 3339 time, or from the start of this UTC date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Records at or before this RFC 3339 time, or up to the end of this UTC date (YYYY-MM-DD).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Run the `test_*` rules of every `*_test.rego`; exit 1 on any failure.
    Test {
        /// Policy directory (default: the embedded policies).
        dir: Option<PathBuf>,
        /// Config whose targets the policies see as data.targets.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the decision document for one input document (JSON).
    Eval {
        /// Policy directory (default: the config's policy.dir, else the embedded policies).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The input document; its `stage` (connect or request) picks the decision.
        #[arg(long)]
        input: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create the CA (ca.pem, and ca-key.pem with mode 0600) if it does not exist.
    Init {
        /// Directory for ca.pem and ca-key.pem (default: the config's state_dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Write the system's public roots plus ecluse's CA as one PEM bundle for apps.
    Bundle {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let code = run_command(cli);
    crate::log_sink::flush_installed(std::time::Duration::from_secs(2));
    code
}

fn run_command(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => {
            let config = match load_config(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match app::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Check { config, offline } => check(config.as_deref(), offline),
        Command::Ca { command } => match command {
            CaCommand::Init { dir, config } => ca_init(dir, config.as_deref()),
            CaCommand::Bundle { out, config } => ca_bundle(&out, config.as_deref()),
        },
        Command::Policy { command } => match command {
            PolicyCommand::Test { dir, config } => policy_test(dir, config.as_deref()),
            PolicyCommand::Eval {
                policy,
                input,
                config,
            } => policy_eval(policy, &input, config.as_deref()),
        },
        Command::Audit { command } => match command {
            AuditCommand::Verify { files } => audit_verify(&files),
            AuditCommand::Replay {
                files,
                policy,
                git,
                config,
            } => audit_replay(&files, policy.as_deref(), git.as_deref(), config.as_deref()),
            AuditCommand::Report {
                files,
                out,
                format,
                since,
                until,
            } => audit_report(&files, &out, format, since.as_deref(), until.as_deref()),
        },
        Command::Iptables {
            proxy_uid,
            port,
            dry_run,
            remove,
            exclude,
            ipv6,
            iptables_cmd,
        } => {
            let options = crate::iptables::Options {
                proxy_uid,
                port,
                exclude,
            };
            iptables(&options, dry_run, remove, ipv6, &iptables_cmd)
        }
    }
}

fn iptables(
    options: &crate::iptables::Options,
    dry_run: bool,
    remove: bool,
    ipv6: crate::iptables::Ipv6,
    cmd: &str,
) -> ExitCode {
    use crate::iptables::{execute, families, install, render, Family, Ipv6};
    // A dry run on a machine without ip6tables still shows both families.
    let families = if dry_run && ipv6 == Ipv6::Auto {
        families(cmd, Ipv6::On)
    } else {
        families(cmd, ipv6)
    };
    for (family, cmd) in families {
        let steps = if remove {
            crate::iptables::remove()
        } else {
            install(family, options)
        };
        for step in &steps {
            if dry_run {
                println!("{}", render(&cmd, step));
            } else if let Err(e) = execute(&cmd, step) {
                return fail(&e);
            }
        }
        if !dry_run {
            let what = if remove { "removed" } else { "installed" };
            let name = if family == Family::V4 { "IPv4" } else { "IPv6" };
            println!("{name} rules {what} with {cmd}");
        }
    }
    ExitCode::SUCCESS
}

fn audit_report(
    files: &[PathBuf],
    out: &Path,
    format: crate::audit_report::Format,
    since: Option<&str>,
    until: Option<&str>,
) -> ExitCode {
    let written = crate::audit_report::run(files, out, format, since, until)
        .and_then(|(bytes, said)| app::write_atomically(out, &bytes).map(|()| said));
    match written {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn audit_verify(files: &[PathBuf]) -> ExitCode {
    let mut broken = false;
    for file in files {
        match std::fs::read(file) {
            Ok(text) => match crate::audit_check::verify(&text) {
                Ok(n) => println!("{}: {n} records, chain intact", file.display()),
                Err(b) => {
                    println!("{}: chain broken at {b}", file.display());
                    broken = true;
                }
            },
            Err(e) => return fail(&format!("{}: {e}", file.display())),
        }
    }
    if broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn audit_replay(
    files: &[PathBuf],
    policy: Option<&Path>,
    git: Option<&str>,
    config: Option<&Path>,
) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let targets = match crate::route::targets_from_config(&config.targets) {
        Ok(t) => t,
        Err(p) => return fail(&p.join("; ")),
    };
    let mut texts = Vec::new();
    for file in files {
        match std::fs::read(file) {
            Ok(t) => texts.push(t),
            Err(e) => return fail(&format!("{}: {e}", file.display())),
        }
    }
    let scratch = match tempfile_dir() {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let context = crate::policy::load::Context {
        targets: &targets,
        timeout: config
            .policy
            .eval_timeout
            .max(std::time::Duration::from_secs(1)),
    };
    let revision_files = |revision: &str| -> Result<crate::policy::load::PolicyFiles, String> {
        use crate::policy::load::PolicyFiles;
        if revision.starts_with("embedded-") {
            let files = PolicyFiles::embedded();
            let ours = format!("embedded-{}-{}", env!("CARGO_PKG_VERSION"), files.digest());
            return if revision == ours {
                Ok(files)
            } else {
                Err(format!("revision {revision} is another build's embedded policy (this binary embeds {ours})"))
            };
        }
        if revision.starts_with("sha256:") {
            let dir = policy.ok_or_else(|| {
                format!("revision {revision} is a policy directory's: give it with --policy DIR")
            })?;
            let files = PolicyFiles::read_dir(dir).map_err(|e| e.to_string())?;
            return if files.digest() == revision {
                Ok(files)
            } else {
                Err(format!(
                    "--policy {} holds revision {}, not {revision}",
                    dir.display(),
                    files.digest()
                ))
            };
        }
        if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut git_config = match (&config.policy.git, git) {
                (Some(g), _) => g.clone(),
                (None, Some(url)) => serde_yaml::from_str::<crate::config::GitConfig>(&format!(
                    "url: {}",
                    serde_json::to_string(url).unwrap_or_default()
                ))
                .map_err(|e| e.to_string())?,
                (None, None) => {
                    return Err(format!(
                        "revision {revision} is a Git commit: give the repository with --git URL"
                    ))
                }
            };
            if let Some(url) = git {
                git_config.url = url.to_string();
            }
            git_config.r#ref = revision.to_string();
            let source = crate::source::git::GitSource::new(git_config, &scratch);
            return app::block_on(async {
                let commit = source.fetch().await.map_err(|e| e.to_string())?;
                source.read_commit(&commit).await.map_err(|e| e.to_string())
            });
        }
        Err(format!("revision {revision:?} is not one ecluse can find"))
    };
    let replay = crate::audit_check::replay(
        texts.iter().flat_map(|t| t.split(|b| *b == b'\n')),
        |revision| {
            let files = revision_files(revision)?;
            crate::policy::load::compile(&files, &context, revision.into(), "replay".into())
                .map(|s| s.without_decision_cache())
                .map_err(|e| e.to_string())
        },
    );
    for m in &replay.mismatches {
        println!(
            "MISMATCH decision {} (revision {}): recorded {} replayed {}",
            m.decision_id, m.revision, m.recorded, m.replayed
        );
    }
    for (id, why) in &replay.skipped {
        println!("SKIPPED decision {id}: {why}");
    }
    println!(
        "{} reproduced, {} mismatched, {} not replayed",
        replay.reproduced,
        replay.mismatches.len(),
        replay.skipped.len()
    );
    let _ = std::fs::remove_dir_all(&scratch);
    if replay.mismatches.is_empty() && replay.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A scratch directory for fetched revisions, removed on exit.
fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ecluse-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The config (or defaults) with `policy.dir` replaced when one is given.
fn policy_config(dir: Option<PathBuf>, config: Option<&Path>) -> Result<Config, String> {
    let mut config = load_config(config)?;
    if dir.is_some() {
        config.policy.dir = dir;
    }
    Ok(config)
}

fn policy_test(dir: Option<PathBuf>, config: Option<&Path>) -> ExitCode {
    let config = match policy_config(dir, config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let targets = match crate::route::targets_from_config(&config.targets) {
        Ok(t) => t,
        Err(p) => return fail(&p.join("; ")),
    };
    let (files, revision, source) = match app::read_policy(&config) {
        Ok(f) => f,
        Err(e) => return fail(&e.to_string()),
    };
    let context = crate::policy::load::Context {
        targets: &targets,
        timeout: config.policy.eval_timeout,
    };
    let results = match crate::policy::load::run_tests(&files, &context) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        match (&r.passed, &r.detail) {
            (true, _) => println!("PASS {}", r.name),
            (false, Some(d)) => println!("FAIL {}: {d}", r.name),
            (false, None) => println!("FAIL {}", r.name),
        }
    }
    println!(
        "{} passed, {failed} failed ({source}, revision {revision})",
        results.len() - failed
    );
    if results.is_empty() {
        println!("no test_* rules found in *_test.rego files");
        return ExitCode::FAILURE;
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn policy_eval(dir: Option<PathBuf>, input: &Path, config: Option<&Path>) -> ExitCode {
    let config = match policy_config(dir, config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let document: serde_json::Value = match std::fs::read_to_string(input)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return fail(&format!("input {}: {e}", input.display())),
    };
    let targets = match crate::route::targets_from_config(&config.targets) {
        Ok(t) => t,
        Err(p) => return fail(&p.join("; ")),
    };
    let (files, revision, source) = match app::read_policy(&config) {
        Ok(f) => f,
        Err(e) => return fail(&e.to_string()),
    };
    let context = crate::policy::load::Context {
        targets: &targets,
        timeout: config.policy.eval_timeout,
    };
    let snapshot = match crate::policy::load::compile(&files, &context, revision, source) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let output = if document.get("stage").and_then(|s| s.as_str()) == Some("connect") {
        serde_json::to_string_pretty(&snapshot.decide_connect(&document))
    } else {
        serde_json::to_string_pretty(&snapshot.decide_request(&document))
    };
    println!("{}", output.unwrap_or_default());
    ExitCode::SUCCESS
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or(
        "info,pingora_core=warn,pingora_proxy=warn,pingora=warn,rustls=warn,regorus=warn",
    );
    let target = match crate::log_sink::LogSink::spawn(Box::new(std::io::stderr())) {
        Ok(sink) => {
            sink.install();
            env_logger::Target::Pipe(Box::new(sink))
        }
        Err(_) => env_logger::Target::Stderr,
    };
    let mut builder = env_logger::Builder::from_env(env);
    builder.format_timestamp_millis().target(target);
    // env_logger never colours a pipe target on its own; a terminal still
    // gets colours unless RUST_LOG_STYLE says otherwise.
    if std::env::var_os("RUST_LOG_STYLE").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        builder.write_style(env_logger::WriteStyle::Always);
    }
    builder.init();
}

fn fail(message: &str) -> ExitCode {
    // After the log lines that led here, not before them.
    crate::log_sink::flush_installed(std::time::Duration::from_secs(2));
    eprintln!("ecluse: {message}");
    ExitCode::FAILURE
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Config::load_defaults().map_err(|e| e.to_string()),
    }
}

fn check(path: Option<&Path>, offline: bool) -> ExitCode {
    let mut problems = Vec::new();
    let config = match path {
        None => Config::default(),
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(crate::config::ConfigError::Invalid(list)) => {
                problems.extend(list);
                match std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| Config::from_yaml(&t).ok())
                {
                    Some(c) => c,
                    None => return report(problems),
                }
            }
            Err(e) => return report(vec![e.to_string()]),
        },
    };
    // Offline, files that are mounted at run time (secrets, a cert-manager
    // CA) are not looked for: the check is of the configuration itself.
    let mounted_ca = config.ca.cert_file.is_some();
    let (cert, key) = (config.ca_cert_path(), config.ca_key_path());
    if !(offline && mounted_ca) && (cert.exists() || key.exists() || mounted_ca) {
        if let Err(e) = app::load_ca(&config).map(|_| ()) {
            problems.push(format!("CA: {e}"));
        }
    }
    match crate::route::targets_from_config(&config.targets) {
        Ok(targets) => {
            if !offline {
                problems.extend(crate::route::check_key_files(&targets));
            }
            if let Some(git) = config.policy.git.as_ref().filter(|_| !offline) {
                for (what, file) in [
                    ("token_file", &git.token_file),
                    ("ssh_key_file", &git.ssh_key_file),
                    ("known_hosts_file", &git.known_hosts_file),
                    ("allowed_signers", &git.allowed_signers),
                ] {
                    if let Some(file) = file {
                        if let Err(e) = std::fs::metadata(file) {
                            problems.push(format!("policy.git.{what} {}: {e}", file.display()));
                        }
                    }
                }
            }
            let skip_fetch = offline && config.policy.git.is_some();
            if !skip_fetch {
                let source = crate::source::Source::from_config(&config);
                if let Err(e) =
                    app::block_on(crate::source::load_current(&config, &targets, &source))
                {
                    problems.push(e.to_string());
                }
            }
        }
        Err(list) => problems.extend(list),
    }
    if let Some(extra) = &config.upstream.extra_ca_file {
        if let Err(e) = crate::upstream::upstream_roots_pem(Some(extra)) {
            problems.push(e);
        }
    }
    report(problems)
}

fn report(problems: Vec<String>) -> ExitCode {
    if problems.is_empty() {
        println!("ok: configuration, CA and policy are valid");
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        println!("error: {p}");
    }
    println!("{} problem(s) found", problems.len());
    ExitCode::FAILURE
}

fn ca_init(dir: Option<PathBuf>, config: Option<&Path>) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let (cert, key) = match dir {
        Some(d) => (d.join("ca.pem"), d.join("ca-key.pem")),
        None => (config.ca_cert_path(), config.ca_key_path()),
    };
    match CertificateAuthority::load_or_create(&cert, &key, true, ca::DEFAULT_LEAF_VALIDITY) {
        Ok(_) => {
            println!("CA ready: {} (key {})", cert.display(), key.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn ca_bundle(out: &Path, config: Option<&Path>) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        return fail(&format!("creating {}: {e}", config.state_dir.display()));
    }
    let ca = match app::load_ca(&config) {
        Ok(ca) => ca,
        Err(e) => return fail(&e.to_string()),
    };
    match app::app_bundle(&ca).and_then(|b| app::write_atomically(out, b.as_bytes())) {
        Ok(()) => {
            println!("wrote {} (public roots + ecluse CA)", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
