//! The OpenWrt init script and UCI translation under busybox ash in a fake
//! router root (`chroot`), with stand-ins for uci, procd, rc.common and
//! network.sh that record every call. The generated daemon configuration is
//! parsed with the daemon's own parser and checked field by field; the
//! recorded calls show what procd, dnsmasq, odhcpd and fw4 receive.

mod package_support;

use std::path::Path;

use dnsgate::config::{BlockModeSetting, Config};
use package_support::{FakeRoot, debian_busybox, skip, workspace_root};

const DHCP: &str = "\
config dnsmasq
\toption domain 'lan'
\toption local '/lan/'

config dhcp 'lan'
\toption interface 'lan'
\toption start '100'

config dhcp 'guest'
\toption interface 'guest'

config dhcp 'wan'
\toption interface 'wan'
\toption ignore '1'
";

const SYSTEM: &str = "config system\n\toption hostname 'OpenWrt'\n";

const NETWORK_STATE: &str = "\
lan device br-lan
lan ipaddrs 192.168.1.1
lan ipaddrs6 fd12:3456:789a::1 2001:db8:1::1
guest device br-guest
guest ipaddrs 192.168.2.1
";

/// A fake root with the package's files from `openwrt/files`, or `None`
/// when the test cannot run here.
fn router(test: &str) -> Option<FakeRoot> {
    if !dnsgate_tests::require_root(test) {
        return None;
    }
    let busybox = match debian_busybox() {
        Ok(path) => path,
        Err(reason) => {
            skip(test, &reason);
            return None;
        }
    };
    let root = FakeRoot::new(&busybox);
    root.copy_tree(&workspace_root().join("openwrt/files"));
    root.write("etc/config/dhcp", DHCP.as_bytes(), 0o644);
    root.write("etc/config/system", SYSTEM.as_bytes(), 0o644);
    root.write("tmp/network.state", NETWORK_STATE.as_bytes(), 0o644);
    Some(root)
}

fn assert_success(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn daemon_config(root: &FakeRoot) -> Config {
    let text = root.read("var/etc/dnsgate.toml");
    assert!(!text.is_empty(), "/var/etc/dnsgate.toml was not written");
    Config::parse(&text, Path::new("/var/etc/dnsgate.toml"))
        .unwrap_or_else(|error| panic!("the daemon rejects the generated file: {error}\n{text}"))
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| word.to_string()).collect()
}

