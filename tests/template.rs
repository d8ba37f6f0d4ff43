//! `template.yaml` is what `sam deploy` creates; `infra/resources.py` creates the emulator tables and
//! queues that `make dev` and every other integration test run against, from the same file. These tests
//! check that the two agree: keys, indexes, TTL, billing mode, queue redrive, visibility timeout,
//! retention, encryption flag. They read the template on their own (a small YAML read, not
//! resources.py's reader) and ask DynamoDB Local and the SQS emulator through the AWS SDK what exists.
//! They also check the template's own invariants that the code relies on.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sqs::types::QueueAttributeName;
use integration_tests::{dynamodb, dynamodb_endpoint, repo_root, sqs, sqs_endpoint, Resources};
use serde_norway::Value;
use stripe_pipeline::{billing, config};

/// SQS defaults, for a queue property the template leaves out.
const SQS_DEFAULT_VISIBILITY_TIMEOUT_SECS: u64 = 30;
const SQS_DEFAULT_RETENTION_SECS: u64 = 345_600;

/// template.yaml, read only as far as these tests need. CloudFormation's short tags (`!Ref X`,
/// `!GetAtt X.Arn`) come through as tagged values.
struct Template {
    root: Value,
}

impl Template {
    fn load() -> Self {
        let path = repo_root().join("template.yaml");
        let text = std::fs::read_to_string(&path).expect("read template.yaml");
        Self {
            root: serde_norway::from_str(&text).expect("template.yaml is YAML"),
        }
    }

    fn resource(&self, logical_id: &str) -> &Value {
        let resource = &self.root["Resources"][logical_id];
        assert!(
            !resource.is_null(),
            "template.yaml has no resource {logical_id}"
        );
        resource
    }

    fn property(&self, logical_id: &str, name: &str) -> &Value {
        &self.resource(logical_id)["Properties"][name]
    }

    /// Logical ids of every resource of one type.
    fn logical_ids(&self, resource_type: &str) -> BTreeSet<String> {
        self.root["Resources"]
            .as_mapping()
            .expect("Resources is a mapping")
            .iter()
            .filter(|(_, resource)| resource["Type"].as_str() == Some(resource_type))
            .filter_map(|(id, _)| id.as_str().map(str::to_owned))
            .collect()
    }

    /// A value as it deploys with default parameters: a literal, or `!Ref Parameter` as the
    /// parameter's Default.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value {
            Value::Tagged(tagged) if tagged.tag == "Ref" => {
                let name = tagged.value.as_str().expect("!Ref takes a name");
                let default = &self.root["Parameters"][name]["Default"];
                assert!(
                    !default.is_null(),
                    "!Ref {name} is not a parameter with a Default"
                );
                default
            }
            other => other,
        }
    }

    fn number(&self, value: &Value) -> u64 {
        let value = self.resolve(value);
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("expected a number, found {value:?}"))
    }

    fn string(&self, value: &Value) -> String {
        match self.resolve(value) {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            other => panic!("expected a scalar, found {other:?}"),
        }
    }

    /// A parameter's MaxValue when `value` is `!Ref` to one, else the literal: the largest value a
    /// deploy can give it.
    fn largest(&self, value: &Value) -> u64 {
        if let Value::Tagged(tagged) = value {
            if tagged.tag == "Ref" {
                let name = tagged.value.as_str().expect("!Ref takes a name");
                let max = &self.root["Parameters"][name]["MaxValue"];
                assert!(!max.is_null(), "parameter {name} needs a MaxValue");
                return self.number(max);
            }
        }
        self.number(value)
    }

    /// `[(AttributeName, KeyType)]` of a KeySchema, in order.
    fn key_schema(value: &Value) -> Vec<(String, String)> {
        value
            .as_sequence()
            .expect("KeySchema is a list")
            .iter()
            .map(|key| {
                (
                    key["AttributeName"]
                        .as_str()
                        .expect("AttributeName")
                        .to_owned(),
                    key["KeyType"].as_str().expect("KeyType").to_owned(),
                )
            })
            .collect()
    }

    /// The function setting `name`, or the Globals default.
    fn function_setting(&self, logical_id: &str, name: &str) -> &Value {
        let own = self.property(logical_id, name);
        if own.is_null() {
            &self.root["Globals"]["Function"][name]
        } else {
            own
        }
    }

    /// Names of a function's environment variables, Globals included.
    fn environment(&self, logical_id: &str) -> BTreeSet<String> {
        let own = &self.property(logical_id, "Environment")["Variables"];
        let global = &self.root["Globals"]["Function"]["Environment"]["Variables"];
        [own, global]
            .into_iter()
            .filter_map(Value::as_mapping)
            .flat_map(|vars| vars.keys())
            .filter_map(|key| key.as_str().map(str::to_owned))
            .collect()
    }
}

