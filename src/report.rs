//! JSON views for `inspect`, `network inspect` and `ls --json`, in the shape
//! people know from `docker inspect` (NetworkSettings.Networks).

use serde_json::{Value, json};

use crate::engine::NetworkDetails;
use crate::model::{Attachment, DhcpBinding};
use crate::policy::egress::EgressRule;
use crate::store::StoredAttachment;

/// One entry of `docker inspect`'s NetworkSettings.Networks, plus plumb's extras.
pub fn endpoint(a: &Attachment) -> Value {
    let v4 = a.addresses.iter().find(|n| n.addr().is_ipv4());
    let v6 = a.addresses.iter().find(|n| n.addr().is_ipv6());
    let gw4 = a.gateways.iter().find(|g| g.is_ipv4());
    let gw6 = a.gateways.iter().find(|g| g.is_ipv6());
    json!({
        "NetworkName": a.network,
        "IfName": a.ifname,
        "HostIfName": a.host_ifname,
        "MacAddress": a.mac.to_string(),
        "IPAddress": v4.map(|n| n.addr().to_string()).unwrap_or_default(),
        "IPPrefixLen": v4.map(|n| n.prefix_len()).unwrap_or(0),
        "Gateway": gw4.map(|g| g.to_string()).unwrap_or_default(),
        "GlobalIPv6Address": v6.map(|n| n.addr().to_string()).unwrap_or_default(),
        "GlobalIPv6PrefixLen": v6.map(|n| n.prefix_len()).unwrap_or(0),
        "IPv6Gateway": gw6.map(|g| g.to_string()).unwrap_or_default(),
        "Addresses": a.addresses.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "Routes": a.routes.iter().map(|r| json!({"Destination": r.dest.to_string(), "Gateway": r.via.to_string()})).collect::<Vec<_>>(),
        "DefaultRoute": a.default_route,
        "MTU": a.mtu,
        "DHCP": a.dhcp.as_ref().map(dhcp),
        "Ports": a.publish.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "RateLimit": a.rate.map(|r| json!({
            "EgressBitsPerSecond": r.egress,
            "IngressBitsPerSecond": r.ingress,
            "BurstBytes": r.burst,
        })),
        "Labels": a.labels,
        "Egress": a.egress.as_ref().map(|e| json!({
            "Interface": e.egress.interface,
            "Gateway": e.egress.gateway.map(|g| g.to_string()),
            "Table": e.table,
            "RulePriorities": [e.priority, e.priority + 1],
        })),
        "AntiSpoofing": !a.allow_spoofing,
        // As Docker calls the names its DNS answers for an endpoint.
        "Aliases": a.names,
    })
}

/// An endpoint with its target, for lists across targets.
pub fn listed(a: &Attachment) -> Value {
    let mut v = endpoint(a);
    v["Target"] = a.shown_target().into();
    if let Some(c) = &a.container {
        v["Container"] = json!({"ID": c.id, "Name": c.name});
    }
    v
}

