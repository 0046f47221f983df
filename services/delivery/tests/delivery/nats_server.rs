//! Real nats-server processes with JetStream: one node, or a cluster of three on loopback.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use eye_test_support::free_port;

/// One nats-server process.
pub(crate) struct Node {
    pub(crate) port: u16,
    args: Vec<String>,
    child: Option<Child>,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

impl Node {
    fn spawn(args: Vec<String>) -> Child {
        Command::new(binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (Debian package `nats-server`; or set NATS_SERVER)")
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same ports and storage.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = Some(Self::spawn(self.args.clone()));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn store_dir(name: &str) -> TempDir {
    let dir =
        std::env::temp_dir().join(format!("eye-nats-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("nats store dir");
    TempDir(dir)
}

/// A JetStream node on loopback with a store of its own, plus `extra` arguments.
fn node(name: &str, extra: Vec<String>) -> Node {
    let port = free_port();
    let dir = store_dir(name);
    let mut args: Vec<String> = vec![
        "-js".into(),
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-sd".into(),
        dir.0.display().to_string(),
    ];
    args.extend(extra);
    Node { port, child: Some(Node::spawn(args.clone())), args, _dir: dir }
}

/// One JetStream node.
pub(crate) fn single() -> Node {
    node("single", Vec::new())
}

/// Three JetStream nodes clustered on loopback.
pub(crate) fn cluster() -> Vec<Node> {
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cluster_ports
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    (0..3)
        .map(|i| {
            node(
                &format!("n{i}"),
                vec![
                    "--server_name".into(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    "eye".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", cluster_ports[i]),
                    "--routes".into(),
                    routes.clone(),
                ],
            )
        })
        .collect()
}

/// Connects to `urls` and waits (at most 60 s) until JetStream answers with stream `EYE` in place
/// (created with `replicas`, as `eye subscriptions create --create-stream` does).
pub(crate) async fn ready(urls: &[String], replicas: usize) -> async_nats::jetstream::Context {
    let nats = eye_delivery::nats::Nats::connect(&urls.join(","), Duration::from_secs(5))
        .await
        .expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match nats.create_stream(replicas).await {
            Ok(()) => break,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "JetStream not ready: {error}");
                // Polling a server that is starting: nothing to wait on but time.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let servers: Vec<async_nats::ServerAddr> =
        urls.iter().map(|u| u.parse().expect("url")).collect();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .expect("connect");
    async_nats::jetstream::new(client)
}

/// Reads every message of stream `EYE` and returns their `Nats-Msg-Id`s.
pub(crate) async fn message_ids(jetstream: &async_nats::jetstream::Context) -> Vec<String> {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    let mut stream = jetstream.get_stream(eye_delivery::nats::STREAM).await.expect("stream");
    let total = stream.info().await.expect("info").state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut ids = Vec::with_capacity(total);
    let mut messages = consumer.messages().await.expect("messages");
    while ids.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("a message within 30 s")
            .expect("the stream goes on")
            .expect("a message");
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).expect("Nats-Msg-Id");
        ids.push(id.as_str().to_owned());
    }
    ids
}
