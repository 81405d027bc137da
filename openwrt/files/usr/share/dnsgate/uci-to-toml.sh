#!/bin/sh
# Writes the TOML configuration `dnsgate run --config` reads for the
# settings in /etc/config/dnsgate to standard output. /etc/init.d/dnsgate
# runs it at every start and reload. An invalid setting ends it with exit
# status 1 and a message naming the option on standard error.

. /lib/functions.sh
. /usr/share/dnsgate/lib.sh

fail() {
	echo "dnsgate: invalid /etc/config/dnsgate: $*" >&2
	exit 1
}

# Checks that VALUE can be written as a TOML string. Control characters
# are rejected rather than escaped, because no path, URL or name dnsgate
# reads contains one.
check_text() {
	case "$2" in
	*[[:cntrl:]]*) fail "$1 contains a control character" ;;
	esac
}

# Prints VALUE as a TOML basic string (TOML 1.0, "String"), with
# backslashes and quotes escaped. Callers run check_text first, because a
# failure inside $(...) would end only the subshell.
toml_string() {
	printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# Checks that VALUE is a whole number from MIN to MAX.
check_number() {
	local option="$1" value="$2" min="$3" max="$4"
	case "$value" in
	'' | *[!0-9]* | ?????????*) fail "$option must be a number from $min to $max, not '$value'" ;;
	esac
	[ "$value" -ge "$min" ] && [ "$value" -le "$max" ] ||
		fail "$option must be a number from $min to $max, not '$value'"
}

check_choice() {
	local option="$1" value="$2" choices="$3"
	list_contains choices "$value" || fail "$option must be one of: $choices; not '$value'"
}

# Checks the scheme of an upstream URL. The daemon checks the rest.
check_upstream_url() {
	local option="$1" value="$2"
	case "$value" in
	udp://?* | tcp://?* | tls://?* | quic://?* | https://?*) ;;
	*) fail "$option must be a udp://, tcp://, tls://, quic:// or https:// URL, not '$value'" ;;
	esac
}

emit_dataplane() {
	local block_mode block_ttl manage_dnsmasq fallback
	config_get block_mode main block_mode null
	config_get block_ttl main block_ttl 10
	config_get_bool manage_dnsmasq main manage_dnsmasq 1
	config_get_bool fallback main fallback 1
	check_choice main.block_mode "$block_mode" "null nxdomain refused"
	check_number main.block_ttl "$block_ttl" 0 604800

	echo "[dataplane]"
	echo "block_mode = $(toml_string "$block_mode")"
	echo "block_ttl = $block_ttl"
	# While the daemon is down, dnsmasq on its new port answers what the
	# kernel does not.
	[ "$manage_dnsmasq" = 1 ] && [ "$fallback" = 1 ] && echo "fallback_port = $DNSGATE_DNSMASQ_PORT"
	echo
}

