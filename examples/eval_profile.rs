//! The cost of an evaluated request decision, for instruction counts
//! (README, "Keeping policies fast"). Decides N calls whose inputs differ on
//! every call (body size, a header, and the declared retention, which the
//! policies read) against the embedded default policies, as the proxy's hot
//! path does it: destination from the revision's cache, request document
//! built per call, `decide_request_at`, each call missing the decision cache
//! (a third argument `uncached` turns the cache off, as before 2026-12-06).
//!
//! ```text
//! cargo build --profile profiling --example eval_profile
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/profiling/examples/eval_profile allowed 2000
//! ```
//! Instructions per decision = (Ir at N - Ir at 0) / N; N = 0 measures the
//! set-up alone. Scenarios: `allowed` (an internal call to OpenAI),
//! `reroute` (personal data to OpenAI, rerouted to Mistral), `deny`
//! (special-category data to OpenAI with no in-cluster target). It prints
//! allocation calls per decision and a digest of the decisions, which must
//! not change when the evaluation is made cheaper.

#[path = "../tests/support/counting_alloc.rs"]
#[allow(dead_code)]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

use std::hash::{Hash, Hasher};

use ecluse::authority::Authority;
use ecluse::classify::DataDoc;
use ecluse::policy::input::{self, Scheme, SourceDoc};
use ecluse::policy::load::{self, Context, PolicyFiles};

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "allowed".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);

    // A mistral target, so that personal data to OpenAI is rerouted as in
    // the README's set-up (and as in benches/core.rs).
    let mistral = ecluse::route::Target::from_config(
        "mistral",
        &ecluse::config::TargetConfig {
            base_url: "https://api.mistral.ai/v1".into(),
            ..Default::default()
        },
    )
    .expect("mistral target");
    let targets = [("mistral".to_string(), mistral)].into_iter().collect();
    let context = Context {
        targets: &targets,
        // Generous: under valgrind on a shared machine the load-time probe
        // runs some hundred times slower than natively.
        timeout: std::time::Duration::from_secs(10),
    };
    // ECLUSE_PROFILE_POLICY_DIR profiles a policy directory of your own
    // (or a variant of the defaults) without rebuilding.
    let files = match std::env::var_os("ECLUSE_PROFILE_POLICY_DIR") {
        Some(dir) => PolicyFiles::read_dir(std::path::Path::new(&dir)).expect("policy directory"),
        None => PolicyFiles::embedded(),
    };
    let cached = args.next().as_deref() != Some("uncached");
    let snapshot = load::compile(&files, &context, "profile".into(), "profile".into())
        .expect("default policies compile");
    let snapshot = if cached {
        snapshot
    } else {
        snapshot.without_decision_cache()
    };
    let source = ecluse::policy::rego::to_value(&SourceDoc::default()).expect("source");
    let authority = Authority::new("api.openai.com", 443);
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
    let call = ecluse::llm::parse_request(Some("openai"), "POST", "/v1/chat/completions", body);

    let data_for = |i: usize| -> DataDoc {
        // Longer than OpenAI's 30 days, so that it never refuses, and
        // different on every call, so that no decision is remembered.
        let days = 31 + i as u64;
        let mut data = DataDoc {
            retention: Some(format!("{days}d")),
            retention_max_seconds: Some(days * 86_400),
            ..DataDoc::default()
        };
        match scenario.as_str() {
            "allowed" => data.classification = Some("internal".into()),
            "reroute" => {
                data.pii.insert("email", 1 + (i % 5) as u32);
                data.classification = Some("personal".into());
            }
            "deny" => {
                data.declared_classification = Some("special-category".into());
                data.classification = Some("special-category".into());
            }
            other => panic!("unknown scenario {other}: allowed, reroute or deny"),
        }
        data
    };
    let expected_rule = match scenario.as_str() {
        "allowed" => "egress.allowed",
        "reroute" => "egress.personal_data_cloud_act",
        _ => "egress.special_category_in_cluster",
    };
    // The data documents are built outside the measured loop: the scan
    // builds them in the proxy, not the decision.
    let datas: Vec<DataDoc> = (0..n).map(data_for).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("req-{i}")).collect();

    let mut digest = std::collections::hash_map::DefaultHasher::new();
    let (_, allocations) = counting_alloc::allocations_during(|| {
        for (i, data) in datas.iter().enumerate() {
            let destination = snapshot.destination(&authority, Scheme::Https, &[443]);
            let headers: [(&str, &[u8]); 4] = [
                ("content-type", b"application/json"),
                ("authorization", b"Bearer sk-test"),
                ("user-agent", b"OpenAI/Python 1.54.0"),
                ("x-request-id", ids[i].as_bytes()),
            ];
            let request = input::request_doc(
                "POST",
                "/v1/chat/completions",
                headers.into_iter(),
                body.len() + i,
                &call,
            );
            let decision = snapshot.decide_request_at(&destination, &request, data, &source);
            assert_eq!(decision.rule, expected_rule, "{}", decision.reason);
            (
                decision.allowed,
                &decision.reason,
                &decision.rule,
                decision.http_status,
                decision.route.as_ref().map(|r| (&r.target, &r.model)),
                &decision.headers,
                &decision.remove_headers,
            )
                .hash(&mut digest);
        }
    });
    println!(
        "{scenario}: {n} decisions, {:.1} allocation calls per decision, digest {:016x}",
        allocations as f64 / n.max(1) as f64,
        digest.finish()
    );
}
