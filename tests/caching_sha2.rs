//! caching_sha2_password's computations, checked against independent
//! implementations: PyMySQL's scramble (its own code, run here) and
//! OpenSSL's RSA-OAEP decryption of the funnel's full-authentication
//! message.

use std::process::Command;

use funnel::protocol::caching_sha2::{encrypt_password, scramble, stage2, verify};

fn pymysql_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    let script = format!(
        "import pymysql._auth as a, sys; sys.stdout.write(a.scramble_caching_sha2(bytes.fromhex('{}'), bytes.fromhex('{}')).hex())",
        hex(password),
        hex(nonce)
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs (scripts/test.sh installs PyMySQL)");
    assert!(
        out.status.success(),
        "PyMySQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    unhex(std::str::from_utf8(&out.stdout).unwrap())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn scrambles_match_pymysql() {
    let cases: [(&[u8], &[u8]); 5] = [
        (b"secret", b"abcdefghij0123456789"),
        (
            b"app_pw",
            b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14",
        ),
        ("pässwörd ✓".as_bytes(), b"zzzzzzzzzzzzzzzzzzzz"),
        (
            &[b'x'; 200],
            b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0\xef\xee\xed\xec",
        ),
        (b"", b"abcdefghij0123456789"),
    ];
    for (password, nonce) in cases {
        let ours = scramble(password, nonce);
        assert_eq!(
            ours,
            pymysql_scramble(password, nonce),
            "password {password:?}"
        );
        let stage = (!password.is_empty()).then(|| stage2(password));
        assert!(verify(stage.as_ref(), nonce, &ours));
    }
}

#[test]
fn full_authentication_message_decrypts_with_openssl() {
    let dir = std::env::temp_dir().join(format!("funnel-sha2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let public = dir.join("public.pem");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let (k, p) = (key.to_str().unwrap(), public.to_str().unwrap());
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        k,
    ]);
    run(&["pkey", "-in", k, "-pubout", "-out", p]);
    let nonce = b"0123456789abcdefghij\0";
    let password = b"a long enough password, longer than the nonce";
    // mysqld sends the key with a trailing NUL at times: tolerated.
    let mut pem = std::fs::read(&public).unwrap();
    pem.push(0);
    let sealed = encrypt_password(password, nonce, &pem).unwrap();
    assert_eq!(sealed.len(), 256);
    let sealed_file = dir.join("sealed");
    std::fs::write(&sealed_file, &sealed).unwrap();
    let plain = run(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        k,
        "-in",
        sealed_file.to_str().unwrap(),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
    ]);
    let mut expected = password.to_vec();
    expected.push(0);
    for (i, b) in expected.iter_mut().enumerate() {
        *b ^= nonce[i % 20];
    }
    assert_eq!(plain, expected);
    // PKCS#1 ("BEGIN RSA PUBLIC KEY"), as older servers send it, works too.
    let pkcs1 = run(&["rsa", "-pubin", "-in", p, "-RSAPublicKey_out"]);
    assert!(encrypt_password(password, nonce, &pkcs1).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
