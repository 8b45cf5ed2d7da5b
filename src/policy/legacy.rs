//! Hosts whose iptables is the legacy backend (x_tables): Docker's chains
//! and FORWARD DROP live there, where nftables sees nothing. A legacy
//! table exists in a namespace once something used it, and the kernel
//! lists it in `/proc/net/ip_tables_names`: reading that file is all an
//! nftables host pays. Where the legacy filter table is in use, plumb adds
//! the same accepts there (`iptables` module), through the
//! `iptables-legacy-restore` program in one atomic commit per family; it
//! is called only then, when networks are made, removed or restored,
//! never per attach. The legacy nat table is read the same way for the
//! host ports other tools forward (`ports`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::model::{Network, Proto};
use crate::policy::iptables::{self, Accept, DOCKER_USER, FORWARD};
use crate::policy::ports::ForeignDnat;

/// One family's legacy tools and the kernel's list of its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    names_file: &'static str,
    save: &'static str,
    restore: &'static str,
}

pub const V4: Family = Family {
    name: "ip",
    names_file: "/proc/thread-self/net/ip_tables_names",
    save: "iptables-legacy-save",
    restore: "iptables-legacy-restore",
};
pub const V6: Family = Family {
    name: "ip6",
    names_file: "/proc/thread-self/net/ip6_tables_names",
    save: "ip6tables-legacy-save",
    restore: "ip6tables-legacy-restore",
};

/// How long to wait for another program's xtables lock.
const WAIT_SECONDS: &str = "5";

impl Family {
    /// Whether legacy table `table` exists in this thread's namespace.
    pub fn in_use(&self, table: &str) -> bool {
        std::fs::read_to_string(self.names_file).is_ok_and(|t| t.lines().any(|l| l == table))
    }

    /// The number of entries and bytes of the legacy filter table
    /// (IPT_SO_GET_INFO / IP6T_SO_GET_INFO, `struct ipt_getinfo`): it
    /// changes with every rule added or taken away.
    fn filter_size(&self) -> Option<(u32, u32)> {
        const SO_GET_INFO: libc::c_int = 64;
        let (domain, level) = if self.name == "ip" {
            (libc::AF_INET, libc::SOL_IP)
        } else {
            (libc::AF_INET6, libc::SOL_IPV6)
        };
        // name[32], valid_hooks, hook_entry[5], underflow[5], num_entries, size.
        let mut info = [0u8; 84];
        info[..6].copy_from_slice(b"filter");
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: a socket we own, closed below; getsockopt writes at most
        // `len` bytes into `info`.
        let ok = unsafe {
            let fd = libc::socket(
                domain,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            );
            if fd < 0 {
                return None;
            }
            let r = libc::getsockopt(fd, level, SO_GET_INFO, info.as_mut_ptr().cast(), &mut len);
            libc::close(fd);
            r == 0 && len as usize == info.len()
        };
        let word = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap_or_default());
        ok.then(|| (word(76), word(80)))
    }

    /// `TOOL-save -t table`, parsed.
    pub fn save(&self, table: &str) -> Result<Saved> {
        let out = Command::new(self.save)
            .args(["-t", table])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.missing(e))?;
        if !out.status.success() {
            return Err(self.failed(self.save, &out.stderr));
        }
        Ok(Saved::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Apply `lines` to `table` with `TOOL-restore --noflush`: one commit.
    fn restore(&self, table: &str, lines: &[String]) -> Result<()> {
        let mut input = format!("*{table}\n");
        for l in lines {
            input.push_str(l);
            input.push('\n');
        }
        input.push_str("COMMIT\n");
        let mut child = Command::new(self.restore)
            .args(["--noflush", "--wait", WAIT_SECONDS])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.missing(e))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("run {}", self.restore), e))?;
        if !out.status.success() {
            return Err(self.failed(self.restore, &out.stderr));
        }
        Ok(())
    }

    fn missing(&self, e: std::io::Error) -> Error {
        Error::Conflict(format!(
            "the legacy iptables backend is in use on this host ({} tables exist), but `{}` \
             could not be run ({e}): install the iptables package",
            self.name, self.save
        ))
    }

    fn failed(&self, tool: &str, stderr: &[u8]) -> Error {
        Error::Conflict(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(stderr).trim()
        ))
    }
}

