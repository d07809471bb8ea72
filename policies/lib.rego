# Helpers shared by the connect and egress policies.
package ecluse.lib

# Decision documents: the shape ecluse expects back (see README, "Policies").
connect(action, rule, reason) := {"action": action, "rule": rule, "reason": reason}

allow(rule, reason) := {
	"allowed": true, "rule": rule, "reason": reason,
	"http_status": 200, "route": null, "headers": {},
}

deny(rule, reason) := {
	"allowed": false, "rule": rule, "reason": reason,
	"http_status": 403, "route": null, "headers": {},
}

reroute(rule, reason, target) := {
	"allowed": true, "rule": rule, "reason": reason,
	"http_status": 200, "route": {"target": target}, "headers": {},
}

# A host that serves an LLM API but has no registry entry, so its legal entity
# (and what may be sent to it) is unknown.
unregistered_llm_host(host) if {
	some pattern in data.settings.unregistered_llm_hosts
	glob.match(pattern, ["."], host)
}

# Hosts that settings.non_llm_hosts = "inspect" still tunnels blind: clients
# that pin their certificates, and traffic too heavy to inspect.
inspect_exception(host) if {
	some pattern in data.settings.inspect_exceptions
	glob.match(pattern, ["."], host)
}

# The scan of the request text found personal data.
pii_found if {
	some count in input.data.pii
	count > 0
}

# Jurisdictions personal data may go to without a CLOUD Act exposure: the EEA
# and countries with an EU adequacy decision (settings.adequate_jurisdictions).
adequate(entity) if {
	entity.eea_processor
} else := true if {
	entity.jurisdiction in data.settings.adequate_jurisdictions
}
