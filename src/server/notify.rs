//! systemd's readiness protocol (`sd_notify`), without libsystemd: one
//! datagram per state change to the unix socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`).
//!
//! The funnel sends `READY=1` once its client listeners are bound and a
//! backend connection has logged in to mysqld, `RELOADING=1` then `READY=1`
//! around a configuration reload, and `STOPPING=1` when it begins to shut
//! down. Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.
//! A send that fails is logged once and otherwise ignored: systemd is a
//! spectator, never a reason to stop serving.

use std::os::unix::net::UnixDatagram;

/// The socket systemd listens on, opened once at start-up.
pub struct Notifier {
    socket: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    /// Only the first failure is logged.
    failed: bool,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; None when it is unset or empty. The variable is
    /// removed from the environment so that nothing the funnel might start
    /// inherits it.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        // Called before the admin threads are spawned: the process is still
        // single-threaded, so changing the environment races with nothing.
        std::env::remove_var("NOTIFY_SOCKET");
        match Notifier::open(name.as_encoded_bytes()) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={name:?} unusable: {e}; not notifying systemd");
                None
            }
        }
    }

    /// A notifier for `name` (`/path` or `@abstract`); None if empty.
    pub fn open(name: &[u8]) -> std::io::Result<Option<Notifier>> {
        if name.is_empty() {
            return Ok(None);
        }
        let addr = if let Some(abstract_name) = name.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?
        } else if name.starts_with(b"/") {
            use std::os::unix::ffi::OsStrExt;
            std::os::unix::net::SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name))?
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an @abstract name",
            ));
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Some(Notifier {
            socket,
            addr,
            failed: false,
        }))
    }

    /// Send one state message (`READY=1`, `STATUS=...`, newline separated).
    pub fn send(&mut self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            if !self.failed {
                self.failed = true;
                log::warn!("cannot notify systemd ({state:?}): {e}");
            }
        }
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd asks for since v253.
pub fn reloading_message() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::open(path.as_os_str().as_encoded_bytes())
            .unwrap()
            .unwrap();
        n.send("READY=1");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("funnel-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let mut n = Notifier::open(format!("@{name}").as_bytes())
            .unwrap()
            .unwrap();
        n.send("STOPPING=1");
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");

        assert!(Notifier::open(b"").unwrap().is_none());
        assert!(Notifier::open(b"relative").is_err());
        assert!(reloading_message().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    }
}
