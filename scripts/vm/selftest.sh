#!/bin/sh
# Guest test proving the VM harness works: run with
#   scripts/vm/run scripts/vm/selftest.sh
# Inside the VM (busybox sh, root, a throwaway kernel) it checks the Debian
# cloud kernel, then builds
#   ns lan:  lan0 10.9.0.1/24 ---veth--- up0 (VM's root ns, ipvlan parent)
#            lan0.10 10.10.0.1/24            |-- ipv1 10.9.0.11 in ns a
#                                            |-- ipv2 10.9.0.12 in ns b
#                                          up0.10 10.10.0.2/24 in ns a
# and pings across ipvlan (a, b -> lan, a -> b) and across VLAN 10 (a -> lan),
# loads a NAT ruleset with nft, and runs plumb: --version, then a NAT network
# with one namespace attached. Any failure exits non-zero.
set -eu

step() { echo "selftest: $*"; }
fail() { echo "selftest: FAILED: $*"; exit 1; }
in_ns() { ns=$1; shift; ip netns exec "$ns" "$@"; }
pingq() { in_ns "$1" ping -c 1 -W 2 "$2" >/dev/null || fail "ping $2 from ns $1"; }

kernel=$(uname -r)
step "kernel $kernel"
case $kernel in *-cloud-amd64) ;; *) fail "not the Debian cloud kernel: $kernel" ;; esac

for ns in lan a b; do ip netns add "$ns"; done
in_ns lan ip link set lo up

ip link add up0 type veth peer name lan0 netns lan
ip link set up0 up
in_ns lan ip addr add 10.9.0.1/24 dev lan0
in_ns lan ip link set lan0 up

step "ipvlan l2 on up0, slaves in ns a and b"
for i in 1 2; do
    ns=$(echo ab | cut -c$i)
    ip link add ipv$i link up0 type ipvlan mode l2
    ip link set ipv$i netns "$ns"
    in_ns "$ns" ip addr add 10.9.0.1$i/24 dev ipv$i
    in_ns "$ns" ip link set ipv$i up
done
in_ns a ip -d link show ipv1 | grep -q "ipvlan.*mode l2" || fail "ipv1 is not an ipvlan l2 link"
pingq a 10.9.0.1
pingq b 10.9.0.1
pingq a 10.9.0.12

step "802.1q VLAN 10 over the same veth"
ip link add link up0 name up0.10 type vlan id 10
ip link set up0.10 netns a
in_ns a ip addr add 10.10.0.2/24 dev up0.10
in_ns a ip link set up0.10 up
in_ns lan ip link add link lan0 name lan0.10 type vlan id 10
in_ns lan ip addr add 10.10.0.1/24 dev lan0.10
in_ns lan ip link set lan0.10 up
in_ns a ip -d link show up0.10 | grep -q "vlan protocol 802.1Q id 10" || fail "up0.10 is not VLAN 10"
pingq a 10.10.0.1

step "nftables NAT"
in_ns lan nft -f - <<'EOF' || fail "nft NAT ruleset"
table inet selftest {
    chain post { type nat hook postrouting priority srcnat; policy accept; oifname "lan0" masquerade; }
}
EOF
in_ns lan nft list ruleset | grep -q masquerade || fail "masquerade rule missing"

step "$(plumb --version): a NAT network (its tables written over nfnetlink)"
plumb network create selftest --subnet 10.77.0.0/24 >/dev/null
ip netns add c1
plumb attach c1 selftest >/dev/null
pingq c1 10.77.0.1
nft list table inet plumb | grep -q "10.77.0.0/24.*masquerade" || fail "plumb's masquerade rule missing"
plumb detach c1 selftest >/dev/null
plumb network rm selftest >/dev/null
step ok
