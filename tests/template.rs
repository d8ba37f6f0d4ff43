//! `template.yaml` is what `sam deploy` creates; `infra/resources.py` creates the emulator tables and
//! queues that `make dev` and every other integration test run against, from the same file. These tests
//! check that the two agree: keys, indexes, TTL, billing mode, queue redrive, visibility timeout,
//! retention, encryption flag. They read the template on their own (a small YAML read, not
//! resources.py's reader) and ask DynamoDB Local and the SQS emulator through the AWS SDK what exists.
//! They also check the template's own invariants that the code relies on, the optional features'
//! IAM grants (each only when its parameter is set, and only on what it names), and the wiring of the
//! optional Amazon EventBridge ingress (a partner event bus whose rule feeds the same event queue).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::{AttributeValue, IndexStatus, ProjectionType, TimeToLiveStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use integration_tests::{dynamodb, dynamodb_endpoint, repo_root, sqs, sqs_endpoint, Resources};
use serde_norway::Value;
use stripe_pipeline::{billing, config, feed, telemetry::Outcome};

/// The condition every resource of the EventBridge ingress carries: StripeEventSourceName is set.
const INGRESS_CONDITION: &str = "HasStripeEventSource";
/// The parameter naming Stripe's partner event source; empty (the default) turns the ingress off.
const INGRESS_PARAMETER: &str = "StripeEventSourceName";
const SAMPLE_EVENT_SOURCE: &str = "aws.partner/stripe.com/ed_test_61ABCDEF";

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

    /// Logical ids of one type that a deploy with default parameters creates (and resources.py
    /// without --param): those without a Condition. The only conditional resources are the
    /// EventBridge ingress's, off by default
    /// (`eventbridge_ingress_is_off_by_default_and_conditional_throughout`).
    fn deployed_by_default(&self, resource_type: &str) -> BTreeSet<String> {
        self.logical_ids(resource_type)
            .into_iter()
            .filter(|id| match self.resource(id)["Condition"].as_str() {
                None => true,
                Some(INGRESS_CONDITION) => false,
                Some(other) => panic!(
                    "{id}: Condition {other}: teach deployed_by_default whether it holds by default"
                ),
            })
            .collect()
    }

    /// Logical ids of every resource under a Condition.
    fn with_condition(&self, condition: &str) -> BTreeSet<String> {
        self.root["Resources"]
            .as_mapping()
            .expect("Resources is a mapping")
            .iter()
            .filter(|(_, resource)| resource["Condition"].as_str() == Some(condition))
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

/// `Some(name)` when `value` is `!Ref name`.
fn ref_to(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
        _ => None,
    }
}

/// Parameters and resources a value refers to: `!Ref`, `!GetAtt`, and `${...}` in `!Sub` (pseudo
/// parameters and the Sub's own variables left out).
fn references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            found.extend(tagged.value.as_str().map(str::to_owned));
        }
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => {
            let target = tagged.value.as_str().expect("!GetAtt Resource.Attribute");
            found.insert(target.split('.').next().unwrap_or(target).to_owned());
        }
        Value::Tagged(tagged) if tagged.tag == "Sub" => {
            let (text, variables) = match &tagged.value {
                Value::String(text) => (text.as_str(), None),
                Value::Sequence(parts) => (
                    parts[0].as_str().expect("!Sub [text, variables]"),
                    parts.get(1).and_then(Value::as_mapping),
                ),
                other => panic!("unexpected !Sub {other:?}"),
            };
            for piece in text.split("${").skip(1) {
                let name = piece.split('}').next().unwrap_or_default();
                let name = name.split('.').next().unwrap_or(name);
                let is_variable = variables.is_some_and(|v| v.contains_key(name));
                if !name.starts_with('!') && !name.starts_with("AWS::") && !is_variable {
                    found.insert(name.to_owned());
                }
            }
            if let Some(variables) = variables {
                variables.values().for_each(|v| references(v, found));
            }
        }
        // `!If [HasStripeEventSource, a, b]`: `a` is only evaluated with the ingress on, so what it
        // names may exist only then; `b` is what deploys with the ingress off.
        Value::Tagged(tagged)
            if tagged.tag == "If" && tagged.value[0].as_str() == Some(INGRESS_CONDITION) =>
        {
            references(&tagged.value[2], found)
        }
        Value::Tagged(tagged) => references(&tagged.value, found),
        Value::Sequence(items) => items.iter().for_each(|v| references(v, found)),
        Value::Mapping(map) => map.values().for_each(|v| references(v, found)),
        _ => {}
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
        template.deployed_by_default("AWS::DynamoDB::Table"),
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
        template.deployed_by_default("AWS::SQS::Queue"),
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
fn billing_table_has_the_feed_index_and_ttl_the_code_uses() {
    let template = Template::load();
    // shared/src/feed.rs: feed records are queried through the ByFeed GSI, newest first, and expire
    // on expires_at.
    let indexes = template
        .property("BillingTable", "GlobalSecondaryIndexes")
        .as_sequence()
        .expect("BillingTable: GlobalSecondaryIndexes is a list");
    let by_feed: Vec<&Value> = indexes
        .iter()
        .filter(|index| index["IndexName"].as_str() == Some(feed::INDEX))
        .collect();
    assert_eq!(by_feed.len(), 1, "BillingTable: one index {}", feed::INDEX);
    let by_feed = by_feed[0];
    assert_eq!(
        Template::key_schema(&by_feed["KeySchema"]),
        [
            (feed::PARTITION.to_owned(), "HASH".to_owned()),
            (feed::SORT.to_owned(), "RANGE".to_owned())
        ],
        "{}: keys",
        feed::INDEX
    );
    assert_eq!(
        by_feed["Projection"]["ProjectionType"].as_str(),
        Some("ALL"),
        "{}: a feed card needs the whole record",
        feed::INDEX
    );
    assert_eq!(
        template.string(template.property("BillingTable", "BillingMode")),
        "PAY_PER_REQUEST"
    );
    assert!(
        by_feed["ProvisionedThroughput"].is_null(),
        "{}: on-demand, so no throughput",
        feed::INDEX
    );
    let definitions =
        attribute_definitions(template.property("BillingTable", "AttributeDefinitions"));
    for key in [feed::PARTITION, feed::SORT] {
        assert!(
            definitions.contains(&(key.to_owned(), "S".to_owned())),
            "BillingTable: {key} is defined as a string"
        );
    }

    // Markers (with their feed records), notification records and dispute entries carry
    // expires_at; billing state never does.
    let ttl = template.property("BillingTable", "TimeToLiveSpecification");
    assert_eq!(
        ttl["AttributeName"].as_str(),
        Some(feed::EXPIRES_AT),
        "BillingTable: TTL attribute"
    );
    assert_eq!(
        template.string(&ttl["Enabled"]),
        "true",
        "BillingTable: TTL"
    );

    // The processor writes feed records with the rest of an event's transaction.
    assert!(
        template.grants("ProcessorRole").iter().any(|grant| {
            grant.condition.is_none()
                && grant.allows("dynamodb:PutItem")
                && grant.resources.iter().any(|r| {
                    matches!(r, Value::Tagged(t) if t.tag == "GetAtt"
                        && t.value.as_str() == Some("BillingTable.Arn"))
                })
        }),
        "ProcessorRole: dynamodb:PutItem on BillingTable"
    );
}

