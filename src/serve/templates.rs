//! Templates over HTTP: the built-in ones and those stored in the configuration's `templates_dir`, listed,
//! shown, and added — checked exactly as `ferry templates check` checks a file, with the problem's line in
//! the answer. A body is ferry's template (YAML, or the same as JSON), or the guide's
//! `createDataTemplate` shape, which is translated into one first.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value as Json};
use utoipa::ToSchema;

use super::config::is_plain_name;
use super::engine::{self, TemplateProblem, TemplateSummary};
use super::error::ApiError;

/// A template as the routes show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateInfo {
    /// Its id (the name requests and datasets use).
    pub id: String,
    /// `builtin` or `stored`.
    pub source: String,
    /// What the check found, when it checks out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateSummary>,
    /// What is wrong with it, when it does not: every problem, each with its line and field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<TemplateProblem>,
    /// Its YAML (`GET /templates/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
}

fn info(id: &str, source: &str, text: &str, file: &Path, with_text: bool) -> TemplateInfo {
    let checked = engine::check_template(text, file);
    TemplateInfo {
        id: id.to_owned(),
        source: source.to_owned(),
        template: checked.as_ref().ok().cloned(),
        problems: checked.err().unwrap_or_default(),
        yaml: with_text.then(|| text.to_owned()),
    }
}

/// Every template: stored ones (which win over a built-in of the same name), then built-in ones.
pub fn list(dir: &Path) -> Vec<TemplateInfo> {
    let mut out: Vec<TemplateInfo> = stored_names(dir)
        .into_iter()
        .filter_map(|id| {
            let file = dir.join(format!("{id}.yaml"));
            let text = std::fs::read_to_string(&file).ok()?;
            Some(info(&id, "stored", &text, &file, false))
        })
        .collect();
    for (name, text) in engine::builtin_templates() {
        if !out.iter().any(|t| t.id == *name) {
            out.push(info(
                name,
                "builtin",
                text,
                &dir.join(format!("{name}.yaml")),
                false,
            ));
        }
    }
    out
}

fn stored_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".yaml")
                        .filter(|n| is_plain_name(n))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// One template, with its YAML.
pub fn get(dir: &Path, id: &str) -> Result<TemplateInfo, ApiError> {
    if !is_plain_name(id) {
        return Err(ApiError::not_found(format!("no template {id:?}")));
    }
    let file = dir.join(format!("{id}.yaml"));
    if let Ok(text) = std::fs::read_to_string(&file) {
        return Ok(info(id, "stored", &text, &file, true));
    }
    engine::builtin_templates()
        .iter()
        .find(|(name, _)| *name == id)
        .map(|(name, text)| info(name, "builtin", text, &file, true))
        .ok_or_else(|| ApiError::not_found(format!("no template {id:?}")))
}

/// Checks and stores a template from a request body (`content_type` says YAML or JSON).
pub fn create(dir: &Path, body: &[u8], content_type: &str) -> Result<TemplateInfo, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the template is not UTF-8 text"))?;
    let yaml = if content_type.contains("json") {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        template_yaml(&json)?
    } else {
        text.to_owned()
    };
    let name = serde_yaml::from_str::<serde_yaml::Value>(&yaml)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned));
    let id = name.as_deref().map(slug).ok_or_else(|| {
        problems_error(vec![TemplateProblem {
            line: Some(1),
            field: None,
            message: "the template has no name".into(),
        }])
    })?;
    if engine::builtin_templates().iter().any(|(n, _)| *n == id) {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "template_exists",
            format!("{id:?} is a built-in template; give yours another name"),
        ));
    }
    let file = dir.join(format!("{id}.yaml"));
    let summary = engine::check_template(&yaml, &file).map_err(problems_error)?;
    write_new(dir, &file, &yaml, &id)?;
    Ok(TemplateInfo {
        id,
        source: "stored".into(),
        template: Some(summary),
        problems: Vec::new(),
        yaml: Some(yaml),
    })
}

/// 422 with every problem in `details.problems`; the message names the first and counts the others.
fn problems_error(problems: Vec<TemplateProblem>) -> ApiError {
    let first = problems
        .first()
        .map(TemplateProblem::shown)
        .unwrap_or_default();
    let message = match problems.len() {
        1 => format!("the template does not check out: {first}"),
        n => format!("the template has {n} problems, the first: {first}"),
    };
    ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "template_invalid",
        message,
    )
    .with_details(json!({ "problems": problems }))
}

/// Writes `file` only if it does not exist (a template is never replaced behind a running import).
fn write_new(dir: &Path, file: &Path, text: &str, id: &str) -> Result<(), ApiError> {
    use std::io::Write as _;
    let mut temp = tempfile::Builder::new()
        .prefix(".template")
        .tempfile_in(dir)
        .map_err(ApiError::internal)?;
    temp.write_all(text.as_bytes())
        .map_err(ApiError::internal)?;
    temp.persist_noclobber(file).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "template_exists",
                format!("a template {id:?} is stored already"),
            )
        } else {
            ApiError::internal(e.error)
        }
    })?;
    Ok(())
}

