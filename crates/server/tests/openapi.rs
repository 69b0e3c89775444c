//! `GET /client/v4/openapi.json` against Cloudflare's spec (vendored in `spec/`) and against the
//! server's own answers: the eight SSL operations carry the spec's paths, ids,
//! parameters, body fields and result properties with the same enums; every `$ref`
//! resolves; and real answers of a real server on 127.0.0.1:0 fit the schemas.

#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use yaml_rust2::{Yaml, YamlLoader};
use zonecert_server::admin::dev;
use zonecert_server::config::VerificationForm;
use zonecert_testkit::TestServer;

/// Properties of the spec that zonecert neither sends nor describes (matched as the
/// end of a property's path), each with why. The comparison fails on any other
/// missing property, and on these once they are described.
const NOT_DESCRIBED: &[(&str, &str)] = &[(
    ".certificates[].geo_restrictions",
    "zonecert has no regional private-key storage to choose from",
)];

fn not_described(path: &str) -> bool {
    NOT_DESCRIBED.iter().any(|(p, _)| path.ends_with(p))
}

/// Cloudflare's spec, vendored in the repository (`spec/`, with its origin and licence).
fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/cloudflare-ssl-openapi.yaml")
}

fn spec() -> Value {
    let path = spec_path();
    let text = std::fs::read_to_string(path).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    yaml_to_json(&docs[0])
}

fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("unexpected key {other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unexpected YAML node {other:?}"),
    }
}

fn ours() -> Value {
    zonecert_server::http::openapi::document()
}

/// The schema a `$ref` points at, in `doc`.
fn target<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// A schema with its `$ref` followed and a single-branch `allOf` (how a described
/// `$ref` is written in OpenAPI 3.0) merged with the keys beside it.
fn resolve(doc: &Value, schema: &Value) -> Value {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let t = target(doc, r).unwrap_or_else(|| panic!("{r} does not resolve"));
        return resolve(doc, t);
    }
    if let Some([only]) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        let mut merged = resolve(doc, only);
        for (k, v) in schema.as_object().unwrap() {
            if k != "allOf" {
                merged[k] = v.clone();
            }
        }
        return merged;
    }
    schema.clone()
}

/// The object form among `oneOf` branches (verification_info), else the schema.
fn object_form(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        for b in branches {
            let b = resolve(doc, b);
            if b["type"] == "object" {
                return b;
            }
        }
    }
    schema
}

fn enum_set(schema: &Value) -> Option<BTreeSet<String>> {
    schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().map(Value::to_string).collect())
}

/// Checks that every property of `spec_schema` is in `our_schema`, with the same
/// enum where the spec has one, down through objects and arrays. Returns problems.
fn compare(
    spec: &Value,
    doc: &Value,
    spec_schema: &Value,
    our_schema: &Value,
    at: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let s = object_form(spec, spec_schema);
    let o = object_form(doc, our_schema);
    if let Some(expected) = enum_set(&s)
        && enum_set(&o).as_ref() != Some(&expected)
    {
        problems.push(format!(
            "{at}: enum {expected:?} in the spec, {:?} in ours",
            enum_set(&o)
        ));
    }
    if s["type"] == "array" || s.get("items").is_some() {
        let items = o.get("items").cloned().unwrap_or(Value::Null);
        if items.is_null() {
            problems.push(format!("{at}: an array in the spec, not in ours"));
        } else {
            problems.extend(compare(spec, doc, &s["items"], &items, &format!("{at}[]")));
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (name, sp) in props {
            let here = format!("{at}.{name}");
            match o.pointer(&format!("/properties/{name}")) {
                Some(op) => {
                    if not_described(&here) {
                        problems.push(format!("{here}: described now; drop it from NOT_DESCRIBED"));
                    }
                    problems.extend(compare(spec, doc, sp, op, &here));
                }
                None if not_described(&here) => {}
                None => problems.push(format!("{here}: missing in ours")),
            }
        }
    }
    problems
}

const SSL_OPERATIONS: usize = 8;

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            // A path item's own `servers` (the test controls') is not an operation.
            if method == "servers" {
                continue;
            }
            found.push((path.clone(), method.clone(), op.clone()));
        }
    }
    found
}

