//! The optional allow-list of Stripe's webhook source addresses, kept in an SSM parameter.
//!
//! An HTTP API takes neither a WAF nor a resource policy, so this is the receiver's own defence in
//! depth: with the list on, a request from any other address is answered 403 before its body is hashed
//! or any store is touched. The signature remains what proves a request came from Stripe; the list only
//! makes forged traffic from elsewhere cheap to refuse.
//!
//! Stripe publishes the addresses as JSON (`https://stripe.com/files/ips/ips_webhooks.json`, key
//! `WEBHOOKS`). `stripe-webhooks source-ips put` reads that file and writes the parameter as a
//! comma-separated list (an SSM `StringList`); the receiver reads it at cold start. The list is loaded
//! once per instance: after an update, new instances pick it up (see the README).

use std::{collections::BTreeSet, net::IpAddr};

use aws_sdk_ssm::{
    error::SdkError,
    operation::{get_parameter::GetParameterError, put_parameter::PutParameterError},
    types::ParameterType,
    Client,
};

/// The key of Stripe's `ips_webhooks.json` that lists the webhook source addresses.
pub const STRIPE_WEBHOOKS_KEY: &str = "WEBHOOKS";

/// The addresses requests may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIpAllowList {
    addresses: BTreeSet<IpAddr>,
}

/// The allow-list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SourceIpError {
    /// SSM refused or could not be reached, or the parameter does not exist.
    #[error("could not read the source-IP allow-list parameter {name}")]
    Fetch {
        /// The parameter's name.
        name: String,
        /// What SSM said.
        #[source]
        source: Box<SdkError<GetParameterError>>,
    },
    /// The parameter could not be written.
    #[error("could not write the source-IP allow-list parameter {name}")]
    Store {
        /// The parameter's name.
        name: String,
        /// What SSM said.
        #[source]
        source: Box<SdkError<PutParameterError>>,
    },
    /// An entry is not an IP address.
    #[error("{0:?} is not an IP address")]
    InvalidAddress(String),
    /// No address at all: refusing every request is never what an operator meant.
    #[error("the source-IP allow-list is empty")]
    Empty,
    /// Not Stripe's `ips_webhooks.json`.
    #[error(
        "not Stripe's ips_webhooks.json: expected an object with a \"WEBHOOKS\" list of addresses"
    )]
    NotStripeList(#[source] serde_json::Error),
}

