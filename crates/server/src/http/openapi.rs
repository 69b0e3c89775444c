//! `GET /client/v4/openapi.json`: the document of what this server implements, built
//! from [`OPERATIONS`], the same table the tests check the router and Cloudflare's spec
//! (vendored in the repository's `spec/`) against. Request and response schemas are
//! generated from the wire types of `zonecert-api` (its `schema` feature), so the
//! document changes with them.

use crate::model::Need;
use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};
use std::sync::LazyLock;
use zonecert_api as api;

/// Writes the schema of a type into a generator and returns a reference to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One operation the server implements.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// Path under `/client/v4`, with `{param}` segments.
    pub path: &'static str,
    /// Cloudflare's operationId (zonecert's own for the endpoints outside the spec).
    pub operation_id: &'static str,
    /// One line for people.
    pub summary: &'static str,
    /// What the caller needs.
    pub need: Option<Need>,
    /// The tag it is listed under.
    pub tag: &'static str,
    /// The query parameters the handler reads.
    pub query: &'static [QueryParam],
    /// The JSON body the handler reads, if any.
    pub body: Option<Body>,
    /// The schema of the 200 answer.
    pub response: SchemaFn,
}

/// A JSON request body.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    /// Whether an empty body is refused.
    pub required: bool,
    /// Its schema.
    pub schema: SchemaFn,
}

impl Body {
    const fn required(schema: SchemaFn) -> Self {
        Body {
            required: true,
            schema,
        }
    }

    const fn optional(schema: SchemaFn) -> Self {
        Body {
            required: false,
            schema,
        }
    }
}

/// A query parameter. The bounds are those the handlers check (`QueryParams::number`
/// and the explicit value checks in `ssl.rs` and `zones.rs`).
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its schema, as JSON text.
    pub schema: &'static str,
}

const PAGE: QueryParam = QueryParam {
    name: "page",
    description: "Page number of paginated results, from 1.",
    schema: r#"{"type": "integer", "minimum": 1, "default": 1}"#,
};

const PER_PAGE: QueryParam = QueryParam {
    name: "per_page",
    description: "Number of items per page.",
    schema: r#"{"type": "integer", "minimum": 5, "maximum": 50, "default": 20}"#,
};

const STATUS: QueryParam = QueryParam {
    name: "status",
    description: "`all` includes certificate packs of every status, not only active ones.",
    schema: r#"{"type": "string", "enum": ["all"]}"#,
};

const DEPLOY: QueryParam = QueryParam {
    name: "deploy",
    description: "The deployment environment. Accepted and checked; zonecert has one environment, \
so it does not filter.",
    schema: r#"{"type": "string", "enum": ["staging", "production"]}"#,
};

const RETRY: QueryParam = QueryParam {
    name: "retry",
    description: "Recheck the zone's pending hosts now and answer once the checks ran \
(bounded wait).",
    schema: r#"{"type": "boolean", "enum": [true]}"#,
};

const ZONE_NAME: QueryParam = QueryParam {
    name: "name",
    description: "Only the zone with this name (case-insensitive).",
    schema: r#"{"type": "string"}"#,
};

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What `DELETE /zones/{zone_id}` answers with (the handler's own `Deleted`).
#[derive(JsonSchema)]
#[allow(dead_code)] // Only its schema is used.
struct DeletedZone {
    /// The deleted zone's id.
    id: String,
}

/// `GET /openapi.json` answers with this document itself, not in an envelope.
fn openapi_document(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "An OpenAPI 3.0.3 document (this one).",
        "required": ["openapi", "info", "paths"],
    })
}

