//! The sample events of the workspace's `events/<function>/` directories, read when a test asks for one.

use std::path::{Path, PathBuf};

use aws_lambda_events::event::sqs::SqsEvent;
use serde::de::DeserializeOwned;

/// The sample events of one function: the files of `events/<function>/`, in the exact AWS formats.
///
/// A sample that is missing or does not parse as the type asked for is a panic naming its path.
#[derive(Debug, Clone, Copy)]
pub struct Samples {
    function: &'static str,
}

impl Samples {
    /// The samples of `function`, e.g. `Samples::of("inventory")` for `events/inventory/`.
    pub const fn of(function: &'static str) -> Self {
        Self { function }
    }

    /// The path of the sample `file`.
    pub fn path(&self, file: &str) -> PathBuf {
        // This crate is crates/test-support: the workspace root is two levels up.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.ancestors().nth(2).unwrap_or(manifest).join("events").join(self.function).join(file)
    }

    /// The sample `file` as the event type `T`: an `SqsEvent`, a DynamoDB Streams `Event`, a `serde_json::Value`...
    pub fn event<T: DeserializeOwned>(&self, file: &str) -> T {
        let path = self.path(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("sample event {} cannot be read: {error}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|error| {
            panic!("sample event {} is not a {}: {error}", path.display(), std::any::type_name::<T>())
        })
    }

    /// The body of the first record of the SQS sample `file`: what a handler gets for one record.
    pub fn sqs_body(&self, file: &str) -> String {
        let event: SqsEvent = self.event(file);
        let body = event.records.into_iter().next().and_then(|record| record.body);
        body.unwrap_or_else(|| panic!("sample event {} has no record with a body", self.path(file).display()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_sample_is_read_by_function_and_file_name() {
        let event: SqsEvent = Samples::of("inventory").event("order-placed.json");
        assert_eq!(event.records.len(), 1);
        let body: Value = serde_json::from_str(&Samples::of("inventory").sqs_body("order-placed.json")).unwrap();
        assert_eq!(body["detail-type"], "OrderPlaced");
    }

    #[test]
    #[should_panic(expected = "events/inventory/no-such-sample.json cannot be read")]
    fn a_missing_sample_is_a_panic_naming_its_path() {
        Samples::of("inventory").event::<Value>("no-such-sample.json");
    }

    #[test]
    #[should_panic(expected = "events/order-deadlines/scheduled-event.json is not a")]
    fn a_sample_of_another_type_is_a_panic_naming_its_path() {
        Samples::of("order-deadlines").event::<SqsEvent>("scheduled-event.json");
    }
}
