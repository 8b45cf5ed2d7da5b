//! The plumb networks a container declares, in its labels or its
//! environment, in the vocabulary of `plumb attach`:
//!
//! ```text
//! plumb.networks=lan,backend          PLUMB_NETWORKS=lan,backend
//! plumb.lan.ip=192.168.1.50           PLUMB_LAN_IP=192.168.1.50
//! plumb.lan.default-route=replace     PLUMB_LAN_DEFAULT_ROUTE=replace
//! plumb.lan.labels.role=db            PLUMB_LAN_LABELS_ROLE=db
//! plumb.on-error=stop                 PLUMB_ON_ERROR=stop
//! ```
//!
//! In the environment a network's name is upper-cased with `-` and `.` as
//! `_`. A label wins over the same key in the environment. A value that
//! lists (`ip`, `route`, `publish`) takes commas.

use std::collections::BTreeMap;

use crate::model::AttachSpec;

/// The keys a network's options take, as in `plumb attach`.
const KEYS: &[&str] = &[
    "ip",
    "mac",
    "ifname",
    "mtu",
    "default-route",
    "route",
    "hostname",
    "publish",
    "egress-rate",
    "ingress-rate",
    "burst",
    "allow-spoofing",
    "egress-interface",
    "egress-gateway",
    "alias",
];

/// What a container declares.
#[derive(Debug, Default, PartialEq)]
pub struct Declaration {
    /// One attach per network, or why the declaration of that network is
    /// wrong.
    pub networks: Vec<(String, Result<AttachSpec, String>)>,
    /// Mistakes that concern no one network (an unknown key, a bad
    /// `on-error`).
    pub errors: Vec<String>,
    /// Stop the container when any of its networks cannot be attached.
    pub stop_on_error: bool,
}

impl Declaration {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.errors.is_empty()
    }
}

/// Read the declaration of container `id`.
pub fn read(id: &str, labels: &BTreeMap<String, String>, env: &[String]) -> Declaration {
    let env: BTreeMap<&str, &str> = env.iter().filter_map(|l| l.split_once('=')).collect();
    let get = |label: &str, var: &str| -> Option<String> {
        labels
            .get(label)
            .map(String::as_str)
            .or_else(|| env.get(var).copied())
            .map(|v| v.trim().to_string())
    };
    let mut out = Declaration::default();
    let Some(list) = get("plumb.networks", "PLUMB_NETWORKS") else {
        return out;
    };
    match get("plumb.on-error", "PLUMB_ON_ERROR").as_deref() {
        None | Some("log") => {}
        Some("stop") => out.stop_on_error = true,
        Some(other) => out.errors.push(format!(
            "plumb.on-error `{other}`: expected `log` or `stop`"
        )),
    }
    let mut names: Vec<&str> = Vec::new();
    for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    for key in labels.keys().filter(|k| k.starts_with("plumb.")) {
        if key == "plumb.networks" || key == "plumb.on-error" {
            continue;
        }
        let known = names.iter().any(|n| {
            key.strip_prefix(&format!("plumb.{n}."))
                .is_some_and(|k| KEYS.contains(&k) || k.starts_with("labels."))
        });
        if !known {
            out.errors.push(format!(
                "label `{key}`: not an option of a network in plumb.networks (options: {}, labels.KEY)",
                KEYS.join(", ")
            ));
        }
    }
    for n in names {
        let spec = network(id, n, &get, labels, &env);
        out.networks.push((n.to_string(), spec));
    }
    out
}