/// Every operation, in the order of the document.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/zones/{zone_id}/ssl/verification",
        operation_id: "ssl-verification-ssl-verification-details",
        summary: "SSL Verification Details",
        need: Some(Need::ReadVerification),
        tag: "SSL Verification",
        query: &[RETRY],
        body: None,
        response: schema_of::<api::Envelope<Vec<api::Verification>>>,
    },
    Operation {
        method: "patch",
        path: "/zones/{zone_id}/ssl/verification/{certificate_pack_id}",
        operation_id: "ssl-verification-edit-ssl-certificate-pack-validation-method",
        summary: "Edit SSL Certificate Pack Validation Method",
        need: Some(Need::WriteSsl),
        tag: "SSL Verification",
        query: &[],
        body: Some(Body::required(schema_of::<api::EditVerification>)),
        response: schema_of::<api::Envelope<api::EditVerificationResult>>,
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}/ssl/certificate_packs",
        operation_id: "certificate-packs-list-certificate-packs",
        summary: "List Certificate Packs",
        need: Some(Need::ReadSsl),
        tag: "Certificate Packs",
        query: &[PAGE, PER_PAGE, STATUS, DEPLOY],
        body: None,
        response: schema_of::<api::Envelope<Vec<api::CertificatePack>>>,
    },
    Operation {
        method: "post",
        path: "/zones/{zone_id}/ssl/certificate_packs/order",
        operation_id: "certificate-packs-order-advanced-certificate-manager-certificate-pack",
        summary: "Order Advanced Certificate Manager Certificate Pack",
        need: Some(Need::WriteSsl),
        tag: "Certificate Packs",
        query: &[],
        body: Some(Body::required(schema_of::<api::OrderCertificatePack>)),
        response: schema_of::<api::Envelope<api::CertificatePack>>,
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}/ssl/certificate_packs/quota",
        operation_id: "certificate-packs-get-certificate-pack-quotas",
        summary: "Get Certificate Pack Quotas",
        need: Some(Need::ReadSsl),
        tag: "Certificate Packs",
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::CertificatePackQuota>>,
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        operation_id: "certificate-packs-get-certificate-pack",
        summary: "Get Certificate Pack",
        need: Some(Need::ReadSsl),
        tag: "Certificate Packs",
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::CertificatePack>>,
    },
    Operation {
        method: "patch",
        path: "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        operation_id: "certificate-packs-restart-validation-for-advanced-certificate-manager-certificate-pack",
        summary: "Restart Validation or Update Advanced Certificate Manager Certificate Pack",
        need: Some(Need::WriteSsl),
        tag: "Certificate Packs",
        query: &[],
        body: Some(Body::optional(schema_of::<api::EditCertificatePack>)),
        response: schema_of::<api::Envelope<api::CertificatePack>>,
    },
    Operation {
        method: "delete",
        path: "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        operation_id: "certificate-packs-delete-advanced-certificate-manager-certificate-pack",
        summary: "Delete Advanced Certificate Manager Certificate Pack",
        need: Some(Need::WriteSsl),
        tag: "Certificate Packs",
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::DeletedCertificatePack>>,
    },
    Operation {
        method: "post",
        path: "/zones",
        operation_id: "zones-post",
        summary: "Create Zone",
        need: Some(Need::WriteZone),
        tag: "Zone",
        query: &[],
        body: Some(Body::required(schema_of::<api::CreateZone>)),
        response: schema_of::<api::Envelope<api::Zone>>,
    },
    Operation {
        method: "get",
        path: "/zones",
        operation_id: "zones-get",
        summary: "List Zones",
        need: Some(Need::ReadZone),
        tag: "Zone",
        query: &[ZONE_NAME, PAGE, PER_PAGE],
        body: None,
        response: schema_of::<api::Envelope<Vec<api::Zone>>>,
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}",
        operation_id: "zones-0-get",
        summary: "Zone Details",
        need: Some(Need::ReadZone),
        tag: "Zone",
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::Zone>>,
    },
    Operation {
        method: "delete",
        path: "/zones/{zone_id}",
        operation_id: "zones-0-delete",
        summary: "Delete Zone",
        need: Some(Need::WriteZone),
        tag: "Zone",
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<DeletedZone>>,
    },
    Operation {
        method: "get",
        path: "/user/tokens/verify",
        operation_id: "user-api-tokens-verify-token",
        summary: "Verify Token",
        need: None,
        tag: "User API Tokens",
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::TokenStatus>>,
    },
    Operation {
        method: "get",
        path: "/openapi.json",
        operation_id: "zonecert-openapi",
        summary: "This document",
        need: None,
        tag: "zonecert",
        query: &[],
        body: None,
        response: openapi_document,
    },
];

