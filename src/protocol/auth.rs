//! `mysql_native_password`: the challenge/response scheme the funnel's front
//! end speaks, and that it uses towards the backends.
//!
//! Reference: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html>
//! and <https://mariadb.com/kb/en/connection/#mysql_native_password-plugin>.
//!
//! ```text
//! stage1   = SHA1(password)
//! stage2   = SHA1(stage1)              -- what mysql.user stores, hex, after '*'
//! response = stage1 XOR SHA1(scramble[0..20] ++ stage2)
//! ```
//!
//! The server checks a response without knowing the password: it recovers
//! `stage1' = response XOR SHA1(scramble ++ stage2)` and accepts if
//! `SHA1(stage1') == stage2`.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Length of the challenge the server sends and of the client's response.
pub const SCRAMBLE_LEN: usize = 20;

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The scramble proper: mysqld sends 20 bytes, often followed by a NUL that
/// is not part of it.
fn challenge(scramble: &[u8]) -> &[u8] {
    scramble.get(..SCRAMBLE_LEN).unwrap_or(scramble)
}

/// SHA1(password).
pub fn native_password_stage1(password: &[u8]) -> [u8; 20] {
    sha1(&[password])
}

/// SHA1(SHA1(password)), the value mysqld keeps in `mysql.user`.
pub fn native_password_stage2(password: &[u8]) -> [u8; 20] {
    sha1(&[&native_password_stage1(password)])
}

/// The client's auth response for `password` and the server's `scramble`.
/// An empty password gives an empty response, as libmysqlclient sends.
pub fn scramble_native(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    scramble_native_from_stage1(&native_password_stage1(password), scramble)
}

