//! Where an export goes: a folder, or `s3://BUCKET/PREFIX` on any S3-compatible server.
//!
//! S3 takes the usual variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`
//! (default `us-east-1`), `AWS_SESSION_TOKEN`, and `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`) for a
//! server other than AWS (MinIO, Ceph, moto); an `http://` endpoint is allowed as such.

use std::sync::Arc;

use object_store::{
    ObjectStore, aws::AmazonS3Builder, local::LocalFileSystem, path::Path, prefix::PrefixStore,
};

use crate::ExportError;

/// A destination, rooted at its prefix.
#[derive(Debug, Clone)]
pub struct Destination {
    name: String,
    store: Arc<dyn ObjectStore>,
}

impl Destination {
    /// A folder (created if missing) or `s3://BUCKET[/PREFIX]`.
    pub fn parse(text: &str) -> Result<Self, ExportError> {
        let store: Arc<dyn ObjectStore> = match text.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(ExportError::Invalid(format!("{text:?} names no bucket")));
                }
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    builder = builder.with_region("us-east-1");
                }
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                    builder = builder.with_endpoint(&endpoint);
                    if endpoint.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                }
                if std::env::var("AWS_ENDPOINT").is_ok_and(|e| e.starts_with("http://")) {
                    builder = builder.with_allow_http(true);
                }
                let s3 = builder.build()?;
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, Path::from(prefix)))
                }
            }
            None => {
                std::fs::create_dir_all(text).map_err(|error| {
                    ExportError::Invalid(format!("cannot create the folder {text:?}: {error}"))
                })?;
                Arc::new(LocalFileSystem::new_with_prefix(text)?)
            }
        };
        Ok(Self { name: canonical(text), store })
    }

    /// How `exports` records it.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) async fn exists(&self, location: &Path) -> Result<bool, ExportError> {
        match self.store.head(location).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

/// A folder's absolute path (so `./out` and `out` are one destination), or the S3 URL without a
/// trailing slash.
fn canonical(text: &str) -> String {
    if text.starts_with("s3://") {
        return text.trim_end_matches('/').to_owned();
    }
    std::fs::canonicalize(text).map_or_else(|_| text.to_owned(), |p| p.display().to_string())
}
