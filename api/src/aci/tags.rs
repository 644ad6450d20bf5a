//! `PATCH {group}`: ACI's update of a group's tags (the only field its
//! PATCH takes), through [`crate::groups::relabel`]: tags that fit skiff's
//! label rules become the group's (and its members') labels, the others go
//! to its [`Extras`] annotation.

use super::arm::ArmError;
use super::path::GroupRef;
use super::routes::{find, render, CallParts};
use super::translate::{Extras, EXTRAS_KEY};
use crate::error::ApiError;
use crate::http::json;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::BTreeMap;

#[derive(Debug, serde::Deserialize)]
struct PatchBody {
    tags: Option<BTreeMap<String, String>>,
}

/// Labels and annotations of a group whose tags become `tags`.
pub fn retag(
    annotations: &BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut extras: Extras = annotations
        .get(EXTRAS_KEY)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let fits = skiff_core::validate_labels("tags", &tags).is_ok()
        && !tags.keys().any(|k| k.starts_with("skiff."));
    let labels = if fits {
        extras.tags = None;
        tags
    } else {
        extras.tags = Some(tags);
        BTreeMap::new()
    };
    let mut annotations = annotations.clone();
    annotations.insert(
        EXTRAS_KEY.to_owned(),
        serde_json::to_string(&extras).unwrap_or_default(),
    );
    (labels, annotations)
}

pub async fn patch(call: &CallParts<'_>, g: &GroupRef, body: &[u8]) -> Result<Response, ArmError> {
    let patch: PatchBody = crate::http::parse_json(body)?;
    let group = find(call.state, call.tenant, g).await?;
    let Some(tags) = patch.tags else {
        return Ok(json(
            StatusCode::OK,
            render(call.state, &g.subscription, &group).await?,
        ));
    };
    let (labels, annotations) = retag(&group.annotations, tags);
    let group = crate::groups::relabel(call.state, call.tenant, group.id, labels, annotations)
        .await?
        .ok_or(ApiError::NotFound("container group"))?;
    Ok(json(
        StatusCode::OK,
        render(call.state, &g.subscription, &group).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_to_labels_or_aside() {
        let (labels, ann) = retag(&BTreeMap::new(), BTreeMap::from([("a".into(), "1".into())]));
        assert_eq!(labels["a"], "1");
        let extras: Extras = serde_json::from_str(&ann[EXTRAS_KEY]).unwrap();
        assert!(extras.tags.is_none());
        let (labels, ann) = retag(&ann, BTreeMap::from([("a b".into(), "1".into())]));
        assert!(labels.is_empty());
        let extras: Extras = serde_json::from_str(&ann[EXTRAS_KEY]).unwrap();
        assert_eq!(extras.tags.unwrap()["a b"], "1");
    }
}
