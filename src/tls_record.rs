//! TLS records after a client's handshake, protected by the funnel itself
//! as the kernel's TLS (kTLS) would: rustls does the handshake, then hands
//! over the traffic keys (`rustls::kernel`) and is dropped. What an idle
//! connection keeps is the raw key, IV and sequence number of each
//! direction (tens of bytes); the AEAD context (aws-lc's `EVP_AEAD_CTX`,
//! 592 B) is built for each batch of records and dropped after it. TLS 1.3
//! also keeps rustls's `KernelConnection`, the key schedule that derives
//! the next keys of a KeyUpdate.
//!
//! Record formats: TLS 1.3, RFC 8446 §5.2–5.3 (nonce = IV xor sequence
//! number, AAD = the record header, inner plaintext = data ‖ content type
//! ‖ zero padding); TLS 1.2, RFC 5288 (AES-GCM: 4-byte salt ‖ 8-byte
//! explicit nonce) and RFC 7905 (ChaCha20-Poly1305: IV xor sequence
//! number), AAD = sequence number ‖ type ‖ version ‖ plaintext length.
//!
//! No socket here: records in, plaintext out, and back (`server::tls_io`
//! moves them).

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};

const HEADER_LEN: usize = 5;
const TAG_LEN: usize = 16;
/// Largest plaintext of a record (RFC 8446 §5.1, RFC 5246 §6.2.1).
const MAX_FRAGMENT: usize = 1 << 14;
/// TLS 1.2 AES-GCM's explicit nonce, sent in each record.
const EXPLICIT_NONCE_LEN: usize = 8;
/// Most a record adds to its plaintext: TLS 1.2 AES-GCM's explicit nonce
/// and tag, or TLS 1.3's content type and tag.
const MAX_OVERHEAD: usize = HEADER_LEN + EXPLICIT_NONCE_LEN + TAG_LEN;
/// A KeyUpdate record, sealed (TLS 1.3: 5 bytes of message, type, tag).
const KEY_UPDATE_RECORD_LEN: usize = HEADER_LEN + 5 + 1 + TAG_LEN;
/// Room for an alert record.
pub const ALERT_RECORD_LEN: usize = MAX_OVERHEAD + 2;
/// Past this, sealing refuses: the sequence number would wrap (rustls's
/// soft limit; rekeying or closing comes well before with every suite).
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;

/// Record content types (RFC 8446 §5.1).
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// TLS 1.3 KeyUpdate handshake message type.
const KEY_UPDATE: u8 = 24;
/// The record layer's version field: TLS 1.2 (also in every TLS 1.3 record).
const RECORD_VERSION: [u8; 2] = [3, 3];

/// The alerts the funnel sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    CloseNotify = 0,
    UnexpectedMessage = 10,
    BadRecordMac = 20,
    RecordOverflow = 22,
    IllegalParameter = 47,
    DecodeError = 50,
    InternalError = 80,
}

/// Why the connection must close, and the alert to say so (none when the
/// peer sent one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub alert: Option<Alert>,
    pub reason: String,
}

impl Fatal {
    fn send(alert: Alert, reason: &str) -> Fatal {
        Fatal {
            alert: Some(alert),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.reason)
    }
}

impl std::error::Error for Fatal {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// One direction's keys, raw: no AEAD context is kept between batches.
struct DirectionKeys {
    cipher: Cipher,
    key: [u8; 32],
    key_len: u8,
    iv: [u8; 12],
    /// The sequence number of the next record under this key.
    seq: u64,
}

impl DirectionKeys {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<DirectionKeys, Fatal> {
        let (cipher, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Cipher::Chacha20Poly1305, key, iv)
            }
            _ => {
                return Err(Fatal::send(
                    Alert::InternalError,
                    "unsupported cipher suite for record protection",
                ))
            }
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != cipher.algorithm().key_len() || iv.len() != 12 {
            return Err(Fatal::send(Alert::InternalError, "unexpected key length"));
        }
        let mut keys = DirectionKeys {
            cipher,
            key: [0; 32],
            key_len: key.len() as u8,
            iv: [0; 12],
            seq,
        };
        keys.key[..key.len()].copy_from_slice(key);
        keys.iv.copy_from_slice(iv);
        Ok(keys)
    }

