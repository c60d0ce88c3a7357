//! A TCP relay that records both directions of one client connection, for
//! tests that compare what a real client library received, byte for byte.

use std::thread;

/// Relays one TCP connection to 127.0.0.1:`target` and records both
/// directions.
pub struct Recorder {
    pub port: u16,
    done: thread::JoinHandle<Recording>,
}

/// Both directions of a relayed connection.
pub struct Recording {
    /// What the client sent.
    pub sent: Vec<u8>,
    /// What the client received.
    pub received: Vec<u8>,
}

impl Recorder {
    pub fn start(target: u16) -> Recorder {
        Recorder::start_offering(target, None)
    }

    /// With `mariadb_caps`: the server's greeting reaches the client
    /// announcing only these of MariaDB's extended capabilities (what the
    /// funnel offers), so that a direct connection negotiates what one
    /// through the funnel can.
    pub fn start_offering(target: u16, mariadb_caps: Option<u32>) -> Recorder {
        use funnel::protocol::mariadb_ext::{greeting_mariadb_caps, set_greeting_mariadb_caps};
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let done = thread::spawn(move || {
            let (client, _) = listener.accept().expect("relay accept");
            let server =
                std::net::TcpStream::connect(("127.0.0.1", target)).expect("relay connect");
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let mut greeting = Vec::new();
            if let Some(mask) = mariadb_caps {
                let (mut server, mut client) = (&server, &client);
                let mut header = [0u8; 4];
                server.read_exact(&mut header).expect("relay: greeting");
                let len = usize::from(header[0])
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]) << 16;
                let mut payload = vec![0u8; len];
                server.read_exact(&mut payload).expect("relay: greeting");
                let offered = greeting_mariadb_caps(&payload);
                assert!(set_greeting_mariadb_caps(&mut payload, offered & mask));
                greeting.extend_from_slice(&header);
                greeting.extend_from_slice(&payload);
                client.write_all(&greeting).expect("relay: greeting");
            }
            let up = thread::spawn(move || pump(c2, s2));
            greeting.extend(pump(server, client));
            Recording {
                sent: up.join().unwrap(),
                received: greeting,
            }
        });
        Recorder { port, done }
    }

    /// The recording, once both sides closed.
    pub fn finish(self) -> Recording {
        self.done.join().expect("relay thread")
    }
}

/// Copies `from` to `to` until EOF; returns the bytes copied.
fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    super::raw::pump(&mut from, &mut to, |b| seen.extend_from_slice(b));
    seen
}

/// A recorded stream as (sequence id, payload) packets.
pub fn packets(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let (out, rest) = super::raw::split_packets(stream);
    assert!(
        rest.is_empty(),
        "truncated packet or trailing bytes in the recording"
    );
    out
}
