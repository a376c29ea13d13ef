//! `X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the raw body with the app secret,
//! compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("no app secret configured")]
    NoSecret,
}

/// A well-formed `X-Hub-Signature-256` value: the 32 bytes it claims. Parsed from the
/// headers alone, so a request without one is refused before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed([u8; 32]);

impl Claimed {
    pub fn parse(header: Option<&[u8]>) -> Result<Claimed, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_sig = header
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Malformed)?;
        if hex_sig.len() != 64 {
            return Err(SignatureError::Malformed);
        }
        let mut claimed = [0u8; 32];
        hex::decode_to_slice(hex_sig.to_ascii_lowercase(), &mut claimed)
            .map_err(|_| SignatureError::Malformed)?;
        Ok(Claimed(claimed))
    }

    /// Does the HMAC of `body` under `secret` match (compared in constant time)?
    pub fn verify(&self, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        if secret.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::NoSecret)?;
        mac.update(body);
        mac.verify_slice(&self.0)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// Verify `header` (the raw header value) over `body`.
pub fn verify(secret: &[u8], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    Claimed::parse(header)?.verify(secret, body)
}

/// The header value Meta would send for `body` (used by tests and the load driver).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let sig = sign(b"s3cret", b"{\"a\":1}");
        assert_eq!(
            verify(b"s3cret", Some(sig.as_bytes()), b"{\"a\":1}"),
            Ok(())
        );
        assert_eq!(
            verify(
                b"s3cret",
                Some(sig.to_uppercase().replace("SHA256=", "sha256=").as_bytes()),
                b"{\"a\":1}"
            ),
            Ok(())
        );
    }

    #[test]
    fn tampering_missing_or_malformed_headers_are_refused() {
        let sig = sign(b"s3cret", b"{\"a\":1}");
        assert_eq!(
            verify(b"s3cret", Some(sig.as_bytes()), b"{\"a\":2}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some(sig.as_bytes()), b"{\"a\":1}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"s3cret", None, b"x"), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s3cret", Some(b"sha1=abcd"), b"x"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s3cret", Some(b"sha256=zz"), b"x"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"", Some(sig.as_bytes()), b"x"),
            Err(SignatureError::NoSecret)
        );
    }
}