/// The tag of the test controls' operations.
pub const CONTROLS_TAG: &str = "zonecert test controls";

/// The test controls (`/_zonecert/v1/...`, paths below relative to it): offered only by
/// a server started with `--dev` or `--test-controls` (404 otherwise), to the
/// "zonecert Test Controls" group.
pub const CONTROL_OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/reset",
        operation_id: "zonecert-controls-reset",
        summary: "Return the database to the documentation's seed state (same dev token)",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::ResetResult>>,
    },
    Operation {
        method: "get",
        path: "/clock",
        operation_id: "zonecert-controls-clock",
        summary: "The server's clock and how far it travelled",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::ClockState>>,
    },
    Operation {
        method: "post",
        path: "/clock/advance",
        operation_id: "zonecert-controls-clock-advance",
        summary: "Move the clock forward; due work runs at once",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: Some(Body::required(schema_of::<api::ClockAdvance>)),
        response: schema_of::<api::Envelope<api::ClockState>>,
    },
    Operation {
        method: "post",
        path: "/clock/set",
        operation_id: "zonecert-controls-clock-set",
        summary: "Set the clock to a later time; due work runs at once",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: Some(Body::required(schema_of::<api::ClockSet>)),
        response: schema_of::<api::Envelope<api::ClockState>>,
    },
    Operation {
        method: "post",
        path: "/clock/reset",
        operation_id: "zonecert-controls-clock-reset",
        summary: "Back to real time",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::ClockState>>,
    },
    Operation {
        method: "get",
        path: "/auto_validation",
        operation_id: "zonecert-controls-auto-validation",
        summary: "Which zones' DCV checks pass by themselves",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::AutoValidation>>,
    },
    Operation {
        method: "put",
        path: "/zones/{zone_id}/auto_validation",
        operation_id: "zonecert-controls-zone-auto-validation",
        summary: "Turn a zone's auto-validation on or off",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: Some(Body::required(schema_of::<api::ZoneAutoValidation>)),
        response: schema_of::<api::Envelope<api::ZoneAutoValidation>>,
    },
    Operation {
        method: "get",
        path: "/faults",
        operation_id: "zonecert-controls-faults-list",
        summary: "The injected faults",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<Vec<api::Fault>>>,
    },
    Operation {
        method: "post",
        path: "/faults",
        operation_id: "zonecert-controls-faults-add",
        summary: "Inject a fault (DCV failure, CAA or CA refusal, deploy hook failure)",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: Some(Body::required(schema_of::<api::NewFault>)),
        response: schema_of::<api::Envelope<api::Fault>>,
    },
    Operation {
        method: "delete",
        path: "/faults",
        operation_id: "zonecert-controls-faults-clear",
        summary: "Remove every injected fault",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::FaultsCleared>>,
    },
    Operation {
        method: "delete",
        path: "/faults/{fault_id}",
        operation_id: "zonecert-controls-faults-delete",
        summary: "Remove one injected fault",
        need: Some(Need::TestControls),
        tag: CONTROLS_TAG,
        query: &[],
        body: None,
        response: schema_of::<api::Envelope<api::FaultsCleared>>,
    },
];

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = if name == "zone_id" {
                json!({"type": "string", "maxLength": 32, "pattern": "^[0-9a-fA-F]{32}$"})
            } else if name == "fault_id" {
                json!({"type": "string", "pattern": "^[0-9]+$"})
            } else {
                json!({"type": "string", "format": "uuid"})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect()
}

fn query_parameter(param: &QueryParam) -> Value {
    // The schemas are literals of this file; a typo is caught by the tests, which
    // check every parameter has an object schema.
    let schema = serde_json::from_str::<Value>(param.schema).unwrap_or(Value::Null);
    json!({
        "name": param.name,
        "in": "query",
        "required": false,
        "description": param.description,
        "schema": schema,
    })
}