    /// The AEAD context, for one batch of records.
    fn aead(&self) -> Result<LessSafeKey, Fatal> {
        let key = UnboundKey::new(
            self.cipher.algorithm(),
            &self.key[..usize::from(self.key_len)],
        )
        .map_err(|_| Fatal::send(Alert::InternalError, "AEAD key set-up failed"))?;
        Ok(LessSafeKey::new(key))
    }

    /// The nonce of the next record (IV xor sequence number), and the
    /// sequence number it was made with; the number is used up either way.
    fn next_nonce(&mut self) -> Result<([u8; 12], u64), Fatal> {
        let seq = self.seq;
        // Never wraps: a number is never used twice under one key.
        self.seq = seq
            .checked_add(1)
            .ok_or_else(|| Fatal::send(Alert::InternalError, "record sequence number exhausted"))?;
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        Ok((nonce, seq))
    }
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        // The key should not outlive the connection in freed memory.
        for b in self.key.iter_mut().chain(self.iv.iter_mut()) {
            // SAFETY: a valid, aligned &mut u8; volatile so the writes stay.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// What `open` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of whole records taken from the start of the input.
    pub consumed: usize,
    /// The peer sent close_notify (nothing after it was read).
    pub peer_closed: bool,
}

/// A server connection's record protection after its handshake.
pub struct Session {
    version: Version,
    tx: DirectionKeys,
    rx: DirectionKeys,
    /// Records sealed under one key before a KeyUpdate (TLS 1.3) or a
    /// close (TLS 1.2): the suite's confidentiality limit.
    tx_limit: u64,
    /// TLS 1.3: derives the keys of each KeyUpdate (None with TLS 1.2,
    /// which has no key update).
    kernel: Option<Box<KernelConnection<ServerConnectionData>>>,
    /// The peer asked for a KeyUpdate: ours goes before our next record.
    key_update_owed: bool,
    /// close_notify or a fatal alert was sealed: nothing more is.
    tx_closed: bool,
    /// A record failed to open: nothing more is opened.
    rx_failed: bool,
}

impl Session {
    /// Take over from rustls once its handshake is complete (its
    /// configuration must have `enable_secret_extraction`).
    pub fn new(conn: UnbufferedServerConnection) -> Result<Session, Fatal> {
        let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(|e| Fatal {
            alert: Some(Alert::InternalError),
            reason: format!("taking over the records from rustls: {e}"),
        })?;
        let version = match kernel.protocol_version() {
            ProtocolVersion::TLSv1_3 => Version::Tls13,
            ProtocolVersion::TLSv1_2 => Version::Tls12,
            _ => return Err(Fatal::send(Alert::InternalError, "unsupported TLS version")),
        };
        let tx_limit = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        }
        .min(SEQ_SOFT_LIMIT);
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        Ok(Session {
            version,
            tx: DirectionKeys::new(tx_seq, tx)?,
            rx: DirectionKeys::new(rx_seq, rx)?,
            tx_limit,
            kernel: (version == Version::Tls13).then(|| Box::new(kernel)),
            key_update_owed: false,
            tx_closed: false,
            rx_failed: false,
        })
    }

    /// Room `seal` needs for `len` bytes of plaintext, at most.
    pub fn sealed_len(&self, len: usize) -> usize {
        let records = len.div_ceil(MAX_FRAGMENT).max(1);
        len + records * (MAX_OVERHEAD + KEY_UPDATE_RECORD_LEN)
    }

    /// A KeyUpdate is owed to the peer (`seal(&[])` sends it).
    pub fn owes_key_update(&self) -> bool {
        self.key_update_owed
    }

