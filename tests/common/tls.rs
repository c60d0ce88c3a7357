//! Certificates for TLS tests, made with the `openssl` command-line tool
//! in a scratch directory: a CA, and server certificates signed by it for
//! 127.0.0.1 and localhost (or for another name, to see verification fail).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{remove_scratch_dir, scratch_dir};

/// A CA and the directory its files live in (deleted on drop).
pub struct TestCa {
    pub dir: PathBuf,
    /// `ca.crt`, PEM.
    pub cert: PathBuf,
    key: PathBuf,
    serial: std::cell::Cell<u32>,
}

/// A certificate signed by a [`TestCa`], with its key (PEM files).
#[derive(Clone, Debug)]
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 fingerprint as `openssl x509 -fingerprint` prints it.
    pub fingerprint: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is needed for TLS tests (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA named `name` (its subject's CN).
    pub fn new(name: &str) -> TestCa {
        let dir = scratch_dir("tls");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            dir,
            serial: std::cell::Cell::new(1),
        }
    }

    /// A server certificate for `names` (`IP:127.0.0.1`, `DNS:localhost`,
    /// ...), with an EC P-256 key, files named after `stem`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> TestCert {
        let key = format!("{stem}.key");
        let csr = format!("{stem}.csr");
        let crt = format!("{stem}.crt");
        let ext = format!("{stem}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName = {}\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n",
                names.join(", ")
            ),
        )
        .expect("write ext file");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={stem}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        let serial = self.serial.get();
        self.serial.set(serial + 1);
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "30",
                "-sha256",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &crt])
            .current_dir(&self.dir)
            .output()
            .expect("openssl x509");
        let text = String::from_utf8_lossy(&out.stdout);
        let fingerprint = text
            .trim()
            .split_once('=')
            .map(|(_, f)| f.to_string())
            .unwrap_or_default();
        let _ = &self.key;
        TestCert {
            cert: self.dir.join(crt),
            key: self.dir.join(key),
            fingerprint,
        }
    }

    /// A certificate for 127.0.0.1 and localhost.
    pub fn localhost(&self, stem: &str) -> TestCert {
        self.issue(stem, &["IP:127.0.0.1", "DNS:localhost"])
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        remove_scratch_dir(&self.dir);
    }
}