#[tokio::test]
async fn emulator_billing_table_serves_the_feed_index_newest_first() {
    // GIVEN the billing table resources.py creates
    let resources = Resources::create();
    let client = dynamodb(&dynamodb_endpoint()).await;
    let table = client
        .describe_table()
        .table_name(&resources.billing_table)
        .send()
        .await
        .expect("describe_table")
        .table
        .expect("table description");

    // THEN it has the feed index, built, and TTL on expires_at
    let index = table
        .global_secondary_indexes()
        .iter()
        .find(|index| index.index_name() == Some(feed::INDEX))
        .unwrap_or_else(|| panic!("{}: no index {}", resources.billing_table, feed::INDEX));
    assert_eq!(
        sdk_key_schema(index.key_schema()),
        [
            (feed::PARTITION.to_owned(), "HASH".to_owned()),
            (feed::SORT.to_owned(), "RANGE".to_owned())
        ]
    );
    assert_eq!(
        index.projection().and_then(|p| p.projection_type()),
        Some(&ProjectionType::All)
    );
    assert_eq!(index.index_status(), Some(&IndexStatus::Active));
    let ttl = client
        .describe_time_to_live()
        .table_name(&resources.billing_table)
        .send()
        .await
        .expect("describe_time_to_live")
        .time_to_live_description
        .expect("TTL description");
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some(feed::EXPIRES_AT));

    // AND a query of one day's partition returns that day's event markers (which carry the feed
    // records), newest first, and nothing without feed keys (a notification record)
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let day = "DAY#2026-11-24";
    let items = [
        ("EVENT#evt_old", "EVENT", Some("0001764000000#evt_old")),
        ("EVENT#evt_new", "EVENT", Some("0001764000100#evt_new")),
        ("EVENT#evt_new", "NOTIFY#slack.team", None),
    ];
    for (pk, sk, sort) in items {
        let mut put = client
            .put_item()
            .table_name(&resources.billing_table)
            .item(billing::attr::PK, s(pk))
            .item(billing::attr::SK, s(sk));
        if let Some(sort) = sort {
            put = put
                .item(feed::PARTITION, s(day))
                .item(feed::SORT, s(sort))
                .item(feed::EXPIRES_AT, AttributeValue::N("1800000000".into()));
        }
        put.send().await.expect("put_item");
    }
    let found: Vec<(String, String)> = client
        .query()
        .table_name(&resources.billing_table)
        .index_name(feed::INDEX)
        .key_condition_expression("#p = :p")
        .expression_attribute_names("#p", feed::PARTITION)
        .expression_attribute_values(":p", s(day))
        .scan_index_forward(false)
        .send()
        .await
        .expect("query the feed index")
        .items()
        .iter()
        .filter_map(|item| {
            let key = |name| item.get(name)?.as_s().ok().cloned();
            Some((key(billing::attr::PK)?, key(billing::attr::SK)?))
        })
        .collect();
    let marker = |pk: &str| (pk.to_owned(), "EVENT".to_owned());
    assert_eq!(found, [marker("EVENT#evt_new"), marker("EVENT#evt_old")]);
}

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

