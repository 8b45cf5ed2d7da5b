//! Docker's words for plumb's: the options of `docker network create -d
//! plumb` made into a plumb network spec, an endpoint's options into an
//! attach spec, and plumb's errors said back with Docker's flags.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::Value;

use crate::model::{AttachSpec, NetworkSpec};

/// Where `docker network create -o KEY=VALUE` options arrive.
const GENERIC: &str = "com.docker.network.generic";
/// `--internal`.
const INTERNAL: &str = "com.docker.network.internal";
/// Docker's own MTU option, which `docker network create` users know.
const DOCKER_MTU: &str = "com.docker.network.driver.mtu";

/// The `-o` options a plumb network takes, as `plumb network create`'s
/// flags (Docker's spellings of the macvlan and ipvlan ones too).
const NETWORK_KEYS: &[&str] = &[
    "driver",
    "mode",
    "uplink",
    "bridge",
    "mtu",
    "route",
    "host-address",
    "parent",
    "vlan",
    "macvlan-mode",
    "macvlan_mode",
    "host-shim",
    "ipvlan-mode",
    "ipvlan_mode",
    "ipvlan-flag",
    "ipvlan_flag",
    "device",
    "ipam",
    "domain",
    "slaac",
    "egress-interface",
    "egress-gateway",
    "tenant",
    "isolate-containers",
    "multicast-snooping",
    "subnet",
    "gateway",
    DOCKER_MTU,
];

/// An address pool Docker's IPAM gave a network (`IPv4Data`/`IPv6Data`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub address_space: String,
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, String>,
}

impl IpamData {
    /// Docker's `null` IPAM: no addresses from Docker.
    fn is_null(&self) -> bool {
        self.address_space == "null" || self.pool == "0.0.0.0/0" || self.pool.is_empty()
    }
}

/// A string option's value, whatever JSON type Docker gave it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("-o {key} `{value}`: expected true or false")),
    }
}

/// The address of `cidr` (Docker gives a gateway as `10.0.0.1/24`).
fn address_of(field: &str, cidr: &str) -> Result<String, String> {
    match cidr.parse::<IpNet>() {
        Ok(n) => Ok(n.addr().to_string()),
        Err(_) if cidr.parse::<std::net::IpAddr>().is_ok() => Ok(cidr.to_string()),
        Err(_) => Err(format!("{field} `{cidr}`: not an IP address")),
    }
}

/// The cluster network a Docker network is on this host (`-o
/// cluster-network=NAME`), if it is one: it takes no other option, and its
/// addresses are the host's blocks', not Docker's (`--ipam-driver null`).
pub fn cluster_network(
    options: &BTreeMap<String, Value>,
    v4: &[IpamData],
    v6: &[IpamData],
) -> Result<Option<String>, String> {
    let Some(Value::Object(generic)) = options.get(GENERIC) else {
        return Ok(None);
    };
    let Some(name) = generic.get(CLUSTER_NETWORK).map(text) else {
        return Ok(None);
    };
    if let Some(other) = generic.keys().find(|k| *k != CLUSTER_NETWORK) {
        return Err(format!(
            "-o {other}: a network with -o {CLUSTER_NETWORK} is the cluster's as defined there, and takes no other option"
        ));
    }
    if v4.iter().chain(v6).any(|d| !d.is_null()) {
        return Err(format!(
            "--subnet: the addresses of cluster network `{name}` come from this host's blocks; create it with --ipam-driver null"
        ));
    }
    Ok(Some(name))
}

/// `-o cluster-network=NAME`: the Docker network is cluster network NAME.
const CLUSTER_NETWORK: &str = "cluster-network";

