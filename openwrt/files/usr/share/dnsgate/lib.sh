# Shell functions shared by /etc/init.d/dnsgate, the UCI translation and
# the package scripts: reading /etc/config/dnsgate, and the changes dnsgate
# makes to dnsmasq and odhcpd (/etc/config/dhcp) and undoes on stop.
# Callers source /lib/functions.sh first.

# dnsmasq keeps DHCP and the LAN's host names on this port while dnsgate
# serves port 53.
DNSGATE_DNSMASQ_PORT=54
# Path of the generated daemon configuration (tmpfs: rewritten at every
# start, never on flash).
DNSGATE_TOML=/var/etc/dnsgate.toml
DNSGATE_DEFAULT_STATE_DIR=/etc/dnsgate/state
# DoH path the daemon serves, advertised in DNR.
DNSGATE_DOH_PATH=/dns-query

dnsgate_log() {
	logger -t dnsgate -p "daemon.${2:-notice}" "$1"
	echo "dnsgate: $1" >&2
}

# Prints the resolver name: the 'resolver_name' option, or the system
# hostname under the dnsmasq domain, in lower case.
dnsgate_resolver_name() {
	local name host domain
	config_get name main resolver_name
	if [ -z "$name" ]; then
		host="$(uci -q get system.@system[0].hostname)"
		domain="$(dnsgate_local_domain)"
		name="${host:-openwrt}.${domain}"
	fi
	echo "$name" | tr 'A-Z' 'a-z'
}

# Prints the domain dnsmasq serves the LAN's host names under.
dnsgate_local_domain() {
	local domain
	domain="$(uci -q get dhcp.@dnsmasq[0].domain)"
	echo "${domain:-lan}"
}

dnsgate_state_dir() {
	local dir
	config_get dir main state_dir "$DNSGATE_DEFAULT_STATE_DIR"
	echo "$dir"
}

# Prints the names of the DHCP sections (/etc/config/dhcp) that serve the
# logical networks in the 'interface' list.
dnsgate_dhcp_sections() {
	local networks section network
	config_get networks main interface
	for section in $(uci -q show dhcp | sed -n 's/^dhcp\.\([A-Za-z0-9_]*\|@dhcp\[[0-9]*\]\)=dhcp$/\1/p'); do
		network="$(uci -q get "dhcp.$section.interface")"
		list_contains networks "$network" && echo "$section"
	done
}

# Moves dnsmasq to DNSGATE_DNSMASQ_PORT and makes its DHCP server hand out
# its own address as DNS server, which dnsmasq does by itself only on port
# 53 (0.0.0.0 in dhcp-option means "this host"). Records what it changed in
# STATE/dnsmasq.saved, once, so dnsgate_dnsmasq_restore can undo exactly
# that. Writes /etc/config/dhcp and restarts dnsmasq only when something
# changed, so a normal start writes nothing to flash.
dnsgate_dnsmasq_take_over() {
	local state="$1" saved="$1/dnsmasq.saved"
	local port changed=0 section added=""

	[ -x /etc/init.d/dnsmasq ] || return 0
	uci -q get dhcp.@dnsmasq[0] >/dev/null || return 0

	port="$(uci -q get dhcp.@dnsmasq[0].port)"
	if [ "$port" != "$DNSGATE_DNSMASQ_PORT" ]; then
		[ -f "$saved" ] || echo "port=$port" >"$saved"
		uci set "dhcp.@dnsmasq[0].port=$DNSGATE_DNSMASQ_PORT"
		changed=1
	fi
	for section in $(dnsgate_dhcp_sections); do
		# A DNS server the user set already wins.
		uci -q get "dhcp.$section.dhcp_option" | grep -qE '(^| )(6|option:dns-server),' && continue
		uci add_list "dhcp.$section.dhcp_option=6,0.0.0.0"
		added="$added $section"
		changed=1
	done
	[ -n "$added" ] && echo "option6=${added# }" >>"$saved"

	[ "$changed" = 1 ] || return 0
	uci commit dhcp
	dnsgate_log "moved dnsmasq to port $DNSGATE_DNSMASQ_PORT; dnsgate answers port 53"
	/etc/init.d/dnsmasq restart
}