    /// Seal `plain` as application data records into `out` (at least
    /// `sealed_len(plain.len())` long), with a KeyUpdate first where one is
    /// owed or the key is worn out. Returns the bytes written.
    pub fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, Fatal> {
        if self.tx_closed {
            return Err(Fatal {
                alert: None,
                reason: "TLS connection closed".into(),
            });
        }
        if out.len() < self.sealed_len(plain.len()) {
            return Err(Fatal::send(Alert::InternalError, "seal: no room"));
        }
        let mut aead = self.tx.aead()?;
        let mut written = 0;
        let mut chunks = plain.chunks(MAX_FRAGMENT);
        loop {
            if self.key_update_owed || self.tx.seq >= self.tx_limit {
                if self.version == Version::Tls12 {
                    // No key update in TLS 1.2: the connection ends here.
                    return Err(Fatal::send(
                        Alert::CloseNotify,
                        "confidentiality limit of the key reached",
                    ));
                }
                // KeyUpdate(update_not_requested), under the old key.
                let message = [KEY_UPDATE, 0, 0, 1, 0];
                written += self.seal_record(&aead, HANDSHAKE, &message, &mut out[written..])?;
                let kernel = self
                    .kernel
                    .as_mut()
                    .ok_or_else(|| Fatal::send(Alert::InternalError, "no key schedule"))?;
                let (seq, secrets) = kernel
                    .update_tx_secret()
                    .map_err(|e| Fatal::send(Alert::InternalError, &format!("key update: {e}")))?;
                self.tx = DirectionKeys::new(seq, secrets)?;
                aead = self.tx.aead()?;
                self.key_update_owed = false;
            }
            let Some(chunk) = chunks.next() else {
                return Ok(written);
            };
            written += self.seal_record(&aead, APPLICATION_DATA, chunk, &mut out[written..])?;
        }
    }

    /// Seal an alert (best effort: 0 if it cannot be); after it, nothing
    /// more is sealed. `out` needs `ALERT_RECORD_LEN` bytes.
    pub fn seal_alert(&mut self, alert: Alert, out: &mut [u8]) -> usize {
        if self.tx_closed || out.len() < ALERT_RECORD_LEN {
            return 0;
        }
        self.tx_closed = true;
        let level = if alert == Alert::CloseNotify { 1 } else { 2 };
        self.tx
            .aead()
            .and_then(|aead| self.seal_record(&aead, ALERT, &[level, alert as u8], out))
            .unwrap_or(0)
    }

    /// One record of `typ` holding `body` (≤ 2^14 bytes) into `out`.
    fn seal_record(
        &mut self,
        aead: &LessSafeKey,
        typ: u8,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Fatal> {
        let (nonce, seq) = self.tx.next_nonce()?;
        let n = body.len();
        let (outer_type, explicit, inner) = match self.version {
            Version::Tls13 => (APPLICATION_DATA, 0, n + 1),
            Version::Tls12 if self.tx.cipher == Cipher::Chacha20Poly1305 => (typ, 0, n),
            Version::Tls12 => (typ, EXPLICIT_NONCE_LEN, n),
        };
        let len = explicit + inner + TAG_LEN;
        let record = &mut out[..HEADER_LEN + len];
        let [v0, v1] = RECORD_VERSION;
        let [l0, l1] = (len as u16).to_be_bytes();
        record[..HEADER_LEN].copy_from_slice(&[outer_type, v0, v1, l0, l1]);
        let (header, rest) = record.split_at_mut(HEADER_LEN);
        // The explicit nonce is the nonce's last 8 bytes (the salt is
        // the first 4): unique since the sequence number is.
        rest[..explicit].copy_from_slice(&nonce[12 - explicit..]);
        let payload = &mut rest[explicit..];
        payload[..n].copy_from_slice(body);
        if self.version == Version::Tls13 {
            payload[n] = typ;
        }
        let tls12_aad;
        let aad: &[u8] = match self.version {
            Version::Tls13 => header,
            Version::Tls12 => {
                tls12_aad = tls12_aad_of(seq, typ, n);
                &tls12_aad
            }
        };
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut payload[..inner],
            )
            .map_err(|_| Fatal::send(Alert::InternalError, "sealing failed"))?;
        payload[inner..].copy_from_slice(tag.as_ref());
        Ok(HEADER_LEN + len)
    }

    /// Open the whole records at the start of `incoming`, in place, giving
    /// the application data of each to `data` once its tag is verified;
    /// answers KeyUpdates (rx at once; tx before our next record) and
    /// stops at close_notify. Anything else ends the connection: the
    /// error names the alert to send.
    pub fn open(&mut self, incoming: &mut [u8], data: impl FnMut(&[u8])) -> Result<Opened, Fatal> {
        if self.rx_failed {
            return Err(Fatal {
                alert: None,
                reason: "read after a failure".into(),
            });
        }
        let opened = self.open_records(incoming, data);
        self.rx_failed = opened.is_err();
        opened
    }

