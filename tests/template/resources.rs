//! The emulator's tables and queues (made by `infra/resources.py`) match the template, and the
//! template's tables and queues have the keys, indexes, TTL and timeouts the code uses.

use super::*;

#[tokio::test]
async fn emulator_tables_match_the_template() {
    // GIVEN the tables resources.py creates from template.yaml
    let template = Template::load();
    let resources = create_resources();
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
    let resources = create_resources();
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
        attributes.insert(logical_id.clone(), queue_attributes(&client, url).await);
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
    // shared/src/billing/feed.rs: feed records are queried through the ByFeed GSI, newest first, and expire
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
        Some(billing::attr::EXPIRES_AT),
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
    let resources = create_resources();
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
    assert_eq!(ttl.attribute_name(), Some(billing::attr::EXPIRES_AT));

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
                .item(
                    billing::attr::EXPIRES_AT,
                    AttributeValue::N("1800000000".into()),
                );
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
