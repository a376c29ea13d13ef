//! Standard Webhooks v1 signing (standard-webhooks/spec): `webhook-signature` is a
//! space-separated list of `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per
//! secret in force (two while a secret is being rotated); a secret is `whsec_` and the base64
//! of its key's bytes.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Bytes of a new secret's key (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;
/// What a secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("a webhook secret must be `whsec_` and base64")]
    BadSecret,
    #[error("the system's random source failed")]
    Random,
}

/// A new secret, `whsec_…`, from the OS's random source.
pub fn new_secret() -> Result<SecretString, SignError> {
    let mut key = [0u8; SECRET_BYTES];
    getrandom::fill(&mut key).map_err(|_| SignError::Random)?;
    let text = format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    Ok(SecretString::from(text))
}

/// The key bytes of a `whsec_…` secret.
fn key_of(secret: &SecretString) -> Result<Vec<u8>, SignError> {
    let s = secret.expose_secret();
    let b64 = s.strip_prefix(SECRET_PREFIX).ok_or(SignError::BadSecret)?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SignError::BadSecret)
}

/// One `v1,<base64>` signature of `body` sent as message `id` at `timestamp` (unix seconds).
pub fn sign(
    secret: &SecretString,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let key = key_of(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SignError::BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    ))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[&SecretString],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let sigs = secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sigs.join(" "))
}

/// A new message id, `msg_` and 26 characters: the `webhook-id` of every attempt of one event.
pub fn new_message_id() -> String {
    id_with("msg_")
}

/// A new endpoint id, `ep_…`.
pub fn new_endpoint_id() -> String {
    id_with("ep_")
}

fn id_with(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut s = String::with_capacity(prefix.len() + 26);
    s.push_str(prefix);
    for _ in 0..26 {
        s.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_as_the_reference_libraries_do() {
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string());
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotation_sends_two_signatures_and_a_bad_secret_is_refused() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert!(a.expose_secret().starts_with("whsec_"));
        let h = signature_header(&[&a, &b], "msg_1", 1, b"{}").unwrap();
        assert_eq!(h.split(' ').count(), 2);
        assert!(h.split(' ').all(|s| s.starts_with("v1,")));
        let bad = SecretString::from("nope".to_string());
        assert!(sign(&bad, "msg_1", 1, b"{}").is_err());
        assert_ne!(new_message_id(), new_message_id());
        assert_eq!(new_message_id().len(), 30);
    }
}
