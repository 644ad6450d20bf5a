//! The OpenAPI 3 document, generated from the handlers' annotations.

use super::{
    containers, events, groups, hosts, images, jobs, join_tokens, quotas, registry_credentials,
    tenants, usage, webhooks,
};
use crate::error::Problem;
use crate::model::*;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "skiff", description = "Serverless container instances on your own hosts. \
        Containers are billed per second of task run time; image pulls and queueing are free."),
    paths(containers::create, containers::list, containers::get, containers::delete, containers::stop,
        containers::start, containers::restart, containers::logs, containers::exec, containers::attach, containers::events, containers::wait,
        tenants::create, events::list, groups::create, groups::list, groups::get, groups::stop, groups::start, groups::restart, groups::delete, jobs::create, jobs::get, jobs::list, jobs::tasks, jobs::cancel, jobs::delete, webhooks::rotate_secret, quotas::get, quotas::set, webhooks::deliveries, webhooks::job_deliveries, hosts::list, hosts::drain, hosts::undrain, hosts::revoke,
        join_tokens::create, join_tokens::list, join_tokens::revoke, usage::tenant_report, usage::admin_report, usage::verify, usage::rates,
        usage::add_rate, usage::add_adjustment, registry_credentials::list, registry_credentials::put,
        registry_credentials::delete, images::prewarm, images::list),
    components(schemas(CreateContainer, PlacementRequest, RestartPolicyName, ContainerView, ExecRequest, ExecResult,
        hosts::HostView, hosts::HostNetworkView, hosts::HostList, Timings, PortView, ContainerList,
        EventView, EventList, CreateTenant, TenantCreated, Problem, usage::CreateAdjustment,
        events::EventItem, events::EventPage, crate::groups::CreateGroup, crate::groups::GroupMember, crate::groups::GroupView, crate::groups::MemberView, crate::groups::GroupList, jobs::CreateJob, jobs::JobView, jobs::JobList, jobs::TaskCountsView, crate::jobs::TaskOverride, webhooks::WebhookSecret, webhooks::DeliveryView, webhooks::DeliveryList, join_tokens::CreateJoinToken, join_tokens::JoinTokenView, join_tokens::JoinTokenList,
        registry_credentials::PutRegistryCredential, registry_credentials::RegistryCredentialView,
        registry_credentials::RegistryCredentialList, images::Prewarm, images::PrewarmResult,
        images::PrewarmHost, images::HostImages, images::HostImageList, images::HeldImageView)),
    modifiers(&BearerAuth, &CommonProblems, &UniqueOperationIds)
)]
pub struct ApiDoc;

struct BearerAuth;

/// The error answers of extractors and middleware (see [`super::problems`]).
struct CommonProblems;

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        super::problems::common(openapi);
    }
}

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Operation ids are the handlers' names, which repeat across modules
/// (`create`, `list`, `get`): a repeated one gets its path appended
/// (`create_v1_jobs`), so each names one operation, as OpenAPI requires.
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for operation in operations(openapi) {
            if let Some(id) = &operation.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let suffix: String = path
                .replace(['{', '}'], "")
                .split('/')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("_")
                .replace('-', "_");
            for operation in item_operations(item) {
                if let Some(id) = &mut operation.operation_id {
                    if seen.get(id.as_str()).copied().unwrap_or(0) > 1 {
                        *id = format!("{id}_{suffix}");
                    }
                }
            }
        }
    }
}

/// Every operation of a path item.
pub(super) fn item_operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// Every operation of the document.
fn operations(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    openapi.paths.paths.values_mut().flat_map(item_operations)
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::RefOr;

    #[test]
    fn every_operation_has_a_unique_id_and_the_common_problems() {
        let mut doc = ApiDoc::openapi();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for operation in item_operations(item) {
                let id = operation.operation_id.clone().unwrap_or_default();
                assert!(ids.insert(id.clone()), "operation id {id} repeats ({path})");
                let responses = &operation.responses.responses;
                for status in ["401", "429", "503"] {
                    assert!(
                        responses.contains_key(status),
                        "{id} ({path}) does not document {status}"
                    );
                }
                for (status, response) in responses {
                    if let (RefOr::T(response), true) = (response, status.starts_with('4')) {
                        assert!(
                            response
                                .content
                                .contains_key(super::super::problems::PROBLEM_JSON),
                            "{id} ({path}): {status} is not problem+json"
                        );
                    }
                }
            }
        }
        assert!(ids.len() > 30, "{ids:?}");
    }
}
