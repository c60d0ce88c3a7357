//! The I/O side of a restart without dropping clients: the handoff socket,
//! its messages, and passing descriptors (`SCM_RIGHTS`) between an old and
//! a new funnel process. The engine's side (client images, adoption) is in
//! `handoff.rs`.
//!
//! Every funnel listens on its handoff socket (`[funnel] handoff_socket`;
//! by default an abstract socket named after its first client address, so
//! two funnels started with one configuration meet there). The operator
//! starts a second funnel with the same configuration, then sends the
//! first SIGTERM:
//!
//! 1. The new one, before binding anything, connects to the handoff socket
//!    (`Hello`, purpose takeover); the old one answers `Welcome`: its pid,
//!    configuration, next connection id, and its listening sockets
//!    themselves (client TCP ports and unix socket), as descriptors.
//! 2. The new one binds its admin and stats ports beside the old one's
//!    (SO_REUSEPORT: those are shared until the old one exits), uses the
//!    received listening sockets where its configuration names the same
//!    addresses (the same sockets: not one connection waiting in their
//!    queues is lost, unlike closing one of two SO_REUSEPORT sockets; and
//!    the client ports need no SO_REUSEPORT, so nothing else can bind
//!    beside them), binds the others, then says `Takeover`.
//! 3. The old one stops accepting (closes its copies of the listeners, and
//!    its handoff socket) and answers `Stopped` with its next connection id;
//!    the new one continues from there (ids stay unique) and binds the
//!    handoff socket itself: it is the one a later funnel meets.
//! 4. On SIGTERM the old one connects to the handoff socket (`Hello`,
//!    purpose hand-off), and once `Welcome` came back sends each client it
//!    can hand over (`Client`: the engine's image, with the client's socket
//!    as a descriptor); the new one adopts them as they come.
//!
//! Only a peer of the same OS user (`SO_PEERCRED`) is answered or given
//! anything, so no other local user can obtain the funnel's clients.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener as StdUnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::Interest;
use slab::Slab;

use super::action::ConnId;
use super::event_loop::{token, EventLoop, Listener, Owner, KIND_HANDOFF};
use super::handoff::{Reader, WireError, Writer, IMAGE_VERSION, MAX_IMAGE_BYTES};
use super::io::Stream;
use crate::config::HandoffSocket;

/// The version both sides must speak: of these messages (high byte) and of
/// the client image (`handoff::IMAGE_VERSION`, low byte), so that a change
/// to either is refused at the greeting, not client by client.
pub const PROTOCOL_VERSION: u16 = (1 << 8) | IMAGE_VERSION as u16;
const MAGIC: &[u8; 14] = b"funnel-handoff";
/// Largest message: a client image with many prepared statements (the
/// engine hands over none bigger than `MAX_IMAGE_BYTES`), or a welcome.
const MAX_FRAME: usize = MAX_IMAGE_BYTES + (1 << 20);
/// Descriptors one message may carry (listeners; one per client).
const MAX_FDS_PER_MESSAGE: usize = 64;
/// How long a starting funnel waits for each answer of the old one.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an old funnel that shuts down waits for the new one's welcome
/// before it closes its clients instead.
const HEIR_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a funnel whose listeners were taken over keeps trying to reach
/// its successor's handoff socket at SIGTERM (bound right after the takeover).
const HEIR_BIND_WAIT: Duration = Duration::from_secs(2);
/// Its poll timeout meanwhile: the next try.
pub(super) const HEIR_RETRY_EVERY: Duration = Duration::from_millis(10);
/// How long an exiting funnel may take to send what it queued for the new one.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A starting funnel asks for the listeners.
    Takeover = 1,
    /// A stopping funnel hands its clients over.
    HandOff = 2,
}

/// A listening socket, as a `Welcome` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListenerInfo {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What the two funnels say to each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Msg {
    Hello {
        version: u16,
        pid: u32,
        purpose: Purpose,
    },
    /// With one descriptor per listener (purpose takeover).
    Welcome {
        version: u16,
        pid: u32,
        /// Its configuration file, and its effective settings (secrets
        /// masked), so that a difference is logged.
        config: String,
        described: String,
        next_id: u32,
        listeners: Vec<ListenerInfo>,
    },
    Takeover,
    Stopped {
        next_id: u32,
    },
    /// With the client's socket.
    Client {
        image: Vec<u8>,
    },
}

