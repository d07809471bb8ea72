package ecluse.egress_test

import data.ecluse.egress

openai := {
	"host": "api.openai.com", "port": 443, "scheme": "https", "provider": "openai", "api": "openai",
	"entity": {"name": "OpenAI OpCo, LLC", "country": "US", "jurisdiction": "US", "cloud_act": true, "eea_processor": false},
	"retention": {"default": "30d", "default_seconds": 2592000, "zero_retention_available": true},
	"in_cluster": false, "ip_literal": false, "port_allowed": true,
}

anthropic := object.union(openai, {
	"host": "api.anthropic.com", "provider": "anthropic", "api": "anthropic",
	"entity": {"name": "Anthropic PBC", "country": "US", "jurisdiction": "US", "cloud_act": true, "eea_processor": false},
})

mistral := object.union(openai, {
	"host": "api.mistral.ai", "provider": "mistral",
	"entity": {"name": "Mistral AI SAS", "country": "FR", "jurisdiction": "EU", "cloud_act": false, "eea_processor": true},
})

aleph_alpha := object.union(mistral, {
	"host": "api.aleph-alpha.com", "provider": "aleph_alpha", "api": "aleph_alpha",
	"entity": {"name": "Aleph Alpha GmbH", "country": "DE", "jurisdiction": "EU", "cloud_act": false, "eea_processor": true},
	"retention": {"default": "unspecified", "default_seconds": null, "zero_retention_available": false},
})

deepseek := object.union(openai, {
	"host": "api.deepseek.com", "provider": "deepseek",
	"entity": {"name": "Hangzhou DeepSeek Artificial Intelligence Co., Ltd.", "country": "CN", "jurisdiction": "CN", "cloud_act": false, "eea_processor": false},
})

vllm := object.union(openai, {
	"host": "vllm.llm.svc", "port": 8000, "provider": "in_cluster",
	"entity": {"name": "Self-hosted (your organisation)", "country": null, "jurisdiction": "self", "cloud_act": false, "eea_processor": false},
	"retention": {"default": "none", "default_seconds": 0, "zero_retention_available": true},
	"in_cluster": true,
})

targets := {
	"mistral": {
		"provider": "mistral", "in_cluster": false, "operations": ["chat", "embeddings", "models", "responses"],
		"apis": {"openai": ["chat", "embeddings", "models", "responses"], "anthropic": ["messages"]},
		"entity": mistral.entity, "retention": mistral.retention,
	},
	"vllm": {
		"provider": "in_cluster", "in_cluster": true, "operations": ["chat", "completions", "embeddings", "models", "responses"],
		"apis": {"openai": ["chat", "completions", "embeddings", "models", "responses"], "anthropic": ["messages"]},
		"entity": vllm.entity, "retention": vllm.retention,
	},
}

call(destination, classification, retention, retention_max, pii) := {
	"stage": "request",
	"destination": destination,
	"request": {"method": "POST", "path": "/v1/chat/completions", "api": destination.api, "operation": "chat", "model": "gpt-4o", "stream": false, "headers": {}, "body_bytes": 100},
	"data": {"classification": classification, "retention": retention, "retention_max_seconds": retention_max, "pii": pii},
	"source": {"workload": "billing", "namespace": "finance"},
}

decide(i) := d if {
	d := egress.decision with input as i with data.targets as targets
}

decide_without_targets(i) := d if {
	d := egress.decision with input as i with data.targets as {}
}

# 5. public and internal data go to any registered provider.
test_public_to_openai_is_allowed if {
	d := decide(call(openai, "public", null, null, {}))
	d.allowed
	d.route == null
	d.rule == "egress.allowed"
}

test_internal_to_anthropic_is_allowed if {
	d := decide(call(anthropic, "internal", null, null, {}))
	d.allowed
	d.route == null
}

test_undeclared_without_pii_uses_the_default_classification if {
	d := egress.decision with input as call(openai, null, null, null, {})
		with data.targets as targets
		with data.settings.default_classification as "internal"
	d.allowed
	contains(d.reason, "internal data")
}

test_a_personal_default_classification_protects_undeclared_calls if {
	d := egress.decision with input as call(openai, null, null, null, {})
		with data.targets as {}
		with data.settings.default_classification as "personal"
	not d.allowed
	d.rule == "egress.personal_data_cloud_act"
}

# 1. unregistered destinations.
test_unregistered_destination_is_denied if {
	d := decide(call(object.union(openai, {"host": "llm.example", "provider": null, "entity": null}), "public", null, null, {}))
	not d.allowed
	d.rule == "egress.unregistered_destination"
}

# 3. personal data and the CLOUD Act.
test_personal_to_openai_is_rerouted_to_mistral if {
	d := decide(call(openai, "personal", null, null, {}))
	d.allowed
	d.route.target == "mistral"
	d.rule == "egress.personal_data_cloud_act"
	contains(d.reason, "OpenAI OpCo, LLC")
	contains(d.reason, "CLOUD Act")
}

