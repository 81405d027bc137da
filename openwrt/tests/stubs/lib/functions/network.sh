# Test stand-in for OpenWrt's /lib/functions/network.sh. netifd's state
# comes from /tmp/network.state, lines of "NETWORK KEY VALUE...", with the
# keys device, ipaddrs and ipaddrs6.

network_lookup() {
	local variable="$1" key="$2" network="$3" value
	value="$(awk -v network="$network" -v key="$key" \
		'$1 == network && $2 == key { $1 = ""; $2 = ""; sub(/^ +/, ""); print }' /tmp/network.state 2>/dev/null)"
	eval "$variable=\"\$value\""
	[ -n "$value" ]
}

network_get_device() { network_lookup "$1" device "$2"; }
network_get_ipaddrs() { network_lookup "$1" ipaddrs "$2"; }
network_get_ipaddrs6() { network_lookup "$1" ipaddrs6 "$2"; }
