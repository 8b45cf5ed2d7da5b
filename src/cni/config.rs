//! A CNI network configuration as plumb reads it: the plumb network it
//! attaches to (an existing one by `network`, or one it describes in
//! plumb's own words, made on the first ADD and shared by every runtime on
//! the host), where plumb keeps its state, and the runtime's per-container
//! settings (`runtimeConfig`: `portMappings`, `ips`, `mac`, `bandwidth`,
//! `aliases`).

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::spec::{CniError, code};
use crate::model::{AttachSpec, NetworkSpec};

/// Keys of the CNI spec itself, or that a runtime adds: not plumb's.
const CNI_KEYS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "ipam",
    "dns",
    "args",
    "runtimeConfig",
    "prevResult",
    "capabilities",
    "disableCheck",
    "disableGC",
];

/// plumb's keys beside the network's definition.
const PLUMB_KEYS: &[&str] = &["network", "stateDir", "socket"];

/// The network's definition: `plumb network create`'s flags, camelCased.
const DEFINITION_KEYS: &[&str] = &[
    "driver",
    "subnet",
    "gateway",
    "ipRange",
    "auxAddress",
    "bridge",
    "mode",
    "uplink",
    "mtu",
    "route",
    "hostAddress",
    "parent",
    "macvlanMode",
    "hostShim",
    "vlan",
    "ipvlanMode",
    "ipvlanFlag",
    "device",
    "domain",
    "serveDns",
    "slaac",
    "egressInterface",
    "egressGateway",
    "tenant",
    "isolateContainers",
    "multicastSnooping",
];

