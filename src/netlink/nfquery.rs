//! Questions to nf_tables over nfnetlink: does a table or a chain exist,
//! which rules of a chain carry a comment. The daemon asks them twice a
//! second to see whether someone flushed plumb's firewall; through
//! libnftables each answer was a JSON listing of a whole table, every set
//! element included, and a dlopen.

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};

use super::nfset::{
    NFNL_SUBSYS_NFTABLES, NFTA_DATA_VALUE, NFTA_LIST_ELEM, NLMSG_ERROR, NfFamily, NfNetlink,
    finish_message, messages, put_str, start_message,
};
use super::nftable::{
    NFTA_BITWISE_MASK, NFTA_CMP_DATA, NFTA_CMP_OP, NFTA_DATA_VERDICT, NFTA_EXPR_DATA,
    NFTA_EXPR_NAME, NFTA_IMMEDIATE_DATA, NFTA_MATCH_INFO, NFTA_MATCH_NAME, NFTA_META_KEY,
    NFTA_NAT_TYPE, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_LEN, NFTA_PAYLOAD_OFFSET, NFTA_RULE_EXPRESSIONS,
    NFTA_VERDICT_CODE,
};
use super::socket::{ext_ack_message, recv_datagram};
use super::{NetlinkError, NlResult};

pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_HANDLE: u16 = 3;
pub(super) const NFTA_RULE_USERDATA: u16 = 7;
/// libnftnl's tag for a rule's comment inside NFTA_RULE_USERDATA.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
const NLMSG_DONE: u16 = 3;
/// nlmsghdr (16) + nfgenmsg (4).
const HEADER: usize = 20;