// -------------------------------------------------------------------------------------------------
// IAM: the optional features' grants exist only when their parameter is set, on what it names.

/// The parameter naming the sender of notification emails.
const EMAIL_PARAMETER: &str = "NotificationEmailFrom";
/// The condition "NotificationEmailFrom is set".
const EMAIL_CONDITION: &str = "HasNotificationEmailFrom";

/// One statement of a role's inline policies.
struct Grant<'a> {
    /// The policy's name.
    policy: String,
    /// The condition the whole policy is under (`!If [Condition, policy, !Ref AWS::NoValue]`).
    condition: Option<String>,
    actions: Vec<String>,
    resources: Vec<&'a Value>,
}

impl Grant<'_> {
    /// Whether one of the statement's actions (IAM wildcards included) covers `action`.
    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|pattern| glob(pattern, action))
    }
}

/// IAM's action matching: case-insensitive, `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some((b'?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => {
                t.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &t[1..])
            }
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// `!If [Condition, value, !Ref AWS::NoValue]`: `(Condition, value)`.
fn if_or_no_value(value: &Value) -> Option<(&str, &Value)> {
    let Value::Tagged(tagged) = value else {
        return None;
    };
    let parts = tagged.value.as_sequence()?;
    if tagged.tag == "If" && parts.len() == 3 && ref_to(&parts[2]) == Some("AWS::NoValue") {
        Some((parts[0].as_str()?, &parts[1]))
    } else {
        None
    }
}

fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Asserts that `condition` is `!Not [!Equals [!Ref parameter, ""]]`.
fn assert_parameter_set(template: &Template, condition: &str, parameter: &str) {
    let expected = format!("{condition} should be !Not [!Equals [!Ref {parameter}, \"\"]]");
    let Value::Tagged(not) = &template.root["Conditions"][condition] else {
        panic!("{expected}");
    };
    let Value::Tagged(equals) = &not.value[0] else {
        panic!("{expected}");
    };
    assert!(not.tag == "Not" && equals.tag == "Equals", "{expected}");
    assert_eq!(ref_to(&equals.value[0]), Some(parameter), "{expected}");
    assert_eq!(equals.value[1].as_str(), Some(""), "{expected}");
}

impl Template {
    /// Every statement of a role's inline policies. A policy is a mapping, or a whole policy under
    /// `!If [Condition, policy, !Ref AWS::NoValue]`; statements are Allow with literal actions.
    fn grants(&self, role: &str) -> Vec<Grant<'_>> {
        let mut grants = Vec::new();
        let policies = self
            .property(role, "Policies")
            .as_sequence()
            .unwrap_or_else(|| panic!("{role}: Policies is a list"));
        for item in policies {
            let (condition, policy) = match if_or_no_value(item) {
                Some((condition, policy)) => (Some(condition.to_owned()), policy),
                None => {
                    assert!(
                        item.as_mapping().is_some(),
                        "{role}: a policy is a mapping or !If [Condition, policy, !Ref AWS::NoValue], found {item:?}"
                    );
                    (None, item)
                }
            };
            let name = policy["PolicyName"].as_str().expect("PolicyName");
            let statements = policy["PolicyDocument"]["Statement"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{role}/{name}: Statement is a list"));
            for statement in statements {
                assert_eq!(
                    statement["Effect"].as_str(),
                    Some("Allow"),
                    "{role}/{name}: Allow statements only"
                );
                let actions = one_or_many(&statement["Action"])
                    .into_iter()
                    .map(|a| {
                        a.as_str()
                            .unwrap_or_else(|| panic!("{role}/{name}: literal actions"))
                            .to_owned()
                    })
                    .collect();
                grants.push(Grant {
                    policy: name.to_owned(),
                    condition: condition.clone(),
                    actions,
                    resources: one_or_many(&statement["Resource"]),
                });
            }
        }
        grants
    }
}

/// What an SES identity ARN in a grant names: `"sender"` for
/// `!Sub arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${NotificationEmailFrom}`,
/// `"sender's domain"` when the identity is a Sub variable that is
/// `!Select [1, !Split ["@", !Ref NotificationEmailFrom]]`; an error for anything else.
fn ses_identity(resource: &Value) -> Result<&'static str, String> {
    let Value::Tagged(sub) = resource else {
        return Err(format!("not an identity ARN built with !Sub: {resource:?}"));
    };
    let (text, variables) = match &sub.value {
        Value::String(text) if sub.tag == "Sub" => (text.as_str(), None),
        Value::Sequence(parts) if sub.tag == "Sub" => (
            parts[0].as_str().unwrap_or_default(),
            parts.get(1).and_then(Value::as_mapping),
        ),
        _ => return Err(format!("not an identity ARN built with !Sub: {resource:?}")),
    };
    let identity = text
        .strip_prefix("arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/")
        .ok_or_else(|| format!("{text}: not an SES identity ARN of this account and region"))?;
    if identity == format!("${{{EMAIL_PARAMETER}}}") {
        return Ok("sender");
    }
    let variable = identity
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .ok_or_else(|| format!("{text}: the identity must be the sender or its domain"))?;
    let value = variables
        .and_then(|v| v.get(variable))
        .ok_or_else(|| format!("{text}: ${{{variable}}} is not the sender or its domain"))?;
    let is_domain = match value {
        Value::Tagged(select) if select.tag == "Select" => {
            select.value[0].as_u64() == Some(1)
                && matches!(&select.value[1], Value::Tagged(split) if split.tag == "Split"
                    && split.value[0].as_str() == Some("@")
                    && ref_to(&split.value[1]) == Some(EMAIL_PARAMETER))
        }
        _ => false,
    };
    if is_domain {
        Ok("sender's domain")
    } else {
        Err(format!(
            "{text}: ${{{variable}}} should be !Select [1, !Split [\"@\", !Ref {EMAIL_PARAMETER}]]"
        ))
    }
}

