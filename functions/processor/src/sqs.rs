//! An SQS API message in the shape Lambda's event source mapping hands to the function, for the callers
//! that receive from the queue themselves and then call [`handle`](crate::handler::handle) as Lambda
//! would: the CLI's local poller (`stripe-webhooks poll`, in-process mode), the integration tests and
//! the bench drivers.

use aws_lambda_events::{
    encodings::Base64Data,
    event::sqs::{SqsMessage, SqsMessageAttribute},
};
use aws_sdk_sqs::types::Message;

/// `message`, received from the queue at `queue_arn` in `region`, as Lambda hands it to a function:
/// body, receipt handle, checksums, system attributes (`ApproximateReceiveCount`…) by name, and the
/// message attributes with their data types.
pub fn lambda_message(message: &Message, queue_arn: &str, region: &str) -> SqsMessage {
    let mut converted = SqsMessage::default();
    converted.message_id = message.message_id.clone();
    converted.receipt_handle = message.receipt_handle.clone();
    converted.body = message.body.clone();
    converted.md5_of_body = message.md5_of_body.clone();
    converted.md5_of_message_attributes = message.md5_of_message_attributes.clone();
    converted.attributes = message
        .attributes
        .iter()
        .flatten()
        .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
        .collect();
    for (name, value) in message.message_attributes.iter().flatten() {
        let mut attribute = SqsMessageAttribute::default();
        attribute.string_value = value.string_value.clone();
        attribute.binary_value = value.binary_value.as_ref().map(|b| {
            let mut data = Base64Data::default();
            data.extend_from_slice(b.as_ref());
            data
        });
        attribute.data_type = Some(value.data_type.clone());
        converted.message_attributes.insert(name.clone(), attribute);
    }
    converted.event_source_arn = Some(queue_arn.to_owned());
    converted.event_source = Some("aws:sqs".to_owned());
    converted.aws_region = Some(region.to_owned());
    converted
}

/// The ARN of the queue at `queue_url` (`https://sqs.<region>.amazonaws.com/<account>/<name>`, or an
/// emulator's `http://host:port/<account>/<name>`), for callers that know only the URL.
pub fn queue_arn(queue_url: &str, region: &str) -> String {
    let mut segments = queue_url.trim_end_matches('/').rsplit('/');
    let name = segments.next().unwrap_or_default();
    let account = segments.next().unwrap_or_default();
    format!("arn:aws:sqs:{region}:{account}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_url_names_its_account_and_queue() {
        assert_eq!(
            queue_arn(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/stripe-events",
                "eu-west-1"
            ),
            "arn:aws:sqs:eu-west-1:123456789012:stripe-events"
        );
        assert_eq!(
            queue_arn("http://127.0.0.1:5000/000000000000/q/", "us-east-1"),
            "arn:aws:sqs:us-east-1:000000000000:q"
        );
    }

    #[test]
    fn system_and_message_attributes_keep_their_names_and_types() {
        use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body("{}")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .message_attributes(
                "body_location",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("inline")
                    .build()
                    .unwrap(),
            )
            .build();
        let converted = lambda_message(&message, "arn:aws:sqs:us-east-1:0:q", "us-east-1");
        assert_eq!(converted.message_id.as_deref(), Some("m-1"));
        assert_eq!(converted.body.as_deref(), Some("{}"));
        assert_eq!(
            converted
                .attributes
                .get("ApproximateReceiveCount")
                .map(String::as_str),
            Some("3")
        );
        let location = &converted.message_attributes["body_location"];
        assert_eq!(location.string_value.as_deref(), Some("inline"));
        assert_eq!(location.data_type.as_deref(), Some("String"));
        assert_eq!(converted.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(
            converted.event_source_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:0:q")
        );
    }
}
