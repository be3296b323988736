//! The OpenAPI 3 document of the API: its `paths` from the route table,
//! everything else (info, components: schemas, parameters) from
//! `openapi.json` beside this file.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

use crate::api::routes::{routes, Body, Route};
use crate::api::ApiError;

/// The document without its paths.
const COMPONENTS: &str = include_str!("openapi.json");

/// The whole document.
pub fn document() -> Result<Value, serde_json::Error> {
    let mut document: Value = serde_json::from_str(COMPONENTS)?;
    let mut paths = Map::new();
    for route in routes() {
        let operations = paths.entry(route.path).or_insert_with(|| json!({}));
        operations[route.verb.name()] = operation(route);
    }
    document["paths"] = Value::Object(paths);
    Ok(document)
}

fn operation(route: &Route) -> Value {
    let doc = &route.doc;
    let schema = |name: &str| json!({ "schema": { "$ref": format!("#/components/schemas/{name}") } });
    let content: Map<String, Value> =
        doc.media.iter().map(|(media, name)| (media.to_string(), schema(name))).collect();
    let mut responses = Map::new();
    responses.insert("200".into(), json!({ "description": doc.answer, "content": content }));
    for status in route.error_statuses() {
        let reason =
            StatusCode::from_u16(status).ok().and_then(|code| code.canonical_reason()).unwrap_or("Error");
        responses.insert(
            status.to_string(),
            json!({ "description": reason, "content": { "application/json": schema("Error") } }),
        );
    }
    let mut operation = json!({
        "summary": doc.summary,
        "x-scope": route.scope,
        "responses": responses,
    });
    if !doc.description.is_empty() {
        operation["description"] = json!(doc.description);
    }
    if !doc.parameters.is_empty() {
        let parameters: Vec<Value> = doc
            .parameters
            .iter()
            .map(|name| json!({ "$ref": format!("#/components/parameters/{name}") }))
            .collect();
        operation["parameters"] = json!(parameters);
    }
    match doc.body {
        Body::None => {}
        Body::Json { schema: name, required } => {
            operation["requestBody"] =
                json!({ "required": required, "content": { "application/json": schema(name) } });
        }
        Body::Attachment => {
            // An empty file is kept like any other.
            operation["requestBody"] =
                json!({ "required": false, "content": { "application/octet-stream": schema("Attachment") } });
        }
    }
    operation
}

static DOCUMENT: OnceLock<Result<String, serde_json::Error>> = OnceLock::new();

/// `GET /openapi.json`.
pub async fn serve() -> Result<impl IntoResponse, ApiError> {
    let text = DOCUMENT.get_or_init(|| document().map(|document| document.to_string()));
    let text = text.as_ref().map_err(ApiError::internal)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], text.as_str()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route of the table is in the document as the table says, and
    /// nothing else is.
    #[test]
    fn the_openapi_document_names_exactly_the_routes_of_the_table() {
        let document = document().unwrap();
        let mut documented = BTreeSet::new();
        for (path, methods) in document["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                documented.insert((path.clone(), method.clone()));
            }
        }
        let implemented: BTreeSet<_> =
            routes().map(|route| (route.path.to_string(), route.verb.name().to_string())).collect();
        assert_eq!(implemented.len(), 55, "{implemented:?}");
        assert_eq!(implemented.len(), routes().count(), "one row per method and path");
        assert_eq!(implemented, documented);
        for route in routes() {
            let operation = &document["paths"][route.path][route.verb.name()];
            assert_eq!(operation["summary"], route.doc.summary);
            assert_eq!(operation["x-scope"], json!(route.scope));
            let statuses: BTreeSet<String> =
                operation["responses"].as_object().unwrap().keys().cloned().collect();
            let mut expected: BTreeSet<String> = route.error_statuses().iter().map(u16::to_string).collect();
            expected.insert("200".to_string());
            assert_eq!(statuses, expected, "{} {}", route.verb.name(), route.path);
        }
    }

    /// Every reference resolves, and each path parameter is declared.
    #[test]
    fn every_reference_resolves_and_path_parameters_are_declared() {
        let document = document().unwrap();
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"#/").skip(1) {
            let pointer = reference.split('"').next().unwrap();
            assert!(document.pointer(&format!("/{pointer}")).is_some(), "{pointer} does not resolve");
        }
        for route in routes() {
            let in_path: BTreeSet<&str> = route
                .path
                .split('/')
                .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let declared: BTreeSet<&str> = route
                .doc
                .parameters
                .iter()
                .map(|name| &document["components"]["parameters"][name])
                .filter(|parameter| parameter["in"] == "path")
                .map(|parameter| parameter["name"].as_str().unwrap())
                .collect();
            assert_eq!(in_path, declared, "{}", route.path);
        }
    }
}
