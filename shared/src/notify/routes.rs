//! The routing document: which channels hear which event types. JSON, from `NOTIFICATION_ROUTES`
//! (local) or a Secrets Manager secret (`NOTIFICATION_ROUTES_SECRET_ARN`: it holds Slack webhook URLs,
//! which are credentials), checked entry by entry at cold start so a typo stops the processor with an
//! error naming the entry, instead of silently notifying no one:
//!
//! ```json
//! {
//!   "channels": {
//!     "payments": {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B0/x"},
//!     "support":  {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B1/y"},
//!     "urgent":   {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B2/z"},
//!     "disputes-email": {"type": "email", "to": ["disputes@example.com"]}
//!   },
//!   "routes": [
//!     {"events": ["payment_intent.succeeded"], "channels": ["payments"]},
//!     {"events": ["invoice.payment_failed", "payment_intent.payment_failed"], "channels": ["support"]},
//!     {"events": ["charge.dispute.*"], "channels": ["urgent", "disputes-email"]}
//!   ]
//! }
//! ```
//!
//! An event pattern is a type, a prefix ending in `.*`, or `*`; each must match a type some handler
//! notifies about ([`EventType::notifies`]). An event goes to the union of the channels of every route it matches. Without a
//! document, a Slack URL of its own (`SLACK_WEBHOOK_URL`) is the channel `slack` and hears everything;
//! with both, `slack` can be named in routes.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Channel, EmailNotifier, SlackNotifier};
use crate::event::EventType;

/// The name the stand-alone Slack URL gets as a channel.
pub const DEFAULT_SLACK_CHANNEL: &str = "slack";

/// A routing document that cannot be used; `at` names the entry (`routes[2].channels[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notification routes: {at}: {reason}")]
pub struct RouteError {
    /// The entry.
    pub at: String,
    /// What is wrong with it (never its value: URLs are credentials).
    pub reason: String,
}

fn bad(at: impl Into<String>, reason: impl Into<String>) -> RouteError {
    RouteError {
        at: at.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    channels: BTreeMap<String, ChannelSpec>,
    routes: Vec<RouteSpec>,
}

/// A channel as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChannelSpec {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL (a credential).
        webhook_url: String,
    },
    /// Email through SES from `NOTIFICATION_EMAIL_FROM`.
    Email {
        /// Recipients.
        to: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    events: Vec<String>,
    channels: Vec<String>,
}

/// One validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Event patterns.
    pub events: Vec<String>,
    /// Channel names.
    pub channels: Vec<String>,
}

/// A validated routing document, before any client is built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routes {
    /// Channel name → what it is.
    pub channels: BTreeMap<String, ChannelSpec>,
    /// In document order.
    pub routes: Vec<Route>,
}

