//! A cluster store as etcd users run it: TLS with client certificates
//! (`--client-cert-auth`) and etcd's authentication on, plumb's user with a
//! role that may read and write `/plumb/` and nothing else. etcd 3.4
//! (Debian's) in a namespace of its own, on the far end of a wire from the
//! lab's host; a CA, etcd's certificate (for its underlay address) and
//! plumb's client certificate made with `openssl` in the lab's directory.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::cluster::{Daemon, etcd_with, log_of, plumb_at, text};
use common::{Bg, Lab, must, wait_for, wait_until};
use serde_json::Value;

const STORE: &str = "etcds://10.250.0.10:2379";
const ROOT_PASSWORD: &str = "root-pw-1";
const PASSWORD: &str = "plumb-pw-2";

/// The files of the lab's PKI.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A CA, a certificate for etcd at 10.250.0.10, one for plumb's clients
/// (its CN no etcd user: the password is what logs plumb in), and a client
/// certificate of another CA etcd does not trust.
fn pki(lab: &Lab) -> Pki {
    let dir = lab.state.path().join("pki");
    std::fs::create_dir(&dir).unwrap();
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let d = dir.display();
    for ca in ["ca", "rogue-ca"] {
        must(&format!(
            "cd {d} && openssl req -x509 {key} -days 2 -subj /CN={ca} -keyout {ca}.key -out {ca}.pem 2>&1"
        ));
    }
    for (name, ca, ext) in [
        (
            "server",
            "ca",
            "subjectAltName=IP:10.250.0.10\nextendedKeyUsage=serverAuth",
        ),
        ("client", "ca", "extendedKeyUsage=clientAuth"),
        ("rogue", "rogue-ca", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        must(&format!(
            "cd {d} && openssl req {key} -subj /CN=host-{name} -keyout {name}.key -out {name}.csr 2>&1 \
             && openssl x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
                -days 2 -extfile {name}.ext -out {name}.pem 2>&1"
        ));
    }
    std::fs::write(dir.join("password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(dir.join("wrong-password"), "not-it\n").unwrap();
    Pki { dir }
}

/// The lab's host at 10.250.0.1, etcd's namespace at 10.250.0.10.
fn underlay(lab: &Lab) -> String {
    let etcd_ns = lab.netns("etcd");
    lab.wire(
        &lab.host,
        "under0",
        Some("10.250.0.1/24"),
        &etcd_ns,
        "eth0",
        Some("10.250.0.10/24"),
    );
    etcd_ns
}

/// etcd on https with client certificates required, authentication on:
/// `root`, and `plumb` with role `plumb` (readwrite on the `/plumb/`
/// prefix).
fn etcd(lab: &Lab, ns: &str, pki: &Pki) -> Bg {
    let bg = etcd_with(
        lab,
        ns,
        "https",
        &format!(
            "--cert-file {} --key-file {} --trusted-ca-file {} --client-cert-auth",
            pki.file("server.pem"),
            pki.file("server.key"),
            pki.file("ca.pem"),
        ),
    );
    let etcdctl = format!(
        "etcdctl --endpoints https://10.250.0.10:2379 --cacert {} --cert {} --key {} --dial-timeout 3s",
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client.key")
    );
    // The first request may come before etcd has elected itself.
    wait_for("etcd to answer", 20, || {
        let out = lab.exec(ns, &format!("{etcdctl} endpoint health"));
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "{}{}",
                text(&out),
                std::fs::read_to_string(&bg.log).unwrap_or_default()
            )),
        }
    });
    for step in [
        format!("user add root --new-user-password {ROOT_PASSWORD}"),
        "user grant-role root root".to_string(),
        format!("user add plumb --new-user-password {PASSWORD}"),
        "role add plumb".to_string(),
        "role grant-permission plumb --prefix=true readwrite /plumb/".to_string(),
        "user grant-role plumb plumb".to_string(),
        "auth enable".to_string(),
    ] {
        let out = lab.exec(ns, &format!("{etcdctl} {step}"));
        assert!(out.status.success(), "etcdctl {step}: {}", text(&out));
    }
    bg
}

