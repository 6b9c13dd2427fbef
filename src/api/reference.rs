//! The API reference, built once from the handlers' annotations: `/openapi.json` (OpenAPI 3.1)
//! and `/docs`, the same document rendered as one HTML page with no scripts and no CDN, so it
//! works offline. A `Modify` pass makes the document complete for client generators and
//! schema-driven fuzzers: unique operation ids, every path parameter declared, every response
//! described, and the error envelope on every error response.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{
    ContentBuilder, Object, ObjectBuilder, PathItem, Ref, Required, ResponseBuilder, Type,
};

/// The document, built on first use.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(super::ApiDoc::openapi)
}

pub struct Complete;

impl utoipa::Modify for Complete {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert("Error".into(), error_schema().into());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for item in openapi.paths.paths.values() {
            for operation in operations(item) {
                if let Some(id) = &operation.operation_id {
                    *seen.entry(id.clone()).or_default() += 1;
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names = path_parameters(path);
            for (method, operation) in operations_mut(item) {
                complete_operation(operation, &names, method, &seen);
            }
        }
    }
}

fn error_schema() -> Object {
    let text = || ObjectBuilder::new().schema_type(Type::String).build();
    let inner = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("code", text())
        .property("message", text())
        .property("field", text())
        .property("rule", text())
        .required("code")
        .required("message")
        .build();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("error", inner)
        .required("error")
        .description(Some("The one error envelope of every error response."))
        .build()
}

fn path_parameters(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

fn operations(item: &PathItem) -> impl Iterator<Item = &Operation> {
    [&item.get, &item.post, &item.put, &item.delete, &item.patch]
        .into_iter()
        .flatten()
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("post", &mut item.post),
        ("put", &mut item.put),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
}

fn complete_operation(
    operation: &mut Operation,
    path_names: &[String],
    method: &str,
    seen: &HashMap<String, usize>,
) {
    // Handler names repeat across resources (`create`, `list`): prefix those with the tag.
    if let Some(id) = operation.operation_id.clone()
        && seen.get(&id).copied().unwrap_or(0) > 1
    {
        let tag = operation
            .tags
            .as_ref()
            .and_then(|t| t.first().cloned())
            .unwrap_or_default();
        operation.operation_id = Some(format!("{}_{id}", tag.replace('-', "_")));
    }
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for name in path_names {
        let declared = parameters
            .iter()
            .any(|p| p.name == *name && p.parameter_in == ParameterIn::Path);
        if !declared {
            parameters.push(path_parameter(name));
        }
    }
    let public = operation
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
    let responses = &mut operation.responses.responses;
    if !public {
        responses.entry("401".into()).or_insert_with(|| {
            ResponseBuilder::new()
                .description("unauthorized: missing, unknown, revoked or expired token")
                .into()
        });
        if method != "get" {
            responses.entry("429".into()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description("rate_limited: too many writes by this credential or token; see Retry-After")
                    .into()
            });
        }
    }
    responses.entry("500".into()).or_insert_with(|| {
        ResponseBuilder::new()
            .description("internal_error: nothing internal is disclosed")
            .into()
    });
    for (status, response) in responses.iter_mut() {
        let utoipa::openapi::RefOr::T(response) = response else {
            continue;
        };
        if response.description.trim().is_empty() {
            response.description = reason(status).into();
        }
        if status.starts_with('4') || status.starts_with('5') {
            response
                .content
                .entry("application/json".into())
                .or_insert_with(|| {
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build()
                });
        }
    }
}

fn path_parameter(name: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(format!("the resource's `{name}`")))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
        .build()
}

fn reason(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "created",
        "202" => "accepted",
        "204" => "no content",
        "400" => "invalid_request: `error.field` names the offending input",
        "403" => "forbidden: this role may not do this",
        "404" => "not_found",
        "409" => "conflict: the resource is not in a state that allows this",
        "413" => "payload_too_large: the body exceeds 1 MiB",
        "503" => "unavailable: the database or the node does not answer",
        _ => "see the error envelope",
    }
}

/// `GET /docs`: the reference as one self-contained HTML page.
pub async fn docs() -> Response {
    let mut response = Html(render(document())).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(doc: &utoipa::openapi::OpenApi) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Bursar API reference</title><style>body{font:15px/1.5 system-ui,sans-serif;\
         max-width:60rem;margin:auto;padding:1rem}code{background:#f3f3f3;padding:0 .2em}\
         .op{border-top:1px solid #ddd;padding:.5rem 0}.m{font-weight:bold;text-transform:uppercase}\
         </style></head><body><h1>Bursar API reference</h1>",
    );
    let description = doc.info.description.as_deref().unwrap_or_default();
    for paragraph in description.split("\n\n") {
        let _ = write!(html, "<p>{}</p>", escape(paragraph));
    }
    let mut by_tag: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, item) in &doc.paths.paths {
        for (method, operation) in [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("delete", &item.delete),
            ("patch", &item.patch),
        ] {
            let Some(operation) = operation else { continue };
            let tag = operation
                .tags
                .as_ref()
                .and_then(|t| t.first().cloned())
                .unwrap_or_default();
            by_tag
                .entry(tag)
                .or_default()
                .push(render_operation(method, path, operation));
        }
    }
    for (tag, operations) in by_tag {
        let _ = write!(html, "<h2>{}</h2>", escape(&tag));
        for operation in operations {
            html.push_str(&operation);
        }
    }
    html.push_str(
        "<p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p></body></html>",
    );
    html
}

fn render_operation(method: &str, path: &str, operation: &Operation) -> String {
    let mut html = format!(
        "<div class=\"op\" id=\"{}\"><span class=\"m\">{method}</span> <code>{}</code>",
        escape(operation.operation_id.as_deref().unwrap_or_default()),
        escape(path)
    );
    if let Some(text) = operation
        .description
        .as_ref()
        .or(operation.summary.as_ref())
    {
        let _ = write!(html, "<p>{}</p>", escape(text));
    }
    if let Some(parameters) = &operation.parameters {
        html.push_str("<ul>");
        for parameter in parameters {
            let _ = write!(
                html,
                "<li><code>{}</code> ({}) {}</li>",
                escape(&parameter.name),
                match parameter.parameter_in {
                    ParameterIn::Path => "path",
                    ParameterIn::Query => "query",
                    ParameterIn::Header => "header",
                    ParameterIn::Cookie => "cookie",
                },
                escape(parameter.description.as_deref().unwrap_or_default())
            );
        }
        html.push_str("</ul>");
    }
    html.push_str("<ul>");
    for (status, response) in &operation.responses.responses {
        let description = match response {
            utoipa::openapi::RefOr::T(r) => r.description.clone(),
            utoipa::openapi::RefOr::Ref(r) => r.ref_location.clone(),
        };
        let _ = write!(html, "<li>{} {}</li>", escape(status), escape(&description));
    }
    html.push_str("</ul></div>");
    html
}
