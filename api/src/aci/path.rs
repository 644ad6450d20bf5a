//! The ARM paths the layer answers, parsed from the segments after `/aci`.
//! Literal segments (`subscriptions`, `resourceGroups`, `providers`,
//! `Microsoft.ContainerInstance`, ...) match in any case, as ARM's do;
//! names are kept as given.

/// A group's action (`POST {group}/start|stop|restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

/// What a container endpoint is (`{group}/containers/{c}/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    Logs,
    Exec,
    Attach,
}

/// One group: its subscription, resource group and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmPath {
    /// `GET /subscriptions`: the token's one subscription.
    Subscriptions,
    /// `GET /subscriptions/{sub}`.
    Subscription {
        subscription: String,
    },
    /// `.../providers/Microsoft.ContainerInstance/containerGroups`, in the
    /// subscription or (with `resource_group`) one resource group.
    List {
        subscription: String,
        resource_group: Option<String>,
    },
    Group(GroupRef),
    GroupAction(GroupRef, Action),
    Container {
        group: GroupRef,
        container: String,
        op: ContainerOp,
    },
    /// `.../providers/Microsoft.ContainerInstance/operations/{id}` (and
    /// ARM's `locations/{l}/operations/{id}` form).
    Operation {
        subscription: String,
        id: String,
    },
    /// `/execSessions/{id}`: the WebSocket an exec or attach hands out.
    ExecSession {
        id: String,
    },
}

fn is(segment: &str, literal: &str) -> bool {
    segment.eq_ignore_ascii_case(literal)
}

const PROVIDER: &str = "Microsoft.ContainerInstance";