    fn open_records(
        &mut self,
        incoming: &mut [u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Opened, Fatal> {
        let mut opened = Opened::default();
        let mut aead = None;
        loop {
            let rest = &mut incoming[opened.consumed..];
            let Some(&[typ, _, _, l0, l1]) = rest.get(..HEADER_LEN) else {
                return Ok(opened);
            };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            let max = match self.version {
                Version::Tls13 => MAX_FRAGMENT + 256,
                Version::Tls12 => MAX_FRAGMENT + 2048,
            };
            if len > max {
                return Err(Fatal::send(Alert::RecordOverflow, "record too large"));
            }
            let Some(record) = rest.get_mut(..HEADER_LEN + len) else {
                return Ok(opened);
            };
            opened.consumed += HEADER_LEN + len;
            let key = match aead.take() {
                Some(key) => key,
                None => self.rx.aead()?,
            };
            let received = self.open_record(&key, typ, record, &mut data)?;
            aead = Some(key);
            match received {
                Received::Data => {}
                Received::CloseNotify => {
                    opened.peer_closed = true;
                    // Nothing after close_notify counts.
                    return Ok(opened);
                }
                Received::KeyUpdate { requested } => {
                    let kernel = self
                        .kernel
                        .as_mut()
                        .ok_or_else(|| Fatal::send(Alert::InternalError, "no key schedule"))?;
                    let (seq, secrets) = kernel.update_rx_secret().map_err(|e| {
                        Fatal::send(Alert::InternalError, &format!("key update: {e}"))
                    })?;
                    self.rx = DirectionKeys::new(seq, secrets)?;
                    aead = None;
                    self.key_update_owed |= requested;
                }
            }
        }
    }

    /// Open one whole record (header included) in place.
    fn open_record(
        &mut self,
        aead: &LessSafeKey,
        typ: u8,
        record: &mut [u8],
        data: &mut impl FnMut(&[u8]),
    ) -> Result<Received, Fatal> {
        let (nonce, seq) = self.rx.next_nonce()?;
        let (header, payload) = record.split_at_mut(HEADER_LEN);
        let plain = match self.version {
            Version::Tls13 => {
                if typ != APPLICATION_DATA {
                    // change_cipher_spec included: not after the handshake.
                    return Err(Fatal::send(
                        Alert::UnexpectedMessage,
                        "unencrypted record after the handshake",
                    ));
                }
                let inner = aead
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&*header),
                        payload,
                    )
                    .map_err(|_| Fatal::send(Alert::BadRecordMac, "record failed to decrypt"))?;
                // data ‖ content type ‖ zeros.
                let Some(end) = inner.iter().rposition(|&b| b != 0) else {
                    return Err(Fatal::send(
                        Alert::UnexpectedMessage,
                        "record without a content type",
                    ));
                };
                let inner_type = inner[end];
                return self.received(inner_type, &inner[..end], data);
            }
            Version::Tls12 => {
                let explicit = match self.rx.cipher {
                    Cipher::Chacha20Poly1305 => 0,
                    _ => EXPLICIT_NONCE_LEN,
                };
                if payload.len() < explicit + TAG_LEN {
                    return Err(Fatal::send(Alert::BadRecordMac, "record too short"));
                }
                let mut nonce = nonce;
                nonce[12 - explicit..].copy_from_slice(&payload[..explicit]);
                // The version as received: altered, the tag fails.
                let mut aad = tls12_aad_of(seq, typ, payload.len() - explicit - TAG_LEN);
                aad[9..11].copy_from_slice(&header[1..3]);
                aead.open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad),
                    &mut payload[explicit..],
                )
                .map_err(|_| Fatal::send(Alert::BadRecordMac, "record failed to decrypt"))?
            }
        };
        self.received(typ, plain, data)
    }

    /// A record's plaintext, verified: what it says.
    fn received(
        &self,
        typ: u8,
        plain: &[u8],
        data: &mut impl FnMut(&[u8]),
    ) -> Result<Received, Fatal> {
        if plain.len() > MAX_FRAGMENT {
            return Err(Fatal::send(Alert::RecordOverflow, "plaintext too large"));
        }
        match typ {
            APPLICATION_DATA => {
                data(plain);
                Ok(Received::Data)
            }
            ALERT => match plain {
                [_, 0] => Ok(Received::CloseNotify),
                [_, description] => Err(Fatal {
                    alert: None,
                    reason: format!("the peer sent alert {description}"),
                }),
                _ => Err(Fatal::send(Alert::DecodeError, "malformed alert")),
            },
            HANDSHAKE if self.version == Version::Tls13 => match plain {
                // One KeyUpdate ending the record (RFC 8446 §5.1: no
                // handshake message may span a key change).
                [KEY_UPDATE, 0, 0, 1, request] => match request {
                    0 | 1 => Ok(Received::KeyUpdate {
                        requested: *request == 1,
                    }),
                    _ => Err(Fatal::send(Alert::IllegalParameter, "malformed KeyUpdate")),
                },
                [KEY_UPDATE, ..] => Err(Fatal::send(Alert::DecodeError, "malformed KeyUpdate")),
                _ => Err(Fatal::send(
                    Alert::UnexpectedMessage,
                    "unexpected handshake message after the handshake",
                )),
            },
            // TLS 1.2 renegotiation, change_cipher_spec, anything unknown.
            _ => Err(Fatal::send(
                Alert::UnexpectedMessage,
                "unexpected record after the handshake",
            )),
        }
    }
}