/// Everything plumb needs to get into the store, as options.
fn access(pki: &Pki) -> Vec<String> {
    [
        ("--cluster-store", STORE.to_string()),
        ("--cluster-ca", pki.file("ca.pem")),
        ("--cluster-cert", pki.file("client.pem")),
        ("--cluster-key", pki.file("client.key")),
        ("--cluster-user", "plumb".to_string()),
        ("--cluster-password-file", pki.file("password")),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

/// `access` without `drop` (and its value), with `extra`.
fn access_but(pki: &Pki, drop: &[&str], extra: &[String]) -> Vec<String> {
    let all = access(pki);
    let mut out: Vec<String> = all
        .chunks(2)
        .filter(|kv| !drop.contains(&kv[0].as_str()))
        .flatten()
        .cloned()
        .collect();
    out.extend_from_slice(extra);
    out
}

/// plumb from the lab's host with `args` then `options`.
fn plumb(lab: &Lab, args: &[&str], options: &[String]) -> Output {
    let mut cmd = lab.command(args);
    cmd.args(options);
    cmd.output().expect("run plumb")
}

/// `plumb cluster members --json` with `options`: (host, vtep), or what
/// plumb said when it failed.
fn members(lab: &Lab, options: &[String]) -> Result<Vec<(String, String)>, String> {
    let out = plumb(lab, &["cluster", "members", "--json"], options);
    if !out.status.success() {
        return Err(text(&out));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["host"].as_str().unwrap_or_default().to_string(),
                m["vtep"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// A daemon of the lab's host, state of its own, in the cluster as `name`;
/// its TLS files from the environment, as a unit's `Environment=` gives
/// them, and the password from PLUMB_CLUSTER_PASSWORD.
fn member_daemon(lab: &Lab, pki: &Pki, name: &str, password: &str, log: &str) -> Daemon {
    let state = lab.state.path().join(format!("state-{log}"));
    let log = std::fs::File::create(lab.state.path().join(format!("{log}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args([
            "--state-dir",
            state.to_str().unwrap(),
            "--host-netns",
            &lab.host,
        ])
        .args(["--socket", state.join("plumbd.sock").to_str().unwrap()])
        .args(["daemon", "--docker-plugin", "none", "--cluster-ttl", "2"])
        .args(["--cluster-host", name])
        .env("PLUMB_CLUSTER_STORE", STORE)
        .env("PLUMB_CLUSTER_CA", pki.file("ca.pem"))
        .env("PLUMB_CLUSTER_CERT", pki.file("client.pem"))
        .env("PLUMB_CLUSTER_KEY", pki.file("client.key"))
        .env("PLUMB_CLUSTER_USER", "plumb")
        .env("PLUMB_CLUSTER_PASSWORD", password)
        .env("PLUMB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Daemon)
        .expect("start a daemon")
}

fn pair(host: &str, vtep: &str) -> (String, String) {
    (host.to_string(), vtep.to_string())
}

#[test]
fn a_daemon_joins_over_tls_with_a_client_certificate_and_a_password() {
    let lab = Lab::new("tlj");
    let pki = pki(&lab);
    let etcd_ns = underlay(&lab);
    let _etcd = etcd(&lab, &etcd_ns, &pki);
    let _d1 = member_daemon(&lab, &pki, "h1", PASSWORD, "d1");
    // It advertises the address it reaches the store from (an https
    // endpoint's).
    wait_for("h1 to join over TLS", 15, || {
        match members(&lab, &access(&pki)) {
            Ok(m) if m == [pair("h1", "10.250.0.1")] => Ok(()),
            Ok(m) => Err(format!("{m:?}\n{}", log_of(&lab, "d1"))),
            Err(e) => Err(format!("{e}\n{}", log_of(&lab, "d1"))),
        }
    });
    assert!(log_of(&lab, "d1").contains("joined the cluster"));
    // Its user may write only under /plumb/: that is where all of it went.
    // The password is in no log.
    assert!(!log_of(&lab, "d1").contains(PASSWORD));
}

#[test]
fn a_store_refuses_plumb_without_its_ca_its_certificate_or_the_password() {
    let lab = Lab::new("tlr");
    let pki = pki(&lab);
    let etcd_ns = underlay(&lab);
    let _etcd = etcd(&lab, &etcd_ns, &pki);

    // etcd's certificate is not from a CA of the system: not trusted.
    let err = members(&lab, &access_but(&pki, &["--cluster-ca"], &[])).unwrap_err();
    assert!(
        err.contains("cluster store (https://10.250.0.10:2379)")
            && err.contains("UnknownIssuer")
            && err.contains("--cluster-ca"),
        "{err}"
    );
    // The wrong password: etcd's authentication says no.
    let wrong = access_but(
        &pki,
        &["--cluster-password-file"],
        &["--cluster-password-file".into(), pki.file("wrong-password")],
    );
    let err = members(&lab, &wrong).unwrap_err();
    assert!(
        err.contains("connect as user `plumb`") && err.contains("authentication failed"),
        "{err}"
    );
    // No user: the certificate's CN is no user of etcd's.
    let err = members(
        &lab,
        &access_but(&pki, &["--cluster-user", "--cluster-password-file"], &[]),
    )
    .unwrap_err();
    assert!(
        err.contains("permission denied") && err.contains("--cluster-user"),
        "{err}"
    );
    // No client certificate, or one of a CA etcd does not trust.
    let err = members(
        &lab,
        &access_but(&pki, &["--cluster-cert", "--cluster-key"], &[]),
    )
    .unwrap_err();
    assert!(
        err.contains("client certificate: --cluster-cert and --cluster-key"),
        "{err}"
    );
    let rogue = access_but(
        &pki,
        &["--cluster-cert", "--cluster-key"],
        &[
            "--cluster-cert".into(),
            pki.file("rogue.pem"),
            "--cluster-key".into(),
            pki.file("rogue.key"),
        ],
    );
    let err = members(&lab, &rogue).unwrap_err();
    assert!(
        err.contains("cluster store (")
            && (err.contains("the store refused --cluster-cert")
                || err.contains("does the store trust --cluster-cert's CA")),
        "{err}"
    );
    // Plaintext to a TLS store.
    let err = members(
        &lab,
        &["--cluster-store".into(), "etcd://10.250.0.10:2379".into()],
    )
    .unwrap_err();
    assert!(
        err.contains("cluster store (http://10.250.0.10:2379)"),
        "{err}"
    );

    // A daemon with the wrong password stays out, saying why, and runs on.
    let mut d = member_daemon(&lab, &pki, "h1", "not-it", "d1");
    wait_until("the daemon to say it was refused", 15, || {
        log_of(&lab, "d1").contains("authentication failed")
    });
    assert!(d.0.try_wait().unwrap().is_none(), "{}", log_of(&lab, "d1"));
    assert_eq!(members(&lab, &access(&pki)), Ok(vec![]));
}

#[test]
fn bad_tls_and_login_options_are_refused_by_name_before_anything_changes() {
    let lab = Lab::new("tlb");
    let pki = pki(&lab);
    let (cert, key, ca) = (
        pki.file("client.pem"),
        pki.file("client.key"),
        pki.file("ca.pem"),
    );
    let missing = pki.file("missing.pem");
    let opts = |list: &[&str]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
    for (options, says) in [
        (
            opts(&["--cluster-store", STORE, "--cluster-cert", &cert]),
            format!("--cluster-cert `{cert}`: needs --cluster-key"),
        ),
        (
            opts(&[
                "--cluster-store",
                STORE,
                "--cluster-cert",
                &cert,
                "--cluster-key",
                &pki.file("server.key"),
            ]),
            format!(
                "--cluster-key `{}`: is not the private key of --cluster-cert",
                pki.file("server.key")
            ),
        ),
        (
            opts(&["--cluster-store", STORE, "--cluster-ca", &missing]),
            format!("--cluster-ca `{missing}`: cannot be read"),
        ),
        (
            opts(&["--cluster-store", STORE, "--cluster-ca", &key]),
            format!("--cluster-ca `{key}`: holds no PEM certificate"),
        ),
        (
            opts(&[
                "--cluster-store",
                "etcd://10.250.0.10:2379",
                "--cluster-ca",
                &ca,
            ]),
            format!("--cluster-ca `{ca}`: needs a TLS store, etcds://"),
        ),
        (
            opts(&["--cluster-store", STORE, "--cluster-user", "plumb"]),
            "--cluster-user `plumb`: needs a password".to_string(),
        ),
        (
            opts(&["--cluster-ca", &ca]),
            format!("--cluster-ca `{ca}`: needs --cluster-store"),
        ),
    ] {
        // A daemon stops before it starts anything; the CLI before it asks
        // the store.
        let mut daemon = vec!["daemon", "--docker-plugin", "none"];
        daemon.extend(options.iter().map(String::as_str));
        let err = lab.fails(&daemon);
        assert!(err.contains(&says), "{options:?}: {err}");
        if options.contains(&"--cluster-store".to_string()) {
            let out = plumb(&lab, &["cluster", "members"], &options);
            assert!(
                !out.status.success() && text(&out).contains(&says),
                "{}",
                text(&out)
            );
        }
    }
    // No daemon started, no state made: the lab's directory holds the PKI.
    assert!(!lab.socket().exists(), "a daemon started");
    let left: Vec<_> = std::fs::read_dir(lab.state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["pki"], "state was made");
    // The password never comes from the command line.
    let out = plumb(
        &lab,
        &["cluster", "members", "--cluster-password", "x"],
        &[],
    );
    assert!(
        !out.status.success() && text(&out).contains("unexpected argument"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_cluster_network_is_defined_over_tls_and_the_daemon_makes_it() {
    let lab = Lab::new("tln");
    let pki = pki(&lab);
    let etcd_ns = underlay(&lab);
    let _etcd = etcd(&lab, &etcd_ns, &pki);
    let _d1 = member_daemon(&lab, &pki, "h1", PASSWORD, "d1");
    wait_until("h1 to join", 15, || {
        members(&lab, &access(&pki)).is_ok_and(|m| m.len() == 1)
    });

    let create = [
        "network",
        "create",
        "t1",
        "--driver",
        "vxlan",
        "--vni",
        "4100",
        "--subnet",
        "10.100.0.0/24",
    ];
    let out = plumb(&lab, &create, &access_but(&pki, &["--cluster-ca"], &[]));
    assert!(
        !out.status.success() && text(&out).contains("UnknownIssuer"),
        "{}",
        text(&out)
    );
    let out = plumb(&lab, &create, &access(&pki));
    assert!(
        out.status.success() && text(&out).contains("defined in cluster default (VNI 4100)"),
        "{}",
        text(&out)
    );
    wait_until("the daemon to make t1", 15, || {
        text(&plumb_at(&lab, &lab.host, "d1", &["network", "ls"])).contains("t1 ")
    });

    let out = plumb(&lab, &["network", "rm", "t1"], &access(&pki));
    assert!(out.status.success(), "{}", text(&out));
    wait_until("the daemon to take t1 away", 15, || {
        !text(&plumb_at(&lab, &lab.host, "d1", &["network", "ls"])).contains("t1 ")
    });
}