/// Drops `null` from the schema of every property that is not required.
///
/// The document describes what zonecert sends, and the wire types skip a `None`
/// field rather than write `null` (every optional field has `skip_serializing_if`),
/// so an optional property is absent or has a value, never `null`. Required
/// properties keep their nullability (`result` is `null` in a failed envelope).
#[derive(Debug, Clone)]
struct OmitNullFromOptional;

impl Transform for OmitNullFromOptional {
    fn transform(&mut self, schema: &mut Schema) {
        transform_subschemas(self, schema);
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let Some(Value::Object(properties)) = schema.get_mut("properties") else {
            return;
        };
        for (name, property) in properties.iter_mut() {
            if !required.contains(name) {
                without_null(property);
            }
        }
    }
}

/// A schema that only allows `null`: `{"type": "null"}`, or after the OpenAPI
/// transforms `{"nullable": true, "enum": [null]}`.
fn only_null(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null") || v.get("enum") == Some(&json!([null]))
}

/// The schema without `null`: `{"type": ["string", "null"]}` as `{"type": "string"}`,
/// `nullable` dropped, and `{"anyOf": [S, <null>]}` as `S` (a `$ref` with the
/// field's description beside it goes into `allOf`, as OpenAPI 3.0 wants).
fn without_null(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("nullable");
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            obj.insert("type".into(), only);
        }
    }
    let Some(Value::Array(branches)) = obj.get_mut("anyOf") else {
        return;
    };
    if !branches.iter().any(only_null) {
        return;
    }
    branches.retain(|b| !only_null(b));
    if branches.len() != 1 {
        return;
    }
    let only = branches.remove(0);
    obj.remove("anyOf");
    match only {
        Value::Object(branch) if branch.contains_key("$ref") => {
            obj.insert("allOf".into(), json!([branch]));
        }
        Value::Object(branch) => {
            for (k, v) in branch {
                obj.entry(k).or_insert(v);
            }
        }
        _ => {}
    }
}

/// The keys `wire.rs` adds to each verification item beyond the api type's fields
/// (see `check_details` there): why a host is pending and when it is looked at next.
fn add_check_details(definitions: &mut Map<String, Value>) {
    let Some(Value::Object(properties)) = definitions
        .get_mut("Verification")
        .and_then(|v| v.get_mut("properties"))
    else {
        return;
    };
    properties.insert(
        "last_checked_on".into(),
        json!({"type": "string", "format": "date-time",
               "description": "zonecert: when the host's record was last checked."}),
    );
    properties.insert(
        "next_check_on".into(),
        json!({"type": "string", "format": "date-time",
               "description": "zonecert: when the host's record is checked next (while pending, or while an active pack's renewal check fails)."}),
    );
    properties.insert(
        "validated_automatically".into(),
        json!({"type": "boolean",
               "description": "zonecert test controls: the host passed by auto-validation, without a lookup."}),
    );
    properties.insert(
        "verification_note".into(),
        json!({"type": "string",
               "description": "zonecert: a note on a passed check (auto-validation)."}),
    );
    properties.insert(
        "verification_error".into(),
        json!({"type": "string",
               "description": "zonecert: why the last check did not pass."}),
    );
}

/// The failure envelope every error answers with: the one `ApiError` serializes
/// (`Envelope<()>`), with what a failure always has: `success` false and at least
/// one error. `name` is where the generator put its schema.
fn error_envelope(definitions: &mut Map<String, Value>, name: Option<&str>) -> Value {
    let Some(mut schema) = name.and_then(|n| definitions.remove(n)) else {
        return json!({"type": "object"});
    };
    schema["description"] =
        json!("A failed call: `success` is false, `errors` says why, `result` is null.");
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        // The serde defaults (`false`, `[]`) are for decoding; in a failure they would
        // contradict the constraints below.
        properties["success"] = json!({"type": "boolean", "enum": [false]});
        properties["errors"]["minItems"] = json!(1);
        properties["errors"]["description"] = json!("Why the call failed.");
        if let Some(Value::Object(errors)) = properties.get_mut("errors") {
            errors.remove("default");
        }
    }
    schema
}

