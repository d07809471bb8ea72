# Request stage: may this call reach this legal entity? Returns the decision
# document {"allowed", "reason", "rule", "http_status", "route", "headers"}.
#
# Order matters: the first matching rule decides.
#   1. destinations without a registry entry are denied (with
#      settings.non_llm_hosts = "inspect", only calls shaped like an LLM API
#      call are; everything else to an unregistered host passes);
#   2. special-category data only reaches in-cluster models;
#   3. personal or confidential data never reaches an entity within US CLOUD
#      Act reach, nor one outside the EEA without an adequacy decision;
#   4. a zero-retention call only reaches a provider offering zero retention,
#      and a bounded-retention call one that retains no longer;
#   5. anything else (public and internal data) is allowed.
# Where a rule refuses a destination, the call is rerouted to the target that
# settings.reroute names when that target is configured, serves the operation
# and satisfies the rule; otherwise it is denied with the reason.
#
# Every call runs this file, so it is written for regorus's interpreter, in
# which each rule reference and function call costs a lookup per call: the
# rules read input.destination directly rather than through aliases, test
# the classification against a set literal rather than a helper rule, and
# write the decision documents out rather than call lib.allow, lib.deny or
# lib.reroute (README, "Keeping policies fast").
package ecluse.egress

import data.ecluse.lib

# ecluse puts the strictest of declared and detected in
# input.data.classification (the declaration alone where
# settings.trust_declared_classification is true). Undeclared content that the
# scan could not fully read (binary uploads, media, unknown codings) counts as
# confidential: what it holds is unknown. Only what is undeclared, unread and
# clean falls back to the default.
classification := input.data.classification if {
	input.data.classification != null
} else := "personal" if {
	lib.pii_found
} else := "confidential" if {
	input.data.scan != "complete"
} else := data.settings.default_classification

# Appended to a refusal's reason when the classification came from content
# the scan could not read, so the app's team sees what to declare or change.
unread_note := sprintf(" (undeclared content that could not be scanned: %s)", [concat("; ", [sprintf("%s at %s: %s", [u.reason, u.where, u.detail]) | some u in input.data.scan])]) if {
	input.data.classification == null
	input.data.scan != "complete"
} else := ""

decision := {
	"allowed": false, "rule": "egress.unregistered_llm_api",
	"reason": sprintf("%s %s to %s is shaped like an LLM API call, and %s has no entity registry entry: its legal entity is unknown", [input.request.method, input.request.path, input.destination.host, input.destination.host]),
	"http_status": 403, "route": null, "headers": {},
} if {
	input.destination.provider == null
	input.request.llm_shaped
} else := {
	"allowed": true, "rule": "egress.inspected_non_llm",
	"reason": sprintf("%s is not a registered LLM API and the call is not shaped like an LLM API call", [input.destination.host]),
	"http_status": 200, "route": null, "headers": {},
} if {
	input.destination.provider == null
	input.request.llm_shaped == false
	data.settings.non_llm_hosts == "inspect"
} else := {
	"allowed": false, "rule": "egress.unregistered_destination",
	"reason": sprintf("%s has no entity registry entry: its legal entity is unknown", [input.destination.host]),
	"http_status": 403, "route": null, "headers": {},
} if {
	input.destination.provider == null
} else := special_category if {
	classification == "special-category"
	not input.destination.in_cluster
} else := cloud_act if {
	classification in {"personal", "confidential"}
	not input.destination.in_cluster
	input.destination.entity.cloud_act
} else := no_adequacy if {
	classification in {"personal", "confidential"}
	not input.destination.in_cluster
	not lib.adequate(input.destination.entity)
} else := zero_retention if {
	input.data.retention == "zero"
	not input.destination.in_cluster
	not input.destination.retention.zero_retention_available
} else := retention_limit if {
	input.data.retention != "zero"
	input.data.retention_max_seconds != null
	not input.destination.in_cluster
	not within_retention(input.data.retention_max_seconds)
} else := {
	"allowed": true, "rule": "egress.allowed",
	"reason": sprintf("%s data may go to %s (%s)", [classification, input.destination.entity.name, input.destination.entity.jurisdiction]),
	"http_status": 200, "route": null, "headers": {},
}

