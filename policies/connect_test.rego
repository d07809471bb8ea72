package ecluse.connect_test

import data.ecluse.connect

openai := {
	"host": "api.openai.com", "port": 443, "scheme": "https", "provider": "openai", "api": "openai",
	"entity": {"name": "OpenAI OpCo, LLC", "country": "US", "jurisdiction": "US", "cloud_act": true, "eea_processor": false},
	"in_cluster": false, "ip_literal": false, "port_allowed": true,
}

unknown(host) := object.union(openai, {"host": host, "provider": null, "api": null, "entity": null})

decide(destination) := d if {
	d := connect.decision with input as {"stage": "connect", "destination": destination, "source": {}}
}

test_registered_provider_is_intercepted if {
	d := decide(openai)
	d.action == "intercept"
	d.rule == "connect.registered_provider"
	contains(d.reason, "OpenAI OpCo, LLC")
}

test_port_outside_the_allowed_set_is_denied if {
	d := decide(object.union(openai, {"port": 8443, "port_allowed": false}))
	d.action == "deny"
	d.rule == "connect.port_not_allowed"
	contains(d.reason, "8443")
}

test_ip_literal_is_denied if {
	d := decide(object.union(unknown("203.0.113.7"), {"ip_literal": true}))
	d.action == "deny"
	d.rule == "connect.ip_literal"
}

test_unregistered_llm_api_is_denied if {
	d := connect.decision with input as {"stage": "connect", "destination": unknown("llm.example.net"), "source": {}}
		with data.settings.unregistered_llm_hosts as ["*.example.net"]
	d.action == "deny"
	d.rule == "connect.unregistered_llm_api"
}

test_non_llm_host_is_tunnelled if {
	d := connect.decision with input as {"stage": "connect", "destination": unknown("github.com"), "source": {}}
		with data.settings.non_llm_hosts as "tunnel"
	d.action == "tunnel"
	d.rule == "connect.non_llm_host"
}

test_non_llm_hosts_can_be_denied_through_data if {
	d := connect.decision with input as {"stage": "connect", "destination": unknown("github.com"), "source": {}}
		with data.settings.non_llm_hosts as "deny"
	d.action == "deny"
	d.rule == "connect.non_llm_host_denied"
}

test_unregistered_llm_hosts_come_from_data if {
	d := connect.decision with input as {"stage": "connect", "destination": unknown("api.groq.com"), "source": {}}
		with data.settings.unregistered_llm_hosts as []
		with data.settings.non_llm_hosts as "tunnel"
	d.action == "tunnel"
}

test_inspect_mode_intercepts_unregistered_hosts if {
	d := connect.decision with input as {"stage": "connect", "destination": unknown("files.example.com"), "source": {}}
		with data.settings.non_llm_hosts as "inspect"
	d.action == "intercept"
	d.rule == "connect.inspect_unregistered"
}

test_inspect_exceptions_are_tunnelled if {
	d := connect.decision with input as {"stage": "connect", "destination": unknown("updates.pinned.example"), "source": {}}
		with data.settings.non_llm_hosts as "inspect"
		with data.settings.inspect_exceptions as ["*.pinned.example"]
	d.action == "tunnel"
	d.rule == "connect.inspect_exception"
}

test_inspect_mode_still_denies_known_unregistered_llm_hosts if {
	d := connect.decision with input as {"stage": "connect", "destination": unknown("api.perplexity.ai"), "source": {}}
		with data.settings.non_llm_hosts as "inspect"
		with data.settings.unregistered_llm_hosts as ["api.perplexity.ai"]
	d.action == "deny"
	d.rule == "connect.unregistered_llm_api"
}
