//! Whole nftables tables written straight over nfnetlink, without
//! libnftables: a table, its sets and its chains and rules replaced in one
//! kernel transaction. Rules are lists of nf_tables expressions, the ones
//! `nft --debug=netlink` prints for the rule's text.
//!
//! nf_tables numbers (hooks, priorities, keys, lengths, verdicts) travel in
//! network byte order; match data is the packet's or the meta key's own
//! bytes.

use super::NlResult;
use super::nfquery::{
    NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE,
    NFTA_RULE_CHAIN, NFTA_RULE_TABLE, NFTA_TABLE_NAME,
};
use super::nfset::{
    Batch, Element, NFT_MSG_NEWSETELEM, NFTA_LIST_ELEM, NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NfFamily, NfNetlink, finish_nest, put_attr,
    put_element, put_str, put_value, start_nest,
};

const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWSET: u16 = 9;

const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

const NFT_REG_VERDICT: u32 = 0;
/// The first 16-byte register; every match here loads into it.
const NFT_REG_1: u32 = 1;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_LOOKUP_F_INV: u32 = 0x1;
const NF_ACCEPT: i32 = 1;
const NF_DROP: i32 = 0;

/// nft's datatype numbers, which `nft list` reads a set's key type by.
pub const TYPE_INTEGER: u32 = 4;
pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;
pub const TYPE_ICMP6_TYPE: u32 = 29;

/// A table, replaced whole: what the kernel held under its name goes.
pub struct Table {
    pub family: NfFamily,
    pub name: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// A named set of single-field keys.
pub struct Set {
    pub name: String,
    pub key_type: u32,
    pub key_len: u32,
    /// What nft keeps with a set to show it (`KEY_BIG_ENDIAN`,
    /// `TYPEOF_TH_64_128`); the kernel stores it and reads none of it.
    pub userdata: &'static [u8],
    pub elements: Vec<Element>,
}

/// nft's set user data (libnftnl TLVs: type, length, value) saying the
/// key is big-endian (NFTNL_UDATA_SET_KEYBYTEORDER = BYTEORDER_BIG_ENDIAN).
pub const KEY_BIG_ENDIAN: &[u8] = &[0, 4, 2, 0, 0, 0];

/// The same, and that the key is `typeof @th,64,128` (KEY_TYPEOF: a
/// payload expression, transport base, offset 64, 128 bits), as
/// `nft --debug=mnl` shows nft 1.0.6 sending it.
pub const TYPEOF_TH_64_128: &[u8] = &[
    0, 4, 2, 0, 0, 0, 3, 38, 0, 4, 7, 0, 0, 0, 1, 30, 0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 2, 4, 3,
    0, 0, 0, 3, 4, 64, 0, 0, 0, 4, 4, 128, 0, 0, 0,
];

pub struct Chain {
    pub name: String,
    /// For a base chain: where it hooks (its policy is accept).
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

pub struct Hook {
    /// "filter", "nat", "route".
    pub kind: &'static str,
    /// NF_INET_* or NF_NETDEV_*.
    pub number: u32,
    pub priority: i32,
    /// netdev chains: the device.
    pub device: Option<String>,
}

/// The expressions of one rule, run in order; a match that fails ends it.
pub struct Rule(pub Vec<Expr>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// skb->protocol, the ethertype (2 bytes, network order).
    Protocol = 1,
    /// The input device's type (2 bytes, host order), ARPHRD_*.
    IifType = 8,
    /// The layer 4 protocol (1 byte).
    L4Proto = 16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Link = 0,
    Network = 1,
    Transport = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load a meta key into the register.
    Meta(MetaKey),
    /// Load `len` bytes at `offset` of a header into the register.
    Payload {
        base: Base,
        offset: u32,
        len: u32,
    },
    /// Compare the register with `data` (as long as what was loaded).
    Cmp(CmpOp, Vec<u8>),
    /// The register's value is (or with `invert`, is not) in the named set.
    Lookup {
        set: String,
        invert: bool,
    },
    /// The register's value is one of `keys`: an anonymous set, made with
    /// the rule and gone with it.
    In {
        key_type: u32,
        key_len: u32,
        keys: Vec<Vec<u8>>,
    },
    Verdict(Verdict),
}

impl NfNetlink {
    /// Replace table `t` (or create it) in one transaction: every set,
    /// element, chain and rule, or nothing.
    ///
    /// A new table is only made: a batch that deletes anything leaves the
    /// kernel objects to free after an RCU grace period, which closing the
    /// socket then waits for (nf_tables flushes that work when a netlink
    /// socket goes: 5-10 ms here). Only when the table exists is it deleted
    /// and made again.
    pub fn replace_table(&mut self, t: &Table) -> NlResult<()> {
        match self.transact(encode_table(t, self.seq.wrapping_add(1), false)) {
            Err(e) if e.is(libc::EEXIST) => {
                self.transact(encode_table(t, self.seq.wrapping_add(1), true))
            }
            done => done,
        }
    }