impl Routes {
    /// Checks `document` (if any) with the stand-alone Slack URL (if any) and the email sender (if
    /// any). Neither: no channels, notifications are only logged.
    pub fn parse(
        document: Option<&str>,
        slack_url: Option<&str>,
        email_from: Option<&str>,
    ) -> Result<Self, RouteError> {
        let mut routes = Self::default();
        if let Some(url) = slack_url {
            check_webhook_url(url, "SLACK_WEBHOOK_URL")?;
            routes.channels.insert(
                DEFAULT_SLACK_CHANNEL.to_owned(),
                ChannelSpec::Slack {
                    webhook_url: url.to_owned(),
                },
            );
        }
        let Some(document) = document else {
            if slack_url.is_some() {
                routes.routes.push(Route {
                    events: vec!["*".to_owned()],
                    channels: vec![DEFAULT_SLACK_CHANNEL.to_owned()],
                });
            }
            return Ok(routes);
        };
        let parsed: Document = serde_json::from_str(document).map_err(|e| {
            // Position and kind only: serde's own message can quote a value, and values here include
            // webhook URLs.
            bad(
                "document",
                format!(
                    "not a routing document ({:?} error at line {}, column {}; expected {{\"channels\": {{…}}, \"routes\": [{{\"events\": […], \"channels\": […]}}]}})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if let Some(from) = email_from {
            check_address(from, "NOTIFICATION_EMAIL_FROM")?;
        }
        for (name, spec) in parsed.channels {
            let at = format!("channels.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(bad(
                    at,
                    "a channel name is letters, digits, '-', '_' or '.'",
                ));
            }
            if routes.channels.contains_key(&name) {
                return Err(bad(at, "defined twice (\"slack\" is SLACK_WEBHOOK_URL's)"));
            }
            match &spec {
                ChannelSpec::Slack { webhook_url } => {
                    check_webhook_url(webhook_url, &format!("{at}.webhook_url"))?
                }
                ChannelSpec::Email { to } => {
                    if email_from.is_none() {
                        return Err(bad(at, "an email channel needs NOTIFICATION_EMAIL_FROM (an SES-verified sender)"));
                    }
                    if to.is_empty() {
                        return Err(bad(format!("{at}.to"), "no recipients"));
                    }
                    for (i, address) in to.iter().enumerate() {
                        check_address(address, &format!("{at}.to[{i}]"))?;
                    }
                }
            }
            routes.channels.insert(name, spec);
        }
        if parsed.routes.is_empty() {
            return Err(bad("routes", "no routes: nothing would be notified"));
        }
        for (r, route) in parsed.routes.into_iter().enumerate() {
            if route.events.is_empty() {
                return Err(bad(format!("routes[{r}].events"), "empty"));
            }
            if route.channels.is_empty() {
                return Err(bad(format!("routes[{r}].channels"), "empty"));
            }
            for (e, pattern) in route.events.iter().enumerate() {
                if !notifying().any(|t| matches(pattern, t)) {
                    return Err(bad(
                        format!("routes[{r}].events[{e}]"),
                        format!(
                            "\"{pattern}\" matches no event type this pipeline notifies about ({})",
                            notifying().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            for (c, channel) in route.channels.iter().enumerate() {
                if !routes.channels.contains_key(channel) {
                    return Err(bad(
                        format!("routes[{r}].channels[{c}]"),
                        format!("no channel named \"{channel}\""),
                    ));
                }
            }
            routes.routes.push(Route {
                events: route.events,
                channels: route.channels,
            });
        }
        if let Some(unused) = routes
            .channels
            .keys()
            .find(|name| !routes.routes.iter().any(|r| r.channels.contains(name)))
        {
            return Err(bad(format!("channels.{unused}"), "no route sends to it"));
        }
        Ok(routes)
    }

    /// The channel names `event_type` goes to, each once, in document order.
    pub fn channels_for(&self, event_type: &str) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for route in &self.routes {
            if route.events.iter().any(|p| matches(p, event_type)) {
                for channel in &route.channels {
                    if !names.contains(&channel.as_str()) {
                        names.push(channel);
                    }
                }
            }
        }
        names
    }

    /// Whether any channel is email (the processor then needs an SES client).
    pub fn has_email(&self) -> bool {
        self.channels
            .values()
            .any(|c| matches!(c, ChannelSpec::Email { .. }))
    }
}

/// The types a route may name.
fn notifying() -> impl Iterator<Item = &'static str> {
    EventType::ALL
        .iter()
        .filter(|t| t.notifies())
        .map(EventType::as_str)
}

/// `*`, `prefix.*` or an exact type.
fn matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.ends_with('.') && event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

fn check_webhook_url(url: &str, at: &str) -> Result<(), RouteError> {
    let local = ["http://127.0.0.1", "http://localhost"]
        .iter()
        .any(|p| url.starts_with(p));
    if !(url.starts_with("https://") || local) || url.contains(char::is_whitespace) {
        return Err(bad(
            at,
            "expected an https:// URL (http:// only to 127.0.0.1 or localhost)",
        ));
    }
    Ok(())
}

fn check_address(address: &str, at: &str) -> Result<(), RouteError> {
    let ok = address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !address.contains(char::is_whitespace)
        && address.matches('@').count() == 1;
    if !ok {
        return Err(bad(at, format!("\"{address}\" is not an email address")));
    }
    Ok(())
}

/// The routes with their clients built: what the processor holds.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Routes,
    channels: BTreeMap<String, Channel>,
}

impl Router {
    /// Builds every channel's client once. `ses` is needed when a channel is email.
    pub fn new(
        routes: Routes,
        ses: Option<aws_sdk_sesv2::Client>,
        email_from: Option<&str>,
    ) -> Result<Self, RouteError> {
        let mut channels = BTreeMap::new();
        for (name, spec) in &routes.channels {
            let channel = match spec {
                ChannelSpec::Slack { webhook_url } => Channel::Slack(
                    SlackNotifier::new(webhook_url.clone())
                        .map_err(|e| bad(format!("channels.{name}"), e.to_string()))?,
                ),
                ChannelSpec::Email { to } => {
                    let (Some(ses), Some(from)) = (ses.clone(), email_from) else {
                        return Err(bad(
                            format!("channels.{name}"),
                            "email needs an SES client and NOTIFICATION_EMAIL_FROM",
                        ));
                    };
                    Channel::Email(EmailNotifier::new(ses, from, to.clone()))
                }
            };
            channels.insert(name.clone(), channel);
        }
        Ok(Self { routes, channels })
    }

    /// A router with no channels: notifications are only logged.
    pub fn none() -> Self {
        Self::default()
    }

    /// Replaces channel `name` (tests point one at a dead endpoint).
    pub fn with_channel(mut self, name: &str, channel: Channel) -> Self {
        self.channels.insert(name.to_owned(), channel);
        self
    }

    /// The channels `event_type` goes to.
    pub fn channels_for(&self, event_type: &str) -> Vec<(&str, &Channel)> {
        self.routes
            .channels_for(event_type)
            .into_iter()
            .filter_map(|name| Some((name, self.channels.get(name)?)))
            .collect()
    }

    /// Whether any channel is configured.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r#"{
      "channels": {
        "payments": {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B0/x"},
        "support": {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B1/y"},
        "urgent": {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B2/z"},
        "disputes-email": {"type": "email", "to": ["disputes@example.com", "cfo@example.com"]}
      },
      "routes": [
        {"events": ["payment_intent.succeeded"], "channels": ["payments"]},
        {"events": ["invoice.payment_failed", "payment_intent.payment_failed"], "channels": ["support"]},
        {"events": ["charge.dispute.*"], "channels": ["urgent", "disputes-email"]},
        {"events": ["charge.*"], "channels": ["support"]}
      ]
    }"#;

    fn routes() -> Routes {
        Routes::parse(Some(DOCUMENT), None, Some("pipeline@example.com")).unwrap()
    }

    #[test]
    fn each_event_type_goes_to_the_union_of_its_routes_channels() {
        let routes = routes();
        for (event_type, expected) in [
            ("payment_intent.succeeded", &["payments"][..]),
            ("checkout.session.completed", &[]),
            ("invoice.payment_failed", &["support"]),
            ("charge.failed", &["support"]),
            (
                "charge.dispute.created",
                &["urgent", "disputes-email", "support"],
            ),
            ("charge.refunded", &["support"]),
            ("customer.subscription.trial_will_end", &[]),
        ] {
            assert_eq!(routes.channels_for(event_type), expected, "{event_type}");
        }
        assert!(routes.has_email());
    }

    #[test]
    fn a_lone_slack_url_hears_everything() {
        let routes = Routes::parse(None, Some("https://hooks.slack.com/services/a"), None).unwrap();
        assert_eq!(routes.channels_for("invoice.paid"), ["slack"]);
        assert_eq!(routes.channels_for("charge.dispute.created"), ["slack"]);
        assert!(Routes::parse(None, None, None)
            .unwrap()
            .channels_for("invoice.paid")
            .is_empty());
    }

    #[test]
    fn every_mistake_is_named_by_its_entry() {
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
            edit(&mut doc);
            Routes::parse(Some(&doc.to_string()), None, Some("pipeline@example.com"))
                .unwrap_err()
                .at
        };
        assert_eq!(
            with(&|d| d["routes"][2]["channels"][1] = "disputes-mail".into()),
            "routes[2].channels[1]"
        );
        assert_eq!(
            with(&|d| d["routes"][1]["events"][1] = "charge.faild".into()),
            "routes[1].events[1]"
        );
        // A real type that only updates state: routing it would notify no one, so it is refused.
        assert_eq!(
            with(&|d| d["routes"][0]["events"][0] = "charge.failed".into()),
            "routes[0].events[0]"
        );
        assert_eq!(
            with(&|d| d["routes"][0]["events"][0] = "payment_intent".into()),
            "routes[0].events[0]"
        );
        assert_eq!(
            with(&|d| d["channels"]["payments"]["webhook_url"] = "http://hooks.slack.com/x".into()),
            "channels.payments.webhook_url"
        );
        assert_eq!(
            with(&|d| d["channels"]["disputes-email"]["to"][1] = "cfo at example.com".into()),
            "channels.disputes-email.to[1]"
        );
        assert_eq!(
            with(&|d| d["channels"]["disputes-email"]["to"] = serde_json::json!([])),
            "channels.disputes-email.to"
        );
        assert_eq!(
            with(&|d| d["channels"]["spare"] =
                serde_json::json!({"type": "slack", "webhook_url": "https://h/x"})),
            "channels.spare"
        );
        assert_eq!(
            with(&|d| d["channels"]["payments"]["type"] = "pager".into()),
            "document"
        );
        assert_eq!(with(&|d| d["routes"] = serde_json::json!([])), "routes");
        // an email channel without a sender
        let error = Routes::parse(Some(DOCUMENT), None, None).unwrap_err();
        assert_eq!(error.at, "channels.disputes-email");
        // the message never carries a URL
        let error = Routes::parse(
            Some(&DOCUMENT.replace(
                "https://hooks.slack.com/services/T0/B0/x",
                "ftp://secret-token",
            )),
            None,
            Some("p@example.com"),
        )
        .unwrap_err();
        assert!(!error.to_string().contains("secret-token"), "{error}");
        assert!(error
            .to_string()
            .starts_with("notification routes: channels.payments.webhook_url: "));
    }
}
