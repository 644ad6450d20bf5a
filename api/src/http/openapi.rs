//! The OpenAPI 3 document, generated from the handlers' annotations.

use super::{containers, events, hosts, jobs, join_tokens, quotas, tenants, usage, webhooks};
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
        containers::start, containers::restart, containers::logs, containers::events, containers::wait,
        tenants::create, events::list, jobs::create, jobs::get, jobs::list, jobs::tasks, jobs::cancel, jobs::delete, webhooks::rotate_secret, quotas::get, quotas::set, webhooks::deliveries, webhooks::job_deliveries, hosts::list, hosts::drain, hosts::undrain, hosts::revoke,
        join_tokens::create, join_tokens::list, join_tokens::revoke, usage::tenant_report, usage::admin_report, usage::verify, usage::rates,
        usage::add_rate, usage::add_adjustment),
    components(schemas(CreateContainer, PlacementRequest, RestartPolicyName, ContainerView,
        hosts::HostView, hosts::HostList, Timings, ContainerList,
        EventView, EventList, CreateTenant, TenantCreated, Problem, usage::CreateAdjustment,
        events::EventItem, events::EventPage, jobs::CreateJob, jobs::JobView, jobs::JobList, jobs::TaskCountsView, crate::jobs::TaskOverride, webhooks::WebhookSecret, webhooks::DeliveryView, webhooks::DeliveryList, join_tokens::CreateJoinToken, join_tokens::JoinTokenView, join_tokens::JoinTokenList)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
