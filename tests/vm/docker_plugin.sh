#!/bin/sh
# plumb's Docker driver with ipvlan and an 802.1q VLAN parent, on Debian's
# kernel in the VM (this machine's kernel has neither). There is no dockerd
# in the VM: this script plays libnetwork's part, calling the driver's
# socket with curl in Docker's order and moving the interface as
# libnetwork does. Run by tests/vm.rs through
#   scripts/vm/run tests/vm/docker_plugin.sh
set -eu

step() { echo "docker_plugin: $*"; }
fail() { echo "docker_plugin: FAILED: $*"; cat /tmp/plumbd.log; exit 1; }
in_ns() { ns=$1; shift; ip netns exec "$ns" "$@"; }
reaches() { in_ns "$1" ping -c 1 -W 2 "$2" >/dev/null 2>&1; }
sock=/run/docker/plugins/vmtest.sock
call() { curl -sS --unix-socket "$sock" -X POST -d "$2" "http://plugin/$1"; }
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
id() { printf "%064d" "$1"; }

ip netns add lan
in_ns lan ip link set lo up
ip link add up0 type veth peer name lan0 netns lan
ip link set up0 up
in_ns lan ip addr add 192.168.60.1/24 dev lan0
in_ns lan ip link set lan0 up
in_ns lan ip link add link lan0 name lan0.10 type vlan id 10
in_ns lan ip addr add 192.168.10.1/24 dev lan0.10
in_ns lan ip link set lan0.10 up

plumb daemon --docker-plugin vmtest --docker-socket /nonexistent.sock >/tmp/plumbd.log 2>&1 &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "no driver socket"
out=$(call Plugin.Activate '')
echo "$out" | grep -q NetworkDriver || fail "Activate: $out"

# One endpoint's life as Docker leads it: create, join, libnetwork's move,
# plumb's finish, traffic, leave, the move back, delete.
endpoint() {  # endpoint NET EP NS ADDRESS/LEN REACH
    net=$1 ep=$2 ns=$3 addr=$4 peer=$5
    out=$(call NetworkDriver.CreateEndpoint "{\"NetworkID\":\"$net\",\"EndpointID\":\"$ep\",\"Interface\":{\"Address\":\"$addr\"},\"Options\":{}}")
    echo "$out" | grep -q '"Err"' && fail "CreateEndpoint: $out"
    created=$out
    mac=$(echo "$out" | field MacAddress)
    ip netns add "$ns"
    out=$(call NetworkDriver.Join "{\"NetworkID\":\"$net\",\"EndpointID\":\"$ep\",\"SandboxKey\":\"/run/netns/$ns\",\"Options\":{}}")
    src=$(echo "$out" | field SrcName)
    gw=$(echo "$out" | field Gateway)
    [ -n "$src" ] && [ -n "$gw" ] || fail "Join: $out"
    ip link show "$src" >/dev/null || fail "no staged $src on the host"
    ip link set "$src" netns "$ns"
    in_ns "$ns" ip link set "$src" name eth0
    [ -z "$mac" ] || in_ns "$ns" ip link set eth0 address "$mac"
    in_ns "$ns" ip addr add "$addr" dev eth0
    in_ns "$ns" ip link set eth0 up
    in_ns "$ns" ip route add default via "$gw"
    for _ in $(seq 100); do plumb ls | grep "/run/netns/$ns" | grep -q eth0 && break; sleep 0.1; done
    plumb ls | grep "/run/netns/$ns" | grep -q eth0 || fail "plumb did not finish $ep in $ns: $(plumb ls)"
    reaches "$ns" "$peer" || fail "$ns cannot reach $peer"
    out=$(call NetworkDriver.Leave "{\"NetworkID\":\"$net\",\"EndpointID\":\"$ep\"}")
    [ "$out" = "{}" ] || fail "Leave: $out"
    in_ns "$ns" ip link set eth0 down
    in_ns "$ns" ip link set eth0 name "$src"
    in_ns "$ns" ip link set "$src" netns 1
    out=$(call NetworkDriver.DeleteEndpoint "{\"NetworkID\":\"$net\",\"EndpointID\":\"$ep\"}")
    [ "$out" = "{}" ] || fail "DeleteEndpoint: $out"
    ip link show "$src" >/dev/null 2>&1 && fail "$src left on the host"
    [ "$(plumb ls | wc -l)" = 1 ] || fail "attachments left: $(plumb ls)"
    ip netns del "$ns"
}

step "ipvlan l2 through Docker's protocol"
net=$(id 1)
out=$(call NetworkDriver.CreateNetwork "{\"NetworkID\":\"$net\",\"Options\":{\"com.docker.network.generic\":{\"driver\":\"ipvlan\",\"parent\":\"up0\"}},\"IPv4Data\":[{\"AddressSpace\":\"LocalDefault\",\"Pool\":\"192.168.60.0/24\",\"Gateway\":\"192.168.60.1/24\"}],\"IPv6Data\":[]}")
[ "$out" = "{}" ] || fail "CreateNetwork: $out"
out=$(call NetworkDriver.CreateEndpoint "{\"NetworkID\":\"$net\",\"EndpointID\":\"$(id 9)\",\"Interface\":{\"Address\":\"192.168.60.9/24\",\"MacAddress\":\"02:00:00:00:00:09\"},\"Options\":{}}")
echo "$out" | grep -q "parent's MAC" || fail "an ipvlan endpoint took a MAC of its own: $out"
endpoint "$net" "$(id 11)" c1 192.168.60.140/24 192.168.60.1
echo "$created" | grep -q MacAddress && fail "plumb gave an ipvlan endpoint a MAC: $created"
out=$(call NetworkDriver.DeleteNetwork "{\"NetworkID\":\"$net\"}")
[ "$out" = "{}" ] || fail "DeleteNetwork: $out"
plumb network ls | grep -q docker- && fail "the network stayed: $(plumb network ls)"

