//! OpenAPI schemas and parameters that no Rust type of this crate derives
//! as they are on the wire: names read from `skiff-core`'s own lists (the
//! container states and reasons, so the document cannot fall behind
//! them), the patterns the handlers enforce by hand (label filters, the
//! `Idempotency-Key` header), and the query parameters the list routes read
//! as repeatable pairs.

use std::borrow::Cow;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Required, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A label filter: `key=value`, the key 1 to 63 letters, digits and `-_./`
/// (`skiff_core::is_label_key`), the value anything without NUL.
pub const LABEL_FILTER_PATTERN: &str = r"^[A-Za-z0-9._/-]{1,63}=[^\u0000]*$";

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!-~]{1,255}$";

/// A string schema.
pub fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A UUID.
pub fn uuid() -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

/// An integer from `min` to `max`.
pub fn integer(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
}

/// One of `names`.
fn one_of_names<'a>(names: impl IntoIterator<Item = &'a str>) -> ObjectBuilder {
    string().enum_values(Some(names))
}

/// A string without NUL (PostgreSQL's text cannot hold one).
pub const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";

/// A POSIX environment variable name.
pub const ENV_KEY_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

/// A label key (`skiff_core::is_label_key`).
pub const LABEL_KEY_PATTERN: &str = r"^[A-Za-z0-9._/-]{1,63}$";

/// `Type::Null` or `of`: a field that may be absent or null.
fn nullable(of: Type) -> utoipa::openapi::schema::SchemaType {
    utoipa::openapi::schema::SchemaType::from_iter([of, Type::Null])
}

/// A string map whose keys match `key_pattern` and whose values hold no
/// NUL (and are at most `max_value` long, when given); null allowed.
fn string_map(key_pattern: &str, max_value: Option<usize>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Object))
        .property_names(Some(string().pattern(Some(key_pattern)).build()))
        .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::RefOr(
            string()
                .pattern(Some(NO_NUL_PATTERN))
                .max_length(max_value)
                .into(),
        )))
}

/// `env` and `secure_env` of a request: POSIX names, values without NUL
/// (all of both together at most 64 KiB).
pub fn env_map() -> RefOr<Schema> {
    string_map(ENV_KEY_PATTERN, None)
        .description(Some(
            "Environment variables: POSIX names, values without NUL; `env` and \
             `secure_env` together at most 65536 bytes (keys, values, and two \
             bytes each), and no key in both.",
        ))
        .into()
}

/// A request's `labels` (and `placement.host_labels`): at most 64, keys
/// of 1 to 63 letters, digits and `-_./`, values of at most 256 bytes
/// without NUL.
pub fn labels_map() -> RefOr<Schema> {
    string_map(LABEL_KEY_PATTERN, Some(256))
        .max_properties(Some(skiff_core::MAX_LABELS))
        .description(Some(
            "At most 64 labels: keys of 1 to 63 letters, digits and `-_./`, \
             values of at most 256 bytes (UTF-8) without NUL.",
        ))
        .into()
}

/// A container group's labels: as [`labels_map`], two fewer (each member
/// also carries `skiff.group` and `skiff.group-member`).
pub fn group_labels_map() -> RefOr<Schema> {
    string_map(LABEL_KEY_PATTERN, Some(256))
        .max_properties(Some(crate::groups::MAX_GROUP_LABELS))
        .description(Some(
            "At most 62 labels (every container of the group also carries `skiff.group` and \
             `skiff.group-member`, which the request may not set): keys of 1 to 63 letters, \
             digits and `-_./`, values of at most 256 bytes (UTF-8) without NUL.",
        ))
        .into()
}

/// A container group's `annotations`: free-form strings without NUL, at
/// most 16, 4 KiB (UTF-8) in all.
pub fn annotations() -> RefOr<Schema> {
    string_map(NO_NUL_PATTERN, Some(crate::groups::MAX_ANNOTATION_BYTES))
        .max_properties(Some(crate::groups::MAX_ANNOTATIONS))
        .description(Some(
            "Free-form strings kept and returned unchanged: keys and values without NUL, \
             at most 16 entries and 4096 bytes (UTF-8) in all.",
        ))
        .into()
}

/// A request's `command`: arguments without NUL, at most 64 KiB in all.
pub fn command() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(nullable(Type::Array))
        .items(string().pattern(Some(NO_NUL_PATTERN)).build())
        .description(Some(
            "Replaces the image's entrypoint and command: arguments without NUL, \
             at most 65536 bytes in all.",
        ))
        .into()
}

/// An exec's argv: at least one argument, otherwise as [`command`].
pub fn exec_command() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(Type::Array)
        .items(string().pattern(Some(NO_NUL_PATTERN)).build())
        .min_items(Some(1))
        .description(Some(
            "The process's argv (the container's PATH applies): arguments without NUL, \
             at most 65536 bytes in all.",
        ))
        .into()
}

/// An image reference (`skiff_core::ImageRef::parse`).
pub fn image() -> RefOr<Schema> {
    string()
        .pattern(Some(skiff_core::image_pattern()))
        .description(Some(
            "Image reference, `[registry/]repository[:tag][@digest]` (the \
             distribution reference grammar; the repository name at most 255 \
             characters), e.g. `127.0.0.1:5000/skiff/busybox:latest`.",
        ))
        .into()
}