# Undoes dnsgate_dnsmasq_take_over: the port dnsmasq had before (53 when it
# had none) and the DHCP options it added.
dnsgate_dnsmasq_restore() {
	local state="$1" saved="$1/dnsmasq.saved"
	local line port="" sections="" section

	[ -f "$saved" ] || return 0
	while read -r line; do
		case "$line" in
		port=*) port="${line#port=}" ;;
		option6=*) sections="$sections ${line#option6=}" ;;
		esac
	done <"$saved"

	if [ -n "$port" ]; then
		uci set "dhcp.@dnsmasq[0].port=$port"
	else
		uci -q delete dhcp.@dnsmasq[0].port
	fi
	for section in $sections; do
		uci -q del_list "dhcp.$section.dhcp_option=6,0.0.0.0"
	done
	uci commit dhcp
	rm -f "$saved"
	dnsgate_log "gave port 53 back to dnsmasq"
	[ -x /etc/init.d/dnsmasq ] && /etc/init.d/dnsmasq restart
}

# Prints odhcpd 'dnr' entries (RFC 9463 as odhcpd reads them: priority,
# authentication domain name, addresses, SvcParams) for dnsgate's
# endpoints. $1 is the comma-separated address list.
dnsgate_dnr_entries() {
	local addresses="$1" name dot_port doq_port doh_port
	name="$(dnsgate_resolver_name)"
	config_get dot_port main dot_port 853
	config_get doq_port main doq_port 853
	config_get doh_port main doh_port 8443
	if [ "$dot_port" = "$doq_port" ]; then
		echo "1 $name $addresses alpn=dot,doq port=$dot_port"
	else
		echo "1 $name $addresses alpn=dot port=$dot_port"
		echo "2 $name $addresses alpn=doq port=$doq_port"
	fi
	echo "3 $name $addresses alpn=h2 port=$doh_port dohpath=$DNSGATE_DOH_PATH{?dns}"
}

# Prints the addresses DNR announces for one logical network: its IPv4
# addresses and its unique-local IPv6 ones, comma-separated. Global IPv6
# prefixes can change daily, and every change would rewrite
# /etc/config/dhcp on flash.
dnsgate_dnr_addresses() {
	local network="$1" v4 v6 address list=""
	network_get_ipaddrs v4 "$network"
	network_get_ipaddrs6 v6 "$network"
	for address in $v4; do
		list="$list,$address"
	done
	for address in $v6; do
		case "$address" in
		[fF][cdCD]*) list="$list,$address" ;;
		esac
	done
	echo "${list#,}"
}

# Prints the entries of SECTION in a STATE/dnr.saved file ("=") without
# the section column, or the lines of every other section ("!") as they are.
dnsgate_saved_entries() {
	[ -f "$1" ] || return 0
	awk -F '\t' -v section="$2" -v match_section="$3" '
		match_section == "=" && $1 == section { sub(/^[^\t]*\t/, ""); print }
		match_section == "!" && $1 != section { print }
	' "$1"
}

# Makes the 'dnr' list of every DHCP section of dnsgate's networks hold
# dnsgate's endpoints, keeping entries of other origins. Entries it wrote
# are recorded in STATE/dnr.saved so they can be replaced and removed.
dnsgate_dnr_update() {
	local state="$1" saved="$1/dnr.saved"
	local section network addresses entries wanted current changed=0 entry
	local IFS_SAVE="$IFS"
	local newline='
'
	[ -x /etc/init.d/odhcpd ] || return 0
	. /lib/functions/network.sh

	for section in $(dnsgate_dhcp_sections); do
		network="$(uci -q get "dhcp.$section.interface")"
		addresses="$(dnsgate_dnr_addresses "$network")"
		[ -n "$addresses" ] || continue
		wanted="$(dnsgate_dnr_entries "$addresses")"
		current="$(dnsgate_saved_entries "$saved" "$section" =)"
		[ "$wanted" = "$current" ] && continue

		IFS="$newline"
		for entry in $current; do
			uci -q del_list "dhcp.$section.dnr=$entry"
		done
		for entry in $wanted; do
			uci add_list "dhcp.$section.dnr=$entry"
		done
		IFS="$IFS_SAVE"
		{
			dnsgate_saved_entries "$saved" "$section" !
			echo "$wanted" | sed "s/^/$section	/"
		} >"$saved.new"
		mv "$saved.new" "$saved"
		changed=1
	done

	[ "$changed" = 1 ] || return 0
	uci commit dhcp
	dnsgate_log "announcing the encrypted endpoints in odhcpd's DNR options"
	/etc/init.d/odhcpd reload
}

# Removes the 'dnr' entries dnsgate_dnr_update wrote.
dnsgate_dnr_clear() {
	local state="$1" saved="$1/dnr.saved" section entry

	[ -s "$saved" ] || { rm -f "$saved"; return 0; }
	while IFS="	" read -r section entry; do
		uci -q del_list "dhcp.$section.dnr=$entry"
	done <"$saved"
	uci commit dhcp
	rm -f "$saved"
	[ -x /etc/init.d/odhcpd ] && /etc/init.d/odhcpd reload
}
