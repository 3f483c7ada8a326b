//! The text `orderflow-dlq` prints for each command's result.

use std::fmt::Write as _;

use aws_sdk_sqs::types::MessageAttributeValue;
use time::format_description::well_known::Rfc3339;

use crate::{DeadLetterMessage, DeadLetterQueue, Depth, ERROR_ATTRIBUTE_PREFIX, Peek, QueueRef, RedriveReport};
use crate::{REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE};

/// Characters of a body shown unless the whole body is asked for.
pub const BODY_PREVIEW_CHARS: usize = 1000;

/// The DLQs as a table: name, depth (visible + in flight), visible, in flight, source queues.
pub fn dead_letter_queues(queues: &[DeadLetterQueue], prefix: Option<&str>) -> String {
    if queues.is_empty() {
        return match prefix {
            Some(prefix) => format!("no dead-letter queues whose name starts with {prefix:?}\n"),
            None => "no dead-letter queues\n".to_owned(),
        };
    }
    let width = queues.iter().map(|q| q.queue.name.len()).max().unwrap_or(0).max("DLQ".len());
    let mut out = format!("{:<width$}  {:>5}  {:>7}  {:>9}  SOURCE QUEUES\n", "DLQ", "DEPTH", "VISIBLE", "IN FLIGHT");
    for dlq in queues {
        let sources = if dlq.sources.is_empty() {
            "- (found by name)".to_owned()
        } else {
            dlq.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>5}  {:>7}  {:>9}  {sources}",
            dlq.queue.name,
            dlq.depth.total(),
            dlq.depth.visible,
            dlq.depth.in_flight
        );
    }
    out
}