impl NfNetlink {
    /// Whether table `name` of `family` exists.
    pub fn table_exists(&mut self, family: NfFamily, name: &str) -> NlResult<bool> {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_TABLE_NAME, name);
        self.exists(NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, family, &attrs)
    }

    /// Whether chain `chain` of table `table` of `family` exists.
    pub fn chain_exists(&mut self, family: NfFamily, table: &str, chain: &str) -> NlResult<bool> {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_CHAIN_TABLE, table);
        put_str(&mut attrs, NFTA_CHAIN_NAME, chain);
        self.exists(NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, family, &attrs)
    }

    /// The rules of table `table` of `family`, of every chain or of
    /// `chain` only, in each chain's order (none when they do not exist).
    pub fn rules(
        &mut self,
        family: NfFamily,
        table: &str,
        chain: Option<&str>,
    ) -> NlResult<Vec<ListedRule>> {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_RULE_TABLE, table);
        if let Some(chain) = chain {
            put_str(&mut attrs, NFTA_RULE_CHAIN, chain);
        }
        match self.dump_rules(family, &attrs) {
            Err(e) if e.is(libc::ENOENT) => Ok(Vec::new()),
            listed => listed,
        }
    }

    /// Every rule of every table of `family`.
    pub fn rules_of_family(&mut self, family: NfFamily) -> NlResult<Vec<ListedRule>> {
        self.dump_rules(family, &[])
    }

    /// The rules a GETRULE dump narrowed by `attrs` lists.
    fn dump_rules(&mut self, family: NfFamily, attrs: &[u8]) -> NlResult<Vec<ListedRule>> {
        let mut rules = Vec::new();
        self.ask(NFT_MSG_GETRULE, NLM_F_DUMP, family, attrs, |kind, attrs| {
            if kind == NFT_MSG_NEWRULE
                && let Some(rule) = ListedRule::parse(attrs)
            {
                rules.push(rule);
            }
        })?;
        Ok(rules)
    }

    /// A GET for one object: true when the kernel answers with it, false
    /// when it says ENOENT.
    fn exists(&mut self, get: u16, answer: u16, family: NfFamily, attrs: &[u8]) -> NlResult<bool> {
        let mut found = false;
        match self.ask(get, 0, family, attrs, |kind, _| found |= kind == answer) {
            Ok(()) => Ok(found),
            Err(e) if e.is(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Send one request and hand every nf_tables message of the answer to
    /// `each` (its type and attributes), until the answer ends: after the
    /// one reply of a plain GET, at NLMSG_DONE of a dump, or at an error.
    fn ask(
        &mut self,
        kind: u16,
        flags: u16,
        family: NfFamily,
        attrs: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> NlResult<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut request = Vec::with_capacity(HEADER + attrs.len());
        let start = start_message(
            &mut request,
            NFNL_SUBSYS_NFTABLES << 8 | kind,
            NLM_F_REQUEST | flags,
            seq,
            family as u8,
            0,
        );
        request.extend_from_slice(attrs);
        finish_message(&mut request, start);
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.answers(&request, seq, NFNL_SUBSYS_NFTABLES, dump, |kind, body| {
            each(kind, body.get(4..).unwrap_or_default())
        })
    }

    /// Send `request` (numbered `seq`) and hand every message of subsystem
    /// `subsys` in the answer to `each` (its type within the subsystem and
    /// its body: nfgenmsg, then attributes), until the answer ends: after
    /// one such message unless `dump`, at NLMSG_DONE (whose error code a
    /// dump that failed midway carries), or at an error.
    pub(super) fn answers(
        &mut self,
        request: &[u8],
        seq: u32,
        subsys: u16,
        dump: bool,
        mut each: impl FnMut(u16, &[u8]),
    ) -> NlResult<()> {
        self.socket.send(request, 0)?;
        loop {
            recv_datagram(&self.socket, &mut self.buf, 0)?;
            for message in messages(&self.buf) {
                if message.seq != seq {
                    continue; // an answer to an earlier request
                }
                let code = match message.kind {
                    NLMSG_DONE => done_code(message.body()),
                    NLMSG_ERROR => message.error_code().unwrap_or(0),
                    k if k >> 8 == subsys => {
                        each(k & 0xff, message.body());
                        if dump {
                            continue;
                        }
                        0
                    }
                    _ => continue,
                };
                return match code {
                    0 => Ok(()),
                    code => Err(NetlinkError::Kernel {
                        errno: -code,
                        ext: ext_ack_message(message.whole),
                    }),
                };
            }
        }
    }
}

/// The error code in an NLMSG_DONE (0 for a dump that went to its end).
fn done_code(body: &[u8]) -> i32 {
    body.get(..4)
        .and_then(|code| code.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(0)
}

/// (type, payload) of each attribute in `attrs`.
pub(super) fn attributes(attrs: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let header = attrs.get(offset..offset + 4)?;
        let len = u16::from_ne_bytes([header[0], header[1]]) as usize;
        let payload = attrs.get(offset + 4..offset + len).filter(|_| len >= 4)?;
        offset += len.next_multiple_of(4);
        // The top bits are flags (nested, byte order).
        Some((u16::from_ne_bytes([header[2], header[3]]) & 0x3fff, payload))
    })
}

/// A rule as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub table: String,
    pub chain: String,
    pub handle: u64,
    /// Its comment: nft's, in the rule's user data, or iptables', an xt
    /// `comment` match.
    pub comment: Option<String>,
    pub exprs: Vec<Listed>,
}

/// One expression of a listed rule, as far as plumb reads them: registers
/// are not kept (the rules plumb reads load one value and compare it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A meta key is loaded (NFT_META_*).
    Meta(u32),
    /// Bytes of a header are loaded.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    /// The register is compared (NFT_CMP_*) with `data`.
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    /// The register is masked.
    Bitwise {
        mask: Vec<u8>,
    },
    /// The register is (NFT_RANGE_EQ 0) or is not in `from..=to`.
    Range {
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Counter,
    /// An xt match or target (iptables-nft's extensions) and its info.
    Match {
        name: String,
        info: Vec<u8>,
    },
    Target {
        name: String,
        info: Vec<u8>,
    },
    /// nf_tables' own NAT (NFT_NAT_SNAT 0, NFT_NAT_DNAT 1).
    Nat {
        kind: u32,
    },
    /// A verdict (NF_ACCEPT 1, NF_DROP 0, jumps negative).
    Verdict(i32),
    /// Anything else, by name.
    Other(String),
}

