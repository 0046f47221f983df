//! Webhook subscriptions end to end.

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use eye_admin::subscriptions::{self, Destination, Filter};
use serde_json::json;

use crate::{
    Env, client, events_of, ids,
    receiver::{Behaviour, Receiver},
    status, subscribe,
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn matching_events_reach_the_webhook_signed_in_the_documented_shape_and_nothing_else_does() {
    let env = Env::start().await;
    let receiver = Receiver::start(Behaviour::default()).await;
    let created = subscribe(
        &env.db,
        "client-a",
        Destination::Webhook(receiver.at("a")),
        client("Client_A"),
        None,
        false,
    )
    .await;
    let secret = created.secret.expect("a webhook gets a secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.verify_with("a", &secret);
    let delivery = env.delivery().await;

    let mut sent = events_of("Client_A", 0, 250);
    sent.extend(events_of("Client_B", 0, 100));
    env.send(sent.clone()).await;
    receiver
        .wait(WAIT, "250 events of Client_A", |log| {
            log.seen
                .get("a")
                .is_some_and(|s| s.iter().map(|b| b.events.len()).sum::<usize>() >= 250)
        })
        .await;

    let seen = receiver.seen("a");
    let got: HashSet<String> = ids(&seen).into_iter().collect();
    let want: HashSet<String> = sent[..250].iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(got, want, "exactly Client_A's events");
    assert!(seen.iter().all(|batch| batch.events.len() <= 100), "batches of at most 100");
    assert!(seen.iter().all(|batch| batch.subscription == "client-a"));
    // The documented shape.
    let first = &seen[0].events[0];
    let keys: HashSet<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from([
            "event_id",
            "application_id",
            "session_id",
            "category",
            "name",
            "data",
            "occurred_at",
            "received_at"
        ])
    );
    assert_eq!(first["data"]["client"], "Client_A");
    assert_eq!(first["category"], "page interaction");
    let sent_first = sent.iter().find(|e| e.event_id == first["event_id"]).unwrap();
    assert_eq!(first["session_id"], sent_first.session_id.as_str());

    let listed = status(&env.db, "client-a").await;
    eye_test_support::wait_for(&env.db.pool, WAIT, "the delivered count", || async {
        let listed = status(&env.db, "client-a").await;
        (listed.delivered == 250 && listed.pending == 0).then_some(())
    })
    .await;
    assert_eq!(listed.dead_letters, 0);
    delivery.stop().await;
}

#[tokio::test]
async fn an_event_the_receiver_refuses_is_dead_lettered_alone_and_its_batch_mates_are_delivered() {
    let env = Env::start().await;
    let receiver =
        Receiver::start(Behaviour { refuse_marker: Some("poison".into()), ..Default::default() })
            .await;
    let created = subscribe(
        &env.db,
        "all",
        Destination::Webhook(receiver.at("all")),
        Filter::default(),
        None,
        false,
    )
    .await;
    receiver.verify_with("all", created.secret.as_deref().unwrap());
    let subscription = created.subscription;

    // One send: the planted event lands in the same writer batch as its neighbours.
    let mut sent = events_of("Client_A", 0, 60);
    sent[37].data_json = json!({"client": "Client_A", "poison": true}).to_string();
    let planted = sent[37].event_id.clone();
    env.send(sent.clone()).await;
    env.stored(60).await;
    let delivery = env.delivery().await;

    eye_test_support::wait_for(&env.db.pool, WAIT, "59 delivered, 1 dead letter", || async {
        let listed = status(&env.db, "all").await;
        (listed.delivered == 59 && listed.dead_letters == 1 && listed.pending == 0).then_some(())
    })
    .await;
    let got: HashSet<String> = ids(&receiver.seen("all")).into_iter().collect();
    assert_eq!(got.len(), 59);
    assert!(!got.contains(&planted));
    // `eye dlq list --subscription all` shows it with the status and the body's start.
    let dead =
        eye_admin::dead_letters::list(&env.db.pool, Some(&subscription.stage()), 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].last_error.starts_with("webhook answered 400: refused: field `poison`"),
        "{}",
        dead[0].last_error
    );
    // The dead letter holds the planted event alone: replayed after the receiver is fixed, it is
    // delivered.
    receiver.behave(Behaviour::default());
    let selection = eye_admin::dead_letters::Selection::All;
    eye_admin::dead_letters::replay(&env.db.pool, Some(&subscription.stage()), &selection)
        .await
        .unwrap();
    receiver
        .wait(WAIT, "the replayed event", |log| {
            log.seen["all"]
                .iter()
                .any(|b| b.events.iter().any(|e| e["event_id"] == planted.as_str()))
        })
        .await;
    delivery.stop().await;
}

