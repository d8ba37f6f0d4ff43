//! Property: a delivery changed in any single byte is never accepted — including the bytes of the
//! `Stripe-Signature` header other than the `v1` hex (the timestamp digits, `t=`, `,v1=`), which the
//! unit properties in `src/signature.rs` do not touch. Bytes of the body and of the `v1` value are
//! covered there.

use std::time::Duration;

use proptest::prelude::*;
use stripe_pipeline::signature::{sign, SignatureVerifier, SigningSecret, DEFAULT_TOLERANCE_SECS};

const SECRET: &str = "whsec_property_test";

fn verifier() -> SignatureVerifier {
    SignatureVerifier::new(
        vec![SigningSecret::new(SECRET).expect("secret")],
        Duration::from_secs(DEFAULT_TOLERANCE_SECS),
    )
    .expect("verifier")
}

proptest! {
    #[test]
    fn any_single_byte_change_to_the_header_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        t in 1_000_000_000u64..4_000_000_000,
        index in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let secret = SigningSecret::new(SECRET).expect("secret");
        let header = sign(&body, &secret, t);
        prop_assert_eq!(verifier().verify_at(&body, Some(&header), t), Ok(t));
        let mut bytes = header.clone().into_bytes();
        let i = index.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        // Not UTF-8 any more: the receiver turns that into a malformed header before verifying.
        let Ok(changed) = String::from_utf8(bytes) else {
            return Ok(());
        };
        prop_assert!(
            verifier().verify_at(&body, Some(&changed), t).is_err(),
            "accepted {changed:?} (signed {header:?})"
        );
    }
}