/// One table of `iptables-save`: its chains and rules (as words).
#[derive(Debug, Default)]
pub struct Saved {
    pub chains: Vec<String>,
    /// Each `-A CHAIN ...` line, split into words as a shell would.
    pub rules: Vec<Vec<String>>,
}

impl Saved {
    fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        for line in text.lines() {
            if let Some(chain) = line.strip_prefix(':') {
                saved
                    .chains
                    .extend(chain.split_whitespace().next().map(String::from));
            } else if line.starts_with("-A ") {
                saved.rules.push(words(line));
            }
        }
        saved
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    /// Whether Docker made its chains here.
    pub fn has_docker(&self) -> bool {
        self.has_chain("DOCKER") || self.has_chain(DOCKER_USER)
    }

    /// The chain plumb's accepts belong in.
    pub fn accept_chain(&self) -> &'static str {
        if self.has_chain(DOCKER_USER) {
            DOCKER_USER
        } else {
            FORWARD
        }
    }

    /// plumb's rules (any shape), each as `-A CHAIN ...` words.
    pub fn ours(&self) -> impl Iterator<Item = &Vec<String>> {
        self.rules.iter().filter(|r| is_ours(r))
    }
}

/// Whether a saved rule is one of plumb's: its comment says so.
fn is_ours(rule: &[String]) -> bool {
    rule.windows(2)
        .any(|w| w[0] == "--comment" && iptables::is_plumbs_comment(&w[1]))
}

/// The words of an `iptables-save` line: blanks separate them, double
/// quotes group, a backslash escapes the next character.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.get_or_insert_default().extend(chars.next()),
            '"' => {
                quoted = !quoted;
                word.get_or_insert_default();
            }
            c if c.is_whitespace() && !quoted => out.extend(word.take()),
            c => word.get_or_insert_default().push(c),
        }
    }
    out.extend(word);
    out
}

/// `-A CHAIN` and the accept's words, as `iptables-save` prints them.
fn accept_words(chain: &str, a: &Accept) -> Vec<String> {
    let mut w = vec!["-A".to_string(), chain.to_string()];
    w.extend(a.iptables_args());
    w
}

/// A word for `iptables-restore`: quoted when it holds a blank.
fn quote(w: &str) -> String {
    if w.contains(char::is_whitespace) || w.is_empty() {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        w.to_string()
    }
}

