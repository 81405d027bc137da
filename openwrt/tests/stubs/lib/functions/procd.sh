# Test stand-in for OpenWrt's /lib/functions/procd.sh. Instead of sending
# the service description to procd over ubus, every call is recorded as one
# line in /tmp/calls/procd.log, words separated by tabs.

procd_record() {
	mkdir -p /tmp/calls
	{
		printf '%s' "$1"
		shift
		for word in "$@"; do printf '\t%s' "$word"; done
		printf '\n'
	} >>/tmp/calls/procd.log
}

procd_open_service() { procd_record open_service "$@"; }
procd_open_instance() { procd_record open_instance "$@"; }
procd_set_param() { procd_record param "$@"; }
procd_append_param() { procd_record param "$@"; }
procd_close_instance() { procd_record close_instance; }
procd_add_reload_trigger() { procd_record reload_trigger "$@"; }
procd_add_reload_interface_trigger() { procd_record interface_trigger "$@"; }
procd_send_signal() { procd_record signal "$@"; }
procd_kill() { procd_record kill "$@"; }

# Like procd.sh, closing the service adds its triggers and its data.
procd_close_service() {
	service_triggers
	service_data
	procd_record close_service "$@"
}

json_add_array() { procd_record json add_array "$1"; }
json_add_object() { procd_record json add_object "$1"; }
json_add_string() { procd_record json add_string "$1" "$2"; }
json_close_array() { procd_record json close_array; }
json_close_object() { procd_record json close_object; }
