//! The crash test: 200,000 events through three subscriptions (an unordered webhook taking one
//! client, an ordered webhook taking another, NATS taking everything) to a receiver that fails
//! 10% of its calls with 500 and stalls 2% past the sender's timeout, while real `eye-delivery`
//! processes are killed with SIGKILL (or stopped with SIGTERM) at random moments and restarted.

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, Stdio},
    time::Duration,
};

use eye_admin::subscriptions::{Destination, Filter};
use rand::Rng;

use crate::{
    Env, client, events_of, nats_server,
    receiver::{Behaviour, Receiver, Seen},
    status, subscribe,
};

/// Delivery processes, killed if the test fails midway (none outlives it).
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_delivery(env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eye-delivery"))
        .env("EYE__DATABASE__URL", &env.db.url)
        .env("EYE__DATABASE__MAX_CONNECTIONS", "8")
        .env("EYE__METRICS__HOST", "127.0.0.1")
        .env("EYE__METRICS__PORT", "0")
        .env("EYE__DELIVERY__CONSUMER__LEASE_MS", "3000")
        .env("EYE__DELIVERY__CONSUMER__POLL_INTERVAL_MS", "200")
        .env("EYE__DELIVERY__CONSUMER__BACKOFF_BASE_MS", "50")
        .env("EYE__DELIVERY__CONSUMER__BACKOFF_MAX_MS", "400")
        .env("EYE__DELIVERY__CONSUMER__MAX_ATTEMPTS", "1000")
        .env("EYE__DELIVERY__WEBHOOK_TIMEOUT_MS", "1000")
        .env("EYE__DELIVERY__REFRESH_MS", "500")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start eye-delivery")
}

/// Checks a webhook's log: every duplicate carried an already-seen `webhook-id` (a retried batch
/// is the same batch), and returns the distinct event ids.
fn distinct_checking_duplicates(seen: &[Seen]) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut batches: HashMap<&str, Vec<&str>> = HashMap::new();
    for batch in seen {
        let events: Vec<&str> =
            batch.events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
        let repeated = events.iter().any(|id| ids.contains(*id));
        match batches.get(batch.webhook_id.as_str()) {
            Some(before) => assert_eq!(before, &events, "a webhook-id names one batch"),
            None => assert!(!repeated, "a duplicate under a new webhook-id {}", batch.webhook_id),
        }
        batches.insert(&batch.webhook_id, events.clone());
        ids.extend(events.into_iter().map(str::to_owned));
    }
    ids
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_or_misdelivered_while_delivery_processes_are_killed() {
    let total = 200_000;
    let node = nats_server::single();
    let jetstream = nats_server::ready(&[node.url()], 1).await;
    let env = Env::start().await;
    let receiver = Receiver::start(Behaviour {
        fail_rate: 0.10,
        stall_rate: 0.02,
        stall: Duration::from_millis(1_500),
        ..Default::default()
    })
    .await;
    for (name, path, client_name, ordered) in
        [("a", "a", "Client_A", false), ("b", "b", "Client_B", true)]
    {
        let created = subscribe(
            &env.db,
            name,
            Destination::Webhook(receiver.at(path)),
            client(client_name),
            None,
            ordered,
        )
        .await;
        receiver.verify_with(path, created.secret.as_deref().unwrap());
    }
    subscribe(&env.db, "bus", Destination::Nats(node.url()), Filter::default(), None, false).await;

    let mut sent = Vec::with_capacity(total);
    for (i, name) in ["Client_A", "Client_B", "Client_C"].into_iter().enumerate() {
        sent.extend(events_of(name, 0, total / 3 + usize::from(i < total % 3)));
    }
    let want = |name: &str| -> HashSet<String> {
        sent.iter()
            .filter(|e| e.data_json.contains(&format!("\"{name}\"")))
            .map(|e| e.event_id.clone())
            .collect()
    };
    let (want_a, want_b) = (want("Client_A"), want("Client_B"));

    let mut processes = Processes(vec![spawn_delivery(&env), spawn_delivery(&env)]);
    let sending = {
        let events = sent.clone();
        let pipeline_client = env.pipeline.client().await;
        let key = env.key.clone();
        tokio::spawn(async move {
            let mut client = pipeline_client;
            for batch in events.chunks(1000) {
                crate::send_batch(&mut client, &key, batch).await;
            }
        })
    };

    // Chaos until everything is delivered: every 0.3-2 s one process is killed (SIGKILL, one time
    // in five SIGTERM) and a fresh one started in its place.
    let done = |a: i64, b: i64, bus: i64| {
        a == want_a.len() as i64 && b == want_b.len() as i64 && bus == total as i64
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut kills = 0;
    loop {
        let (a, b, bus) = (
            status(&env.db, "a").await.delivered,
            status(&env.db, "b").await.delivered,
            status(&env.db, "bus").await.delivered,
        );
        if done(a, b, bus) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at a={a} b={b} bus={bus} after {kills} kills"
        );
        let pause = Duration::from_millis(rand::rng().random_range(300..2_000));
        // The chaos schedule itself: the pause is the experiment's variable, not a wait for state.
        tokio::time::sleep(pause).await;
        if kills < 25 {
            let victim = rand::rng().random_range(0..processes.0.len());
            let signal = if rand::rng().random_bool(0.2) { "-TERM" } else { "-KILL" };
            eye_test_support::signal(Some(processes.0[victim].id()), signal);
            processes.0[victim].wait().expect("reaped");
            processes.0[victim] = spawn_delivery(&env);
            kills += 1;
        }
    }
    sending.await.expect("sender");
    assert!(kills >= 5, "only {kills} kills: the run was too short to test anything");
    for process in &mut processes.0 {
        eye_test_support::signal(Some(process.id()), "-TERM");
        let exit = process.wait().expect("reaped");
        assert!(exit.success(), "SIGTERM drains and exits 0: {exit:?}");
    }

    // Unordered webhook: each of Client_A's events at least once, nothing else, duplicates only
    // under an already-seen webhook-id.
    let seen_a = receiver.seen("a");
    assert_eq!(distinct_checking_duplicates(&seen_a), want_a);
    // Ordered webhook: the same, and in storage order: each new batch continues the sequence
    // where the last one ended; a repeated batch is the one before (never one further back).
    let seen_b = receiver.seen("b");
    assert_eq!(distinct_checking_duplicates(&seen_b), want_b);
    let mut last = 0;
    for batch in &seen_b {
        let sequences: Vec<i64> =
            batch.events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
        assert!(sequences.windows(2).all(|w| w[1] == w[0] + 1), "consecutive within a batch");
        if sequences[0] == last + 1 {
            last = *sequences.last().unwrap();
        } else {
            assert!(
                *sequences.last().unwrap() <= last,
                "out of order: {} after {last}",
                sequences[0]
            );
        }
    }
    assert_eq!(last, want_b.len() as i64, "every sequence number delivered");
    // NATS: each event exactly once in the stream.
    let ids = nats_server::message_ids(&jetstream).await;
    assert_eq!(ids.len(), total, "the stream holds each event once");
    let unique: HashSet<String> = ids.into_iter().collect();
    assert_eq!(unique, sent.iter().map(|e| e.event_id.clone()).collect::<HashSet<_>>());
    let dupes_a = seen_a.iter().map(|b| b.events.len()).sum::<usize>() - want_a.len();
    eprintln!("{kills} kills; webhook a saw {dupes_a} redelivered events");
}