test_personal_to_openai_without_a_target_is_denied_naming_entity_and_jurisdiction if {
	d := decide_without_targets(call(openai, "personal", null, null, {}))
	not d.allowed
	d.http_status == 403
	d.rule == "egress.personal_data_cloud_act"
	contains(d.reason, "OpenAI OpCo, LLC")
	contains(d.reason, "a US entity")
}

test_detected_pii_counts_as_personal if {
	d := decide(call(openai, null, null, null, {"iban": 1}))
	d.route.target == "mistral"
	contains(d.reason, "personal data")
}

test_declared_public_overrides_the_scan if {
	d := decide(call(openai, "public", null, null, {"email": 2}))
	d.allowed
	d.route == null
}

test_confidential_to_openai_is_rerouted if {
	d := decide(call(openai, "confidential", null, null, {}))
	d.route.target == "mistral"
}

test_personal_to_mistral_is_allowed if {
	d := decide(call(mistral, "personal", null, null, {}))
	d.allowed
	d.route == null
	d.rule == "egress.allowed"
}

test_personal_anthropic_messages_are_rerouted_translated if {
	i := json.patch(call(anthropic, "personal", null, null, {}), [
		{"op": "replace", "path": "/request/operation", "value": "messages"},
		{"op": "replace", "path": "/request/path", "value": "/v1/messages"},
	])
	d := decide(i)
	d.allowed
	d.route.target == "mistral"
}

test_personal_anthropic_call_no_target_takes_is_denied if {
	i := json.patch(call(anthropic, "personal", null, null, {}), [{"op": "replace", "path": "/request/operation", "value": "completions"}])
	d := decide(i)
	not d.allowed
	d.rule == "egress.personal_data_cloud_act"
}

test_personal_responses_call_is_rerouted if {
	i := json.patch(call(openai, "personal", null, null, {}), [
		{"op": "replace", "path": "/request/operation", "value": "responses"},
		{"op": "replace", "path": "/request/path", "value": "/v1/responses"},
	])
	d := decide(i)
	d.allowed
	d.route.target == "mistral"
}

test_personal_reroute_needs_the_target_to_serve_the_operation if {
	i := json.patch(call(openai, "personal", null, null, {}), [{"op": "replace", "path": "/request/operation", "value": "completions"}])
	d := decide(i)
	not d.allowed
	contains(d.reason, "completions")
}

test_personal_reroute_refuses_a_target_under_the_cloud_act if {
	d := egress.decision with input as call(openai, "personal", null, null, {})
		with data.settings.reroute.personal as "vllm_us"
		with data.targets as {"vllm_us": object.union(targets.mistral, {"entity": openai.entity})}
	not d.allowed
}

test_personal_to_a_non_adequate_jurisdiction_is_denied if {
	d := decide_without_targets(call(deepseek, "personal", null, null, {}))
	not d.allowed
	d.rule == "egress.personal_data_adequacy"
	contains(d.reason, "CN")
}

test_personal_to_a_non_adequate_jurisdiction_is_rerouted_when_possible if {
	d := decide(call(deepseek, "personal", null, null, {}))
	d.route.target == "mistral"
	d.rule == "egress.personal_data_adequacy"
}

test_personal_in_cluster_is_allowed if {
	d := decide(call(vllm, "personal", null, null, {}))
	d.allowed
	d.route == null
}

# 2. special-category data.
test_special_category_to_openai_is_rerouted_in_cluster if {
	d := decide(call(openai, "special-category", null, null, {}))
	d.allowed
	d.route.target == "vllm"
	d.rule == "egress.special_category_in_cluster"
}

test_special_category_to_mistral_without_in_cluster_target_is_denied if {
	d := decide_without_targets(call(mistral, "special-category", null, null, {}))
	not d.allowed
	d.rule == "egress.special_category_in_cluster"
}

test_special_category_in_cluster_is_allowed if {
	d := decide(call(vllm, "special-category", null, null, {}))
	d.allowed
	d.route == null
}

test_special_category_never_goes_to_an_eu_saas_target if {
	d := egress.decision with input as call(openai, "special-category", null, null, {})
		with data.targets as targets
		with data.settings.reroute as {"special-category": "mistral"}
	not d.allowed
}

# 4. retention.
test_zero_retention_to_a_provider_offering_it_is_allowed if {
	d := decide(call(openai, "internal", "zero", 0, {}))
	d.allowed
	d.route == null
}

test_zero_retention_to_a_provider_without_it_is_rerouted if {
	d := decide(call(aleph_alpha, "internal", "zero", 0, {}))
	d.rule == "egress.zero_retention"
	not d.allowed # aleph_alpha's API is not OpenAI's: no reroute
}

test_zero_retention_reroutes_openai_flavoured_calls if {
	d := decide(call(object.union(deepseek, {"retention": aleph_alpha.retention}), "internal", "zero", 0, {}))
	d.allowed
	d.route.target == "mistral"
	d.rule == "egress.zero_retention"
}

