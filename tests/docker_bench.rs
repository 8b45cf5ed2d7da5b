//! Benchmark (ignored by `cargo test`; see bench/README.md): how long
//! `docker run -d` takes until the container has a usable address on a
//! plumb network: one it declares by label (static addresses, and a lease
//! from dnsmasq on a bridged DHCP LAN; plumb's daemon attaches it after the
//! start, so a thread watches for the address), and a NAT network made by
//! `docker network create -d plumb` (plumb as Docker's driver), against the
//! same container on Docker's own bridge networks. On the last two Docker
//! puts the address on before the container's process starts: it is
//! checked once `docker run` returns, and no watcher competes for the CPU.
//! Median of N runs each, the kinds taking turns, in one run, with the
//! ratios; then `docker network create` with plumb's driver and Docker's
//! bridge driver.
//!
//! ```text
//! cargo test --test docker_bench -- --ignored --nocapture
//! PLUMB_BENCH_N=20 cargo test --test docker_bench -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::docker::Dockerd;
use common::{Lab, wait_until};

const DHCP_SERVER: &str = "192.168.71.1";

/// The pid of the process whose command line is `sleep TAG`, once it runs.
fn pid_of(tag: &str) -> Option<u32> {
    let want = format!("sleep\0{tag}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // Exactly: `docker run … sleep TAG` ends the same way.
        (cmdline == want.as_bytes()).then_some(pid)
    })
}

/// Whether the namespace of `pid` has a local IPv4 address starting with
/// `prefix` (read from /proc, no process spawned).
fn has_address(pid: u32, prefix: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).is_ok_and(|t| {
        let lines: Vec<&str> = t.lines().collect();
        lines.windows(2).any(|w| {
            w[0].trim_start_matches([' ', '|', '-', '+'])
                .starts_with(prefix)
                && w[1].contains("/32 host LOCAL")
        })
    })
}

