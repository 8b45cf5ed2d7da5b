//! nftables tables written straight over nfnetlink, without libnftables:
//! whole tables (their sets, maps, chains and rules) made, replaced or
//! deleted, and rules put into or taken out of chains of other tables, all
//! in one kernel transaction. Rules are lists of nf_tables expressions, the
//! ones `nft --debug=netlink` prints for the rule's text; sets carry the
//! user data nft writes, so that `nft list` shows them as nft would.
//!
//! nf_tables numbers (hooks, priorities, keys, lengths, verdicts) travel in
//! network byte order; match data is the packet's or the meta key's own
//! bytes.

use super::NlResult;
use super::nfquery::{
    NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE,
    NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_TABLE, NFTA_RULE_USERDATA, NFTA_TABLE_NAME,
};
use super::nfset::{
    Batch, Element, NFT_MSG_NEWSETELEM, NFTA_LIST_ELEM, NfFamily, NfNetlink, SetRef, finish_nest,
    put_attr, put_str, put_value, start_nest,
};

const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;

const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
pub(super) const NFTA_META_KEY: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
pub(super) const NFTA_PAYLOAD_BASE: u16 = 2;
pub(super) const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub(super) const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
pub(super) const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_CMP_SREG: u16 = 1;
pub(super) const NFTA_CMP_OP: u16 = 2;
pub(super) const NFTA_CMP_DATA: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
pub(super) const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFTA_NAT_FLAGS: u16 = 7;
const NFTA_IMMEDIATE_DREG: u16 = 1;
pub(super) const NFTA_IMMEDIATE_DATA: u16 = 2;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
pub(super) const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_REV: u16 = 2;
pub(super) const NFTA_MATCH_INFO: u16 = 3;
const NFTA_RULE_COMPAT: u16 = 5;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_COMPAT_PROTO: u16 = 1;
const NFTA_RULE_COMPAT_FLAGS: u16 = 2;
/// `struct xt_comment_info`: the comment, NUL-padded.
pub const XT_COMMENT_LEN: usize = 256;

const NFT_REG_VERDICT: u32 = 0;
/// The first 16-byte register: every match loads into it (a
/// concatenation starts there).
const NFT_REG_1: u32 = 1;
/// The first of the 32-bit registers, which overlay the 16-byte ones:
/// NFT_REG32_00 is the first quarter of NFT_REG_1.
const NFT_REG32_00: u32 = 8;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_MAP: u32 = 0x8;
const NFT_LOOKUP_F_INV: u32 = 0x1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
pub const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u32 = 2;
/// NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED.
const NAT_ADDRESS_AND_PORT: u32 = 0x3;
pub const NF_ACCEPT: i32 = 1;
const NF_DROP: i32 = 0;
const NFT_JUMP: i32 = -3;

/// nft's datatype numbers, which `nft list` reads a set's key type by.
pub const TYPE_INTEGER: u32 = 4;
pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;
pub const TYPE_ETHERADDR: u32 = 9;
pub const TYPE_INET_PROTO: u32 = 12;
pub const TYPE_INET_SERVICE: u32 = 13;
pub const TYPE_ICMP6_TYPE: u32 = 29;
pub const TYPE_IFNAME: u32 = 41;

/// The type of a concatenated key, `a . b . c`: nft packs the fields'
/// type numbers 6 bits each, the first highest.
pub fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

