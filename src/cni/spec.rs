//! The CNI protocol as a plugin sees it (spec 1.1.0, and the versions
//! libcni still negotiates: 0.3.0, 0.3.1, 0.4.0, 1.0.0): the runtime's
//! environment, results and errors on stdout. Pure: no kernel, no store.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

/// Every version plumb answers in, oldest first.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The spec's error codes (SPEC.md, "Error"), and 50/51 of STATUS.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// plumb's own (100 and up are the plugin's): the kernel or the store
    /// refused the change, which was undone.
    pub const FAILED: u32 = 100;
}

/// A CNI error: printed on stdout as the spec's JSON, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// What the runtime says in the environment (`CNI_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// The namespace's path; DEL may come without it (it may be gone).
    pub netns: Option<String>,
    pub ifname: String,
    /// `CNI_ARGS` (`K=V;K2=V2`).
    pub args: BTreeMap<String, String>,
}

impl Invocation {
    /// Read the environment through `get`. A variable the command needs
    /// and lacks, or a bad one, is named in the error (code 4).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let bad = |msg: String| CniError::new(code::INVALID_ENVIRONMENT, msg);
        let command = get("CNI_COMMAND").unwrap_or_default();
        let command = Command::parse(&command).ok_or_else(|| {
            bad(format!(
                "CNI_COMMAND `{command}`: expected ADD, DEL, CHECK, STATUS, GC or VERSION"
            ))
        })?;
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &str| -> Result<String, CniError> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(v) => Ok(v),
                None if per_container => Err(bad(format!("{name} is not set"))),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID")?;
        if per_container && !valid_container_id(&container_id) {
            return Err(bad(format!(
                "CNI_CONTAINERID `{container_id}`: starts with a letter or digit, then letters, digits, `_`, `.` and `-`"
            )));
        }
        let ifname = required("CNI_IFNAME")?;
        let netns = match command {
            Command::Add | Command::Check => Some(required("CNI_NETNS")?),
            _ => get("CNI_NETNS").filter(|v| !v.is_empty()),
        };
        let mut args = BTreeMap::new();
        for pair in get("CNI_ARGS").unwrap_or_default().split(';') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("CNI_ARGS: `{pair}` is not KEY=VALUE")))?;
            args.insert(k.to_string(), v.to_string());
        }
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The version the runtime asked in (`cniVersion`), if plumb speaks it.
pub fn check_version(asked: &str) -> Result<(), CniError> {
    match SUPPORTED.contains(&asked) {
        true => Ok(()),
        false => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion `{asked}` is not supported"),
        )
        .with_details(format!("plumb supports {}", SUPPORTED.join(", ")))),
    }
}

/// VERSION's answer.
pub fn version_info(asked: &str) -> Value {
    let current = match SUPPORTED.contains(&asked) {
        true => asked,
        false => SUPPORTED[SUPPORTED.len() - 1],
    };
    json!({"cniVersion": current, "supportedVersions": SUPPORTED})
}

/// An interface of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The namespace's path, for an interface inside the container.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into the result's interfaces.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<IpAddr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
}

