//! Property tests of the toolkit's delivery guarantees: the SQS batch processor's partial batch response and
//! dead letters, and the idempotency logic, on generated batches and call sequences.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::SqsEvent;
use orderflow_toolkit::idempotency::{Idempotency, IdempotencyError, MemoryIdempotencyStore};
use orderflow_toolkit::{DeadLetter, DeadLetterSink, HandlerError, SqsBatchProcessor, SqsRecord};
use proptest::prelude::*;
use serde_json::json;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

// ---------------------------------------------------------------------------------------------------------------
// SqsBatchProcessor
// ---------------------------------------------------------------------------------------------------------------

/// What the handler does with a body; every message carrying the body gets the same outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Success,
    Transient,
    Permanent,
    /// Permanent, and the dead-letter send of this body fails.
    PermanentUnsendable,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Success => "ok",
            Kind::Transient => "later",
            Kind::Permanent => "poison",
            Kind::PermanentUnsendable => "poison-unsendable",
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Success), Just(Kind::Transient), Just(Kind::Permanent), Just(Kind::PermanentUnsendable)]
}

/// The distinct bodies (`b<i>:<tag>`) and the messages, each an index into the bodies: repeated indices are
/// duplicate deliveries of one body under different message ids.
fn batch() -> impl Strategy<Value = (Vec<Kind>, Vec<usize>)> {
    prop::collection::vec(kind(), 1..8).prop_flat_map(|kinds| {
        let n = kinds.len();
        (Just(kinds), prop::collection::vec(0..n, 0..25))
    })
}

fn body(index: usize, kind: Kind) -> String {
    format!("b{index}:{}", kind.tag())
}

fn reason(body_id: &str) -> String {
    format!("body {body_id} can never be processed")
}

/// A dead-letter queue that keeps letters in memory and refuses those of `poison-unsendable` bodies.
#[derive(Clone, Default)]
struct Sink {
    letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl DeadLetterSink for Sink {
    async fn send(&self, letter: DeadLetter) -> Result<(), String> {
        tokio::task::yield_now().await;
        if letter.body.ends_with(Kind::PermanentUnsendable.tag()) {
            return Err("dead-letter queue unavailable".into());
        }
        self.letters.lock().unwrap().push(letter);
        Ok(())
    }
}

/// What the handler saw and did.
#[derive(Default)]
struct Effects {
    /// Body ids whose effect was applied: the idempotency check, by body id.
    applied: Mutex<BTreeSet<String>>,
    /// The side effect: a counter per body id, incremented only when the body was not applied yet.
    counters: Mutex<BTreeMap<String, u32>>,
    /// Handler calls per message id.
    calls: Mutex<BTreeMap<String, u32>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

async fn handle(effects: &Effects, record: SqsRecord) -> Result<(), HandlerError> {
    let now = effects.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    effects.max_in_flight.fetch_max(now, Ordering::SeqCst);
    *effects.calls.lock().unwrap().entry(record.message_id.clone()).or_default() += 1;
    // Let the other records in flight run between here and the effect.
    tokio::task::yield_now().await;
    let (body_id, tag) = record.body.split_once(':').expect("generated bodies have a tag");
    let outcome = match tag {
        "ok" => {
            tokio::task::yield_now().await;
            if effects.applied.lock().unwrap().insert(body_id.to_owned()) {
                *effects.counters.lock().unwrap().entry(body_id.to_owned()).or_default() += 1;
            }
            Ok(())
        }
        "later" => Err(HandlerError::transient("throttled")),
        _ => Err(HandlerError::permanent(reason(body_id))),
    };
    effects.in_flight.fetch_sub(1, Ordering::SeqCst);
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any mix of outcomes and duplicates, at any concurrency: exactly the transient records (and the poison ones
    /// whose dead-letter send failed) are reported, every other poison record is dead-lettered once with its
    /// reason, and each distinct successful body's effect is applied once.
    #[test]
    fn batch_outcomes_follow_each_records_class((kinds, messages) in batch(), concurrency in 1usize..=8) {
        let records: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(i, &b)| json!({
                "messageId": format!("m{i}"),
                "body": body(b, kinds[b]),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {"seq": {"stringValue": i.to_string(), "dataType": "String"}},
            }))
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records })).unwrap();
        let sink = Sink::default();
        let effects = Effects::default();
        let processor = SqsBatchProcessor::new(sink.clone()).with_concurrency(concurrency);
        let response = block_on(processor.process(event, |record| handle(&effects, record))).unwrap();