/// A family's legacy filter table found right: its name, its size (entries,
/// bytes) then, and the accepts wanted then.
type Verified = (&'static str, (u32, u32), Vec<Accept>);

/// Whether each family whose legacy filter table is in use holds exactly
/// the accepts `networks` need, in the chain they belong in.
///
/// The daemon asks twice a second. The kernel tells the size of a legacy
/// table (its entries and bytes) for one getsockopt: once a table was
/// found right, it is read again with `iptables-legacy-save` only when its
/// size or the wanted accepts changed, not on every question.
pub fn accepts_in_place(networks: &[Network]) -> Result<bool> {
    static VERIFIED: Mutex<Vec<Verified>> = Mutex::new(Vec::new());
    let wanted = iptables::wanted(networks);
    for family in [V4, V6] {
        if !family.in_use("filter") {
            continue;
        }
        let size = family.filter_size();
        let mut verified = VERIFIED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(size) = size
            && verified.contains(&(family.name, size, wanted.clone()))
        {
            continue;
        }
        let saved = family.save("filter")?;
        let chain = saved.accept_chain();
        let mut have: Vec<&Vec<String>> = saved.ours().collect();
        let mut want: Vec<Vec<String>> = wanted.iter().map(|a| accept_words(chain, a)).collect();
        have.sort();
        want.sort();
        if have.into_iter().ne(want.iter()) {
            return Ok(false);
        }
        verified.retain(|(name, ..)| *name != family.name);
        verified.extend(size.map(|size| (family.name, size, wanted.clone())));
    }
    Ok(true)
}

/// Put the accepts `networks` need into each family's legacy filter table
/// that is in use, in one commit per family: as `iptables::edits` does,
/// those in place stay, plumb's others go, the missing ones go just before
/// the first that stays, or at the head.
pub fn sync_accepts(networks: &[Network]) -> Result<()> {
    let wanted = iptables::wanted(networks);
    for family in [V4, V6] {
        if !family.in_use("filter") {
            continue;
        }
        let saved = family.save("filter")?;
        let lines = sync_lines(&saved, &wanted);
        if !lines.is_empty() {
            family.restore("filter", &lines)?;
        }
    }
    Ok(())
}

/// The `iptables-restore` lines that bring `saved` to `wanted`.
fn sync_lines(saved: &Saved, wanted: &[Accept]) -> Vec<String> {
    let chain = saved.accept_chain();
    let line = |words: &[String]| words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
    let mut deletes = Vec::new();
    let mut kept: Vec<&Vec<String>> = Vec::new();
    // Where the first kept rule will stand (1-based) once the deletes ran.
    let mut position = None;
    let mut staying = 0;
    let wanted_words: Vec<Vec<String>> = wanted.iter().map(|a| accept_words(chain, a)).collect();
    for r in &saved.rules {
        let in_chain = r.get(1).map(String::as_str) == Some(chain);
        let ours = is_ours(r);
        let keep = ours && in_chain && wanted_words.contains(r) && !kept.contains(&r);
        if ours && !keep {
            let mut d = r.clone();
            d[0] = "-D".into();
            deletes.push(line(&d));
        } else if in_chain {
            staying += 1;
            if keep {
                kept.push(r);
                position.get_or_insert(staying);
            }
        }
    }
    let mut lines = deletes;
    for w in wanted_words.iter().rev().filter(|w| !kept.contains(w)) {
        let mut i = w.clone();
        i[0] = "-I".into();
        i.insert(2, position.unwrap_or(1).to_string());
        lines.push(line(&i));
    }
    lines
}

/// The DNAT rules of the legacy IPv4 nat table, when it is in use.
pub fn dnat_rules() -> Result<Vec<ForeignDnat>> {
    if !V4.in_use("nat") {
        return Ok(Vec::new());
    }
    Ok(V4
        .save("nat")?
        .rules
        .iter()
        .filter_map(|r| dnat(r))
        .collect())
}

/// The host ports a saved DNAT rule forwards: `-p`, `-d`, `--dport`
/// (`N` or `N:M`) or multiport's `--dports` (`a,b:c`).
fn dnat(words: &[String]) -> Option<ForeignDnat> {
    // The word after `flag`, unless the flag is negated (`! --dport N`).
    let after = |flag: &str| {
        (0..words.len().saturating_sub(1))
            .find(|&i| words[i] == flag && (i == 0 || words[i - 1] != "!"))
            .map(|i| words[i + 1].as_str())
    };
    if after("-j") != Some("DNAT") {
        return None;
    }
    let range = |s: &str| -> Option<(u16, u16)> {
        match s.split_once(':') {
            Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
            None => s.parse().ok().map(|p| (p, p)),
        }
    };
    let mut ports = Vec::new();
    if let Some(p) = after("--dport") {
        ports.extend(range(p));
    }
    if let Some(list) = after("--dports") {
        ports.extend(list.split(',').filter_map(range));
    }
    if ports.is_empty() {
        return None;
    }
    let proto = match after("-p") {
        Some("tcp") => Some(Proto::Tcp),
        Some("udp") => Some(Proto::Udp),
        _ => None,
    };
    let addr = after("-d")
        .and_then(|d| d.strip_suffix("/32"))
        .and_then(|d| d.parse::<Ipv4Addr>().ok());
    let chain = words.get(1)?.clone();
    Some(ForeignDnat {
        place: format!("iptables-legacy nat {chain}"),
        chain,
        proto,
        ports,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "# Generated by iptables-save v1.8.9 on Sun Dec  6 02:34:21 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -i pl-lan -m comment --comment \"plumb network lan\" -j ACCEPT
-A DOCKER-USER -m comment --comment \"say \\\"hi\\\"\" -j RETURN
COMMIT
";

    #[test]
    fn a_save_is_read_into_chains_and_words() {
        let s = Saved::parse(SAVED);
        assert_eq!(
            s.chains,
            ["INPUT", "FORWARD", "OUTPUT", "DOCKER", "DOCKER-USER"]
        );
        assert!(s.has_docker());
        assert_eq!(s.accept_chain(), DOCKER_USER);
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[2][5], "say \"hi\"");
        let ours: Vec<_> = s.ours().collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(
            *ours[0],
            accept_words(
                DOCKER_USER,
                &Accept {
                    bridge: "pl-lan".into(),
                    inbound: false,
                    network: "lan".into()
                }
            )
        );
        assert_eq!(quote("plumb network lan"), "\"plumb network lan\"");
        assert_eq!(quote("-j"), "-j");
    }

    #[test]
    fn accepts_in_place_stay_below_the_users_rules_and_missing_ones_join_them() {
        let lan = Accept {
            bridge: "pl-lan".into(),
            inbound: false,
            network: "lan".into(),
        };
        let lan_in = Accept {
            inbound: true,
            ..lan.clone()
        };
        let saved = Saved::parse(
            "*filter
:FORWARD DROP [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -o pl-old -m comment --comment \"plumb network old\" -j ACCEPT
-A DOCKER-USER -s 192.0.2.1/32 -j DROP
-A DOCKER-USER -o pl-gone -m comment --comment \"plumb network gone\" -j ACCEPT
-A DOCKER-USER -i pl-lan -m comment --comment \"plumb network lan\" -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
",
        );
        let lines = sync_lines(&saved, &[lan.clone(), lan_in]);
        assert_eq!(
            lines,
            [
                "-D FORWARD -o pl-old -m comment --comment \"plumb network old\" -j ACCEPT",
                "-D DOCKER-USER -o pl-gone -m comment --comment \"plumb network gone\" -j ACCEPT",
                // The user's DROP is 1, the kept accept 2 once pl-gone went.
                "-I DOCKER-USER 2 -o pl-lan -m comment --comment \"plumb network lan\" -j ACCEPT",
            ]
        );
        // All in place: nothing to do.
        let done = Saved::parse(&format!(
            ":DOCKER-USER - [0:0]\n-A DOCKER-USER {}\n",
            lan.iptables_args()
                .iter()
                .map(|w| quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        assert!(sync_lines(&done, &[lan]).is_empty());
    }

    #[test]
    fn saved_dnat_rules_name_their_ports() {
        let d = dnat(&words(
            "-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p tcp -m tcp --dport 8090 -j DNAT --to-destination 172.17.0.2:80",
        ))
        .unwrap();
        assert_eq!(d.proto, Some(Proto::Tcp));
        assert_eq!(d.ports, [(8090, 8090)]);
        assert_eq!(d.addr, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(d.chain, "DOCKER");
        let m = dnat(&words(
            "-A NETAVARK-DN-1 -p udp -m multiport --dports 53,7000:7010 -j DNAT --to-destination 10.88.0.2",
        ))
        .unwrap();
        assert_eq!(m.ports, [(53, 53), (7000, 7010)]);
        assert_eq!(
            dnat(&words(
                "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
            )),
            None
        );
    }
}