#[tokio::test]
async fn gone_pauses_the_subscription_and_resume_delivers_what_was_queued_meanwhile() {
    let env = Env::start().await;
    let receiver = Receiver::start(Behaviour { gone: true, ..Default::default() }).await;
    let created = subscribe(
        &env.db,
        "hook",
        Destination::Webhook(receiver.at("h")),
        Filter::default(),
        None,
        false,
    )
    .await;
    receiver.verify_with("h", created.secret.as_deref().unwrap());
    let delivery = env.delivery().await;
    env.send(events_of("Client_A", 0, 10)).await;
    eye_test_support::wait_for(&env.db.pool, WAIT, "the pause", || async {
        status(&env.db, "hook").await.paused.then_some(())
    })
    .await;
    let listed = status(&env.db, "hook").await;
    assert_eq!(listed.paused_reason.as_deref(), Some("the webhook answered 410 Gone"));
    // Paused, it keeps being fed.
    env.send(events_of("Client_A", 10, 15)).await;
    eye_test_support::wait_for(&env.db.pool, WAIT, "25 pending", || async {
        (status(&env.db, "hook").await.pending == 25).then_some(())
    })
    .await;
    assert!(receiver.seen("h").is_empty());

    receiver.behave(Behaviour::default());
    assert!(subscriptions::resume(&env.db.pool, "hook").await.unwrap());
    receiver
        .wait(WAIT, "25 events after resume", |log| {
            log.seen.get("h").is_some_and(|s| s.iter().map(|b| b.events.len()).sum::<usize>() == 25)
        })
        .await;
    delivery.stop().await;
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let env = Env::start().await;
    let receiver =
        Receiver::start(Behaviour { throttle_first: Some(2), ..Default::default() }).await;
    let created = subscribe(
        &env.db,
        "slow",
        Destination::Webhook(receiver.at("s")),
        Filter::default(),
        None,
        false,
    )
    .await;
    receiver.verify_with("s", created.secret.as_deref().unwrap());
    let delivery = env.delivery().await;
    env.send(events_of("Client_A", 0, 1)).await;
    receiver.wait(WAIT, "the event", |log| log.seen.contains_key("s")).await;
    let (first_call, delivered_at) =
        receiver.log(|log| (log.first_call.unwrap(), log.seen["s"][0].at));
    let waited = delivered_at - first_call;
    // The backoff alone would have retried after at most 50 ms.
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    delivery.stop().await;
}

#[tokio::test]
async fn an_ordered_backfill_delivers_what_was_stored_then_what_comes_in_storage_order() {
    // Storage order is the order the writers' transactions commit in; `stored_at` is read per row
    // before the commit, so concurrent claim loops interleave it. With one claim loop the two
    // orders are the same, and `stored_at` can serve as the test's record of storage order.
    let env = Env::start_with(|settings| settings.writer.consumer.concurrency = 1).await;
    let receiver = Receiver::start(Behaviour { fail_rate: 0.2, ..Default::default() }).await;
    let before = Utc::now();
    env.send(events_of("Client_B", 0, 300)).await;
    env.send(events_of("Client_A", 0, 50)).await;
    env.stored(350).await;
    let created = subscribe(
        &env.db,
        "queue-b",
        Destination::Webhook(receiver.at("b")),
        client("Client_B"),
        Some(before),
        true,
    )
    .await;
    receiver.verify_with("b", created.secret.as_deref().unwrap());
    assert!(created.subscription.is_backfilling());
    let delivery = env.delivery().await;
    // Events keep coming while the backfill runs.
    let mut more = Vec::new();
    for round in 0..5 {
        let batch = events_of("Client_B", 300 + round * 40, 40);
        more.extend(batch.clone());
        env.send(batch).await;
    }
    receiver
        .wait(WAIT, "500 ordered events", |log| {
            let seen: HashSet<String> =
                log.seen.get("b").map(|s| ids(s)).unwrap_or_default().into_iter().collect();
            seen.len() >= 500
        })
        .await;
    let seen = receiver.seen("b");
    // Every event once (no failure stalls here, so no redelivery), numbered 1..=500 in order.
    let sequences: Vec<i64> = seen
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e["sequence"].as_i64().unwrap()))
        .collect();
    assert_eq!(sequences, (1..=500).collect::<Vec<_>>());
    // Storage order: the backfilled events first, then the live ones; Client_A's none.
    let delivered = ids(&seen);
    let stored_order: Vec<String> = sqlx::query_scalar(
        "SELECT event_id::text FROM events WHERE data->>'client' = 'Client_B' \
         ORDER BY stored_at, application_id, event_id",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    // (One writer claim loop: its commit order is the stored_at order.)
    assert_eq!(delivered, stored_order, "in storage order");
    assert_eq!(status(&env.db, "queue-b").await.state, "live");
    delivery.stop().await;
}

#[tokio::test]
async fn delivery_runs_as_its_least_privileged_role_backfill_included() {
    let env = Env::start().await;
    let receiver = Receiver::start(Behaviour::default()).await;
    let before = Utc::now();
    env.send(events_of("Client_A", 0, 50)).await;
    env.stored(50).await;
    let created = subscribe(
        &env.db,
        "as-role",
        Destination::Webhook(receiver.at("r")),
        client("Client_A"),
        Some(before),
        false,
    )
    .await;
    receiver.verify_with("r", created.secret.as_deref().unwrap());
    let mut settings = crate::settings(&env.db);
    settings.database.url = Some(eye_e2e::login_as(&env.db, "eye_delivery").await.into());
    let delivery = crate::Delivery::start(settings).await;
    env.send(events_of("Client_A", 50, 50)).await;
    receiver
        .wait(WAIT, "100 events, 50 backfilled", |log| {
            let seen: HashSet<String> =
                log.seen.get("r").map(|s| ids(s)).unwrap_or_default().into_iter().collect();
            seen.len() >= 100
        })
        .await;
    assert_eq!(status(&env.db, "as-role").await.dead_letters, 0);
    delivery.stop().await;
}
