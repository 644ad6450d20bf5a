//! `skiff group create|ls|get|stop|start|restart|rm`: container groups
//! (members placed together, sharing localhost and a lifecycle). A group is
//! created from its JSON request (`POST /v1/groups`'s body) in a file or on
//! stdin; the others take its id, and `get` shows its members.

use super::containers::print_containers;
use super::Ctx;
use crate::client::Fetched;
use crate::output::{self, age, or_dash, print_one, print_value, Format};
use crate::Error;
use skiff_api::groups::{GroupList, GroupView};
use skiff_api::model::ContainerView;
use std::io::Read;
use std::path::PathBuf;

/// `skiff group create -f FILE` (`-`: stdin): posts the request as it is
/// (the server checks it and names a wrong field); prints the group's id.
pub async fn create(ctx: &Ctx, file: &str) -> Result<i32, Error> {
    let read_err = |source| Error::File {
        what: "reading the group request",
        path: PathBuf::from(file),
        source,
    };
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_err)?;
        text
    } else {
        std::fs::read_to_string(file).map_err(read_err)?
    };
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Flag {
        flag: "--file",
        value: file.to_owned(),
        reason: format!("not a JSON group request: {e}"),
    })?;
    let created: Fetched<GroupView> = ctx.client.post("/v1/groups", &body).await?;
    print_one(ctx.format, &created.typed.id.to_string(), &created.raw)?;
    Ok(0)
}

pub async fn ls(ctx: &Ctx) -> Result<i32, Error> {
    let groups = ctx.client.all_pages::<GroupList>("/v1/groups", &[]).await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        let raws = groups.into_iter().map(|g| g.raw).collect();
        print_value(ctx.format, &serde_json::Value::Array(raws))?;
        return Ok(0);
    }
    let groups: Vec<GroupView> = groups.into_iter().map(|g| g.typed).collect();
    print_groups(ctx.format, &groups)
}

/// The group's row, then its members as `ps` shows containers.
pub async fn get(ctx: &Ctx, group: &str) -> Result<i32, Error> {
    let view: Fetched<GroupView> = ctx.client.get(&format!("/v1/groups/{group}"), &[]).await?;
    if matches!(ctx.format, Format::Json | Format::Yaml) {
        print_value(ctx.format, &view.raw)?;
        return Ok(0);
    }
    print_groups(ctx.format, std::slice::from_ref(&view.typed))?;
    crate::outln!("");
    let members: Vec<Fetched<ContainerView>> = view
        .typed
        .containers
        .into_iter()
        .zip(
            view.raw["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        )
        .map(|(m, raw)| Fetched {
            typed: m.container,
            raw: raw["container"].clone(),
        })
        .collect();
    print_containers(ctx.format, &members)
}

/// `stop`, `start` or `restart` of every member; prints the group's id.
pub async fn action(ctx: &Ctx, action: &str, group: &str) -> Result<i32, Error> {
    let view: Fetched<GroupView> = ctx
        .client
        .post_empty(&format!("/v1/groups/{group}/{action}"))
        .await?;
    print_one(ctx.format, &view.typed.id.to_string(), &view.raw)?;
    Ok(0)
}

/// Deletes the group and its members (running ones are stopped first).
pub async fn rm(ctx: &Ctx, group: &str) -> Result<i32, Error> {
    let answer = ctx.client.delete(&format!("/v1/groups/{group}")).await?;
    print_one(
        ctx.format,
        group,
        &answer.unwrap_or_else(|| serde_json::json!({"id": group, "deleted": true})),
    )?;
    Ok(0)
}

fn print_groups(format: Format, groups: &[GroupView]) -> Result<i32, Error> {
    let now = chrono::Utc::now();
    let rows = groups
        .iter()
        .map(|g| {
            let names: Vec<&str> = g.containers.iter().map(|m| m.name.as_str()).collect();
            vec![
                g.id.to_string(),
                g.name.clone(),
                g.namespace.clone(),
                g.state.to_string(),
                names.join(","),
                or_dash(g.host_id.as_deref()),
                age(g.created_at, now),
            ]
        })
        .collect();
    crate::outln!(
        "{}",
        output::rows(
            format,
            &["id", "name", "namespace", "state", "members", "host", "age"],
            rows
        )?
    );
    Ok(0)
}