/// A container's state: `pending`, `scheduled`, ... (`ContainerState::ALL`).
pub struct ContainerStateName;

impl PartialSchema for ContainerStateName {
    fn schema() -> RefOr<Schema> {
        one_of_names(skiff_core::ContainerState::ALL.map(|s| s.as_str()))
            .description(Some("A container's state."))
            .into()
    }
}

impl ToSchema for ContainerStateName {
    fn name() -> Cow<'static, str> {
        "ContainerState".into()
    }
}

/// A container's network: `none` or `private` (`NetworkMode::ALL`).
pub struct NetworkModeName;

impl PartialSchema for NetworkModeName {
    fn schema() -> RefOr<Schema> {
        one_of_names(skiff_core::NetworkMode::ALL.map(|m| m.as_str()))
            .description(Some(
                "`private`: its own network namespace with an address on its host's \
                 bridge; `none`: loopback only.",
            ))
            .into()
    }
}

impl ToSchema for NetworkModeName {
    fn name() -> Cow<'static, str> {
        "NetworkMode".into()
    }
}

/// A published port's protocol: `tcp` or `udp` (`Protocol::ALL`).
pub struct ProtocolName;

impl PartialSchema for ProtocolName {
    fn schema() -> RefOr<Schema> {
        one_of_names(skiff_core::Protocol::ALL.map(|p| p.as_str()))
            .description(Some("A published port's protocol."))
            .into()
    }
}

impl ToSchema for ProtocolName {
    fn name() -> Cow<'static, str> {
        "Protocol".into()
    }
}

/// A request's `ports` (`skiff_core::PortRequest`): at most 16.
pub fn port_requests() -> RefOr<Schema> {
    let port = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "port",
            integer(1, 65535).description(Some("The container's port.")),
        )
        .required("port")
        .property(
            "protocol",
            one_of_names(skiff_core::Protocol::ALL.map(|p| p.as_str()))
                .description(Some("`tcp` (default) or `udp`.")),
        )
        .property(
            "host_port",
            ObjectBuilder::new()
                .schema_type(nullable(Type::Integer))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .maximum(Some(65535))
                .description(Some(
                    "The host port to publish it on: it must lie in its host's \
                     range, and the container waits while another holds it. \
                     Absent or null: the lowest free port of the range.",
                )),
        )
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ));
    ArrayBuilder::new()
        .schema_type(nullable(Type::Array))
        .items(port)
        .max_items(Some(skiff_core::MAX_PORTS))
        .description(Some(
            "Ports to publish on its host (`network: private` only; at most 16). \
             No two with the same (port, protocol), nor the same (host_port, protocol).",
        ))
        .into()
}

/// Why a container is in its state: `Completed`, `Error`, ...
/// (`Reason::ALL`).
pub struct ReasonName;

impl PartialSchema for ReasonName {
    fn schema() -> RefOr<Schema> {
        one_of_names(skiff_core::Reason::ALL.map(|r| r.as_str()))
            .description(Some(
                "Why a container (or a job) is in its state, machine-readable.",
            ))
            .into()
    }
}

impl ToSchema for ReasonName {
    fn name() -> Cow<'static, str> {
        "Reason".into()
    }
}

/// A position in the event log (`GET /v1/events`): `"<xid>-<id>"`.
pub struct EventCursor;

impl PartialSchema for EventCursor {
    fn schema() -> RefOr<Schema> {
        string()
            .pattern(Some(crate::store::events::CURSOR_PATTERN))
            .description(Some(
                "A position in the event log: the events after it follow. Opaque; \
                 take it from an item's `cursor` or a page's `next`.",
            ))
            .into()
    }
}

impl ToSchema for EventCursor {
    fn name() -> Cow<'static, str> {
        "EventCursor".into()
    }
}

/// A query parameter (form style).
pub fn query(
    name: &str,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
    required: bool,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A query parameter that may repeat (`label=a=1&label=b=2`), of `items`.
pub fn repeated_query(name: &str, description: &str, items: impl Into<RefOr<Schema>>) -> Parameter {
    let mut parameter = query(
        name,
        description,
        ArrayBuilder::new().items(items.into()).build(),
        false,
    );
    parameter.style = Some(ParameterStyle::Form);
    parameter.explode = Some(true);
    parameter
}

/// `label=key=value`, repeatable: every label must match.
pub fn label_filter() -> Parameter {
    repeated_query(
        "label",
        "Only those carrying this label, `key=value` (repeatable: all must match).",
        string().pattern(Some(LABEL_FILTER_PATTERN)).build(),
    )
}

/// A page's `limit`: 1 to 1000, default 100.
pub fn limit() -> Parameter {
    query(
        "limit",
        "Most items on the page (default 100).",
        integer(1, 1000).build(),
        false,
    )
}

/// The `Idempotency-Key` header of a request that may be retried.
pub struct IdempotencyKey;

impl utoipa::IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "The same key with the same request (per tenant, within \
                 `SKIFF_IDEMPOTENCY_KEEP_S`) returns the first response and does \
                 nothing again (`Idempotent-Replayed: true`); with a different \
                 request it is 422 `idempotency-key-reused`.",
            ))
            .schema(Some(
                string().pattern(Some(IDEMPOTENCY_KEY_PATTERN)).build(),
            ))
            .build()]
    }
}
