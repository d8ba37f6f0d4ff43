//! Stripe's `Stripe-Signature` scheme: verifying a delivery and signing one for tests and the local sender.
//!
//! Stripe signs `<t>.<raw body bytes>` with HMAC-SHA256, keyed by the *whole* endpoint secret string
//! (`whsec_` prefix included, not base64-decoded), and sends `t=<unix seconds>,v1=<lowercase hex>` with
//! possibly several `v1` entries (one per active secret during a rotation) and other schemes (`v0`, ...)
//! that we ignore. This module owns that scheme and nothing else: what the body means is `event`'s job,
//! and which HTTP status a failure becomes is the receiver's.
//!
//! # Where we are stricter than Stripe's libraries
//! The vectors in `tests/fixtures/stripe/signature-vectors.json` were run through stripe-python and
//! stripe-node. We accept everything both accept except where accepting would be unsafe or ambiguous,
//! and we reject everything either of them rejects:
//! - **Future timestamps** more than the tolerance ahead are rejected (`TimestampInFuture`; vector
//!   `valid_timestamp_in_future_beyond_tolerance`). Both libraries only check age, so a signature made
//!   with a leaked secret and a far-future `t` would stay replayable until that date. Stripe's clock and
//!   ours are both NTP-synced; a real delivery is never minutes ahead.
//! - **A tolerance of zero does not switch the check off** (vector
//!   `valid_tolerance_zero_disables_age_check`): in the libraries `0` means "never expire", an easy way to
//!   disable replay protection by accident. Here the tolerance is always enforced as given, and
//!   configuration refuses zero.
//! - **`t` is ASCII digits only, exactly one `t`, nothing trimmed** (vectors `valid_timestamp_plus_sign`,
//!   `header_space_after_t_equals`, `timestamp_with_underscores`, `duplicate_t_first_*`,
//!   `non_numeric_timestamp*`, `timestamp_trailing_garbage`, `timestamp_decimal`, `timestamp_empty`). The
//!   libraries disagree with each other on most of these (node uses the last `t`, python the first; node's
//!   `parseInt` accepts `abc` as NaN and `123abc` as 123), which is exactly what an attacker probes. Stripe
//!   itself only ever sends one plain decimal `t`, so rejecting the rest as `MalformedHeader` costs nothing.
//!   Leading zeros are digits, so `t=0<ts>` is accepted like the libraries do (signed over the number).
//! - **`v1` is lowercase hex**; anything else simply does not match (`uppercase_hex_signature`,
//!   `signature_base64_instead_of_hex`). A bare `v1` with no `=` is a malformed header
//!   (`signature_key_without_value`); node throws a generic error there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's default tolerance, the same in every official library.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// One endpoint signing secret (`whsec_...`). Its `Debug` never shows the value and it has no `Display`,
/// so a derived `Debug` on any struct holding it stays safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// Wraps a secret. Fails on an empty string, which would make every HMAC forgeable by anyone.
    pub fn new(secret: impl Into<String>) -> Result<Self, SignatureError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(SignatureError::EmptySecret);
        }
        Ok(Self(secret))
    }

    /// Parses a comma-separated list (`whsec_new,whsec_old`), the format of `STRIPE_WEBHOOK_SECRET` and of
    /// the Secrets Manager value. Surrounding whitespace of each entry is dropped (a secret never contains
    /// any); an empty list or an empty entry is an error.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, SignatureError> {
        let secrets = list
            .split(',')
            .map(|s| Self::new(s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(secrets)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        match HmacSha256::new_from_slice(self.0.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        }
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// Why a delivery was not accepted as signed by Stripe. Messages never contain the header, body or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The `Stripe-Signature` header is absent or empty.
    #[error("missing Stripe-Signature header")]
    NoHeader,
    /// The header is not `t=<digits>,...` with exactly one `t`, or an entry has no `=`.
    #[error("malformed Stripe-Signature header")]
    MalformedHeader,
    /// The header has a timestamp but no `v1` entry.
    #[error("no v1 signature in header")]
    NoV1Signature,
    /// No `v1` entry matches any configured secret.
    #[error("no signature matches")]
    SignatureMismatch,
    /// The signed timestamp is older than the tolerance allows (a replay, or a very late retry).
    #[error("timestamp too old")]
    TimestampTooOld,
    /// The signed timestamp is further in the future than the tolerance allows.
    #[error("timestamp too far in the future")]
    TimestampInFuture,
    /// A configured secret is empty.
    #[error("empty signing secret")]
    EmptySecret,
}

impl SignatureError {
    /// A stable snake_case name for logs and metrics (matches the vectors' `error_kind` where one exists).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoHeader => "no_header",
            Self::MalformedHeader => "malformed_header",
            Self::NoV1Signature => "no_v1_signature",
            Self::SignatureMismatch => "signature_mismatch",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::EmptySecret => "empty_secret",
        }
    }
}