/// Same as [`scramble_native`] from a stored SHA1(password), so the funnel
/// can log in to backends without keeping clear-text passwords.
pub fn scramble_native_from_stage1(stage1: &[u8; 20], scramble: &[u8]) -> Vec<u8> {
    let stage2 = sha1(&[stage1]);
    let mask = sha1(&[challenge(scramble), &stage2]);
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// Checks a client's response as mysqld does. `stage2` is `None` for an
/// account without password: then only an empty response is accepted.
/// The final comparison is constant-time. Wrong lengths give `false`.
pub fn verify_native(stage2: Option<&[u8; 20]>, scramble: &[u8], response: &[u8]) -> bool {
    let Some(stage2) = stage2 else {
        return response.is_empty();
    };
    if response.len() != SCRAMBLE_LEN || scramble.len() < SCRAMBLE_LEN {
        return false;
    }
    let mask = sha1(&[challenge(scramble), stage2]);
    let mut candidate = [0u8; 20];
    for ((c, r), m) in candidate.iter_mut().zip(response).zip(mask.iter()) {
        *c = r ^ m;
    }
    let check = sha1(&[&candidate]);
    check.ct_eq(stage2).into()
}

/// MariaDB's `client_ed25519` plugin (`plugin/auth_ed25519`): the server
/// sends a 32-byte nonce; the client answers with the Ed25519 signature of
/// it, made with the password itself as the secret key: MariaDB's
/// `crypto_sign` (ref10) takes `az = SHA-512(password)` as the expanded key
/// (scalar = clamp(az[0..32]), nonce prefix = az[32..64]) where standard
/// Ed25519 hashes a 32-byte seed. mysql.global_priv keeps the public key
/// `A = scalar * B`, base64 without padding.
pub const CLIENT_ED25519: &str = "client_ed25519";

/// Length of the server's nonce for client_ed25519.
pub const ED25519_NONCE_LEN: usize = 32;

fn ed25519_expanded(password: &[u8]) -> ed25519_dalek::hazmat::ExpandedSecretKey {
    use sha2::Digest as _;
    let az: [u8; 64] = sha2::Sha512::digest(password).into();
    ed25519_dalek::hazmat::ExpandedSecretKey::from_bytes(&az)
}

/// The public key mysqld stores for `password` (32 bytes).
pub fn ed25519_public_key(password: &[u8]) -> [u8; 32] {
    let esk = ed25519_expanded(password);
    ed25519_dalek::VerifyingKey::from(&esk).to_bytes()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// An ed25519 public key as mysqld stores it: base64 of 32 bytes, without
/// padding (43 characters; a padded one is accepted too).
pub fn ed25519_key_from_text(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().trim_end_matches('=');
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(33);
    for ch in text.bytes() {
        let v = BASE64.iter().position(|&c| c == ch)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if bits != 0 {
        return None;
    }
    out.try_into().ok()
}

/// An ed25519 public key as mysqld stores it (`mysql.global_priv`): base64
/// without padding.
pub fn ed25519_key_text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The client's answer to the server's `nonce`: a 64-byte signature.
pub fn sign_ed25519(password: &[u8], nonce: &[u8]) -> [u8; 64] {
    let esk = ed25519_expanded(password);
    let public = ed25519_dalek::VerifyingKey::from(&esk);
    ed25519_dalek::hazmat::raw_sign::<sha2::Sha512>(&esk, nonce, &public).to_bytes()
}

/// Checks a client's signature of `nonce` (strict Ed25519 verification:
/// what any correct signer produces passes). Wrong lengths, a malformed
/// key or signature give `false`.
pub fn verify_ed25519(public: &[u8; 32], nonce: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(nonce, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently with PyMySQL's `_auth.ed25519_password` (PyNaCl
    // scalar arithmetic, written after MariaDB's client_ed25519) for
    // password "secret" and nonce = bytes 0..=31; the public key with
    // crypto_scalarmult_ed25519_base_noclamp(clamp(SHA-512("secret")[..32])),
    // base64 "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY".
    #[test]
    fn ed25519_known_vector() {
        let nonce: Vec<u8> = (0..32).collect();
        let public = ed25519_public_key(b"secret");
        assert_eq!(
            public.to_vec(),
            hex("648814444520e4f56043a2ec9215e63be7992d2d270bc6dee873e36164786096")
        );
        let sig = sign_ed25519(b"secret", &nonce);
        assert_eq!(
            sig.to_vec(),
            hex(
                "546c3e9311d19ee389d1ae5d945821bfe459423910136f16b3bd2ae89fd7d63b\
                 449e689f4be812891a85b8f999076446d92adb83d0707215aaa60b5a23220907"
            )
        );
        assert!(verify_ed25519(&public, &nonce, &sig));
        let mut bad = sig;
        bad[5] ^= 1;
        assert!(!verify_ed25519(&public, &nonce, &bad));
        assert!(!verify_ed25519(&public, &nonce[1..], &sig));
        assert!(!verify_ed25519(&public, &nonce, &sig[..63]));
        assert!(!verify_ed25519(&public, &nonce, &[]));
        assert!(!verify_ed25519(
            &ed25519_public_key(b"Secret"),
            &nonce,
            &sig
        ));
        // An empty password is a key like any other.
        let empty = sign_ed25519(b"", &nonce);
        assert!(verify_ed25519(&ed25519_public_key(b""), &nonce, &empty));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Algorithm from
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html
    // Stage 2 of "secret" is mysqld's PASSWORD('secret') =
    // *14E65567ABDB5135D0CFD9A70B3032C179A49EE7. The response was computed
    // independently with Python's hashlib for scramble = bytes 1..=20:
    //   s1 = sha1(b"secret"); s2 = sha1(s1); x = sha1(scramble + s2); s1 ^ x
    const SCRAMBLE: [u8; 20] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ];

    #[test]
    fn known_vector() {
        assert_eq!(
            native_password_stage1(b"secret").to_vec(),
            hex("e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4")
        );
        let stage2 = native_password_stage2(b"secret");
        assert_eq!(
            stage2.to_vec(),
            hex("14e65567abdb5135d0cfd9a70b3032c179a49ee7")
        );
        let resp = scramble_native(b"secret", &SCRAMBLE);
        assert_eq!(resp, hex("b32bb3a583e1340c0a1108d58b1be49781ad8c2f"));
        assert_eq!(
            scramble_native_from_stage1(&native_password_stage1(b"secret"), &SCRAMBLE),
            resp
        );
        // A scramble with mysqld's trailing NUL gives the same response.
        let mut with_nul = SCRAMBLE.to_vec();
        with_nul.push(0);
        assert_eq!(scramble_native(b"secret", &with_nul), resp);

        assert!(verify_native(Some(&stage2), &SCRAMBLE, &resp));
        assert!(verify_native(Some(&stage2), &with_nul, &resp));
    }

    #[test]
    fn rejects() {
        let stage2 = native_password_stage2(b"secret");
        let resp = scramble_native(b"secret", &SCRAMBLE);
        let mut bad = resp.clone();
        bad[7] ^= 1;
        assert!(!verify_native(Some(&stage2), &SCRAMBLE, &bad));
        assert!(!verify_native(Some(&stage2), &SCRAMBLE, &resp[..19]));
        assert!(!verify_native(Some(&stage2), &SCRAMBLE, &[]));
        assert!(!verify_native(Some(&stage2), &SCRAMBLE[..10], &resp));
        let wrong = scramble_native(b"Secret", &SCRAMBLE);
        assert!(!verify_native(Some(&stage2), &SCRAMBLE, &wrong));
        let mut other_scramble = SCRAMBLE;
        other_scramble[0] = 99;
        assert!(!verify_native(Some(&stage2), &other_scramble, &resp));
    }

    #[test]
    fn empty_password() {
        assert!(scramble_native(b"", &SCRAMBLE).is_empty());
        assert!(verify_native(None, &SCRAMBLE, &[]));
        assert!(!verify_native(None, &SCRAMBLE, &[0u8; 20]));
        // An account with a password never accepts an empty response.
        assert!(!verify_native(
            Some(&native_password_stage2(b"x")),
            &SCRAMBLE,
            &[]
        ));
    }
}