#[test]
fn email_may_be_sent_only_from_the_configured_sender_and_only_when_set() {
    let template = Template::load();
    assert_parameter_set(&template, EMAIL_CONDITION, EMAIL_PARAMETER);

    let grants = template.grants("ProcessorRole");
    let sending: Vec<&Grant<'_>> = grants
        .iter()
        .filter(|grant| grant.allows("ses:SendEmail"))
        .collect();
    assert!(
        !sending.is_empty(),
        "ProcessorRole: ses:SendEmail when {EMAIL_PARAMETER} is set"
    );
    for grant in sending {
        let policy = &grant.policy;
        assert_eq!(
            grant.condition.as_deref(),
            Some(EMAIL_CONDITION),
            "{policy}: ses:SendEmail only under !If [{EMAIL_CONDITION}, ...]"
        );
        assert_eq!(
            grant.actions,
            ["ses:SendEmail"],
            "{policy}: SendEmail alone"
        );
        assert!(
            grant
                .resources
                .iter()
                .all(|r| r.as_str().is_none_or(|s| !s.contains('*'))),
            "{policy}: no wildcard resource"
        );
        let identities: Result<BTreeSet<&str>, String> =
            grant.resources.iter().map(|r| ses_identity(r)).collect();
        let identities = identities.unwrap_or_else(|e| panic!("{policy}: {e}"));
        assert_eq!(
            identities,
            BTreeSet::from(["sender", "sender's domain"]),
            "{policy}: the sender's identity and its domain's"
        );
        assert_eq!(
            grant.resources.len(),
            2,
            "{policy}: those two identity ARNs, nothing else"
        );
    }

    // No other SES action anywhere, and the receiver sends nothing.
    for grant in &grants {
        for action in &grant.actions {
            let ses = action.to_ascii_lowercase().starts_with("ses:") || glob(action, "ses:Other");
            assert!(
                !ses || action == "ses:SendEmail",
                "{}: {action}: the processor sends email, nothing else in SES",
                grant.policy
            );
        }
    }
    assert!(
        !template
            .grants("ReceiverRole")
            .iter()
            .any(|grant| grant.allows("ses:SendEmail")),
        "ReceiverRole: no SES"
    );
}