/// The parsed parts of a `Stripe-Signature` header that we act on.
#[derive(Debug)]
struct SignatureHeader<'a> {
    timestamp: u64,
    v1: Vec<&'a str>,
}

impl<'a> SignatureHeader<'a> {
    fn parse(header: &'a str) -> Result<Self, SignatureError> {
        if header.is_empty() {
            return Err(SignatureError::NoHeader);
        }
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(SignatureError::MalformedHeader);
            };
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::MalformedHeader);
                    }
                    timestamp = Some(parse_timestamp(value)?);
                }
                "v1" => v1.push(value),
                // v0 (Stripe's old test scheme) and anything newer: not ours to judge.
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::MalformedHeader)?;
        if v1.is_empty() {
            return Err(SignatureError::NoV1Signature);
        }
        Ok(Self { timestamp, v1 })
    }
}

fn parse_timestamp(value: &str) -> Result<u64, SignatureError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedHeader);
    }
    value.parse().map_err(|_| SignatureError::MalformedHeader)
}

/// Decodes a `v1` value only if it is lowercase hex of the right length; anything else can never match.
fn decode_v1(value: &str) -> Option<[u8; 32]> {
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).ok()?;
    Some(out)
}

/// Checks `Stripe-Signature` headers against one or more secrets. Built once at cold start.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    secrets: Vec<SigningSecret>,
    tolerance: Duration,
}

impl SignatureVerifier {
    /// A verifier accepting a `v1` made with any of `secrets` (several during a rotation, or one per
    /// endpoint when endpoints share a receiver), with a timestamp within `tolerance` of now either way.
    pub fn new(secrets: Vec<SigningSecret>, tolerance: Duration) -> Result<Self, SignatureError> {
        if secrets.is_empty() {
            return Err(SignatureError::EmptySecret);
        }
        Ok(Self { secrets, tolerance })
    }

    /// The tolerance this verifier enforces.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies `payload` (the raw request body, exactly as received) against `header` at the current
    /// time. Returns the signed timestamp.
    pub fn verify(&self, payload: &[u8], header: Option<&str>) -> Result<u64, SignatureError> {
        self.verify_at(payload, header, unix_now())
    }

    /// [`verify`](Self::verify) with the clock given, so tests and vectors are deterministic.
    ///
    /// The signature is checked before the timestamp, as Stripe's libraries do, so a forged header is
    /// reported as a mismatch whatever its `t`.
    pub fn verify_at(
        &self,
        payload: &[u8],
        header: Option<&str>,
        now: u64,
    ) -> Result<u64, SignatureError> {
        let header = SignatureHeader::parse(header.unwrap_or(""))?;
        let candidates: Vec<[u8; 32]> = header.v1.iter().filter_map(|v| decode_v1(v)).collect();
        // No entry is even shaped like a signature: refuse before hashing the body, so forged
        // requests cost a header parse, not a pass over up to MAX_BODY_BYTES.
        if candidates.is_empty() {
            return Err(SignatureError::SignatureMismatch);
        }
        let signed = self.secrets.iter().any(|secret| {
            let mac = signed_payload_mac(secret, header.timestamp, payload);
            // verify_slice compares in constant time; each candidate gets a fresh clone of the MAC.
            candidates
                .iter()
                .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        });
        if !signed {
            return Err(SignatureError::SignatureMismatch);
        }
        let tolerance = self.tolerance.as_secs();
        if now.saturating_sub(header.timestamp) > tolerance {
            return Err(SignatureError::TimestampTooOld);
        }
        if header.timestamp.saturating_sub(now) > tolerance {
            return Err(SignatureError::TimestampInFuture);
        }
        Ok(header.timestamp)
    }
}