step "two ipvlan networks of one parent in one container: each finishes on its own interface"
# Siblings share their parent's MAC: plumb tells them apart by the alias it
# tags a staged interface with. Both are moved in, and B (made second, so
# listed after A) comes up first: by MAC alone, B's finish would take A's.
rep() { printf "$1%.0s" $(seq 64); }
neta=$(rep a) netb=$(rep b) epa=$(rep c) epb=$(rep d)
for n in "$neta 192.168.60.0/25 192.168.60.1/25" "$netb 192.168.60.128/25 192.168.60.129/25"; do
    set -- $n
    out=$(call NetworkDriver.CreateNetwork "{\"NetworkID\":\"$1\",\"Options\":{\"com.docker.network.generic\":{\"driver\":\"ipvlan\",\"parent\":\"up0\"}},\"IPv4Data\":[{\"AddressSpace\":\"LocalDefault\",\"Pool\":\"$2\",\"Gateway\":\"$3\"}],\"IPv6Data\":[]}")
    [ "$out" = "{}" ] || fail "CreateNetwork: $out"
done
ip netns add c3
for e in "$neta $epa 192.168.60.20/25" "$netb $epb 192.168.60.150/25"; do
    set -- $e
    out=$(call NetworkDriver.CreateEndpoint "{\"NetworkID\":\"$1\",\"EndpointID\":\"$2\",\"Interface\":{\"Address\":\"$3\"},\"Options\":{}}")
    echo "$out" | grep -q '"Err"' && fail "CreateEndpoint: $out"
    out=$(call NetworkDriver.Join "{\"NetworkID\":\"$1\",\"EndpointID\":\"$2\",\"SandboxKey\":\"/run/netns/c3\",\"Options\":{}}")
    echo "$out" | grep -q SrcName || fail "Join: $out"
    echo "$out" | field SrcName >"/tmp/src-$2"
done
srca=$(cat "/tmp/src-$epa") srcb=$(cat "/tmp/src-$epb")
for m in "$srcb eth0 192.168.60.150/25" "$srca eth1 192.168.60.20/25"; do
    set -- $m
    ip link set "$1" netns c3
    in_ns c3 ip link set "$1" name "$2"
    in_ns c3 ip addr add "$3" dev "$2"
done
finished() { plumb ls | grep "/run/netns/c3" | grep -c " eth[01] " ; }
in_ns c3 ip link set eth0 up
for _ in $(seq 100); do [ "$(finished)" = 1 ] && break; sleep 0.1; done
in_ns c3 ip link set eth1 up
for _ in $(seq 100); do [ "$(finished)" = 2 ] && break; sleep 0.1; done
[ "$(finished)" = 2 ] || fail "both not finished: $(plumb ls)"
plumb ls | grep "$(echo "$neta" | cut -c1-12)" | grep -q " eth1 " || fail "network A's attachment is not eth1: $(plumb ls)"
plumb ls | grep "$(echo "$netb" | cut -c1-12)" | grep -q " eth0 " || fail "network B's attachment is not eth0: $(plumb ls)"
for e in "$neta $epa $srca eth1" "$netb $epb $srcb eth0"; do
    set -- $e
    out=$(call NetworkDriver.Leave "{\"NetworkID\":\"$1\",\"EndpointID\":\"$2\"}")
    [ "$out" = "{}" ] || fail "Leave: $out"
    in_ns c3 ip link set "$4" down
    in_ns c3 ip link set "$4" name "$3"
    in_ns c3 ip link set "$3" netns 1
    out=$(call NetworkDriver.DeleteEndpoint "{\"NetworkID\":\"$1\",\"EndpointID\":\"$2\"}")
    [ "$out" = "{}" ] || fail "DeleteEndpoint: $out"
    out=$(call NetworkDriver.DeleteNetwork "{\"NetworkID\":\"$1\"}")
    [ "$out" = "{}" ] || fail "DeleteNetwork: $out"
done
ip netns del c3
[ "$(plumb ls | wc -l)" = 1 ] || fail "attachments left: $(plumb ls)"

step "macvlan on VLAN 10 of up0 through Docker's protocol"
net=$(id 2)
out=$(call NetworkDriver.CreateNetwork "{\"NetworkID\":\"$net\",\"Options\":{\"com.docker.network.generic\":{\"parent\":\"up0\",\"vlan\":\"10\"}},\"IPv4Data\":[{\"AddressSpace\":\"LocalDefault\",\"Pool\":\"192.168.10.0/24\",\"Gateway\":\"192.168.10.1/24\"}],\"IPv6Data\":[]}")
[ "$out" = "{}" ] || fail "CreateNetwork: $out"
endpoint "$net" "$(id 21)" c2 192.168.10.140/24 192.168.10.1
out=$(call NetworkDriver.DeleteNetwork "{\"NetworkID\":\"$net\"}")
[ "$out" = "{}" ] || fail "DeleteNetwork: $out"
ip link show up0.10 >/dev/null 2>&1 && fail "the VLAN plumb made stayed"

kill "$daemon"
wait "$daemon" 2>/dev/null || true
step ok