/// An ADD's result, printed in the version the runtime asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// The result as JSON of `version`: 1.x as is; 0.3.x and 0.4.0 with
    /// each address's `version` ("4" or "6"), which 1.0 dropped.
    pub fn to_json(&self, version: &str) -> Value {
        let old = !version.starts_with("1.");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({"name": i.name, "mac": i.mac});
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                if let (Some(m), false) = (i.mtu, old) {
                    v["mtu"] = json!(m);
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({"address": ip.address.to_string()});
                if old {
                    v["version"] = json!(if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    });
                }
                if let Some(g) = ip.gateway {
                    v["gateway"] = json!(g.to_string());
                }
                if let Some(i) = ip.interface {
                    v["interface"] = json!(i);
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = json!({"dst": r.dst.to_string()});
                if let Some(g) = r.gw {
                    v["gw"] = json!(g.to_string());
                }
                v
            })
            .collect();
        let mut dns = json!({});
        if !self.dns.nameservers.is_empty() {
            dns["nameservers"] = json!(
                self.dns
                    .nameservers
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
            );
        }
        if let Some(d) = &self.dns.domain {
            dns["domain"] = json!(d);
        }
        if !self.dns.search.is_empty() {
            dns["search"] = json!(self.dns.search);
        }
        json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }

    /// A previous plugin's result (`prevResult`, any version) read back, so
    /// that plumb, chained after it, adds to it.
    pub fn from_json(v: &Value) -> Result<CniResult, CniError> {
        let bad = |what: &str| {
            CniError::new(
                code::DECODE,
                format!("prevResult: {what} is not as the spec has it"),
            )
        };
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut r = CniResult::default();
        for i in v
            .get("interfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            r.interfaces.push(Interface {
                name: text(i, "name").ok_or_else(|| bad("an interface's name"))?,
                mac: text(i, "mac").unwrap_or_default(),
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                sandbox: text(i, "sandbox"),
            });
        }
        for ip in v.get("ips").and_then(Value::as_array).into_iter().flatten() {
            r.ips.push(IpConfig {
                address: text(ip, "address")
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| bad("an address"))?,
                gateway: text(ip, "gateway").and_then(|g| g.parse().ok()),
                interface: ip
                    .get("interface")
                    .and_then(Value::as_u64)
                    .map(|i| i as usize),
            });
        }
        for route in v
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            r.routes.push(Route {
                dst: text(route, "dst")
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| bad("a route's dst"))?,
                gw: text(route, "gw").and_then(|g| g.parse().ok()),
            });
        }
        if let Some(d) = v.get("dns") {
            r.dns.nameservers = d
                .get("nameservers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str()?.parse().ok())
                .collect();
            r.dns.domain = text(d, "domain");
            r.dns.search = d
                .get("search")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
        }
        Ok(r)
    }

    /// `self` after `prev` (chained): prev's interfaces, addresses and
    /// routes first, then plumb's, its interface indices moved past prev's.
    pub fn after(mut self, prev: CniResult) -> CniResult {
        let shift = prev.interfaces.len();
        for ip in &mut self.ips {
            ip.interface = ip.interface.map(|i| i + shift);
        }
        let mut out = prev;
        out.interfaces.extend(self.interfaces);
        out.ips.extend(self.ips);
        out.routes.extend(self.routes);
        for n in self.dns.nameservers {
            if !out.dns.nameservers.contains(&n) {
                out.dns.nameservers.push(n);
            }
        }
        out.dns.domain = out.dns.domain.or(self.dns.domain);
        for s in self.dns.search {
            if !out.dns.search.contains(&s) {
                out.dns.search.push(s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_environment_is_read_per_command_and_each_missing_variable_named() {
        let add = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1.x_2"),
            ("CNI_NETNS", "/run/netns/c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
        ]))
        .unwrap();
        assert_eq!(add.command, Command::Add);
        assert_eq!(add.netns.as_deref(), Some("/run/netns/c1"));
        assert_eq!(add.args["K8S_POD_NAME"], "web");
        let e = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "CNI_NETNS is not set"));
        // DEL may come after the namespace is gone.
        let del = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(del.netns, None);
        let e = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert!(e.msg.starts_with("CNI_CONTAINERID `-abc`"), "{}", e.msg);
        // VERSION, STATUS and GC need no container.
        for c in ["VERSION", "STATUS", "GC"] {
            assert!(Invocation::from_env(env(&[("CNI_COMMAND", c)])).is_ok());
        }
        let e = Invocation::from_env(env(&[("CNI_COMMAND", "ADDD")])).unwrap_err();
        assert!(e.msg.contains("`ADDD`"), "{}", e.msg);
    }

    #[test]
    fn results_take_the_shape_of_the_version_asked_for() {
        let r = CniResult {
            interfaces: vec![
                Interface {
                    name: "pv1".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/c1".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
            }],
            dns: Dns::default(),
        };
        let new = r.to_json("1.1.0");
        assert_eq!(new["ips"][0]["interface"], 1);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][1]["mtu"], 1500);
        let old = r.to_json("0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][1].get("mtu").is_none());
        assert_eq!(CniResult::from_json(&new).unwrap(), r);
    }

    #[test]
    fn a_chained_result_keeps_the_previous_one_first() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                mtu: None,
                sandbox: Some("/run/netns/c1".into()),
            }],
            ips: vec![IpConfig {
                address: "127.0.0.1/8".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            ..Default::default()
        };
        let ours = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:02".into(),
                mtu: None,
                sandbox: Some("/run/netns/c1".into()),
            }],
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            ..Default::default()
        };
        let both = ours.after(prev);
        assert_eq!(both.interfaces[1].name, "eth0");
        assert_eq!(both.ips[1].interface, Some(1));
    }

    #[test]
    fn versions_and_errors() {
        assert!(check_version("0.3.1").is_ok());
        let e = check_version("0.2.0").unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(version_info("0.4.0")["cniVersion"], "0.4.0");
        assert_eq!(
            version_info("9.9.9")["supportedVersions"]
                .as_array()
                .unwrap()
                .len(),
            SUPPORTED.len()
        );
        let j = CniError::new(7, "network `x`: no such plumb network").to_json("1.1.0");
        assert_eq!(
            j,
            json!({"cniVersion": "1.1.0", "code": 7, "msg": "network `x`: no such plumb network"})
        );
    }
}