fn network(
    id: &str,
    net: &str,
    get: &dyn Fn(&str, &str) -> Option<String>,
    labels: &BTreeMap<String, String>,
    env: &BTreeMap<&str, &str>,
) -> Result<AttachSpec, String> {
    crate::model::validate_name("network", net).map_err(|e| e.to_string())?;
    let upper = net.to_ascii_uppercase().replace(['-', '.'], "_");
    let one = |key: &str| {
        let var = format!(
            "PLUMB_{upper}_{}",
            key.to_ascii_uppercase().replace('-', "_")
        );
        get(&format!("plumb.{net}.{key}"), &var).filter(|v| !v.is_empty())
    };
    let list = |key: &str| -> Vec<String> {
        one(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mtu = match one("mtu") {
        Some(m) => Some(
            m.parse()
                .map_err(|_| format!("plumb.{net}.mtu `{m}`: not a number"))?,
        ),
        None => None,
    };
    let allow_spoofing = match one("allow-spoofing").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(format!(
                "plumb.{net}.allow-spoofing `{v}`: expected true or false"
            ));
        }
    };
    // Policy labels: labels first, then the environment's for keys the
    // labels do not have.
    let mut policy_labels = BTreeMap::new();
    let env_prefix = format!("PLUMB_{upper}_LABELS_");
    for (var, v) in env {
        if let Some(k) = var.strip_prefix(&env_prefix) {
            policy_labels.insert(k.to_ascii_lowercase().replace('_', "-"), v.to_string());
        }
    }
    let label_prefix = format!("plumb.{net}.labels.");
    for (k, v) in labels {
        if let Some(k) = k.strip_prefix(&label_prefix) {
            policy_labels.insert(k.to_string(), v.clone());
        }
    }
    let spec = AttachSpec {
        target: format!("docker:{id}"),
        network: net.to_string(),
        ifname: one("ifname"),
        ip: list("ip"),
        mac: one("mac"),
        mtu,
        default_route: one("default-route"),
        route: list("route"),
        // A DHCP network's attach names the client after the container.
        hostname: one("hostname"),
        publish: list("publish"),
        egress_rate: one("egress-rate"),
        ingress_rate: one("ingress-rate"),
        burst: one("burst"),
        label: policy_labels
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        allow_spoofing,
        egress_interface: one("egress-interface"),
        egress_gateway: one("egress-gateway"),
        alias: list("alias"),
        cni_container: None,
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn env(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn nothing_declared_is_nothing() {
        let d = read("abc", &labels(&[("other", "x")]), &env(&["PATH=/bin"]));
        assert!(d.is_empty());
    }

    #[test]
    fn labels_declare_networks_with_options() {
        let d = read(
            "abc",
            &labels(&[
                ("plumb.networks", "lan, backend"),
                ("plumb.lan.ip", "10.1.0.5,fd00::5"),
                ("plumb.lan.default-route", "replace"),
                ("plumb.lan.labels.role", "db"),
                ("plumb.backend.egress-rate", "10mbit"),
            ]),
            &[],
        );
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let lan = d.networks[0].1.as_ref().unwrap();
        assert_eq!(d.networks[0].0, "lan");
        assert_eq!(lan.target, "docker:abc");
        assert_eq!(lan.ip, ["10.1.0.5", "fd00::5"]);
        assert_eq!(lan.default_route.as_deref(), Some("replace"));
        assert_eq!(lan.label, ["role=db"]);
        assert_eq!(lan.hostname, None, "the engine's choice: the name");
        assert_eq!(crate::names::container_hostname("web_1"), "web-1");
        let backend = d.networks[1].1.as_ref().unwrap();
        assert_eq!(backend.egress_rate.as_deref(), Some("10mbit"));
        assert!(backend.ip.is_empty());
    }

    #[test]
    fn the_environment_declares_too_and_labels_win() {
        let d = read(
            "abc",
            &labels(&[("plumb.tenant-1.ip", "10.2.0.9")]),
            &env(&[
                "PLUMB_NETWORKS=tenant-1",
                "PLUMB_TENANT_1_IP=10.2.0.8",
                "PLUMB_TENANT_1_EGRESS_RATE=5mbit",
                "PLUMB_TENANT_1_LABELS_ROLE=web",
                "PLUMB_ON_ERROR=stop",
            ]),
        );
        assert!(d.stop_on_error);
        let t = d.networks[0].1.as_ref().unwrap();
        assert_eq!(t.ip, ["10.2.0.9"], "the label wins");
        assert_eq!(t.egress_rate.as_deref(), Some("5mbit"));
        assert_eq!(t.label, ["role=web"]);
    }

    #[test]
    fn mistakes_are_named_and_stay_with_their_network() {
        let d = read(
            "abc",
            &labels(&[
                ("plumb.networks", "lan,bad/name,wan"),
                ("plumb.lan.ip", "10.1.0.500"),
                ("plumb.lan.colour", "blue"),
                ("plumb.other.ip", "10.9.0.1"),
                ("plumb.on-error", "explode"),
            ]),
            &[],
        );
        let lan = d.networks[0].1.as_ref().unwrap_err();
        assert!(lan.contains("10.1.0.500"), "{lan}");
        assert!(d.networks[1].1.as_ref().unwrap_err().contains("bad/name"));
        assert!(d.networks[2].1.is_ok(), "wan is fine");
        let errors = d.errors.join("\n");
        assert!(errors.contains("plumb.lan.colour"), "{errors}");
        assert!(errors.contains("plumb.other.ip"), "{errors}");
        assert!(errors.contains("explode"), "{errors}");
        assert!(!d.stop_on_error);
    }
}
