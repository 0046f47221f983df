//! NATS JetStream subscriptions against real nats-server processes.

use std::{collections::HashSet, time::Duration};

use eye_admin::subscriptions::{Destination, Filter};

use crate::{Env, events_of, nats_server, status, subscribe};

const WAIT: Duration = Duration::from_secs(120);

async fn stream_messages(jetstream: &async_nats::jetstream::Context) -> u64 {
    let mut stream = jetstream.get_stream(eye_delivery::nats::STREAM).await.expect("stream");
    stream.info().await.map(|info| info.state.messages).unwrap_or(0)
}

#[tokio::test]
async fn each_event_is_published_once_on_its_subject_and_acked_after_jetstream() {
    let node = nats_server::single();
    let jetstream = nats_server::ready(&[node.url()], 1).await;
    let env = Env::start().await;
    subscribe(&env.db, "bus", Destination::Nats(node.url()), Filter::default(), None, false).await;
    let delivery = env.delivery().await;
    let sent = events_of("Client_A", 0, 2_000);
    env.send(sent.clone()).await;
    eye_test_support::wait_for(&env.db.pool, WAIT, "2000 delivered", || async {
        (status(&env.db, "bus").await.delivered == 2_000).then_some(())
    })
    .await;
    assert_eq!(stream_messages(&jetstream).await, 2_000);
    let ids: HashSet<String> = nats_server::message_ids(&jetstream).await.into_iter().collect();
    assert_eq!(ids, sent.iter().map(|e| e.event_id.clone()).collect::<HashSet<_>>());
    // Subject-safe tokens: "page interaction" -> page_interaction.
    let message = jetstream
        .get_stream(eye_delivery::nats::STREAM)
        .await
        .unwrap()
        .get_last_raw_message_by_subject("eye.shop.page_interaction.click")
        .await
        .expect("a message on eye.shop.page_interaction.click");
    let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(body["category"], "page interaction");
    delivery.stop().await;
}

#[tokio::test]
async fn a_three_node_cluster_losing_a_node_during_delivery_holds_each_event_once() {
    let mut nodes = nats_server::cluster();
    let urls: Vec<String> = nodes.iter().map(nats_server::Node::url).collect();
    let jetstream = nats_server::ready(&urls, 3).await;
    let env = Env::start().await;
    subscribe(&env.db, "bus", Destination::Nats(urls.join(",")), Filter::default(), None, false)
        .await;
    let delivery = env.delivery().await;
    let total = 20_000;
    let sent = events_of("Client_A", 0, total);
    let (first, rest) = sent.split_at(total / 4);
    env.send(first.to_vec()).await;
    // Mid-delivery: some events are in the stream, not all.
    eye_test_support::wait_for(&env.db.pool, WAIT, "delivery under way", || async {
        (status(&env.db, "bus").await.delivered > 0).then_some(())
    })
    .await;
    nodes[1].kill();
    env.send(rest.to_vec()).await;
    eye_test_support::wait_for(&env.db.pool, WAIT, "half delivered with a node down", || async {
        (status(&env.db, "bus").await.delivered >= total as i64 / 2).then_some(())
    })
    .await;
    nodes[1].restart();
    eye_test_support::wait_for(&env.db.pool, WAIT, "everything delivered", || async {
        (status(&env.db, "bus").await.delivered >= total as i64).then_some(())
    })
    .await;
    assert_eq!(stream_messages(&jetstream).await, total as u64);
    let ids = nats_server::message_ids(&jetstream).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), total);
    assert_eq!(unique.len(), total, "no event twice");
    assert_eq!(unique, sent.iter().map(|e| &e.event_id).collect::<HashSet<_>>());
    delivery.stop().await;
}
