//! JSON schemas for the places where a Rust type is wider than what the API allows
//! (feature `schema`).
//!
//! The enums keep unknown values, so their Rust types accept any string; the API,
//! though, allows a narrower set per field (an order takes `txt`, `http` or `email`,
//! the verification view shows `http`, `cname` or `txt`). These functions give those
//! fields the set Cloudflare's spec documents.

use crate::enums::{PackType, ValidationMethod};
use schemars::{Schema, SchemaGenerator, json_schema};

/// What every string enum's description ends with.
const OPEN_ENUM: &str = "Values not listed here may appear as the API evolves: \
clients should keep them rather than fail (zonecert's Rust types decode them as `Other`).";

/// The schema of a [`string_enum!`](crate::enums) type: its doc comment, then the
/// known values.
pub(crate) fn string_enum(doc: &[&str], values: &[&str]) -> Schema {
    let mut description = doc
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned();
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(OPEN_ENUM);
    json_schema!({
        "type": "string",
        "description": description,
        "enum": values,
    })
}

fn methods(methods: &[ValidationMethod]) -> Schema {
    let values: Vec<&str> = methods.iter().map(ValidationMethod::as_str).collect();
    json_schema!({ "type": "string", "enum": values })
}

/// The methods an order accepts and a pack reports: `txt`, `http`, `email`.
pub(crate) fn pack_validation_method(_: &mut SchemaGenerator) -> Schema {
    methods(&[
        ValidationMethod::Txt,
        ValidationMethod::Http,
        ValidationMethod::Email,
    ])
}

/// The methods the verification view reports: `http`, `cname`, `txt`.
pub(crate) fn verification_validation_method(_: &mut SchemaGenerator) -> Schema {
    methods(&[
        ValidationMethod::Http,
        ValidationMethod::Cname,
        ValidationMethod::Txt,
    ])
}

/// The only pack type that can be ordered.
pub(crate) fn advanced_type(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": [PackType::Advanced.as_str()] })
}

/// The validity periods an order may ask for, in days.
pub(crate) fn validity_days(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "enum": [14, 30, 90, 365] })
}

/// `verification_info.record_name`: the name of the key that carries the record's
/// name. The spec's enum, which includes its placeholder `record_name`.
pub(crate) fn record_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["record_name", "http_url", "cname", "txt_name"],
    })
}

/// `verification_info.record_target`: the name of the key that carries the record's
/// value. The spec's enum, which includes its placeholder `record_value`.
pub(crate) fn record_target(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["record_value", "http_body", "cname_target", "txt_value"],
    })
}

/// An untagged enum's `anyOf` as `oneOf`: its forms exclude each other (an object
/// is never an array), and `oneOf` says so to code generators.
pub(crate) fn exclusive_forms(schema: &mut Schema) {
    if let Some(forms) = schema.remove("anyOf") {
        schema.insert("oneOf".to_owned(), forms);
    }
}

#[cfg(test)]
mod tests {
    use crate::{CertificateStatus, OrderCertificatePack, Verification};
    use schemars::generate::SchemaSettings;
    use serde_json::{Value, json};

    fn definitions_of<T: schemars::JsonSchema>() -> serde_json::Map<String, Value> {
        let mut generator = SchemaSettings::openapi3().for_serialize().into_generator();
        generator.subschema_for::<T>();
        generator.take_definitions(true)
    }

    #[test]
    fn a_string_enum_lists_its_known_values_and_says_others_may_come() {
        let defs = definitions_of::<CertificateStatus>();
        let schema = &defs["CertificateStatus"];
        assert_eq!(schema["type"], "string");
        let known: Vec<&str> = CertificateStatus::KNOWN
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(schema["enum"], json!(known));
        let description = schema["description"].as_str().unwrap();
        assert!(description.starts_with("The seven words"), "{description}");
        assert!(
            description.contains("Values not listed here"),
            "{description}"
        );
    }

    #[test]
    fn narrowed_fields_carry_the_spec_sets() {
        let defs = definitions_of::<OrderCertificatePack>();
        let order = &defs["OrderCertificatePack"];
        assert_eq!(
            order["properties"]["validation_method"]["enum"],
            json!(["txt", "http", "email"])
        );
        assert_eq!(order["properties"]["type"]["enum"], json!(["advanced"]));
        assert_eq!(
            order["properties"]["validity_days"]["enum"],
            json!([14, 30, 90, 365])
        );
        let defs = definitions_of::<Verification>();
        let info = &defs["VerificationInfo"];
        assert_eq!(info["oneOf"].as_array().map(Vec::len), Some(2));
        assert!(info.get("anyOf").is_none());
        assert_eq!(
            defs["Verification"]["properties"]["validation_method"]["enum"],
            json!(["http", "cname", "txt"])
        );
    }
}