/// A table, replaced whole: what the kernel held under its name goes.
pub struct Table {
    pub family: NfFamily,
    pub name: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// A named set, or with `data` a map.
pub struct Set {
    pub name: String,
    pub key_type: u32,
    pub key_len: u32,
    /// For a map, the type and length of what it maps to.
    pub data: Option<(u32, u32)>,
    /// What nft keeps with a set to show it (byte order, `typeof`, the
    /// comment); the kernel stores it and reads none of it.
    pub userdata: Vec<u8>,
    pub elements: Vec<Element>,
}

/// libnftnl's set user data, TLVs of type, length, value: nft sends a key
/// byte order (NFTNL_UDATA_SET_KEYBYTEORDER: 1 host, 2 big-endian, 0 for
/// a concatenation) and, for keys that are concatenations or `typeof`,
/// what the key was made of (KEY_TYPEOF). These are its bytes as
/// `nft --debug=mnl` shows nft 1.0.6 sending them.
///
/// An `ifname` key.
pub const KEY_HOST_ENDIAN: &[u8] = &[0, 4, 1, 0, 0, 0];
/// An address key.
pub const KEY_BIG_ENDIAN: &[u8] = &[0, 4, 2, 0, 0, 0];
/// `type a . b`: a concatenation (expression type 13) of plain types.
pub const KEY_CONCAT: &[u8] = &[0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0];
/// A map from a concatenation to a concatenation (both byte orders 0,
/// DATA_TYPEOF like KEY_TYPEOF, DATA_INTERVAL 0).
pub const MAP_CONCAT: &[u8] = &[
    0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 4, 8, 0, 4, 13, 0, 0, 0, 1,
    0, 6, 4, 0, 0, 0, 0,
];
/// `typeof @th,64,128`: a payload expression (type 7), transport base
/// (3), offset 64, 128 bits.
pub const TYPEOF_TH_64_128: &[u8] = &[
    0, 4, 2, 0, 0, 0, 3, 38, 0, 4, 7, 0, 0, 0, 1, 30, 0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 2, 4, 3,
    0, 0, 0, 3, 4, 64, 0, 0, 0, 4, 4, 128, 0, 0, 0,
];
/// `typeof iifname . @th,64,128`: a concatenation of a meta expression
/// (type 9, key 6) and that payload.
pub const TYPEOF_IIFNAME_TH_64_128: &[u8] = &[
    0, 4, 0, 0, 0, 0, 3, 64, 0, 4, 13, 0, 0, 0, 1, 56, 0, 14, 0, 4, 9, 0, 0, 0, 1, 6, 0, 4, 6, 0,
    0, 0, 1, 38, 0, 4, 7, 0, 0, 0, 1, 30, 0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 2, 4, 3, 0, 0, 0, 3,
    4, 64, 0, 0, 0, 4, 4, 128, 0, 0, 0,
];
/// NFTNL_UDATA_SET_COMMENT and NFTNL_UDATA_RULE_COMMENT: the text and
/// its NUL.
const UDATA_SET_COMMENT: u8 = 7;
const UDATA_RULE_COMMENT: u8 = 0;

/// `userdata` followed by a set comment.
pub fn with_comment(userdata: &[u8], comment: &str) -> Vec<u8> {
    let mut out = userdata.to_vec();
    put_udata(&mut out, UDATA_SET_COMMENT, comment);
    out
}

fn put_udata(out: &mut Vec<u8>, kind: u8, text: &str) {
    // A TLV's length is one byte; nft limits comments to 128 bytes.
    let text = &text.as_bytes()[..text.len().min(254)];
    out.extend_from_slice(&[kind, text.len() as u8 + 1]);
    out.extend_from_slice(text);
    out.push(0);
}

impl Set {
    /// An empty set of keys of `key_type`, `key_len` bytes long.
    pub fn new(name: &str, key_type: u32, key_len: u32, userdata: &[u8]) -> Set {
        Set {
            name: name.into(),
            key_type,
            key_len,
            data: None,
            userdata: userdata.to_vec(),
            elements: Vec::new(),
        }
    }

    /// The set as a map to values of `data_type`, `data_len` bytes long.
    pub fn mapping_to(self, data_type: u32, data_len: u32) -> Set {
        Set {
            data: Some((data_type, data_len)),
            ..self
        }
    }
}

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

/// The expressions of one rule, run in order (a match that fails ends
/// it), and the comment nft shows with it.
pub struct Rule {
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
    /// Sent as iptables-nft sends its rules: with NFTA_RULE_COMPAT (the
    /// `-p` protocol its xt extensions may check; none here).
    pub iptables: bool,
}

impl Rule {
    pub fn new(exprs: Vec<Expr>) -> Rule {
        Rule {
            exprs,
            comment: None,
            iptables: false,
        }
    }

    /// A rule of a table iptables-nft owns, made only of expressions it
    /// writes itself, so that `iptables -S` and `iptables-save` read it.
    pub fn iptables(exprs: Vec<Expr>) -> Rule {
        Rule {
            iptables: true,
            ..Rule::new(exprs)
        }
    }

    pub fn commented(self, comment: impl Into<String>) -> Rule {
        Rule {
            comment: Some(comment.into()),
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// skb->protocol, the ethertype (2 bytes, network order).
    Protocol = 1,
    /// The input and output interface names (16 bytes, NUL-padded).
    Iifname = 6,
    Oifname = 7,
    /// The input device's type (2 bytes, host order), ARPHRD_*.
    IifType = 8,
    /// The hook's family, NFPROTO_* (1 byte): what `ip saddr` in an inet
    /// table checks first.
    Nfproto = 15,
    /// The layer 4 protocol (1 byte).
    L4Proto = 16,
}

impl MetaKey {
    fn len(self) -> u32 {
        match self {
            MetaKey::Iifname | MetaKey::Oifname => 16,
            MetaKey::Protocol | MetaKey::IifType => 2,
            MetaKey::Nfproto | MetaKey::L4Proto => 1,
        }
    }
}

/// Conntrack keys, 4 bytes in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    /// A bit per state: new 8, established 2, related 4.
    State = 0,
    /// IPS_* bits; IPS_DST_NAT is 0x20.
    Status = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Link = 0,
    Network = 1,
    Transport = 2,
}

/// How `cmp` compares: byte by byte, so `Lte` and `Gte` order network
/// byte order values (ports) as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    Lte = 3,
    Gte = 5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
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
    /// Load each of these (meta and payload loads) into the registers one
    /// after the other: one key made of several fields (`a . b`), each
    /// starting on a 4-byte boundary.
    Concat(Vec<Expr>),
    /// Load a conntrack key into the register.
    Ct(CtKey),
    /// Keep only the register's bits set in the mask (as long as it).
    And(Vec<u8>),
    /// Load the route type of the destination address (RTN_*, 4 bytes,
    /// host order): RTN_LOCAL (2) for the host's own addresses.
    FibDaddrType,
    /// Compare the register with `data` (as long as what was loaded).
    Cmp(CmpOp, Vec<u8>),
    /// The register's value is (or with `invert`, is not) in the named set.
    Lookup {
        set: String,
        invert: bool,
    },
    /// Look the register's key up in the named map, and load what it maps
    /// to into the registers (a match: no element, no further).
    MapLookup(String),
    /// The register's value is one of `keys`: an anonymous set, made with
    /// the rule and gone with it.
    In {
        key_type: u32,
        key_len: u32,
        keys: Vec<Vec<u8>>,
        /// Is none of them.
        invert: bool,
    },
    /// Count packets and bytes (`iptables -v` shows them).
    Counter,
    /// iptables' `-m comment --comment TEXT`: the xt `comment` match,
    /// which matches everything and carries the text.
    XtComment(String),
    /// Destination NAT of IPv4 to the address in the register and the port
    /// in the 4 bytes after it (what a map lookup to
    /// `ipv4_addr . inet_service` loads).
    Dnat4,
    /// Source NAT to the address of the interface the packet leaves by.
    Masquerade,
    Verdict(Verdict),
}

impl Expr {
    pub fn payload(base: Base, offset: u32, len: u32) -> Expr {
        Expr::Payload { base, offset, len }
    }

