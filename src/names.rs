//! Deterministic names and MACs derived from (network, namespace, interface),
//! so that detach needs no lookup and two plumb processes never disagree.

/// 64-bit FNV-1a over the parts, separated so ("ab","c") != ("a","bc").
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// 16 hex characters.
pub fn short_hash(parts: &[&str]) -> String {
    format!("{:016x}", fnv1a(parts))
}

/// The host-side name of an attachment: its veth end on a bridge network;
/// for a macvlan or ipvlan, which lives only in the target, just the
/// attachment's key (HostIfName).
/// `pv` + 12 hex = 14 bytes, under the 15-byte limit.
pub fn host_veth_name(network: &str, netns: &str, ifname: &str) -> String {
    format!("pv{}", &short_hash(&[network, netns, ifname])[..12])
}

/// The name on the host of the container end of an attachment that
/// Docker moves into its container (`pc` + 12 hex = 14 bytes); Docker
/// renames it there, and gives it this name back when it returns it.
pub fn staged_name(endpoint: &str) -> String {
    format!("pc{}", &short_hash(&["staged", endpoint])[..12])
}

/// The alias (IFLA_IFALIAS) that tells the staged interface of attachment
/// `host_ifname` apart wherever it goes: Docker moves and renames it, and
/// an ipvlan's MAC is its parent's, which its siblings share.
pub fn staged_alias(host_ifname: &str) -> String {
    format!("{STAGED_ALIAS}{host_ifname}")
}

/// What begins the alias of every interface plumb staged.
pub const STAGED_ALIAS: &str = "plumb:";

/// The host shim of a macvlan network: `ps-NAME` when it fits, else a hash.
pub fn shim_name(network: &str) -> String {
    let candidate = format!("ps-{network}");
    if candidate.len() <= 15 {
        candidate
    } else {
        format!("ps-{}", &short_hash(&["shim", network])[..10])
    }
}

/// A cluster network's VXLAN device: `vx-NAME` when it fits, else a hash.
pub fn overlay_device(network: &str) -> String {
    let candidate = format!("vx-{network}");
    if candidate.len() <= 15 {
        candidate
    } else {
        format!("vx-{}", &short_hash(&["overlay", network])[..10])
    }
}

/// A `plumb shim`'s interface: `ph-` and 12 hex digits of its parent and
/// address.
pub fn host_shim_name(parent: &str, address: &std::net::IpAddr) -> String {
    format!(
        "ph-{}",
        &short_hash(&["host shim", parent, &address.to_string()])[..12]
    )
}

/// The ifb inside a container that shapes what its interface `ifname`
/// receives (`ib` + 12 hex = 14 bytes).
pub fn ifb_name(ifname: &str) -> String {
    format!("ib{}", &short_hash(&["ifb", ifname])[..12])
}

/// A throwaway interface made to ask the kernel whether it can (14 bytes).
pub fn probe_name(network: &str) -> String {
    format!("pp{}", &short_hash(&["probe", network])[..12])
}

/// A locally administered unicast MAC (02:xx:...) derived from `parts`.
fn local_mac(parts: &[&str]) -> [u8; 6] {
    let h = fnv1a(parts).to_be_bytes();
    [0x02, h[1], h[2], h[3], h[4], h[5]]
}

/// The MAC of an attachment's interface inside the target.
pub fn container_mac(network: &str, netns: &str, ifname: &str) -> [u8; 6] {
    local_mac(&["mac", network, netns, ifname])
}

/// A locally administered MAC for a network's bridge.
pub fn bridge_mac(network: &str) -> [u8; 6] {
    local_mac(&["bridge", network])
}

/// What tells this machine from others on a LAN: its machine id (systemd,
/// D-Bus), else its host name.
pub fn host_identity() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .unwrap_or_default()
}

/// The MAC of a DHCP attachment: the same for the same container name on
/// the same network and host (so the server hands back the same lease after
/// a re-attach), different across hosts sharing a LAN.
pub fn dhcp_mac(host: &str, network: &str, target: &str) -> [u8; 6] {
    local_mac(&["dhcp-mac", host, network, target])
}

/// The DHCP client identifier (option 61): type 0 (not a hardware address)
/// and a stable name for (host, network, container).
pub fn dhcp_client_id(host: &str, network: &str, target: &str) -> Vec<u8> {
    let mut id = vec![0u8];
    id.extend_from_slice(b"plumb-");
    id.extend_from_slice(short_hash(&["dhcp-id", host, network, target]).as_bytes());
    id
}

/// A container name as a DHCP host name: letters, digits and `-` (Docker
/// names may also hold `_` and `.`).
pub fn container_hostname(name: &str) -> String {
    let h: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    h.trim_matches('-').to_string()
}

/// A DHCP host name from a target reference: the namespace's or file's
/// name, `pid-N` for a process, cut to a DNS label.
pub fn dhcp_hostname(target: &str) -> String {
    let base = target
        .strip_prefix("netns:")
        .unwrap_or(target)
        .rsplit('/')
        .find(|s| !s.is_empty() && *s != "net" && *s != "ns")
        .unwrap_or("container");
    let label: String = base
        .replace(':', "-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let label = label.trim_matches('-').to_string();
    if label.is_empty() {
        "container".into()
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = host_veth_name("lan", "ns:4:1234", "eth0");
        assert_eq!(a, host_veth_name("lan", "ns:4:1234", "eth0"));
        assert!(a.len() <= 15);
        assert_ne!(a, host_veth_name("lan", "ns:4:1234", "eth1"));
        assert_ne!(a, host_veth_name("lan2", "ns:4:1234", "eth0"));
        assert_ne!(short_hash(&["ab", "c"]), short_hash(&["a", "bc"]));
    }

    #[test]
    fn macs_are_local_unicast() {
        let m = container_mac("lan", "ns:4:1", "eth0");
        assert_eq!(m[0] & 0x03, 0x02);
        assert_ne!(m, container_mac("lan", "ns:4:2", "eth0"));
    }

    #[test]
    fn dhcp_identity_is_stable_per_container_and_host() {
        let m = dhcp_mac("hostA", "lan", "web");
        assert_eq!(m, dhcp_mac("hostA", "lan", "web"));
        assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(m, dhcp_mac("hostB", "lan", "web"));
        assert_ne!(m, dhcp_mac("hostA", "lan", "db"));
        assert_ne!(
            dhcp_client_id("hostA", "lan", "web"),
            dhcp_client_id("hostB", "lan", "web")
        );
    }

    #[test]
    fn dhcp_hostnames_are_dns_labels() {
        assert_eq!(dhcp_hostname("web"), "web");
        assert_eq!(dhcp_hostname("netns:Web_1"), "web-1");
        assert_eq!(dhcp_hostname("pid:42"), "pid-42");
        assert_eq!(dhcp_hostname("/run/docker/netns/abc123"), "abc123");
        assert_eq!(dhcp_hostname("/proc/42/ns/net"), "42");
        assert_eq!(dhcp_hostname("--"), "container");
    }
}
