//! Optional TLS: with a certificate configured, a TLS client is served and plaintext is refused.

use chrono::Utc;
use eye_e2e::{Pipeline, authorized, db_with_key, event};
use eye_proto::v1::{EventStatus, SendEventsRequest, ingest_service_client::IngestServiceClient};
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_are_served_and_plaintext_is_refused() {
    let (db, _, key) = db_with_key("shop", &["ingest"]).await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("eye-tls-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();

    let mut settings = Pipeline::settings(&db);
    settings.tls.cert_file = Some(cert_file);
    settings.tls.key_file = Some(key_file);
    let pipeline = Pipeline::start_with(settings, 0, 0, false).await;
    let request = || SendEventsRequest {
        events: vec![event(Uuid::new_v4(), "c", "n", json!({"a": 1}), Utc::now())],
        sent_at: None,
    };

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(certified.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", pipeline.ingest_port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = IngestServiceClient::new(channel)
        .send_events(authorized(request(), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results[0].status(), EventStatus::Accepted);

    let plaintext = match pipeline.client().await.send_events(authorized(request(), &key)).await {
        Ok(_) => panic!("a plaintext call was served by a TLS server"),
        Err(status) => status,
    };
    assert_ne!(plaintext.code(), tonic::Code::Ok);
    pipeline.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
