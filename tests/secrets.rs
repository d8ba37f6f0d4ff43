//! Signing secrets from Secrets Manager (moto), as the deployed receiver reads them at cold start.

use integration_tests::*;
use stripe_pipeline::{config::SecretSource, secrets, signature::SigningSecret};

#[tokio::test]
async fn the_comma_separated_secret_is_fetched_from_secrets_manager() {
    ensure_emulators();
    let client = secrets_manager().await;
    let name = format!("it-webhook-secret-{:08x}", fastrand::u32(..));
    let created = client
        .create_secret()
        .name(&name)
        .secret_string("whsec_new_one,whsec_old_one")
        .send()
        .await
        .expect("create secret");
    let arn = created.arn.expect("arn");
    let fetched = secrets::fetch(&client, &arn).await.unwrap();
    assert_eq!(
        fetched,
        vec![
            SigningSecret::new("whsec_new_one").unwrap(),
            SigningSecret::new("whsec_old_one").unwrap()
        ]
    );
    // And through the same path `main` takes, when the endpoint comes from the environment.
    if std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER").is_ok() {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(stripe_pipeline::config::https_client())
            .region(aws_config::Region::new(REGION))
            .test_credentials()
            .load()
            .await;
        let resolved = secrets::resolve(&SecretSource::SecretsManager { arn }, &config)
            .await
            .unwrap();
        assert_eq!(resolved.len(), 2);
    }
}

#[tokio::test]
async fn a_missing_or_empty_secret_fails_the_cold_start() {
    ensure_emulators();
    let client = secrets_manager().await;
    assert!(matches!(
        secrets::fetch(
            &client,
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent"
        )
        .await,
        Err(secrets::SecretsError::Fetch(_))
    ));
    let name = format!("it-empty-secret-{:08x}", fastrand::u32(..));
    client
        .create_secret()
        .name(&name)
        .secret_string(" , ")
        .send()
        .await
        .unwrap();
    assert!(matches!(
        secrets::fetch(&client, &name).await,
        Err(secrets::SecretsError::Invalid(_))
    ));
}