const NFTA_RANGE_OP: u16 = 2;
const NFTA_RANGE_FROM_DATA: u16 = 3;
const NFTA_RANGE_TO_DATA: u16 = 4;

impl ListedRule {
    pub(super) fn parse(attrs: &[u8]) -> Option<ListedRule> {
        let mut rule = ListedRule {
            table: String::new(),
            chain: String::new(),
            handle: 0,
            comment: None,
            exprs: Vec::new(),
        };
        let mut handle = None;
        for (kind, payload) in attributes(attrs) {
            match kind {
                NFTA_RULE_TABLE => rule.table = text(payload)?.to_string(),
                NFTA_RULE_CHAIN => rule.chain = text(payload)?.to_string(),
                NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(payload.try_into().ok()?)),
                NFTA_RULE_USERDATA => rule.comment = rule_comment(payload).map(String::from),
                NFTA_RULE_EXPRESSIONS => {
                    rule.exprs = attributes(payload)
                        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
                        .map(|(_, e)| parse_expr(e))
                        .collect();
                }
                _ => {}
            }
        }
        if rule.comment.is_none() {
            rule.comment = rule.exprs.iter().find_map(|e| match e {
                Listed::Match { name, info } if name == "comment" => text(info).map(String::from),
                _ => None,
            });
        }
        rule.handle = handle?;
        Some(rule)
    }
}

/// A NUL-terminated (or NUL-padded) string.
fn text(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok()
}

fn parse_expr(elem: &[u8]) -> Listed {
    let mut name = "";
    let mut data: &[u8] = &[];
    for (kind, payload) in attributes(elem) {
        match kind {
            NFTA_EXPR_NAME => name = text(payload).unwrap_or_default(),
            NFTA_EXPR_DATA => data = payload,
            _ => {}
        }
    }
    let get = |kind: u16| attributes(data).find(|(k, _)| *k == kind).map(|(_, p)| p);
    let number = |kind: u16| get(kind).and_then(|p| Some(u32::from_be_bytes(p.try_into().ok()?)));
    let value = |kind: u16| {
        let nest = get(kind)?;
        attributes(nest)
            .find(|(k, _)| *k == NFTA_DATA_VALUE)
            .map(|(_, v)| v.to_vec())
    };
    let xt = |kind: fn(String, Vec<u8>) -> Listed| {
        // NFTA_TARGET_NAME and _INFO have the numbers of NFTA_MATCH_*.
        let name = get(NFTA_MATCH_NAME)
            .and_then(text)
            .unwrap_or_default()
            .to_string();
        kind(name, get(NFTA_MATCH_INFO).unwrap_or_default().to_vec())
    };
    let parsed = match name {
        "meta" => number(NFTA_META_KEY).map(Listed::Meta),
        "payload" => (|| {
            Some(Listed::Payload {
                base: number(NFTA_PAYLOAD_BASE)?,
                offset: number(NFTA_PAYLOAD_OFFSET)?,
                len: number(NFTA_PAYLOAD_LEN)?,
            })
        })(),
        "cmp" => (|| {
            Some(Listed::Cmp {
                op: number(NFTA_CMP_OP)?,
                data: value(NFTA_CMP_DATA)?,
            })
        })(),
        "bitwise" => value(NFTA_BITWISE_MASK).map(|mask| Listed::Bitwise { mask }),
        "range" => (|| {
            Some(Listed::Range {
                op: number(NFTA_RANGE_OP)?,
                from: value(NFTA_RANGE_FROM_DATA)?,
                to: value(NFTA_RANGE_TO_DATA)?,
            })
        })(),
        "counter" => Some(Listed::Counter),
        "match" => Some(xt(|name, info| Listed::Match { name, info })),
        "target" => Some(xt(|name, info| Listed::Target { name, info })),
        "nat" => number(NFTA_NAT_TYPE).map(|kind| Listed::Nat { kind }),
        "immediate" => get(NFTA_IMMEDIATE_DATA).and_then(|d| {
            let (_, verdict) = attributes(d).find(|(k, _)| *k == NFTA_DATA_VERDICT)?;
            let (_, code) = attributes(verdict).find(|(k, _)| *k == NFTA_VERDICT_CODE)?;
            Some(Listed::Verdict(i32::from_be_bytes(code.try_into().ok()?)))
        }),
        _ => None,
    };
    parsed.unwrap_or_else(|| Listed::Other(name.to_string()))
}