/// Every option of /etc/config/dnsgate set away from its default, checked
/// in the file the daemon reads.
#[test]
fn uci_options_reach_daemon_config() {
    let Some(root) = router("uci_options_reach_daemon_config") else { return };
    let config = "\
config dnsgate 'main'
\toption enabled '1'
\tlist interface 'lan'
\tlist interface 'guest'
\toption block_mode 'nxdomain'
\toption block_ttl '30'
\toption dns_port '5300'
\toption dot_port '8853'
\toption doq_port '8854'
\toption doh_port '9443'
\toption resolver_name 'Resolver.Home.Arpa'
\toption cert_file '/etc/dnsgate/cert.pem'
\toption key_file '/etc/dnsgate/key.pem'
\toption state_dir '/etc/dnsgate/custom-state'
\toption cache_size '2048'
\toption log_level 'debug'

config list 'ads'
\toption location 'https://lists.example/hosts.txt'
\toption format 'hosts'
\toption role 'block'

config list 'off'
\toption enabled '0'
\toption location '/etc/dnsgate/unused.txt'

config list
\toption location '/etc/dnsgate/allow \"quoted\".txt'
\toption format 'adblock'
\toption role 'allow'

config upstream 'first'
\toption url 'tls://192.0.2.53:853'
\toption tls_name 'dns.example'
\toption ca_file '/etc/ssl/dns-ca.pem'
\tlist bootstrap 'udp://192.0.2.1'
\tlist bootstrap 'udp://192.0.2.2:5353'

config upstream 'disabled'
\toption enabled '0'
\toption url 'tcp://192.0.2.99'

config upstream
\toption url 'https://dns.example/dns-query'
";
    root.write("etc/config/dnsgate", config.as_bytes(), 0o644);
    assert_success(&root.init("start"), "start");

    let daemon = daemon_config(&root);
    assert_eq!(daemon.dataplane.block_mode, BlockModeSetting::Nxdomain);
    assert_eq!(daemon.dataplane.block_ttl, 30);
    assert!(daemon.dataplane.lan_interfaces.is_empty(), "LAN devices go on the command line");

    assert_eq!(daemon.lists.len(), 2, "the disabled list is left out: {:?}", daemon.lists);
    assert_eq!(daemon.lists[0].location, "https://lists.example/hosts.txt");
    assert_eq!(daemon.lists[0].format.to_string(), "hosts");
    assert_eq!(format!("{:?}", daemon.lists[0].role), "Block");
    assert_eq!(daemon.lists[1].location, "/etc/dnsgate/allow \"quoted\".txt");
    assert_eq!(daemon.lists[1].format.to_string(), "adblock");
    assert_eq!(format!("{:?}", daemon.lists[1].role), "Allow");

    let upstreams = &daemon.resolver.upstreams;
    assert_eq!(upstreams.len(), 2, "the disabled upstream is left out: {upstreams:?}");
    assert_eq!(upstreams[0].url.to_string(), "tls://192.0.2.53");
    assert_eq!(upstreams[0].url.port, 853);
    assert_eq!(upstreams[0].tls_name.as_deref(), Some("dns.example"));
    assert_eq!(upstreams[0].ca_file.as_deref(), Some(Path::new("/etc/ssl/dns-ca.pem")));
    let bootstrap: Vec<String> = upstreams[0].bootstrap.iter().map(ToString::to_string).collect();
    assert_eq!(bootstrap, ["udp://192.0.2.1", "udp://192.0.2.2:5353"]);
    assert_eq!(upstreams[1].url.to_string(), "https://dns.example/dns-query");
    assert!(upstreams[1].bootstrap.is_empty());
    assert_eq!(daemon.resolver.cache.size_bytes, 2048 * 1024);
    assert_eq!(daemon.resolver.local.domain, "lan");
    assert_eq!(
        daemon.resolver.local.server.as_ref().map(ToString::to_string).as_deref(),
        Some("udp://127.0.0.1:54"),
        "dnsmasq answers the LAN's names"
    );

    assert_eq!(daemon.server.dns_port, 5300);
    assert_eq!(daemon.server.dot_port, 8853);
    assert_eq!(daemon.server.doq_port, 8854);
    assert_eq!(daemon.server.doh_port, 9443);
    assert_eq!(daemon.server.doh_path, "/dns-query");
    assert_eq!(daemon.tls.resolver_name.as_deref(), Some("resolver.home.arpa"));
    assert_eq!(daemon.tls.cert_file.as_deref(), Some(Path::new("/etc/dnsgate/cert.pem")));
    assert_eq!(daemon.tls.key_file.as_deref(), Some(Path::new("/etc/dnsgate/key.pem")));

    let procd = root.procd();
    assert_eq!(procd.instances.len(), 1);
    assert_eq!(
        procd.param(0, "command").unwrap(),
        strings(&[
            "/usr/sbin/dnsgate", "--pin-dir", "/sys/fs/bpf/dnsgate", "run", "--config", "/var/etc/dnsgate.toml",
            "--state-dir", "/etc/dnsgate/custom-state", "--listen", "127.0.0.1", "--listen", "::1", "--lan-iface",
            "br-lan", "--lan-iface", "br-guest",
        ])
    );
    assert_eq!(procd.param(0, "env").unwrap(), ["RUST_LOG=debug"]);
    assert_eq!(procd.param(0, "netdev").unwrap(), ["br-lan", "br-guest"]);
    assert_eq!(procd.interface_triggers, ["lan", "guest"]);
    assert!(root.exists("etc/dnsgate/custom-state"), "the state directory is created on flash");

    // DNR entries follow the ports and the name given here.
    let dnr = root.sh("uci get dhcp.lan.dnr");
    let dnr = String::from_utf8_lossy(&dnr.stdout);
    assert!(dnr.contains("1 resolver.home.arpa 192.168.1.1,fd12:3456:789a::1 alpn=dot port=8853"), "{dnr}");
    assert!(dnr.contains("2 resolver.home.arpa 192.168.1.1,fd12:3456:789a::1 alpn=doq port=8854"), "{dnr}");
    assert!(dnr.contains("alpn=h2 port=9443 dohpath=/dns-query{?dns}"), "{dnr}");
    assert!(!dnr.contains("2001:db8"), "global prefixes change and stay out of /etc/config/dhcp: {dnr}");
}