test_zero_retention_without_a_target_is_denied if {
	d := decide_without_targets(call(object.union(deepseek, {"retention": aleph_alpha.retention}), "internal", "zero", 0, {}))
	not d.allowed
	d.rule == "egress.zero_retention"
}

test_retention_limit_shorter_than_the_provider_is_rerouted if {
	d := decide(call(openai, "internal", "7d", 604800, {}))
	d.route.target == "mistral"
	d.rule == "egress.retention_limit"
	contains(d.reason, "30d")
}

test_retention_limit_without_a_target_is_denied if {
	d := decide_without_targets(call(openai, "internal", "7d", 604800, {}))
	not d.allowed
	d.rule == "egress.retention_limit"
}

test_retention_limit_longer_than_the_provider_is_allowed if {
	d := decide(call(openai, "internal", "90d", 7776000, {}))
	d.allowed
	d.route == null
}

test_unknown_provider_retention_never_meets_a_limit if {
	d := decide_without_targets(call(aleph_alpha, "internal", "90d", 7776000, {}))
	not d.allowed
	d.rule == "egress.retention_limit"
}

# Declared and detected, and what the scan could not read.

with_data(i, extra) := object.union(i, {"data": object.union(i.data, extra)})

upload := {"reason": "binary_upload", "where": "part file", "detail": "audio/wav, 1024 bytes, file call.wav"}

test_undeclared_unreadable_content_is_confidential_and_rerouted if {
	i := with_data(call(openai, null, null, null, {}), {"declared_classification": null, "scan": [upload]})
	d := decide(i)
	d.allowed
	d.route.target == "mistral"
	d.rule == "egress.personal_data_cloud_act"
	startswith(d.reason, "confidential data (undeclared content that could not be scanned: binary_upload at part file: audio/wav")
}

test_undeclared_unreadable_content_without_a_target_is_denied_saying_what if {
	i := with_data(call(openai, null, null, null, {}), {"scan": [upload]})
	d := egress.decision with input as i with data.targets as {}
	not d.allowed
	d.http_status == 403
	contains(d.reason, "could not be scanned: binary_upload at part file")
}

test_undeclared_unreadable_content_may_reach_an_eu_processor if {
	i := with_data(call(mistral, null, null, null, {}), {"scan": [upload]})
	d := decide(i)
	d.allowed
	d.route == null
	contains(d.reason, "confidential data may go to Mistral AI SAS")
}

test_declared_public_uploads_pass_as_declared if {
	i := with_data(call(openai, "public", null, null, {}), {"declared_classification": "public", "scan": [upload]})
	d := decide(i)
	d.allowed
	d.route == null
	d.rule == "egress.allowed"
}

test_detected_personal_data_outranks_a_public_declaration if {
	# ecluse raises the classification; the policy decides on it.
	i := with_data(call(openai, "personal", null, null, {"iban": 1}), {"declared_classification": "public", "scan": "complete"})
	d := decide(i)
	d.route.target == "mistral"
	startswith(d.reason, "personal data may not reach OpenAI OpCo, LLC")
}

test_complete_scans_of_clean_undeclared_calls_use_the_default if {
	i := with_data(call(openai, null, null, null, {}), {"scan": "complete"})
	d := egress.decision with input as i with data.targets as targets with data.settings.default_classification as "internal"
	d.allowed
	d.rule == "egress.allowed"
	contains(d.reason, "internal data")
}

# Unregistered destinations.

unregistered := object.union(openai, {"host": "llm.example.net", "provider": null, "api": null, "entity": null, "retention": null})

with_request(i, extra) := object.union(i, {"request": object.union(i.request, extra)})

test_llm_shaped_calls_to_unregistered_hosts_are_refused if {
	i := with_request(call(unregistered, "public", null, null, {}), {"llm_shaped": true})
	d := egress.decision with input as i with data.targets as targets with data.settings.non_llm_hosts as "inspect"
	not d.allowed
	d.rule == "egress.unregistered_llm_api"
	contains(d.reason, "shaped like an LLM API call")
}

test_other_calls_to_unregistered_hosts_pass_when_inspected if {
	i := with_request(call(unregistered, null, null, null, {}), {"llm_shaped": false, "operation": null, "api": null, "path": "/upload"})
	d := egress.decision with input as i with data.targets as targets with data.settings.non_llm_hosts as "inspect"
	d.allowed
	d.rule == "egress.inspected_non_llm"
}

test_unregistered_hosts_are_refused_when_not_inspecting if {
	i := with_request(call(unregistered, null, null, null, {}), {"llm_shaped": false})
	d := egress.decision with input as i with data.targets as targets with data.settings.non_llm_hosts as "tunnel"
	not d.allowed
	d.rule == "egress.unregistered_destination"
}

test_a_missing_shape_flag_is_refused if {
	d := egress.decision with input as call(unregistered, null, null, null, {}) with data.targets as targets with data.settings.non_llm_hosts as "inspect"
	not d.allowed
}