impl SourceIpAllowList {
    /// Parses the parameter's value: addresses separated by commas (whitespace around them ignored).
    pub fn parse(list: &str) -> Result<Self, SourceIpError> {
        Self::from_entries(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// Reads a file Stripe publishes: `ips_webhooks.json` (the `WEBHOOKS` addresses) or
    /// `ips_webhooks.txt` (one address per line).
    pub fn from_stripe_file(text: &str) -> Result<Self, SourceIpError> {
        if text.trim_start().starts_with('{') {
            Self::from_stripe_json(text)
        } else {
            Self::from_entries(text.lines().map(str::trim).filter(|s| !s.is_empty()))
        }
    }

    /// Reads Stripe's `ips_webhooks.json`, taking the `WEBHOOKS` addresses.
    pub fn from_stripe_json(json: &str) -> Result<Self, SourceIpError> {
        #[derive(serde::Deserialize)]
        struct StripeIps {
            #[serde(rename = "WEBHOOKS")]
            webhooks: Vec<String>,
        }
        let ips: StripeIps = serde_json::from_str(json).map_err(SourceIpError::NotStripeList)?;
        Self::from_entries(ips.webhooks.iter().map(|s| s.trim()))
    }

    fn from_entries<'a>(entries: impl Iterator<Item = &'a str>) -> Result<Self, SourceIpError> {
        let addresses = entries
            .map(|entry| {
                entry
                    .parse::<IpAddr>()
                    .map(|ip| ip.to_canonical())
                    .map_err(|_| SourceIpError::InvalidAddress(entry.to_owned()))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        if addresses.is_empty() {
            return Err(SourceIpError::Empty);
        }
        Ok(Self { addresses })
    }

    /// Whether `ip` may send webhooks. An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the same
    /// address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip.to_canonical())
    }

    /// How many addresses the list holds.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Always false: an empty list is refused when parsed.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// The parameter's value: the addresses, sorted, comma-separated.
    pub fn to_parameter_value(&self) -> String {
        let addresses: Vec<String> = self.addresses.iter().map(IpAddr::to_string).collect();
        addresses.join(",")
    }
}

/// Reads the allow-list from the SSM parameter `name`. A missing, unreadable or invalid parameter is an
/// error: the receiver's cold start fails rather than serving with no list (which would allow all).
pub async fn load(client: &Client, name: &str) -> Result<SourceIpAllowList, SourceIpError> {
    let output = client
        .get_parameter()
        .name(name)
        .send()
        .await
        .map_err(|source| SourceIpError::Fetch {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    let value = output
        .parameter()
        .and_then(|p| p.value())
        .unwrap_or_default();
    SourceIpAllowList::parse(value)
}

/// Writes `list` to the SSM parameter `name` (a `StringList`, replacing any value).
pub async fn store(
    client: &Client,
    name: &str,
    list: &SourceIpAllowList,
) -> Result<(), SourceIpError> {
    client
        .put_parameter()
        .name(name)
        .value(list.to_parameter_value())
        .r#type(ParameterType::StringList)
        .overwrite(true)
        .description(
            "Stripe webhook source addresses the receiver accepts (stripe-webhooks source-ips put)",
        )
        .send()
        .await
        .map_err(|source| SourceIpError::Store {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Stripe's published file, with four of the addresses it listed in 2026.
    const STRIPE_JSON: &str = r#"{
      "WEBHOOKS": ["3.18.12.63", "3.130.192.231", "13.235.14.237", "13.235.122.149"]
    }"#;

    #[test]
    fn stripes_file_gives_its_webhook_addresses() {
        let list = SourceIpAllowList::from_stripe_json(STRIPE_JSON).unwrap();
        assert_eq!(list.len(), 4);
        assert!(list.allows("3.18.12.63".parse().unwrap()));
        assert!(list.allows("::ffff:13.235.122.149".parse().unwrap()));
        assert!(!list.allows("3.18.12.64".parse().unwrap()));
        assert_eq!(
            list.to_parameter_value(),
            "3.18.12.63,3.130.192.231,13.235.14.237,13.235.122.149"
        );
    }

    #[test]
    fn stripes_text_file_reads_the_same() {
        let text = "3.18.12.63\n3.130.192.231\n\n13.235.14.237\n13.235.122.149\n";
        assert_eq!(
            SourceIpAllowList::from_stripe_file(text).unwrap(),
            SourceIpAllowList::from_stripe_file(STRIPE_JSON).unwrap()
        );
    }

    #[test]
    fn the_parameter_value_round_trips() {
        let list = SourceIpAllowList::from_stripe_json(STRIPE_JSON).unwrap();
        let again = SourceIpAllowList::parse(&list.to_parameter_value()).unwrap();
        assert_eq!(again, list);
        let spaced = SourceIpAllowList::parse(" 203.0.113.9 , 2001:db8::1 ,").unwrap();
        assert!(spaced.allows("2001:db8::1".parse().unwrap()));
        assert_eq!(spaced.len(), 2);
    }

    #[test]
    fn an_empty_or_invalid_list_is_an_error_never_allow_all() {
        assert!(matches!(
            SourceIpAllowList::parse(""),
            Err(SourceIpError::Empty)
        ));
        assert!(matches!(
            SourceIpAllowList::parse(" , "),
            Err(SourceIpError::Empty)
        ));
        assert!(matches!(
            SourceIpAllowList::parse("3.18.12.63,3.18.12.0/24"),
            Err(SourceIpError::InvalidAddress(a)) if a == "3.18.12.0/24"
        ));
        assert!(matches!(
            SourceIpAllowList::from_stripe_json(r#"{"API": ["3.18.12.63"]}"#),
            Err(SourceIpError::NotStripeList(_))
        ));
        assert!(matches!(
            SourceIpAllowList::from_stripe_json(r#"{"WEBHOOKS": []}"#),
            Err(SourceIpError::Empty)
        ));
    }
}
