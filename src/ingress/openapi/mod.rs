//! `GET /admin/v1/openapi.json`: the admin API as an OpenAPI 3.1 document, built with utoipa
//! from the code: every route's operation (the tables in `paths_*`, one per group of
//! modules, next to the request types the handlers read, which derive `ToSchema`), each
//! operation's role from ROUTE_ROLES, the bearer scheme, the errors as one RFC 9457 problem
//! (what [`super::problem`] emits), `Idempotency-Key` on every POST, and the webhook event
//! catalog in the top-level `webhooks` section. A test holds the document and the router to
//! the same routes.

mod events;
mod op;
mod paths_business;
mod paths_commerce;
mod paths_core;
mod shape;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::openapi::path::{ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, RefOr,
    Required, ResponseBuilder,
};

use super::access::roles::route_role;
use op::Op;
use shape::shape;

/// Where the admin API is mounted.
pub const BASE: &str = "/admin/v1";

/// Every operation of the admin API, as the tables write them.
fn operations() -> Vec<Op> {
    let mut ops = paths_core::ops();
    ops.extend(paths_business::ops());
    ops.extend(paths_commerce::ops());
    ops
}

/// The error answers every operation may give, each an RFC 9457 problem.
const ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "The request cannot be read (a bad query, JSON or cursor).",
    ),
    ("401", "No key, or a wrong, expired or revoked one."),
    (
        "403",
        "The key's role is below the route's, or it reaches another account.",
    ),
    ("404", "No such resource (or account)."),
    (
        "409",
        "The resource's state does not allow it (or the same Idempotency-Key is still running).",
    ),
    ("413", "The body is too large."),
    (
        "422",
        "The body or a parameter does not fit (`errors` names each problem).",
    ),
    ("429", "Too many wrong keys from this client."),
    (
        "503",
        "The store or the account's sender cannot answer now: try again.",
    ),
];

fn role_line(method: &str, path: &str) -> (&'static str, String) {
    let line = route_role(method, path)
        .unwrap_or_else(|| panic!("{method} {path} has no line in ROUTE_ROLES"));
    let role = line.role.as_str();
    let scope = match line.scope {
        super::Scope::Account => {
            "A key scoped to one account reaches its own account only (the path's or the \
             `account` parameter's)."
        }
        super::Scope::Body(_) => {
            "A key scoped to one account must name its own account in the body's \
             `phone_number_id`."
        }
        super::Scope::Filtered => "A key scoped to one account sees what is its account's only.",
        super::Scope::Global => "Refused to a key scoped to one account.",
    };
    (
        role,
        format!("Needs the `{role}` role or a higher one (`x-parley-role`). {scope}"),
    )
}

fn build() -> Value {
    let mut components = ComponentsBuilder::new()
        .schema("Problem", shape(events::PROBLEM))
        .response(
            "Problem",
            ResponseBuilder::new()
                .description("An RFC 9457 problem: `detail` (also in `error`) says why.")
                .content(
                    super::problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(shape("#Problem")))
                        .build(),
                )
                .build(),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`pk_live_…`, POST /admin/v1/keys) or `admin.token` (the \
                         owner's).",
                    ))
                    .build(),
            ),
        );
    let mut paths = PathsBuilder::new();
    let mut seen = std::collections::BTreeSet::new();
    for o in operations() {
        assert!(
            seen.insert((o.method, o.path)),
            "{} {} is written twice",
            o.method,
            o.path
        );
        for (name, s) in &o.schemas {
            components = components.schema(name.clone(), s.clone());
        }
        let (role, about) = role_line(o.method, o.path);
        let mut operation = o.build(about);
        let responses = &mut operation.responses.responses;
        for (status, _) in ERRORS {
            match responses.get_mut(*status) {
                // An answer of its own at an error status (`POST /reload`'s 409 and 422): the
                // shared refusals (a reused Idempotency-Key) are problems beside it.
                Some(RefOr::T(own)) => {
                    own.content.insert(
                        super::problem::PROBLEM_JSON.to_string(),
                        ContentBuilder::new()
                            .schema(Some(shape("#Problem")))
                            .build(),
                    );
                }
                Some(RefOr::Ref(_)) => {}
                None => {
                    responses.insert(
                        status.to_string(),
                        RefOr::Ref(Ref::new("#/components/responses/Problem")),
                    );
                }
            }
        }
        responses.insert(
            "default".into(),
            RefOr::Ref(Ref::new("#/components/responses/Problem")),
        );
        if o.method == "POST" {
            operation.parameters.get_or_insert_with(Vec::new).push(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "1 to 255 visible ASCII characters: the same key and request \
                             again within a day get the first answer back \
                             (`Idempotent-Replayed: true`).",
                    ))
                    .schema(Some(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::Type::String)
                            .pattern(Some("^[!-~]{1,255}$")),
                    ))
                    .build(),
            );
        }
        operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>("bearer", [])]);
        operation.extensions = Some([("x-parley-role", json!(role))].into_iter().collect());
        paths = paths.path(
            format!("{BASE}{}", o.path),
            PathItem::new(o.http_method(), operation),
        );
    }
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Parley admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The business's API of a Parley daemon. Every route needs a bearer key \
                     whose role is at least the operation's `x-parley-role` (agent < manager < \
                     admin < owner); every error is an RFC 9457 problem \
                     (`application/problem+json`); every POST takes `Idempotency-Key`; lists \
                     page with `limit` and an opaque `cursor` (`next_cursor`). The events \
                     Parley posts to the business's endpoints are in `webhooks` (Standard \
                     Webhooks v1).",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build();
    let mut doc = serde_json::to_value(doc).expect("the document serializes");
    doc["webhooks"] = events::webhooks();
    doc
}

/// A decimal quantity as the handlers read it: a string ("0.25") or a whole number.
pub(super) fn decimal() -> RefOr<utoipa::openapi::Schema> {
    shape("str|int")
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `GET /admin/v1/openapi.json`.
pub(super) async fn serve() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document().to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_roles_and_problems() {
        let d = document();
        // `PARLEY_OPENAPI_OUT=file cargo test --lib openapi` writes it out.
        if let Ok(out) = std::env::var("PARLEY_OPENAPI_OUT") {
            std::fs::write(out, serde_json::to_string_pretty(d).unwrap()).unwrap();
        }
        assert!(d["openapi"].as_str().unwrap().starts_with("3.1"));
        let keys = &d["paths"]["/admin/v1/keys"];
        assert_eq!(keys["post"]["x-parley-role"], "admin");
        assert_eq!(
            keys["post"]["responses"]["403"]["$ref"],
            "#/components/responses/Problem"
        );
        assert!(keys["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
        assert_eq!(
            d["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            d["paths"]["/admin/v1/openapi.json"]["get"]["x-parley-role"],
            "agent"
        );
        for e in crate::hooks::EventType::ALL {
            assert!(d["webhooks"][e.as_str()]["post"].is_object(), "{e}");
        }
    }
}