    /// Delete table `name` if it exists, in one transaction.
    pub fn delete_table(&mut self, family: NfFamily, name: &str) -> NlResult<()> {
        let mut batch = Batch::new(self.seq.wrapping_add(1));
        // Made first, so that deleting it cannot fail on its absence.
        table_message(&mut batch, family, name, NFT_MSG_NEWTABLE);
        table_message(&mut batch, family, name, NFT_MSG_DELTABLE);
        self.transact(batch.finish())
    }
}

fn be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn table_message(batch: &mut Batch, family: NfFamily, name: &str, kind: u16) {
    let (flags, verb) = if kind == NFT_MSG_NEWTABLE {
        (libc::NLM_F_CREATE as u16, "add")
    } else {
        (0, "delete")
    };
    table_message_with(batch, family, name, kind, flags, verb);
}

fn table_message_with(
    batch: &mut Batch,
    family: NfFamily,
    name: &str,
    kind: u16,
    flags: u16,
    verb: &str,
) {
    let what = format!("{verb} table {} {name}", family.name());
    let msg = batch.message(kind, flags, family, what);
    put_str(&mut batch.buf, NFTA_TABLE_NAME, name);
    batch.end_message(msg);
}

/// The batch writing `t`: made (EEXIST if it exists), or with `replace`
/// made if absent, deleted and made again; then its sets and their
/// elements, its chains, then its rules.
fn encode_table(t: &Table, first: u32, replace: bool) -> Batch {
    let mut batch = Batch::new(first);
    let family = t.family;
    if replace {
        table_message(&mut batch, family, &t.name, NFT_MSG_NEWTABLE);
        table_message(&mut batch, family, &t.name, NFT_MSG_DELTABLE);
        table_message(&mut batch, family, &t.name, NFT_MSG_NEWTABLE);
    } else {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        table_message_with(&mut batch, family, &t.name, NFT_MSG_NEWTABLE, flags, "add");
    }
    let mut next_set_id = 0;
    for s in &t.sets {
        next_set_id += 1;
        set_messages(&mut batch, t, s, next_set_id, 0);
    }
    for c in &t.chains {
        let what = format!("add chain {} {} {}", family.name(), t.name, c.name);
        let msg = batch.message(NFT_MSG_NEWCHAIN, libc::NLM_F_CREATE as u16, family, what);
        let buf = &mut batch.buf;
        put_str(buf, NFTA_CHAIN_TABLE, &t.name);
        put_str(buf, NFTA_CHAIN_NAME, &c.name);
        if let Some(h) = &c.hook {
            let hook = start_nest(buf, NFTA_CHAIN_HOOK);
            put_attr(buf, NFTA_HOOK_HOOKNUM, &be(h.number));
            put_attr(buf, NFTA_HOOK_PRIORITY, &h.priority.to_be_bytes());
            if let Some(dev) = &h.device {
                put_str(buf, NFTA_HOOK_DEV, dev);
            }
            finish_nest(buf, hook);
            put_attr(buf, NFTA_CHAIN_POLICY, &NF_ACCEPT.to_be_bytes());
            put_str(buf, NFTA_CHAIN_TYPE, h.kind);
        }
        batch.end_message(msg);
    }
    for c in &t.chains {
        for (i, rule) in c.rules.iter().enumerate() {
            // An anonymous set is made in the batch just before the rule
            // that binds it, and named by its id there.
            let mut anonymous = Vec::new();
            for e in &rule.0 {
                if let Expr::In {
                    key_type,
                    key_len,
                    keys,
                } = e
                {
                    next_set_id += 1;
                    let set = Set {
                        name: ANONYMOUS_SET.into(),
                        key_type: *key_type,
                        key_len: *key_len,
                        userdata: &[],
                        elements: keys
                            .iter()
                            .map(|k| Element {
                                key: k.clone(),
                                data: None,
                            })
                            .collect(),
                    };
                    let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
                    set_messages(&mut batch, t, &set, next_set_id, flags);
                    anonymous.push(next_set_id);
                }
            }
            let what = format!(
                "add rule {} {} {} (rule {})",
                family.name(),
                t.name,
                c.name,
                i + 1
            );
            let flags = (libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16;
            let msg = batch.message(NFT_MSG_NEWRULE, flags, family, what);
            let buf = &mut batch.buf;
            put_str(buf, NFTA_RULE_TABLE, &t.name);
            put_str(buf, NFTA_RULE_CHAIN, &c.name);
            let list = start_nest(buf, NFTA_RULE_EXPRESSIONS);
            let mut anonymous = anonymous.into_iter();
            for e in &rule.0 {
                put_expr(buf, e, &mut anonymous);
            }
            finish_nest(buf, list);
            batch.end_message(msg);
        }
    }
    batch.finish()
}

/// The name of an anonymous set: the kernel picks `__setN`, and the batch
/// refers to it by id.
const ANONYMOUS_SET: &str = "__set%d";

/// Set `s` of table `t`, numbered `id` in the batch, and its elements.
fn set_messages(batch: &mut Batch, t: &Table, s: &Set, id: u32, flags: u32) {
    let family = t.family;
    let shown = if flags & NFT_SET_ANONYMOUS != 0 {
        "anonymous set"
    } else {
        &s.name
    };
    let what = format!("add set {} {} {shown}", family.name(), t.name);
    let msg = batch.message(NFT_MSG_NEWSET, libc::NLM_F_CREATE as u16, family, what);
    let buf = &mut batch.buf;
    put_str(buf, NFTA_SET_TABLE, &t.name);
    put_str(buf, NFTA_SET_NAME, &s.name);
    put_attr(buf, NFTA_SET_FLAGS, &be(flags));
    put_attr(buf, NFTA_SET_KEY_TYPE, &be(s.key_type));
    put_attr(buf, NFTA_SET_KEY_LEN, &be(s.key_len));
    put_attr(buf, NFTA_SET_ID, &be(id));
    if !s.userdata.is_empty() {
        put_attr(buf, NFTA_SET_USERDATA, s.userdata);
    }
    batch.end_message(msg);
    if s.elements.is_empty() {
        return;
    }
    let what = format!("add to set {} {} {shown}", family.name(), t.name);
    let msg = batch.message(NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE as u16, family, what);
    let buf = &mut batch.buf;
    put_str(buf, NFTA_SET_ELEM_LIST_TABLE, &t.name);
    put_str(buf, NFTA_SET_ELEM_LIST_SET, &s.name);
    put_attr(buf, NFTA_SET_ELEM_LIST_SET_ID, &be(id));
    let list = start_nest(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
    for e in &s.elements {
        put_element(buf, e);
    }
    finish_nest(buf, list);
    batch.end_message(msg);
}

/// One expression: { NAME, DATA { its attributes } }.
fn put_expr(buf: &mut Vec<u8>, e: &Expr, anonymous: &mut impl Iterator<Item = u32>) {
    let elem = start_nest(buf, NFTA_LIST_ELEM);
    let name = match e {
        Expr::Meta(_) => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Cmp(..) => "cmp",
        Expr::Lookup { .. } | Expr::In { .. } => "lookup",
        Expr::Verdict(_) => "immediate",
    };
    put_str(buf, NFTA_EXPR_NAME, name);
    let data = start_nest(buf, NFTA_EXPR_DATA);
    match e {
        Expr::Meta(key) => {
            put_attr(buf, NFTA_META_KEY, &be(*key as u32));
            put_attr(buf, NFTA_META_DREG, &be(NFT_REG_1));
        }
        Expr::Payload { base, offset, len } => {
            put_attr(buf, NFTA_PAYLOAD_DREG, &be(NFT_REG_1));
            put_attr(buf, NFTA_PAYLOAD_BASE, &be(*base as u32));
            put_attr(buf, NFTA_PAYLOAD_OFFSET, &be(*offset));
            put_attr(buf, NFTA_PAYLOAD_LEN, &be(*len));
        }
        Expr::Cmp(op, value) => {
            put_attr(buf, NFTA_CMP_SREG, &be(NFT_REG_1));
            put_attr(buf, NFTA_CMP_OP, &be(*op as u32));
            put_value(buf, NFTA_CMP_DATA, value);
        }
        Expr::Lookup { set, invert } => {
            put_str(buf, NFTA_LOOKUP_SET, set);
            put_attr(buf, NFTA_LOOKUP_SREG, &be(NFT_REG_1));
            if *invert {
                put_attr(buf, NFTA_LOOKUP_FLAGS, &be(NFT_LOOKUP_F_INV));
            }
        }
        Expr::In { .. } => {
            put_str(buf, NFTA_LOOKUP_SET, ANONYMOUS_SET);
            put_attr(buf, NFTA_LOOKUP_SREG, &be(NFT_REG_1));
            // Every `In` of the rule had its set made before the rule.
            let id = anonymous.next().unwrap_or_default();
            put_attr(buf, NFTA_LOOKUP_SET_ID, &be(id));
        }
        Expr::Verdict(v) => {
            put_attr(buf, NFTA_IMMEDIATE_DREG, &be(NFT_REG_VERDICT));
            let imm = start_nest(buf, NFTA_IMMEDIATE_DATA);
            let verdict = start_nest(buf, NFTA_DATA_VERDICT);
            let code = match v {
                Verdict::Accept => NF_ACCEPT,
                Verdict::Drop => NF_DROP,
            };
            put_attr(buf, NFTA_VERDICT_CODE, &code.to_be_bytes());
            finish_nest(buf, verdict);
            finish_nest(buf, imm);
        }
    }
    finish_nest(buf, data);
    finish_nest(buf, elem);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (NFT_MSG_* type, attributes after nfgenmsg) of each message between
    /// BEGIN and END.
    fn messages(batch: &Batch) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        let mut rest = &batch.buf[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            out.push((kind, &rest[20..len]));
            rest = &rest[len..];
        }
        out.remove(0);
        out.pop();
        out.into_iter().map(|(k, b)| (k & 0xff, b)).collect()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_table_is_replaced_sets_first_and_anonymous_sets_just_before_their_rule() {
        let t = Table {
            family: NfFamily::Netdev,
            name: "t".into(),
            sets: vec![Set {
                name: "s".into(),
                key_type: TYPE_IPADDR,
                key_len: 4,
                userdata: KEY_BIG_ENDIAN,
                elements: vec![Element {
                    key: vec![10, 0, 0, 1],
                    data: None,
                }],
            }],
            chains: vec![Chain {
                name: "c".into(),
                hook: Some(Hook {
                    kind: "filter",
                    number: 1,
                    priority: -10,
                    device: Some("eth0".into()),
                }),
                rules: vec![Rule(vec![
                    Expr::Meta(MetaKey::L4Proto),
                    Expr::In {
                        key_type: TYPE_INTEGER,
                        key_len: 1,
                        keys: vec![vec![6], vec![17]],
                    },
                    Expr::Verdict(Verdict::Accept),
                ])],
            }],
        };
        let fresh = encode_table(&t, 1, false);
        let kinds: Vec<u16> = messages(&fresh).iter().map(|m| m.0).collect();
        assert_eq!(
            kinds[..2],
            [NFT_MSG_NEWTABLE, NFT_MSG_NEWSET],
            "made, nothing deleted"
        );
        let batch = encode_table(&t, 40, true);
        let kinds: Vec<u16> = messages(&batch).iter().map(|m| m.0).collect();
        assert_eq!(
            kinds,
            [
                NFT_MSG_NEWTABLE,
                NFT_MSG_DELTABLE,
                NFT_MSG_NEWTABLE,
                NFT_MSG_NEWSET,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWCHAIN,
                NFT_MSG_NEWSET,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWRULE,
            ]
        );
        assert_eq!(batch.what[8], "add rule netdev t c (rule 1)");
        let msgs = messages(&batch);
        // The named set is id 1, the anonymous one id 2; the rule's lookup
        // names the anonymous set by that id.
        let id2 = [8, 0, NFTA_SET_ID as u8, 0, 0, 0, 0, 2];
        assert!(contains(msgs[6].1, &id2));
        assert!(contains(msgs[6].1, b"__set%d\0"));
        let flags = [8, 0, NFTA_SET_FLAGS as u8, 0, 0, 0, 0, 3];
        assert!(contains(msgs[6].1, &flags), "anonymous and constant");
        let lookup_id = [8, 0, NFTA_LOOKUP_SET_ID as u8, 0, 0, 0, 0, 2];
        assert!(contains(msgs[8].1, &lookup_id));
        // Hook: egress (1), priority -10, device, policy accept, type.
        let chain = msgs[5].1;
        assert!(contains(
            chain,
            &[8, 0, NFTA_HOOK_PRIORITY as u8, 0, 0xff, 0xff, 0xff, 0xf6]
        ));
        assert!(contains(chain, b"eth0\0"));
        assert!(contains(
            chain,
            &[8, 0, NFTA_CHAIN_POLICY as u8, 0, 0, 0, 0, 1]
        ));
        assert!(contains(chain, b"filter\0"));
        // The named set carries nft's user data, the element its key.
        assert!(contains(
            msgs[3].1,
            &[10, 0, NFTA_SET_USERDATA as u8, 0, 0, 4, 2, 0, 0, 0]
        ));
        assert!(contains(msgs[4].1, &[8, 0, 1, 0, 10, 0, 0, 1]));
        // Sequence numbers: BEGIN 40, the messages 41..=49, END 50.
        assert_eq!(batch.first, 40);
        assert_eq!(batch.what.len(), 9);
    }
}
