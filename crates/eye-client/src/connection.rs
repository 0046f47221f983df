//! One authenticated HTTP/2 channel: the endpoint, TLS, compression, timeouts and the API key,
//! shared by every client type of this crate.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tonic::{
    codec::CompressionEncoding,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid endpoint {endpoint:?} (expected e.g. http://127.0.0.1:50051): {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error(
        "the api key is empty or holds characters not allowed in gRPC metadata \
         (set it with --key or EYE_API_KEY)"
    )]
    InvalidKey,
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot read the CA certificate {path}: {source}")]
    Certificate { path: String, source: std::io::Error },
}

/// How to reach a server.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long establishing the connection may take.
    pub connect_timeout: Duration,
    /// Deadline of each call; `None`: no deadline of the client's own.
    pub timeout: Option<Duration>,
    /// A PEM file of the CA that signed the server's certificate, for `https://` endpoints
    /// whose CA is not among the system's roots.
    pub ca_certificate: Option<String>,
    /// Compress requests with gzip.
    pub gzip: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Some(Duration::from_secs(10)),
            ca_certificate: None,
            gzip: false,
        }
    }
}

/// An open (or lazily opening) channel plus the `authorization` value of every call. Cheap to
/// clone: clones share the connection.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) channel: Channel,
    authorization: MetadataValue<Ascii>,
    pub(crate) gzip: bool,
}

/// Never shows the key.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("gzip", &self.gzip).finish_non_exhaustive()
    }
}

impl Connection {
    /// Checks `key` and connects to `endpoint` now (an unreachable server is an error).
    pub(crate) async fn open(
        endpoint: &str,
        key: &SecretString,
        options: &ConnectOptions,
    ) -> Result<Self, ConnectError> {
        let (builder, authorization) = prepare(endpoint, key, options)?;
        let channel = builder
            .connect()
            .await
            .map_err(|source| ConnectError::Connect { endpoint: endpoint.to_owned(), source })?;
        Ok(Self { channel, authorization, gzip: options.gzip })
    }

    /// Checks `key` and `endpoint`; connects on first use and reconnects after failures, so a
    /// client built while the server is down starts working once it is up.
    pub(crate) fn lazy(
        endpoint: &str,
        key: &SecretString,
        options: &ConnectOptions,
    ) -> Result<Self, ConnectError> {
        let (builder, authorization) = prepare(endpoint, key, options)?;
        Ok(Self { channel: builder.connect_lazy(), authorization, gzip: options.gzip })
    }

    /// `message` as a request carrying the key.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.authorization.clone());
        request
    }

    /// The compression of requests, if any.
    pub(crate) fn compression(&self) -> Option<CompressionEncoding> {
        self.gzip.then_some(CompressionEncoding::Gzip)
    }
}

fn prepare(
    endpoint: &str,
    key: &SecretString,
    options: &ConnectOptions,
) -> Result<(Endpoint, MetadataValue<Ascii>), ConnectError> {
    let key = key.expose_secret().trim();
    if key.is_empty() {
        return Err(ConnectError::InvalidKey);
    }
    let mut authorization: MetadataValue<Ascii> =
        format!("Bearer {key}").parse().map_err(|_| ConnectError::InvalidKey)?;
    authorization.set_sensitive(true);
    let invalid =
        |reason: String| ConnectError::InvalidEndpoint { endpoint: endpoint.to_owned(), reason };
    let mut builder = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|error| invalid(error.to_string()))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    if let Some(timeout) = options.timeout {
        builder = builder.timeout(timeout);
    }
    if endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &options.ca_certificate {
            let pem = std::fs::read(path)
                .map_err(|source| ConnectError::Certificate { path: path.clone(), source })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        builder = builder.tls_config(tls).map_err(|error| invalid(error.to_string()))?;
    }
    Ok((builder, authorization))
}