        let kind_of = |i: usize| kinds[messages[i]];
        let ids_where = |wanted: &dyn Fn(Kind) -> bool| -> Vec<String> {
            (0..messages.len()).filter(|&i| wanted(kind_of(i))).map(|i| format!("m{i}")).collect::<BTreeSet<_>>()
                .into_iter().collect()
        };

        // batchItemFailures: the transient ones and the poison ones that could not be dead-lettered, once each.
        let mut reported: Vec<String> =
            response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        reported.sort();
        let expected = ids_where(&|k| matches!(k, Kind::Transient | Kind::PermanentUnsendable));
        prop_assert_eq!(&reported, &expected);

        // The dead-letter sink: every sendable poison record once, with its body, reason, class and attributes.
        let letters = sink.letters.lock().unwrap().clone();
        let mut lettered: Vec<String> = letters.iter().map(|l| l.message_id.clone()).collect();
        lettered.sort();
        prop_assert_eq!(&lettered, &ids_where(&|k| k == Kind::Permanent));
        for letter in &letters {
            let i: usize = letter.message_id[1..].parse().unwrap();
            prop_assert_eq!(&letter.body, &body(messages[i], kind_of(i)));
            prop_assert_eq!(&letter.reason, &reason(&format!("b{}", messages[i])));
            prop_assert_eq!(&letter.error_class, "Permanent");
            prop_assert_eq!(letter.attributes.get("seq"), Some(&i.to_string()));
        }

        // Side effects: once per distinct successful body, none for the others.
        let expected_counters: BTreeMap<String, u32> = messages
            .iter()
            .filter(|&&b| kinds[b] == Kind::Success)
            .map(|&b| (format!("b{b}"), 1))
            .collect();
        prop_assert_eq!(&*effects.counters.lock().unwrap(), &expected_counters);

        // Every record reached the handler exactly once, with at most `concurrency` in flight and, given enough
        // records, that many at once.
        let calls = effects.calls.lock().unwrap().clone();
        prop_assert_eq!(calls.len(), messages.len());
        prop_assert!(calls.values().all(|&n| n == 1), "{:?}", calls);
        let max = effects.max_in_flight.load(Ordering::SeqCst);
        prop_assert_eq!(max, concurrency.min(messages.len()));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------------------------

const REMAINING: Duration = Duration::from_secs(30);

fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// One call: a key, a payload, and whether `f` fails if it runs.
#[derive(Debug, Clone)]
struct Call {
    key: usize,
    payload: usize,
    fails: bool,
}

fn call() -> impl Strategy<Value = Call> {
    (0usize..3, 0usize..3, prop::bool::weighted(0.2)).prop_map(|(key, payload, fails)| Call { key, payload, fails })
}

/// What a call returned, without the error's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Result(String),
    HandlerFailed,
    InProgress,
    PayloadMismatch,
}

