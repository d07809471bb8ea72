# Request stage: may this call reach this legal entity? Returns the decision
# document {"allowed", "reason", "rule", "http_status", "route", "headers"}.
#
# Order matters: the first matching rule decides.
#   1. destinations without a registry entry are denied;
#   2. special-category data only reaches in-cluster models;
#   3. personal or confidential data never reaches an entity within US CLOUD
#      Act reach, nor one outside the EEA without an adequacy decision;
#   4. a zero-retention call only reaches a provider offering zero retention,
#      and a bounded-retention call one that retains no longer;
#   5. anything else (public and internal data) is allowed.
# Where a rule refuses a destination, the call is rerouted to the target that
# settings.reroute names when that target is configured, serves the operation
# and satisfies the rule; otherwise it is denied with the reason.
package ecluse.egress

import data.ecluse.lib

dest := input.destination

entity := input.destination.entity

# The declared classification wins; undeclared text in which the scan found
# personal data counts as personal.
classification := input.data.classification if {
	input.data.classification != null
} else := "personal" if {
	lib.pii_found
} else := data.settings.default_classification

sensitive := classification in {"personal", "confidential"}

decision := lib.deny(
	"egress.unregistered_destination",
	sprintf("%s has no entity registry entry: its legal entity is unknown", [dest.host]),
) if {
	dest.provider == null
} else := special_category if {
	classification == "special-category"
	not dest.in_cluster
} else := cloud_act if {
	sensitive
	not dest.in_cluster
	entity.cloud_act
} else := no_adequacy if {
	sensitive
	not dest.in_cluster
	not lib.adequate(entity)
} else := zero_retention if {
	input.data.retention == "zero"
	not dest.in_cluster
	not dest.retention.zero_retention_available
} else := retention_limit if {
	input.data.retention != "zero"
	input.data.retention_max_seconds != null
	not dest.in_cluster
	not within_retention(input.data.retention_max_seconds)
} else := lib.allow(
	"egress.allowed",
	sprintf("%s data may go to %s (%s)", [classification, entity.name, entity.jurisdiction]),
)

special_category := lib.reroute(
	"egress.special_category_in_cluster",
	sprintf("special-category data stays in-cluster: rerouted from %s to target %s", [entity.name, target]),
	target,
) if {
	target := reroute_target("special-category")
} else := lib.deny(
	"egress.special_category_in_cluster",
	sprintf("special-category data may only reach in-cluster models, not %s (%s)", [entity.name, entity.jurisdiction]),
)

cloud_act := lib.reroute(
	"egress.personal_data_cloud_act",
	sprintf("%s data may not reach %s, a %s entity within US CLOUD Act reach: rerouted to target %s", [classification, entity.name, entity.jurisdiction, target]),
	target,
) if {
	target := reroute_target(classification)
} else := lib.deny(
	"egress.personal_data_cloud_act",
	sprintf("%s data may not reach %s, a %s entity within US CLOUD Act reach, and no EU target is configured for %s calls", [classification, entity.name, entity.jurisdiction, operation]),
)

no_adequacy := lib.reroute(
	"egress.personal_data_adequacy",
	sprintf("%s data may not reach %s (%s): not an EEA processor and no adequacy decision; rerouted to target %s", [classification, entity.name, entity.jurisdiction, target]),
	target,
) if {
	target := reroute_target(classification)
} else := lib.deny(
	"egress.personal_data_adequacy",
	sprintf("%s data may not reach %s (%s): not an EEA processor and no adequacy decision", [classification, entity.name, entity.jurisdiction]),
)

zero_retention := lib.reroute(
	"egress.zero_retention",
	sprintf("zero retention was requested and %s does not offer it: rerouted to target %s", [entity.name, target]),
	target,
) if {
	target := reroute_target("retention")
} else := lib.deny(
	"egress.zero_retention",
	sprintf("zero retention was requested and %s does not offer it", [entity.name]),
)

retention_limit := lib.reroute(
	"egress.retention_limit",
	sprintf("%s retains prompts for %s, longer than the %s allowed: rerouted to target %s", [entity.name, dest.retention.default, input.data.retention, target]),
	target,
) if {
	target := reroute_target("retention")
} else := lib.deny(
	"egress.retention_limit",
	sprintf("%s retains prompts for %s, longer than the %s allowed", [entity.name, dest.retention.default, input.data.retention]),
)

operation := input.request.operation if input.request.operation != null

operation := "unrecognised" if input.request.operation == null

within_retention(max) if {
	dest.retention.default_seconds != null
	dest.retention.default_seconds <= max
}

# The target settings.reroute names for a constraint, when it is configured,
# serves this operation, can take a translated OpenAI call, and satisfies the
# constraint itself.
reroute_target(constraint) := name if {
	name := data.settings.reroute[constraint]
	target := data.targets[name]
	input.request.operation in target.operations
	dest.api == "openai"
	satisfies(constraint, target)
}

satisfies("special-category", target) if target.in_cluster

satisfies(constraint, target) if {
	constraint in {"personal", "confidential"}
	target.in_cluster
}

satisfies(constraint, target) if {
	constraint in {"personal", "confidential"}
	not target.entity.cloud_act
	lib.adequate(target.entity)
}

satisfies("retention", target) if target.in_cluster

satisfies("retention", target) if target.retention.zero_retention_available
