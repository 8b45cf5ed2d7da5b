//! Questions to nf_tables over nfnetlink: does a table or a chain exist,
//! which rules of a chain carry a comment. The daemon asks them twice a
//! second to see whether someone flushed plumb's firewall; through
//! libnftables each answer was a JSON listing of a whole table, every set
//! element included, and a dlopen.

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};

use super::nfset::{
    NFNL_SUBSYS_NFTABLES, NLMSG_ERROR, NfFamily, NfNetlink, finish_message, messages, put_str,
    start_message,
};
use super::socket::recv_datagram;
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

    /// The handles of the rules of a chain whose comment is `comment` (none
    /// when the chain does not exist).
    pub fn rules_commented(
        &mut self,
        family: NfFamily,
        table: &str,
        chain: &str,
        comment: &str,
    ) -> NlResult<Vec<u64>> {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_RULE_TABLE, table);
        put_str(&mut attrs, NFTA_RULE_CHAIN, chain);
        let mut handles = Vec::new();
        self.ask(
            NFT_MSG_GETRULE,
            NLM_F_DUMP,
            family,
            &attrs,
            |kind, attrs| {
                if kind == NFT_MSG_NEWRULE
                    && let Some(handle) = rule_handle_if_commented(attrs, comment)
                {
                    handles.push(handle);
                }
            },
        )?;
        Ok(handles)
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
        self.socket.send(&request, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            recv_datagram(&self.socket, &mut self.buf, 0)?;
            for message in messages(&self.buf) {
                if message.seq != seq {
                    continue; // an answer to an earlier request
                }
                match message.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        return match message.error_code() {
                            Some(0) | None => Ok(()),
                            Some(code) => Err(NetlinkError::Kernel {
                                errno: -code,
                                ext: None,
                            }),
                        };
                    }
                    k if k >> 8 == NFNL_SUBSYS_NFTABLES => {
                        each(k & 0xff, message.body().get(4..).unwrap_or_default());
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// (type, payload) of each attribute in `attrs`.
fn attributes(attrs: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
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

/// A rule's handle, if its comment is `comment`.
fn rule_handle_if_commented(attrs: &[u8], comment: &str) -> Option<u64> {
    let mut handle = None;
    let mut matches = false;
    for (kind, payload) in attributes(attrs) {
        match kind {
            NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(payload.try_into().ok()?)),
            NFTA_RULE_USERDATA => matches = rule_comment(payload) == Some(comment),
            _ => {}
        }
    }
    handle.filter(|_| matches)
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
    fn a_rule_is_found_by_its_comment_only() {
        assert_eq!(
            rule_handle_if_commented(&rule(42, Some("plumb")), "plumb"),
            Some(42)
        );
        assert_eq!(
            rule_handle_if_commented(&rule(42, Some("plumbx")), "plumb"),
            None
        );
        assert_eq!(rule_handle_if_commented(&rule(42, None), "plumb"), None);
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
}
