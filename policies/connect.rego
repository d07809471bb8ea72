# Connect stage: what happens to a destination named by CONNECT (or by an
# absolute-form http:// URL). Returns {"action": "intercept"|"tunnel"|"deny", ...}.
package ecluse.connect

import data.ecluse.lib

dest := input.destination

decision := lib.connect(
	"intercept", "connect.registered_provider",
	sprintf("%s is an LLM API of %s", [dest.host, dest.entity.name]),
) if {
	# The common case first; it excludes what the denials below catch.
	dest.port_allowed
	not dest.ip_literal
	dest.provider != null
} else := lib.connect(
	"deny", "connect.port_not_allowed",
	sprintf("port %d is not an allowed destination port for %s (upstream.connect_ports / http_ports)", [dest.port, dest.scheme]),
) if {
	not dest.port_allowed
} else := lib.connect(
	"deny", "connect.ip_literal",
	sprintf("IP-literal destination %s is refused: name the host", [dest.host]),
) if {
	dest.ip_literal
} else := lib.connect(
	"intercept", "connect.registered_provider",
	sprintf("%s is an LLM API of %s", [dest.host, dest.entity.name]),
) if {
	dest.provider != null
} else := lib.connect(
	"deny", "connect.unregistered_llm_api",
	sprintf("%s is an LLM API without an entity registry entry: its legal entity is unknown", [dest.host]),
) if {
	lib.unregistered_llm_host(dest.host)
} else := lib.connect(
	"tunnel", "connect.inspect_exception",
	sprintf("%s is not a registered LLM API and is listed in settings.inspect_exceptions", [dest.host]),
) if {
	data.settings.non_llm_hosts == "inspect"
	lib.inspect_exception(dest.host)
} else := lib.connect(
	"intercept", "connect.inspect_unregistered",
	sprintf("%s is not a registered LLM API: intercepted so that no LLM API call reaches it unregistered (settings.non_llm_hosts is inspect)", [dest.host]),
) if {
	data.settings.non_llm_hosts == "inspect"
} else := lib.connect(
	"tunnel", "connect.non_llm_host",
	sprintf("%s is not an LLM API", [dest.host]),
) if {
	data.settings.non_llm_hosts == "tunnel"
} else := lib.connect(
	"deny", "connect.non_llm_host_denied",
	sprintf("%s is not an LLM API, and settings.non_llm_hosts is %s", [dest.host, data.settings.non_llm_hosts]),
)