/// The shipped /etc/config/dnsgate: dnsgate takes port 53, dnsmasq keeps
/// DHCP on port 54 and stays the upstream, odhcpd announces the encrypted
/// endpoints, fw4 gets its rules, and a second start writes nothing.
#[test]
fn shipped_config_takes_over_dns() {
    let Some(root) = router("shipped_config_takes_over_dns") else { return };
    assert_success(&root.init("start"), "start");

    let daemon = daemon_config(&root);
    assert_eq!(daemon.dataplane.block_mode, BlockModeSetting::Null);
    assert_eq!(daemon.lists.len(), 1);
    assert_eq!(daemon.lists[0].location, "/etc/dnsgate/custom.txt");
    let upstreams: Vec<String> = daemon.resolver.upstreams.iter().map(|upstream| upstream.url.to_string()).collect();
    assert_eq!(upstreams, ["udp://127.0.0.1:54"], "without upstream sections dnsmasq forwards as before");
    assert_eq!(daemon.server.doh_port, 8443, "443 belongs to uhttpd");
    assert_eq!(daemon.server.dns_port, 53);
    assert_eq!(daemon.tls.resolver_name.as_deref(), Some("openwrt.lan"));
    assert!(daemon.tls.cert_file.is_none(), "a certificate is generated in the state directory");
    assert_eq!(daemon.dataplane.fallback(), Some((54, 3)), "dnsmasq answers while the daemon is down");

    let procd = root.procd();
    assert_eq!(procd.instances.len(), 1);
    let command = procd.param(0, "command").unwrap();
    assert!(command.windows(2).any(|pair| pair == ["--state-dir", "/etc/dnsgate/state"]), "{command:?}");
    assert!(command.windows(2).any(|pair| pair == ["--lan-iface", "br-lan"]), "{command:?}");
    assert_eq!(procd.param(0, "respawn").unwrap(), ["3600", "5", "0"]);
    assert_eq!(procd.param(0, "stderr").unwrap(), ["1"], "logs reach logread");
    assert_eq!(procd.param(0, "stdout").unwrap(), ["1"]);
    assert_eq!(procd.reload_triggers, ["dnsgate"]);
    assert_eq!(procd.interface_triggers, ["lan"]);

    let dhcp = root.read("etc/config/dhcp");
    assert!(dhcp.contains("option port '54'"), "{dhcp}");
    assert!(dhcp.contains("list dhcp_option '6,0.0.0.0'"), "{dhcp}");
    let lan_dnr = String::from_utf8_lossy(&root.sh("uci get dhcp.lan.dnr").stdout).into_owned();
    assert!(lan_dnr.contains("1 openwrt.lan 192.168.1.1,fd12:3456:789a::1 alpn=dot,doq port=853"), "{lan_dnr}");
    assert!(lan_dnr.contains("3 openwrt.lan 192.168.1.1,fd12:3456:789a::1 alpn=h2 port=8443"), "{lan_dnr}");
    assert!(!root.sh("uci -q get dhcp.guest.dnr").status.success(), "guest is not a dnsgate network");
    let services = root.calls("services");
    assert!(services.contains(&strings(&["dnsmasq restart"])), "{services:?}");
    assert!(services.contains(&strings(&["odhcpd reload"])), "{services:?}");

    let firewall = &procd.firewall;
    let rule = |name: &str| {
        firewall
            .iter()
            .find(|rule| rule["name"] == [name])
            .unwrap_or_else(|| panic!("no firewall rule {name}: {firewall:?}"))
            .clone()
    };
    let dot = rule("Allow-dnsgate-DoT");
    assert_eq!((dot["src"].clone(), dot["proto"].clone(), dot["dest_port"].clone()), (strings(&["lan"]), strings(&["tcp"]), strings(&["853"])));
    assert_eq!(dot["target"], ["ACCEPT"]);
    let doh = rule("Allow-dnsgate-DoH");
    assert_eq!(doh["dest_port"], ["8443"]);
    let wan = rule("Reject-dnsgate-encrypted-DNS");
    assert_eq!(wan["src"], ["wan"]);
    assert_eq!(wan["target"], ["REJECT"]);
    assert_eq!(wan["dest_port"], ["853", "8443"]);
    let dnsmasq_port = rule("Reject-dnsgate-dnsmasq-port");
    assert_eq!(dnsmasq_port["dest_port"], ["54"]);
    assert_eq!(dnsmasq_port["proto"], ["tcp"], "the fallback needs UDP to port 54; XDP drops clients' own");

    // Without the fallback, both protocols are rejected and the daemon gets
    // no fallback port.
    root.sh("uci set dnsgate.main.fallback=0 && uci commit dnsgate");
    root.clear_calls();
    assert_success(&root.init("start"), "start without the fallback");
    assert_eq!(daemon_config(&root).dataplane.fallback(), None);
    let procd = root.procd();
    let rejected = procd.firewall.iter().find(|rule| rule["name"] == ["Reject-dnsgate-dnsmasq-port"]).unwrap();
    assert_eq!(rejected["proto"], ["tcp", "udp"]);
    root.sh("uci set dnsgate.main.fallback=1 && uci commit dnsgate");

    // Flash is written on the first start only.
    root.clear_calls();
    assert_success(&root.init("start"), "second start");
    assert_eq!(root.uci_writes(), Vec::<Vec<String>>::new(), "a second start must not write /etc/config");
    assert!(root.calls("services").is_empty(), "a second start restarts nothing");
    assert_eq!(root.procd().instances.len(), 1);
}

