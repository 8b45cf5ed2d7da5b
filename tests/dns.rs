//! plumb's DNS on networks with `--serve-dns`: the daemon answers, on the
//! network's gateway, the names and aliases of the network's attachments
//! and their addresses back, over UDP and TCP, from the store as it is the
//! moment the query comes; and forwards other names to the host's
//! resolvers (a dnsmasq upstream here).

mod common;

use common::{Bg, Lab, wait_until};

/// A resolver for the host: dnsmasq in namespace `up` that knows
/// `world.test`, and the file the daemon is told to read it from.
fn upstream_resolver(lab: &Lab) -> (Bg, std::path::PathBuf) {
    let up = lab.upstream("10.98.0");
    let bg = lab.spawn_in(
        &up,
        "dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null \
         --interface=eth0 --bind-interfaces --pid-file= --address=/world.test/192.0.2.10",
        "resolver.log",
    );
    wait_until("the upstream resolver to listen", 10, || {
        String::from_utf8_lossy(&lab.exec(&up, "ss -lun").stdout).contains("10.98.0.1:53")
    });
    let conf = lab.state.path().join("resolv.conf");
    std::fs::write(&conf, "search example\nnameserver 10.98.0.1\n").unwrap();
    (bg, conf)
}

#[test]
fn containers_are_found_by_name_and_alias_and_the_rest_is_forwarded() {
    let lab = Lab::new("dns");
    let (_resolver, conf) = upstream_resolver(&lab);
    let _daemon = lab.daemon(&["--resolv-conf", conf.to_str().unwrap()]);
    lab.ok(&[
        "network",
        "create",
        "app",
        "--subnet",
        "10.77.0.0/24",
        "--serve-dns",
        "--domain",
        "app.internal",
    ]);
    lab.ok(&[
        "network",
        "create",
        "other",
        "--subnet",
        "10.78.0.0/24",
        "--serve-dns",
    ]);
    let (web, client) = (lab.netns("web"), lab.netns("client"));
    lab.ok(&["attach", &web, "app", "--alias", "WWW", "--alias", "api"]);
    lab.ok(&["attach", &client, "app"]);
    lab.ok(&["attach", &client, "other"]);
    let web_ip = lab.ip_of(&web, "app");
    let gw = "10.77.0.1";
    // The daemon binds once it has seen the network.
    wait_until("plumb's DNS to answer", 10, || {
        lab.dig(&client, gw, &web) == web_ip
    });

    assert_eq!(lab.dig(&client, gw, "www"), web_ip, "an alias, in any case");
    assert_eq!(
        lab.dig(&client, gw, "api.app.internal"),
        web_ip,
        "in the domain"
    );
    assert_eq!(
        lab.dig(&client, gw, &format!("+tcp {web}")),
        web_ip,
        "over TCP"
    );
    assert_eq!(
        lab.dig(&client, gw, &format!("-x {web_ip}")),
        format!("{web}.app.internal."),
        "an address answers with its first name"
    );
    assert_eq!(lab.dig(&client, gw, "nosuch"), "NXDOMAIN");
    assert_eq!(lab.dig(&client, gw, "nosuch.app.internal"), "NXDOMAIN");
    assert_eq!(
        lab.dig(&client, gw, "world.test"),
        "192.0.2.10",
        "forwarded"
    );
    assert_eq!(
        lab.dig(&client, gw, "+tcp world.test"),
        "192.0.2.10",
        "forwarded by TCP"
    );
    // Names are their network's: web is not on `other`.
    wait_until("the other network's DNS to answer", 10, || {
        lab.dig(&client, "10.78.0.1", &client) == lab.ip_of(&client, "other")
    });
    assert_eq!(lab.dig(&client, "10.78.0.1", &web), "NXDOMAIN");

    // The store as it is now: a new attachment answers at once, a gone
    // one no longer.
    let late = lab.netns("late");
    lab.ok(&["attach", &late, "app", "--alias", "db"]);
    assert_eq!(lab.dig(&client, gw, "db"), lab.ip_of(&late, "app"));
    lab.ok(&["detach", &web]);
    assert_eq!(lab.dig(&client, gw, "www"), "NXDOMAIN");
    let inspect = lab.inspect(&late);
    assert_eq!(
        inspect["NetworkSettings"]["Networks"]["app"]["Aliases"],
        serde_json::json!([late.clone(), "db"]),
        "{inspect}"
    );
}

#[test]
fn an_upstream_that_says_nothing_gets_the_client_servfail() {
    let lab = Lab::new("dnf");
    let conf = lab.state.path().join("resolv.conf");
    // Nobody listens there.
    std::fs::write(&conf, "nameserver 10.97.0.1\n").unwrap();
    let _daemon = lab.daemon(&["--resolv-conf", conf.to_str().unwrap()]);
    lab.ok(&[
        "network",
        "create",
        "app",
        "--subnet",
        "10.76.0.0/24",
        "--serve-dns",
    ]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "app"]);
    wait_until("plumb's DNS to answer", 10, || {
        lab.dig(&c, "10.76.0.1", &c) == lab.ip_of(&c, "app")
    });
    assert_eq!(lab.dig(&c, "10.76.0.1", "world.test"), "SERVFAIL");
}

#[test]
fn dns_where_plumb_has_no_address_or_the_lan_answers_is_refused() {
    let lab = Lab::new("dnr");
    let c = lab.netns("c");
    let err = lab.fails(&[
        "network",
        "create",
        "lan",
        "--mode",
        "bridged",
        "--subnet",
        "10.75.0.0/24",
        "--serve-dns",
    ]);
    assert!(
        err.contains("--serve-dns") && err.contains("--host-address"),
        "{err}"
    );
    let err = lab.fails(&[
        "network",
        "create",
        "d",
        "--mode",
        "bridged",
        "--uplink",
        "lan0",
        "--ipam",
        "dhcp",
        "--serve-dns",
    ]);
    assert!(
        err.contains("--serve-dns") && err.contains("LAN's DNS server"),
        "{err}"
    );
    let err = lab.fails(&[
        "network",
        "create",
        "n",
        "--subnet",
        "10.74.0.0/24",
        "--domain",
        "x.test",
    ]);
    assert!(
        err.contains("--domain") && err.contains("--serve-dns"),
        "{err}"
    );
    lab.ok(&["network", "create", "plain", "--subnet", "10.73.0.0/24"]);
    let err = lab.fails(&["attach", &c, "plain", "--alias", "web"]);
    assert!(
        err.contains("--alias") && err.contains("--serve-dns"),
        "{err}"
    );
    lab.ok(&[
        "network",
        "create",
        "named",
        "--subnet",
        "10.72.0.0/24",
        "--serve-dns",
    ]);
    let err = lab.fails(&["attach", &c, "named", "--alias", "bad name"]);
    assert!(err.contains("--alias") && err.contains("bad name"), "{err}");
    assert!(
        lab.ok(&["ls"]).lines().all(|l| !l.contains(&c)),
        "nothing attached"
    );
}
