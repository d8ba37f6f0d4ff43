"""The CloudWatch dashboard's body, rendered as CloudFormation would render it, must be JSON.

cfn-lint, sam validate and checkov all take DashboardBody as an opaque string, and CloudFormation only
says "The dashboard body is invalid" at deploy time. This renders the Fn::Sub with the condition
HasStripeEventSource decided by StripeEventSourceName's Default (so check-infra runs it once with the
ingress off and once on), every other ${...} replaced by a placeholder, and parses the result.

    python3 infra/check_dashboard.py TEMPLATE
"""

import json
import re
import sys

import yaml


class Tag:
    def __init__(self, name, value):
        self.name, self.value = name, value


def construct(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return Tag(suffix, value)


yaml.SafeLoader.add_multi_constructor("!", construct)


def render(value, ingress_on):
    """A Sub variable's value as a string: plain, !Sub (recursively), or !If on HasStripeEventSource."""
    if isinstance(value, str):
        return value
    if isinstance(value, Tag) and value.name == "If":
        condition, when_true, when_false = value.value
        if condition != "HasStripeEventSource":
            sys.exit(f"check_dashboard: a Sub variable depends on {condition}, which this check cannot decide")
        return render(when_true if ingress_on else when_false, ingress_on)
    if isinstance(value, Tag) and value.name == "Sub":
        return substitute(value.value, ingress_on)
    return "PLACEHOLDER"  # !Ref, !GetAtt: a name or an ARN, never JSON syntax


def substitute(sub, ingress_on):
    text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
    rendered = {name: render(v, ingress_on) for name, v in variables.items()}
    return re.sub(r"\$\{([^}!]+)\}", lambda m: rendered.get(m.group(1), "PLACEHOLDER"), text)


def main(path):
    with open(path, encoding="utf-8") as fh:
        template = yaml.safe_load(fh)
    ingress_on = bool(template["Parameters"]["StripeEventSourceName"].get("Default"))
    dashboards = [
        (name, r) for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    for name, resource in dashboards:
        body = resource["Properties"]["DashboardBody"]
        if not (isinstance(body, Tag) and body.name == "Sub"):
            sys.exit(f"check_dashboard: {name}.DashboardBody is not a !Sub")
        text = substitute(body.value, ingress_on)
        try:
            parsed = json.loads(text)
        except ValueError as error:
            sys.exit(f"check_dashboard: {name}.DashboardBody is not JSON once rendered: {error}")
        alarms = sum(len(w["properties"].get("alarms", [])) for w in parsed["widgets"])
        print(f"{len(parsed['widgets'])} widgets, {alarms} alarms")


if __name__ == "__main__":
    main(sys.argv[1])
