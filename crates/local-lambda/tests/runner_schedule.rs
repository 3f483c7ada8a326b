//! Schedules against moto: the runner fires a function's enabled `rate()` schedule again and again
//! (at the test's interval instead of its 5 minutes) with EventBridge's scheduled event, never its
//! disabled one, and stops firing on shutdown.

mod runner_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use local_lambda::runner::{DeliveryOutcome, SourceRef};
use runner_support::Harness;

const INTERVAL: Duration = Duration::from_millis(400);
const GRACE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enabled_schedule_fires_repeatedly_and_stops_on_shutdown() {
    let mut harness = Harness::start(&["probe-schedule"], |config| {
        config.schedule_interval = Some(INTERVAL);
        config.shutdown_grace = GRACE;
    })
    .await;
    let started = Instant::now();
    let fires = harness.collect(Duration::from_secs(20), |seen| seen.len() >= 4).await;
    let elapsed = started.elapsed();

    for fire in &fires {
        let tick = SourceRef::Schedule { name: "probe-tick".into(), event_id: "Tick".into() };
        assert_eq!(fire.source, tick, "only the enabled schedule fires: {fire:#?}");
        assert_eq!((fire.attempt, &fire.outcome), (1, &DeliveryOutcome::Succeeded), "{fire:#?}");
        assert_eq!(fire.records[0].detail_type.as_deref(), Some("Scheduled Event"));
    }
    let ids: BTreeSet<&str> = fires.iter().map(|f| f.records[0].id.as_str()).collect();
    assert_eq!(ids.len(), fires.len(), "every fire is a new event: {ids:?}");
    // Four fires take at least four intervals: the first comes one interval after the start.
    assert!(elapsed >= INTERVAL * 4 - Duration::from_millis(50), "4 fires in {elapsed:?}");

    // A schedule that ignored shutdown would hold it for the whole grace period.
    let Harness { runner, mut deliveries, moto, scratch, .. } = harness;
    let stopping = Instant::now();
    runner.shutdown().await.expect("clean shutdown");
    assert!(stopping.elapsed() < GRACE / 2, "shutdown took {:?}", stopping.elapsed());
    // Nothing fires after the runner is gone: the channel holds at most the fires from before it stopped.
    let late = tokio::time::timeout(INTERVAL * 3, async {
        let mut late = 0;
        while deliveries.recv().await.is_ok() {
            late += 1;
        }
        late
    })
    .await
    .expect("the delivery channel closes with the runner");
    assert!(late <= 1, "{late} fires after shutdown started");
    drop((moto, scratch));
}