/// A DHCP attachment's client identity and lease, times in Unix seconds.
fn dhcp(b: &DhcpBinding) -> Value {
    let l = b.lease.as_ref();
    json!({
        "State": b.state,
        "Hostname": b.hostname,
        "FQDN": b.fqdn,
        "ClientID": b.client_id,
        "Server": l.map(|l| l.server.to_string()),
        "LeaseSeconds": l.map(|l| l.lease_secs),
        "AcquiredAt": l.map(|l| l.acquired_at),
        "RenewAt": l.map(|l| l.renew_at()),
        "RebindAt": l.map(|l| l.rebind_at()),
        "ExpiresAt": l.map(|l| l.expires_at()),
        "DNSServers": l.map(|l| l.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "Domain": l.and_then(|l| l.domain.clone()),
        "ClasslessRoutes": l.map(|l| l.routes.iter().map(|(d, v)| format!("{d} via {v}")).collect::<Vec<_>>()).unwrap_or_default(),
        "SLAAC": b.slaac,
        "DHCPv6": b.lease6.as_ref().map(|l| json!({
            "Address": l.address.to_string(),
            "ServerDUID": l.server_id,
            "AcquiredAt": l.acquired_at,
            "RenewAt": l.renew_at(),
            "RebindAt": l.rebind_at(),
            "ExpiresAt": l.expires_at(),
            "DNSServers": l.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        })),
    })
}

/// `plumb inspect TARGET`; a container's also has its ID, its name and
/// what is wrong with what it declares.
pub fn target(target: &str, attachments: &[StoredAttachment], errors: &[String]) -> Value {
    let mut networks = serde_json::Map::new();
    for a in attachments {
        networks.insert(a.attachment.network.clone(), endpoint(&a.attachment));
    }
    let container = attachments
        .iter()
        .find_map(|a| a.attachment.container.as_ref());
    let mut v = json!({
        "Target": container.map(|c| format!("docker:{}", c.name)).unwrap_or(target.to_string()),
        "Netns": attachments.first().map(|a| a.attachment.netns.clone()),
        "NetworkSettings": { "Networks": networks },
    });
    if let Some(c) = container {
        v["Id"] = c.id.clone().into();
        v["Name"] = c.name.clone().into();
    }
    if target.starts_with("docker:") {
        v["Errors"] = json!(errors);
    }
    v
}

/// One egress rule, as `egress ls --json` and a container's inspect show it.
pub fn egress_rule(r: &EgressRule) -> Value {
    json!({
        "ID": r.id,
        "Source": r.source.to_string(),
        "Interface": r.egress.interface,
        "Gateway": r.egress.gateway.map(|g| g.to_string()),
        "Table": r.table,
        "RulePriorities": [r.priority, r.priority + 1],
        "Selects": r.applied.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "Masquerade": r.masquerade,
    })
}

/// `plumb network inspect NAME`.
pub fn network(d: &NetworkDetails) -> Value {
    let (n, state, attachments) = (&d.stored, &d.host_state, &d.attachments);
    let net = &n.network;
    json!({
        "Tenant": net.tenant,
        "IsolateContainers": net.isolate_containers,
        "MulticastSnooping": net.bridge().map(|b| b.multicast_snooping()),
        "DNS": net.serve_dns.then(|| json!({
            "Domain": net.domain,
            "Servers": net.host_addresses.iter().map(|a| a.addr().to_string()).collect::<Vec<_>>(),
        })),
        "Egress": net.egress.as_ref().map(|e| json!({
            "Interface": e.interface,
            "Gateway": e.gateway.map(|g| g.to_string()),
            "Table": d.routing.map(|r| r.table),
            "RulePriorities": d.routing.map(|r| [r.priority, r.priority + 1]),
        })),
        "Name": net.name,
        "Driver": net.kind.driver_name(),
        "Options": net.kind,
        "MTU": net.mtu,
        "Subnets": net.subnets.iter().map(|s| json!({
            "Subnet": s.subnet.to_string(),
            "Gateway": s.gateway.map(|g| g.to_string()),
            "IPRange": s.ip_range.map(|r| r.to_string()),
        })).collect::<Vec<_>>(),
        "AuxAddresses": net.aux_addresses,
        "HostAddresses": net.host_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "Routes": net.routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "Owner": n.owner,
        "Docker": d.docker.as_ref().map(|(id, endpoints)| json!({
            "ID": id,
            "Endpoints": endpoints.iter().map(|e| json!({
                "ID": e.id,
                "HostIfName": e.host_ifname,
                "SandboxKey": e.sandbox,
            })).collect::<Vec<_>>(),
        })),
        "HostState": state,
        "Blocks": (!d.blocks.is_empty()).then(|| d.blocks.iter().map(|b| json!({
            "Block": b.block.to_string(),
            "Host": b.host,
        })).collect::<Vec<_>>()),
        "Attachments": attachments.iter().map(|a| json!({
            "Target": a.attachment.target,
            "IfName": a.attachment.ifname,
            "HostIfName": a.attachment.host_ifname,
            "MacAddress": a.attachment.mac.to_string(),
            "Addresses": a.attachment.addresses.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            "Aliases": a.attachment.names,
        })).collect::<Vec<_>>(),
    })
}
