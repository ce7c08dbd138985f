//! Whom the client trusts over TLS, and how it remembers.
//!
//! - `--tls`: the system's trusted roots (`rustls-native-certs`: the same
//!   store the rest of the machine uses, so an organisation's CA installed
//!   there, or a certbot certificate, just works). A certificate they do not
//!   vouch for falls back to trust on first use: on a terminal the person is
//!   shown its fingerprint and asked; a yes is remembered in
//!   [`known_hosts_path`], like ssh's `known_hosts`, and a later, different
//!   certificate for the same server is refused loudly.
//! - `--tls-ca FILE`: that authority only (`server tls-init`'s `ca.pem`).
//! - `--tls-fingerprint SHA256`: exactly that certificate, nothing else.
//!
//! The handshake's signatures are always checked; trust only decides whose
//! certificate may sign it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::tls::{digest, format_fingerprint, provider};

/// Largest known_hosts file read: thousands of servers fit in far less.
const MAX_KNOWN_HOSTS: u64 = 1024 * 1024;

/// Whom to trust, as the flags say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots, then the person (`--tls`).
    System,
    /// One authority's certificate file (`--tls-ca`).
    Ca(PathBuf),
    /// One certificate, by its SHA-256 digest (`--tls-fingerprint`).
    Pin([u8; 32]),
}

/// Where remembered certificates are kept:
/// `$XDG_CONFIG_HOME/chatroom/known_hosts`, or `~/.config/chatroom/known_hosts`.
pub fn known_hosts_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("chatroom").join("known_hosts"))
}

/// The fingerprint remembered for `server` (`host:port`), if any.
pub fn remembered(file: &Path, server: &str) -> io::Result<Option<String>> {
    let text = match fs::File::open(file) {
        Ok(f) => {
            let mut text = String::new();
            io::Read::read_to_string(&mut io::Read::take(f, MAX_KNOWN_HOSTS), &mut text)?;
            text
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some(name), Some(fingerprint)) if name.eq_ignore_ascii_case(server) => {
                Some(fingerprint.to_string())
            }
            _ => None,
        }
    }))
}

/// Remembers `fingerprint` for `server`, creating the file (and its folder)
/// if needed.
pub fn remember(file: &Path, server: &str, fingerprint: &str) -> io::Result<()> {
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(out, "{server} {fingerprint}")
}

/// What the verifier saw when it refused a certificate, for the client to
/// explain (or to ask the person about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nobody vouches for it, and it was never trusted here.
    Unknown {
        /// Its fingerprint.
        fingerprint: String,
        /// Why the roots did not vouch for it.
        why: String,
    },
    /// It differs from the one trusted here before.
    Changed {
        /// The one remembered.
        known: String,
        /// The one presented now.
        now: String,
    },
    /// It is not the pinned one.
    NotPinned {
        /// The one presented.
        now: String,
    },
}

/// Checks the server's certificate as [`Trust`] says, and notes why it
/// refused one.
#[derive(Debug)]
pub struct Verifier {
    trust: Trust,
    /// The roots' verdict (`None`: the system has no roots at all).
    roots: Option<Arc<WebPkiServerVerifier>>,
    /// Where trusted-on-first-use certificates are remembered, and under
    /// which name this server is.
    known_hosts: Option<PathBuf>,
    server: String,
    provider: Arc<CryptoProvider>,
    refusal: Mutex<Option<Refusal>>,
}

impl Verifier {
    /// A verifier for `server` (`host:port`, as known_hosts names it).
    pub fn new(trust: Trust, server: &str) -> Result<Verifier, String> {
        let provider = provider();
        let roots = match &trust {
            Trust::Pin(_) => None,
            Trust::Ca(file) => {
                let mut store = RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                    .and_then(|certs| certs.collect::<Result<_, _>>())
                    .map_err(|e| format!("cannot read --tls-ca {}: {e}", file.display()))?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "--tls-ca {} holds no usable certificate (expected PEM, like tls-init's ca.pem)",
                        file.display()
                    ));
                }
                Some(build(store, &provider)?)
            }
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                for error in &found.errors {
                    log::debug!("system certificates: {error}");
                }
                let mut store = RootCertStore::empty();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    log::debug!("the system has no trusted root certificates");
                    None
                } else {
                    Some(build(store, &provider)?)
                }
            }
        };
        Ok(Verifier {
            known_hosts: matches!(trust, Trust::System)
                .then(known_hosts_path)
                .flatten(),
            trust,
            roots,
            server: server.to_string(),
            provider,
            refusal: Mutex::new(None),
        })
    }

    /// Why the last certificate was refused, if the verifier refused one.
    pub fn take_refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn refuse(
        &self,
        refusal: Refusal,
        error: rustls::Error,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
        Err(error)
    }

    /// Where this verifier remembers certificates.
    pub fn known_hosts(&self) -> Option<&Path> {
        self.known_hosts.as_deref()
    }
}

fn build(
    store: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
        .build()
        .map_err(|e| format!("cannot set up certificate checks: {e}"))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = format_fingerprint(&digest(end_entity));
        let unvouched = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        if let Trust::Pin(pin) = &self.trust {
            if &digest(end_entity) == pin {
                return Ok(ServerCertVerified::assertion());
            }
            return self.refuse(
                Refusal::NotPinned { now: presented },
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ),
            );
        }
        let verdict = match &self.roots {
            Some(roots) => {
                roots.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(unvouched.clone()),
        };
        let error = match verdict {
            Ok(verified) => return Ok(verified),
            Err(e) if matches!(self.trust, Trust::System) => e,
            Err(e) => return Err(e),
        };
        let why = match &self.roots {
            None => "this system has no trusted root certificates".to_string(),
            Some(_) => describe(&error),
        };
        let known = match &self.known_hosts {
            Some(file) => remembered(file, &self.server).unwrap_or_else(|e| {
                log::warn!("cannot read {}: {e}", file.display());
                None
            }),
            None => None,
        };
        match known {
            Some(known) if known.eq_ignore_ascii_case(&presented) => {
                Ok(ServerCertVerified::assertion())
            }
            Some(known) => self.refuse(
                Refusal::Changed {
                    known,
                    now: presented,
                },
                error,
            ),
            None => self.refuse(
                Refusal::Unknown {
                    fingerprint: presented,
                    why,
                },
                error,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate error in words.
pub fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError as E;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            E::UnknownIssuer => "it is not signed by an authority trusted here".into(),
            E::Expired | E::ExpiredContext { .. } => "it has expired".into(),
            E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet".into(),
            E::NotValidForName | E::NotValidForNameContext { .. } => {
                "it is for another name than the --host given".into()
            }
            E::Revoked => "it was revoked".into(),
            E::BadSignature => "its signature is wrong".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}
