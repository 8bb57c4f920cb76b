//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, with the
//! key given as `whsec_<base64>`. Consumers recompute it and reject mismatches and stale
//! timestamps (replays); [`verify`] is that check, used by the tests' receiver.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Errors checking a signature.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SignatureError {
    #[error("secret must be `whsec_` followed by base64")]
    BadSecret,
    #[error("no v1 signature matches")]
    Mismatch,
    #[error("timestamp is {0} s away from now, over the tolerance")]
    Stale(i64),
}

fn key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or(SignatureError::BadSecret)?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SignatureError::BadSecret)
}

/// Validate a `whsec_…` secret.
pub fn check_secret(secret: &str) -> Result<(), SignatureError> {
    key(secret).map(|_| ())
}

/// The `webhook-signature` header value.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key(secret)?).map_err(|_| SignatureError::BadSecret)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Check a delivery as a consumer would: any `v1,` signature in the (space-separated)
/// header must match, and the timestamp must be within `tolerance_s` of `now`.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    if (now - timestamp).abs() > tolerance_s {
        return Err(SignatureError::Stale(now - timestamp));
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key(secret)?).map_err(|_| SignatureError::BadSecret)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    for candidate in header.split(' ').filter_map(|s| s.strip_prefix("v1,")) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(candidate) {
            if mac.clone().verify_slice(&bytes).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn matches_the_specification_example() {
        assert_eq!(
            sign(SECRET, ID, TS, BODY).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let header = sign(SECRET, ID, TS, BODY).unwrap();
        assert_eq!(verify(SECRET, ID, TS, BODY, &header, TS + 10, 300), Ok(()));
    }

    #[test]
    fn tampering_replay_and_bad_secrets_fail() {
        let header = sign(SECRET, ID, TS, BODY).unwrap();
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(SECRET, ID, TS, tampered, &header, TS, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, "msg_other", TS, BODY, &header, TS, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, ID, TS, BODY, &header, TS + 3600, 300),
            Err(SignatureError::Stale(3600))
        );
        assert_eq!(sign("secret", ID, TS, BODY), Err(SignatureError::BadSecret));
        // Several signatures in one header (key rotation): any match passes.
        let rotated = format!("v1,AAAA {header}");
        assert_eq!(verify(SECRET, ID, TS, BODY, &rotated, TS, 300), Ok(()));
    }
}
