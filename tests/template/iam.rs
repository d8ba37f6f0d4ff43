//! IAM: the optional features' grants exist only when their parameter is set, on what it names.

use super::*;

/// The parameter naming the sender of notification emails.
pub(super) const EMAIL_PARAMETER: &str = "NotificationEmailFrom";
/// The condition "NotificationEmailFrom is set".
const EMAIL_CONDITION: &str = "HasNotificationEmailFrom";

/// One statement of a role's inline policies.
pub(super) struct Grant<'a> {
    /// The policy's name.
    pub(super) policy: String,
    /// The condition the whole policy is under (`!If [Condition, policy, !Ref AWS::NoValue]`).
    pub(super) condition: Option<String>,
    actions: Vec<String>,
    pub(super) resources: Vec<&'a Value>,
}

impl Grant<'_> {
    /// Whether one of the statement's actions (IAM wildcards included) covers `action`.
    pub(super) fn allows(&self, action: &str) -> bool {
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
pub(super) fn if_or_no_value(value: &Value) -> Option<(&str, &Value)> {
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
pub(super) fn assert_parameter_set(template: &Template, condition: &str, parameter: &str) {
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
    pub(super) fn grants(&self, role: &str) -> Vec<Grant<'_>> {
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