emit_list() {
	local section="$1" enabled location format role
	config_get_bool enabled "$section" enabled 1
	[ "$enabled" = 1 ] || return 0
	config_get location "$section" location
	config_get format "$section" format auto
	config_get role "$section" role block
	[ -n "$location" ] || fail "list section '$section' has no location"
	check_choice "$section.format" "$format" "auto hosts domains wildcard adblock regex dnsmasq rpz unbound"
	check_choice "$section.role" "$role" "block allow"
	check_text "$section.location" "$location"
	case "$location" in
	/* | http://* | https://*) ;;
	*) fail "$section.location '$location' must be an absolute path or an http:// or https:// URL" ;;
	esac

	echo "[[lists]]"
	echo "location = $(toml_string "$location")"
	echo "format = \"$format\""
	echo "role = \"$role\""
	echo
}

UPSTREAMS=0

count_upstream() {
	local enabled
	config_get_bool enabled "$1" enabled 1
	[ "$enabled" = 1 ] && UPSTREAMS=$((UPSTREAMS + 1))
}

BOOTSTRAP=""

append_bootstrap() {
	check_upstream_url "$2.bootstrap" "$1"
	check_text "$2.bootstrap" "$1"
	BOOTSTRAP="${BOOTSTRAP:+$BOOTSTRAP, }$(toml_string "$1")"
}

emit_upstream() {
	local section="$1" enabled url tls_name ca_file
	config_get_bool enabled "$section" enabled 1
	[ "$enabled" = 1 ] || return 0
	config_get url "$section" url
	config_get tls_name "$section" tls_name
	config_get ca_file "$section" ca_file
	[ -n "$url" ] || fail "upstream section '$section' has no url"
	check_upstream_url "$section.url" "$url"
	check_text "$section.url" "$url"
	check_text "$section.tls_name" "$tls_name"
	check_text "$section.ca_file" "$ca_file"
	BOOTSTRAP=""
	config_list_foreach "$section" bootstrap append_bootstrap "$section"

	echo "[[resolver.upstreams]]"
	echo "url = $(toml_string "$url")"
	[ -n "$tls_name" ] && echo "tls_name = $(toml_string "$tls_name")"
	[ -n "$ca_file" ] && echo "ca_file = $(toml_string "$ca_file")"
	[ -n "$BOOTSTRAP" ] && echo "bootstrap = [$BOOTSTRAP]"
	echo
}

emit_resolver() {
	local cache_size manage_dnsmasq dnsmasq_upstream dnsmasq_url domain
	config_get cache_size main cache_size 4096
	config_get_bool manage_dnsmasq main manage_dnsmasq 1
	config_get_bool dnsmasq_upstream main dnsmasq_upstream 1
	check_number main.cache_size "$cache_size" 0 1048576
	dnsmasq_url="udp://127.0.0.1:$DNSGATE_DNSMASQ_PORT"

	echo "[resolver.cache]"
	echo "size_bytes = $((cache_size * 1024))"
	echo
	echo "[resolver.local]"
	domain="$(dnsgate_local_domain)"
	check_text dhcp.domain "$domain"
	echo "domain = $(toml_string "$domain")"
	# dnsmasq resolves the DHCP clients' names and the reverse zones.
	[ "$manage_dnsmasq" = 1 ] && echo "server = \"$dnsmasq_url\""
	echo

	config_foreach count_upstream upstream
	if [ "$UPSTREAMS" -gt 0 ]; then
		config_foreach emit_upstream upstream
	elif [ "$manage_dnsmasq" = 1 ] && [ "$dnsmasq_upstream" = 1 ]; then
		echo "# No upstream section is enabled: dnsmasq forwards to the WAN's resolvers."
		echo "[[resolver.upstreams]]"
		echo "url = \"$dnsmasq_url\""
		echo
	fi
}

emit_server() {
	local option value
	echo "[server]"
	for option in dns_port:53 dot_port:853 doq_port:853 doh_port:8443; do
		config_get value main "${option%%:*}" "${option#*:}"
		check_number "main.${option%%:*}" "$value" 1 65535
		echo "${option%%:*} = $value"
	done
	echo "doh_path = \"$DNSGATE_DOH_PATH\""
	echo
}

emit_tls() {
	local name cert_file key_file
	name="$(dnsgate_resolver_name)"
	case "$name" in
	*[!a-z0-9.-]* | .* | *. | *..*) fail "main.resolver_name must be a DNS name such as router.lan, not '$name'" ;;
	esac
	config_get cert_file main cert_file
	config_get key_file main key_file
	[ "${cert_file:+set}" = "${key_file:+set}" ] ||
		fail "main.cert_file and main.key_file must be set together"
	check_text main.cert_file "$cert_file"
	check_text main.key_file "$key_file"

	echo "[tls]"
	echo "resolver_name = \"$name\""
	[ -n "$cert_file" ] && echo "cert_file = $(toml_string "$cert_file")"
	[ -n "$key_file" ] && echo "key_file = $(toml_string "$key_file")"
	return 0
}

config_load dnsgate
echo "# Written by /usr/share/dnsgate/uci-to-toml.sh from /etc/config/dnsgate."
echo "# Edit /etc/config/dnsgate instead: this file is rewritten at every start."
echo
emit_dataplane
config_foreach emit_list list
emit_resolver
emit_server
emit_tls