fn parameters(doc: &Value, op: &Value) -> Map<String, Value> {
    op["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let p = resolve(doc, p);
                    (
                        format!(
                            "{}:{}",
                            p["in"].as_str().unwrap(),
                            p["name"].as_str().unwrap()
                        ),
                        p,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn body_schema(op: &Value) -> Option<&Value> {
    op.pointer("/requestBody/content/application~1json/schema")
}

fn ok_schema(op: &Value) -> &Value {
    op.pointer("/responses/200/content/application~1json/schema")
        .unwrap()
}

#[test]
fn the_ssl_operations_match_cloudflares_spec() {
    let spec = spec();
    let doc = ours();
    let spec_ops = operations(&spec);
    assert_eq!(spec_ops.len(), SSL_OPERATIONS);
    let mut problems = Vec::new();
    for (path, method, sop) in &spec_ops {
        let id = sop["operationId"].as_str().unwrap();
        let Some(oop) = doc["paths"].get(path).and_then(|p| p.get(method)) else {
            problems.push(format!("{method} {path}: not in ours"));
            continue;
        };
        assert_eq!(oop["operationId"], id, "{method} {path}");

        // Parameters: the spec's are ours, with the same enums and bounds.
        let sp = parameters(&spec, sop);
        let op = parameters(&doc, oop);
        for (key, p) in &sp {
            let Some(o) = op.get(key) else {
                problems.push(format!("{id}: parameter {key} missing"));
                continue;
            };
            let (ss, os) = (resolve(&spec, &p["schema"]), resolve(&doc, &o["schema"]));
            if enum_set(&ss) != enum_set(&os) {
                problems.push(format!(
                    "{id}: parameter {key} enum {:?} vs {:?}",
                    enum_set(&ss),
                    enum_set(&os)
                ));
            }
            for bound in ["minimum", "maximum", "default"] {
                if let Some(b) = ss.get(bound)
                    && os.get(bound).and_then(Value::as_f64) != b.as_f64()
                {
                    problems.push(format!(
                        "{id}: parameter {key} {bound} {b} vs {:?}",
                        os.get(bound)
                    ));
                }
            }
        }
        assert_eq!(
            sp.keys()
                .filter(|k| k.starts_with("path:"))
                .collect::<Vec<_>>(),
            op.keys()
                .filter(|k| k.starts_with("path:"))
                .collect::<Vec<_>>(),
            "{id}: path parameters"
        );

        // The body: same required fields, and the spec's properties with their enums.
        match (body_schema(sop), body_schema(oop)) {
            (None, None) => {}
            (Some(sb), Some(ob)) => {
                let (sb_r, ob_r) = (resolve(&spec, sb), resolve(&doc, ob));
                let required = |s: &Value| -> BTreeSet<String> {
                    s["required"]
                        .as_array()
                        .map(|r| r.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default()
                };
                if required(&sb_r) != required(&ob_r) {
                    problems.push(format!(
                        "{id}: body requires {:?} in the spec, {:?} in ours",
                        required(&sb_r),
                        required(&ob_r)
                    ));
                }
                problems.extend(compare(&spec, &doc, sb, ob, &format!("{id} body")));
            }
            (s, o) => problems.push(format!("{id}: body {s:?} in the spec, {o:?} in ours")),
        }

        // The 200 answer: the envelope's and the result's properties, recursively.
        let problems_here = compare(&spec, &doc, ok_schema(sop), ok_schema(oop), "")
            .into_iter()
            .map(|p| format!("{id}: {}", p.trim_start_matches('.')));
        problems.extend(problems_here);

        // Failures are described by the error envelope.
        assert_eq!(
            oop["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorEnvelope",
            "{id}"
        );
    }
    assert!(
        problems.is_empty(),
        "differences from the spec:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_comparison_catches_a_missing_property_and_a_changed_enum() {
    // The check above must be able to fail: drop a property and shrink an enum.
    let spec = spec();
    let mut doc = ours();
    let schemas = doc["components"]["schemas"].as_object_mut().unwrap();
    schemas["CertificatePack"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("validity_days");
    schemas["CertificateStatus"]["enum"] = json!(["active"]);
    let sop = &spec["paths"]["/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}"]["get"];
    let oop =
        doc["paths"]["/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}"]["get"].clone();
    let problems = compare(&spec, &doc, ok_schema(sop), ok_schema(&oop), "");
    assert_eq!(problems, [".result.validity_days: missing in ours"]);
    let sop = &spec["paths"]["/zones/{zone_id}/ssl/verification"]["get"];
    let oop = doc["paths"]["/zones/{zone_id}/ssl/verification"]["get"].clone();
    let problems = compare(&spec, &doc, ok_schema(sop), ok_schema(&oop), "");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(".result[].certificate_status: enum"),
        "{problems:?}"
    );
}

#[test]
fn the_spec_enums_are_the_ones_named_in_domain_md() {
    // Pins the sizes the comparison relies on, so a spec swap that loses enums shows.
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let count = |name: &str| schemas[name]["enum"].as_array().unwrap().len();
    assert_eq!(
        count("tls-certificates-and-hostnames_certificate_status"),
        7
    );
    assert_eq!(count("tls-certificates-and-hostnames_status-5"), 21);
    assert_eq!(count("tls-certificates-and-hostnames_validity_days"), 4);
    assert_eq!(
        count("tls-certificates-and-hostnames_certificate_authority-2"),
        3
    );
    // The verification view's seven words are the ones the domain notes (vendored in
    // `docs/`) list.
    let notes = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/domain.md"),
    )
    .unwrap();
    let (_, after) = notes.split_once("`certificate_status` ∈ ").unwrap();
    let (list, _) = after.split_once('.').unwrap();
    let noted: BTreeSet<String> = list.split(',').map(|w| format!("{:?}", w.trim())).collect();
    let in_spec = enum_set(&schemas["tls-certificates-and-hostnames_certificate_status"]).unwrap();
    assert_eq!(noted, in_spec);
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_sound() {
    let doc = ours();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 50, "schemas are referenced: {}", refs.len());
    for r in &refs {
        assert!(r.starts_with("#/components/schemas/"), "{r}");
        assert!(target(&doc, r).is_some(), "{r} does not resolve");
    }
    // Every component is used, and none is a leftover placeholder (`false`).
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert!(schema.is_object(), "{name}: {schema}");
        let r = format!("#/components/schemas/{name}");
        assert!(refs.contains(&r), "{name} is not referenced");
    }
    for (path, method, op) in operations(&doc) {
        let ids: Vec<_> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["name"])
            .collect();
        for p in op["parameters"].as_array().unwrap() {
            assert!(p["schema"].is_object(), "{method} {path}: {p}");
            assert!(p["in"] == "path" || p["in"] == "query", "{p}");
        }
        let unique: BTreeSet<String> = ids.iter().map(|v| v.to_string()).collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{method} {path}: duplicate parameters"
        );
        assert!(
            op.pointer("/responses/200/content/application~1json/schema")
                .is_some(),
            "{method} {path}"
        );
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            assert!(ids.contains(&&json!(name)), "{method} {path}: {name}");
        }
    }
    // OpenAPI 3.0 has no `const` and no type "null": the transforms must have run.
    let text = doc.to_string();
    assert!(
        !text.contains("\"const\""),
        "const in an OpenAPI 3.0 document"
    );
    assert!(
        !text.contains("\"type\":\"null\""),
        "type null in an OpenAPI 3.0 document"
    );
}

// ---- real answers fit the documented schemas ----

/// A small validator for the schema keywords the document uses. Returns problems.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let s = resolve(doc, schema);
    let mut problems = Vec::new();
    if value.is_null() {
        if s["nullable"] != true {
            problems.push(format!("{at}: null where the schema does not allow it"));
        }
        return problems;
    }
    if let Some(branches) = s.get("oneOf").and_then(Value::as_array) {
        let fitting = branches
            .iter()
            .filter(|b| validate(doc, b, value, at).is_empty())
            .count();
        if fitting != 1 {
            problems.push(format!("{at}: fits {fitting} of the oneOf forms: {value}"));
        }
        return problems;
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        problems.push(format!("{at}: {value} not in {values:?}"));
    }
    let type_ok = match s.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("number") => value.is_number(),
        Some(other) => panic!("{at}: type {other}"),
    };
    if !type_ok {
        problems.push(format!("{at}: {value} is not of type {}", s["type"]));
        return problems;
    }
    if let Some(min) = s.get("minimum").and_then(Value::as_f64)
        && value.as_f64().is_some_and(|v| v < min)
    {
        problems.push(format!("{at}: {value} below {min}"));
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            problems.extend(validate(doc, &s["items"], item, &format!("{at}[{i}]")));
        }
    }
    if let Some(obj) = value.as_object() {
        for req in s["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(req.as_str().unwrap()) {
                problems.push(format!("{at}: required {req} missing"));
            }
        }
        let open = s.get("additionalProperties") == Some(&json!(true));
        for (k, v) in obj {
            match s.pointer(&format!("/properties/{k}")) {
                Some(ps) => problems.extend(validate(doc, ps, v, &format!("{at}.{k}"))),
                // Stricter than JSON Schema on purpose: an undescribed key of a closed
                // object means the document lags behind the server.
                None if !open => problems.push(format!("{at}: key {k} is not described")),
                None => {}
            }
        }
    }
    problems
}

