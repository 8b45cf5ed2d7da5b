//! Traffic control: a token bucket (tbf) as a device's root qdisc, which
//! shapes what the device sends; and the redirect of everything a device
//! receives to an ifb, so that what a device receives can be shaped too.

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

use super::{Netlink, NlResult};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// With the link layer given, the kernel needs no rate table from us.
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate.
fn ratespec(bytes_per_sec: u64) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = TC_LINKLAYER_ETHERNET;
    let rate = u32::try_from(bytes_per_sec).unwrap_or(u32::MAX);
    r[8..12].copy_from_slice(&rate.to_ne_bytes());
    r
}

/// struct tc_tbf_qopt: rate, peakrate, limit, buffer, mtu. The buffer
/// comes from TCA_TBF_BURST; no peak rate.
fn tbf_qopt(bytes_per_sec: u64, limit: u32) -> Vec<u8> {
    let mut q = Vec::with_capacity(36);
    q.extend_from_slice(&ratespec(bytes_per_sec));
    q.extend_from_slice(&[0u8; 12]);
    q.extend_from_slice(&limit.to_ne_bytes());
    q.extend_from_slice(&0u32.to_ne_bytes());
    q.extend_from_slice(&0u32.to_ne_bytes());
    q
}

impl Netlink {
    /// Shape what device `index` sends to `bits_per_sec`, with bursts of
    /// `burst` bytes and at most 50 ms of queue.
    pub fn set_rate(&mut self, index: u32, bits_per_sec: u64, burst: u32) -> NlResult<()> {
        let bytes = bits_per_sec / 8;
        let limit = u32::try_from(bytes / 20 + u64::from(burst)).unwrap_or(u32::MAX);
        let mut opts = vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, tbf_qopt(bytes, limit))),
            TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
        ];
        if bytes > u64::from(u32::MAX) {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                bytes.to_ne_bytes().to_vec(),
            )));
        }
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::ROOT;
        msg.header.handle = TcHandle { major: 1, minor: 0 };
        msg.attributes.push(TcAttribute::Kind("tbf".into()));
        msg.attributes.push(TcAttribute::Options(opts));
        self.execute(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }
}

impl Netlink {
    /// The kind of device `index`'s root qdisc (`tbf`, `noqueue`, ...).
    pub fn root_qdisc(&mut self, index: u32) -> NlResult<Option<String>> {
        // A GET naming the root as parent answers with the root qdisc
        // alone, however many devices the namespace has; the answer is a
        // notification, which only NLM_F_ECHO sends to the asker.
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::ROOT;
        let answers = self.get_echoed(RouteNetlinkMessage::GetQueueDiscipline(msg))?;
        Ok(answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) => {
                q.attributes.into_iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k),
                    _ => None,
                })
            }
            _ => None,
        }))
    }

    /// Remove device `index`'s ingress qdisc and its filters, if it has one.
    pub fn delete_ingress(&mut self, index: u32) -> NlResult<()> {
        let mut qdisc = TcMessage::with_index(index as i32);
        qdisc.header.parent = TcHandle::INGRESS;
        qdisc.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        match self.execute(RouteNetlinkMessage::DelQueueDiscipline(qdisc), 0) {
            Err(e) if e.is(libc::EINVAL) || e.is(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

/// ETH_P_ALL in network byte order, as tc filters carry it.
const ALL_PROTOCOLS: u32 = (libc::ETH_P_ALL as u16).to_be() as u32;

impl Netlink {
    /// Send everything device `index` receives to device `to` instead
    /// (ingress qdisc, a u32 filter matching all, mirred egress redirect).
    pub fn redirect_ingress(&mut self, index: u32, to: u32) -> NlResult<()> {
        let mut qdisc = TcMessage::with_index(index as i32);
        qdisc.header.parent = TcHandle::INGRESS;
        qdisc.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        qdisc.attributes.push(TcAttribute::Kind("ingress".into()));
        match self.execute(
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.is(libc::EEXIST) => {}
            r => r?,
        }
        // The types are non-exhaustive: built from defaults, field by field.
        let mut generic = TcActionGeneric::default();
        generic.action = TcActionType::Stolen;
        let mut mirror = TcMirror::default();
        mirror.generic = generic;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to;
        let mut action = TcAction::default();
        action.tab = 1;
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        // u32 with one key of mask 0 matches every packet (this kernel,
        // like many, has no matchall classifier).
        let mut key = TcU32Key::default();
        key.mask = 0;
        key.val = 0;
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys = 1;
        sel.keys = vec![key];
        let mut filter = TcMessage::with_index(index as i32);
        filter.header.parent = TcHandle {
            major: 0xffff,
            minor: 0,
        };
        filter.header.info = (1 << 16) | ALL_PROTOCOLS;
        filter.attributes.push(TcAttribute::Kind("u32".into()));
        filter.attributes.push(TcAttribute::Options(vec![
            TcOption::U32(TcFilterU32Option::Selector(sel)),
            TcOption::U32(TcFilterU32Option::Action(vec![action])),
        ]));
        self.execute(
            RouteNetlinkMessage::NewTrafficFilter(filter),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_parameters_have_the_kernels_layout() {
        let q = tbf_qopt(2_500_000, 150_000);
        assert_eq!(q.len(), 36, "sizeof(struct tc_tbf_qopt)");
        assert_eq!(q[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(u32::from_ne_bytes(q[8..12].try_into().unwrap()), 2_500_000);
        assert_eq!(u32::from_ne_bytes(q[24..28].try_into().unwrap()), 150_000);
        assert_eq!(
            u32::from_ne_bytes(ratespec(u64::MAX)[8..12].try_into().unwrap()),
            u32::MAX
        );
    }
}
