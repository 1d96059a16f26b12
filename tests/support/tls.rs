//! Certificates made by a test: a CA of its own and a leaf certificate it
//! signed for `localhost` and `127.0.0.1` (a cluster names its shards by
//! address, so a client checks the address against the certificate), for
//! TLS stores and order backends. Nothing here is trusted by the system:
//! a client trusts the CA only when given its file.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A test CA and one leaf it signed, in PEM and DER.
pub struct TestCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub leaf_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

/// Where [`TestCa::write`] put the PEM files.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A fresh CA and a leaf for `localhost` and `127.0.0.1`.
    pub fn new() -> TestCa {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "bigtap test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params")
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("leaf certificate");
        TestCa {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
            leaf_der: leaf.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes `ca.pem`, `server.pem` and `server.key` into `dir`.
    pub fn write(&self, dir: &Path) -> TlsFiles {
        let put = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("certificate file written");
            p
        };
        TlsFiles {
            ca: put("ca.pem", &self.ca_pem),
            cert: put("server.pem", &self.cert_pem),
            key: put("server.key", &self.key_pem),
        }
    }
}

impl TlsFiles {
    /// redis-server's TLS settings for these files, on `tls_port`; clients
    /// need no certificate of their own (as with managed Redis).
    pub fn redis_args(&self, tls_port: u16) -> Vec<String> {
        let s = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            s(&self.cert),
            "--tls-key-file".into(),
            s(&self.key),
            "--tls-ca-cert-file".into(),
            s(&self.ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}
