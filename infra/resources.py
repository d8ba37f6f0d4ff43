#!/usr/bin/env python3
"""Create, delete and describe template.yaml's tables and queues in the local emulators.

This is the only place that turns template.yaml into emulator resources: every property comes from
the template (parameters resolved to their defaults, unless overridden with --param), so the tests
and `make dev` run against the same tables and queues that `sam deploy` creates.

    python3 infra/resources.py create   --prefix P [--json] [--param Name=Value ...] [--secret-value V]
                                        [--with-function-env]
    python3 infra/resources.py delete   --prefix P
    python3 infra/resources.py describe --prefix P

Resources are named P-<LogicalId> (P-<LogicalId>.fifo for FIFO queues). `create` is idempotent and
prints the environment the functions need: `export K=V` lines for `eval`, or with --json one JSON
object such as {"BILLING_TABLE_NAME": ..., "DEDUP_TABLE_NAME": ..., "EVENT_QUEUE_URL": ...,
"DEAD_LETTER_QUEUE_URL": ...}.
Variable names come from the template itself: a function's environment variable that is `!Ref`
to the resource, else the name of an Output whose value is `!Ref` to it (EventQueueUrl ->
EVENT_QUEUE_URL). Secrets (AWS::SecretsManager::Secret) are created only with --secret-value.
Resources under a Condition exist only when it holds: with --param StripeEventSourceName=aws.partner/...
(the Amazon EventBridge ingress) the rule's dead-letter queue is created too
(STRIPE_EVENT_RULE_DEAD_LETTER_QUEUE_URL); the event bus, rule and queue policies are not emulated.
A table that already exists (a long-lived dev- table) gets the global secondary indexes the template
added since it was created. With --param NotificationEmailFrom=ADDRESS, that sender is made an SES
email identity in moto (SES refuses unverified senders, and moto does too).

Endpoints: AWS_ENDPOINT_URL_DYNAMODB (default http://127.0.0.1:8000), AWS_ENDPOINT_URL_SQS and
AWS_ENDPOINT_URL_SECRETS_MANAGER (default http://127.0.0.1:5050), AWS_ENDPOINT_URL_SESV2 (default:
the SQS endpoint, i.e. moto); AWS_REGION (default us-east-1); dummy credentials unless
AWS_ACCESS_KEY_ID is set. Only loopback endpoints are accepted, so a stray environment can never
point this at a real AWS account.

Kept to botocore + PyYAML imports: the tests call it once per test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

try:
    import botocore  # noqa: F401 - checked here so a wrong interpreter fails with a hint
    import yaml
except ImportError as _err:
    sys.exit(f"resources.py: {_err}; run it with the tools venv's python3 "
             "(~/.cache/stripe-webhook-pipeline/venv/bin/python3, created by `make setup`)")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
ACCOUNT_ID = "123456789012"  # moto's default account; used for AWS::AccountId and local ARNs

TABLE = "AWS::DynamoDB::Table"
QUEUE = "AWS::SQS::Queue"
SECRET = "AWS::SecretsManager::Secret"
# The parameter naming the SES sender of notification emails (empty: no email).
EMAIL_SENDER_PARAMETER = "NotificationEmailFrom"

# CloudFormation property -> SQS attribute. Attributes that the API expects as a JSON string.
QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)
JSON_QUEUE_ATTRIBUTES = {"RedrivePolicy", "RedriveAllowPolicy"}
# Properties that make no sense locally (names are ours, tags are not compared).
IGNORED_QUEUE_PROPERTIES = {"QueueName", "Tags"}


class Fail(Exception):
    """An error to report in one line, without a traceback."""


# --------------------------------------------------------------------------------------------------
# Template loading


class CfnLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """A safe YAML loader that understands CloudFormation's short-form intrinsic tags."""


