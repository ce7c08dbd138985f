//! The server's TLS certificate and key: read from PEM files, served to every
//! handshake, and swapped without a restart.
//!
//! [`Certificates`] is what rustls asks for a certificate at each handshake
//! (a [`ResolvesServerCert`]). It holds the current chain and key as one
//! `Arc<CertifiedKey>`; [`Certificates::reload`] reads the files again and
//! swaps that `Arc` only if they are good, so a broken new file keeps the old
//! certificate (and says why). Open connections keep the keys they agreed on;
//! only new handshakes see the new certificate. The server reloads on SIGHUP
//! (certbot's deploy hook sends it) and when [`Certificates::watch`] sees the
//! files change on disk.
//!
//! [`init`] is `server tls-init`: a private certificate authority and a server
//! certificate for an organisation that has none.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread;
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest certificate or key file read: a chain of a few certificates is a
/// few kilobytes; anything far bigger is not one.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// How often the watcher looks at the files' modification times.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

pub use crate::tls::{fingerprint, provider};

/// Why the certificate or key could not be used, in words an operator can act on.
#[derive(Debug)]
pub struct CertError(String);

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

/// Reads a small file whole, refusing anything larger than [`MAX_PEM_FILE`].
fn read_small(path: &Path, what: &str) -> Result<Vec<u8>, CertError> {
    let fail = |e: io::Error| {
        CertError(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    };
    let file = fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(CertError(format!(
            "the TLS {what} {} is larger than {MAX_PEM_FILE} bytes; is it the right file?",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Reads a certificate chain and its private key from PEM files (certbot's
/// `fullchain.pem` and `privkey.pem` as they are) and checks that they belong
/// together.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let pem = read_small(cert, "certificate")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            CertError(format!(
                "the TLS certificate {} is not valid PEM: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(CertError(format!(
            "{} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks, like certbot's fullchain.pem)",
            cert.display()
        )));
    }
    let pem = read_small(key, "key")?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        CertError(format!(
            "{} holds no usable private key ({e}); expected a PEM private key, like certbot's privkey.pem",
            key.display()
        ))
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        CertError(format!(
            "the key {} does not fit the certificate {}: {e}",
            key.display(),
            cert.display()
        ))
    })
}

/// What a file looks like on disk, to notice that it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        // Follows symbolic links: certbot's live/ files point into archive/.
        Stamp(fs::metadata(path).ok().map(|m| {
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                m.ino(),
            )
        }))
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A different certificate is served from now on; its fingerprint.
    Changed(String),
    /// The files hold the certificate already served.
    Same,
}

/// The certificate the server presents, swapped on reload.
///
/// Promises:
/// 1. Every handshake gets a complete, matching chain and key: a reload
///    swaps one `Arc` or nothing.
/// 2. A reload that fails leaves the current certificate in place.
/// 3. Handshakes never wait on a reload's file reads.
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Serialises reloads (SIGHUP and the watcher may meet).
    reloading: Mutex<()>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the files; fails if they are not a good pair.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<Certificates>, CertError> {
        let loaded = load(cert, key)?;
        Ok(Arc::new(Certificates {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
            reloading: Mutex::new(()),
        }))
    }

    /// The chain and key served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The fingerprint of the certificate served now.
    pub fn fingerprint(&self) -> String {
        self.current()
            .cert
            .first()
            .map(|der| fingerprint(der))
            .unwrap_or_default()
    }

    /// Reads the files again and serves them if they are good; otherwise
    /// keeps what it serves and says why.
    pub fn reload(&self) -> Result<Reloaded, CertError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = load(&self.cert_path, &self.key_path)?;
        let before = self.fingerprint();
        let after = loaded
            .cert
            .first()
            .map(|der| fingerprint(der))
            .unwrap_or_default();
        if before == after {
            return Ok(Reloaded::Same);
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(Reloaded::Changed(after))
    }

    /// Reloads and logs the outcome: what SIGHUP and the watcher do.
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(Reloaded::Changed(fingerprint)) => log::info!(
                "{why}: TLS certificate reloaded from {}; new connections get SHA-256 {fingerprint}",
                self.cert_path.display()
            ),
            Ok(Reloaded::Same) => log::info!(
                "{why}: TLS certificate {} unchanged",
                self.cert_path.display()
            ),
            Err(e) => log::error!(
                "{why}: TLS certificate not reloaded, still serving SHA-256 {}: {e}",
                self.fingerprint()
            ),
        }
    }

    /// Starts a thread that reloads when the files change on disk. A change
    /// is acted on once it has held still for one look (so a certificate
    /// and key written one after the other are read as a pair). The thread
    /// ends when the certificates are dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> io::Result<()> {
        let weak: Weak<Certificates> = Arc::downgrade(self);
        let stamps = |c: &Certificates| (Stamp::of(&c.cert_path), Stamp::of(&c.key_path));
        let mut served = stamps(self);
        thread::Builder::new()
            .name("tls-watch".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut seen = served.clone();
                loop {
                    thread::sleep(every);
                    let Some(certs) = weak.upgrade() else {
                        return;
                    };
                    let now = stamps(&certs);
                    if now != served && now == seen {
                        served = now.clone();
                        certs.reload_and_log("the certificate files changed");
                    }
                    seen = now;
                }
            })?;
        Ok(())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What `server tls-init` made.