/// Parses `rest` (the path after `/aci/`, percent-decoded). None: no such
/// route.
pub fn parse(rest: &str) -> Option<ArmPath> {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    match segs.as_slice() {
        [s] if is(s, "subscriptions") => Some(ArmPath::Subscriptions),
        [e, id] if is(e, "execSessions") => Some(ArmPath::ExecSession { id: id.to_string() }),
        [s, sub] if is(s, "subscriptions") => Some(ArmPath::Subscription {
            subscription: sub.to_string(),
        }),
        [s, sub, p, ns, cg]
            if is(s, "subscriptions")
                && is(p, "providers")
                && is(ns, PROVIDER)
                && is(cg, "containerGroups") =>
        {
            Some(ArmPath::List {
                subscription: sub.to_string(),
                resource_group: None,
            })
        }
        [s, sub, p, ns, o, id]
            if is(s, "subscriptions")
                && is(p, "providers")
                && is(ns, PROVIDER)
                && is(o, "operations") =>
        {
            Some(ArmPath::Operation {
                subscription: sub.to_string(),
                id: id.to_string(),
            })
        }
        [s, sub, p, ns, l, _, o, id]
            if is(s, "subscriptions")
                && is(p, "providers")
                && is(ns, PROVIDER)
                && is(l, "locations")
                && is(o, "operations") =>
        {
            Some(ArmPath::Operation {
                subscription: sub.to_string(),
                id: id.to_string(),
            })
        }
        [s, sub, r, rg, p, ns, cg, tail @ ..]
            if is(s, "subscriptions")
                && is(r, "resourceGroups")
                && is(p, "providers")
                && is(ns, PROVIDER)
                && is(cg, "containerGroups") =>
        {
            let group = |name: &str| GroupRef {
                subscription: sub.to_string(),
                resource_group: rg.to_string(),
                name: name.to_string(),
            };
            match tail {
                [] => Some(ArmPath::List {
                    subscription: sub.to_string(),
                    resource_group: Some(rg.to_string()),
                }),
                [name] => Some(ArmPath::Group(group(name))),
                [name, action] => {
                    let action = if is(action, "start") {
                        Action::Start
                    } else if is(action, "stop") {
                        Action::Stop
                    } else if is(action, "restart") {
                        Action::Restart
                    } else {
                        return None;
                    };
                    Some(ArmPath::GroupAction(group(name), action))
                }
                [name, c, container, op] if is(c, "containers") => {
                    let op = if is(op, "logs") {
                        ContainerOp::Logs
                    } else if is(op, "exec") {
                        ContainerOp::Exec
                    } else if is(op, "attach") {
                        ContainerOp::Attach
                    } else {
                        return None;
                    };
                    Some(ArmPath::Container {
                        group: group(name),
                        container: container.to_string(),
                        op,
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The ARM id of a group (also the path under the base URL).
pub fn group_id(subscription: &str, resource_group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{PROVIDER}/containerGroups/{name}"
    )
}

/// The path of the operation `id` under the base URL.
pub fn operation_path(subscription: &str, id: &str) -> String {
    format!("/subscriptions/{subscription}/providers/{PROVIDER}/operations/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str) -> GroupRef {
        GroupRef {
            subscription: "sub".into(),
            resource_group: "Rg".into(),
            name: name.into(),
        }
    }

    #[test]
    fn paths() {
        let base = "subscriptions/sub/resourceGroups/Rg/providers/Microsoft.ContainerInstance/containerGroups";
        #[rustfmt::skip]
        let rows: Vec<(String, Option<ArmPath>)> = vec![
            ("subscriptions".into(), Some(ArmPath::Subscriptions)),
            ("SUBSCRIPTIONS/sub".into(), Some(ArmPath::Subscription { subscription: "sub".into() })),
            ("subscriptions/sub/providers/microsoft.containerinstance/CONTAINERGROUPS".into(),
                Some(ArmPath::List { subscription: "sub".into(), resource_group: None })),
            (base.into(), Some(ArmPath::List { subscription: "sub".into(), resource_group: Some("Rg".into()) })),
            (format!("{base}/"), Some(ArmPath::List { subscription: "sub".into(), resource_group: Some("Rg".into()) })),
            (base.to_lowercase().replace("/rg/", "/Rg/"), Some(ArmPath::List { subscription: "sub".into(), resource_group: Some("Rg".into()) })),
            (format!("{base}/web"), Some(ArmPath::Group(g("web")))),
            (format!("{base}/web/Start"), Some(ArmPath::GroupAction(g("web"), Action::Start))),
            (format!("{base}/web/stop"), Some(ArmPath::GroupAction(g("web"), Action::Stop))),
            (format!("{base}/web/restart"), Some(ArmPath::GroupAction(g("web"), Action::Restart))),
            (format!("{base}/web/delete"), None),
            (format!("{base}/web/containers/app/logs"), Some(ArmPath::Container { group: g("web"), container: "app".into(), op: ContainerOp::Logs })),
            (format!("{base}/web/Containers/app/EXEC"), Some(ArmPath::Container { group: g("web"), container: "app".into(), op: ContainerOp::Exec })),
            (format!("{base}/web/containers/app/attach"), Some(ArmPath::Container { group: g("web"), container: "app".into(), op: ContainerOp::Attach })),
            (format!("{base}/web/containers/app"), None),
            (format!("{base}//web"), None),
            ("subscriptions/sub/providers/Microsoft.ContainerInstance/operations/x.create.1".into(),
                Some(ArmPath::Operation { subscription: "sub".into(), id: "x.create.1".into() })),
            ("subscriptions/sub/providers/Microsoft.ContainerInstance/locations/westus/operations/o".into(),
                Some(ArmPath::Operation { subscription: "sub".into(), id: "o".into() })),
            ("subscriptions/sub/providers/Microsoft.Compute/containerGroups".into(), None),
            ("execSessions/abc".into(), Some(ArmPath::ExecSession { id: "abc".into() })),
            ("".into(), None),
        ];
        for (path, want) in rows {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn ids() {
        assert_eq!(
            group_id("s", "rg", "web"),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/web"
        );
    }
}
