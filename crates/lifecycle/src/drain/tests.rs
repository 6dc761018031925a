use std::time::Duration;

use super::*;

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn completes_when_the_last_holder_drops() {
    let (trigger, watch) = channel();
    for i in 1..=3u64 {
        let w = watch.clone();
        tokio::spawn(async move {
            let guard = w.signaled().await;
            assert_eq!(guard.mode(), Mode::Graceful);
            // Finishing its work takes a while; the drain waits for it.
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
            drop(guard);
        });
    }
    drop(watch);
    assert_eq!(trigger.open(), 3);
    let drained = trigger.drain(Mode::Graceful, LONG).await;
    assert!(drained.complete(), "{drained:?}");
    assert_eq!(drained.waited, Duration::from_millis(300));
    assert_eq!(trigger.open(), 0);
}

#[tokio::test(start_paused = true)]
async fn nothing_held_drains_at_once() {
    let (trigger, watch) = channel();
    drop(watch);
    let drained = trigger.drain(Mode::Graceful, LONG).await;
    assert_eq!(drained.still_open, 0);
    assert_eq!(drained.waited, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_wait_and_counts_what_is_open() {
    let (trigger, watch) = channel();
    let stuck = watch.clone();
    let finishes = watch.clone();
    tokio::spawn(async move {
        let _guard = finishes.signaled().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
    drop(watch);
    let drained = trigger.drain(Mode::Graceful, Duration::from_secs(2)).await;
    assert_eq!(drained.still_open, 1, "{drained:?}");
    assert_eq!(drained.waited, Duration::from_secs(2));
    drop(stuck);
    assert_eq!(trigger.open(), 0);
}

#[tokio::test(start_paused = true)]
async fn immediate_stops_what_graceful_lets_run() {
    let (trigger, watch) = channel();
    let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
    let w = watch.clone();
    tokio::spawn(async move {
        // A relay: keeps going through a graceful drain, stops when it turns immediate.
        let guard = w.signaled().await;
        guard.immediate().await;
        let _ = stopped_tx.send(guard.mode());
    });
    drop(watch);
    let graceful = trigger.drain(Mode::Graceful, Duration::from_secs(5)).await;
    assert_eq!(graceful.still_open, 1);
    assert_eq!(trigger.mode(), Some(Mode::Graceful));
    let immediate = trigger.drain(Mode::Immediate, IMMEDIATE_GRACE).await;
    assert!(immediate.complete(), "{immediate:?}");
    assert_eq!(immediate.waited, Duration::ZERO);
    assert_eq!(stopped.await.unwrap(), Mode::Immediate);
    // Never back to graceful.
    trigger.start(Mode::Graceful);
    assert_eq!(trigger.mode(), Some(Mode::Immediate));
}

#[tokio::test(start_paused = true)]
async fn an_immediate_drain_is_seen_as_one_by_every_holder() {
    let (trigger, watch) = channel();
    let w = watch.clone();
    let seen = tokio::spawn(async move { w.signaled().await.mode() });
    drop(watch);
    let drained = trigger.drain(Mode::Immediate, IMMEDIATE_GRACE).await;
    assert!(drained.complete());
    assert_eq!(seen.await.unwrap(), Mode::Immediate);
}

#[tokio::test(start_paused = true)]
async fn a_watch_cloned_after_the_drain_started_sees_it_at_once() {
    let (trigger, watch) = channel();
    trigger.start(Mode::Graceful);
    let late = watch.clone();
    assert_eq!(late.mode(), Some(Mode::Graceful));
    let started = Instant::now();
    assert_eq!(late.draining().await, Mode::Graceful);
    let guard = late.signaled().await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(trigger.open(), 2);
    drop((guard, watch));
    assert!(trigger
        .drain(Mode::Graceful, Duration::from_secs(1))
        .await
        .complete());
}

#[tokio::test(start_paused = true)]
async fn shutdown_turns_immediate_at_the_deadline_or_when_hurried() {
    // The deadline passes with a relay still open: it is told to stop, and does.
    let (trigger, watch) = channel();
    let w = watch.clone();
    tokio::spawn(async move { w.signaled().await.immediate().await });
    drop(watch);
    let drained = trigger
        .shutdown(Duration::from_secs(5), std::future::pending())
        .await;
    assert!(drained.complete(), "{drained:?}");
    assert_eq!(drained.waited, Duration::from_secs(5));

    // A second signal after 1 s: immediate then, whatever the deadline.
    let (trigger, watch) = channel();
    let w = watch.clone();
    tokio::spawn(async move { w.signaled().await.immediate().await });
    drop(watch);
    let hurry = tokio::time::sleep(Duration::from_secs(1));
    let drained = trigger.shutdown(LONG, hurry).await;
    assert!(drained.complete(), "{drained:?}");
    assert_eq!(drained.waited, Duration::from_secs(1));

    // A holder that ignores even an immediate drain is given up on after the grace.
    let (trigger, watch) = channel();
    let drained = trigger
        .shutdown(Duration::from_secs(5), std::future::pending())
        .await;
    assert_eq!(drained.still_open, 1);
    assert_eq!(drained.waited, Duration::from_secs(5) + IMMEDIATE_GRACE);
    drop(watch);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trigger_never_drains() {
    let (trigger, watch) = channel();
    drop(trigger);
    let waited = tokio::time::timeout(LONG, watch.draining()).await;
    assert!(waited.is_err(), "a drain nobody started");
    assert_eq!(watch.mode(), None);
}
