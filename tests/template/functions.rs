//! The functions' settings: environment variables the code reads, the Stripe rate split, logging,
//! alarms, and the cold-start limits the receiver checks.

use super::{
    iam::{assert_parameter_set, if_or_no_value, EMAIL_PARAMETER},
    *,
};

#[test]
fn functions_get_only_environment_variables_the_code_reads() {
    let template = Template::load();
    let receiver: BTreeSet<String> = [
        config::DEDUP_TABLE_NAME,
        config::EVENT_QUEUE_URL,
        config::STRIPE_WEBHOOK_SECRET_ARN,
        config::STRIPE_LIVEMODE,
        config::STRIPE_TEST_CONNECT_EVENTS,
        config::DEDUP_TTL_SECS,
        config::STRIPE_SIGNATURE_TOLERANCE_SECS,
        config::SOURCE_IP_ALLOWLIST_PARAMETER,
        config::METRICS_NAMESPACE,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(template.environment("ReceiverFunction"), receiver);

    let processor: BTreeSet<String> = [
        config::DEDUP_TABLE_NAME,
        config::BILLING_TABLE_NAME,
        config::SLACK_WEBHOOK_SECRET_ARN,
        // For the handlers' optional re-fetch from the Stripe API (the processor issue).
        "STRIPE_API_KEY_SECRET_ARN",
        config::NOTIFICATION_ROUTES_SECRET_ARN,
        config::NOTIFICATION_EMAIL_FROM,
        // The feed records' TTL.
        config::DEDUP_TTL_SECS,
        config::EVENT_MARKER_RETENTION_SECS,
        config::METRICS_NAMESPACE,
        // Its share of Stripe's read limit is split between this many instances.
        config::PROCESSOR_MAX_CONCURRENCY,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(template.environment("ProcessorFunction"), processor);
}

#[test]
fn the_processor_splits_its_stripe_rate_between_as_many_instances_as_the_event_source_runs() {
    let template = Template::load();
    let variables = &template.property("ProcessorFunction", "Environment")["Variables"];
    let events = &template.property("ProcessorFunction", "Events");
    let scaling = &events["EventQueueMessages"]["Properties"]["ScalingConfig"];
    assert_eq!(
        ref_to(&scaling["MaximumConcurrency"]),
        Some("ProcessorMaxConcurrency")
    );
    assert_eq!(
        ref_to(&variables[config::PROCESSOR_MAX_CONCURRENCY]),
        Some("ProcessorMaxConcurrency"),
        "the same bound the SQS event source enforces"
    );
    assert_eq!(
        template.root["Parameters"]["ProcessorMaxConcurrency"]["Default"].as_u64(),
        Some(u64::from(config::DEFAULT_PROCESSOR_MAX_CONCURRENCY))
    );
}

#[test]
fn a_misconfigured_notification_channel_raises_an_alarm() {
    let template = Template::load();
    let alarm = "NotificationChannelMisconfiguredAlarm";
    assert_eq!(
        template.property(alarm, "MetricName").as_str(),
        Some("MisconfiguredChannel")
    );
    let dimensions = template.property(alarm, "Dimensions");
    let dimensions = dimensions.as_sequence().expect("dimensions");
    assert_eq!(
        dimensions.len(),
        1,
        "the Function-only dimension set of the EMF line"
    );
    assert_eq!(dimensions[0]["Name"].as_str(), Some("Function"));
    assert_eq!(dimensions[0]["Value"].as_str(), Some("processor"));
    let emf = stripe_pipeline::telemetry::Metrics::new("Ns", "processor")
        .misconfigured_channel_document("support");
    let declared = &emf["_aws"]["CloudWatchMetrics"][0];
    assert!(declared["Dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|set| set == &serde_json::json!(["Function"])));
    assert_eq!(
        template.property(alarm, "Threshold").as_u64(),
        Some(1),
        "one refused notification is one missed message"
    );
}

#[test]
fn processor_gets_the_dedup_ttl_and_the_notification_sender() {
    let template = Template::load();
    let variable = |function: &str, name: &str| -> Value {
        template.property(function, "Environment")["Variables"][name].clone()
    };

    // Markers (which carry feed records) must outlive the receiver's memory of an event id: the
    // processor checks its retention against the same value.
    let receiver_ttl = variable("ReceiverFunction", config::DEDUP_TTL_SECS);
    assert_eq!(ref_to(&receiver_ttl), Some("DedupTtlSecs"));
    assert_eq!(
        variable("ProcessorFunction", config::DEDUP_TTL_SECS),
        receiver_ttl,
        "the processor's {} is the receiver's",
        config::DEDUP_TTL_SECS
    );

    // Markers' retention is a parameter of its own, whose default the code's default matches.
    let retention = variable("ProcessorFunction", config::EVENT_MARKER_RETENTION_SECS);
    assert_eq!(ref_to(&retention), Some("EventMarkerRetentionSecs"));
    assert_eq!(
        template.root["Parameters"]["EventMarkerRetentionSecs"]["Default"].as_u64(),
        Some(config::DEFAULT_EVENT_MARKER_RETENTION_SECS)
    );

    // The sender, only when given. config.rs reads a set-but-empty variable as unset, so a plain
    // !Ref would do too; the template leaves it out, as it does the optional secret ARNs.
    let sender = variable("ProcessorFunction", config::NOTIFICATION_EMAIL_FROM);
    let given = match if_or_no_value(&sender) {
        Some((condition, value)) => {
            assert_parameter_set(&template, condition, EMAIL_PARAMETER);
            value
        }
        None => &sender,
    };
    assert_eq!(ref_to(given), Some(EMAIL_PARAMETER));
    let parameter = &template.root["Parameters"][EMAIL_PARAMETER];
    assert_eq!(
        parameter["Default"].as_str(),
        Some(""),
        "no email by default"
    );
}

#[test]
fn functions_log_json_without_platform_lines_and_keep_decision_lines() {
    let template = Template::load();
    for function in ["ReceiverFunction", "ProcessorFunction"] {
        let logging = template.property(function, "LoggingConfig");
        assert_eq!(logging["LogFormat"].as_str(), Some("JSON"), "{function}");
        // START/END/REPORT are INFO system lines: not ingested per invocation.
        assert_eq!(
            logging["SystemLogLevel"].as_str(),
            Some("WARN"),
            "{function}"
        );
        // Decision lines (INFO and above) carry the EMF metrics: Lambda must not drop them.
        assert_eq!(
            logging["ApplicationLogLevel"].as_str(),
            Some("INFO"),
            "{function}"
        );
    }
}

#[test]
fn signed_deliveries_the_receiver_refuses_raise_their_own_alarm_at_the_first_one() {
    let template = Template::load();
    let outcome_alarms = |outcome: &str| -> Vec<String> {
        template
            .deployed_by_default("AWS::CloudWatch::Alarm")
            .into_iter()
            .filter(|id| {
                let dimensions = template.property(id, "Dimensions");
                let value = |name: &str| {
                    dimensions
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .find(|d| d["Name"].as_str() == Some(name))
                        .and_then(|d| d["Value"].as_str())
                        .map(str::to_owned)
                };
                value("Function").as_deref() == Some("receiver")
                    && value("Outcome").as_deref() == Some(outcome)
            })
            .collect()
    };
    let refused = outcome_alarms(Outcome::Refused.as_str());
    assert_eq!(
        refused.len(),
        1,
        "one alarm on the refused outcome: {refused:?}"
    );
    let refused = &refused[0];
    let rejected = outcome_alarms(Outcome::Rejected.as_str());
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let rejected = &rejected[0];
    // The same EMF metric the receiver writes, in the namespace the rejected alarm watches.
    assert_eq!(
        template.property(refused, "Namespace"),
        template.property(rejected, "Namespace")
    );
    assert_eq!(
        template.property(refused, "MetricName").as_str(),
        Some("Events")
    );
    // Each one is an event Stripe drops after its retries: the first one alarms.
    assert_eq!(template.number(template.property(refused, "Threshold")), 1);
    assert_eq!(
        template.property(refused, "ComparisonOperator").as_str(),
        Some("GreaterThanOrEqualToThreshold")
    );
    assert_eq!(
        template.property(refused, "Statistic").as_str(),
        Some("Sum")
    );
    assert_eq!(
        template.property(refused, "TreatMissingData").as_str(),
        Some("notBreaching")
    );
    assert!(template
        .property(refused, "AlarmActions")
        .as_sequence()
        .is_some_and(|actions| actions.iter().any(|a| ref_to(a) == Some("AlarmTopic"))));
}

/// The receiver's cold-start checks (config.rs) assume the template's numbers: the function's timeout,
/// which every claim lease must outlast, and the dedup memory's bounds, so a stack parameter the
/// template accepts never makes the function refuse to start, and none it would refuse is accepted.
#[test]
fn the_receivers_cold_start_limits_match_the_template() {
    let template = Template::load();
    assert_eq!(
        template.number(template.function_setting("ReceiverFunction", "Timeout")),
        config::RECEIVER_TIMEOUT_SECS
    );
    let ttl = &template.root["Parameters"]["DedupTtlSecs"];
    assert_eq!(
        template.number(&ttl["MinValue"]),
        config::MIN_DEDUP_TTL_SECS
    );
    assert_eq!(
        template.number(&ttl["MaxValue"]),
        config::MAX_DEDUP_TTL_SECS
    );
}
