//! The gRPC adapter of the query core: `eye.v1.QueryService`. Each RPC authenticates the
//! `authorization` metadata for the `read` role, then calls [`Query`]; errors become statuses in
//! `crate::error`, the one place that mapping lives.

use std::sync::Arc;

use eye_proto::v1 as pb;
use eye_service::auth::{Authenticator, Principal, Role};
use tonic::{Request, Response, Status};

use crate::{core::Query, error::QueryError, queries::Readable};

/// `QueryService` over the shared core.
#[derive(Debug, Clone)]
pub struct GrpcQuery {
    core: Arc<Query>,
    auth: Authenticator,
}

impl GrpcQuery {
    pub fn new(core: Arc<Query>, auth: Authenticator) -> Self {
        Self { core, auth }
    }

    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, QueryError> {
        let authorization = eye_service::grpc::authorization(request.metadata());
        Ok(self.auth.authenticate(authorization, Role::Read).await?)
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for GrpcQuery {
    #[tracing::instrument(name = "ListEvents", skip_all)]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let readable = Readable::of(&self.authenticate(&request).await?);
        Ok(Response::new(self.core.list_events(&readable, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "GetSession", skip_all)]
    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let readable = Readable::of(&self.authenticate(&request).await?);
        Ok(Response::new(self.core.get_session(&readable, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "ListErrors", skip_all)]
    async fn list_errors(
        &self,
        request: Request<pb::ListErrorsRequest>,
    ) -> Result<Response<pb::ListErrorsResponse>, Status> {
        let readable = Readable::of(&self.authenticate(&request).await?);
        Ok(Response::new(self.core.list_errors(&readable, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "ReplayErrors", skip_all, fields(application))]
    async fn replay_errors(
        &self,
        request: Request<pb::ReplayErrorsRequest>,
    ) -> Result<Response<pb::ReplayErrorsResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        // Replay changes state: record who asked.
        tracing::Span::current().record("application", principal.application_id.to_string());
        let readable = Readable::of(&principal);
        Ok(Response::new(self.core.replay_errors(&readable, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "DeleteEvents", skip_all, fields(key))]
    async fn delete_events(
        &self,
        request: Request<pb::DeleteEventsRequest>,
    ) -> Result<Response<pb::DeleteEventsResponse>, Status> {
        let authorization = eye_service::grpc::authorization(request.metadata());
        let principal =
            self.auth.authenticate(authorization, Role::Admin).await.map_err(QueryError::from)?;
        tracing::Span::current().record("key", principal.key_id.to_string());
        Ok(Response::new(self.core.delete_events(&principal, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "GetStats", skip_all)]
    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let readable = Readable::of(&self.authenticate(&request).await?);
        Ok(Response::new(self.core.get_stats(&readable, request.into_inner()).await?))
    }
}