enum Received {
    Data,
    CloseNotify,
    KeyUpdate { requested: bool },
}

/// TLS 1.2's additional data: seq_num ‖ type ‖ version ‖ length.
fn tls12_aad_of(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&RECORD_VERSION);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::{Arc, OnceLock};

    use rustls::crypto::aws_lc_rs::cipher_suite as suites;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
    use rustls::{ClientConnection, ServerConfig, SupportedProtocolVersion};

    /// A certificate and its key (`tls::test_pki`), made once.
    fn identity() -> &'static (Vec<u8>, Vec<u8>) {
        static IDENTITY: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
        IDENTITY.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            crate::tls::test_pki(dir.path());
            let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
            (read("s.crt"), read("s.key"))
        })
    }

    /// The funnel's server configuration (as `tls::load_server` makes
    /// it) restricted to one version and suite.
    fn server_config(
        version: &'static SupportedProtocolVersion,
        suite: rustls::SupportedCipherSuite,
    ) -> Arc<ServerConfig> {
        let (cert, key) = identity();
        let certs = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key).unwrap();
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.send_tls13_tickets = 0;
        config.enable_secret_extraction = true;
        Arc::new(config)
    }

    /// Every version and suite the funnel offers.
    fn all_configs() -> Vec<(&'static str, Arc<ServerConfig>)> {
        use rustls::version::{TLS12, TLS13};
        vec![
            (
                "1.3 AES-128-GCM",
                server_config(&TLS13, suites::TLS13_AES_128_GCM_SHA256),
            ),
            (
                "1.3 AES-256-GCM",
                server_config(&TLS13, suites::TLS13_AES_256_GCM_SHA384),
            ),
            (
                "1.3 ChaCha20",
                server_config(&TLS13, suites::TLS13_CHACHA20_POLY1305_SHA256),
            ),
            (
                "1.2 AES-128-GCM",
                server_config(&TLS12, suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
            ),
            (
                "1.2 AES-256-GCM",
                server_config(&TLS12, suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
            ),
            (
                "1.2 ChaCha20",
                server_config(
                    &TLS12,
                    suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                ),
            ),
        ]
    }

    /// A real rustls client and our session, after a handshake in memory.
    struct Pair {
        client: ClientConnection,
        session: Session,
        /// Records from the client not yet opened.
        to_server: Vec<u8>,
    }

    const BEHIND_FINISHED: &[u8] = b"sent right behind the client's Finished";

    /// Handshake through rustls's unbuffered server (as `tls_io` drives
    /// it), the client sending data in the same flight as its Finished;
    /// then the session takes over.
    fn handshake(config: Arc<ServerConfig>) -> Pair {
        // The funnel's own client configuration (no certificate check).
        let client_config =
            crate::tls::load_backend(crate::tls::BackendTlsMode::Require, "", "127.0.0.1")
                .unwrap()
                .config
                .unwrap();
        let mut client =
            ClientConnection::new(client_config, "127.0.0.1".try_into().unwrap()).unwrap();
        let mut server = UnbufferedServerConnection::new(config).unwrap();
        let mut to_server = Vec::new();
        let mut read_by_rustls = Vec::new();
        let mut sent_behind = false;
        for _ in 0..10 {
            while client.wants_write() {
                client.write_tls(&mut to_server).unwrap();
            }
            if !client.is_handshaking() && !sent_behind {
                client.writer().write_all(BEHIND_FINISHED).unwrap();
                client.write_tls(&mut to_server).unwrap();
                sent_behind = true;
            }
            let mut to_client = Vec::new();
            let established = loop {
                let UnbufferedStatus { mut discard, state } =
                    server.process_tls_records(&mut to_server);
                let established = match state.unwrap() {
                    ConnectionState::ReadTraffic(mut traffic) => {
                        while let Some(record) = traffic.next_record() {
                            let record = record.unwrap();
                            discard += record.discard;
                            read_by_rustls.extend_from_slice(record.payload);
                        }
                        None
                    }
                    ConnectionState::EncodeTlsData(mut encode) => {
                        let mut buf = vec![0; 1 << 16];
                        let n = encode.encode(&mut buf).unwrap();
                        to_client.extend_from_slice(&buf[..n]);
                        None
                    }
                    ConnectionState::TransmitTlsData(transmit) => {
                        transmit.done();
                        None
                    }
                    ConnectionState::BlockedHandshake => Some(false),
                    ConnectionState::WriteTraffic(_) => Some(true),
                    other => panic!("{other:?}"),
                };
                to_server.drain(..discard);
                if let Some(established) = established {
                    break established;
                }
            };
            if !to_client.is_empty() {
                client.read_tls(&mut &to_client[..]).unwrap();
                client.process_new_packets().unwrap();
            }
            if established && sent_behind {
                let session = Session::new(server).unwrap();
                let mut pair = Pair {
                    client,
                    session,
                    to_server,
                };
                // What rustls did not read (all of it, or none), we do.
                let mut got = read_by_rustls;
                pair.server_read(&mut got).unwrap();
                assert_eq!(got, BEHIND_FINISHED);
                return pair;
            }
        }
        panic!("no handshake");
    }

    impl Pair {
        fn client_send(&mut self, mut data: &[u8]) {
            loop {
                // rustls takes a bounded amount of plaintext at a time.
                let n = self.client.writer().write(data).unwrap();
                data = &data[n..];
                while self.client.wants_write() {
                    self.client.write_tls(&mut self.to_server).unwrap();
                }
                if data.is_empty() {
                    return;
                }
            }
        }

        /// Open what the client sent, appending the data to `got`; true
        /// when it said close_notify.
        fn server_read(&mut self, got: &mut Vec<u8>) -> Result<bool, Fatal> {
            let opened = self
                .session
                .open(&mut self.to_server, |d| got.extend_from_slice(d))?;
            self.to_server.drain(..opened.consumed);
            Ok(opened.peer_closed)
        }

        /// Seal `data` and give it to the client; what the client read.
        fn server_send(&mut self, data: &[u8]) -> Vec<u8> {
            let mut records = vec![0; self.session.sealed_len(data.len())];
            let n = self.session.seal(data, &mut records).unwrap();
            self.client_receive(&records[..n])
        }

        fn client_receive(&mut self, mut records: &[u8]) -> Vec<u8> {
            let mut got = Vec::new();
            while !records.is_empty() {
                self.client.read_tls(&mut records).unwrap();
                self.client.process_new_packets().unwrap();
                match self.client.reader().read_to_end(&mut got) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => panic!("{other:?}"),
                }
            }
            got
        }

        /// Seal a record of `typ` as the client would (our sealing under
        /// the client's keys and sequence number).
        fn as_client(&mut self, typ: u8, body: &[u8]) -> Vec<u8> {
            let rx_seq = self.session.rx.seq;
            std::mem::swap(&mut self.session.tx, &mut self.session.rx);
            let aead = self.session.tx.aead().unwrap();
            let mut record = vec![0; body.len() + MAX_OVERHEAD];
            let n = self
                .session
                .seal_record(&aead, typ, body, &mut record)
                .unwrap();
            std::mem::swap(&mut self.session.tx, &mut self.session.rx);
            self.session.rx.seq = rx_seq;
            record.truncate(n);
            record
        }
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(seed) % 251) as u8)
            .collect()
    }

    #[test]
    fn data_both_ways_in_many_records_with_every_version_and_suite() {
        for (name, config) in all_configs() {
            let mut pair = handshake(config);
            // Small and large (several records each), both ways.
            for (i, len) in [1, 100, 16_384, 16_385, 100_000].into_iter().enumerate() {
                let data = pattern(len, i as u32 + 7);
                assert_eq!(pair.server_send(&data), data, "{name}: to the client");
                pair.client_send(&data);
                let mut got = Vec::new();
                assert!(!pair.server_read(&mut got).unwrap());
                assert_eq!(got, data, "{name}: from the client");
            }
        }
    }

    #[test]
    fn records_split_across_reads_are_opened_once_whole() {
        for (name, config) in all_configs() {
            let mut pair = handshake(config);
            let data = pattern(40_000, 3);
            pair.client_send(&data);
            let all = std::mem::take(&mut pair.to_server);
            let mut got = Vec::new();
            // Byte by byte at first, then in odd chunks.
            for chunk in all[..50].chunks(1).chain(all[50..].chunks(777)) {
                pair.to_server.extend_from_slice(chunk);
                assert!(!pair.server_read(&mut got).unwrap());
            }
            assert!(pair.to_server.is_empty());
            assert_eq!(got, data, "{name}");
        }
    }

    #[test]
    fn key_update_from_the_client_is_followed_and_answered_in_tls13() {
        for (name, config) in all_configs().into_iter().take(3) {
            let mut pair = handshake(config);
            // The client updates its keys and asks for ours to change.
            pair.client.refresh_traffic_keys().unwrap();
            pair.client_send(b"under the new key");
            let mut got = Vec::new();
            assert!(!pair.server_read(&mut got).unwrap());
            assert_eq!(got, b"under the new key", "{name}");
            assert!(pair.session.owes_key_update(), "{name}");
            let old_rx_seq = pair.session.rx.seq;
            assert_eq!(old_rx_seq, 1, "{name}: numbering restarted");
            // Our KeyUpdate goes before our next data: the client reads
            // the data only if it followed.
            assert_eq!(pair.server_send(b"and ours"), b"and ours", "{name}");
            assert!(!pair.session.owes_key_update());
            assert_eq!(pair.session.tx.seq, 1, "{name}");
            // Twice more, each way still working.
            for round in 0..2 {
                pair.client.refresh_traffic_keys().unwrap();
                pair.client_send(b"x");
                let mut got = Vec::new();
                pair.server_read(&mut got).unwrap();
                assert_eq!(got, b"x", "{name} {round}");
                assert_eq!(pair.server_send(b"y"), b"y", "{name} {round}");
            }
        }
    }

    #[test]
    fn confidentiality_limit_rekeys_in_tls13_and_closes_in_tls12() {
        for (name, config) in all_configs() {
            let mut pair = handshake(config);
            let tls13 = pair.session.version == Version::Tls13;
            pair.session.tx_limit = pair.session.tx.seq + 3;
            let data = pattern(16_384 * 5, 5);
            let mut records = vec![0; pair.session.sealed_len(data.len())];
            match pair.session.seal(&data, &mut records) {
                Ok(n) => {
                    assert!(tls13, "{name}");
                    // One KeyUpdate after 3 records: 2 records under the new key.
                    assert_eq!(pair.session.tx.seq, 2, "{name}");
                    assert_eq!(pair.client_receive(&records[..n]), data, "{name}");
                }
                Err(fatal) => {
                    assert!(!tls13, "{name}");
                    assert_eq!(fatal.alert, Some(Alert::CloseNotify), "{name}");
                }
            }
        }
    }

    #[test]
    fn close_notify_is_a_clean_end_and_nothing_after_it_is_read() {
        for (name, config) in all_configs() {
            let mut pair = handshake(config);
            pair.client_send(b"last words");
            pair.client.send_close_notify();
            pair.client.write_tls(&mut pair.to_server).unwrap();
            let mut got = Vec::new();
            assert!(pair.server_read(&mut got).unwrap(), "{name}");
            assert_eq!(got, b"last words", "{name}");
            // Ours, which the client reads as a clean end.
            let mut alert = [0; ALERT_RECORD_LEN];
            let n = pair.session.seal_alert(Alert::CloseNotify, &mut alert);
            assert!(n > 0);
            let mut records = &alert[..n];
            pair.client.read_tls(&mut records).unwrap();
            let state = pair.client.process_new_packets().unwrap();
            assert!(state.peer_has_closed(), "{name}");
            assert!(pair.session.seal(b"more", &mut [0; 100]).is_err());
        }
    }

    #[test]
    fn a_tampered_record_is_refused_and_nothing_of_it_released() {
        for (name, config) in all_configs() {
            for at in [0, 1, 2, 5, 6, 20, 40] {
                let mut pair = handshake(config.clone());
                pair.client_send(&pattern(30, 1));
                if at < 3 {
                    // The header: type or version (in the AAD of both versions).
                    pair.to_server[at] ^= 0x01;
                } else {
                    let i = pair.to_server.len() - 1 - (at - 5);
                    pair.to_server[i] ^= 0x80;
                }
                let mut got = Vec::new();
                let fatal = pair.server_read(&mut got).unwrap_err();
                assert!(got.is_empty(), "{name} at {at}");
                assert!(
                    matches!(
                        fatal.alert,
                        Some(Alert::BadRecordMac | Alert::UnexpectedMessage)
                    ),
                    "{name} at {at}: {fatal:?}"
                );
                // Nothing more is opened after a failure.
                pair.client_send(b"after");
                assert!(pair.server_read(&mut got).is_err());
                assert!(got.is_empty());
            }
        }
    }

    /// Random damage to a stream of several records (a flipped byte
    /// anywhere, headers included; a cut; garbage after it): never a
    /// panic, and what is released is always a prefix of what the client
    /// sent, nothing of a damaged record or anything after it.
    #[test]
    fn randomly_damaged_records_release_only_a_prefix_of_the_data() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |below: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as usize) % below.max(1)
        };
        for (name, config) in all_configs() {
            for round in 0..40 {
                let mut pair = handshake(config.clone());
                let mut sent = Vec::new();
                for i in 0..1 + next(4) {
                    let data = pattern(1 + next(3_000), (round * 8 + i) as u32 + 3);
                    pair.client_send(&data);
                    sent.extend_from_slice(&data);
                }
                let len = pair.to_server.len();
                match next(3) {
                    0 => {
                        let at = next(len);
                        pair.to_server[at] ^= 1 << next(8);
                    }
                    1 => pair.to_server.truncate(next(len)),
                    _ => {
                        let at = next(len);
                        pair.to_server[at] ^= 0xff;
                        let garbage: Vec<u8> = (0..next(64)).map(|_| next(256) as u8).collect();
                        pair.to_server.extend_from_slice(&garbage);
                    }
                }
                let mut got = Vec::new();
                let _ = pair.server_read(&mut got);
                assert!(
                    got.len() <= sent.len() && got[..] == sent[..got.len()],
                    "{name} round {round}: released data that was not sent"
                );
            }
        }
    }

    #[test]
    fn oversized_record_is_record_overflow_before_it_arrives_whole() {
        for (name, config) in all_configs() {
            let mut pair = handshake(config);
            pair.to_server
                .extend_from_slice(&[APPLICATION_DATA, 3, 3, 0x48, 0x01]);
            let fatal = pair.server_read(&mut Vec::new()).unwrap_err();
            assert_eq!(fatal.alert, Some(Alert::RecordOverflow), "{name}");
        }
    }

    #[test]
    fn an_alert_from_the_peer_ends_the_connection() {
        for (name, config) in all_configs() {
            let mut pair = handshake(config);
            let mut alert = pair.as_client(ALERT, &[2, Alert::InternalError as u8]);
            let fatal = pair.session.open(&mut alert, |_| {}).unwrap_err();
            assert_eq!(fatal.alert, None, "{name}: {fatal:?}");
        }
    }

    #[test]
    fn unexpected_handshake_messages_and_renegotiation_are_refused() {
        for (name, config) in all_configs() {
            let mut pair = handshake(config);
            // A ClientHello-like handshake record (renegotiation in 1.2, a
            // message never allowed after the handshake in 1.3).
            let mut record = pair.as_client(HANDSHAKE, &[1, 0, 0, 2, 3, 3]);
            let fatal = pair.session.open(&mut record, |_| {}).unwrap_err();
            assert_eq!(fatal.alert, Some(Alert::UnexpectedMessage), "{name}");
        }
    }

    #[test]
    fn idle_state_is_small() {
        // What an idle client keeps of TLS besides the I/O layer's flags.
        assert!(std::mem::size_of::<Session>() <= 160);
        assert!(std::mem::size_of::<KernelConnection<ServerConnectionData>>() <= 1024);
    }
}