/// The comment in a rule's user data: libnftnl's TLVs of a one-byte type
/// and a one-byte length; the comment's value ends with a NUL.
fn rule_comment(userdata: &[u8]) -> Option<&str> {
    let mut rest = userdata;
    while let [kind, len, tail @ ..] = rest {
        let value = tail.get(..*len as usize)?;
        if *kind == NFTNL_UDATA_RULE_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return std::str::from_utf8(text).ok();
        }
        rest = &tail[*len as usize..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    /// A rule as the kernel lists it: table, chain, handle, user data with
    /// another TLV before the comment.
    fn rule(handle: u64, comment: Option<&str>) -> Vec<u8> {
        let mut out = [
            attr(NFTA_RULE_TABLE, b"filter\0"),
            attr(NFTA_RULE_CHAIN, b"FORWARD\0"),
            attr(NFTA_RULE_HANDLE, &handle.to_be_bytes()),
        ]
        .concat();
        if let Some(c) = comment {
            let mut udata = vec![1, 2, 0xaa, 0xbb];
            udata.push(NFTNL_UDATA_RULE_COMMENT);
            udata.push(c.len() as u8 + 1);
            udata.extend_from_slice(c.as_bytes());
            udata.push(0);
            out.extend(attr(NFTA_RULE_USERDATA, &udata));
        }
        out
    }

    #[test]
    fn a_listed_rule_keeps_its_chain_handle_and_comment() {
        let r = ListedRule::parse(&rule(42, Some("plumb"))).unwrap();
        assert_eq!((r.chain.as_str(), r.handle), ("FORWARD", 42));
        assert_eq!(r.comment.as_deref(), Some("plumb"));
        assert_eq!(ListedRule::parse(&rule(42, None)).unwrap().comment, None);
        // Without a handle it is no rule the kernel listed.
        let no_handle = [attr(NFTA_RULE_CHAIN, b"FORWARD\0")].concat();
        assert_eq!(ListedRule::parse(&no_handle), None);
    }

    #[test]
    fn truncated_user_data_has_no_comment() {
        assert_eq!(rule_comment(&[NFTNL_UDATA_RULE_COMMENT, 9, b'a']), None);
        assert_eq!(rule_comment(&[]), None);
        assert_eq!(
            rule_comment(&[NFTNL_UDATA_RULE_COMMENT, 2, b'a', 0]),
            Some("a")
        );
    }

    #[test]
    fn messages_and_attributes_stop_at_a_bad_length() {
        let mut datagram = Vec::new();
        start_message(&mut datagram, NLMSG_DONE, 0, 7, 0, 0);
        let end = datagram.len();
        finish_message(&mut datagram, 0);
        datagram.extend_from_slice(&[200, 0, 0, 0, 1, 0, 0, 0]); // claims 200 bytes
        let all: Vec<_> = messages(&datagram)
            .map(|m| (m.kind, m.seq, m.body().len()))
            .collect();
        assert_eq!(all, vec![(NLMSG_DONE, 7, end - 16)]);
        let attrs = [attr(1, b"ab"), vec![40, 0, 2, 0]].concat();
        let kinds: Vec<_> = attributes(&attrs).map(|(k, p)| (k, p.to_vec())).collect();
        assert_eq!(kinds, vec![(1, b"ab".to_vec())]);
    }

    #[test]
    fn a_dump_ends_with_its_code() {
        assert_eq!(done_code(&0i32.to_ne_bytes()), 0);
        assert_eq!(done_code(&(-libc::EINTR).to_ne_bytes()), -libc::EINTR);
        assert_eq!(done_code(&[]), 0);
    }
}
