//! `caching_sha2_password`: MySQL 8's default authentication (the only one
//! left in MySQL 9), both ways.
//!
//! Reference: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html>.
//!
//! ```text
//! stage1   = SHA256(password)
//! stage2   = SHA256(stage1)
//! response = stage1 XOR SHA256(stage2 ++ nonce[0..20])       -- 32 bytes
//! ```
//!
//! After the response the server sends an AuthMoreData packet (`0x01`
//! then one byte): `0x03` fast authentication succeeded (its cache knew
//! the account; an OK follows), or `0x04` full authentication is needed:
//! the client then sends the password in clear over TLS, or, without TLS,
//! asks for the server's RSA public key (`0x02`), gets it as PEM in an
//! AuthMoreData packet, and sends `(password ++ NUL) XOR nonce` encrypted
//! with RSA-OAEP (SHA-1).
//!
//! The funnel as a server knows its users' passwords, so it can always
//! verify the fast response, and never needs full authentication.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ProtocolError;

pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";

/// First byte of an AuthMoreData packet.
pub const AUTH_MORE_DATA: u8 = 0x01;
/// The client's request for the server's RSA public key.
pub const REQUEST_PUBLIC_KEY: u8 = 0x02;
/// AuthMoreData: the fast response was right; an OK follows.
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
/// AuthMoreData: the server needs the password itself.
pub const PERFORM_FULL_AUTH: u8 = 0x04;

/// Length of the nonce that counts (mysqld sends 20 bytes and a NUL).
pub const NONCE_LEN: usize = 20;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn nonce_part(nonce: &[u8]) -> &[u8] {
    nonce.get(..NONCE_LEN).unwrap_or(nonce)
}

/// SHA256(SHA256(password)): what a verifier needs to check a response.
pub fn stage2(password: &[u8]) -> [u8; 32] {
    sha256(&[&sha256(&[password])])
}

/// The client's fast-authentication response. An empty password gives an
/// empty response, as MySQL's clients send.
pub fn scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = sha256(&[password]);
    let stage2 = sha256(&[&stage1]);
    let mask = sha256(&[&stage2, nonce_part(nonce)]);
    stage1.iter().zip(mask).map(|(a, b)| a ^ b).collect()
}

/// Check a fast-authentication response against the account's `stage2`
/// (None: the account has an empty password, which only an empty response
/// matches).
pub fn verify(stage2: Option<&[u8; 32]>, nonce: &[u8], response: &[u8]) -> bool {
    let Some(stage2) = stage2 else {
        return response.is_empty();
    };
    let Ok(response) = <&[u8; 32]>::try_from(response) else {
        return false;
    };
    let mask = sha256(&[stage2, nonce_part(nonce)]);
    let mut stage1 = [0u8; 32];
    for (i, b) in stage1.iter_mut().enumerate() {
        *b = response[i] ^ mask[i];
    }
    sha256(&[&stage1]).ct_eq(stage2).into()
}

/// The data of an AuthMoreData packet (after its `0x01`).
pub fn decode_auth_more_data(payload: &[u8]) -> Result<&[u8], ProtocolError> {
    match payload.split_first() {
        Some((&AUTH_MORE_DATA, rest)) => Ok(rest),
        _ => Err(ProtocolError::Invalid("not an AuthMoreData packet")),
    }
}

/// The full-authentication message without TLS: `(password ++ NUL) XOR
/// nonce`, encrypted with RSA-OAEP (SHA-1) under the server's public key
/// (`pem`, as the server sent it: SubjectPublicKeyInfo or PKCS#1).
pub fn encrypt_password(
    password: &[u8],
    nonce: &[u8],
    pem: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let pem = std::str::from_utf8(pem)
        .map_err(|_| ProtocolError::Invalid("public key is not text"))?
        .trim_matches(char::from(0))
        .trim();
    let key = rsa::RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| ProtocolError::Invalid("bad RSA public key"))?;
    let nonce = nonce_part(nonce);
    if nonce.is_empty() {
        return Err(ProtocolError::Invalid("empty nonce"));
    }
    let mut message: Vec<u8> = password.to_vec();
    message.push(0);
    for (i, b) in message.iter_mut().enumerate() {
        *b ^= nonce[i % nonce.len()];
    }
    let mut rng = rsa::rand_core::OsRng;
    key.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), &message)
        .map_err(|_| ProtocolError::Invalid("password too long for the RSA key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &[u8; 20] = b"abcdefghij0123456789";

    #[test]
    fn a_response_verifies_against_its_password_only() {
        let r = scramble(b"secret", NONCE);
        assert_eq!(r.len(), 32);
        assert!(verify(Some(&stage2(b"secret")), NONCE, &r));
        assert!(!verify(Some(&stage2(b"other")), NONCE, &r));
        assert!(!verify(
            Some(&stage2(b"secret")),
            b"01234567890123456789",
            &r
        ));
        assert!(!verify(Some(&stage2(b"secret")), NONCE, &r[..31]));
        assert!(!verify(Some(&stage2(b"secret")), NONCE, b""));
        // The NUL after mysqld's 20 bytes is not part of the nonce.
        let mut with_nul = NONCE.to_vec();
        with_nul.push(0);
        assert_eq!(scramble(b"secret", &with_nul), r);
    }

    #[test]
    fn empty_passwords_give_and_need_empty_responses() {
        assert!(scramble(b"", NONCE).is_empty());
        assert!(verify(None, NONCE, b""));
        assert!(!verify(None, NONCE, &scramble(b"x", NONCE)));
    }

    #[test]
    fn auth_more_data_is_recognised() {
        assert_eq!(decode_auth_more_data(&[1, 3]).unwrap(), &[3]);
        assert!(decode_auth_more_data(&[0, 3]).is_err());
        assert!(decode_auth_more_data(&[]).is_err());
    }

    #[test]
    fn bad_public_keys_are_errors() {
        assert!(encrypt_password(b"pw", NONCE, b"not a key").is_err());
        assert!(encrypt_password(b"pw", NONCE, &[0xff, 0xfe]).is_err());
        assert!(encrypt_password(
            b"pw",
            NONCE,
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }
}