fn signed_payload_mac(secret: &SigningSecret, timestamp: u64, payload: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The `v1` signature Stripe would send for `payload` at `timestamp`, as lowercase hex.
pub fn compute_v1(payload: &[u8], secret: &SigningSecret, timestamp: u64) -> String {
    hex::encode(
        signed_payload_mac(secret, timestamp, payload)
            .finalize()
            .into_bytes(),
    )
}

/// A complete `Stripe-Signature` header value (`t=..,v1=..`) for `payload`, as Stripe would send it.
/// For tests and the local sender.
pub fn sign(payload: &[u8], secret: &SigningSecret, timestamp: u64) -> String {
    format!(
        "t={timestamp},v1={}",
        compute_v1(payload, secret, timestamp)
    )
}

/// Seconds since the Unix epoch; 0 for a clock before 1970 (which then rejects every delivery as future).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        secret: String,
        payload: String,
        payload_utf8_bytes: usize,
        header: String,
        now: u64,
        tolerance: u64,
        expect: String,
        error_kind: Option<String>,
    }

    const VECTORS: &str = include_str!("../../tests/fixtures/stripe/signature-vectors.json");

    /// Cases where we deliberately differ from what the vectors expect (see the module docs), with the
    /// error we return instead.
    fn stricter_than_stripe(name: &str) -> Option<SignatureError> {
        match name {
            "valid_timestamp_in_future_beyond_tolerance" => Some(SignatureError::TimestampInFuture),
            "valid_tolerance_zero_disables_age_check" => Some(SignatureError::TimestampTooOld),
            "valid_timestamp_plus_sign"
            | "header_space_after_t_equals"
            | "timestamp_with_underscores"
            | "duplicate_t_first_stale_last_fresh"
            | "duplicate_t_first_fresh_last_stale" => Some(SignatureError::MalformedHeader),
            _ => None,
        }
    }

    fn vectors() -> Vec<Vector> {
        match serde_json::from_str(VECTORS) {
            Ok(v) => v,
            Err(e) => panic!("signature vectors do not parse: {e}"),
        }
    }

    fn expected_error(kind: &str) -> Vec<SignatureError> {
        match kind {
            "no_header" => vec![SignatureError::NoHeader],
            "malformed_header" => vec![SignatureError::MalformedHeader],
            "no_v1_signature" => vec![SignatureError::NoV1Signature],
            "signature_mismatch" => vec![SignatureError::SignatureMismatch],
            "timestamp_outside_tolerance" => vec![
                SignatureError::TimestampTooOld,
                SignatureError::TimestampInFuture,
            ],
            other => panic!("unknown error_kind {other}"),
        }
    }

    #[test]
    fn every_signature_vector_gets_its_expected_result() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 49, "the vector file changed");
        let mut stricter = 0;
        for v in vectors {
            assert_eq!(v.payload.len(), v.payload_utf8_bytes, "{}", v.name);
            let verifier = SignatureVerifier::new(
                vec![SigningSecret::new(v.secret.clone()).unwrap()],
                Duration::from_secs(v.tolerance),
            )
            .unwrap();
            let header = (!v.header.is_empty()).then_some(v.header.as_str());
            let got = verifier.verify_at(v.payload.as_bytes(), header, v.now);
            if let Some(ours) = stricter_than_stripe(&v.name) {
                stricter += 1;
                assert_eq!(got, Err(ours), "{}: our stricter rule", v.name);
                continue;
            }
            match v.expect.as_str() {
                "ok" => assert!(got.is_ok(), "{}: expected ok, got {got:?}", v.name),
                "error" => {
                    let kinds = expected_error(v.error_kind.as_deref().unwrap());
                    let err = got.expect_err(&v.name);
                    assert!(
                        kinds.contains(&err),
                        "{}: expected {kinds:?}, got {err:?}",
                        v.name
                    );
                }
                other => panic!("unknown expect {other}"),
            }
        }
        assert_eq!(stricter, 7, "every deliberate difference is exercised");
    }

    #[test]
    fn rotation_vectors_pass_with_either_configured_secret() {
        // GIVEN the rotation vector's header carrying a v1 for the old and for the new secret
        let v = vectors()
            .into_iter()
            .find(|v| v.name == "valid_two_v1_secret_rotation_new_secret")
            .unwrap();
        let unrelated = SigningSecret::new("whsec_unrelated").unwrap();
        let real = SigningSecret::new(v.secret.clone()).unwrap();
        // WHEN the receiver is configured with an unrelated secret plus the real one, in either order
        for secrets in [vec![unrelated.clone(), real.clone()], vec![real, unrelated]] {
            let verifier = SignatureVerifier::new(secrets, Duration::from_secs(300)).unwrap();
            // THEN it accepts
            assert!(verifier
                .verify_at(v.payload.as_bytes(), Some(&v.header), v.now)
                .is_ok());
        }
    }

    fn verifier(secret: &str) -> SignatureVerifier {
        SignatureVerifier::new(
            vec![SigningSecret::new(secret).unwrap()],
            Duration::from_secs(DEFAULT_TOLERANCE_SECS),
        )
        .unwrap()
    }

    #[test]
    fn sign_matches_a_known_answer_from_stripe_python() {
        let v = vectors()
            .into_iter()
            .find(|v| v.name == "valid_single_v1")
            .unwrap();
        let secret = SigningSecret::new(v.secret).unwrap();
        assert_eq!(sign(v.payload.as_bytes(), &secret, 1_767_225_595), v.header);
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected_at_the_edges() {
        let secret = SigningSecret::new("whsec_test").unwrap();
        let v = verifier("whsec_test");
        let now = 1_800_000_000;
        let at = |t: u64| v.verify_at(b"{}", Some(&sign(b"{}", &secret, t)), now);
        assert_eq!(at(now - 300), Ok(now - 300));
        assert_eq!(at(now - 301), Err(SignatureError::TimestampTooOld));
        assert_eq!(at(now + 300), Ok(now + 300));
        assert_eq!(at(now + 301), Err(SignatureError::TimestampInFuture));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secret = SigningSecret::new("whsec_do_not_print_me").unwrap();
        let verifier =
            SignatureVerifier::new(vec![secret.clone()], Duration::from_secs(1)).unwrap();
        for shown in [format!("{secret:?}"), format!("{verifier:?}")] {
            assert!(!shown.contains("do_not_print_me"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert_eq!(SigningSecret::new(""), Err(SignatureError::EmptySecret));
        assert_eq!(
            SigningSecret::parse_list("whsec_a,,whsec_b"),
            Err(SignatureError::EmptySecret)
        );
        assert_eq!(
            SigningSecret::parse_list("whsec_a, whsec_b").unwrap().len(),
            2
        );
        assert!(SignatureVerifier::new(vec![], Duration::from_secs(1)).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_headers_and_bodies_never_panic(header in ".*", body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = verifier("whsec_x").verify_at(&body, Some(&header), 1_800_000_000);
        }

        #[test]
        fn structured_garbage_headers_never_panic(parts in proptest::collection::vec("(t|v1|v0|x)?=?[0-9a-fA-F,= +.-]{0,70}", 0..5)) {
            let header = parts.join(",");
            let _ = verifier("whsec_x").verify_at(b"{}", Some(&header), 1_800_000_000);
        }

        #[test]
        fn sign_then_verify_round_trips(body in proptest::collection::vec(any::<u8>(), 0..2048), t in 1_000_000_000u64..4_000_000_000, secret in "whsec_[A-Za-z0-9]{1,40}") {
            let s = SigningSecret::new(secret.clone()).unwrap();
            prop_assert_eq!(verifier(&secret).verify_at(&body, Some(&sign(&body, &s, t)), t), Ok(t));
        }

        #[test]
        fn any_single_byte_change_is_rejected(body in proptest::collection::vec(any::<u8>(), 1..512), index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let s = SigningSecret::new("whsec_prop").unwrap();
            let t = 1_800_000_000;
            let header = sign(&body, &s, t);
            let mut tampered = body.clone();
            let i = index.index(tampered.len());
            tampered[i] ^= flip;
            prop_assert_eq!(verifier("whsec_prop").verify_at(&tampered, Some(&header), t), Err(SignatureError::SignatureMismatch));
            // and a change to any byte of the header's signature as well
            let sig_at = header.find("v1=").unwrap() + 3 + index.index(64);
            let mut h = header.into_bytes();
            h[sig_at] = if h[sig_at] == b'0' { b'1' } else { b'0' };
            let h = String::from_utf8(h).unwrap();
            prop_assert_eq!(verifier("whsec_prop").verify_at(&body, Some(&h), t), Err(SignatureError::SignatureMismatch));
        }
    }
}