/// reload re-reads UCI and signals the daemon; a changed LAN device changes
/// the command line, so procd restarts the daemon and no signal is sent.
#[test]
fn reload_signals_or_restarts() {
    let Some(root) = router("reload_signals_or_restarts") else { return };
    assert_success(&root.init("start"), "start");

    root.clear_calls();
    root.sh("uci set dnsgate.main.block_mode=refused");
    assert_success(&root.init("reload"), "reload");
    let procd = root.procd();
    assert_eq!(procd.signals, [strings(&["dnsgate", "*", "HUP"])]);
    assert_eq!(daemon_config(&root).dataplane.block_mode, BlockModeSetting::Refused);

    root.clear_calls();
    root.write("tmp/network.state", NETWORK_STATE.replace("br-lan", "br-lan2").as_bytes(), 0o644);
    assert_success(&root.init("reload"), "reload after a device change");
    let procd = root.procd();
    assert!(procd.signals.is_empty(), "procd restarts the daemon; SIGHUP could kill it: {:?}", procd.signals);
    let command = procd.param(0, "command").unwrap();
    assert!(command.windows(2).any(|pair| pair == ["--lan-iface", "br-lan2"]), "{command:?}");
}

/// stop gives the stock resolver its port back and removes what dnsgate
/// added to /etc/config/dhcp; shutdown and restart leave it in place.
#[test]
fn stop_restores_stock_resolver() {
    let Some(root) = router("stop_restores_stock_resolver") else { return };
    let original_dhcp = DHCP.replace("\toption local '/lan/'\n", "\toption local '/lan/'\n\toption port '5353'\n");
    root.write("etc/config/dhcp", original_dhcp.as_bytes(), 0o644);
    root.sh("uci add_list dhcp.guest.dhcp_option=6,192.168.2.53");
    root.sh("uci delete dnsgate.main.interface; uci add_list dnsgate.main.interface=lan; uci add_list dnsgate.main.interface=guest");
    let before = root.read("etc/config/dhcp");

    assert_success(&root.init("start"), "start");
    let taken = root.read("etc/config/dhcp");
    assert!(taken.contains("option port '54'"), "{taken}");
    assert!(taken.contains("list dhcp_option '6,192.168.2.53'"), "{taken}");
    assert_eq!(taken.matches("6,0.0.0.0").count(), 1, "the guest network keeps the DNS server it had: {taken}");

    root.clear_calls();
    assert_success(&root.init("shutdown"), "shutdown");
    assert_eq!(root.uci_writes(), Vec::<Vec<String>>::new(), "shutdown keeps the takeover for the next boot");
    assert_success(&root.init("restart"), "restart");
    assert!(root.read("etc/config/dhcp").contains("option port '54'"));

    root.clear_calls();
    assert_success(&root.init("stop"), "stop");
    assert_eq!(root.read("etc/config/dhcp").trim(), before.trim(), "stop restores /etc/config/dhcp");
    assert!(root.calls("services").contains(&strings(&["dnsmasq restart"])));
    assert!(root.calls("services").contains(&strings(&["odhcpd reload"])));
    assert_eq!(root.procd().kills, 1);
    assert!(!root.exists("etc/dnsgate/state/dnsmasq.saved"));
    assert!(!root.exists("etc/dnsgate/state/dnr.saved"));
}

