//! One operation of the document: what the table in each `paths_*` file writes, and its
//! OpenAPI form. The role, the security requirement, the error answers and the
//! `Idempotency-Key` header are added to every operation by [`super::document`], from
//! ROUTE_ROLES and the admin API's shared pieces, not written per route.

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{ContentBuilder, RefOr, Required, ResponseBuilder};
use utoipa::ToSchema;

use super::shape::shape;

/// What an answer carries.
pub(super) enum Answer {
    Json(String),
    /// JSON of this shape, or CSV when asked for.
    JsonOrCsv(String),
    Csv,
    Empty,
}

pub(super) struct Op {
    pub method: &'static str,
    /// Relative to `/admin/v1`, as the router (and ROUTE_ROLES) write it.
    pub path: &'static str,
    summary: &'static str,
    description: Option<&'static str>,
    query: Option<String>,
    int_path: &'static [&'static str],
    path_shapes: Vec<(&'static str, &'static str)>,
    body: Option<(&'static str, RefOr<Schema>, bool)>,
    pub schemas: Vec<(String, RefOr<Schema>)>,
    answers: Vec<(u16, &'static str, Answer)>,
}

pub(super) fn op(method: &'static str, path: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        summary,
        description: None,
        query: None,
        int_path: &[],
        path_shapes: Vec::new(),
        body: None,
        schemas: Vec::new(),
        answers: Vec::new(),
    }
}

impl Op {
    pub fn about(mut self, text: &'static str) -> Op {
        self.description = Some(text);
        self
    }

    /// The query parameters, as the members of an object shape (`{account?: str, limit?: int}`).
    pub fn query(mut self, members: impl Into<String>) -> Op {
        self.query = Some(members.into());
        self
    }

    /// Path parameters that are integers (the others are strings).
    pub fn int_path(mut self, names: &'static [&'static str]) -> Op {
        self.int_path = names;
        self
    }

    /// A path parameter of this shape (`str(pause|resume|cancel)`).
    pub fn path_shape(mut self, name: &'static str, text: &'static str) -> Op {
        self.path_shapes.push((name, text));
        self
    }

    /// A JSON body read as `T` (its schema a component of the document).
    pub fn body<T: ToSchema>(mut self) -> Op {
        let name = T::name();
        let mut deps = Vec::new();
        T::schemas(&mut deps);
        self.schemas.extend(deps);
        self.schemas.push((name.to_string(), T::schema()));
        let r = RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name));
        self.body = Some(("application/json", r, true));
        self
    }

    /// A JSON body that may also be left out (an empty body).
    pub fn optional_body<T: ToSchema>(mut self) -> Op {
        self = self.body::<T>();
        if let Some(b) = &mut self.body {
            b.2 = false;
        }
        self
    }

    /// A JSON body written as a shape (a type read outside the ingress, or by hand).
    pub fn body_shape(mut self, text: &'static str) -> Op {
        self.body = Some(("application/json", shape(text), true));
        self
    }

    pub fn csv_body(mut self) -> Op {
        self.body = Some(("text/csv", shape("str"), true));
        self
    }

    /// A JSON answer of this shape (see [`super::shape`]).
    pub fn ok(mut self, status: u16, about: &'static str, answer: impl Into<String>) -> Op {
        self.answers
            .push((status, about, Answer::Json(answer.into())));
        self
    }

    /// A JSON answer of this shape, or CSV (`format=csv`, `Accept: text/csv`).
    pub fn ok_or_csv(mut self, status: u16, about: &'static str, answer: impl Into<String>) -> Op {
        self.answers
            .push((status, about, Answer::JsonOrCsv(answer.into())));
        self
    }

    pub fn csv(mut self, status: u16, about: &'static str) -> Op {
        self.answers.push((status, about, Answer::Csv));
        self
    }

    pub fn empty(mut self, status: u16, about: &'static str) -> Op {
        self.answers.push((status, about, Answer::Empty));
        self
    }

    pub fn http_method(&self) -> HttpMethod {
        match self.method {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            "PUT" => HttpMethod::Put,
            "PATCH" => HttpMethod::Patch,
            "DELETE" => HttpMethod::Delete,
            m => panic!("{m} {}: not a method", self.path),
        }
    }

    /// The operation, without what every operation shares.
    pub fn build(&self, description: String) -> Operation {
        let id = format!(
            "{}{}",
            self.method.to_lowercase(),
            self.path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let s = s.trim_matches(|c| c == '{' || c == '}').replace('-', "_");
                    format!("_{s}")
                })
                .collect::<String>()
        );
        let mut b = OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(self.summary))
            .description(Some(match self.description {
                Some(d) => format!("{d}\n\n{description}"),
                None => description,
            }))
            .tag(self.path.split('/').nth(1).unwrap_or("admin"));
        for seg in self.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let t = match self.path_shapes.iter().find(|(n, _)| *n == name) {
                    Some((_, t)) => t,
                    None if self.int_path.contains(&name) => "int",
                    None => "str",
                };
                b = b.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(shape(t))),
                );
            }
        }
        if let Some(members) = &self.query {
            let RefOr::T(Schema::Object(o)) = shape(&format!("{{{members}}}")) else {
                unreachable!()
            };
            for (name, s) in o.properties {
                let required = if o.required.contains(&name) {
                    Required::True
                } else {
                    Required::False
                };
                b = b.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Query)
                        .required(required)
                        .schema(Some(s)),
                );
            }
        }
        if let Some((media, schema, required)) = &self.body {
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        *media,
                        ContentBuilder::new().schema(Some(schema.clone())).build(),
                    )
                    .required(Some(if *required {
                        Required::True
                    } else {
                        Required::False
                    }))
                    .build(),
            ));
        }
        for (status, about, answer) in &self.answers {
            let r = ResponseBuilder::new().description(*about);
            let r = match answer {
                Answer::Json(s) => r.content(
                    "application/json",
                    ContentBuilder::new().schema(Some(shape(s))).build(),
                ),
                Answer::JsonOrCsv(s) => r
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(shape(s))).build(),
                    )
                    .content(
                        "text/csv",
                        ContentBuilder::new().schema(Some(shape("str"))).build(),
                    ),
                Answer::Csv => r.content(
                    "text/csv",
                    ContentBuilder::new().schema(Some(shape("str"))).build(),
                ),
                Answer::Empty => r,
            };
            b = b.response(status.to_string(), r.build());
        }
        b.build()
    }
}

/// A page of `item`s: `{"items": [...], "next_cursor"}`.
pub(super) fn page(item: &str) -> String {
    format!("{{items: [{item}], next_cursor: str?}}")
}
