//! What both ends of a TLS connection share: the one crypto provider
//! (`ring`) and certificate fingerprints (SHA-256, written the way
//! `openssl x509 -fingerprint -sha256` prints them).

use std::fmt::Write as _;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider of every TLS connection of this crate: one, `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 digest of a DER certificate.
pub fn digest(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A SHA-256 digest as `AB:CD:...`.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    let mut text = String::with_capacity(95);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02X}");
    }
    text
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    format_fingerprint(&digest(der))
}

/// Reads a fingerprint as people paste it: hex, with or without colons or
/// spaces, any case, with or without a leading `SHA256:` or `sha256=`.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let body = ["sha256:", "sha256=", "sha256 fingerprint="]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .unwrap_or(&lower);
    let hex: String = body
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bad = || {
        format!(
            "{trimmed:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed, as `server tls-init` prints it)"
        )
    };
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_look_like_openssl_prints_them_and_read_back() {
        let text = fingerprint(b"hello");
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.starts_with("2C:F2:4D:BA"), "{text}");
        assert_eq!(parse_fingerprint(&text), Ok(digest(b"hello")));
        let bare = text.replace(':', "").to_lowercase();
        assert_eq!(parse_fingerprint(&bare), Ok(digest(b"hello")));
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{text}")),
            Ok(digest(b"hello"))
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
