# Test stand-in for OpenWrt's /lib/functions.sh: the configuration helpers
# dnsgate's scripts call, with the same calling conventions. config_load
# evaluates `uci export` output, whose config, option and list lines are
# the shell functions below.

append() {
	local variable="$1" value="$2" separator="${3:- }"
	eval "$variable=\"\${$variable:+\${$variable}\$separator}\$value\""
}

list_contains() {
	local variable="$1" wanted="$2" item
	eval "set -- \$$variable"
	for item in "$@"; do
		[ "$item" = "$wanted" ] && return 0
	done
	return 1
}

package() {
	return 0
}

config() {
	local type="$1" name="$2"
	CONFIG_SECTION_COUNT=$((CONFIG_SECTION_COUNT + 1))
	name="${name:-cfg$CONFIG_SECTION_COUNT}"
	append CONFIG_SECTIONS "$name"
	CONFIG_SECTION="$name"
	eval "CONFIG_${name}_TYPE=\"\$type\""
}

option() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\"\$2\""
}

list() {
	local length
	eval "length=\"\${CONFIG_${CONFIG_SECTION}_$1_LENGTH:-0}\""
	[ "$length" = 0 ] && append CONFIG_LIST_STATE "${CONFIG_SECTION}_$1"
	length=$((length + 1))
	eval "CONFIG_${CONFIG_SECTION}_$1_ITEM$length=\"\$2\""
	eval "CONFIG_${CONFIG_SECTION}_$1_LENGTH=$length"
	append "CONFIG_${CONFIG_SECTION}_$1" "$2"
}

# Like the real one, loading again forgets the sections and lists of the
# previous load.
config_load() {
	local section list
	for section in $CONFIG_SECTIONS; do
		unset "CONFIG_${section}_TYPE"
	done
	for list in $CONFIG_LIST_STATE; do
		eval "CONFIG_${list}=''; CONFIG_${list}_LENGTH=0"
	done
	CONFIG_LIST_STATE=""
	CONFIG_SECTIONS=""
	CONFIG_SECTION_COUNT=0
	eval "$(uci -q -S -n export "$1")"
}

# config_get VARIABLE SECTION OPTION [DEFAULT], or config_get SECTION OPTION
# to print the value.
config_get() {
	if [ $# -eq 2 ]; then
		eval "echo \"\${CONFIG_$1_$2}\""
		return 0
	fi
	eval "$1=\"\${CONFIG_$2_$3:-\$4}\""
}

config_get_bool() {
	local value
	config_get value "$2" "$3" "$4"
	case "$value" in
	1 | on | true | yes | enabled) value=1 ;;
	0 | off | false | no | disabled) value=0 ;;
	*) value="$4" ;;
	esac
	eval "$1=\"\$value\""
}

config_foreach() {
	local callback="$1" type="$2" section section_type
	shift 2
	for section in $CONFIG_SECTIONS; do
		eval "section_type=\"\${CONFIG_${section}_TYPE}\""
		[ -n "$type" ] && [ "$section_type" != "$type" ] && continue
		"$callback" "$section" "$@"
	done
}

config_list_foreach() {
	local section="$1" option="$2" callback="$3" length index value
	shift 3
	eval "length=\"\${CONFIG_${section}_${option}_LENGTH:-0}\""
	index=1
	while [ "$index" -le "$length" ]; do
		eval "value=\"\${CONFIG_${section}_${option}_ITEM$index}\""
		"$callback" "$value" "$@"
		index=$((index + 1))
	done
}

# default_postinst SCRIPT: runs the package's uci-defaults scripts once and
# deletes them, then enables (unless PKG_UPGRADE=1) and starts its init
# scripts. The package's file list sits next to SCRIPT, as opkg leaves it
# in /usr/lib/opkg/info.
default_postinst() {
	local list="${1%.*}.list" file
	for file in $(grep '^/etc/uci-defaults/' "$list"); do
		[ -f "$file" ] && (cd /etc/uci-defaults && . "$file") && rm -f "$file"
	done
	for file in $(grep '^/etc/init.d/' "$list"); do
		[ "$PKG_UPGRADE" = 1 ] || "$file" enable
		"$file" start
	done
	return 0
}

# default_prerm SCRIPT: disables and stops the package's init scripts.
default_prerm() {
	local list="${1%.*}.list" file
	for file in $(grep '^/etc/init.d/' "$list"); do
		"$file" disable
		"$file" stop
	done
	return 0
}