fn answer(result: Result<String, IdempotencyError>) -> Answer {
    match result {
        Ok(value) => Answer::Result(value),
        Err(IdempotencyError::Handler(_)) => Answer::HandlerFailed,
        Err(IdempotencyError::InProgress { .. }) => Answer::InProgress,
        Err(IdempotencyError::PayloadMismatch { .. }) => Answer::PayloadMismatch,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any sequence of calls with repeated keys and payloads: `f` runs until it succeeds once per key, repeats
    /// with the first payload get that run's result, any other payload is a mismatch, and a failed run leaves
    /// nothing behind.
    #[test]
    fn sequential_calls_run_once_per_key_and_replay_the_result(calls in prop::collection::vec(call(), 1..40)) {
        let idempotency = Idempotency::new(MemoryIdempotencyStore::default()).with_clock(fixed_clock);
        let runs = AtomicUsize::new(0);
        // The model: per key, the payload and result of its successful run.
        let mut model: HashMap<usize, (usize, String)> = HashMap::new();
        let mut successful_runs: HashMap<usize, usize> = HashMap::new();
        block_on(async {
            for call in &calls {
                let key = format!("key-{}", call.key);
                let payload = json!({"payload": call.payload});
                let ran = runs.load(Ordering::SeqCst);
                let result = idempotency
                    .run(&key, &payload, REMAINING, || async {
                        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                        if call.fails {
                            Err(HandlerError::transient("dependency down"))
                        } else {
                            Ok(format!("{key}/{}/run-{run}", call.payload))
                        }
                    })
                    .await;
                let got = answer(result);
                let f_ran = runs.load(Ordering::SeqCst) > ran;
                match model.get(&call.key) {
                    Some((payload, result)) if *payload == call.payload => {
                        prop_assert_eq!(&got, &Answer::Result(result.clone()));
                        prop_assert!(!f_ran);
                    }
                    Some(_) => {
                        prop_assert_eq!(&got, &Answer::PayloadMismatch);
                        prop_assert!(!f_ran);
                    }
                    None => {
                        prop_assert!(f_ran);
                        if call.fails {
                            prop_assert_eq!(&got, &Answer::HandlerFailed);
                            prop_assert_eq!(idempotency.store().record(&key), None);
                        } else {
                            let Answer::Result(value) = got else {
                                return Err(TestCaseError::fail(format!("{call:?} answered {got:?}")));
                            };
                            *successful_runs.entry(call.key).or_default() += 1;
                            model.insert(call.key, (call.payload, value));
                        }
                    }
                }
            }
            Ok(())
        })?;
        prop_assert!(successful_runs.values().all(|&n| n == 1), "{:?}", successful_runs);
    }

    /// Concurrent calls on one key: exactly one runs `f`; while it runs, the others get InProgress (same payload)
    /// or PayloadMismatch (another payload); afterwards every same-payload call gets its result.
    #[test]
    fn concurrent_calls_on_one_key_run_f_once(payloads in prop::collection::vec(0usize..3, 2..8)) {
        let idempotency = Idempotency::new(MemoryIdempotencyStore::default()).with_clock(fixed_clock);
        let runs = AtomicUsize::new(0);
        block_on(async {
            let calls = payloads.iter().map(|&p| {
                let idempotency = &idempotency;
                let runs = &runs;
                async move {
                    let result = idempotency
                        .run("key", &p, REMAINING, || async move {
                            // Stay in progress while the other calls arrive.
                            for _ in 0..3 {
                                tokio::task::yield_now().await;
                            }
                            Ok::<_, HandlerError>(format!("payload {p}, run {}", runs.fetch_add(1, Ordering::SeqCst) + 1))
                        })
                        .await;
                    answer(result)
                }
            });
            let answers = futures::future::join_all(calls).await;
            prop_assert_eq!(runs.load(Ordering::SeqCst), 1);
            let winners: Vec<usize> =
                (0..answers.len()).filter(|&i| matches!(answers[i], Answer::Result(_))).collect();
            prop_assert_eq!(winners.len(), 1, "{:?}", answers);
            let winner = winners[0];
            let Answer::Result(result) = answers[winner].clone() else { unreachable!() };
            for (i, got) in answers.iter().enumerate().filter(|&(i, _)| i != winner) {
                let expected =
                    if payloads[i] == payloads[winner] { Answer::InProgress } else { Answer::PayloadMismatch };
                prop_assert_eq!(got, &expected);
            }
            // Retried later, each call gets the one result or the mismatch, and `f` never runs again.
            for &p in &payloads {
                let again = answer(
                    idempotency.run("key", &p, REMAINING, || async { Ok::<_, HandlerError>("again".to_owned()) }).await,
                );
                let expected =
                    if p == payloads[winner] { Answer::Result(result.clone()) } else { Answer::PayloadMismatch };
                prop_assert_eq!(again, expected);
            }
            prop_assert_eq!(runs.load(Ordering::SeqCst), 1);
            Ok(())
        })?;
    }
}