/// When a kind's container has its address.
#[derive(Clone, Copy)]
enum Ready {
    /// Docker puts it (this prefix) on before the process starts.
    Started(&'static str),
    /// Docker's own, not checked (the default bridge).
    Unchecked,
    /// plumb's daemon, after the start: watched for (this prefix).
    Later(&'static str),
}

/// `docker run -d` container `name` (`opts`, running `sleep TAG`), and
/// return how long `docker run` took and how long until the container had
/// its address.
fn run(
    docker: &Dockerd,
    name: &str,
    opts: &[&str],
    tag: &str,
    ready: Ready,
) -> (Duration, Duration) {
    let mut args = vec!["run", "-d", "--name", name, "--stop-timeout", "1"];
    args.extend(opts.iter().copied());
    args.extend([docker.image(), "sleep", tag]);
    let t0 = Instant::now();
    let watcher = match ready {
        Ready::Later(p) => Some(p),
        _ => None,
    }
    .map(|p| {
        let (tag, p) = (tag.to_string(), p.to_string());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut pid = None;
            while Instant::now() < deadline {
                pid = pid.or_else(|| pid_of(&tag));
                if pid.is_some_and(|pid| has_address(pid, &p)) {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            None
        })
    });
    docker.must(&args);
    let started = t0.elapsed();
    let usable = match watcher {
        Some(w) => w.join().unwrap().expect("an address within 60 s") - t0,
        None => started,
    };
    if let Ready::Started(prefix) = ready {
        let pid = pid_of(tag).expect("the container runs");
        assert!(
            has_address(pid, prefix),
            "{name} has its address once started"
        );
    }
    (started, usable)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
#[ignore = "a benchmark: cargo test --test docker_bench -- --ignored --nocapture"]
fn address_after_docker_start() {
    let n: usize = std::env::var("PLUMB_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let lab = Lab::new("dbn");
    let server = lab.lan("dhcpsrv", &format!("{DHCP_SERVER}/24"));
    let _dnsmasq = lab.dnsmasq(
        &server,
        "--dhcp-range=192.168.71.100,192.168.71.250,2m --dhcp-authoritative --no-ping",
    );
    let docker = Dockerd::start(&lab, false);
    lab.ok(&[
        "network",
        "create",
        "lan",
        "--driver",
        "bridge",
        "--mode",
        "nat",
        "--subnet",
        "10.64.0.0/24",
    ]);
    lab.dhcp_network("dlan", &[]);
    let driver = lab.name("bdrv");
    let _daemon = docker.plumb_daemon(&["--docker-plugin", &driver]);
    let socket = format!("/run/docker/plugins/{driver}.sock");
    wait_until("the driver's socket", 10, || {
        std::path::Path::new(&socket).exists()
    });
    docker.must(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.65.0.0/24",
        "-o",
        "mode=nat",
        "pnat",
    ]);
    // Docker's bridge driver on a network of its own: like plumb's, a
    // user-defined network, with Docker's embedded DNS.
    docker.must(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.66.0.0/24",
        "dnat",
    ]);

    // (label, docker run options, when the address is there)
    let kinds: [(&str, Vec<&str>, Ready); 5] = [
        ("docker bridge", vec!["--net", "bridge"], Ready::Unchecked),
        (
            "docker network",
            vec!["--net", "dnat"],
            Ready::Started("10.66.0."),
        ),
        (
            "plumb static",
            vec!["--net", "none", "-l", "plumb.networks=lan"],
            Ready::Later("10.64.0."),
        ),
        (
            "plumb DHCP",
            vec!["--net", "none", "-l", "plumb.networks=dlan"],
            Ready::Later("192.168.71."),
        ),
        (
            "plumb driver",
            vec!["--net", "pnat"],
            Ready::Started("10.65.0."),
        ),
    ];
    let mut times: Vec<(Vec<Duration>, Vec<Duration>)> = vec![Default::default(); kinds.len()];
    for i in 0..n {
        for (k, (_, opts, ready)) in kinds.iter().enumerate() {
            let name = format!("b{k}x{i}");
            let tag = format!("{}{k}{i:04}", 700_000 + std::process::id() % 1000);
            let (s, u) = run(&docker, &name, opts, &tag, *ready);
            times[k].0.push(s);
            times[k].1.push(u);
            docker.must(&["rm", "-f", &name]);
        }
    }
    let results: Vec<_> = kinds
        .iter()
        .zip(times)
        .map(|((label, _, _), (s, u))| (label, median(s), median(u)))
        .collect();
    // `docker network create`, the two drivers taking turns.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..n.min(20) {
        for (driver, out) in [(driver.as_str(), &mut ours), ("bridge", &mut theirs)] {
            let name = format!("c{i}{driver}");
            let subnet = format!("10.{}.{}.0/24", 100 + usize::from(driver == "bridge"), i);
            let t0 = Instant::now();
            docker.must(&[
                "network", "create", "-d", driver, "--subnet", &subnet, &name,
            ]);
            out.push(t0.elapsed());
            docker.must(&["network", "rm", &name]);
        }
    }
    // Every container gone, every plumb attachment with it.
    wait_until("plumb to have detached every container", 30, || {
        docker.plumb_targets().is_empty()
    });

    let (bridge, network) = (results[0].2, results[1].2);
    println!("\nmedian of {n} runs each (ms): docker run -d returns | usable address");
    println!("  (ratios: to Docker's default bridge | to a Docker bridge network)");
    for (label, s, u) in &results {
        println!(
            "  {label:<14} {:>8.1} | {:>8.1}   {:.2}x | {:.2}x",
            ms(*s),
            ms(*u),
            ms(*u) / ms(bridge),
            ms(*u) / ms(network)
        );
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "docker network create: plumb {:.1} ms, Docker's bridge {:.1} ms ({:.2}x)",
        ms(ours),
        ms(theirs),
        ms(ours) / ms(theirs)
    );
}
