//! What the kernel knows of this process's TCP connections, read without `unsafe`: the
//! sockets' inodes behind this process's file descriptors (`/proc/self/fd`), and each
//! established TCP socket's peer and data timestamps from the kernel's socket diagnostics
//! (netlink `NETLINK_SOCK_DIAG`, `INET_DIAG_INFO`: the `struct tcp_info` that `ss -i`
//! shows). The crate forbids `unsafe`, and `getsockopt(TCP_INFO)` has no safe wrapper in
//! our dependencies; the netlink dump is plain bytes over a socket, which rustix opens
//! safely.
//!
//! A leaf: it only reads, and names nothing else of the store.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;

use rustix::net::{recv, send, socket, AddressFamily, RecvFlags, SendFlags, SocketType};

/// One established TCP socket as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TcpSocket {
    pub(super) inode: u64,
    pub(super) peer: SocketAddr,
    /// Milliseconds since data was last sent on it (`tcpi_last_data_sent`).
    pub(super) sent_ago_ms: u32,
    /// Milliseconds since data was last received on it (`tcpi_last_data_recv`).
    pub(super) recv_ago_ms: u32,
}

/// The sockets among this process's file descriptors: each socket's inode and one
/// descriptor that holds it.
pub(super) fn own_sockets() -> HashMap<u64, RawFd> {
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if let Some(inode) = socket_inode(fd) {
            found.insert(inode, fd);
        }
    }
    found
}

/// The inode of the socket descriptor `fd` holds now, if it holds one.
pub(super) fn socket_inode(fd: RawFd) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let target = target.to_str()?;
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

// Netlink and inet_diag constants (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IPPROTO_TCP: u8 = 6;
const INET_DIAG_INFO: u16 = 2;
const TCP_ESTABLISHED: u32 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `struct nlmsghdr` and `struct inet_diag_msg`'s sizes; `tcp_info`'s offsets of
/// `tcpi_last_data_sent` and `tcpi_last_data_recv` (stable since Linux 2.6).
const NLMSG_HEADER: usize = 16;
const DIAG_MSG: usize = 72;
const LAST_DATA_SENT: usize = 44;
const LAST_DATA_RECV: usize = 52;

/// Every established TCP socket of this network namespace (both address families), or
/// the error that kept the kernel from saying.
pub(super) fn tcp_sockets() -> std::io::Result<Vec<TcpSocket>> {
    let mut sockets = Vec::new();
    for family in [AF_INET, AF_INET6] {
        dump(family, &mut sockets)?;
    }
    Ok(sockets)
}

/// The dump request: a netlink header and an `inet_diag_req_v2` asking for established
/// TCP sockets of `family` with their `tcp_info`.
fn request(family: u8) -> Vec<u8> {
    let mut message = Vec::with_capacity(NLMSG_HEADER + 56);
    message.extend_from_slice(&((NLMSG_HEADER + 56) as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    message.extend_from_slice(&[family, IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0]);
    message.extend_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
    message.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    message
}

fn dump(family: u8, sockets: &mut Vec<TcpSocket>) -> std::io::Result<()> {
    let netlink = socket(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        Some(rustix::net::netlink::SOCK_DIAG),
    )?;
    // The kernel answers at once; a bound keeps a surprise from holding the watch.
    rustix::net::sockopt::set_socket_timeout(
        &netlink,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(1)),
    )?;
    send(&netlink, &request(family), SendFlags::empty())?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let (received, _) = recv(&netlink, &mut buffer[..], RecvFlags::empty())?;
        if received == 0 {
            return Ok(());
        }
        if parse(&buffer[..received], sockets)? {
            return Ok(());
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one datagram of the dump into `sockets`; true once the dump is done.
fn parse(mut bytes: &[u8], sockets: &mut Vec<TcpSocket>) -> std::io::Result<bool> {
    let malformed = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a malformed sock_diag answer",
        )
    };
    while bytes.len() >= NLMSG_HEADER {
        let length = u32_at(bytes, 0).ok_or_else(malformed)? as usize;
        let kind = u16_at(bytes, 4).ok_or_else(malformed)?;
        if length < NLMSG_HEADER || length > bytes.len() {
            return Err(malformed());
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(bytes, NLMSG_HEADER).map_or(0, |c| c as i32);
                return Err(std::io::Error::from_raw_os_error(-code));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(socket) = diag_message(&bytes[NLMSG_HEADER..length]) {
                    sockets.push(socket);
                }
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let next = (length + 3) & !3;
        bytes = bytes.get(next..).unwrap_or(&[]);
    }
    Ok(false)
}

/// One `inet_diag_msg` and its attributes: the socket, if it came with its `tcp_info`.
fn diag_message(body: &[u8]) -> Option<TcpSocket> {
    if body.len() < DIAG_MSG {
        return None;
    }
    let family = body[0];
    // inet_diag_sockid at 4: sport, dport (big-endian), src[16], dst[16], if, cookie.
    let port = u16::from_be_bytes(body.get(6..8)?.try_into().ok()?);
    let dst: [u8; 16] = body.get(24..40)?.try_into().ok()?;
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(dst)),
        _ => return None,
    };
    let inode = u64::from(u32_at(body, 68)?);
    let mut attributes = &body[DIAG_MSG..];
    while attributes.len() >= 4 {
        let length = usize::from(u16_at(attributes, 0)?);
        let kind = u16_at(attributes, 2)?;
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == INET_DIAG_INFO {
            let info = &attributes[4..length];
            return Some(TcpSocket {
                inode,
                peer: SocketAddr::new(ip.to_canonical(), port),
                sent_ago_ms: u32_at(info, LAST_DATA_SENT)?,
                recv_ago_ms: u32_at(info, LAST_DATA_RECV)?,
            });
        }
        attributes = attributes.get((length + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// A connection of this process shows in the dump with its peer, and its
    /// descriptor's inode is the dump's; data sent after the last received shows as
    /// sent more recently.
    #[test]
    fn the_dump_finds_this_process_s_connection_and_its_timestamps() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(peer).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        client.write_all(b"a request").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let inode = socket_inode(client.as_raw_fd()).expect("a socket's inode");
        assert_eq!(own_sockets().get(&inode), Some(&client.as_raw_fd()));
        let found = tcp_sockets()
            .unwrap()
            .into_iter()
            .find(|s| s.inode == inode)
            .expect("the connection in the dump");
        assert_eq!(found.peer, peer);
        assert!(
            found.sent_ago_ms < found.recv_ago_ms,
            "sent {} ms ago, received {} ms ago",
            found.sent_ago_ms,
            found.recv_ago_ms
        );
    }
}