    /// The register equals `value`.
    pub fn eq(value: &[u8]) -> Expr {
        Expr::Cmp(CmpOp::Eq, value.to_vec())
    }

    /// The register's value is in the named set.
    pub fn in_set(set: &str) -> Expr {
        Expr::Lookup {
            set: set.into(),
            invert: false,
        }
    }

    /// The register's value is not in the named set.
    pub fn not_in(set: &str) -> Expr {
        Expr::Lookup {
            set: set.into(),
            invert: true,
        }
    }

    /// The register's value is one of `keys`. One key is a comparison, as
    /// nft writes `iifname { "a" }`.
    pub fn one_of(key_type: u32, key_len: u32, mut keys: Vec<Vec<u8>>) -> Expr {
        if keys.len() == 1 {
            return Expr::Cmp(CmpOp::Eq, keys.remove(0));
        }
        Expr::In {
            key_type,
            key_len,
            keys,
            invert: false,
        }
    }

    /// The register's value is none of `keys` (`iifname != { "a", "b" }`).
    pub fn none_of(key_type: u32, key_len: u32, mut keys: Vec<Vec<u8>>) -> Expr {
        if keys.len() == 1 {
            return Expr::Cmp(CmpOp::Neq, keys.remove(0));
        }
        Expr::In {
            key_type,
            key_len,
            keys,
            invert: true,
        }
    }
}

/// One change in a transaction of [`NfNetlink::edit`].
pub enum Edit {
    /// Make table, or replace it whole: what the kernel held under its
    /// name goes.
    Replace(Table),
    /// Delete a table, if it exists.
    Delete { family: NfFamily, name: String },
    /// Put a rule into a chain plumb does not own: just before rule
    /// `before` (by handle), or at the head.
    Insert {
        family: NfFamily,
        table: String,
        chain: String,
        before: Option<u64>,
        rule: Rule,
    },
    /// Remove rule `handle` from a chain plumb does not own.
    Remove {
        family: NfFamily,
        table: String,
        chain: String,
        handle: u64,
    },
}

impl Edit {
    /// The table this edit makes or deletes whole.
    fn whole_table(&self) -> Option<(NfFamily, &str)> {
        match self {
            Edit::Replace(t) => Some((t.family, &t.name)),
            Edit::Delete { family, name } => Some((*family, name)),
            Edit::Insert { .. } | Edit::Remove { .. } => None,
        }
    }
}

impl NfNetlink {
    /// Apply `edits` in one transaction: every table, set, element, chain
    /// and rule, or nothing.
    ///
    /// A table that does not exist yet is only made: a batch that deletes
    /// anything leaves the kernel objects to free after an RCU grace
    /// period, which closing the socket then waits for (nf_tables flushes
    /// that work when a netlink socket goes: 5-10 ms here). Only a table
    /// that exists is deleted and made again. If another process made one
    /// in between, the batch fails with EEXIST and is sent again replacing.
    pub fn edit(&mut self, edits: &[Edit]) -> NlResult<()> {
        let mut exists = Vec::with_capacity(edits.len());
        for e in edits {
            exists.push(match e.whole_table() {
                Some((family, name)) => self.table_exists(family, name)?,
                None => false,
            });
        }
        match self.transact(encode(edits, &exists, self.seq.wrapping_add(1))) {
            Err(e) if e.is(libc::EEXIST) => {
                let replace: Vec<bool> = edits.iter().map(|e| e.whole_table().is_some()).collect();
                self.transact(encode(edits, &replace, self.seq.wrapping_add(1)))
            }
            done => done,
        }
    }
}

fn be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn table_message(batch: &mut Batch, family: NfFamily, name: &str, kind: u16, flags: u16) {
    let verb = if kind == NFT_MSG_NEWTABLE {
        "add"
    } else {
        "delete"
    };
    let what = format!("{verb} table {} {name}", family.name());
    let msg = batch.message(kind, flags, family, what);
    put_str(&mut batch.buf, NFTA_TABLE_NAME, name);
    batch.end_message(msg);
}

/// The batch of `edits`, its BEGIN numbered `first`. `exists[i]` says
/// whether the table edit `i` makes or deletes is there.
fn encode(edits: &[Edit], exists: &[bool], first: u32) -> Batch {
    let mut batch = Batch::new(first);
    let mut set_ids = 0;
    let create = libc::NLM_F_CREATE as u16;
    for (e, &exists) in edits.iter().zip(exists) {
        match e {
            Edit::Replace(t) => {
                if exists {
                    table_message(&mut batch, t.family, &t.name, NFT_MSG_NEWTABLE, create);
                    table_message(&mut batch, t.family, &t.name, NFT_MSG_DELTABLE, 0);
                    table_message(&mut batch, t.family, &t.name, NFT_MSG_NEWTABLE, create);
                } else {
                    let flags = create | libc::NLM_F_EXCL as u16;
                    table_message(&mut batch, t.family, &t.name, NFT_MSG_NEWTABLE, flags);
                }
                table_contents(&mut batch, t, &mut set_ids);
            }
            Edit::Delete { family, name } if exists => {
                // Made first, so that a table gone meanwhile is no error.
                table_message(&mut batch, *family, name, NFT_MSG_NEWTABLE, create);
                table_message(&mut batch, *family, name, NFT_MSG_DELTABLE, 0);
            }
            Edit::Delete { .. } => {}
            Edit::Insert {
                family,
                table,
                chain,
                before,
                rule,
            } => {
                let at = Place {
                    family: *family,
                    table,
                    chain,
                    before: *before,
                };
                // Without NLM_F_APPEND a rule goes before its position, or
                // first without one.
                rule_messages(&mut batch, &at, rule, create, "insert", &mut set_ids);
            }
            Edit::Remove {
                family,
                table,
                chain,
                handle,
            } => {
                let what = format!(
                    "delete rule {} {table} {chain} handle {handle}",
                    family.name()
                );
                let msg = batch.message(NFT_MSG_DELRULE, 0, *family, what);
                let buf = &mut batch.buf;
                put_str(buf, NFTA_RULE_TABLE, table);
                put_str(buf, NFTA_RULE_CHAIN, chain);
                put_attr(buf, NFTA_RULE_HANDLE, &handle.to_be_bytes());
                batch.end_message(msg);
            }
        }
    }
    batch.finish()
}

/// A chain, named whole, and the rule a new one goes next to.
struct Place<'a> {
    family: NfFamily,
    table: &'a str,
    chain: &'a str,
    before: Option<u64>,
}