/// A name as a template id: lowercase letters, digits and `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').chars().take(64).collect::<String>();
    if out.is_empty() {
        "template".into()
    } else {
        out
    }
}

/// A JSON body as template YAML: ferry's template written as JSON (it has `fields`), or the guide's shape
/// (`schema.fields`, `transformation.mapping`, `transformation.computedFields`).
fn template_yaml(json: &Json) -> Result<String, ApiError> {
    if json.get("yaml").is_some_and(Json::is_string) {
        return Ok(json["yaml"].as_str().unwrap_or_default().to_owned());
    }
    let template = if json.get("fields").is_some() {
        json.clone()
    } else if json.pointer("/schema/fields").is_some() {
        from_guide(json)?
    } else {
        return Err(ApiError::invalid(
            "the body is neither a ferry template (name, fields) nor the guide's template \
             (name, schema.fields, transformation)",
        ));
    };
    serde_yaml::to_string(&template).map_err(ApiError::internal)
}

/// The guide's `createDataTemplate` body as a ferry template: each schema field becomes an output field
/// (`type` translated, `required` kept), `transformation.mapping` (output ← source) its `from`, and each
/// computed field a `compute` expression (which must be CEL: the check says so if it is not).
fn from_guide(json: &Json) -> Result<Json, ApiError> {
    let mapping = json
        .pointer("/transformation/mapping")
        .and_then(Json::as_object);
    let mut fields = Vec::new();
    for field in json
        .pointer("/schema/fields")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let name = field
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| ApiError::invalid("every schema.fields entry needs a name"))?;
        let mut out = json!({ "name": name });
        if let Some(t) = field.get("type").and_then(Json::as_str) {
            out["type"] = Json::String(guide_type(t).to_owned());
        }
        if field.get("required").and_then(Json::as_bool) == Some(true) {
            out["required"] = Json::Bool(true);
        }
        if let Some(d) = field.get("description").and_then(Json::as_str) {
            out["description"] = Json::String(d.to_owned());
        }
        // The guide maps output names to source names ({'id': 'id'}).
        if let Some(source) = mapping.and_then(|m| m.get(name)).and_then(Json::as_str) {
            if source != name {
                out["from"] = Json::String(source.to_owned());
            }
        }
        fields.push(out);
    }
    for computed in json
        .pointer("/transformation/computedFields")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let mut out = json!({
            "name": computed.get("name").cloned().unwrap_or(Json::Null),
            "compute": computed.get("expression").cloned().unwrap_or(Json::Null),
        });
        if let Some(t) = computed.get("type").and_then(Json::as_str) {
            out["type"] = Json::String(guide_type(t).to_owned());
        }
        fields.push(out);
    }
    let mut template = json!({
        "name": json.get("name").cloned().unwrap_or(Json::Null),
        "keep_unmapped": false,
        "fields": fields,
    });
    for key in ["version", "description"] {
        if let Some(v) = json.get(key) {
            template[key] = v.clone();
        }
    }
    Ok(template)
}

fn guide_type(t: &str) -> &str {
    match t {
        "date" | "datetime" | "timestamp" => "datetime",
        "number" | "float" => "number",
        "int" | "integer" => "integer",
        "bool" | "boolean" => "boolean",
        "json" | "object" => "object",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_template_becomes_a_checked_ferry_template() {
        let dir = tempfile::tempdir().unwrap();
        let body = json!({
            "name": "Standard Context Export",
            "version": "1.0.0",
            "schema": {"type": "context", "fields": [
                {"name": "id", "type": "string", "required": true},
                {"name": "tags", "type": "array", "required": false}
            ]},
            "transformation": {"mapping": {"id": "legacy_id"},
                               "computedFields": [{"name": "exportedAt", "expression": "now()", "type": "date"}]}
        });
        let made = create(dir.path(), body.to_string().as_bytes(), "application/json").unwrap();
        assert_eq!(made.id, "standard-context-export");
        assert!(dir.path().join("standard-context-export.yaml").is_file());
        let again =
            create(dir.path(), body.to_string().as_bytes(), "application/json").unwrap_err();
        assert_eq!(again.code, "template_exists");
        // JavaScript is not CEL: the check refuses it and says where.
        let mut js = body.clone();
        js["name"] = json!("js");
        js["transformation"]["computedFields"][0]["expression"] = json!("new Date()");
        let err = create(dir.path(), js.to_string().as_bytes(), "application/json").unwrap_err();
        assert_eq!(err.code, "template_invalid");
        let problem = &err.details.unwrap()["problems"][0];
        assert_eq!(problem["field"], "exportedAt");
        assert!(problem["line"].as_u64().is_some(), "{problem}");
    }
}
