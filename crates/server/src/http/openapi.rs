//! `GET /client/v4/openapi.json`: the document of what this server implements, built
//! from [`OPERATIONS`], the same table the tests check the router and the shared
//! Cloudflare spec against.

use crate::model::Need;
use axum::Json;
use serde_json::{Value, json};

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
    },
    Operation {
        method: "patch",
        path: "/zones/{zone_id}/ssl/verification/{certificate_pack_id}",
        operation_id: "ssl-verification-edit-ssl-certificate-pack-validation-method",
        summary: "Edit SSL Certificate Pack Validation Method",
        need: Some(Need::WriteSsl),
        tag: "SSL Verification",
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}/ssl/certificate_packs",
        operation_id: "certificate-packs-list-certificate-packs",
        summary: "List Certificate Packs",
        need: Some(Need::ReadSsl),
        tag: "Certificate Packs",
    },
    Operation {
        method: "post",
        path: "/zones/{zone_id}/ssl/certificate_packs/order",
        operation_id: "certificate-packs-order-advanced-certificate-manager-certificate-pack",
        summary: "Order Advanced Certificate Manager Certificate Pack",
        need: Some(Need::WriteSsl),
        tag: "Certificate Packs",
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}/ssl/certificate_packs/quota",
        operation_id: "certificate-packs-get-certificate-pack-quotas",
        summary: "Get Certificate Pack Quotas",
        need: Some(Need::ReadSsl),
        tag: "Certificate Packs",
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        operation_id: "certificate-packs-get-certificate-pack",
        summary: "Get Certificate Pack",
        need: Some(Need::ReadSsl),
        tag: "Certificate Packs",
    },
    Operation {
        method: "patch",
        path: "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        operation_id: "certificate-packs-restart-validation-for-advanced-certificate-manager-certificate-pack",
        summary: "Restart Validation or Update Advanced Certificate Manager Certificate Pack",
        need: Some(Need::WriteSsl),
        tag: "Certificate Packs",
    },
    Operation {
        method: "delete",
        path: "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        operation_id: "certificate-packs-delete-advanced-certificate-manager-certificate-pack",
        summary: "Delete Advanced Certificate Manager Certificate Pack",
        need: Some(Need::WriteSsl),
        tag: "Certificate Packs",
    },
    Operation {
        method: "post",
        path: "/zones",
        operation_id: "zones-post",
        summary: "Create Zone",
        need: Some(Need::WriteZone),
        tag: "Zone",
    },
    Operation {
        method: "get",
        path: "/zones",
        operation_id: "zones-get",
        summary: "List Zones",
        need: Some(Need::ReadZone),
        tag: "Zone",
    },
    Operation {
        method: "get",
        path: "/zones/{zone_id}",
        operation_id: "zones-0-get",
        summary: "Zone Details",
        need: Some(Need::ReadZone),
        tag: "Zone",
    },
    Operation {
        method: "delete",
        path: "/zones/{zone_id}",
        operation_id: "zones-0-delete",
        summary: "Delete Zone",
        need: Some(Need::WriteZone),
        tag: "Zone",
    },
    Operation {
        method: "get",
        path: "/user/tokens/verify",
        operation_id: "user-api-tokens-verify-token",
        summary: "Verify Token",
        need: None,
        tag: "User API Tokens",
    },
    Operation {
        method: "get",
        path: "/openapi.json",
        operation_id: "zonecert-openapi",
        summary: "This document",
        need: None,
        tag: "zonecert",
    },
];

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = if name == "zone_id" {
                json!({"type": "string", "maxLength": 32, "pattern": "^[0-9a-fA-F]{32}$"})
            } else {
                json!({"type": "string", "format": "uuid"})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect()
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for op in OPERATIONS {
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        let mut operation = json!({
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters(op.path),
            "responses": {
                "200": {"description": "Success, in the envelope {success, errors, messages, result}."},
                "4XX": {"description": "Failure, in the envelope with errors[] and a null result."}
            }
        });
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
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(op.method.to_owned(), operation);
        }
    }
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
            }
        },
        "paths": paths,
    })
}

/// `GET /client/v4/openapi.json`
pub(super) async fn serve() -> Json<Value> {
    Json(document())
}
