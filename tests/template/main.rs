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
use integration_tests::{
    create_resources, dynamodb, dynamodb_endpoint, repo_root, sqs, sqs_endpoint,
};
use serde_norway::Value;
use stripe_pipeline::{
    billing::{self, feed},
    config,
    telemetry::Outcome,
};

mod eventbridge;
mod functions;
mod iam;
mod resources;

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

/// Every attribute the SQS emulator reports for the queue at `url`.
async fn queue_attributes(
    client: &aws_sdk_sqs::Client,
    url: &str,
) -> std::collections::HashMap<QueueAttributeName, String> {
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("get_queue_attributes")
        .attributes
        .unwrap_or_default()
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