/// The name of the definition a `$ref` schema points at.
fn definition_name(reference: &Schema) -> Option<String> {
    reference
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .map(str::to_owned)
}

const ERROR_REF: &str = "#/components/schemas/ErrorEnvelope";

fn build() -> Value {
    let mut settings = SchemaSettings::openapi3().for_serialize();
    // Before the OpenAPI transforms, which turn `null` types into `nullable`.
    settings
        .transforms
        .insert(0, Box::new(OmitNullFromOptional));
    let mut generator = settings.into_generator();
    let error_name = definition_name(&generator.subschema_for::<api::Envelope<()>>());

    let mut paths = Map::new();
    let mut success_envelopes = Vec::new();
    let controls = CONTROL_OPERATIONS.iter().map(|op| (op, true));
    for (op, is_control) in OPERATIONS.iter().map(|op| (op, false)).chain(controls) {
        let mut parameters = path_parameters(op.path);
        parameters.extend(op.query.iter().map(query_parameter));
        let response = (op.response)(&mut generator);
        success_envelopes.extend(definition_name(&response));
        let mut operation = json!({
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "Success.",
                    "content": {"application/json": {"schema": response}},
                },
                "4XX": {
                    "description": "Refused: bad credentials or input, no permission, unknown object, wrong state, rate limited.",
                    "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
                },
                "5XX": {
                    "description": "The server failed.",
                    "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
                },
            }
        });
        if let Some(body) = op.body {
            let schema = (body.schema)(&mut generator);
            operation["requestBody"] = json!({
                "required": body.required,
                "content": {"application/json": {"schema": schema}},
            });
        }
        match op.need {
            Some(need) => {
                operation["security"] =
                    json!([{"api_token": []}, {"api_email": [], "api_key": []}]);
                operation["x-api-token-group"] =
                    json!(need.groups().iter().map(|g| g.name()).collect::<Vec<_>>());
            }
            None if op.operation_id == "user-api-tokens-verify-token" => {
                operation["security"] = json!([{"api_token": []}]);
            }
            None => operation["security"] = json!([]),
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            if is_control {
                // Outside Cloudflare's namespace: the path item names its own server.
                obj.insert(
                    "servers".into(),
                    json!([{"url": super::CONTROLS_BASE,
                            "description": "zonecert's test controls: only with --dev or --test-controls"}]),
                );
            }
            obj.insert(op.method.to_owned(), operation);
        }
    }
    let mut schemas = generator.take_definitions(true);
    add_check_details(&mut schemas);
    // These envelopes are only ever 200 answers (failures use ErrorEnvelope): they
    // always succeed and always carry a result.
    for name in &success_envelopes {
        if let Some(properties) = schemas.get_mut(name).and_then(|s| s.get_mut("properties")) {
            properties["success"] = json!({"type": "boolean", "enum": [true]});
            without_null(&mut properties["result"]);
        }
    }
    let error = error_envelope(&mut schemas, error_name.as_deref());
    schemas.insert("ErrorEnvelope".into(), error);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "zonecert: Cloudflare SSL Verification and Certificate Packs",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "servers": [{"url": "/client/v4"}],
        "components": {
            "securitySchemes": {
                "api_token": {"type": "http", "scheme": "bearer"},
                "api_email": {"type": "apiKey", "in": "header", "name": "X-Auth-Email"},
                "api_key": {"type": "apiKey", "in": "header", "name": "X-Auth-Key"},
            },
            "schemas": schemas,
        },
        "paths": paths,
    })
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

/// The document.
pub fn document() -> Value {
    DOCUMENT.clone()
}

/// `GET /client/v4/openapi.json`
pub(super) async fn serve() -> Json<Value> {
    Json(document())
}