#[derive(Debug)]
pub struct Init {
    /// The certificate authority's certificate: what clients trust (`--tls-ca`).
    pub ca: PathBuf,
    /// Whether the authority was made now (false: an existing one signed).
    pub new_ca: bool,
    /// The server's certificate (`--tls-cert`).
    pub cert: PathBuf,
    /// The server's private key (`--tls-key`).
    pub key: PathBuf,
    /// The server certificate's SHA-256 fingerprint.
    pub fingerprint: String,
}

/// Days a server certificate made by `tls-init` is valid: 825, the longest
/// that Apple's and others' clients accept.
const SERVER_DAYS: i64 = 825;
/// Years the private authority is valid.
const CA_YEARS: i32 = 10;

/// `server tls-init`: in `dir/tls/`, a certificate authority (made once,
/// then reused, so clients that trust it keep trusting the server) and a new
/// server certificate for `names`, signed by it. Keys are readable by their
/// owner only. `localhost` also covers 127.0.0.1 and ::1.
pub fn init(dir: &Path, names: &[String]) -> Result<Init, Box<dyn std::error::Error>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    if names.is_empty() {
        return Err(
            "name at least one host the clients connect to, e.g. --name chat.example.org".into(),
        );
    }
    let tls = dir.join("tls");
    fs::create_dir_all(&tls).map_err(|e| format!("cannot create {}: {e}", tls.display()))?;
    let ca_path = tls.join("ca.pem");
    let ca_key_path = tls.join("ca-key.pem");
    let today = chrono::Utc::now().date_naive();
    let ymd = |date: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8)
    };

    let (issuer, new_ca) = if ca_path.exists() && ca_key_path.exists() {
        let key_pem = fs::read_to_string(&ca_key_path)
            .map_err(|e| format!("cannot read {}: {e}", ca_key_path.display()))?;
        let cert_pem = fs::read_to_string(&ca_path)
            .map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{} is not a usable key: {e}", ca_key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| format!("{} is not a usable CA certificate: {e}", ca_path.display()))?;
        (issuer, false)
    } else {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("chatroom CA for {}", names[0]));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = ymd(today - chrono::Days::new(1));
        params.not_after = ymd(today
            .checked_add_months(chrono::Months::new(12 * CA_YEARS as u32))
            .unwrap_or(today));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_public(&ca_path, cert.pem().as_bytes())?;
        (Issuer::new(params, key), true)
    };

    let mut sans: Vec<String> = names.to_vec();
    if names.iter().any(|n| n.eq_ignore_ascii_case("localhost")) {
        for ip in ["127.0.0.1", "::1"] {
            if !sans.iter().any(|n| n == ip) {
                sans.push(ip.to_string());
            }
        }
    }
    let mut params =
        CertificateParams::new(sans).map_err(|e| format!("not a host name or address: {e}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = ymd(today - chrono::Days::new(1));
    params.not_after = ymd(today + chrono::Days::new(SERVER_DAYS as u64));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let cert_path = tls.join("cert.pem");
    let key_path = tls.join("key.pem");
    // The key first: a watching server that sees only the key change keeps
    // its old pair until the certificate follows.
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_public(&cert_path, cert.pem().as_bytes())?;
    Ok(Init {
        ca: ca_path,
        new_ca,
        cert: cert_path,
        key: key_path,
        fingerprint: fingerprint(cert.der()),
    })
}

/// Writes a file whole, through a temporary file renamed over it, with `mode`.
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(fail)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path))
        .map_err(|e| {
            let _ = fs::remove_file(&temp);
            fail(e)
        })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_with_mode(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_with_mode(path, bytes, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_a_pair_that_loads_and_a_second_run_keeps_the_authority() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(dir.path(), &["localhost".into()]).unwrap();
        assert!(first.new_ca);
        let loaded = load(&first.cert, &first.key).unwrap();
        assert_eq!(fingerprint(&loaded.cert[0]), first.fingerprint);
        let ca = fs::read(&first.ca).unwrap();
        let second = init(dir.path(), &["localhost".into()]).unwrap();
        assert!(!second.new_ca);
        assert_ne!(second.fingerprint, first.fingerprint);
        assert_eq!(fs::read(&second.ca).unwrap(), ca);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&second.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_broken_file_keeps_the_certificate_served() {
        let dir = tempfile::tempdir().unwrap();
        let made = init(dir.path(), &["localhost".into()]).unwrap();
        let certs = Certificates::open(&made.cert, &made.key).unwrap();
        let before = certs.fingerprint();
        fs::write(&made.cert, "not a certificate").unwrap();
        let error = certs.reload().unwrap_err().to_string();
        assert!(error.contains("holds no certificate"), "{error}");
        assert_eq!(certs.fingerprint(), before);
        let again = init(dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(
            certs.reload().unwrap(),
            Reloaded::Changed(again.fingerprint.clone())
        );
        assert_eq!(certs.fingerprint(), again.fingerprint);
    }
}