/// enabled '0' registers no instance and restores dnsmasq.
#[test]
fn disabled_service_runs_nothing() {
    let Some(root) = router("disabled_service_runs_nothing") else { return };
    assert_success(&root.init("start"), "start");
    root.sh("uci set dnsgate.main.enabled=0");
    root.clear_calls();
    assert_success(&root.init("reload"), "reload");
    assert!(root.procd().instances.is_empty());
    assert!(!root.read("etc/config/dhcp").contains("port"), "dnsmasq is back on port 53");
}

/// Invalid options stop the start with a message naming the option, no
/// instance is registered, and the last good daemon configuration stays.
#[test]
fn invalid_options_are_named() {
    let Some(root) = router("invalid_options_are_named") else { return };
    assert_success(&root.init("start"), "start");
    let good = root.read("var/etc/dnsgate.toml");

    let cases = [
        ("uci set dnsgate.main.block_mode=blackhole", "main.block_mode"),
        ("uci set dnsgate.main.doh_port=70000", "main.doh_port"),
        ("uci set dnsgate.main.cert_file=/etc/cert.pem", "main.cert_file"),
        ("uci set dnsgate.custom.format=yaml", "custom.format"),
        ("uci set dnsgate.custom.location=ads.txt", "custom.location"),
        ("uci set dnsgate.up=upstream; uci set dnsgate.up.url=192.0.2.53", "up.url"),
        ("uci set dnsgate.main.resolver_name='bad name'", "main.resolver_name"),
    ];
    for (change, option) in cases {
        let saved = root.read("etc/config/dnsgate");
        root.sh(change);
        root.clear_calls();
        let output = root.init("start");
        // rc.common returns the status of the procd call, not of
        // start_service, so only the message and the missing instance show
        // the refusal.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(option), "the message for `{change}` names {option}: {stderr}");
        assert!(root.procd().instances.is_empty(), "no instance after `{change}`");
        assert_eq!(root.read("var/etc/dnsgate.toml"), good, "the last good file stays after `{change}`");
        root.write("etc/config/dnsgate", saved.as_bytes(), 0o644);
    }
}
