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

/// The host-side name of an attachment: its veth end on a bridge network,
/// the temporary name of its macvlan before it moves into the target.
/// `pv` + 12 hex = 14 bytes, under the 15-byte limit.
pub fn host_veth_name(network: &str, netns: &str, ifname: &str) -> String {
    format!("pv{}", &short_hash(&[network, netns, ifname])[..12])
}

/// The host shim of a macvlan network: `ps-NAME` when it fits, else a hash.
pub fn shim_name(network: &str) -> String {
    let candidate = format!("ps-{network}");
    if candidate.len() <= 15 {
        candidate
    } else {
        format!("ps-{}", &short_hash(&["shim", network])[..10])
    }
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
}
