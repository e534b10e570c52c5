//! The API's OpenAPI 3.1 document, served at `GET /api/engine/v2/openapi.json`.
//!
//! It is generated from the code: every handler carries a `#[utoipa::path]` annotation
//! (method, path, parameters, body, responses) and is mounted with `utoipa_axum`'s
//! `routes!`, which registers the route and its description together, so a route cannot
//! exist without being documented. [`document`] then adds what the access table knows:
//! each operation's security (none for a public route, else a bearer token from the
//! authorization server or an `X-API-Key`), the role it needs in its description, and the
//! API's one error shape ([`ErrorBody`]) as the response for every status an operation
//! does not describe itself. A test checks that the document and the access table name
//! exactly the same routes.

use std::sync::LazyLock;

use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, AuthorizationCode, Flow, OAuth2, Scopes, SecurityRequirement,
    SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::BASE;
use super::access::{Need, rule_for};
use super::error::ErrorBody;

/// The document, built once.
static DOCUMENT: LazyLock<Vec<u8>> = LazyLock::new(|| {
    serde_json::to_vec(&document()).unwrap_or_else(|error| {
        tracing::error!("the OpenAPI document does not serialize: {error}");
        b"{}".to_vec()
    })
});

/// This document, as JSON.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "api",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
pub(super) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_slice(),
    )
        .into_response()
}

/// The whole document: the routes' annotations, security and errors added.
pub fn document() -> OpenApi {
    let mut document = super::routes().into_openapi();
    document.info = InfoBuilder::new()
        .title("Warden engine API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "PlaceOS engine-v2 compatible API of a Warden host. Lists are JSON arrays \
             with the total in X-Total-Count. Errors are {\"error\": {\"code\", \
             \"message\", \"field\"}}; codes are stable. Sign in through the \
             authorization server (/auth/oauth/authorize, code + PKCE) for a bearer \
             token, or send an API key as X-API-Key.",
        ))
        .build();
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "oauth2",
        SecurityScheme::OAuth2(OAuth2::new([Flow::AuthorizationCode(
            AuthorizationCode::new(
                "/auth/oauth/authorize",
                "/auth/oauth/token",
                Scopes::from_iter([
                    ("public", "everything the user's roles allow"),
                    ("read", "reading only"),
                ]),
            ),
        )])),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
    );
    let mut schemas = Vec::new();
    ErrorBody::schemas(&mut schemas);
    components
        .schemas
        .insert(ErrorBody::name().to_string(), ErrorBody::schema());
    components.schemas.extend(schemas);

    let error = ResponseBuilder::new()
        .description("An error: the status says which kind, the code which error")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(
                    ErrorBody::name(),
                ))))
                .build(),
        )
        .build();
    for (path, item) in document.paths.paths.iter_mut() {
        let relative = path.strip_prefix(BASE).unwrap_or(path);
        for (method, operation) in operations(item) {
            let Some(rule) = rule_for(&method, relative) else {
                // No access rule: the route refuses everyone (see `access`), and the
                // test comparing the document with the table fails.
                continue;
            };
            operation.security = Some(match rule.need {
                Need::Public => Vec::new(),
                _ => vec![
                    SecurityRequirement::new("oauth2", ["public"]),
                    SecurityRequirement::new::<_, [&str; 0], &str>("api_key", []),
                ],
            });
            let needs = match rule.need {
                Need::Public => "Needs no credential.",
                Need::User => "Needs any signed-in user.",
                Need::Support => "Needs the support role or higher.",
                Need::Admin => "Needs the admin role.",
                Need::Reviewer => "Needs the reviewer or admin role.",
            };
            operation.description = Some(match operation.description.take() {
                Some(text) if !text.is_empty() => format!("{text}\n\n{needs}"),
                _ => needs.to_string(),
            });
            // Unique, and stable as long as the route is: `patch_zones_id`.
            let words: Vec<&str> = relative
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|word| !word.is_empty())
                .collect();
            operation.operation_id = Some(format!(
                "{}_{}",
                method.as_str().to_ascii_lowercase(),
                words.join("_")
            ));
            operation
                .responses
                .responses
                .entry("default".to_string())
                .or_insert_with(|| RefOr::T(error.clone()));
        }
    }
    document
}

/// The operations of a path, with their methods.
fn operations(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    [
        (Method::GET, item.get.as_mut()),
        (Method::PUT, item.put.as_mut()),
        (Method::POST, item.post.as_mut()),
        (Method::DELETE, item.delete.as_mut()),
        (Method::PATCH, item.patch.as_mut()),
        (Method::HEAD, item.head.as_mut()),
        (Method::OPTIONS, item.options.as_mut()),
        (Method::TRACE, item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|operation| (method, operation)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access::RULES;

    /// The document names every route of the access table and nothing else.
    #[test]
    fn the_document_and_the_access_table_name_the_same_routes() {
        let mut document = document();
        let mut documented = Vec::new();
        for (path, item) in document.paths.paths.iter_mut() {
            let relative = path.strip_prefix(BASE).unwrap_or(path).to_string();
            for (method, operation) in operations(item) {
                assert!(
                    operation.responses.responses.contains_key("default"),
                    "{method} {path} has no error response"
                );
                documented.push((method.to_string(), relative.clone()));
            }
        }
        let mut ruled: Vec<(String, String)> = RULES
            .iter()
            .map(|rule| (rule.method.to_string(), rule.path.to_string()))
            .collect();
        documented.sort();
        ruled.sort();
        assert_eq!(documented, ruled);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_credentials() {
        let json = serde_json::to_value(document()).unwrap_or_default();
        assert_eq!(json["openapi"], "3.1.0");
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(schemes["api_key"]["name"], "X-API-Key");
        assert_eq!(
            schemes["oauth2"]["flows"]["authorizationCode"]["tokenUrl"],
            "/auth/oauth/token"
        );
        // A public route asks for nothing; the others for a token or a key.
        let openapi = &json["paths"]["/api/engine/v2/openapi.json"]["get"];
        assert_eq!(openapi["security"], serde_json::json!([]));
        let zones = &json["paths"]["/api/engine/v2/zones"]["post"];
        assert_eq!(zones["security"][1], serde_json::json!({"api_key": []}));
        assert!(
            zones["description"]
                .as_str()
                .unwrap_or_default()
                .ends_with("Needs the admin role.")
        );
    }
}
