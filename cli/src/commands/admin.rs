//! The admin commands (they send `SKIFF_ADMIN_TOKEN` when it is set):
//! `skiff hosts` and `skiff tenants create NAME`.

use super::Ctx;
use crate::client::Fetched;
use crate::output::{self, age, print_value, Format};
use crate::Error;
use skiff_api::http::hosts::HostList;
use skiff_api::model::{CreateTenant, TenantCreated};

pub async fn hosts(ctx: &Ctx) -> Result<i32, Error> {
    let list: Fetched<HostList> = ctx.client.get("/v1/hosts", &[]).await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        print_value(ctx.format, &list.raw)?;
        return Ok(0);
    }
    let now = chrono::Utc::now();
    let rows = list
        .typed
        .items
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.state.clone(),
                format!("{}/{}", h.allocated_cpu, h.cpu),
                format!("{}/{}Mi", h.allocated_memory_mib, h.memory_mib),
                h.running.to_string(),
                age(h.last_heartbeat_at, now),
            ]
        })
        .collect();
    crate::outln!(
        "{}",
        output::rows(
            ctx.format,
            &["id", "state", "cpu", "memory", "running", "heartbeat"],
            rows
        )?
    );
    Ok(0)
}

pub async fn create_tenant(ctx: &Ctx, name: &str) -> Result<i32, Error> {
    let created: Fetched<TenantCreated> = ctx
        .client
        .post(
            "/v1/tenants",
            &CreateTenant {
                name: name.to_owned(),
            },
        )
        .await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        print_value(ctx.format, &created.raw)?;
        return Ok(0);
    }
    let t = created.typed;
    crate::outln!(
        "{}",
        output::rows(
            ctx.format,
            &["id", "name", "token"],
            vec![vec![t.id.to_string(), t.name, t.token]]
        )?
    );
    Ok(0)
}