/// The configuration on stdin, as plumb uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// The configuration's name (the runtime's name for the network).
    pub name: String,
    /// The plumb network.
    pub network: String,
    /// Its definition, when the configuration gives one.
    pub definition: Option<NetworkSpec>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub runtime: RuntimeConfig,
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments` (or the older `cni.dev/attachments`):
    /// (container ID, ifname).
    pub valid_attachments: Option<Vec<(String, String)>>,
}

/// The runtime's capabilities plumb takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConfig {
    /// As `plumb attach --publish` says them.
    pub publish: Vec<String>,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    /// Bits per second (CNI's bandwidth capability).
    pub ingress_rate: Option<u64>,
    pub egress_rate: Option<u64>,
    /// Bits; plumb's limits have one burst for both ways.
    pub burst: Option<u64>,
    /// The `aliases` capability's names for this network.
    pub aliases: Vec<String>,
}

fn unsupported(key: &str, value: &Value, why: &str) -> CniError {
    CniError::new(code::UNSUPPORTED_FIELD, format!("`{key}`: {value}: {why}"))
}

fn invalid(msg: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// `camelCase` into `snake_case`, as NetworkSpec's fields are named.
fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::new(code::DECODE, format!("the network configuration: {e}")))?;
        let Value::Object(map) = v else {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration is not a JSON object",
            ));
        };
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        let cni_version = text("cniVersion").unwrap_or_else(|| "0.1.0".into());
        let name = text("name").ok_or_else(|| invalid("`name` is missing".into()))?;
        for (k, v) in &map {
            let known = CNI_KEYS.contains(&k.as_str())
                || PLUMB_KEYS.contains(&k.as_str())
                || DEFINITION_KEYS.contains(&k.as_str())
                || k.starts_with("cni.dev/");
            if !known {
                return Err(unsupported(
                    k,
                    v,
                    &format!(
                        "not a key of plumb's configuration (plumb's: {}; the network's: {})",
                        PLUMB_KEYS.join(", "),
                        DEFINITION_KEYS.join(", ")
                    ),
                ));
            }
        }
        let network = text("network").unwrap_or_else(|| name.clone());
        let definition = definition(&map, &network)?;
        let runtime = runtime_config(map.get("runtimeConfig"), &name)?;
        Ok(NetConf {
            cni_version,
            name,
            network,
            definition,
            state_dir: text("stateDir").map(PathBuf::from),
            socket: text("socket").map(PathBuf::from),
            runtime,
            prev_result: map.get("prevResult").filter(|p| !p.is_null()).cloned(),
            valid_attachments: valid_attachments(&map)?,
        })
    }

    /// The attach the runtime asks for, of container `container_id` in
    /// the namespace at `netns` as `ifname`.
    pub fn attach_spec(&self, container_id: &str, netns: &str, ifname: &str) -> AttachSpec {
        let r = &self.runtime;
        let kbit = |bps: u64| format!("{}kbit", bps.div_ceil(1000));
        AttachSpec {
            target: netns.to_string(),
            network: self.network.clone(),
            ifname: Some(ifname.to_string()),
            ip: r.ips.clone(),
            mac: r.mac.clone(),
            mtu: None,
            default_route: None,
            route: Vec::new(),
            hostname: None,
            publish: r.publish.clone(),
            egress_rate: r.egress_rate.map(kbit),
            ingress_rate: r.ingress_rate.map(kbit),
            // A burst holds a full frame at least.
            burst: r
                .burst
                .map(|bits| format!("{}b", bits.div_ceil(8).max(1600))),
            label: Vec::new(),
            allow_spoofing: false,
            egress_interface: None,
            egress_gateway: None,
            alias: r.aliases.clone(),
            cni_container: Some(container_id.to_string()),
        }
    }
}

/// The plumb network the keys of `map` describe, if any: `ipam` says
/// whether its addresses are plumb's (`{"type": "plumb"}`, the default) or
/// the LAN's DHCP server's (`"mode": "dhcp"`).
fn definition(map: &Map<String, Value>, network: &str) -> Result<Option<NetworkSpec>, CniError> {
    let mut spec = Map::new();
    for key in DEFINITION_KEYS {
        let Some(v) = map.get(*key) else { continue };
        // One or several: `"subnet": "10.0.0.0/24"` or a list.
        let v = match (*key, v) {
            ("subnet" | "gateway" | "ipRange" | "route" | "hostAddress", Value::String(s)) => {
                Value::Array(vec![Value::String(s.clone())])
            }
            _ => v.clone(),
        };
        spec.insert(snake(key), v);
    }
    let ipam = match map.get("ipam") {
        None | Some(Value::Null) => None,
        Some(Value::Object(i)) if i.is_empty() => None,
        Some(Value::Object(i)) => {
            let kind = i.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "plumb" {
                return Err(unsupported(
                    "ipam.type",
                    &Value::String(kind.into()),
                    "plumb hands out the addresses itself: {\"type\": \"plumb\"} (with \"mode\": \"dhcp\" for the LAN's DHCP server)",
                ));
            }
            match i.get("mode").and_then(Value::as_str) {
                None | Some("static") => None,
                Some("dhcp") => Some("dhcp"),
                Some(other) => {
                    return Err(unsupported(
                        "ipam.mode",
                        &Value::String(other.into()),
                        "expected `static` or `dhcp`",
                    ));
                }
            }
        }
        Some(other) => return Err(unsupported("ipam", other, "expected an object")),
    };
    if spec.is_empty() && ipam.is_none() {
        return Ok(None);
    }
    spec.insert("name".into(), Value::String(network.to_string()));
    if let Some(i) = ipam {
        spec.insert("ipam".into(), Value::String(i.into()));
    }
    serde_json::from_value(Value::Object(spec))
        .map(Some)
        .map_err(|e| invalid(format!("network `{network}`: {e}")))
}

/// The runtime's settings for this container; `name` is the runtime's name
/// for the network, which keys its aliases.
fn runtime_config(v: Option<&Value>, name: &str) -> Result<RuntimeConfig, CniError> {
    let mut r = RuntimeConfig::default();
    let Some(Value::Object(m)) = v else {
        return Ok(r);
    };
    if let Some(ports) = m.get("portMappings").and_then(Value::as_array) {
        for p in ports {
            let port = |k: &str| p.get(k).and_then(Value::as_u64);
            let (Some(host), Some(container)) = (port("hostPort"), port("containerPort")) else {
                return Err(unsupported(
                    "runtimeConfig.portMappings",
                    p,
                    "hostPort and containerPort are needed",
                ));
            };
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("tcp");
            let ip = p
                .get("hostIP")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty() && *ip != "0.0.0.0" && *ip != "::");
            r.publish.push(match ip {
                Some(ip) => format!("{ip}:{host}:{container}/{}", proto.to_lowercase()),
                None => format!("{host}:{container}/{}", proto.to_lowercase()),
            });
        }
    }
    if let Some(ips) = m.get("ips").and_then(Value::as_array) {
        for ip in ips {
            let s = ip
                .as_str()
                .ok_or_else(|| unsupported("runtimeConfig.ips", ip, "an address is a string"))?;
            // `10.0.0.5/24`: the network's prefix is plumb's to know.
            r.ips.push(s.split('/').next().unwrap_or(s).to_string());
        }
    }
    r.mac = m.get("mac").and_then(Value::as_str).map(str::to_string);
    if let Some(b) = m.get("bandwidth").filter(|b| b.is_object()) {
        let n = |k: &str| b.get(k).and_then(Value::as_u64).filter(|n| *n > 0);
        r.ingress_rate = n("ingressRate");
        r.egress_rate = n("egressRate");
        r.burst = match (n("ingressBurst"), n("egressBurst")) {
            (Some(i), Some(e)) => Some(i.max(e)),
            (a, b) => a.or(b),
        };
    }
    // `{"aliases": {"NETWORK": ["db", "primary"]}}`
    if let Some(list) = m.get("aliases").and_then(|a| a.get(name)) {
        let names = list.as_array().ok_or_else(|| {
            unsupported(
                "runtimeConfig.aliases",
                list,
                "a network's aliases are a list",
            )
        })?;
        for a in names {
            let s = a
                .as_str()
                .ok_or_else(|| unsupported("runtimeConfig.aliases", a, "an alias is a string"))?;
            r.aliases.push(s.to_string());
        }
    }
    Ok(r)
}

fn valid_attachments(map: &Map<String, Value>) -> Result<Option<Vec<(String, String)>>, CniError> {
    let Some(list) = map
        .get("cni.dev/valid-attachments")
        .or_else(|| map.get("cni.dev/attachments"))
    else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| unsupported("cni.dev/valid-attachments", list, "expected a list"))?;
    let mut out = Vec::new();
    for a in list {
        let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
        match (field("containerID"), field("ifname")) {
            (Some(c), Some(i)) => out.push((c, i)),
            _ => {
                return Err(unsupported(
                    "cni.dev/valid-attachments",
                    a,
                    "each is {\"containerID\", \"ifname\"}",
                ));
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_network_by_name_and_the_runtimes_settings() {
        let c = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "podman", "type": "plumb", "network": "lan",
                "runtimeConfig": {
                    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                                     {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}],
                    "ips": ["10.1.0.5/24"], "mac": "02:00:00:00:00:05",
                    "bandwidth": {"ingressRate": 10000000, "ingressBurst": 80000, "egressRate": 20000000, "egressBurst": 160000}
                }}"#,
        )
        .unwrap();
        assert_eq!(c.network, "lan");
        assert_eq!(c.definition, None);
        let a = c.attach_spec("abc", "/run/netns/c1", "eth0");
        assert_eq!(a.publish, ["8080:80/tcp", "127.0.0.1:53:53/udp"]);
        assert_eq!(a.ip, ["10.1.0.5"]);
        assert_eq!(a.ingress_rate.as_deref(), Some("10000kbit"));
        assert_eq!(a.egress_rate.as_deref(), Some("20000kbit"));
        assert_eq!(a.burst.as_deref(), Some("20000b"));
        assert_eq!(a.cni_container.as_deref(), Some("abc"));
    }

    #[test]
    fn a_network_described_in_plumbs_words() {
        let c = NetConf::parse(
            br#"{"cniVersion": "1.1.0", "name": "lan", "type": "plumb",
                "driver": "macvlan", "parent": "eth1", "subnet": "192.168.1.0/24",
                "gateway": "192.168.1.1", "egressInterface": "eth2", "tenant": "acme",
                "ipam": {"type": "plumb", "mode": "dhcp"}}"#,
        )
        .unwrap();
        let d = c.definition.unwrap();
        assert_eq!(d.name, "lan");
        assert_eq!(d.driver, "macvlan");
        assert_eq!(d.subnet, ["192.168.1.0/24"]);
        assert_eq!(d.egress_interface.as_deref(), Some("eth2"));
        assert_eq!(d.ipam.as_deref(), Some("dhcp"));
    }

    #[test]
    fn unknown_keys_and_foreign_ipam_are_refused_by_name() {
        let e = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "n", "type": "plumb", "sbunet": "x"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert!(e.msg.starts_with("`sbunet`"), "{}", e.msg);
        let e = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "n", "type": "plumb", "ipam": {"type": "host-local"}}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("ipam.type"), "{}", e.msg);
        let e = NetConf::parse(br#"{"cniVersion": "1.0.0", "type": "plumb"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e = NetConf::parse(b"{").unwrap_err();
        assert_eq!(e.code, code::DECODE);
    }

    #[test]
    fn gc_reads_both_names_of_the_valid_attachments() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let conf = format!(
                r#"{{"cniVersion": "1.1.0", "name": "n", "type": "plumb", "{key}": [{{"containerID": "c1", "ifname": "eth0"}}]}}"#
            );
            let c = NetConf::parse(conf.as_bytes()).unwrap();
            assert_eq!(
                c.valid_attachments,
                Some(vec![("c1".to_string(), "eth0".to_string())])
            );
        }
    }
}