/// What `show` prints: a header with the DLQ's depth, then each message with its failure, attributes and body
/// (the first [`BODY_PREVIEW_CHARS`] characters unless `full`).
pub fn peek(dlq: &QueueRef, depth: Option<Depth>, peek: &Peek, full: bool) -> String {
    let mut out = String::new();
    let shown = peek.messages.len();
    let _ = write!(out, "{}: {shown} message{} shown", dlq.name, if shown == 1 { "" } else { "s" });
    if let Some(depth) = depth {
        let _ = write!(out, " (depth {}: {} visible, {} in flight)", depth.total(), depth.visible, depth.in_flight);
    }
    out.push('\n');
    for (i, message) in peek.messages.iter().enumerate() {
        out.push('\n');
        out.push_str(&self::message(i + 1, shown, message, full));
    }
    for warning in &peek.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// One message of `show`.
pub fn message(position: usize, of: usize, message: &DeadLetterMessage, full: bool) -> String {
    let mut out = format!("message {position}/{of}  id {}\n", message.message_id);
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(out, "  {:<16}{value}", format!("{name}:"));
    };
    if let Some(sent) = message.sent_at.and_then(|t| t.format(&Rfc3339).ok()) {
        field("sent", &sent);
    }
    if let Some(count) = message.receive_count {
        field("receive count", &format!("{count} (this read included)"));
    }
    let failure = &message.failure;
    match &failure.reason {
        Some(reason) => field("reason", reason),
        None => field("reason", "(not recorded: typically SQS moved it here after maxReceiveCount receives)"),
    }
    if let Some(class) = &failure.class {
        field("error class", class);
    }
    if let Some(id) = &failure.source_message_id {
        field("source message", id);
    }
    if let Some(lambda) = &failure.lambda {
        let mut text = lambda.function_arn.clone().unwrap_or_else(|| "(unknown function)".to_owned());
        if let Some(condition) = &lambda.condition {
            let _ = write!(text, ", {condition}");
        }
        if let Some(attempts) = lambda.attempts {
            let _ = write!(text, " after {attempts} attempt{}", if attempts == 1 { "" } else { "s" });
        }
        if let Some(request) = &lambda.request_id {
            let _ = write!(text, ", request {request}");
        }
        field("lambda failure", &text);
    }
    if let Some(group) = &message.message_group_id {
        field("message group", group);
    }
    let others: Vec<String> = message
        .attributes
        .iter()
        .filter(|(name, _)| {
            !name.starts_with(ERROR_ATTRIBUTE_PREFIX)
                && name.as_str() != REASON_ATTRIBUTE
                && name.as_str() != SOURCE_MESSAGE_ATTRIBUTE
        })
        .map(|(name, value)| format!("{name} = {}", attribute_value(value)))
        .collect();
    if !others.is_empty() {
        field("attributes", &others.join(", "));
    }
    out.push_str("  body:\n");
    for line in body(&message.body, full).lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// What `redrive` prints: how many moved where, then every message that did not move and why.
pub fn redrive(report: &RedriveReport) -> String {
    let moved = report.moved.len();
    let mut out = format!(
        "moved {moved} message{} from {} to {}\n",
        if moved == 1 { "" } else { "s" },
        report.dlq.name,
        report.target.name
    );
    if !report.failed.is_empty() {
        let _ = writeln!(out, "{} could not be sent and are still in {}:", report.failed.len(), report.dlq.name);
        for (id, reason) in &report.failed {
            let _ = writeln!(out, "  {id}: {reason}");
        }
    }
    if !report.not_deleted.is_empty() {
        let _ = writeln!(
            out,
            "{} were sent to {} but could not be deleted from {} (they are in both queues now):",
            report.not_deleted.len(),
            report.target.name,
            report.dlq.name
        );
        for (id, reason) in &report.not_deleted {
            let _ = writeln!(out, "  {id}: {reason}");
        }
    }
    if let Some(reason) = &report.interrupted {
        let _ = writeln!(out, "stopped early, the rest is still in {}: {reason}", report.dlq.name);
    }
    if !report.not_found.is_empty() {
        let _ = writeln!(out, "not found in {} (or in flight): {}", report.dlq.name, report.not_found.join(", "));
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// A message attribute's value for display: the string, or the size of a binary value; with its type unless it is
/// a plain `String`.
fn attribute_value(value: &MessageAttributeValue) -> String {
    let shown = match (value.string_value(), value.binary_value()) {
        (Some(text), _) => format!("{text:?}"),
        (None, Some(bytes)) => format!("<{} bytes>", bytes.as_ref().len()),
        (None, None) => "<empty>".to_owned(),
    };
    match value.data_type() {
        "String" => shown,
        other => format!("{shown} ({other})"),
    }
}

/// The body as shown: JSON pretty-printed (keys in their original order), anything else as it is; cut after
/// [`BODY_PREVIEW_CHARS`] characters unless `full`.
pub fn body(body: &str, full: bool) -> String {
    let text = pretty_json(body).unwrap_or_else(|| body.to_owned());
    let total = text.chars().count();
    if full || total <= BODY_PREVIEW_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(BODY_PREVIEW_CHARS).collect();
    let _ = write!(cut, "\n... {} more characters (--full shows the whole body)", total - BODY_PREVIEW_CHARS);
    cut
}

/// `text` re-indented with two spaces when it is a JSON object or array, keeping its keys' order and its numbers'
/// spelling (serde_json's pretty printer would sort the keys); `None` for anything else.
pub fn pretty_json(text: &str) -> Option<String> {
    let text = text.trim();
    if !(text.starts_with('{') || text.starts_with('[')) || serde_json::from_str::<serde_json::Value>(text).is_err() {
        return None;
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                let next = chars[i..].iter().position(|c| !c.is_whitespace()).map(|p| i + p);
                if let Some(next) = next.filter(|&n| chars[n] == close) {
                    out.push(c);
                    out.push(close);
                    i = next + 1;
                } else {
                    depth += 1;
                    out.push(c);
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_pretty_printed_in_its_own_key_order() {
        let text = r#"{"z":1,"a":{"list":[1, 2.50,{}],"empty":[ ],"s":"a,b:{c}\"]"},"n":null}"#;
        let expected = r#"{
  "z": 1,
  "a": {
    "list": [
      1,
      2.50,
      {}
    ],
    "empty": [],
    "s": "a,b:{c}\"]"
  },
  "n": null
}"#;
        assert_eq!(pretty_json(text).as_deref(), Some(expected));
    }

    #[test]
    fn non_json_bodies_are_shown_as_they_are() {
        assert_eq!(pretty_json("hello"), None);
        assert_eq!(pretty_json("{not json"), None);
        assert_eq!(pretty_json("42"), None);
        assert_eq!(body("plain text", false), "plain text");
    }

    #[test]
    fn long_bodies_are_cut_unless_full() {
        let long = "x".repeat(BODY_PREVIEW_CHARS + 5);
        let cut = body(&long, false);
        assert!(cut.starts_with(&"x".repeat(BODY_PREVIEW_CHARS)));
        assert!(cut.ends_with("\n... 5 more characters (--full shows the whole body)"), "{cut}");
        assert_eq!(body(&long, true), long);
        // Characters, not bytes: a multi-byte body is never cut inside a character.
        let wide = "é".repeat(BODY_PREVIEW_CHARS + 1);
        assert!(body(&wide, false).starts_with(&"é".repeat(BODY_PREVIEW_CHARS)));
    }

    #[test]
    fn attribute_values() {
        let text = MessageAttributeValue::builder().data_type("String").string_value("a").build().unwrap();
        assert_eq!(attribute_value(&text), "\"a\"");
        let number = MessageAttributeValue::builder().data_type("Number").string_value("3").build().unwrap();
        assert_eq!(attribute_value(&number), "\"3\" (Number)");
        let binary = MessageAttributeValue::builder()
            .data_type("Binary")
            .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![1, 2, 3]))
            .build()
            .unwrap();
        assert_eq!(attribute_value(&binary), "<3 bytes> (Binary)");
    }
}