/// The sets and their elements, the chains, then the rules of `t`, whose
/// table message the batch holds.
fn table_contents(batch: &mut Batch, t: &Table, set_ids: &mut u32) {
    let family = t.family;
    for s in &t.sets {
        *set_ids += 1;
        set_messages(batch, family, &t.name, s, *set_ids, 0);
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
    let flags = (libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16;
    for c in &t.chains {
        let at = Place {
            family,
            table: &t.name,
            chain: &c.name,
            before: None,
        };
        for rule in &c.rules {
            rule_messages(batch, &at, rule, flags, "add", set_ids);
        }
    }
}

/// Rule `rule` of chain `at`, after the anonymous sets it binds: each is
/// made in the batch just before the rule and named there by its id.
fn rule_messages(
    batch: &mut Batch,
    at: &Place,
    rule: &Rule,
    flags: u16,
    verb: &str,
    set_ids: &mut u32,
) {
    let mut anonymous = Vec::new();
    for e in &rule.exprs {
        if let Expr::In {
            key_type,
            key_len,
            keys,
            ..
        } = e
        {
            *set_ids += 1;
            let mut set = Set {
                elements: keys
                    .iter()
                    .map(|k| Element {
                        key: k.clone(),
                        data: None,
                    })
                    .collect(),
                ..Set::new(ANONYMOUS_SET, *key_type, *key_len, &[])
            };
            // Without its byte order nft lists interface names as "".
            if *key_type == TYPE_IFNAME {
                set.userdata = KEY_HOST_ENDIAN.to_vec();
            }
            let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
            set_messages(batch, at.family, at.table, &set, *set_ids, flags);
            anonymous.push(*set_ids);
        }
    }
    let what = format!(
        "{verb} rule {} {} {}{}",
        at.family.name(),
        at.table,
        at.chain,
        match &rule.comment {
            Some(c) => format!(" (\"{c}\")"),
            None => String::new(),
        }
    );
    let msg = batch.message(NFT_MSG_NEWRULE, flags, at.family, what);
    let buf = &mut batch.buf;
    put_str(buf, NFTA_RULE_TABLE, at.table);
    put_str(buf, NFTA_RULE_CHAIN, at.chain);
    if let Some(handle) = at.before {
        put_attr(buf, NFTA_RULE_POSITION, &handle.to_be_bytes());
    }
    let list = start_nest(buf, NFTA_RULE_EXPRESSIONS);
    let mut anonymous = anonymous.into_iter();
    for e in &rule.exprs {
        put_expr(buf, e, NFT_REG_1, &mut anonymous);
    }
    finish_nest(buf, list);
    if rule.iptables {
        let compat = start_nest(buf, NFTA_RULE_COMPAT);
        put_attr(buf, NFTA_RULE_COMPAT_PROTO, &be(0));
        put_attr(buf, NFTA_RULE_COMPAT_FLAGS, &be(0));
        finish_nest(buf, compat);
    }
    if let Some(comment) = &rule.comment {
        let mut udata = Vec::new();
        put_udata(&mut udata, UDATA_RULE_COMMENT, comment);
        put_attr(buf, NFTA_RULE_USERDATA, &udata);
    }
    batch.end_message(msg);
}

/// The name of an anonymous set: the kernel picks `__setN`, and the batch
/// refers to it by id.
const ANONYMOUS_SET: &str = "__set%d";

/// Set `s` of table `table`, numbered `id` in the batch, and its elements
/// (in as many messages as they need: an attribute's length is a u16).
fn set_messages(batch: &mut Batch, family: NfFamily, table: &str, s: &Set, id: u32, flags: u32) {
    let shown = if flags & NFT_SET_ANONYMOUS != 0 {
        "anonymous set"
    } else {
        &s.name
    };
    let what = format!("add set {} {table} {shown}", family.name());
    let msg = batch.message(NFT_MSG_NEWSET, libc::NLM_F_CREATE as u16, family, what);
    let buf = &mut batch.buf;
    put_str(buf, NFTA_SET_TABLE, table);
    put_str(buf, NFTA_SET_NAME, &s.name);
    let map = if s.data.is_some() { NFT_SET_MAP } else { 0 };
    put_attr(buf, NFTA_SET_FLAGS, &be(flags | map));
    put_attr(buf, NFTA_SET_KEY_TYPE, &be(s.key_type));
    put_attr(buf, NFTA_SET_KEY_LEN, &be(s.key_len));
    if let Some((data_type, data_len)) = s.data {
        put_attr(buf, NFTA_SET_DATA_TYPE, &be(data_type));
        put_attr(buf, NFTA_SET_DATA_LEN, &be(data_len));
    }
    put_attr(buf, NFTA_SET_ID, &be(id));
    if !s.userdata.is_empty() {
        put_attr(buf, NFTA_SET_USERDATA, &s.userdata);
    }
    batch.end_message(msg);
    let to = SetRef {
        family,
        table,
        name: &s.name,
        id: Some(id),
    };
    let what = format!("add to set {} {table} {shown}", family.name());
    let create = libc::NLM_F_CREATE as u16;
    batch.element_messages(NFT_MSG_NEWSETELEM, create, &to, &s.elements, &what);
}

/// The register that starts `slot` 4-byte words after the start of
/// NFT_REG_1: a 16-byte register when it starts one, as nft writes it.
fn register(slot: u32) -> u32 {
    if slot.is_multiple_of(4) {
        NFT_REG_1 + slot / 4
    } else {
        NFT_REG32_00 + slot
    }
}

/// How many bytes a load puts in the registers.
fn loaded_len(e: &Expr) -> u32 {
    match e {
        Expr::Meta(key) => key.len(),
        Expr::Payload { len, .. } => *len,
        _ => 4,
    }
}

/// One expression: { NAME, DATA { its attributes } }. Loads go to `reg`;
/// everything else works on NFT_REG_1.
fn put_expr(buf: &mut Vec<u8>, e: &Expr, reg: u32, anonymous: &mut impl Iterator<Item = u32>) {
    let name = match e {
        Expr::Concat(parts) => {
            let mut slot = 0;
            for part in parts {
                put_expr(buf, part, register(slot), anonymous);
                slot += loaded_len(part).div_ceil(4);
            }
            return;
        }
        Expr::Meta(_) => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Ct(_) => "ct",
        Expr::And(_) => "bitwise",
        Expr::FibDaddrType => "fib",
        Expr::Cmp(..) => "cmp",
        Expr::Lookup { .. } | Expr::MapLookup(_) | Expr::In { .. } => "lookup",
        Expr::Dnat4 => "nat",
        Expr::Masquerade => "masq",
        Expr::Counter => "counter",
        Expr::XtComment(_) => "match",
        Expr::Verdict(_) => "immediate",
    };
    let elem = start_nest(buf, NFTA_LIST_ELEM);
    put_str(buf, NFTA_EXPR_NAME, name);
    let data = start_nest(buf, NFTA_EXPR_DATA);
    let r1 = &be(NFT_REG_1);
    match e {
        Expr::Meta(key) => {
            put_attr(buf, NFTA_META_KEY, &be(*key as u32));
            put_attr(buf, NFTA_META_DREG, &be(reg));
        }
        Expr::Payload { base, offset, len } => {
            put_attr(buf, NFTA_PAYLOAD_DREG, &be(reg));
            put_attr(buf, NFTA_PAYLOAD_BASE, &be(*base as u32));
            put_attr(buf, NFTA_PAYLOAD_OFFSET, &be(*offset));
            put_attr(buf, NFTA_PAYLOAD_LEN, &be(*len));
        }
        Expr::Concat(_) | Expr::Masquerade => {}
        Expr::Ct(key) => {
            put_attr(buf, NFTA_CT_KEY, &be(*key as u32));
            put_attr(buf, NFTA_CT_DREG, &be(reg));
        }
        Expr::And(mask) => {
            put_attr(buf, NFTA_BITWISE_SREG, r1);
            put_attr(buf, NFTA_BITWISE_DREG, r1);
            put_attr(buf, NFTA_BITWISE_LEN, &be(mask.len() as u32));
            put_value(buf, NFTA_BITWISE_MASK, mask);
            put_value(buf, NFTA_BITWISE_XOR, &vec![0; mask.len()]);
        }
        Expr::FibDaddrType => {
            put_attr(buf, NFTA_FIB_DREG, &be(reg));
            put_attr(buf, NFTA_FIB_RESULT, &be(NFT_FIB_RESULT_ADDRTYPE));
            put_attr(buf, NFTA_FIB_FLAGS, &be(NFTA_FIB_F_DADDR));
        }
        Expr::Cmp(op, value) => {
            put_attr(buf, NFTA_CMP_SREG, r1);
            put_attr(buf, NFTA_CMP_OP, &be(*op as u32));
            put_value(buf, NFTA_CMP_DATA, value);
        }
        Expr::Lookup { set, invert } => {
            put_str(buf, NFTA_LOOKUP_SET, set);
            put_attr(buf, NFTA_LOOKUP_SREG, r1);
            if *invert {
                put_attr(buf, NFTA_LOOKUP_FLAGS, &be(NFT_LOOKUP_F_INV));
            }
        }
        Expr::MapLookup(set) => {
            put_str(buf, NFTA_LOOKUP_SET, set);
            put_attr(buf, NFTA_LOOKUP_SREG, r1);
            put_attr(buf, NFTA_LOOKUP_DREG, r1);
        }
        Expr::In { invert, .. } => {
            put_str(buf, NFTA_LOOKUP_SET, ANONYMOUS_SET);
            put_attr(buf, NFTA_LOOKUP_SREG, r1);
            // Every `In` of the rule had its set made before the rule.
            let id = anonymous.next().unwrap_or_default();
            put_attr(buf, NFTA_LOOKUP_SET_ID, &be(id));
            if *invert {
                put_attr(buf, NFTA_LOOKUP_FLAGS, &be(NFT_LOOKUP_F_INV));
            }
        }
        Expr::Counter => {
            put_attr(buf, NFTA_COUNTER_BYTES, &0u64.to_be_bytes());
            put_attr(buf, NFTA_COUNTER_PACKETS, &0u64.to_be_bytes());
        }
        Expr::XtComment(text) => {
            put_str(buf, NFTA_MATCH_NAME, "comment");
            put_attr(buf, NFTA_MATCH_REV, &be(0));
            let mut info = [0u8; XT_COMMENT_LEN];
            // The kernel's copy must end with a NUL.
            let text = &text.as_bytes()[..text.len().min(XT_COMMENT_LEN - 1)];
            info[..text.len()].copy_from_slice(text);
            put_attr(buf, NFTA_MATCH_INFO, &info);
        }
        Expr::Dnat4 => {
            let port = &be(register(1));
            put_attr(buf, NFTA_NAT_TYPE, &be(NFT_NAT_DNAT));
            put_attr(buf, NFTA_NAT_FAMILY, &be(NFPROTO_IPV4));
            put_attr(buf, NFTA_NAT_REG_ADDR_MIN, r1);
            put_attr(buf, NFTA_NAT_REG_ADDR_MAX, r1);
            put_attr(buf, NFTA_NAT_REG_PROTO_MIN, port);
            put_attr(buf, NFTA_NAT_REG_PROTO_MAX, port);
            put_attr(buf, NFTA_NAT_FLAGS, &be(NAT_ADDRESS_AND_PORT));
        }
        Expr::Verdict(v) => {
            put_attr(buf, NFTA_IMMEDIATE_DREG, &be(NFT_REG_VERDICT));
            let imm = start_nest(buf, NFTA_IMMEDIATE_DATA);
            let verdict = start_nest(buf, NFTA_DATA_VERDICT);
            let code = match v {
                Verdict::Accept => NF_ACCEPT,
                Verdict::Drop => NF_DROP,
                Verdict::Jump(_) => NFT_JUMP,
            };
            put_attr(buf, NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Verdict::Jump(chain) = v {
                put_str(buf, NFTA_VERDICT_CHAIN, chain);
            }
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

    fn table() -> Table {
        Table {
            family: NfFamily::Netdev,
            name: "t".into(),
            sets: vec![Set {
                elements: vec![Element {
                    key: vec![10, 0, 0, 1],
                    data: None,
                }],
                ..Set::new("s", TYPE_IPADDR, 4, KEY_BIG_ENDIAN)
            }],
            chains: vec![Chain {
                name: "c".into(),
                hook: Some(Hook {
                    kind: "filter",
                    number: 1,
                    priority: -10,
                    device: Some("eth0".into()),
                }),
                rules: vec![Rule::new(vec![
                    Expr::Meta(MetaKey::L4Proto),
                    Expr::In {
                        key_type: TYPE_INTEGER,
                        key_len: 1,
                        keys: vec![vec![6], vec![17]],
                        invert: false,
                    },
                    Expr::Verdict(Verdict::Accept),
                ])],
            }],
        }
    }

    #[test]
    fn a_table_is_replaced_sets_first_and_anonymous_sets_just_before_their_rule() {
        let edits = [Edit::Replace(table())];
        let fresh = encode(&edits, &[false], 1);
        let kinds: Vec<u16> = messages(&fresh).iter().map(|m| m.0).collect();
        assert_eq!(
            kinds[..2],
            [NFT_MSG_NEWTABLE, NFT_MSG_NEWSET],
            "made, nothing deleted"
        );
        let batch = encode(&edits, &[true], 40);
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
        assert_eq!(batch.what[8], "add rule netdev t c");
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
        // An absent table is not deleted.
        let gone = Edit::Delete {
            family: NfFamily::Inet,
            name: "t".into(),
        };
        assert!(encode(&[gone], &[false], 1).what.is_empty());
    }

    /// The bytes of a `dreg`/`sreg`-style register attribute.
    fn reg(kind: u16, n: u32) -> Vec<u8> {
        [&[8, 0, kind as u8, 0][..], &n.to_be_bytes()].concat()
    }

    #[test]
    fn a_concatenation_loads_each_field_into_the_next_free_register() {
        let mut buf = Vec::new();
        // ip daddr . meta l4proto . th dport: reg 1, reg 9, reg 10, as nft.
        let key = Expr::Concat(vec![
            Expr::payload(Base::Network, 16, 4),
            Expr::Meta(MetaKey::L4Proto),
            Expr::payload(Base::Transport, 2, 2),
        ]);
        put_expr(&mut buf, &key, NFT_REG_1, &mut std::iter::empty());
        for (i, n) in [1, 9, 10].into_iter().enumerate() {
            let want = reg(
                if i == 1 {
                    NFTA_META_DREG
                } else {
                    NFTA_PAYLOAD_DREG
                },
                n,
            );
            assert!(contains(&buf, &want), "field {i} in reg {n}");
        }
        // iifname . ether saddr: the name fills reg 1, the MAC starts reg 2.
        let mut buf = Vec::new();
        let key = Expr::Concat(vec![
            Expr::Meta(MetaKey::Iifname),
            Expr::payload(Base::Link, 6, 6),
        ]);
        put_expr(&mut buf, &key, NFT_REG_1, &mut std::iter::empty());
        assert!(contains(&buf, &reg(NFTA_META_DREG, 1)));
        assert!(contains(&buf, &reg(NFTA_PAYLOAD_DREG, 2)));
        assert_eq!(concat_type(&[TYPE_IFNAME, TYPE_ETHERADDR]), 41 << 6 | 9);
    }

    #[test]
    fn rules_go_first_into_foreign_chains_and_leave_them_by_handle() {
        let edits = [
            Edit::Remove {
                family: NfFamily::Ip,
                table: "filter".into(),
                chain: "FORWARD".into(),
                handle: 0x1234,
            },
            Edit::Insert {
                family: NfFamily::Ip,
                table: "filter".into(),
                chain: "FORWARD".into(),
                before: None,
                rule: Rule::new(vec![Expr::Verdict(Verdict::Accept)]).commented("plumb"),
            },
        ];
        let batch = encode(&edits, &[false, false], 1);
        let msgs = messages(&batch);
        assert_eq!(msgs[0].0, NFT_MSG_DELRULE);
        assert!(contains(
            msgs[0].1,
            &[
                12,
                0,
                NFTA_RULE_HANDLE as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0x12,
                0x34
            ]
        ));
        assert_eq!(msgs[1].0, NFT_MSG_NEWRULE);
        // No NLM_F_APPEND: at the head of the chain.
        let second = 20 + u32::from_ne_bytes(batch.buf[20..24].try_into().unwrap()) as usize;
        let flags = u16::from_ne_bytes([batch.buf[second + 6], batch.buf[second + 7]]);
        assert_eq!(flags & libc::NLM_F_APPEND as u16, 0);
        assert_ne!(flags & libc::NLM_F_CREATE as u16, 0);
        // The comment is libnftnl's TLV 0, NUL included.
        assert!(contains(
            msgs[1].1,
            &[
                12,
                0,
                NFTA_RULE_USERDATA as u8,
                0,
                0,
                6,
                b'p',
                b'l',
                b'u',
                b'm',
                b'b',
                0
            ]
        ));
        assert_eq!(batch.what[1], "insert rule ip filter FORWARD (\"plumb\")");
    }

    #[test]
    fn a_large_set_is_written_in_several_element_messages() {
        let mut t = table();
        t.sets[0].elements = (0..20_000u32)
            .map(|i| Element {
                key: i.to_be_bytes().to_vec(),
                data: None,
            })
            .collect();
        let batch = encode(&[Edit::Replace(t)], &[false], 1);
        let parts: Vec<usize> = messages(&batch)
            .iter()
            .filter(|m| m.0 == NFT_MSG_NEWSETELEM)
            .map(|m| m.1.len())
            .collect();
        assert!(parts.len() > 3, "{parts:?}");
        assert!(parts.iter().all(|&len| len < u16::MAX as usize));
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The rule iptables-nft 1.8.9 sends for `iptables -I FORWARD -o br1
    /// -m comment --comment "plumb network lan" -j ACCEPT` (from strace):
    /// table, chain, expressions (meta, cmp, match comment, counter,
    /// immediate), NFTA_RULE_COMPAT. Written otherwise, `iptables-save`
    /// could not read it back.
    #[test]
    fn an_iptables_rule_is_byte_for_byte_what_iptables_nft_sends() {
        let expected = [
            unhex(
                "0b00010066696c74657200000c000200464f525741524400dc01048024000180090001006d6574\
                 610000000014000280080002000000000708000100000000012c00018008000100636d7000200002\
                 80080001000000000108000200000000000c00038008000100627231002c0101800a0001006d6174\
                 63680000001c0102800c000100636f6d6d656e7400080002000000000004010300706c756d62206e\
                 6574776f726b206c616e",
            ),
            vec![0; XT_COMMENT_LEN - "plumb network lan".len()],
            unhex(
                "2c0001800c000100636f756e746572001c0002800c00010000000000000000000c00020000000000\
                 00000000300001800e000100696d6d6564696174650000001c000280080001000000000010000280\
                 0c00028008000100000000011400058008000100000000000800020000000000",
            ),
        ]
        .concat();
        let rule = Rule::iptables(vec![
            Expr::Meta(MetaKey::Oifname),
            Expr::eq(b"br1\0"),
            Expr::XtComment("plumb network lan".into()),
            Expr::Counter,
            Expr::Verdict(Verdict::Accept),
        ]);
        let edits = [Edit::Insert {
            family: NfFamily::Ip,
            table: "filter".into(),
            chain: "FORWARD".into(),
            before: None,
            rule,
        }];
        let batch = encode(&edits, &[false], 1);
        let sent = messages(&batch);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, NFT_MSG_NEWRULE);
        assert_eq!(sent[0].1, &expected[..]);
    }

    /// What is sent is read back as the same expressions, and the comment
    /// of the xt match as the rule's comment.
    #[test]
    fn a_rule_sent_is_listed_back_as_its_expressions() {
        use crate::netlink::nfquery::{Listed, ListedRule};
        let rule = Rule::iptables(vec![
            Expr::Meta(MetaKey::Iifname),
            Expr::eq(b"pl0\0"),
            Expr::XtComment("plumb network x".into()),
            Expr::Counter,
            Expr::Verdict(Verdict::Drop),
        ]);
        let edits = [Edit::Insert {
            family: NfFamily::Ip,
            table: "filter".into(),
            chain: "DOCKER-USER".into(),
            before: Some(3),
            rule,
        }];
        let batch = encode(&edits, &[false], 1);
        let mut attrs = messages(&batch)[0].1.to_vec();
        // Inserted just before rule 3.
        let position = [
            &[12, 0, NFTA_RULE_POSITION as u8, 0][..],
            &3u64.to_be_bytes(),
        ]
        .concat();
        assert!(contains(&attrs, &position));
        // The kernel lists a rule with its handle.
        attrs.extend_from_slice(&[12, 0, NFTA_RULE_HANDLE as u8, 0]);
        attrs.extend_from_slice(&9u64.to_be_bytes());
        let listed = ListedRule::parse(&attrs).unwrap();
        assert_eq!(listed.chain, "DOCKER-USER");
        assert_eq!(listed.handle, 9);
        assert_eq!(listed.comment.as_deref(), Some("plumb network x"));
        let mut info = b"plumb network x".to_vec();
        info.resize(XT_COMMENT_LEN, 0);
        assert_eq!(
            listed.exprs,
            [
                Listed::Meta(MetaKey::Iifname as u32),
                Listed::Cmp {
                    op: 0,
                    data: b"pl0\0".to_vec()
                },
                Listed::Match {
                    name: "comment".into(),
                    info
                },
                Listed::Counter,
                Listed::Verdict(NF_DROP),
            ]
        );
    }
}
