//! The client's sockets, opened inside the container's namespace (a socket
//! stays in the namespace it was created in, whichever thread uses it).

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::frame;
use crate::netns::NsHandle;

/// AF_PACKET (cooked, IPv4 only) on one interface, for the exchanges that
/// run before the interface has an address.
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

impl PacketSocket {
    pub fn open(ns: &NsHandle, ifindex: u32) -> io::Result<Self> {
        let proto = (libc::ETH_P_IP as u16).to_be();
        let fd = ns.run(|| {
            // SAFETY: plain socket(2); the result is checked below.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: raw is a fresh descriptor we own.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })??;
        let filter = frame::client_port_filter();
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut _,
        };
        // SAFETY: prog points at `filter`, alive for the call.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const prog).cast(),
                size_of::<libc::sock_fprog>() as u32,
            )
        })?;
        let ifindex = i32::try_from(ifindex).map_err(|_| io::ErrorKind::InvalidInput)?;
        let addr = link_addr(proto, ifindex, [0; 6]);
        // SAFETY: addr is a valid sockaddr_ll of the given size.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        Ok(PacketSocket {
            // SAFETY: the OwnedFd stays open, the same descriptor, for as
            // long as the AsyncFd owns it.
            fd: unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?,
            ifindex,
        })
    }

    /// Send a DHCP payload from 0.0.0.0 to the link's broadcast address.
    pub async fn broadcast(&self, payload: &[u8]) -> io::Result<()> {
        self.send(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, payload)
            .await
    }

    /// Send a DHCP payload from `src` to `dst` in a link broadcast.
    pub async fn send(&self, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let packet = frame::frame(src, dst, payload);
        let to = link_addr((libc::ETH_P_IP as u16).to_be(), self.ifindex, [0xff; 6]);
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: packet and `to` are valid for the call.
                let n = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            })
            .await
    }

    /// The next DHCP payload addressed to the client port.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Vec<u8>> {
        loop {
            let n = self
                .fd
                .async_io(Interest::READABLE, |fd| {
                    // SAFETY: buf is valid for writes of its length.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
                .await?;
            if let Some(payload) = frame::unframe(&buf[..n]) {
                return Ok(payload.to_vec());
            }
        }
    }
}

fn link_addr(proto: u16, ifindex: i32, mac: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: proto,
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0; 8],
    };
    addr.sll_addr[..6].copy_from_slice(&mac);
    addr
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A UDP socket on the client port, tied to `ifname`, for renewing and
/// releasing a lease the interface already holds. Must be called from
/// inside the tokio runtime.
pub fn udp(ns: &NsHandle, ifname: &str) -> io::Result<tokio::net::UdpSocket> {
    let sock = ns.run(|| -> io::Result<UdpSocket> {
        let s = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(&s, sockopt::ReuseAddr, &true)?;
        setsockopt(&s, sockopt::Broadcast, &true)?;
        // Several interfaces of one container may renew at once, each on
        // port 68: the device binding keeps them apart.
        setsockopt(&s, sockopt::BindToDevice, &std::ffi::OsString::from(ifname))?;
        let any = nix::sys::socket::SockaddrIn::from(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            frame::CLIENT_PORT,
        ));
        nix::sys::socket::bind(s.as_raw_fd(), &any)?;
        Ok(UdpSocket::from(s))
    })??;
    tokio::net::UdpSocket::from_std(sock)
}