async fn start(form: VerificationForm) -> TestServer {
    TestServer::builder()
        .config(move |c| c.verification_form = form)
        .await
}

/// Calls `method path` and checks the answer against the operation's documented
/// 200 or 4XX schema.
async fn check(
    s: &TestServer,
    doc: &Value,
    method: &str,
    template: &str,
    body: Option<Value>,
    expect: u16,
) -> Value {
    check_pack(s, doc, method, template, dev::PACK_ID, body, expect).await
}

async fn check_pack(
    s: &TestServer,
    doc: &Value,
    method: &str,
    template: &str,
    pack: &str,
    body: Option<Value>,
    expect: u16,
) -> Value {
    let path = template
        .replace("{zone_id}", dev::ZONE_ID)
        .replace("{certificate_pack_id}", pack);
    let (query_less, _) = template.split_once('?').unwrap_or((template, ""));
    let (status, answer) = s.call(method, &path, Some(s.token()), body).await;
    assert_eq!(status, expect, "{method} {path}: {answer}");
    let op = &doc["paths"][query_less][method.to_lowercase()];
    let key = if status == 200 { "200" } else { "4XX" };
    let schema = op
        .pointer(&format!(
            "/responses/{key}/content/application~1json/schema"
        ))
        .unwrap();
    let problems = validate(doc, schema, &answer, "");
    assert!(
        problems.is_empty(),
        "{method} {path}:\n{}\n{answer:#}",
        problems.join("\n")
    );
    answer
}