#[test]
fn optional_secrets_are_readable_only_when_given_and_only_those() {
    let template = Template::load();
    let grants = template.grants("ProcessorRole");
    let optional = [
        (
            "SlackWebhookSecretArn",
            "HasSlackWebhookSecret",
            config::SLACK_WEBHOOK_SECRET_ARN,
        ),
        (
            "StripeApiKeySecretArn",
            "HasStripeApiKeySecret",
            config::STRIPE_API_KEY_SECRET_ARN,
        ),
        (
            "NotificationRoutesSecretArn",
            "HasNotificationRoutesSecret",
            config::NOTIFICATION_ROUTES_SECRET_ARN,
        ),
    ];
    let variables = &template.property("ProcessorFunction", "Environment")["Variables"];
    let arn_pattern = &template.root["Parameters"]["SlackWebhookSecretArn"]["AllowedPattern"];

    for (parameter, condition, variable) in optional {
        // Off by default, and only a full secret ARN when on.
        let spec = &template.root["Parameters"][parameter];
        assert_eq!(
            spec["Default"].as_str(),
            Some(""),
            "{parameter}: off by default"
        );
        assert_eq!(
            &spec["AllowedPattern"], arn_pattern,
            "{parameter}: empty or a secret ARN"
        );
        assert_parameter_set(&template, condition, parameter);

        // The processor gets the ARN only when it is given.
        let (env_condition, value) = if_or_no_value(&variables[variable]).unwrap_or_else(|| {
            panic!("{variable} should be !If [{condition}, !Ref {parameter}, !Ref AWS::NoValue]")
        });
        assert_eq!(env_condition, condition, "{variable}");
        assert_eq!(ref_to(value), Some(parameter), "{variable}");

        // And may read that secret, only then, and nothing else with that statement.
        let reading: Vec<&Grant<'_>> = grants
            .iter()
            .filter(|grant| grant.resources.iter().any(|r| ref_to(r) == Some(parameter)))
            .collect();
        assert_eq!(
            reading.len(),
            1,
            "ProcessorRole: one statement on {parameter}"
        );
        let grant = reading[0];
        assert_eq!(
            grant.condition.as_deref(),
            Some(condition),
            "{}: only under !If [{condition}, ...]",
            grant.policy
        );
        assert_eq!(
            grant.actions,
            ["secretsmanager:GetSecretValue"],
            "{}: read only",
            grant.policy
        );
        assert_eq!(
            grant.resources.len(),
            1,
            "{}: {parameter} alone",
            grant.policy
        );
    }

    // Every secret the processor may read is one of those (no wildcard, no other secret).
    for grant in grants
        .iter()
        .filter(|grant| grant.allows("secretsmanager:GetSecretValue"))
    {
        for resource in &grant.resources {
            assert!(
                ref_to(resource).is_some_and(|r| optional.iter().any(|(p, _, _)| *p == r)),
                "{}: reads {resource:?}",
                grant.policy
            );
        }
    }
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
fn the_source_ip_allow_list_is_off_by_default_and_readable_only_when_named() {
    let template = Template::load();
    let parameter = "SourceIpAllowListParameter";
    let condition = "HasSourceIpAllowList";
    let spec = &template.root["Parameters"][parameter];
    assert_eq!(spec["Default"].as_str(), Some(""), "off by default");
    // A name the ARN below can be built from: empty, or a path starting with /.
    let pattern = spec["AllowedPattern"].as_str().expect("AllowedPattern");
    assert!(pattern.starts_with("^(|/"), "{pattern}");
    assert_parameter_set(&template, condition, parameter);
    let variables = &template.property("ReceiverFunction", "Environment")["Variables"];
    let (env_condition, value) =
        if_or_no_value(&variables[config::SOURCE_IP_ALLOWLIST_PARAMETER]).expect("!If");
    assert_eq!(env_condition, condition);
    assert_eq!(ref_to(value), Some(parameter));
    // The receiver may read SSM only under the condition, that one parameter, and only read it.
    let grants = template.grants("ReceiverRole");
    let ssm: Vec<_> = grants
        .iter()
        .filter(|grant| grant.actions.iter().any(|a| a.starts_with("ssm:")))
        .collect();
    assert_eq!(ssm.len(), 1, "one SSM statement");
    assert_eq!(ssm[0].condition.as_deref(), Some(condition));
    assert_eq!(ssm[0].actions, ["ssm:GetParameter"]);
    assert_eq!(ssm[0].resources.len(), 1);
    let resource = serde_json::to_string(ssm[0].resources[0]).unwrap();
    assert!(
        resource.contains(":parameter${SourceIpAllowListParameter}"),
        "{resource}"
    );
}

// -------------------------------------------------------------------------------------------------
// The optional Amazon EventBridge ingress: Stripe's partner source -> bus -> rule -> EventQueue.

impl Template {
    /// The one resource of a type (panics on none or several).
    fn single(&self, resource_type: &str) -> String {
        let ids = self.logical_ids(resource_type);
        assert_eq!(ids.len(), 1, "expected one {resource_type}, found {ids:?}");
        ids.into_iter().next().unwrap_or_default()
    }

    /// The queue the receiver sends to (`EVENT_QUEUE_URL: !Ref <queue>`).
    fn receiver_queue(&self) -> &str {
        let variables = &self.property("ReceiverFunction", "Environment")["Variables"];
        ref_to(&variables[config::EVENT_QUEUE_URL]).expect("EVENT_QUEUE_URL is !Ref <queue>")
    }

    /// Whether `value` is the ARN of `rule`: `!GetAtt <rule>.Arn`, or the ARN spelled out with
    /// `!Sub` from the bus name (the partner source) and the rule's fixed Name, as EventBridge
    /// forms it for a rule on a custom bus:
    /// `arn:<partition>:events:<region>:<account>:rule/<bus name>/<rule name>`.
    fn is_rule_arn(&self, value: &Value, rule: &str) -> bool {
        let Value::Tagged(tagged) = value else {
            return false;
        };
        if tagged.tag == "GetAtt" {
            return tagged.value.as_str() == Some(&format!("{rule}.Arn"));
        }
        if tagged.tag != "Sub" {
            return false;
        }
        let rule_name = self
            .property(rule, "Name")
            .as_str()
            .expect("the rule has a fixed Name");
        let (text, variables) = match &tagged.value {
            Value::String(text) => (text.clone(), None),
            Value::Sequence(parts) => (
                parts[0].as_str().unwrap_or_default().to_owned(),
                parts.get(1).and_then(Value::as_mapping),
            ),
            _ => return false,
        };
        // Substitute the Sub's own variables (literals only), then compare with the expected form.
        let mut text = text;
        for (name, value) in variables.into_iter().flatten() {
            if let (Some(name), Some(value)) = (name.as_str(), value.as_str()) {
                text = text.replace(&format!("${{{name}}}"), value);
            }
        }
        let rules = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule";
        text == format!("{rules}/${{{INGRESS_PARAMETER}}}/{rule_name}")
    }
}

#[test]
fn eventbridge_ingress_is_off_by_default_and_conditional_throughout() {
    let template = Template::load();

    // The switch: the parameter is empty by default, and the condition is "parameter not empty".
    let parameter = &template.root["Parameters"][INGRESS_PARAMETER];
    assert_eq!(
        parameter["Default"].as_str(),
        Some(""),
        "the ingress is off by default"
    );
    let condition = &template.root["Conditions"][INGRESS_CONDITION];
    let Value::Tagged(not) = condition else {
        panic!("{INGRESS_CONDITION} should be !Not [!Equals [!Ref {INGRESS_PARAMETER}, \"\"]]");
    };
    let Value::Tagged(equals) = &not.value[0] else {
        panic!("{INGRESS_CONDITION}: expected !Equals inside !Not");
    };
    assert!(not.tag == "Not" && equals.tag == "Equals");
    assert_eq!(ref_to(&equals.value[0]), Some(INGRESS_PARAMETER));
    assert_eq!(equals.value[1].as_str(), Some(""));

    // Every EventBridge resource and every queue policy exists only with the ingress on.
    let conditional = template.with_condition(INGRESS_CONDITION);
    for resource_type in [
        "AWS::Events::EventBus",
        "AWS::Events::Rule",
        "AWS::SQS::QueuePolicy",
    ] {
        let ids = template.logical_ids(resource_type);
        assert!(!ids.is_empty(), "the ingress needs an {resource_type}");
        assert!(
            ids.is_subset(&conditional),
            "{resource_type}: {:?} lack Condition {INGRESS_CONDITION}",
            ids.difference(&conditional).collect::<Vec<_>>()
        );
    }

    // Nothing that deploys with the ingress off refers to what only exists with it on.
    let resources = template.root["Resources"].as_mapping().expect("Resources");
    let outputs = template.root["Outputs"].as_mapping().expect("Outputs");
    for (id, item) in resources.iter().chain(outputs.iter()) {
        if item["Condition"].as_str() == Some(INGRESS_CONDITION) {
            continue;
        }
        let mut found = BTreeSet::new();
        references(&item["Properties"], &mut found);
        references(&item["Value"], &mut found);
        references(&item["DependsOn"], &mut found);
        let id = id.as_str().unwrap_or_default();
        let stray: Vec<_> = found.intersection(&conditional).collect();
        assert!(
            stray.is_empty(),
            "{id} refers to {stray:?}, which exist only with the ingress on"
        );
    }
}

#[test]
fn eventbridge_rule_feeds_the_event_queue_with_retries_and_a_dead_letter_queue() {
    let template = Template::load();
    let bus = template.single("AWS::Events::EventBus");
    let rule = template.single("AWS::Events::Rule");

    // The partner bus of the source the parameter names (a partner bus carries the source's name).
    for property in ["Name", "EventSourceName"] {
        assert_eq!(
            ref_to(template.property(&bus, property)),
            Some(INGRESS_PARAMETER),
            "{bus}.{property}"
        );
    }
    assert_eq!(
        ref_to(template.property(&rule, "EventBusName")),
        Some(bus.as_str())
    );
    assert_eq!(template.property(&rule, "State").as_str(), Some("ENABLED"));

    // One target: the queue the receiver feeds and the processor reads.
    let targets = template
        .property(&rule, "Targets")
        .as_sequence()
        .expect("Targets is a list");
    assert_eq!(targets.len(), 1, "{rule}: one target, the event queue");
    let target = &targets[0];
    let queue = arn_of(&target["Arn"]);
    assert_eq!(
        queue,
        template.receiver_queue(),
        "{rule} targets the receiver's queue"
    );
    let processor_queue = &template.property("ProcessorFunction", "Events")["EventQueueMessages"]
        ["Properties"]["Queue"];
    assert_eq!(
        queue,
        arn_of(processor_queue),
        "{rule} targets the processor's queue"
    );
    // SQS targets are authorized by the queue policy; a role here can make deliveries fail.
    assert!(
        target["RoleArn"].is_null(),
        "{rule}: no RoleArn on an SQS target"
    );

    // Retries within EventBridge's limits, then a dead-letter queue of the ingress's own.
    let retry = &target["RetryPolicy"];
    let attempts = template.number(&retry["MaximumRetryAttempts"]);
    let max_age = template.number(&retry["MaximumEventAgeInSeconds"]);
    assert!(attempts <= 185, "MaximumRetryAttempts {attempts} > 185");
    assert!(
        (60..=86_400).contains(&max_age),
        "MaximumEventAgeInSeconds {max_age} not in 60..=86400"
    );
    let dead_letters = arn_of(&target["DeadLetterConfig"]["Arn"]);
    assert_eq!(
        template.resource(dead_letters)["Type"].as_str(),
        Some("AWS::SQS::Queue"),
        "{rule}: the dead-letter target is a queue"
    );
    assert_eq!(
        template.resource(dead_letters)["Condition"].as_str(),
        Some(INGRESS_CONDITION)
    );
    assert_ne!(dead_letters, queue);

    // EventBridge can deliver to SSE-SQS queues, not to ones under the AWS managed key
    // alias/aws/sqs (its key policy cannot be extended to events.amazonaws.com).
    for id in [queue, dead_letters] {
        assert_eq!(
            template.string(template.property(id, "SqsManagedSseEnabled")),
            "true",
            "{id}: SSE-SQS"
        );
        assert!(
            template.property(id, "KmsMasterKeyId").is_null(),
            "{id}: no KMS key"
        );
    }

    // Stripe's events, of this stack's mode only, whether or not event types are listed.
    let Value::Tagged(pattern) = template.property(&rule, "EventPattern") else {
        panic!("{rule}: EventPattern is !If [FiltersStripeEventTypes, listed, all]");
    };
    assert!(pattern.tag == "If");
    let (listed, all) = (&pattern.value[1], &pattern.value[2]);
    for branch in [listed, all] {
        assert_eq!(
            branch["source"][0]["prefix"].as_str(),
            Some("aws.partner/stripe.com"),
            "{rule}: matches Stripe's partner sources"
        );
        let Value::Tagged(livemode) = &branch["detail"]["livemode"] else {
            panic!("{rule}: detail.livemode follows LiveMode, as the receiver's STRIPE_LIVEMODE");
        };
        assert!(livemode.tag == "If" && livemode.value[0].as_str() == Some("IsLiveMode"));
        assert_eq!(livemode.value[1][0].as_bool(), Some(true));
        assert_eq!(livemode.value[2][0].as_bool(), Some(false));
    }
    assert_eq!(ref_to(&listed["detail-type"]), Some("StripeEventTypes"));
    assert!(
        all["detail-type"].is_null(),
        "the default forwards every type"
    );
}

#[test]
fn only_the_rule_may_send_to_its_queues() {
    let template = Template::load();
    let rule = template.single("AWS::Events::Rule");
    let target = &template.property(&rule, "Targets")[0];
    let queues = [
        arn_of(&target["Arn"]),
        arn_of(&target["DeadLetterConfig"]["Arn"]),
    ];
    let depends_on: BTreeSet<String> = match &template.resource(&rule)["DependsOn"] {
        Value::String(one) => BTreeSet::from([one.clone()]),
        Value::Sequence(many) => many
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => BTreeSet::new(),
    };

    for queue in queues {
        // GIVEN the queue policy that covers this queue
        let policies: Vec<String> = template
            .logical_ids("AWS::SQS::QueuePolicy")
            .into_iter()
            .filter(|id| {
                template
                    .property(id, "Queues")
                    .as_sequence()
                    .is_some_and(|q| q.iter().any(|v| ref_to(v) == Some(queue)))
            })
            .collect();
        assert_eq!(
            policies.len(),
            1,
            "{queue}: one queue policy, found {policies:?}"
        );
        let policy = &policies[0];
        assert_eq!(
            template
                .property(policy, "Queues")
                .as_sequence()
                .map(Vec::len),
            Some(1),
            "{policy}: covers {queue} alone"
        );

        // THEN each statement lets EventBridge send to this queue, and only for the rule
        let statements = template.property(policy, "PolicyDocument")["Statement"]
            .as_sequence()
            .expect("Statement is a list");
        assert!(!statements.is_empty());
        for statement in statements {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"));
            assert_eq!(
                statement["Principal"]["Service"].as_str(),
                Some("events.amazonaws.com"),
                "{policy}: the EventBridge service principal only"
            );
            assert_eq!(
                statement["Action"].as_str(),
                Some("sqs:SendMessage"),
                "{policy}: send only"
            );
            assert_eq!(
                arn_of(&statement["Resource"]),
                queue,
                "{policy}: this queue only"
            );
            let condition = statement["Condition"].as_mapping().expect("a Condition");
            assert_eq!(condition.len(), 1, "{policy}: ArnEquals alone");
            let arn_equals = condition
                .get("ArnEquals")
                .and_then(Value::as_mapping)
                .expect("ArnEquals");
            assert_eq!(arn_equals.len(), 1);
            let source_arn = arn_equals.get("aws:SourceArn").expect("aws:SourceArn");
            assert!(
                template.is_rule_arn(source_arn, &rule),
                "{policy}: aws:SourceArn must be {rule}'s ARN, found {source_arn:?}"
            );
        }

        // A rule delivering before its queue lets it in loses the event (access denied is not
        // retried, and the DLQ would refuse it too): the policy must exist before the rule, so the
        // rule depends on it, and the policy names the rule by its spelled-out ARN.
        assert!(
            depends_on.contains(policy),
            "{rule} must DependsOn {policy} (which names the rule by its spelled-out ARN)"
        );
    }
}

#[test]
fn eventbridge_delivery_failures_raise_alarms() {
    let template = Template::load();
    let bus = template.single("AWS::Events::EventBus");
    let rule = template.single("AWS::Events::Rule");
    let dead_letters = arn_of(&template.property(&rule, "Targets")[0]["DeadLetterConfig"]["Arn"]);
    let rule_name = template
        .property(&rule, "Name")
        .as_str()
        .expect("rule Name");
    let alarms: Vec<String> = template
        .with_condition(INGRESS_CONDITION)
        .into_iter()
        .filter(|id| template.resource(id)["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .collect();
    let dimensions = |alarm: &str| -> BTreeMap<String, Value> {
        template
            .property(alarm, "Dimensions")
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["Name"].as_str().unwrap_or_default().to_owned(),
                    d["Value"].clone(),
                )
            })
            .collect()
    };
    let notifies = |alarm: &str| {
        template
            .property(alarm, "AlarmActions")
            .as_sequence()
            .is_some_and(|actions| actions.iter().any(|a| ref_to(a) == Some("AlarmTopic")))
    };

    // Deliveries that failed for good, on this rule of this (custom) bus.
    let failed = alarms
        .iter()
        .find(|id| template.property(id, "MetricName").as_str() == Some("FailedInvocations"))
        .expect("an alarm on the rule's FailedInvocations");
    assert_eq!(
        template.property(failed, "Namespace").as_str(),
        Some("AWS/Events")
    );
    let dims = dimensions(failed);
    assert_eq!(
        dims["RuleName"].as_str(),
        Some(rule_name),
        "{failed}: RuleName"
    );
    assert_eq!(
        ref_to(&dims["EventBusName"]),
        Some(bus.as_str()),
        "{failed}: EventBusName"
    );
    assert!(notifies(failed), "{failed} notifies the alarm topic");

    // Events waiting in the rule's dead-letter queue.
    let waiting = alarms
        .iter()
        .find(|id| {
            template.property(id, "MetricName").as_str()
                == Some("ApproximateNumberOfMessagesVisible")
        })
        .expect("an alarm on the rule's dead-letter queue");
    let Value::Tagged(queue_name) = &dimensions(waiting)["QueueName"] else {
        panic!("{waiting}: QueueName is !GetAtt <queue>.QueueName");
    };
    assert_eq!(
        queue_name.value.as_str(),
        Some(format!("{dead_letters}.QueueName").as_str())
    );
    assert!(notifies(waiting), "{waiting} notifies the alarm topic");
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

/// Runs `infra/resources.py ARGS --prefix PREFIX` (with `--json`), returning its JSON output.
fn resources_py(command: &str, prefix: &str, params: &[String]) -> serde_json::Value {
    let mut args = vec![
        command.to_owned(),
        "--prefix".into(),
        prefix.into(),
        "--json".into(),
    ];
    for param in params {
        args.extend(["--param".to_owned(), param.clone()]);
    }
    let output =
        std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(repo_root().join("infra/resources.py"))
            .args(&args)
            .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint())
            .env("AWS_ENDPOINT_URL_SQS", sqs_endpoint())
            .output()
            .expect("run infra/resources.py");
    assert!(
        output.status.success(),
        "resources.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("resources.py prints JSON")
}

#[tokio::test]
async fn emulator_creates_the_rule_dead_letter_queue_only_with_the_ingress_on() {
    integration_tests::ensure_emulators();
    let template = Template::load();
    let rule = template.single("AWS::Events::Rule");
    let dead_letters = arn_of(&template.property(&rule, "Targets")[0]["DeadLetterConfig"]["Arn"]);
    let keys = |created: &serde_json::Value| -> BTreeSet<String> {
        created
            .as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect()
    };
    let always: BTreeSet<String> = [
        config::DEDUP_TABLE_NAME,
        config::BILLING_TABLE_NAME,
        config::EVENT_QUEUE_URL,
        "DEAD_LETTER_QUEUE_URL",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let param = format!("{INGRESS_PARAMETER}={SAMPLE_EVENT_SOURCE}");

    // WHEN resources.py creates the template's resources with the ingress off, then on
    let off_prefix = format!("ebo{:08x}", fastrand::u32(..));
    let on_prefix = format!("ebi{:08x}", fastrand::u32(..));
    let off = resources_py("create", &off_prefix, &[]);
    let on = resources_py("create", &on_prefix, std::slice::from_ref(&param));

    // THEN the keys the tests use are there either way, and the rule's DLQ only with the ingress on
    assert_eq!(keys(&off), always, "ingress off");
    let on_keys = keys(&on);
    assert!(on_keys.is_superset(&always), "ingress on: {on_keys:?}");
    let extra: Vec<_> = on_keys.difference(&always).cloned().collect();
    assert_eq!(
        extra.len(),
        1,
        "ingress on adds the rule's DLQ alone: {extra:?}"
    );
    let url = on[&extra[0]].as_str().expect("a queue URL");
    assert!(
        url.ends_with(&format!("-{dead_letters}")),
        "{url} is {dead_letters}"
    );

    // AND that queue has the template's retention and SSE-SQS
    let reported = sqs(&sqs_endpoint())
        .await
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("get_queue_attributes")
        .attributes
        .unwrap_or_default();
    assert_eq!(
        reported
            .get(&QueueAttributeName::MessageRetentionPeriod)
            .cloned(),
        Some(
            template
                .number(template.property(dead_letters, "MessageRetentionPeriod"))
                .to_string()
        )
    );
    assert_eq!(
        reported
            .get(&QueueAttributeName::SqsManagedSseEnabled)
            .map(String::as_str),
        Some("true")
    );

    resources_py("delete", &off_prefix, &[]);
    resources_py("delete", &on_prefix, &[param]);
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
