//! The services' Postgres connections over TLS: a local server with a certificate of its own CA,
//! reached through `eye_service::database::pool` (what every service connects with) with
//! `sslmode=verify-full`; a client trusting another CA is refused.

use std::{os::unix::fs::MetadataExt, path::Path, time::Duration};

use eye_test_support::workspace_root;
use local_postgres::{LocalPostgres, Options};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sqlx::Connection;

/// A CA: its certificate (PEM) and an issuer to sign with.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// Writes `text` to `path`, owned like `owner_of` (the data directory: the server's user).
fn write_owned(path: &Path, text: &str, owner_of: &Path) {
    std::fs::write(path, text).unwrap();
    let meta = std::fs::metadata(owner_of).unwrap();
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

struct Stopped(LocalPostgres);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

#[tokio::test]
async fn services_connect_with_verify_full_and_refuse_a_server_of_another_ca() {
    let root = workspace_root();
    let options = Options {
        base_dir: root.join("target").join("eye-tls-pg"),
        fallback_key: format!("{}#tls", root.display()),
        durable: false,
    };
    let pg = Stopped(
        tokio::task::spawn_blocking(move || LocalPostgres::ensure(&options))
            .await
            .unwrap()
            .unwrap(),
    );
    let (ca_pem, issuer) = ca("eye test CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let data = pg.0.data_dir().to_path_buf();
    write_owned(&data.join("server.crt"), &server.pem(), &data);
    write_owned(&data.join("server.key"), &server_key.serialize_pem(), &data);
    let mut admin = sqlx::PgConnection::connect(pg.0.url()).await.expect("connect");
    for sql in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(sql).execute(&mut admin).await.unwrap();
    }

    let dir = std::env::temp_dir().join(format!("eye-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("ca.pem");
    std::fs::write(&good, &ca_pem).unwrap();
    let wrong = dir.join("other-ca.pem");
    std::fs::write(&wrong, ca("another CA").0).unwrap();
    let url = |mode: &str, ca: &Path| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode={mode}&sslrootcert={}",
            pg.0.port(),
            ca.display()
        )
    };
    let settings = |url: String| {
        let mut settings = eye_service::Settings::default();
        settings.database.url = Some(url.into());
        settings.database.acquire_timeout_ms = 5_000;
        settings.database
    };

    // The reload applies asynchronously: the first TLS handshakes may still meet the old config.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ssl = loop {
        let pool = eye_service::database::pool(&settings(url("verify-full", &good))).unwrap();
        match sqlx::query_scalar::<_, bool>(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        {
            Ok(ssl) => break ssl,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "no TLS connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(ssl, "the connection is encrypted");
    for mode in ["require", "verify-ca"] {
        let pool = eye_service::database::pool(&settings(url(mode, &good))).unwrap();
        sqlx::query("SELECT 1").execute(&pool).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
    let refused = eye_service::database::pool(&settings(url("verify-full", &wrong))).unwrap();
    let error = sqlx::query("SELECT 1").execute(&refused).await.unwrap_err();
    assert!(
        matches!(error, sqlx::Error::Tls(_))
            || error.to_string().to_lowercase().contains("certificate"),
        "refused for its certificate: {error:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
