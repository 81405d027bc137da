//! Just enough rtnetlink (RFC 3549 message framing, uapi `linux/if_link.h`
//! attributes) to create a veth pair, bring links up and attach, query and
//! detach an XDP program in native (driver) mode.
//!
//! The guest image has no iproute2 for the probe to call, and busybox's `ip`
//! can neither name a veth peer nor attach XDP, so the probe speaks netlink
//! itself.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use thiserror::Error;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLA_HDRLEN: usize = 4;

const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const VETH_INFO_PEER: u16 = 1;

/// `XDP_FLAGS_DRV_MODE`: attach in the driver, fail rather than fall back to
/// generic (skb) mode.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// How an XDP program is attached, from `IFLA_XDP_ATTACHED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    None,
    Driver,
    Generic,
    Offload,
    Multi,
    Unknown(u8),
}

impl From<u8> for XdpAttachMode {
    fn from(value: u8) -> Self {
        match value {
            0 => Self::None,
            1 => Self::Driver,
            2 => Self::Generic,
            3 => Self::Offload,
            4 => Self::Multi,
            other => Self::Unknown(other),
        }
    }
}

/// Errors from the netlink requests.
#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("opening a NETLINK_ROUTE socket failed: {0}")]
    Socket(#[source] io::Error),
    #[error("sending or receiving the {request} request failed: {source}")]
    Io {
        request: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel replied to the request with a negative errno.
    #[error("the kernel rejected the {request} request: {source}")]
    Rejected {
        request: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the reply to the {request} request is truncated or malformed")]
    Malformed { request: &'static str },
}

/// A request under construction: header, `ifinfomsg`, then attributes.
struct Request {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Request {
    fn new(msg_type: u16, flags: u16, ifindex: i32, ifi_flags: u32, ifi_change: u32) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes());
        let mut request = Self {
            buf,
            nests: Vec::new(),
        };
        request.put_ifinfomsg(ifindex, ifi_flags, ifi_change);
        request
    }

    fn put_ifinfomsg(&mut self, ifindex: i32, ifi_flags: u32, ifi_change: u32) {
        // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32,
        // change u32.
        let start = self.buf.len();
        self.buf.resize(start + IFINFOMSG_LEN, 0);
        self.buf[start] = libc::AF_UNSPEC as u8;
        self.buf[start + 4..start + 8].copy_from_slice(&ifindex.to_ne_bytes());
        self.buf[start + 8..start + 12].copy_from_slice(&ifi_flags.to_ne_bytes());
        self.buf[start + 12..start + 16].copy_from_slice(&ifi_change.to_ne_bytes());
    }

    fn put_attr(&mut self, kind: u16, payload: &[u8]) {
        let len = (NLA_HDRLEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn put_str(&mut self, kind: u16, value: &str) {
        let mut payload = value.as_bytes().to_vec();
        payload.push(0);
        self.put_attr(kind, &payload);
    }

    fn begin_nest(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | libc::NLA_F_NESTED as u16).to_ne_bytes());
    }

    fn end_nest(&mut self) {
        let start = self.nests.pop().expect("end_nest without begin_nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unclosed netlink attribute nest");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace.
pub struct Route {
    fd: OwnedFd,
}

impl Route {
    pub fn open() -> Result<Self, NetlinkError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Creates the veth pair `name` / `peer` in the current namespace.
    pub fn create_veth(&self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        let flags = (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut request = Request::new(libc::RTM_NEWLINK, flags, 0, 0, 0);
        request.put_str(libc::IFLA_IFNAME, name);
        request.begin_nest(libc::IFLA_LINKINFO);
        request.put_str(libc::IFLA_INFO_KIND, "veth");
        request.begin_nest(libc::IFLA_INFO_DATA);
        request.begin_nest(VETH_INFO_PEER);
        request.put_ifinfomsg(0, 0, 0);
        request.put_str(libc::IFLA_IFNAME, peer);
        request.end_nest();
        request.end_nest();
        request.end_nest();
        self.exchange("create veth", request.finish()).map(drop)
    }

    /// Sets `IFF_UP` on the link with index `ifindex`.
    pub fn set_up(&self, ifindex: i32) -> Result<(), NetlinkError> {
        let up = libc::IFF_UP as u32;
        let request = Request::new(libc::RTM_NEWLINK, libc::NLM_F_ACK as u16, ifindex, up, up);
        self.exchange("link up", request.finish()).map(drop)
    }

    /// Attaches `prog_fd` to the link in native mode, or detaches the native
    /// program when `prog_fd` is -1.
    pub fn set_xdp_native(&self, ifindex: i32, prog_fd: i32) -> Result<(), NetlinkError> {
        let mut request = Request::new(libc::RTM_SETLINK, libc::NLM_F_ACK as u16, ifindex, 0, 0);
        request.begin_nest(libc::IFLA_XDP);
        request.put_attr(IFLA_XDP_FD, &prog_fd.to_ne_bytes());
        request.put_attr(IFLA_XDP_FLAGS, &XDP_FLAGS_DRV_MODE.to_ne_bytes());
        request.end_nest();
        self.exchange("attach xdp", request.finish()).map(drop)
    }

    /// Returns how an XDP program is attached to the link, and its id.
    pub fn xdp_state(&self, ifindex: i32) -> Result<(XdpAttachMode, Option<u32>), NetlinkError> {
        const REQUEST: &str = "get link";
        let request = Request::new(libc::RTM_GETLINK, 0, ifindex, 0, 0);
        let reply = self.exchange(REQUEST, request.finish())?;

        let attrs = reply
            .get(NLMSG_HDRLEN + IFINFOMSG_LEN..)
            .ok_or(NetlinkError::Malformed { request: REQUEST })?;
        let Some(xdp) = find_attr(attrs, libc::IFLA_XDP) else {
            return Ok((XdpAttachMode::None, None));
        };
        let mode = find_attr(xdp, IFLA_XDP_ATTACHED)
            .and_then(|value| value.first().copied())
            .map_or(XdpAttachMode::None, XdpAttachMode::from);
        let prog_id = find_attr(xdp, IFLA_XDP_PROG_ID)
            .and_then(|value| value.get(..4))
            .map(|bytes| u32::from_ne_bytes(bytes.try_into().expect("4-byte slice")));
        Ok((mode, prog_id))
    }

    /// Sends one request and returns the first reply that is not an ack.
    /// An error reply becomes [`NetlinkError::Rejected`].
    fn exchange(&self, request: &'static str, message: Vec<u8>) -> Result<Vec<u8>, NetlinkError> {
        let io_error = |source| NetlinkError::Io { request, source };

        // SAFETY: `message` is a valid buffer of the given length; the kernel
        // address is the zeroed default of `sockaddr_nl`.
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io_error(io::Error::last_os_error()));
        }

        let mut buf = vec![0u8; 32 * 1024];
        // SAFETY: `buf` is writable for its whole length.
        let received =
            unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if received < 0 {
            return Err(io_error(io::Error::last_os_error()));
        }
        buf.truncate(received as usize);

        let malformed = NetlinkError::Malformed { request };
        let header = buf.get(..NLMSG_HDRLEN).ok_or(malformed)?;
        let msg_type = u16::from_ne_bytes([header[4], header[5]]);
        if msg_type == libc::NLMSG_ERROR as u16 {
            let errno = buf
                .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                .map(|bytes| i32::from_ne_bytes(bytes.try_into().expect("4-byte slice")))
                .ok_or(NetlinkError::Malformed { request })?;
            if errno != 0 {
                let source = io::Error::from_raw_os_error(-errno);
                return Err(NetlinkError::Rejected { request, source });
            }
        }
        Ok(buf)
    }
}

/// Finds attribute `kind` in a run of netlink attributes, ignoring the
/// nested flag, and returns its payload.
fn find_attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= NLA_HDRLEN {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let this_kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & !(libc::NLA_F_NESTED as u16);
        if len < NLA_HDRLEN || len > attrs.len() {
            return None;
        }
        if this_kind == kind {
            return Some(&attrs[NLA_HDRLEN..len]);
        }
        let aligned = (len + 3) & !3;
        attrs = attrs.get(aligned..)?;
    }
    None
}

/// Returns the index of the link named `name` in the current namespace.
pub fn ifindex(name: &str) -> io::Result<i32> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index as i32)
    }
}

/// Moves the calling thread into a new, empty network namespace.
pub fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's
    // namespace; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
