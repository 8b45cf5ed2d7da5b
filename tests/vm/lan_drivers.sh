#!/bin/sh
# ipvlan and 802.1q VLAN parents, with real traffic, on Debian's kernel in
# the VM (this machine's kernel has neither). Run by tests/vm.rs through
#   scripts/vm/run tests/vm/lan_drivers.sh
# The VM's root namespace is the host; its up0 is a veth into ns `lan`, the
# LAN's router: 192.168.60.1 untagged, 192.168.10.1 on VLAN 10.
set -eu

step() { echo "lan_drivers: $*"; }
fail() { echo "lan_drivers: FAILED: $*"; exit 1; }
in_ns() { ns=$1; shift; ip netns exec "$ns" "$@"; }
reaches() { in_ns "$1" ping -c 1 -W 2 "$2" >/dev/null 2>&1; }
must_reach() { reaches "$1" "$2" || fail "ns $1 cannot reach $2"; }
must_not_reach() { ! reaches "$1" "$2" || fail "ns $1 reaches $2 and must not"; }
ip_of() { plumb inspect "$1" | sed -n 's/.*"IPAddress": "\(.*\)".*/\1/p'; }
mac_of() { plumb inspect "$1" | sed -n 's/.*"MacAddress": "\(.*\)".*/\1/p'; }
link_mac() { ip link show "$1" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
fresh() { for ns in "$@"; do ip netns add "$ns"; done; }

ip netns add lan
in_ns lan ip link set lo up
ip link add up0 type veth peer name lan0 netns lan
ip link set up0 up
ip addr add 192.168.60.2/24 dev up0
in_ns lan ip addr add 192.168.60.1/24 dev lan0
in_ns lan ip link set lan0 up
in_ns lan ip link add link lan0 name lan0.10 type vlan id 10
in_ns lan ip addr add 192.168.10.1/24 dev lan0.10
in_ns lan ip link set lan0.10 up
in_ns lan ip link add link lan0 name lan0.30 type vlan id 30
in_ns lan ip addr add 192.168.30.1/24 dev lan0.30
in_ns lan ip link set lan0.30 up

step "ipvlan l2: containers on the LAN with the parent's MAC"
plumb network create iv --driver ipvlan --parent up0 --subnet 192.168.60.0/24 \
    --gateway 192.168.60.1 --ip-range 192.168.60.128/25 >/dev/null
fresh a b
plumb attach a iv >/dev/null
plumb attach b iv >/dev/null
[ "$(ip_of a)" = 192.168.60.128 ] || fail "a got $(ip_of a)"
must_reach a 192.168.60.1
must_reach b 192.168.60.1
must_reach a "$(ip_of b)"
in_ns a ip -d link show eth0 | grep -q "ipvlan.*mode l2" || fail "a's eth0 is not an ipvlan l2 link"
[ "$(mac_of a)" = "$(link_mac up0)" ] || fail "inspect shows $(mac_of a), parent has $(link_mac up0)"
in_ns lan ip neigh show 192.168.60.128 | grep -q "$(link_mac up0)" || fail "the LAN does not see the parent's MAC for a"
in_ns a ip route show default | grep -q "via 192.168.60.1 dev eth0" || fail "a has no default route via the LAN router"
plumb detach a >/dev/null
in_ns a ip link show eth0 >/dev/null 2>&1 && fail "detach left eth0 in a"
plumb network rm iv --force >/dev/null

step "ipvlan with rate limits: tbf on eth0, incoming traffic redirected to a shaped ifb"
plumb network create ivr --driver ipvlan --parent up0 --subnet 192.168.60.0/24 \
    --gateway 192.168.60.1 --ip-range 192.168.60.128/25 >/dev/null
fresh r
plumb attach r ivr --egress-rate 20mbit --ingress-rate 10mbit >/dev/null
in_ns r tc qdisc show dev eth0 | grep -q "tbf.*rate 20Mbit" || fail "no 20mbit tbf on r's eth0: $(in_ns r tc qdisc show)"
in_ns r tc qdisc show dev eth0 | grep -q "ingress" || fail "no ingress qdisc on r's eth0"
in_ns r tc filter show dev eth0 ingress | grep -q "Redirect to device" || fail "r's incoming traffic is not redirected"
in_ns r tc qdisc show | grep -v "dev eth0" | grep -q "tbf.*rate 10Mbit" || fail "no 10mbit tbf on r's ifb: $(in_ns r tc qdisc show)"
must_reach r 192.168.60.1
plumb network rm ivr --force >/dev/null
[ "$(in_ns r ip -o link show | wc -l)" = 1 ] || fail "detach left links in r: $(in_ns r ip -o link show)"

step "ipvlan private flag: no traffic between containers"
plumb network create ivp --driver ipvlan --parent up0 --ipvlan-flag private --subnet 192.168.60.0/24 \
    --gateway 192.168.60.1 --ip-range 192.168.60.128/25 >/dev/null
fresh c d
plumb attach c ivp >/dev/null
plumb attach d ivp >/dev/null
must_reach c 192.168.60.1
must_not_reach c "$(ip_of d)"
plumb network rm ivp --force >/dev/null

step "ipvlan vepa flag: container traffic goes to the switch (which does not hairpin here)"
plumb network create ivv --driver ipvlan --parent up0 --ipvlan-flag vepa --subnet 192.168.60.0/24 \
    --gateway 192.168.60.1 --ip-range 192.168.60.128/25 >/dev/null
fresh v1 v2
plumb attach v1 ivv >/dev/null
plumb attach v2 ivv >/dev/null
must_reach v1 192.168.60.1
must_not_reach v1 "$(ip_of v2)"
plumb network rm ivv --force >/dev/null

step "ipvlan l3s: like l3, through the host's netfilter"
plumb network create iv3s --driver ipvlan --parent up0 --ipvlan-mode l3s --subnet 10.62.0.0/24 >/dev/null
in_ns lan ip route add 10.62.0.0/24 via 192.168.60.2
fresh s
plumb attach s iv3s >/dev/null
in_ns s ip -d link show eth0 | grep -q "ipvlan.*mode l3s" || fail "s's eth0 is not ipvlan l3s"
in_ns s ip route show default | grep -q "default dev eth0" || fail "s has no device default route"
must_reach s 192.168.60.1
plumb network rm iv3s --force >/dev/null

step "ipvlan l3: the host routes the subnet to the parent, device default route"
plumb network create iv3 --driver ipvlan --parent up0 --ipvlan-mode l3 --subnet 10.60.0.0/24 >/dev/null
ip route show 10.60.0.0/24 | grep -q "dev up0" || fail "no host route for the l3 subnet"
in_ns lan ip route add 10.60.0.0/24 via 192.168.60.2
fresh e
plumb attach e iv3 >/dev/null
in_ns e ip route show default | grep -q "default dev eth0" || fail "e has no device default route: $(in_ns e ip route)"
must_reach e 192.168.60.1
plumb network rm iv3 --force >/dev/null
ip route show 10.60.0.0/24 | grep -q . && fail "the l3 host route outlived its network"

step "VLAN parent: created when missing, tagged frames reach VLAN 10"
plumb network create vv --driver macvlan --parent up0 --vlan 10 --subnet 192.168.10.0/24 \
    --gateway 192.168.10.1 --ip-range 192.168.10.128/25 >/dev/null
ip -d link show up0.10 | grep -q "vlan protocol 802.1Q id 10" || fail "up0.10 was not created as VLAN 10"
fresh f
plumb attach f vv >/dev/null
before=$(in_ns lan cat /sys/class/net/lan0.10/statistics/rx_packets)
must_reach f 192.168.10.1
after=$(in_ns lan cat /sys/class/net/lan0.10/statistics/rx_packets)
[ "$after" -gt "$before" ] || fail "nothing arrived on the LAN's VLAN 10 interface"

step "one parent takes macvlans or ipvlans, never both: said plainly"
out=$(plumb network create ivx --driver ipvlan --parent up0.10 --subnet 192.168.12.0/24 2>&1) && fail "ipvlan beside macvlans accepted"
echo "$out" | grep -q "cannot share a parent" || fail "unclear error: $out"

step "VLAN parent shared by a second network: kept until the last one goes"
plumb network create vv2 --driver macvlan --parent up0.10 --subnet 192.168.11.0/24 >/dev/null
plumb network rm vv --force >/dev/null
ip link show up0.10 >/dev/null 2>&1 || fail "up0.10 removed while vv2 still uses it"
plumb network rm vv2 >/dev/null
ip link show up0.10 >/dev/null 2>&1 && fail "up0.10 outlived the last network plumb made it for"

step "a VLAN the user made is never removed"
ip link add link up0 name up0.20 type vlan id 20
ip link set up0.20 up
plumb network create v20 --driver macvlan --parent up0.20 --subnet 192.168.20.0/24 >/dev/null
plumb network rm v20 >/dev/null
ip link show up0.20 >/dev/null 2>&1 || fail "plumb removed a VLAN it did not create"

step "a bridged-mode bridge on VLAN 30 of the uplink, and two networks on one parent"
plumb network create b30 --mode bridged --uplink up0 --vlan 30 --subnet 192.168.30.0/24 \
    --gateway 192.168.30.1 --ip-range 192.168.30.128/25 >/dev/null
ip -d link show up0.30 | grep -q "vlan protocol 802.1Q id 30" || fail "up0.30 was not created"
ip link show up0.30 | grep -q "master pl-b30" || fail "up0.30 is not the bridge's port"
plumb network create m60 --driver macvlan --parent up0 --subnet 192.168.60.0/24 \
    --gateway 192.168.60.1 --ip-range 192.168.60.64/27 >/dev/null
plumb network create m61 --driver macvlan --parent up0 --subnet 10.61.0.0/24 >/dev/null
fresh g
plumb attach g b30 >/dev/null
plumb attach g m60 >/dev/null
must_reach g 192.168.30.1
must_reach g 192.168.60.1
plumb network rm b30 --force >/dev/null
ip link show up0.30 >/dev/null 2>&1 && fail "up0.30 outlived its bridge network"
plumb network rm m60 --force >/dev/null
plumb network rm m61 >/dev/null

step "bad VLAN ids are refused"
out=$(plumb network create bad --driver macvlan --parent up0 --vlan 4095 --subnet 192.168.30.0/24 2>&1) && fail "VLAN 4095 accepted"
echo "$out" | grep -q "between 1 and 4094" || fail "unclear error: $out"
ip link show up0.4095 >/dev/null 2>&1 && fail "a VLAN was made for a refused network"

step "ipvlan l2 with DHCP: the LAN's server (busybox udhcpd) leases through the shared MAC"
printf '%s\n' "start 192.168.60.200" "end 192.168.60.210" "interface lan0" \
    "option subnet 255.255.255.0" "option router 192.168.60.1" "option lease 600" \
    "lease_file /tmp/udhcpd.leases" "pidfile /tmp/udhcpd.pid" >/tmp/udhcpd.conf
touch /tmp/udhcpd.leases
in_ns lan busybox udhcpd -f /tmp/udhcpd.conf >/tmp/udhcpd.log 2>&1 &
udhcpd=$!
plumb daemon --dhcp-timeout 10 >/tmp/plumbd.log 2>&1 &
daemon=$!
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/plumb/plumbd.sock ] && break; sleep 0.5; done
plumb network create ivd --driver ipvlan --parent up0 --ipam dhcp --no-slaac >/dev/null
fresh dh
plumb attach dh ivd >/dev/null || { cat /tmp/plumbd.log /tmp/udhcpd.log; fail "DHCP attach on ipvlan failed"; }
case "$(ip_of dh)" in 192.168.60.20[0-9]|192.168.60.210) ;; *) fail "dh got $(ip_of dh) by DHCP";; esac
must_reach dh 192.168.60.1
[ "$(mac_of dh)" = "$(link_mac up0)" ] || fail "the ipvlan does not use the parent's MAC"
plumb detach dh >/dev/null
plumb network rm ivd >/dev/null
kill "$daemon" "$udhcpd"
wait "$daemon" 2>/dev/null || true

step ok