#[tokio::test]
async fn real_answers_fit_the_documented_schemas() {
    let doc = ours();
    let s = start(VerificationForm::PerHost).await;
    // Served as built.
    let served = s
        .http()
        .get(format!("{}/openapi.json", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.json::<Value>().await.unwrap(), doc);

    let v = check(
        &s,
        &doc,
        "GET",
        "/zones/{zone_id}/ssl/verification",
        None,
        200,
    )
    .await;
    assert!(v["result"][0]["verification_info"].is_object(), "{v}");
    check(
        &s,
        &doc,
        "GET",
        "/zones/{zone_id}/ssl/certificate_packs?status=all&per_page=5",
        None,
        200,
    )
    .await;
    check(
        &s,
        &doc,
        "GET",
        "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        None,
        200,
    )
    .await;
    check(
        &s,
        &doc,
        "GET",
        "/zones/{zone_id}/ssl/certificate_packs/quota",
        None,
        200,
    )
    .await;
    check(&s, &doc, "GET", "/zones", None, 200).await;
    check(&s, &doc, "GET", "/zones/{zone_id}", None, 200).await;
    check(&s, &doc, "GET", "/user/tokens/verify", None, 200).await;
    let order = json!({"type": "advanced", "hosts": ["example.com", "www.example.com"],
        "validation_method": "http", "validity_days": 90, "certificate_authority": "lets_encrypt"});
    let ordered = check(
        &s,
        &doc,
        "POST",
        "/zones/{zone_id}/ssl/certificate_packs/order",
        Some(order),
        200,
    )
    .await;
    // The documentation's pack is active (its method cannot change): edit the new one.
    let ordered_id = ordered["result"]["id"].as_str().unwrap().to_owned();
    let verification = check_pack(
        &s,
        &doc,
        "PATCH",
        "/zones/{zone_id}/ssl/verification/{certificate_pack_id}",
        &ordered_id,
        Some(json!({"validation_method": "txt"})),
        200,
    )
    .await;
    assert_eq!(verification["result"]["validation_method"], "txt");
    // Failures: a bad body, a bad parameter, an unknown pack.
    check(
        &s,
        &doc,
        "POST",
        "/zones/{zone_id}/ssl/certificate_packs/order",
        Some(json!({"type": "advanced"})),
        400,
    )
    .await;
    check(
        &s,
        &doc,
        "GET",
        "/zones/{zone_id}/ssl/certificate_packs?per_page=51",
        None,
        400,
    )
    .await;
    let id = ordered["result"]["id"].as_str().unwrap();
    let deleted = check_pack(
        &s,
        &doc,
        "DELETE",
        "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}",
        id,
        None,
        200,
    )
    .await;
    assert_eq!(deleted["result"]["id"], id);

    // The live form answers verification_info as an array, the other oneOf form.
    let live = start(VerificationForm::Live).await;
    let v = check(
        &live,
        &doc,
        "GET",
        "/zones/{zone_id}/ssl/verification",
        None,
        200,
    )
    .await;
    assert!(v["result"][0]["verification_info"].is_array(), "{v}");
}

#[test]
fn the_validator_rejects_what_does_not_fit() {
    let doc = ours();
    let pack = json!({"$ref": "#/components/schemas/CertificatePack"});
    let problems = validate(
        &doc,
        &pack,
        &json!({"id": "x", "type": "advanced", "hosts": [], "status": "no_such_status", "certificates": [], "validity_days": 7}),
        "",
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    let info = json!({"$ref": "#/components/schemas/VerificationInfo"});
    assert!(validate(&doc, &info, &json!("text"), "").len() == 1);
    let message = json!({"$ref": "#/components/schemas/ResponseMessage"});
    assert!(
        !validate(
            &doc,
            &message,
            &json!({"code": 999, "message": "m", "extra": 1}),
            ""
        )
        .is_empty()
    );
}