def _construct_cfn_tag(loader: yaml.Loader, tag_suffix: str, node: yaml.Node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            # !GetAtt Resource.Attribute (the attribute itself may contain dots)
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


def load_template(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            template = yaml.load(fh, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass
    except OSError as err:
        raise Fail(f"cannot read template {path}: {err}") from err
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise Fail(f"{path} has no Resources section")
    return template


# --------------------------------------------------------------------------------------------------
# Resolving intrinsic functions


class Context:
    """What `!Ref`, `!GetAtt`, `!Sub` and conditions resolve against."""

    def __init__(self, template: dict, prefix: str, region: str, overrides: dict[str, str]):
        self.template = template
        self.resources: dict = template["Resources"]
        self.prefix = prefix
        self.region = region
        self.parameters = self._parameters(template.get("Parameters") or {}, overrides)
        self.conditions: dict = template.get("Conditions") or {}
        self._condition_cache: dict[str, bool] = {}
        # Physical values of resources created so far: logical id -> {"Ref": ..., "Arn": ...}
        self.physical: dict[str, dict[str, str]] = {}

    @staticmethod
    def _parameters(declared: dict, overrides: dict[str, str]) -> dict:
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise Fail(f"--param names not declared in the template: {', '.join(unknown)}")
        values = {}
        for name, spec in declared.items():
            if name in overrides:
                value = overrides[name]
                allowed = spec.get("AllowedValues")
                if allowed is not None and value not in [str(a) for a in allowed]:
                    raise Fail(f"--param {name}={value}: allowed values are {allowed}")
                pattern = spec.get("AllowedPattern")
                if pattern is not None and re.fullmatch(pattern, value) is None:
                    raise Fail(f"--param {name}={value}: does not match AllowedPattern {pattern}")
                if spec.get("Type") == "Number":
                    value = json.loads(value) if re.fullmatch(r"-?\d+(\.\d+)?", value) else value
                values[name] = value
            elif "Default" in spec:
                values[name] = spec["Default"]
            else:
                values[name] = None  # only an error if something actually uses it
            if spec.get("Type") == "CommaDelimitedList" and isinstance(values[name], str):
                values[name] = values[name].split(",")  # as CloudFormation does: "" -> [""]
        return values

    def pseudo(self, name: str) -> str:
        table = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.prefix,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/{self.prefix}/local",
        }
        if name not in table:
            raise Fail(f"pseudo parameter {name} is not supported locally")
        return table[name]

    def ref(self, name: str):
        if name.startswith("AWS::"):
            if name == "AWS::NoValue":
                return _NO_VALUE
            return self.pseudo(name)
        if name in self.parameters:
            value = self.parameters[name]
            if value is None:
                raise Fail(f"parameter {name} has no Default; pass --param {name}=VALUE")
            return value
        if name in self.physical:
            return self.physical[name]["Ref"]
        if name in self.resources:
            raise Fail(f"!Ref {name}: that resource is not created locally (or not yet)")
        raise Fail(f"!Ref {name}: no such parameter or resource")

    def get_att(self, name: str, attribute: str):
        if name in self.physical and attribute in self.physical[name]:
            return self.physical[name][attribute]
        raise Fail(f"!GetAtt {name}.{attribute} cannot be resolved locally")

    def condition(self, name: str) -> bool:
        if name not in self._condition_cache:
            if name not in self.conditions:
                raise Fail(f"condition {name} is not defined")
            self._condition_cache[name] = bool(self.resolve(self.conditions[name]))
        return self._condition_cache[name]

    def resolve(self, value):
        """Resolve intrinsic functions in a value, recursively."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            handler = _INTRINSICS.get(key)
            if handler is not None:
                return handler(self, arg)
            if key.startswith("Fn::"):
                raise Fail(f"{key} is not supported by infra/resources.py")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}


_NO_VALUE = object()


def _sub(ctx: Context, arg):
    if isinstance(arg, list):
        text, variables = arg[0], {k: ctx.resolve(v) for k, v in (arg[1] or {}).items()}
    else:
        text, variables = arg, {}

    def replace(match: re.Match) -> str:
        expr = match.group(1)
        if expr.startswith("!"):
            return "${" + expr[1:] + "}"  # ${!Literal}
        if expr in variables:
            return str(variables[expr])
        if "." in expr and not expr.startswith("AWS::"):
            resource, attribute = expr.split(".", 1)
            return str(ctx.get_att(resource, attribute))
        return str(ctx.ref(expr))

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def _get_att(ctx: Context, arg):
    name, attribute = ctx.resolve(arg) if isinstance(arg, list) else arg.split(".", 1)
    return ctx.get_att(name, attribute)


def _if(ctx: Context, arg):
    name, if_true, if_false = arg
    return ctx.resolve(if_true if ctx.condition(name) else if_false)


def _join(ctx: Context, arg):
    sep, items = arg
    return str(sep).join(str(i) for i in ctx.resolve(items))


def _select(ctx: Context, arg):
    index, items = ctx.resolve(arg)
    return items[int(index)]


def _split(ctx: Context, arg):
    sep, text = ctx.resolve(arg)
    return str(text).split(sep)


def _equals(ctx: Context, arg):
    a, b = ctx.resolve(arg)
    return str(a) == str(b)


_INTRINSICS = {
    "Ref": lambda ctx, arg: ctx.ref(arg),
    "Condition": lambda ctx, arg: ctx.condition(arg),
    "Fn::GetAtt": _get_att,
    "Fn::Sub": _sub,
    "Fn::If": _if,
    "Fn::Join": _join,
    "Fn::Select": _select,
    "Fn::Split": _split,
    "Fn::Equals": _equals,
    "Fn::Not": lambda ctx, arg: not ctx.resolve(arg)[0],
    "Fn::And": lambda ctx, arg: all(ctx.resolve(arg)),
    "Fn::Or": lambda ctx, arg: any(ctx.resolve(arg)),
    "Fn::GetAZs": lambda ctx, arg: [f"{ctx.region}a", f"{ctx.region}b", f"{ctx.region}c"],
    "Fn::Base64": lambda ctx, arg: __import__("base64").b64encode(str(ctx.resolve(arg)).encode()).decode(),
}


# --------------------------------------------------------------------------------------------------
# Which resources, in which order, under which names


def selected(ctx: Context, types: tuple[str, ...]) -> list[str]:
    """Logical ids of the given types whose Condition (if any) holds, in dependency order."""
    chosen = []
    for logical_id, resource in ctx.resources.items():
        if resource.get("Type") not in types:
            continue
        if "Condition" in resource and not ctx.condition(resource["Condition"]):
            continue
        chosen.append(logical_id)
    return _dependency_order(ctx, chosen)


def _references(value) -> set[str]:
    found: set[str] = set()
    if isinstance(value, list):
        for v in value:
            found |= _references(v)
    elif isinstance(value, dict):
        for key, arg in value.items():
            if key == "Ref" and isinstance(arg, str):
                found.add(arg)
            elif key == "Fn::GetAtt":
                found.add(arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0])
            elif key == "Fn::Sub":
                text = arg[0] if isinstance(arg, list) else arg
                found |= {m.split(".", 1)[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", str(text))}
                if isinstance(arg, list) and len(arg) > 1:
                    found |= _references(arg[1])
            else:
                found |= _references(arg)
    return found


def _dependency_order(ctx: Context, ids: list[str]) -> list[str]:
    pending: dict[str, set[str]] = {}
    for i in ids:
        resource = ctx.resources[i]
        depends_on = resource.get("DependsOn") or []
        deps = _references(resource.get("Properties") or {}) | set(
            [depends_on] if isinstance(depends_on, str) else depends_on
        )
        pending[i] = deps & set(ids)
    order: list[str] = []
    while pending:
        ready = [i for i, deps in pending.items() if deps <= set(order)]
        if not ready:
            raise Fail(f"circular references between {', '.join(sorted(pending))}")
        for i in ready:  # keep template order among independent resources
            order.append(i)
            del pending[i]
    return order


def physical_name(ctx: Context, logical_id: str) -> str:
    name = f"{ctx.prefix}-{logical_id}"
    props = ctx.resources[logical_id].get("Properties") or {}
    if ctx.resources[logical_id]["Type"] == QUEUE and str(ctx.resolve(props.get("FifoQueue", False))).lower() == "true":
        name += ".fifo"
    return name


def env_names(ctx: Context) -> dict[str, str]:
    """Logical id -> environment variable name, as the template itself names them."""
    names: dict[str, str] = {}
    for resource in ctx.resources.values():
        if resource.get("Type") not in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            continue
        variables = ((resource.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
        for var, value in variables.items():
            if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in ctx.resources:
                names.setdefault(value["Ref"], var)
    for output_name, output in (ctx.template.get("Outputs") or {}).items():
        value = (output or {}).get("Value")
        if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in ctx.resources:
            names.setdefault(value["Ref"], re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", output_name).upper())
    return names


def _fallback_env_name(logical_id: str, suffix: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", logical_id).upper() + suffix


# --------------------------------------------------------------------------------------------------
# AWS clients (botocore directly: importing boto3 costs time for nothing here)

# service -> (variables tried in order, default, what answers there). SES has no variable of its own in
# infra/emulators.sh: it is the moto server that serves SQS.
_ENDPOINT_ENV = {
    "dynamodb": (("AWS_ENDPOINT_URL_DYNAMODB",), "http://127.0.0.1:8000", "DynamoDB Local"),
    "sqs": (("AWS_ENDPOINT_URL_SQS",), "http://127.0.0.1:5050", "moto (SQS)"),
    "secretsmanager": (("AWS_ENDPOINT_URL_SECRETS_MANAGER",), "http://127.0.0.1:5050", "moto (Secrets Manager)"),
    "sesv2": (("AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL_SQS"), "http://127.0.0.1:5050", "moto (SES)"),
}
_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[?::1\]?)$")


class Clients:
    def __init__(self, region: str, allow_remote: bool):
        self.region = region
        self.allow_remote = allow_remote
        self._clients: dict = {}
        self._session = None

    def endpoint(self, service: str) -> str:
        variables, default, _ = _ENDPOINT_ENV[service]
        var, url = next(((v, os.environ[v]) for v in (*variables, "AWS_ENDPOINT_URL") if os.environ.get(v)),
                        (variables[0], default))
        host = urlparse(url).hostname or ""
        if not self.allow_remote and not _LOOPBACK.match(host):
            raise Fail(f"{var}={url} is not a loopback address; this script only talks to local "
                       "emulators (pass --allow-remote if you really mean it)")
        return url

    def get(self, service: str):
        if service not in self._clients:
            import botocore.config
            import botocore.session

            if self._session is None:
                self._session = botocore.session.get_session()
            self._clients[service] = self._session.create_client(
                service,
                region_name=self.region,
                endpoint_url=self.endpoint(service),
                aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or "test",
                aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or "test",
                aws_session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
                config=botocore.config.Config(
                    connect_timeout=2, read_timeout=15, retries={"max_attempts": 2, "mode": "standard"}
                ),
            )
        return self._clients[service]


def _error_code(err: Exception) -> str:
    return getattr(err, "response", {}).get("Error", {}).get("Code", "")


def _call(clients: Clients, service: str, operation: str, **kwargs):
    """Call an API, turning 'emulator not running' into a one-line hint."""
    import botocore.exceptions

    client = clients.get(service)
    try:
        return getattr(client, operation)(**kwargs)
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as err:
        _, _, what = _ENDPOINT_ENV[service]
        raise Fail(f"cannot reach {what} at {clients.endpoint(service)} ({err.__class__.__name__}); "
                   "start the emulators with `make emulators` (infra/emulators.sh start)") from err


def _client_error():
    import botocore.exceptions

    return botocore.exceptions.ClientError


# --------------------------------------------------------------------------------------------------
# DynamoDB


def table_spec(ctx: Context, logical_id: str) -> dict:
    """CreateTable arguments (and TTL) from the template's properties."""
    props = ctx.resolve(ctx.resources[logical_id].get("Properties") or {})
    spec: dict = {
        "TableName": physical_name(ctx, logical_id),
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if spec["BillingMode"] == "PROVISIONED":
        spec["ProvisionedThroughput"] = {k: int(v) for k, v in props["ProvisionedThroughput"].items()}
    for index_kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(index_kind):
            indexes = []
            for index in props[index_kind]:
                index = {k: v for k, v in index.items() if k not in ("ContributorInsightsSpecification",)}
                if "ProvisionedThroughput" in index:
                    index["ProvisionedThroughput"] = {k: int(v) for k, v in index["ProvisionedThroughput"].items()}
                indexes.append(index)
            spec[index_kind] = indexes
    if props.get("StreamSpecification"):
        spec["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ttl = {"AttributeName": ttl["AttributeName"], "Enabled": str(ttl.get("Enabled", False)).lower() == "true"}
    return {"create": spec, "ttl": ttl}


def create_table(ctx: Context, clients: Clients, logical_id: str) -> dict:
    spec = table_spec(ctx, logical_id)
    name = spec["create"]["TableName"]
    try:
        table = _call(clients, "dynamodb", "create_table", **spec["create"])["TableDescription"]
    except _client_error() as err:
        if _error_code(err) != "ResourceInUseException":
            raise
        table = _call(clients, "dynamodb", "describe_table", TableName=name)["Table"]
    table = _wait_until_active(clients, name, table)
    table = _add_missing_indexes(clients, spec["create"], table)
    if spec["ttl"] is not None:
        current = _call(clients, "dynamodb", "describe_time_to_live", TableName=name)["TimeToLiveDescription"]
        enabled = current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
        if enabled != spec["ttl"]["Enabled"] or (enabled and current.get("AttributeName") != spec["ttl"]["AttributeName"]):
            if enabled and spec["ttl"]["Enabled"]:  # a different attribute: DynamoDB needs disable first
                _call(clients, "dynamodb", "update_time_to_live", TableName=name,
                      TimeToLiveSpecification={"AttributeName": current["AttributeName"], "Enabled": False})
            _call(clients, "dynamodb", "update_time_to_live", TableName=name,
                  TimeToLiveSpecification=spec["ttl"])
    ctx.physical[logical_id] = {"Ref": name, "Arn": table["TableArn"],
                                "StreamArn": table.get("LatestStreamArn", "")}
    return ctx.physical[logical_id]


def _wait_until_active(clients: Clients, name: str, table: dict) -> dict:
    """The table's description once it and every global secondary index on it are ACTIVE."""

    def busy(table: dict) -> list[str]:
        states = [f"table {table.get('TableStatus')}"] if table.get("TableStatus") not in (None, "ACTIVE") else []
        states += [f"index {i['IndexName']} {i.get('IndexStatus')}"
                   for i in table.get("GlobalSecondaryIndexes", [])
                   if i.get("IndexStatus") not in (None, "ACTIVE")]
        return states

    deadline = time.monotonic() + 30
    while busy(table):
        if time.monotonic() > deadline:
            hint = ""
            if any(i.get("IndexStatus") == "CREATING" for i in table.get("GlobalSecondaryIndexes", [])):
                # DynamoDB Local runs index builds and TTL deletion on one pool of 10 threads, and each
                # table with TTL on keeps one for good: after a few such tables (any test run makes
                # some), an index added to an existing table is never built.
                hint = ("; DynamoDB Local cannot build an index added to an existing table once a few tables "
                        "with TTL exist (its background threads are all taken). Its data is in memory only: "
                        "restart it (infra/emulators.sh stop, then start), or delete this table "
                        f"(infra/resources.py delete --prefix {name.rsplit('-', 1)[0]}) and run create again")
            raise Fail(f"table {name}: {', '.join(busy(table))} after 30 s{hint}")
        time.sleep(0.1)
        table = _call(clients, "dynamodb", "describe_table", TableName=name)["Table"]
    return table


def _add_missing_indexes(clients: Clients, create: dict, table: dict) -> dict:
    """Adds the template's global secondary indexes that an existing table lacks (a table created
    before the template declared them), one UpdateTable each as DynamoDB requires, waiting for each
    to become ACTIVE. An index that exists under the same name is left as it is."""
    name = create["TableName"]
    for index in create.get("GlobalSecondaryIndexes", []):
        if any(i["IndexName"] == index["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])):
            continue
        _call(clients, "dynamodb", "update_table", TableName=name,
              AttributeDefinitions=create["AttributeDefinitions"],
              GlobalSecondaryIndexUpdates=[{"Create": index}])
        table = _wait_until_active(clients, name,
                                   _call(clients, "dynamodb", "describe_table", TableName=name)["Table"])
    return table


def delete_table(ctx: Context, clients: Clients, logical_id: str) -> bool:
    try:
        _call(clients, "dynamodb", "delete_table", TableName=physical_name(ctx, logical_id))
        return True
    except _client_error() as err:
        if _error_code(err) == "ResourceNotFoundException":
            return False
        raise


def describe_table(ctx: Context, clients: Clients, logical_id: str) -> dict:
    spec = table_spec(ctx, logical_id)
    name = spec["create"]["TableName"]
    expected = {k: v for k, v in spec["create"].items() if k != "TableName"}
    if spec["ttl"] is not None:
        expected["TimeToLive"] = spec["ttl"]
    try:
        table = _call(clients, "dynamodb", "describe_table", TableName=name)["Table"]
    except _client_error() as err:
        if _error_code(err) == "ResourceNotFoundException":
            return {"Exists": False, "TableName": name, "Template": expected}
        raise
    ttl = _call(clients, "dynamodb", "describe_time_to_live", TableName=name)["TimeToLiveDescription"]
    return {
        "Exists": True,
        "TableName": name,
        "TableArn": table.get("TableArn"),
        "TableStatus": table.get("TableStatus"),
        "KeySchema": table.get("KeySchema"),
        "AttributeDefinitions": table.get("AttributeDefinitions"),
        "BillingMode": (table.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
        "GlobalSecondaryIndexes": [i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])],
        "TimeToLive": {"AttributeName": ttl.get("AttributeName"), "TimeToLiveStatus": ttl.get("TimeToLiveStatus")},
        "Template": expected,
    }


# --------------------------------------------------------------------------------------------------
# SQS


def queue_attributes(ctx: Context, logical_id: str) -> dict[str, str]:
    """SQS attributes (all strings, as the API wants them) from the template's properties."""
    props = ctx.resolve(ctx.resources[logical_id].get("Properties") or {})
    unknown = sorted(set(props) - set(QUEUE_ATTRIBUTES) - IGNORED_QUEUE_PROPERTIES)
    if unknown:
        raise Fail(f"{logical_id}: queue properties not handled by infra/resources.py: {', '.join(unknown)}")
    attributes = {}
    for key in QUEUE_ATTRIBUTES:
        if key not in props:
            continue
        value = props[key]
        if key in JSON_QUEUE_ATTRIBUTES:
            if isinstance(value, str):
                value = json.loads(value)
            if key == "RedrivePolicy" and "maxReceiveCount" in value:
                value = {**value, "maxReceiveCount": int(value["maxReceiveCount"])}
            attributes[key] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, bool):
            attributes[key] = "true" if value else "false"
        else:
            attributes[key] = str(value)
    return attributes


def _queue_url(clients: Clients, name: str) -> str | None:
    try:
        return _call(clients, "sqs", "get_queue_url", QueueName=name)["QueueUrl"]
    except _client_error() as err:
        if _error_code(err) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return None
        raise


def create_queue(ctx: Context, clients: Clients, logical_id: str) -> dict:
    name = physical_name(ctx, logical_id)
    attributes = queue_attributes(ctx, logical_id)
    url = _queue_url(clients, name)
    if url is None:
        url = _call(clients, "sqs", "create_queue", QueueName=name, Attributes=attributes)["QueueUrl"]
    else:
        # Reuse, but converge on the template's current values (FifoQueue cannot be changed).
        mutable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
        if mutable:
            _call(clients, "sqs", "set_queue_attributes", QueueUrl=url, Attributes=mutable)
    arn = _call(clients, "sqs", "get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"])
    ctx.physical[logical_id] = {"Ref": url, "Arn": arn["Attributes"]["QueueArn"], "QueueName": name}
    return ctx.physical[logical_id]


def delete_queue(ctx: Context, clients: Clients, logical_id: str) -> bool:
    url = _queue_url(clients, physical_name(ctx, logical_id))
    if url is None:
        return False
    _call(clients, "sqs", "delete_queue", QueueUrl=url)
    return True


def _queue_arn(ctx: Context, logical_id: str) -> str:
    return f"arn:aws:sqs:{ctx.region}:{ACCOUNT_ID}:{physical_name(ctx, logical_id)}"


def describe_queue(ctx: Context, clients: Clients, logical_id: str) -> dict:
    name = physical_name(ctx, logical_id)
    url = _queue_url(clients, name)
    if url is None:
        return {"Exists": False, "QueueName": name, "Template": _expected_queue_attributes(ctx, logical_id)}
    attributes = _call(clients, "sqs", "get_queue_attributes", QueueUrl=url, AttributeNames=["All"])["Attributes"]
    ctx.physical[logical_id] = {"Ref": url, "Arn": attributes.get("QueueArn", _queue_arn(ctx, logical_id))}
    result = {"Exists": True, "QueueName": name, "QueueUrl": url, "Attributes": attributes}
    # JSON-valued attributes also parsed, so a comparison need not care about the emulator's spacing.
    for key in JSON_QUEUE_ATTRIBUTES:
        if key in attributes:
            result[key] = json.loads(attributes[key])
    result["Template"] = _expected_queue_attributes(ctx, logical_id)
    return result


def _expected_queue_attributes(ctx: Context, logical_id: str) -> dict | None:
    """The attributes `create` sets, with JSON-valued ones parsed; None if they cannot be resolved
    (a dead-letter queue that does not exist yet)."""
    try:
        expected: dict = queue_attributes(ctx, logical_id)
    except Fail:
        return None
    for key in JSON_QUEUE_ATTRIBUTES & set(expected):
        expected[key] = json.loads(expected[key])
    return expected


# --------------------------------------------------------------------------------------------------
# Secrets Manager (only with --secret-value; the tests and `make dev` usually pass the value directly)


def create_secret(ctx: Context, clients: Clients, logical_id: str, value: str) -> dict:
    name = physical_name(ctx, logical_id)
    try:
        arn = _call(clients, "secretsmanager", "create_secret", Name=name, SecretString=value)["ARN"]
    except _client_error() as err:
        if _error_code(err) != "ResourceExistsException":
            raise
        arn = _call(clients, "secretsmanager", "put_secret_value", SecretId=name, SecretString=value)["ARN"]
    ctx.physical[logical_id] = {"Ref": arn, "Arn": arn}
    return ctx.physical[logical_id]


def delete_secret(ctx: Context, clients: Clients, logical_id: str) -> bool:
    name = physical_name(ctx, logical_id)
    try:
        # Describe first: a forced delete of a missing secret succeeds quietly on moto.
        _call(clients, "secretsmanager", "describe_secret", SecretId=name)
        _call(clients, "secretsmanager", "delete_secret", SecretId=name, ForceDeleteWithoutRecovery=True)
        return True
    except _client_error() as err:
        if _error_code(err) == "ResourceNotFoundException":
            return False
        raise


# --------------------------------------------------------------------------------------------------
# SES (moto): the notification sender, when the template's parameter names one


def email_sender(ctx: Context) -> str | None:
    """The template's notification sender as resolved (--param or Default); None when empty."""
    if EMAIL_SENDER_PARAMETER not in ctx.parameters:
        return None
    return str(ctx.ref(EMAIL_SENDER_PARAMETER) or "") or None


def create_email_identity(clients: Clients, address: str) -> None:
    try:
        _call(clients, "sesv2", "create_email_identity", EmailIdentity=address)
    except _client_error() as err:
        if _error_code(err) != "AlreadyExistsException":
            raise


def function_env(ctx: Context) -> dict[str, str]:
    """The functions' environment variables (Globals and each function), resolved locally.

    Variables that cannot be resolved here (a secret ARN when no secret was created) are left out.
    All functions share one process environment under `cargo lambda watch`, so a variable that two
    functions set differently is an error.
    """
    globals_vars = (((ctx.template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    merged: dict[str, str] = {}
    for logical_id, resource in ctx.resources.items():
        if resource.get("Type") not in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            continue
        variables = dict(globals_vars)
        variables.update(((resource.get("Properties") or {}).get("Environment") or {}).get("Variables") or {})
        for key, raw in variables.items():
            try:
                value = ctx.resolve(raw)
            except Fail:
                continue
            if value is _NO_VALUE:  # !If [Condition, ..., !Ref AWS::NoValue]: the variable is unset
                continue
            value = ("true" if value else "false") if isinstance(value, bool) else str(value)
            if merged.get(key, value) != value:
                raise Fail(f"{key} differs between functions ({merged[key]!r} vs {value!r} in {logical_id})")
            merged[key] = value
    return merged


# --------------------------------------------------------------------------------------------------
# Commands


def cmd_create(ctx: Context, clients: Clients, args) -> int:
    names = env_names(ctx)
    env: dict[str, str] = {}
    for logical_id in selected(ctx, (TABLE,)):
        create_table(ctx, clients, logical_id)
        env[names.get(logical_id) or _fallback_env_name(logical_id, "_NAME")] = ctx.physical[logical_id]["Ref"]
    for logical_id in selected(ctx, (QUEUE,)):
        create_queue(ctx, clients, logical_id)
        env[names.get(logical_id) or _fallback_env_name(logical_id, "_URL")] = ctx.physical[logical_id]["Ref"]
    if args.secret_value is not None:
        for logical_id in selected(ctx, (SECRET,)):
            create_secret(ctx, clients, logical_id, args.secret_value)
            env[names.get(logical_id) or _fallback_env_name(logical_id, "_ARN")] = ctx.physical[logical_id]["Ref"]
    sender = email_sender(ctx)
    if sender is not None:
        create_email_identity(clients, sender)
    if args.with_function_env:
        for key, value in function_env(ctx).items():
            env.setdefault(key, value)
    if args.json:
        print(json.dumps(env, sort_keys=True))
    else:
        import shlex

        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_delete(ctx: Context, clients: Clients, args) -> int:
    deleted = []
    # Reverse dependency order: a queue before the dead-letter queue it points to.
    for logical_id in reversed(selected(ctx, (QUEUE,))):
        if delete_queue(ctx, clients, logical_id):
            deleted.append(physical_name(ctx, logical_id))
    for logical_id in reversed(selected(ctx, (TABLE,))):
        if delete_table(ctx, clients, logical_id):
            deleted.append(physical_name(ctx, logical_id))
    if args.secrets:
        for logical_id in reversed(selected(ctx, (SECRET,))):
            if delete_secret(ctx, clients, logical_id):
                deleted.append(physical_name(ctx, logical_id))
    print(json.dumps({"deleted": deleted}) if args.json else "\n".join(f"deleted {d}" for d in deleted))
    return 0


def cmd_describe(ctx: Context, clients: Clients, args) -> int:
    result: dict = {"prefix": ctx.prefix, "region": ctx.region, "tables": {}, "queues": {}}
    for logical_id in selected(ctx, (TABLE,)):
        result["tables"][logical_id] = describe_table(ctx, clients, logical_id)
    # Dependency order, so a RedrivePolicy's !GetAtt DLQ.Arn resolves from the DLQ described before it.
    for logical_id in selected(ctx, (QUEUE,)):
        result["queues"][logical_id] = describe_queue(ctx, clients, logical_id)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError("expected Name=Value")
    name, value = text.split("=", 1)
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", required=True, help="name prefix, e.g. a unique id per test")
    common.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    common.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                        help="override a template parameter's Default (repeatable)")
    common.add_argument("--allow-remote", action="store_true", help=argparse.SUPPRESS)
    p_create = sub.add_parser("create", parents=[common], help="create (or reuse) the tables and queues")
    p_create.add_argument("--json", action="store_true", help="print one JSON object instead of export lines")
    p_create.add_argument("--secret-value", help="also create the template's secrets with this value")
    p_create.add_argument("--with-function-env", action="store_true",
                          help="also print the functions' other environment variables (parameters resolved)")
    p_delete = sub.add_parser("delete", parents=[common], help="delete them")
    p_delete.add_argument("--json", action="store_true")
    p_delete.add_argument("--no-secrets", dest="secrets", action="store_false",
                          help="leave secrets alone (by default they are deleted too, if present)")
    sub.add_parser("describe", parents=[common], help="print what the emulators report, as JSON")
    args = parser.parse_args(argv)

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", args.prefix):
        parser.error("--prefix: 1-40 characters of A-Z a-z 0-9 _ - (queue names allow nothing else)")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    try:
        ctx = Context(load_template(args.template), args.prefix, region, dict(args.param))
        clients = Clients(region, args.allow_remote)
        # Refuse a non-local endpoint before touching anything.
        for service in ("dynamodb", "sqs", *(("sesv2",) if email_sender(ctx) else ())):
            clients.endpoint(service)
        return {"create": cmd_create, "delete": cmd_delete, "describe": cmd_describe}[args.command](ctx, clients, args)
    except Fail as err:
        print(f"resources.py: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # botocore errors: one line is enough, the API message says it all
        if hasattr(err, "response"):
            print(f"resources.py: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
