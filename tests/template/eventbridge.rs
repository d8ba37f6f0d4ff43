//! The optional Amazon EventBridge ingress: Stripe's partner source -> bus -> rule -> EventQueue.

use super::*;

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

/// Runs `infra/resources.py COMMAND --prefix PREFIX --json [--param P]...`, returning its JSON output.
fn resources_py(command: &str, prefix: &str, params: &[String]) -> serde_json::Value {
    let mut args = vec![command, "--prefix", prefix, "--json"];
    for param in params {
        args.extend(["--param", param.as_str()]);
    }
    integration_tests::resources_py(&args)
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
    let reported = queue_attributes(&sqs(&sqs_endpoint()).await, url).await;
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