impl Msg {
    /// The message framed: a 4-byte length, then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(0);
        match self {
            Msg::Hello {
                version,
                pid,
                purpose,
            } => {
                w.u8(b'H');
                w.0.extend_from_slice(MAGIC);
                w.u16(*version);
                w.u32(*pid);
                w.u8(*purpose as u8);
            }
            Msg::Welcome {
                version,
                pid,
                config,
                described,
                next_id,
                listeners,
            } => {
                w.u8(b'W');
                w.u16(*version);
                w.u32(*pid);
                w.str(config);
                w.str(described);
                w.u32(*next_id);
                w.u32(listeners.len() as u32);
                for l in listeners {
                    match l {
                        ListenerInfo::Tcp(a) => {
                            w.u8(0);
                            w.str(&a.to_string());
                        }
                        ListenerInfo::Unix(p) => {
                            w.u8(1);
                            w.bytes(p.as_os_str().as_encoded_bytes());
                        }
                    }
                }
            }
            Msg::Takeover => w.u8(b'T'),
            Msg::Stopped { next_id } => {
                w.u8(b'S');
                w.u32(*next_id);
            }
            Msg::Client { image } => {
                w.u8(b'C');
                w.bytes(image);
            }
        }
        let len = (w.0.len() - 4) as u32;
        w.0[..4].copy_from_slice(&len.to_le_bytes());
        w.0
    }

    /// A payload (without its length); malformed input is an error.
    pub fn decode(payload: &[u8]) -> Result<Msg, WireError> {
        let mut r = Reader::new(payload);
        let msg = match r.u8()? {
            b'H' => {
                for &m in MAGIC {
                    if r.u8()? != m {
                        return Err(WireError("not a funnel handoff"));
                    }
                }
                let version = r.u16()?;
                let pid = r.u32()?;
                let purpose = match r.u8()? {
                    1 => Purpose::Takeover,
                    2 => Purpose::HandOff,
                    _ => return Err(WireError("unknown purpose")),
                };
                Msg::Hello {
                    version,
                    pid,
                    purpose,
                }
            }
            b'W' => {
                let version = r.u16()?;
                let pid = r.u32()?;
                let config = r.string()?;
                let described = r.string()?;
                let next_id = r.u32()?;
                let n = r.count(5)?;
                let mut listeners = Vec::with_capacity(n);
                for _ in 0..n {
                    listeners.push(match r.u8()? {
                        0 => ListenerInfo::Tcp(
                            r.string()?
                                .parse()
                                .map_err(|_| WireError("bad listen address"))?,
                        ),
                        1 => {
                            use std::os::unix::ffi::OsStrExt;
                            ListenerInfo::Unix(PathBuf::from(std::ffi::OsStr::from_bytes(
                                r.bytes()?,
                            )))
                        }
                        _ => return Err(WireError("unknown listener kind")),
                    });
                }
                Msg::Welcome {
                    version,
                    pid,
                    config,
                    described,
                    next_id,
                    listeners,
                }
            }
            b'T' => Msg::Takeover,
            b'S' => Msg::Stopped { next_id: r.u32()? },
            b'C' => Msg::Client {
                image: r.bytes()?.to_vec(),
            },
            _ => return Err(WireError("unknown message")),
        };
        if !r.is_empty() {
            return Err(WireError("trailing bytes"));
        }
        Ok(msg)
    }

    /// Split the first whole message off `buf`: the message and the bytes
    /// it took, None when incomplete.
    pub fn parse(buf: &[u8]) -> Result<Option<(Msg, usize)>, WireError> {
        let Some(len) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(WireError("bad message length"));
        }
        let Some(payload) = buf.get(4..4 + len) else {
            return Ok(None);
        };
        Ok(Some((Msg::decode(payload)?, 4 + len)))
    }
}

