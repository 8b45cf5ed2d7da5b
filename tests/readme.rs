//! README.md's `console` blocks, run as a user pasting them would: in
//! order, in one shell, as root. The shell runs in namespaces of its own
//! (network, and mount with fresh /run/netns, /run/plumb and /tmp), so the
//! names the README uses are this run's alone and whatever a failure leaves
//! goes with them. Each command must exit 0, and its output must show the
//! lines the README shows after it, in order (`…` stands for anything).
//! Blocks that use plumb without saying where get a scratch host and
//! state directory, as the tour sets up for itself, with the NICs and
//! namespaces the LAN drivers' examples name ([`DEFAULTS`]).

mod common;

use std::path::Path;
use std::process::Command;

use common::readme::{self, Runner, shaped};

/// What the blocks after the tour take as given: a scratch host whose
/// `eth1` and `eth2` (holding 192.168.1.2) are on a LAN with its router at
/// 192.168.1.1, and the namespaces `web`, `router` and `app`.
const DEFAULTS: &str = r#": "${PLUMB_HOST_NETNS:=readme-host}" "${PLUMB_STATE_DIR:=/tmp/readme-state}"
export PLUMB_HOST_NETNS PLUMB_STATE_DIR
if ! ip netns list | grep -q '^readme-host'; then
    ip netns add readme-host
    ip netns add readme-lan
    ip -n readme-lan link add br0 type bridge
    ip -n readme-lan link set br0 up
    ip -n readme-lan addr add 192.168.1.1/24 dev br0
    for i in 1 2; do
        ip link add eth$i netns readme-host type veth peer name p$i netns readme-lan
        ip -n readme-lan link set p$i master br0 up
        ip -n readme-host link set eth$i up
    done
    ip -n readme-host addr add 192.168.1.2/24 dev eth2
    ip link add eno1 netns readme-host type veth peer name p3 netns readme-lan
    ip -n readme-lan link set p3 master br0 up
    ip -n readme-host link set eno1 up
    for n in web router app; do ip netns list | grep -q "^$n" || ip netns add $n; done
    # The LAN's DHCP server, .2-.99.
    ip netns exec readme-lan dnsmasq --keep-in-foreground --no-resolv --no-hosts \
        --conf-file=/dev/null --interface=br0 --bind-interfaces --port=0 --pid-file= \
        --dhcp-range=192.168.1.3,192.168.1.99,2m --dhcp-leasefile=/tmp/readme-leases &
    for _ in $(seq 100); do ip netns exec readme-lan ss -lun | grep -q ':67 ' && break; sleep 0.1; done
fi
"#;

#[test]
fn every_console_block_of_the_readme_does_what_it_shows() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let steps = readme::steps(&readme, Runner::Here);
    let commands = steps.iter().flatten().count();
    assert!(
        commands >= 40,
        "the tour and the examples: {commands} commands"
    );

    let work =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let mut script = readme::script(&steps, DEFAULTS);
    // Background jobs (a daemon, dnsmasq) go with the run.
    script.push_str("kill $(jobs -p) 2>/dev/null; wait\n");
    std::fs::write(work.join("readme.sh"), &script).unwrap();
    for dir in ["/run/netns", "/run/plumb"] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "bash", "-c"])
        // plumb and the script move into the private /run/plumb before a
        // fresh /tmp hides where they were (the work directory may be under
        // /tmp: a clone there).
        .arg(format!(
            "mount -t tmpfs tmpfs /run/netns && mount -t tmpfs tmpfs /run/plumb && \
             cp {bin} {script} /run/plumb/ && mount -t tmpfs tmpfs /tmp && \
             ip link set lo up && PATH=/run/plumb:$PATH bash /run/plumb/readme.sh",
            bin = env!("CARGO_BIN_EXE_plumb"),
            script = work.join("readme.sh").display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&work);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("@@step"),
        "the README's shell did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    readme::check(&steps, &text);
}

#[test]
fn shapes_match_with_the_ellipsis_standing_for_anything() {
    assert!(shaped(
        "web eth0 … 10.88.0.2/24",
        "web eth0 02:58:53:d3:2d:62 10.88.0.2/24"
    ));
    assert!(!shaped(
        "web eth0 … 10.88.0.2/24",
        "web eth0 02:58 10.88.0.3/24"
    ));
    assert!(shaped("…", "anything"));
    assert!(shaped("no answer", "no answer"));
    assert!(!shaped("no answer", "no answers"));
    assert!(shaped(
        "1 packets transmitted, 1 received, 0% packet loss, time …",
        "1 packets transmitted, 1 received, 0% packet loss, time 0ms"
    ));
}