special_category := {
	"allowed": true, "rule": "egress.special_category_in_cluster",
	"reason": sprintf("special-category data stays in-cluster: rerouted from %s to target %s", [input.destination.entity.name, target]),
	"http_status": 200, "route": {"target": target}, "headers": {},
} if {
	target := reroute_target("special-category")
} else := {
	"allowed": false, "rule": "egress.special_category_in_cluster",
	"reason": sprintf("special-category data may only reach in-cluster models, not %s (%s)", [input.destination.entity.name, input.destination.entity.jurisdiction]),
	"http_status": 403, "route": null, "headers": {},
}

cloud_act := {
	"allowed": true, "rule": "egress.personal_data_cloud_act",
	"reason": sprintf("%s data%s may not reach %s, a %s entity within US CLOUD Act reach: rerouted to target %s", [classification, unread_note, input.destination.entity.name, input.destination.entity.jurisdiction, target]),
	"http_status": 200, "route": {"target": target}, "headers": {},
} if {
	target := reroute_target(classification)
} else := {
	"allowed": false, "rule": "egress.personal_data_cloud_act",
	"reason": sprintf("%s data%s may not reach %s, a %s entity within US CLOUD Act reach, and no EU target is configured for %s calls", [classification, unread_note, input.destination.entity.name, input.destination.entity.jurisdiction, operation]),
	"http_status": 403, "route": null, "headers": {},
}

no_adequacy := {
	"allowed": true, "rule": "egress.personal_data_adequacy",
	"reason": sprintf("%s data%s may not reach %s (%s): not an EEA processor and no adequacy decision; rerouted to target %s", [classification, unread_note, input.destination.entity.name, input.destination.entity.jurisdiction, target]),
	"http_status": 200, "route": {"target": target}, "headers": {},
} if {
	target := reroute_target(classification)
} else := {
	"allowed": false, "rule": "egress.personal_data_adequacy",
	"reason": sprintf("%s data%s may not reach %s (%s): not an EEA processor and no adequacy decision", [classification, unread_note, input.destination.entity.name, input.destination.entity.jurisdiction]),
	"http_status": 403, "route": null, "headers": {},
}

zero_retention := {
	"allowed": true, "rule": "egress.zero_retention",
	"reason": sprintf("zero retention was requested and %s does not offer it: rerouted to target %s", [input.destination.entity.name, target]),
	"http_status": 200, "route": {"target": target}, "headers": {},
} if {
	target := reroute_target("retention")
} else := {
	"allowed": false, "rule": "egress.zero_retention",
	"reason": sprintf("zero retention was requested and %s does not offer it", [input.destination.entity.name]),
	"http_status": 403, "route": null, "headers": {},
}

retention_limit := {
	"allowed": true, "rule": "egress.retention_limit",
	"reason": sprintf("%s retains prompts for %s, longer than the %s allowed: rerouted to target %s", [input.destination.entity.name, input.destination.retention.default, input.data.retention, target]),
	"http_status": 200, "route": {"target": target}, "headers": {},
} if {
	target := reroute_target("retention")
} else := {
	"allowed": false, "rule": "egress.retention_limit",
	"reason": sprintf("%s retains prompts for %s, longer than the %s allowed", [input.destination.entity.name, input.destination.retention.default, input.data.retention]),
	"http_status": 403, "route": null, "headers": {},
}

operation := input.request.operation if input.request.operation != null

operation := "unrecognised" if input.request.operation == null

within_retention(max) if {
	input.destination.retention.default_seconds != null
	input.destination.retention.default_seconds <= max
}

# The target settings.reroute names for a constraint, when it is configured,
# can take this call (natively or translated: `apis` lists, per API the app
# called, the operations the target takes), and satisfies the constraint
# itself. Data documents are bound to variables before indexing:
# indexing data.* with a variable makes regorus look for a rule at that path
# on every call.
reroute_target(constraint) := name if {
	api := input.destination.api
	reroutes := data.settings.reroute
	name := reroutes[constraint]
	targets := data.targets
	target := targets[name]
	accepted := target.apis[api]
	input.request.operation in accepted
	satisfies(constraint, target)
}

# In-cluster targets satisfy every constraint; otherwise personal and
# confidential data need an adequate entity outside CLOUD Act reach, and
# retention a target offering zero retention. One definition with an else
# chain, not one per case: regorus pays a call for each definition.
satisfies(constraint, target) if {
	target.in_cluster
} else := true if {
	constraint in {"personal", "confidential"}
	not target.entity.cloud_act
	lib.adequate(target.entity)
} else := true if {
	constraint == "retention"
	target.retention.zero_retention_available
}