/// The spec of the plumb network Docker's CreateNetwork asks for, named
/// `name` until Docker's own name for it is known. Unknown options are
/// refused here, by name.
pub fn network_spec(
    name: &str,
    options: &BTreeMap<String, Value>,
    v4: &[IpamData],
    v6: &[IpamData],
    dhcp_pool: bool,
) -> Result<NetworkSpec, String> {
    let generic: BTreeMap<String, String> = match options.get(GENERIC) {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        Some(Value::Null) | None => BTreeMap::new(),
        Some(other) => return Err(format!("options: `{GENERIC}` is not a map: {other}")),
    };
    if let Some(unknown) = generic.keys().find(|k| !NETWORK_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "-o {unknown}: not an option of plumb networks (options: {})",
            NETWORK_KEYS
                .iter()
                .filter(|k| !k.contains('_') && !k.contains('.'))
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if options
        .get(INTERNAL)
        .is_some_and(|v| v.as_bool() == Some(true))
    {
        return Err(
            "--internal: not for plumb networks (a bridge network with `-o mode=bridged` and no uplink is internal)"
                .into(),
        );
    }
    let get = |k: &str| generic.get(k).cloned().filter(|v| !v.is_empty());
    let either = |a: &str, b: &str| get(a).or_else(|| get(b));
    let mut spec = NetworkSpec {
        name: name.to_string(),
        driver: get("driver").unwrap_or_else(|| {
            if get("parent").is_some() {
                "macvlan".into()
            } else {
                "bridge".into()
            }
        }),
        subnet: Vec::new(),
        gateway: Vec::new(),
        ip_range: Vec::new(),
        aux_address: BTreeMap::new(),
        bridge: get("bridge"),
        mode: get("mode"),
        uplink: get("uplink"),
        mtu: None,
        route: get("route")
            .map(|r| r.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default(),
        host_address: get("host-address")
            .map(|r| r.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default(),
        parent: get("parent"),
        macvlan_mode: either("macvlan-mode", "macvlan_mode"),
        host_shim: get("host-shim"),
        vlan: None,
        ipvlan_mode: either("ipvlan-mode", "ipvlan_mode"),
        ipvlan_flag: either("ipvlan-flag", "ipvlan_flag"),
        device: get("device"),
        ipam: get("ipam"),
        domain: get("domain"),
        // Docker's own DNS answers for its containers.
        serve_dns: false,
        slaac: get("slaac").map(|v| flag("slaac", &v)).transpose()?,
        egress_interface: get("egress-interface"),
        egress_gateway: get("egress-gateway"),
        tenant: get("tenant"),
        isolate_containers: get("isolate-containers")
            .map(|v| flag("isolate-containers", &v))
            .transpose()?
            .unwrap_or(false),
        multicast_snooping: get("multicast-snooping")
            .map(|v| flag("multicast-snooping", &v))
            .transpose()?,
        vni: None,
        block_size: None,
        vtep: None,
        on_demand: false,
    };
    if let Some(m) = either("mtu", DOCKER_MTU) {
        spec.mtu = Some(
            m.parse()
                .map_err(|_| format!("-o mtu `{m}`: expected a number of bytes"))?,
        );
    }
    if let Some(v) = get("vlan") {
        spec.vlan = Some(
            v.parse()
                .map_err(|_| format!("-o vlan `{v}`: expected a VLAN ID (1-4094)"))?,
        );
    }
    // plumb's IPAM in DHCP mode: the pool is the LAN's subnet, which the
    // LAN's server hands addresses out of; the plumb network has none.
    if dhcp_pool {
        match spec.ipam.as_deref() {
            None | Some("dhcp") => spec.ipam = Some("dhcp".into()),
            Some(other) => {
                return Err(format!(
                    "-o ipam `{other}`: the network's addresses are the LAN's DHCP server's (--ipam-opt mode=dhcp)"
                ));
            }
        }
        return Ok(spec);
    }
    let dhcp = spec.ipam.as_deref() == Some("dhcp");
    let pools: Vec<&IpamData> = v4.iter().chain(v6).filter(|d| !d.is_null()).collect();
    if dhcp {
        // IPv6 too comes from the LAN (its router advertisements, `-o
        // slaac`), not from a pool of Docker's.
        if !pools.is_empty() {
            return Err(
                "-o ipam=dhcp: the LAN's DHCP server gives the addresses; create the network with `--ipam-driver null` and no --subnet, or with `--ipam-driver plumb --ipam-opt mode=dhcp` and the LAN's --subnet and --gateway (then Docker knows the addresses)"
                    .into(),
            );
        }
        return Ok(spec);
    }
    for d in pools {
        spec.subnet.push(d.pool.clone());
        if !d.gateway.is_empty() {
            spec.gateway.push(address_of("--gateway", &d.gateway)?);
        }
        for (k, ip) in &d.aux_addresses {
            spec.aux_address
                .insert(k.clone(), address_of("--aux-address", ip)?);
        }
    }
    // Docker's null IPAM: the subnet is plumb's to know.
    if spec.subnet.is_empty() {
        spec.subnet = get("subnet").into_iter().collect();
        spec.gateway = get("gateway").into_iter().collect();
    } else if get("subnet").is_some() || get("gateway").is_some() {
        return Err(
            "-o subnet and -o gateway are for `--ipam-driver null`; use --subnet and --gateway"
                .into(),
        );
    }
    Ok(spec)
}

/// Endpoint options (`--driver-opt`) an attach takes, as `plumb attach`'s
/// flags; addresses, MAC and ports come in Docker's own fields.
const ENDPOINT_KEYS: &[&str] = &[
    "egress-rate",
    "ingress-rate",
    "burst",
    "allow-spoofing",
    "egress-interface",
    "egress-gateway",
    "route",
];

/// A published port as Docker gives it (`com.docker.network.portmap`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub proto: u8,
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    pub host_port: u16,
    #[serde(default)]
    pub host_port_end: u16,
}

impl PortBinding {
    /// In `plumb attach --publish` form.
    fn as_publish(&self) -> Result<String, String> {
        let proto = match self.proto {
            6 => "tcp",
            17 => "udp",
            p => {
                return Err(format!(
                    "-p: protocol {p} is not published by plumb (tcp, udp)"
                ));
            }
        };
        // Docker gives one binding per port; a host range with it means
        // "any free port of the range", and 0 "any free port" (`-P`).
        if self.host_port == 0 || self.host_port_end > self.host_port {
            return Err(format!(
                "-p {}/{proto}: plumb publishes on the one host port you choose (`-p HOSTPORT:{}`), not on any free one",
                self.port, self.port
            ));
        }
        let host = self.host_port;
        let port = self.port;
        Ok(match self.host_ip.as_str() {
            "" | "0.0.0.0" => format!("{host}:{port}/{proto}"),
            ip => format!("{ip}:{host}:{port}/{proto}"),
        })
    }
}

/// What Docker tells about an endpoint, in CreateEndpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointRequest {
    /// The addresses Docker's IPAM chose (or `--ip`), with prefix.
    pub addresses: Vec<String>,
    pub mac: Option<String>,
    pub options: BTreeMap<String, Value>,
}

/// The attach an endpoint asks for on plumb network `network`.
pub fn attach_spec(network: &str, e: &EndpointRequest) -> Result<AttachSpec, String> {
    let mut spec = AttachSpec {
        target: String::new(),
        network: network.to_string(),
        ifname: None,
        ip: Vec::new(),
        mac: e.mac.clone().filter(|m| !m.is_empty()),
        mtu: None,
        default_route: None,
        route: Vec::new(),
        hostname: None,
        publish: Vec::new(),
        egress_rate: None,
        ingress_rate: None,
        burst: None,
        label: Vec::new(),
        allow_spoofing: false,
        egress_interface: None,
        egress_gateway: None,
        alias: Vec::new(),
        cni_container: None,
    };
    for a in e.addresses.iter().filter(|a| !a.is_empty()) {
        spec.ip.push(address_of("--ip", a)?);
    }
    if let Some(ports) = e.options.get("com.docker.network.portmap")
        && !ports.is_null()
    {
        let ports: Vec<PortBinding> = serde_json::from_value(ports.clone())
            .map_err(|err| format!("-p: Docker's port map is unreadable: {err}"))?;
        for p in &ports {
            spec.publish.push(p.as_publish()?);
        }
    }
    // `--driver-opt` values: at the top level, or in Docker's generic map.
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &e.options {
        if k == GENERIC {
            if let Value::Object(m) = v {
                opts.extend(m.iter().map(|(k, v)| (k.clone(), text(v))));
            }
        } else if !k.starts_with("com.docker.") && !k.starts_with("io.docker.") {
            opts.insert(k.clone(), text(v));
        }
    }
    for (k, v) in opts {
        match k.as_str() {
            "egress-rate" => spec.egress_rate = Some(v),
            "ingress-rate" => spec.ingress_rate = Some(v),
            "burst" => spec.burst = Some(v),
            "allow-spoofing" => spec.allow_spoofing = flag("allow-spoofing", &v)?,
            "egress-interface" => spec.egress_interface = Some(v),
            "egress-gateway" => spec.egress_gateway = Some(v),
            "route" => spec.route = v.split(',').map(|r| r.trim().to_string()).collect(),
            _ if k.starts_with("labels.") => {
                spec.label.push(format!("{}={v}", &k["labels.".len()..]));
            }
            _ => {
                return Err(format!(
                    "--driver-opt {k}: not an option of plumb endpoints (options: {}, labels.KEY)",
                    ENDPOINT_KEYS.join(", ")
                ));
            }
        }
    }
    Ok(spec)
}

/// Docker's own flags for plumb's attach and network fields.
const DOCKER_FLAGS: &[(&str, &str)] = &[
    ("--subnet", "--subnet"),
    ("--gateway", "--gateway"),
    ("--ip-range", "--ip-range"),
    ("--aux-address", "--aux-address"),
    ("--ip", "--ip"),
    ("--mac", "--mac-address"),
    ("--publish", "-p"),
    // Docker's own, named in plumb's messages for Docker's user.
    ("--ipam-driver", "--ipam-driver"),
    ("--ipam-opt", "--ipam-opt"),
    ("--mac-address", "--mac-address"),
    ("--ipv6", "--ipv6"),
    ("--internal", "--internal"),
    ("--driver-opt", "--driver-opt"),
];

/// A plumb error said with Docker's flags: `--parent` becomes `-o parent`
/// for a network (`--driver-opt egress-rate` for an endpoint), the flags
/// Docker shares keep their names.
pub fn in_docker_terms(message: &str, endpoint: bool) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("--") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(after.len());
        let name = &after[..len];
        let whole = &rest[i..i + 2 + len];
        let preceded_by_word = out.chars().last().is_some_and(|c| c.is_alphanumeric());
        if name.is_empty() || preceded_by_word {
            out.push_str(whole);
        } else if let Some((_, d)) = DOCKER_FLAGS.iter().find(|(p, _)| *p == whole) {
            out.push_str(d);
        } else if endpoint {
            out.push_str(&format!("--driver-opt {name}"));
        } else {
            out.push_str(&format!("-o {name}"));
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    fn pool(p: &str, gw: &str) -> IpamData {
        IpamData {
            address_space: "LocalDefault".into(),
            pool: p.into(),
            gateway: gw.into(),
            aux_addresses: BTreeMap::new(),
        }
    }

    #[test]
    fn generic_options_and_docker_pools_make_the_spec() {
        let mut v4 = pool("10.9.0.0/24", "10.9.0.1/24");
        v4.aux_addresses.insert("host".into(), "10.9.0.2/24".into());
        let o = opts(json!({
            "com.docker.network.enable_ipv6": false,
            "com.docker.network.generic": {"mode": "nat", "tenant": "red", "isolate-containers": "true",
                "com.docker.network.driver.mtu": "1400", "egress-interface": "up0"}
        }));
        let s = network_spec("docker-x", &o, &[v4], &[], false).unwrap();
        assert_eq!(s.driver, "bridge");
        assert_eq!(s.mode.as_deref(), Some("nat"));
        assert_eq!(s.tenant.as_deref(), Some("red"));
        assert!(s.isolate_containers);
        assert_eq!(s.mtu, Some(1400));
        assert_eq!(s.subnet, vec!["10.9.0.0/24"]);
        assert_eq!(s.gateway, vec!["10.9.0.1"]);
        assert_eq!(s.aux_address["host"], "10.9.0.2");
        assert_eq!(s.egress_interface.as_deref(), Some("up0"));
        s.validate().unwrap();
    }

    #[test]
    fn a_parent_makes_a_macvlan_and_docker_spellings_work() {
        let o = opts(
            json!({"com.docker.network.generic": {"parent": "eth1", "macvlan_mode": "private", "vlan": "10"}}),
        );
        let s = network_spec("n", &o, &[pool("192.168.5.0/24", "")], &[], false).unwrap();
        assert_eq!(s.driver, "macvlan");
        assert_eq!(s.macvlan_mode.as_deref(), Some("private"));
        assert_eq!(s.vlan, Some(10));
    }

    #[test]
    fn unknown_and_bad_options_are_refused_by_name() {
        let o = opts(json!({"com.docker.network.generic": {"mdoe": "nat"}}));
        let e = network_spec("n", &o, &[pool("10.0.0.0/24", "")], &[], false).unwrap_err();
        assert!(e.starts_with("-o mdoe: not an option"), "{e}");
        let o = opts(json!({"com.docker.network.generic": {"vlan": "ten"}}));
        let e = network_spec("n", &o, &[], &[], false).unwrap_err();
        assert!(e.starts_with("-o vlan `ten`"), "{e}");
        let o = opts(json!({"com.docker.network.internal": true}));
        assert!(
            network_spec("n", &o, &[], &[], false)
                .unwrap_err()
                .starts_with("--internal")
        );
    }

    #[test]
    fn dhcp_takes_the_null_ipam_and_null_takes_plumbs_subnet() {
        let null = IpamData {
            address_space: "null".into(),
            pool: "0.0.0.0/0".into(),
            ..Default::default()
        };
        let o = opts(
            json!({"com.docker.network.generic": {"ipam": "dhcp", "uplink": "eth1", "mode": "bridged"}}),
        );
        let s = network_spec("n", &o, std::slice::from_ref(&null), &[], false).unwrap();
        assert!(s.subnet.is_empty());
        let e = network_spec("n", &o, &[pool("10.0.0.0/24", "")], &[], false).unwrap_err();
        assert!(e.contains("--ipam-driver null"), "{e}");
        let e = network_spec(
            "n",
            &o,
            std::slice::from_ref(&null),
            &[pool("fd00::/64", "")],
            false,
        )
        .unwrap_err();
        assert!(e.contains("--ipam-driver null"), "an IPv6 pool too: {e}");
        let o = opts(json!({"com.docker.network.generic": {"subnet": "10.7.0.0/24"}}));
        let s = network_spec("n", &o, &[null], &[], false).unwrap();
        assert_eq!(s.subnet, vec!["10.7.0.0/24"]);
    }

    #[test]
    fn a_dhcp_pool_makes_a_dhcp_network_without_subnets() {
        let lan = pool("192.168.7.0/24", "");
        let o =
            opts(json!({"com.docker.network.generic": {"driver": "macvlan", "parent": "eth1"}}));
        let s = network_spec("n", &o, std::slice::from_ref(&lan), &[], true).unwrap();
        assert_eq!(s.ipam.as_deref(), Some("dhcp"));
        assert!(s.subnet.is_empty() && s.gateway.is_empty(), "{s:?}");
        let o = opts(json!({"com.docker.network.generic": {"ipam": "host-local"}}));
        let e = network_spec("n", &o, &[lan], &[], true).unwrap_err();
        assert!(e.contains("-o ipam `host-local`"), "{e}");
    }

    #[test]
    fn an_endpoint_takes_addresses_mac_ports_and_driver_options() {
        let e = EndpointRequest {
            addresses: vec!["10.9.0.5/24".into(), "".into()],
            mac: Some("02:00:00:00:00:05".into()),
            options: opts(json!({
                "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                "com.docker.network.portmap": [
                    {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                    {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353, "HostPortEnd": 5353}
                ],
                "egress-rate": "10mbit",
                "labels.role": "db"
            })),
        };
        let s = attach_spec("web", &e).unwrap();
        assert_eq!(s.ip, vec!["10.9.0.5"]);
        assert_eq!(s.mac.as_deref(), Some("02:00:00:00:00:05"));
        assert_eq!(s.publish, vec!["8080:80/tcp", "127.0.0.1:5353:53/udp"]);
        assert_eq!(s.egress_rate.as_deref(), Some("10mbit"));
        assert_eq!(s.label, vec!["role=db"]);
        s.validate().unwrap();
        let bad = EndpointRequest {
            options: opts(json!({"egress_rate": "1mbit"})),
            ..Default::default()
        };
        assert!(
            attach_spec("web", &bad)
                .unwrap_err()
                .starts_with("--driver-opt egress_rate")
        );
    }

    #[test]
    fn a_port_docker_would_choose_is_refused() {
        for (host, end) in [(0, 0), (8000, 8010)] {
            let e = EndpointRequest {
                options: opts(json!({"com.docker.network.portmap": [
                    {"Proto": 6, "Port": 80, "HostIP": "", "HostPort": host, "HostPortEnd": end}
                ]})),
                ..Default::default()
            };
            let err = attach_spec("web", &e).unwrap_err();
            assert!(
                err.starts_with("-p 80/tcp: plumb publishes on the one host port"),
                "{err}"
            );
        }
    }

    #[test]
    fn errors_are_said_with_dockers_flags() {
        assert_eq!(
            in_docker_terms("--parent `eth9`: no such interface", false),
            "-o parent `eth9`: no such interface"
        );
        assert_eq!(
            in_docker_terms("--subnet `x` overlaps --ip-range; see --egress-rate", true),
            "--subnet `x` overlaps --ip-range; see --driver-opt egress-rate"
        );
        assert_eq!(
            in_docker_terms("a--b and --mac `x`", true),
            "a--b and --mac-address `x`"
        );
        assert_eq!(
            in_docker_terms("--gateway: --ipam-opt mode=dhcp takes the router", false),
            "--gateway: --ipam-opt mode=dhcp takes the router"
        );
    }
}