/// `sendmsg` of `data` with `fds` attached (`SCM_RIGHTS`); the bytes sent.
fn send_with_fds(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let payload = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    // u64 words: the control buffer must be aligned for a cmsghdr.
    let mut control = vec![0u64; if fds.is_empty() { 0 } else { space.div_ceil(8) }];
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(payload) bytes, so
        // the first header and its data fit; fds are plain integers.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload,
            );
        }
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recvmsg` into `buf`; descriptors that came with the bytes are appended
/// to `fds` (close-on-exec). 0: the peer closed.
fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as in send_with_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let payload = MAX_FDS_PER_MESSAGE * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled msg_control with well-formed headers within
    // msg_controllen; each SCM_RIGHTS payload is an array of new fds, now
    // ours to close.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(
                        data.add(i * std::mem::size_of::<RawFd>()).cast::<RawFd>(),
                    );
                    fds.push_back(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were lost (control data truncated)",
        ));
    }
    Ok(n as usize)
}

/// The peer's pid when it runs as this process's own user; an error
/// otherwise.
fn same_user_peer(fd: &impl AsFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into cred.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if cred.uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "its peer (pid {}) runs as uid {}, not as this funnel's uid {me}",
                cred.pid, cred.uid
            ),
        ));
    }
    Ok(cred.pid as u32)
}

fn unix_addr(h: &HandoffSocket) -> io::Result<UnixAddr> {
    match h {
        HandoffSocket::Path(p) => UnixAddr::from_pathname(p),
        HandoffSocket::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(name.as_bytes())
        }
    }
}

/// (device, inode) of a file, to tell later whether a path is still ours.
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Remove a socket file if it is still the one this process created (a
/// newer funnel may have replaced it).
pub(crate) fn remove_if_ours(path: &Path, id: Option<(u64, u64)>) {
    if id.is_some() && file_id(path) == id {
        let _ = std::fs::remove_file(path);
    }
}

/// One whole message from a blocking stream (with its descriptors), within
/// `deadline`.
fn read_msg_blocking(
    stream: &mut UnixStream,
    inbuf: &mut Vec<u8>,
    fds: &mut VecDeque<OwnedFd>,
    deadline: Instant,
) -> Result<Msg, String> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match Msg::parse(inbuf) {
            Ok(Some((msg, n))) => {
                inbuf.drain(..n);
                return Ok(msg);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("malformed message ({})", e.0)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no answer in time".into());
        }
        let _ = stream.set_read_timeout(Some(left));
        match recv_with_fds(stream.as_raw_fd(), &mut chunk, fds) {
            Ok(0) => return Err("it closed the connection".into()),
            Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err("no answer in time".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A running funnel that answered a starting one on the handoff socket:
/// its listeners are ours to use once [`Predecessor::take_over`] is done.
pub(crate) struct Predecessor {
    stream: UnixStream,
    pub pid: u32,
    pub config: String,
    pub described: String,
    pub next_id: u32,
    /// Its listening sockets, not yet taken (see `EventLoop::inherited`).
    pub listeners: Vec<(ListenerInfo, OwnedFd)>,
}

/// At start-up, before binding anything: greet the funnel that owns the
/// handoff socket, if one does (None when nobody listens there).
pub(crate) fn greet_predecessor(h: &HandoffSocket) -> Result<Option<Predecessor>, String> {
    let addr = unix_addr(h).map_err(|e| format!("handoff_socket {h}: {e}"))?;
    let mut stream = match UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            warn!("handoff socket {h}: cannot connect ({e}); starting without taking over from a running funnel");
            return Ok(None);
        }
    };
    if let Err(e) = same_user_peer(&stream) {
        warn!("handoff socket {h}: ignored: {e}");
        return Ok(None);
    }
    let deadline = Instant::now() + GREETING_TIMEOUT;
    let _ = stream.set_write_timeout(Some(GREETING_TIMEOUT));
    let hello = Msg::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
        purpose: Purpose::Takeover,
    };
    if let Err(e) = send_all(&stream, &hello.encode(), &[]) {
        warn!("handoff socket {h}: {e}; starting without taking over");
        return Ok(None);
    }
    let mut inbuf = Vec::new();
    let mut fds = VecDeque::new();
    match read_msg_blocking(&mut stream, &mut inbuf, &mut fds, deadline) {
        Ok(Msg::Welcome {
            version: PROTOCOL_VERSION,
            pid,
            config,
            described,
            next_id,
            listeners,
        }) if listeners.len() == fds.len() => Ok(Some(Predecessor {
            stream,
            pid,
            config,
            described,
            next_id,
            listeners: listeners.into_iter().zip(fds).collect(),
        })),
        Ok(Msg::Welcome { version, .. }) if version != PROTOCOL_VERSION => Err(format!(
            "the funnel on handoff socket {h} speaks handoff protocol {version}, this one {PROTOCOL_VERSION}: stop it first, or use another handoff_socket"
        )),
        Ok(other) => Err(format!(
            "handoff socket {h}: unexpected answer {other:?}"
        )),
        Err(e) => Err(format!(
            "the funnel on handoff socket {h} did not welcome this one: {e}"
        )),
    }
}

impl Predecessor {
    /// Everything is bound: the predecessor stops accepting, and says where
    /// its connection ids ended.
    pub fn take_over(mut self) -> Result<u32, String> {
        send_all(&self.stream, &Msg::Takeover.encode(), &[])?;
        let deadline = Instant::now() + GREETING_TIMEOUT;
        let mut inbuf = Vec::new();
        let mut fds = VecDeque::new();
        match read_msg_blocking(&mut self.stream, &mut inbuf, &mut fds, deadline)? {
            Msg::Stopped { next_id } => Ok(next_id),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

/// Blocking send of a whole message (the descriptors with its first bytes).
fn send_all(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> Result<(), String> {
    let mut sent = 0;
    while sent < data.len() {
        let with = if sent == 0 { fds } else { &[] };
        match send_with_fds(stream.as_raw_fd(), &data[sent..], with) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The handoff socket this process listens on.
pub(crate) struct HandoffListener {
    pub listener: UnixListener,
    /// Its file's identity (a path, not an abstract name), to remove it at
    /// exit only while it is still ours.
    file: Option<(PathBuf, Option<(u64, u64)>)>,
}

impl HandoffListener {
    pub fn bind(h: &HandoffSocket) -> io::Result<HandoffListener> {
        if let HandoffSocket::Path(p) = h {
            // The newest funnel owns the path: a previous one's socket (it
            // has handed over, or it is gone) is replaced.
            if std::fs::symlink_metadata(p).is_ok() {
                std::fs::remove_file(p)?;
            }
        }
        // Owner-only: only this user's processes may connect (and the peer
        // is checked anyway).
        // SAFETY: umask only swaps the process's file mode mask.
        let old_mask = unsafe { libc::umask(0o177) };
        let bound = StdUnixListener::bind_addr(&unix_addr(h)?);
        unsafe { libc::umask(old_mask) };
        let l = bound?;
        l.set_nonblocking(true)?;
        let file = match h {
            HandoffSocket::Path(p) => Some((p.clone(), file_id(p))),
            HandoffSocket::Abstract(_) => None,
        };
        Ok(HandoffListener {
            listener: UnixListener::from_std(l),
            file,
        })
    }

    /// Remove its file, unless a newer funnel has replaced it.
    pub fn remove_file(&self) {
        if let Some((path, id)) = &self.file {
            remove_if_ours(path, *id);
        }
    }
}

/// What a connection on the handoff socket is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Accepted; its `Hello` says.
    AwaitHello,
    /// A starting funnel we welcomed; it will say `Takeover`.
    Successor,
    /// A stopping funnel handing its clients to us.
    Predecessor,
    /// Ours, to the funnel that took over from us: awaiting its `Welcome`
    /// (`ready` false), then carrying our clients to it.
    Heir { ready: bool },
}

/// Bytes queued for a link, with descriptors to send with their first byte.
struct Out {
    bytes: Vec<u8>,
    pos: usize,
    fds: Vec<OwnedFd>,
}

/// A connection on the handoff socket, non-blocking, in the event loop.
pub(crate) struct Link {
    pub stream: mio::net::UnixStream,
    pub role: Role,
    pub peer_pid: u32,
    inbuf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    out: VecDeque<Out>,
}

impl Link {
    fn new(stream: mio::net::UnixStream, role: Role, peer_pid: u32) -> Link {
        Link {
            stream,
            role,
            peer_pid,
            inbuf: Vec::new(),
            fds: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    fn queue(&mut self, msg: &Msg, fds: Vec<OwnedFd>) {
        self.out.push_back(Out {
            bytes: msg.encode(),
            pos: 0,
            fds,
        });
    }

    /// Send what is queued, as far as the socket takes it.
    fn flush(&mut self) -> io::Result<()> {
        while let Some(o) = self.out.front_mut() {
            let raw: Vec<RawFd> = o.fds.iter().map(|f| f.as_raw_fd()).collect();
            match send_with_fds(self.stream.as_raw_fd(), &o.bytes[o.pos..], &raw) {
                Ok(n) => {
                    // The descriptors went with the first byte; ours close.
                    o.fds.clear();
                    o.pos += n;
                    if o.pos == o.bytes.len() {
                        self.out.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read what is there (until WouldBlock). True: the peer closed.
    fn read(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match recv_with_fds(self.stream.as_raw_fd(), &mut chunk, &mut self.fds) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    if self.inbuf.len() > MAX_FRAME + 4 {
                        return Err(io::Error::other("message too long"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn next_msg(&mut self) -> Result<Option<Msg>, String> {
        match Msg::parse(&self.inbuf) {
            Ok(Some((msg, n))) => {
                self.inbuf.drain(..n);
                Ok(Some(msg))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("malformed message ({})", e.0)),
        }
    }
}

/// The event loop's handoff state.
#[derive(Default)]
pub(crate) struct HandoffState {
    /// Where (None: handoff off, or the simulation).
    pub addr: Option<HandoffSocket>,
    pub listener: Option<HandoffListener>,
    pub links: Slab<Link>,
    /// The funnel we are taking over from, between greeting and takeover.
    pub predecessor: Option<Predecessor>,
    /// Its listening sockets, until `bind_listeners` takes them.
    pub inherited: Vec<(ListenerInfo, OwnedFd)>,
    /// A successor took our listeners: our unix socket file is its now.
    pub listeners_given_away: bool,
    /// The identity of our unix socket's file, to remove it at exit only
    /// while it is ours.
    pub unix_file_id: Option<(u64, u64)>,
    /// The shutdown's attempt to reach a successor was made.
    pub heir_tried: bool,
    /// A successor took over but its handoff socket did not answer yet
    /// (it binds it right after the takeover): tried again until then.
    pub heir_retry_until: Option<Instant>,
}

impl HandoffState {
    /// A received listening socket for `info`, if the predecessor had one.
    pub fn take_inherited(&mut self, info: &ListenerInfo) -> Option<OwnedFd> {
        let i = self.inherited.iter().position(|(l, _)| l == info)?;
        Some(self.inherited.swap_remove(i).1)
    }
}

/// A TCP listener from a received descriptor.
pub(crate) fn tcp_listener(fd: OwnedFd) -> io::Result<TcpListener> {
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)?;
    Ok(TcpListener::from_std(l))
}

/// A unix listener from a received descriptor.
pub(crate) fn unix_listener(fd: OwnedFd) -> io::Result<UnixListener> {
    let l = StdUnixListener::from(fd);
    l.set_nonblocking(true)?;
    Ok(UnixListener::from_std(l))
}

/// Whether something listens on `addr` already (a probe bind without
/// SO_REUSEPORT fails then).
fn in_use(addr: SocketAddr) -> bool {
    use socket2::{Domain, Socket, Type};
    if addr.port() == 0 {
        return false;
    }
    let Ok(s) = Socket::new(Domain::for_address(addr), Type::STREAM, None) else {
        return false;
    };
    let _ = s.set_reuse_address(true);
    matches!(s.bind(&addr.into()), Err(e) if e.kind() == io::ErrorKind::AddrInUse)
}

/// The lines of `theirs` and `ours` that differ, as `- theirs` / `+ ours`.
fn config_differences(theirs: &str, ours: &str) -> Vec<String> {
    let t: Vec<&str> = theirs.lines().collect();
    let o: Vec<&str> = ours.lines().collect();
    let mut out: Vec<String> = t
        .iter()
        .filter(|l| !o.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        o.iter()
            .filter(|l| !t.contains(l))
            .map(|l| format!("+ {l}")),
    );
    out
}

fn stream_from_fd(fd: OwnedFd) -> io::Result<Stream> {
    let domain = socket2::SockRef::from(&fd).domain()?;
    if domain == socket2::Domain::UNIX {
        let s = UnixStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(Stream::Unix(mio::net::UnixStream::from_std(s)))
    } else {
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(Stream::Tcp(mio::net::TcpStream::from_std(s)))
    }
}

fn stream_into_fd(stream: Stream) -> OwnedFd {
    match stream {
        Stream::Tcp(s) => OwnedFd::from(s),
        Stream::Unix(s) => OwnedFd::from(s),
    }
}

impl EventLoop {
    /// At start-up, before anything is bound: meet the funnel that listens
    /// on the handoff socket, if one does, and say so.
    pub(crate) fn greet_predecessor(&mut self) -> Result<(), String> {
        self.handoff.addr = self.engine.config.handoff_socket.clone();
        let Some(addr) = self.handoff.addr.clone() else {
            return Ok(());
        };
        let Some(mut p) = greet_predecessor(&addr)? else {
            return Ok(());
        };
        info!(
            "another funnel (pid {}, {}) answers on handoff socket {addr}: taking over its listeners; send it SIGTERM (kill -TERM {}) to hand its clients over to this one",
            p.pid, p.config, p.pid
        );
        let ours = &self.engine.full_config;
        let diff = config_differences(&p.described, &ours.describe());
        if !diff.is_empty() {
            warn!(
                "this funnel's configuration ({}) differs from that of pid {} ({}) in {} line(s) (- theirs, + ours):{}",
                ours.source,
                p.pid,
                p.config,
                diff.len(),
                diff.iter()
                    .take(16)
                    .map(|l| format!("\n  {l}"))
                    .collect::<String>()
            );
        } else if p.config != ours.source {
            info!(
                "this funnel's configuration file {} has the same settings as pid {}'s {}",
                ours.source, p.pid, p.config
            );
        }
        self.handoff.inherited = std::mem::take(&mut p.listeners);
        self.handoff.predecessor = Some(p);
        Ok(())
    }

    /// Before binding: every address must be free, or (with a predecessor)
    /// be one whose socket it gave us or that it shares until it exits. A
    /// second funnel with another handoff socket (another configuration)
    /// on the same ports is refused, not silently sharing them.
    pub(crate) fn check_ports(&self) -> Result<(), String> {
        let config = &self.engine.config;
        let mut addrs: Vec<(SocketAddr, &str)> = config
            .listen
            .iter()
            .filter(|a| {
                !self
                    .handoff
                    .inherited
                    .iter()
                    .any(|(l, _)| *l == ListenerInfo::Tcp(**a))
            })
            .map(|a| (*a, "clients"))
            .collect();
        addrs.extend(config.admin.as_ref().map(|a| (a.listen, "admin console")));
        addrs.extend(config.stats.as_ref().map(|s| (s.listen, "stats")));
        for (addr, what) in addrs {
            if !in_use(addr) {
                continue;
            }
            match &self.handoff.predecessor {
                Some(p) => info!(
                    "{addr} ({what}): shared with funnel pid {} (SO_REUSEPORT) until it exits",
                    p.pid
                ),
                None => {
                    let via = match &config.handoff_socket {
                        Some(h) => format!("its handoff socket is {h}, where nobody answered"),
                        None => "handoff_socket is off".to_string(),
                    };
                    return Err(format!(
                        "cannot listen on {addr} ({what}): another process listens there; a funnel takes over only from the funnel answering on its handoff_socket ({via}): give both the same handoff_socket, or stop the other first"
                    ));
                }
            }
        }
        Ok(())
    }

    /// After the listeners are bound: the predecessor stops accepting and
    /// our connection ids go on from its; then this funnel listens on the
    /// handoff socket itself.
    pub(crate) fn complete_takeover(&mut self) {
        for (info, _) in std::mem::take(&mut self.handoff.inherited) {
            match info {
                ListenerInfo::Tcp(a) => {
                    info!("{a}: the previous funnel listened there, this configuration does not: closed")
                }
                ListenerInfo::Unix(p) => {
                    info!(
                        "{}: the previous funnel's unix socket, not in this configuration: removed",
                        p.display()
                    );
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        if let Some(p) = self.handoff.predecessor.take() {
            let (pid, next) = (p.pid, p.next_id);
            match p.take_over() {
                Ok(next_id) => {
                    self.engine.continue_connection_ids(next_id);
                    info!("funnel pid {pid} stopped accepting: this one serves new clients (connection ids from {next_id} on)");
                }
                Err(e) => {
                    // It may go on accepting: keep well clear of its ids.
                    let from = next.wrapping_add(1 << 20);
                    self.engine.continue_connection_ids(from);
                    warn!("funnel pid {pid} did not confirm the takeover ({e}); both may accept clients until it stops (connection ids here from {from} on)");
                }
            }
        }
        let Some(addr) = self.handoff.addr.clone() else {
            return;
        };
        match HandoffListener::bind(&addr) {
            Ok(mut l) => {
                let t = token(KIND_HANDOFF, 0);
                if let Err(e) = self
                    .poll
                    .registry()
                    .register(&mut l.listener, t, Interest::READABLE)
                {
                    warn!("handoff socket {addr}: cannot register it: {e}");
                    return;
                }
                info!("handoff socket {addr}: a funnel started with this configuration takes over from this one there");
                self.handoff.listener = Some(l);
            }
            Err(e) => warn!(
                "cannot listen on handoff socket {addr} ({e}): a funnel started later cannot take over from this one, and clients will not be handed over"
            ),
        }
    }

    /// A readiness event on the handoff socket (key 0) or one of its links.
    pub(crate) fn handoff_event(&mut self, key: usize) {
        if key == 0 {
            self.accept_links();
        } else {
            self.link_event(key - 1);
        }
    }

    fn accept_links(&mut self) {
        loop {
            let Some(l) = self.handoff.listener.as_ref() else {
                return;
            };
            let (mut stream, _) = match l.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("handoff socket: accept failed: {e}");
                    return;
                }
            };
            let pid = match same_user_peer(&stream) {
                Ok(pid) => pid,
                Err(e) => {
                    warn!("handoff socket: connection refused: {e}");
                    continue;
                }
            };
            let entry = self.handoff.links.vacant_entry();
            let t = token(KIND_HANDOFF, entry.key() + 1);
            if self
                .poll
                .registry()
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(Link::new(stream, Role::AwaitHello, pid));
        }
    }

    fn close_link(&mut self, k: usize, why: &str) {
        let Some(mut link) = self.handoff.links.try_remove(k) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut link.stream);
        match link.role {
            Role::Heir { .. } => {
                warn!(
                    "the connection to funnel pid {} that was taking our clients ended ({why}): the rest are closed between their commands",
                    link.peer_pid
                );
                self.engine.successor_gone();
            }
            Role::Predecessor => info!(
                "funnel pid {} finished handing its clients over ({why})",
                link.peer_pid
            ),
            Role::AwaitHello | Role::Successor => {
                debug!("handoff link of pid {} closed: {why}", link.peer_pid)
            }
        }
    }

    fn flush_link(&mut self, k: usize) {
        let Some(link) = self.handoff.links.get_mut(k) else {
            return;
        };
        match link.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.close_link(k, &format!("send failed: {e}")),
        }
    }

    fn link_event(&mut self, k: usize) {
        self.flush_link(k);
        let Some(link) = self.handoff.links.get_mut(k) else {
            return;
        };
        let closed = match link.read() {
            Ok(closed) => closed,
            Err(e) => {
                self.close_link(k, &e.to_string());
                return;
            }
        };
        loop {
            let Some(link) = self.handoff.links.get_mut(k) else {
                return;
            };
            let msg = match link.next_msg() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    self.close_link(k, &e);
                    return;
                }
            };
            if let Err(e) = self.link_message(k, msg) {
                self.close_link(k, &e);
                return;
            }
        }
        self.flush_link(k);
        if closed {
            self.close_link(k, "closed by the other funnel");
        }
    }

    fn link_message(&mut self, k: usize, msg: Msg) -> Result<(), String> {
        let link = &mut self.handoff.links[k];
        let pid = link.peer_pid;
        match (link.role, msg) {
            (
                Role::AwaitHello,
                Msg::Hello {
                    version, purpose, ..
                },
            ) => {
                if version != PROTOCOL_VERSION {
                    return Err(format!(
                        "pid {pid} speaks handoff protocol {version}, this one {PROTOCOL_VERSION}"
                    ));
                }
                match purpose {
                    // One successor only: a second would continue the same
                    // connection ids.
                    Purpose::Takeover if self.handoff.listeners_given_away => {
                        Err("another funnel took over from this one already".into())
                    }
                    Purpose::Takeover => self.welcome_successor(k),
                    Purpose::HandOff => {
                        if self.engine.is_shutting_down() {
                            return Err("this funnel is shutting down itself".into());
                        }
                        info!("funnel pid {pid} is handing its clients over to this one");
                        let welcome = self.welcome(Vec::new());
                        let link = &mut self.handoff.links[k];
                        link.role = Role::Predecessor;
                        link.queue(&welcome, Vec::new());
                        Ok(())
                    }
                }
            }
            (Role::Successor, Msg::Takeover) => {
                if self.handoff.listeners_given_away {
                    return Err("another funnel took over from this one already".into());
                }
                self.give_listeners_away(pid);
                let next_id = self.engine.next_connection_id();
                self.handoff.links[k].queue(&Msg::Stopped { next_id }, Vec::new());
                Ok(())
            }
            (Role::Predecessor, Msg::Client { image }) => {
                let Some(fd) = self.handoff.links[k].fds.pop_front() else {
                    return Err("a client came without its socket".into());
                };
                self.adopt(fd, &image, pid);
                Ok(())
            }
            (Role::Heir { ready: false }, Msg::Welcome { version, .. }) => {
                if version != PROTOCOL_VERSION {
                    return Err(format!("pid {pid} speaks handoff protocol {version}"));
                }
                self.handoff.links[k].role = Role::Heir { ready: true };
                info!("funnel pid {pid} is ready: handing clients over between their commands");
                self.engine.successor_ready();
                Ok(())
            }
            (role, msg) => Err(format!("unexpected {msg:?} as {role:?}")),
        }
    }

    fn welcome(&self, listeners: Vec<ListenerInfo>) -> Msg {
        Msg::Welcome {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
            config: self.engine.config.source.clone(),
            described: self.engine.full_config.describe(),
            next_id: self.engine.next_connection_id(),
            listeners,
        }
    }

    /// A starting funnel asks for our listeners: describe them, and send
    /// copies of their descriptors (we keep accepting until its `Takeover`).
    fn welcome_successor(&mut self, k: usize) -> Result<(), String> {
        let mut infos = Vec::new();
        let mut fds = Vec::new();
        for l in &self.listeners {
            let (info, fd) = match l {
                Listener::Tcp(l) => match l.local_addr() {
                    Ok(a) => (ListenerInfo::Tcp(a), l.as_fd().try_clone_to_owned()),
                    Err(_) => continue,
                },
                Listener::Unix(l, path) => (
                    ListenerInfo::Unix(path.clone()),
                    l.as_fd().try_clone_to_owned(),
                ),
            };
            let fd = fd.map_err(|e| format!("cannot duplicate a listener: {e}"))?;
            infos.push(info);
            fds.push(fd);
        }
        let welcome = self.welcome(infos);
        let link = &mut self.handoff.links[k];
        info!(
            "a new funnel (pid {}) is taking over; giving it this one's {} listening socket(s)",
            link.peer_pid,
            fds.len()
        );
        link.role = Role::Successor;
        link.queue(&welcome, fds);
        Ok(())
    }

    /// The successor has bound everything: stop accepting (its copies of
    /// our listeners go on, so no waiting connection is lost) and let it
    /// have the handoff socket.
    fn give_listeners_away(&mut self, pid: u32) {
        for l in &self.listeners {
            l.unregister(&self.poll);
        }
        self.listeners.clear();
        for to in 1..self.engine.share.count {
            let _ = self.shared.send(to, super::loops::LoopMsg::StopAccepting);
        }
        self.handoff.listeners_given_away = true;
        if let Some(mut l) = self.handoff.listener.take() {
            let _ = self.poll.registry().deregister(&mut l.listener);
            // Its file (if a path) is the successor's to replace.
        }
        info!(
            "funnel pid {pid} took over the listeners: this one accepts no new client; send it SIGTERM to hand its {} client(s) over",
            self.engine.clients_len()
        );
    }

    /// Register a client's socket received from the predecessor and have
    /// the engine adopt it.
    fn adopt(&mut self, fd: OwnedFd, image: &[u8], pid: u32) {
        let stream = match stream_from_fd(fd) {
            Ok(s) => s,
            Err(e) => {
                warn!("a client from funnel pid {pid}: unusable socket ({e})");
                return;
            }
        };
        let to = self.engine.adoption_loop(image);
        if to != self.engine.share.index {
            // Its pool is served there, or it is that loop's turn.
            let msg = super::loops::LoopMsg::Adopt {
                stream,
                tls: None,
                image: image.to_vec(),
                queued_at: None,
            };
            match self.shared.send(to, msg) {
                Ok(()) => return,
                Err(super::loops::LoopMsg::Adopt { stream, image, .. }) => {
                    return self.adopt_stream(stream, None, &image, pid, None)
                }
                Err(_) => return,
            }
        }
        self.adopt_stream(stream, None, image, pid, None);
    }

    /// Adopt a client handed over by a predecessor (`pid`), or moved here
    /// by another loop (`pid` 0), with its TLS session if it has one.
    pub(crate) fn adopt_stream(
        &mut self,
        stream: Stream,
        tls: Option<Box<super::tls_io::TlsConn>>,
        image: &[u8],
        pid: u32,
        queued_at: Option<std::time::Instant>,
    ) {
        let has_tls = tls.is_some();
        let peer = stream.peer();
        let id = match self.register_client_conn(stream, tls) {
            Ok(id) => id,
            Err(e) => {
                warn!("a client from funnel pid {pid}: cannot register its socket: {e}");
                return;
            }
        };
        match self.engine.adopt_client(ConnId(id), peer, image, queued_at) {
            Ok((key, serial)) => {
                self.conns[id].owner = Owner::Client { key, serial };
                if has_tls {
                    self.engine.set_client_tls(key);
                }
            }
            Err(e) => {
                warn!(
                    "a client from funnel pid {pid} ({}) cannot be taken over: {e}; its connection is closed",
                    peer.description()
                );
                if let Some(mut c) = self.conns.try_remove(id) {
                    let _ = self.poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }

    /// The shutdown began: find the funnel that took over from us, to hand
    /// the clients to (none if we still own the handoff socket ourselves).
    pub(crate) fn start_heir(&mut self) {
        self.handoff.heir_tried = true;
        let Some(addr) = self.handoff.addr.clone() else {
            return;
        };
        if self.handoff.listener.is_some() {
            info!("no newer funnel took over from this one: clients are closed between their commands");
            return;
        }
        let connected = unix_addr(&addr)
            .and_then(|a| UnixStream::connect_addr(&a))
            .and_then(|s| {
                let pid = same_user_peer(&s)?;
                s.set_nonblocking(true)?;
                Ok((s, pid))
            });
        let (stream, pid) = match connected {
            Ok(c) => c,
            Err(e) if self.handoff.listeners_given_away => {
                // The funnel that took over binds its handoff socket just
                // after: a SIGTERM in between must not close the clients.
                let now = self.engine.now();
                let until = *self
                    .handoff
                    .heir_retry_until
                    .get_or_insert(now + HEIR_BIND_WAIT);
                if now < until {
                    self.handoff.heir_tried = false;
                    self.engine.successor_pending(until);
                    return;
                }
                self.handoff.heir_retry_until = None;
                self.engine.successor_gone();
                info!("the funnel that took over does not answer on handoff socket {addr} ({e}): clients are closed between their commands");
                return;
            }
            Err(e) => {
                info!("no newer funnel answers on handoff socket {addr} ({e}): clients are closed between their commands");
                return;
            }
        };
        self.handoff.heir_retry_until = None;
        let mut stream = mio::net::UnixStream::from_std(stream);
        let entry = self.handoff.links.vacant_entry();
        let k = entry.key();
        let t = token(KIND_HANDOFF, k + 1);
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
        {
            warn!("handoff socket {addr}: cannot register: {e}");
            return;
        }
        let mut link = Link::new(stream, Role::Heir { ready: false }, pid);
        link.queue(
            &Msg::Hello {
                version: PROTOCOL_VERSION,
                pid: std::process::id(),
                purpose: Purpose::HandOff,
            },
            Vec::new(),
        );
        entry.insert(link);
        info!("handing clients over to funnel pid {pid} (handoff socket {addr})");
        self.engine
            .successor_pending(self.engine.now() + HEIR_TIMEOUT);
        self.flush_link(k);
    }

    /// `Action::HandOffClient`: the client's socket goes to the successor
    /// with its image (or is closed, when there is none any more).
    pub(crate) fn hand_off(&mut self, conn: ConnId, image: Vec<u8>) {
        let Some(mut c) = self.conns.try_remove(conn.0) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if c.tls.is_some() {
            // Its TLS session cannot move to another process (the engine
            // hands over no TLS client): dropped, closed.
            return;
        }
        if self.engine.share.index > 0 {
            // The first loop holds the link to the successor.
            let _ = self.shared.send(
                0,
                super::loops::LoopMsg::HandOff {
                    stream: c.stream,
                    image,
                },
            );
            return;
        }
        self.hand_off_stream(c.stream, image);
    }

    /// Send a client's socket and image to the successor (this loop's or
    /// another loop's client).
    pub(crate) fn hand_off_stream(&mut self, stream: Stream, image: Vec<u8>) {
        let heir = self
            .handoff
            .links
            .iter()
            .find(|(_, l)| l.role == Role::Heir { ready: true })
            .map(|(k, _)| k);
        let Some(k) = heir else {
            // Dropped: closed between its commands.
            return;
        };
        let fd = stream_into_fd(stream);
        self.handoff.links[k].queue(&Msg::Client { image }, vec![fd]);
        self.flush_link(k);
    }

    /// Before exiting: send what is still queued for the successor (bounded).
    pub(crate) fn finish_handoff(&mut self) {
        let deadline = Instant::now() + FLUSH_AT_EXIT;
        let keys: Vec<usize> = self.handoff.links.iter().map(|(k, _)| k).collect();
        for k in keys {
            while self.handoff.links.get(k).is_some_and(|l| !l.out.is_empty()) {
                if Instant::now() >= deadline {
                    warn!("could not send everything to the new funnel in time");
                    break;
                }
                self.flush_link(k);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if let Some(l) = self.handoff.listener.take() {
            l.remove_file();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Msg::Hello {
                version: PROTOCOL_VERSION,
                pid: 77,
                purpose: Purpose::HandOff,
            },
            Msg::Welcome {
                version: PROTOCOL_VERSION,
                pid: 12,
                config: "/etc/funnel/funnel.conf".into(),
                described: "[funnel]\nlisten = 1.2.3.4:5\n".into(),
                next_id: 9000,
                listeners: vec![
                    ListenerInfo::Tcp("127.0.0.1:3307".parse().unwrap()),
                    ListenerInfo::Tcp("[::1]:3307".parse().unwrap()),
                    ListenerInfo::Unix("/run/funnel/funnel.sock".into()),
                ],
            },
            Msg::Takeover,
            Msg::Stopped { next_id: 5 },
            Msg::Client {
                image: vec![1, 2, 3],
            },
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend_from_slice(&m.encode());
        }
        let mut at = 0;
        for m in &msgs {
            // Incomplete input waits for more.
            let end = at + m.encode().len();
            assert_eq!(Msg::parse(&stream[at..end - 1]), Ok(None));
            let (got, n) = Msg::parse(&stream[at..]).unwrap().unwrap();
            assert_eq!(&got, m);
            at += n;
        }
        assert_eq!(at, stream.len());
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert!(Msg::parse(&[0, 0, 0, 0]).is_err());
        assert!(Msg::parse(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
        assert!(Msg::decode(b"Hnot-a-funnel-handoff").is_err());
        assert!(Msg::decode(b"Z").is_err());
        assert!(Msg::decode(b"T\0").is_err());
        let good = Msg::Stopped { next_id: 1 }.encode();
        for n in 5..good.len() {
            let mut b = good[..n].to_vec();
            b[..4].copy_from_slice(&((n - 4) as u32).to_le_bytes());
            assert!(Msg::parse(&b).is_err(), "{n}");
        }
        let mut x: u32 = 1;
        for len in 1..500usize {
            let mut b = Vec::new();
            for _ in 0..len % 61 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b.push((x >> 16) as u8);
            }
            let _ = Msg::decode(&b);
        }
    }

    #[test]
    fn descriptors_travel_with_their_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, y) = UnixStream::pair().unwrap();
        let msg = Msg::Client {
            image: vec![7; 100],
        };
        send_all(&a, &msg.encode(), &[x.as_raw_fd()]).unwrap();
        send_all(&a, &Msg::Takeover.encode(), &[]).unwrap();
        drop(x);
        let mut inbuf = Vec::new();
        let mut fds = VecDeque::new();
        let mut b = b;
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = read_msg_blocking(&mut b, &mut inbuf, &mut fds, deadline).unwrap();
        assert_eq!(got, msg);
        let got = read_msg_blocking(&mut b, &mut inbuf, &mut fds, deadline).unwrap();
        assert_eq!(got, Msg::Takeover);
        assert_eq!(fds.len(), 1);
        // The received descriptor is the same socket: y's peer.
        let mut received = UnixStream::from(fds.pop_front().unwrap());
        use std::io::{Read, Write};
        received.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        let mut y = y;
        y.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        assert!(same_user_peer(&a).is_ok());
    }

    #[test]
    fn config_differences_are_listed() {
        let d = config_differences("a = 1\nb = 2\n", "a = 1\nb = 3\nc = 4\n");
        assert_eq!(d, vec!["- b = 2", "+ b = 3", "+ c = 4"]);
        assert!(config_differences("x\n", "x\n").is_empty());
    }
}