/// The resource named by `!GetAtt Resource.Arn`.
fn arn_of(value: &Value) -> &str {
    match value {
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => {
            let target = tagged.value.as_str().expect("!GetAtt Resource.Attribute");
            target
                .strip_suffix(".Arn")
                .unwrap_or_else(|| panic!("expected !GetAtt <queue>.Arn, found {target}"))
        }
        other => panic!("expected !GetAtt <queue>.Arn, found {other:?}"),
    }
}

/// (name, type) pairs of a table's attribute definitions.
fn attribute_definitions(value: &Value) -> BTreeSet<(String, String)> {
    value
        .as_sequence()
        .expect("AttributeDefinitions is a list")
        .iter()
        .map(|d| {
            (
                d["AttributeName"]
                    .as_str()
                    .expect("AttributeName")
                    .to_owned(),
                d["AttributeType"]
                    .as_str()
                    .expect("AttributeType")
                    .to_owned(),
            )
        })
        .collect()
}

fn sdk_key_schema(keys: &[aws_sdk_dynamodb::types::KeySchemaElement]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn emulator_tables_match_the_template() {
    // GIVEN the tables resources.py creates from template.yaml
    let template = Template::load();
    let resources = Resources::create();
    let created = BTreeMap::from([
        ("DedupTable".to_owned(), resources.dedup_table.clone()),
        ("BillingTable".to_owned(), resources.billing_table.clone()),
    ]);
    assert_eq!(
        template.logical_ids("AWS::DynamoDB::Table"),
        created.keys().cloned().collect(),
        "a table was added to or removed from the template: extend Resources and this test"
    );
    let client = dynamodb(&dynamodb_endpoint()).await;

    for (logical_id, name) in &created {
        // WHEN DynamoDB Local describes each one
        let table = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .expect("describe_table")
            .table
            .expect("table description");
        let ttl = client
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
            .expect("describe_time_to_live")
            .time_to_live_description
            .expect("TTL description");

        // THEN keys, attribute types, billing mode, indexes and TTL are the template's
        assert_eq!(
            sdk_key_schema(table.key_schema()),
            Template::key_schema(template.property(logical_id, "KeySchema")),
            "{logical_id}: key schema"
        );
        let definitions: BTreeSet<_> = table
            .attribute_definitions()
            .iter()
            .map(|d| {
                (
                    d.attribute_name().to_owned(),
                    d.attribute_type().as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            definitions,
            attribute_definitions(template.property(logical_id, "AttributeDefinitions")),
            "{logical_id}: attribute definitions"
        );
        assert_eq!(
            table
                .billing_mode_summary()
                .and_then(|b| b.billing_mode())
                .map(|m| m.as_str()),
            Some(
                template
                    .string(template.property(logical_id, "BillingMode"))
                    .as_str()
            ),
            "{logical_id}: billing mode"
        );

        let expected_indexes: BTreeMap<String, (Vec<(String, String)>, String)> = template
            .property(logical_id, "GlobalSecondaryIndexes")
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|index| {
                (
                    index["IndexName"].as_str().expect("IndexName").to_owned(),
                    (
                        Template::key_schema(&index["KeySchema"]),
                        index["Projection"]["ProjectionType"]
                            .as_str()
                            .expect("ProjectionType")
                            .to_owned(),
                    ),
                )
            })
            .collect();
        let indexes: BTreeMap<String, (Vec<(String, String)>, String)> = table
            .global_secondary_indexes()
            .iter()
            .map(|index| {
                (
                    index.index_name().unwrap_or_default().to_owned(),
                    (
                        sdk_key_schema(index.key_schema()),
                        index
                            .projection()
                            .and_then(|p| p.projection_type())
                            .map(|t| t.as_str().to_owned())
                            .unwrap_or_default(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            indexes, expected_indexes,
            "{logical_id}: global secondary indexes"
        );

        let spec = template.property(logical_id, "TimeToLiveSpecification");
        let ttl_enabled = !spec.is_null() && template.string(&spec["Enabled"]) == "true";
        if ttl_enabled {
            assert_eq!(
                ttl.time_to_live_status().map(|s| s.as_str()),
                Some("ENABLED"),
                "{logical_id}: TTL"
            );
            assert_eq!(
                ttl.attribute_name(),
                spec["AttributeName"].as_str(),
                "{logical_id}: TTL attribute"
            );
        } else {
            assert_ne!(
                ttl.time_to_live_status().map(|s| s.as_str()),
                Some("ENABLED"),
                "{logical_id}: TTL is on locally but not in the template"
            );
        }
    }
}

#[tokio::test]
async fn emulator_queues_match_the_template() {
    // GIVEN the queues resources.py creates from template.yaml
    let template = Template::load();
    let resources = Resources::create();
    let created = BTreeMap::from([
        ("EventQueue".to_owned(), resources.event_queue_url.clone()),
        (
            "EventDeadLetterQueue".to_owned(),
            resources.dead_letter_queue_url.clone(),
        ),
    ]);
    assert_eq!(
        template.logical_ids("AWS::SQS::Queue"),
        created.keys().cloned().collect(),
        "a queue was added to or removed from the template: extend Resources and this test"
    );
    let client = sqs(&sqs_endpoint()).await;

    // WHEN the emulator reports their attributes
    let mut attributes = BTreeMap::new();
    for (logical_id, url) in &created {
        let reported = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("get_queue_attributes")
            .attributes
            .unwrap_or_default();
        attributes.insert(logical_id.clone(), reported);
    }
    let attribute = |logical_id: &str, name: QueueAttributeName| -> Option<String> {
        attributes[logical_id].get(&name).cloned()
    };

    // THEN visibility, retention, encryption flag and redrive are the template's
    for logical_id in created.keys() {
        let numeric = |name: &str, default: u64| {
            let value = template.property(logical_id, name);
            if value.is_null() {
                default
            } else {
                template.number(value)
            }
        };
        let reported = |name: QueueAttributeName| -> u64 {
            attribute(logical_id, name.clone())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{logical_id}: no numeric {name:?}"))
        };
        assert_eq!(
            reported(QueueAttributeName::VisibilityTimeout),
            numeric("VisibilityTimeout", SQS_DEFAULT_VISIBILITY_TIMEOUT_SECS),
            "{logical_id}: visibility timeout"
        );
        assert_eq!(
            reported(QueueAttributeName::MessageRetentionPeriod),
            numeric("MessageRetentionPeriod", SQS_DEFAULT_RETENTION_SECS),
            "{logical_id}: retention"
        );
        let sse = template.property(logical_id, "SqsManagedSseEnabled");
        if !sse.is_null() {
            assert_eq!(
                attribute(logical_id, QueueAttributeName::SqsManagedSseEnabled),
                Some(template.string(sse)),
                "{logical_id}: SSE-SQS"
            );
        }

        let redrive = template.property(logical_id, "RedrivePolicy");
        let reported_redrive = attribute(logical_id, QueueAttributeName::RedrivePolicy)
            .filter(|policy| !policy.is_empty());
        if redrive.is_null() {
            assert_eq!(reported_redrive, None, "{logical_id}: unexpected redrive");
            continue;
        }
        let reported_redrive: serde_json::Value = serde_json::from_str(
            &reported_redrive.unwrap_or_else(|| panic!("{logical_id}: no redrive policy")),
        )
        .expect("RedrivePolicy is JSON");
        let max_receive_count = &reported_redrive["maxReceiveCount"];
        assert_eq!(
            max_receive_count
                .as_u64()
                .or_else(|| max_receive_count.as_str().and_then(|s| s.parse().ok())),
            Some(template.number(&redrive["maxReceiveCount"])),
            "{logical_id}: maxReceiveCount"
        );
        let dead_letter_queue = arn_of(&redrive["deadLetterTargetArn"]);
        assert!(
            created.contains_key(dead_letter_queue),
            "{logical_id}: dead-letter target {dead_letter_queue} is not a queue of the template"
        );
        assert_eq!(
            reported_redrive["deadLetterTargetArn"].as_str(),
            attribute(dead_letter_queue, QueueAttributeName::QueueArn).as_deref(),
            "{logical_id}: dead-letter target"
        );
    }
}

#[test]
fn event_queue_outlasts_a_processor_batch_and_its_dead_letters_outlast_it() {
    let template = Template::load();
    let event_source = template.property("ProcessorFunction", "Events")["EventQueueMessages"]
        ["Properties"]
        .clone();
    let queue = arn_of(&event_source["Queue"]);
    let processor_timeout =
        template.number(template.function_setting("ProcessorFunction", "Timeout"));
    let longest_batching_window = template.largest(&event_source["MaximumBatchingWindowInSeconds"]);
    let visibility = template.number(template.property(queue, "VisibilityTimeout"));

    // AWS asks for 6x the function timeout; messages are already invisible while a batch fills.
    assert!(
        visibility >= 6 * processor_timeout + longest_batching_window,
        "{queue}: visibility timeout {visibility} s < 6 x {processor_timeout} s + {longest_batching_window} s"
    );
    assert_eq!(
        event_source["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures"),
        "the processor reports failures per message"
    );

    // A message keeps its first enqueue time in the dead-letter queue, so a shorter retention there
    // would expire dead letters early.
    let dead_letter_queue =
        arn_of(&template.property(queue, "RedrivePolicy")["deadLetterTargetArn"]);
    let retention = |id: &str| template.number(template.property(id, "MessageRetentionPeriod"));
    assert!(
        retention(dead_letter_queue) > retention(queue),
        "dead letters must be kept longer than events on {queue}"
    );
}

#[test]
fn tables_have_the_keys_and_ttl_the_code_uses() {
    let template = Template::load();
    // shared/src/dedup/dynamo.rs: items keyed by event_id, TTL on expires_at.
    assert_eq!(
        Template::key_schema(template.property("DedupTable", "KeySchema")),
        [("event_id".to_owned(), "HASH".to_owned())]
    );
    let ttl = template.property("DedupTable", "TimeToLiveSpecification");
    assert_eq!(ttl["AttributeName"].as_str(), Some("expires_at"));
    assert_eq!(template.string(&ttl["Enabled"]), "true");
    assert_eq!(
        Template::key_schema(template.property("BillingTable", "KeySchema")),
        [
            (billing::attr::PK.to_owned(), "HASH".to_owned()),
            (billing::attr::SK.to_owned(), "RANGE".to_owned())
        ]
    );
}

#[test]
fn functions_get_only_environment_variables_the_code_reads() {
    let template = Template::load();
    let receiver: BTreeSet<String> = [
        config::DEDUP_TABLE_NAME,
        config::EVENT_QUEUE_URL,
        config::STRIPE_WEBHOOK_SECRET_ARN,
        config::STRIPE_LIVEMODE,
        config::DEDUP_TTL_SECS,
        config::STRIPE_SIGNATURE_TOLERANCE_SECS,
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
        config::METRICS_NAMESPACE,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(template.environment("ProcessorFunction"), processor);
}
