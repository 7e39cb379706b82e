//! Where templates and the schemas they name are found — the one search rule every front end uses: a
//! path as it is; a name in `./templates`, then in `$FERRY_TEMPLATES` (from the run's [`Environment`]),
//! then among the templates built into the binary. Listing and checking (`ferry templates list|check`)
//! return data; the front end prints it.

use std::path::{Path, PathBuf};

use super::{Template, TemplateSource, BUILTIN_SCHEMAS, BUILTIN_TEMPLATES};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::validate::SchemaValidator;

/// The folders templates are looked for in, in order (the built-in templates come after them).
#[derive(Debug, Clone)]
pub struct TemplateSearch {
    dirs: Vec<PathBuf>,
}

/// One template as `ferry templates list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedTemplate {
    /// Its name (the name it was looked up by, when it does not load).
    pub name: String,
    /// What loading it gave: its version, where it was found and its description, or why it cannot load.
    pub loaded: std::result::Result<(String, String, String), String>,
}

/// A template that loaded and compiled, with its schema (`ferry templates check`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckedTemplate {
    /// The template's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where it was found.
    pub source: String,
    /// How many fields it maps.
    pub fields: usize,
    /// The schema it names, which compiled too.
    pub schema: Option<String>,
}

impl TemplateSearch {
    /// `./templates`, then `$FERRY_TEMPLATES` when `env` sets it.
    pub fn new(env: &Environment) -> TemplateSearch {
        let mut dirs = vec![PathBuf::from("templates")];
        dirs.extend(env.non_empty("FERRY_TEMPLATES").map(PathBuf::from));
        TemplateSearch { dirs }
    }

    /// Finds a template by path or name.
    pub fn find(&self, name_or_path: &str) -> Result<Template> {
        let path = Path::new(name_or_path);
        let looks_like_path = name_or_path.contains(std::path::MAIN_SEPARATOR)
            || name_or_path.ends_with(".yaml")
            || name_or_path.ends_with(".yml");
        if looks_like_path || path.is_file() {
            return Template::from_file(path);
        }
        for dir in &self.dirs {
            for ext in ["yaml", "yml"] {
                let candidate = dir.join(format!("{name_or_path}.{ext}"));
                if candidate.is_file() {
                    return Template::from_file(&candidate);
                }
            }
        }
        match BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == name_or_path) {
            Some((name, text)) => Template::parse(text, TemplateSource::Builtin(name)),
            None => Err(Error::config(format!(
                "no template named {name_or_path:?} in ./templates, $FERRY_TEMPLATES or the built-in ones ({}); `ferry templates list` shows them",
                BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The JSON Schema `template` names, found beside the template, in ./schemas, beside or in the search
    /// folders, or among the built-in schemas.
    pub fn schema_of(&self, template: &Template) -> Result<Option<(String, serde_json::Value)>> {
        let Some(name) = &template.spec.schema else {
            return Ok(None);
        };
        let mut candidates = Vec::new();
        if let TemplateSource::File(path) = &template.source {
            let dir = path.parent().unwrap_or(Path::new("."));
            candidates.push(dir.join(name));
            candidates.push(dir.join("..").join("schemas").join(name));
        }
        candidates.push(PathBuf::from(name));
        candidates.extend(
            self.dirs
                .iter()
                .map(|d| d.join("..").join("schemas").join(name)),
        );
        candidates.extend(self.dirs.iter().map(|d| d.join(name)));
        let text = match candidates.iter().find(|p| p.is_file()) {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                Error::config(format!("cannot read schema {}: {e}", path.display()))
            })?,
            None => match BUILTIN_SCHEMAS.iter().find(|(n, _)| n == name) {
                Some((_, text)) => (*text).to_owned(),
                None => {
                    return Err(Error::config(format!(
                        "template {}: schema {name:?} not found",
                        template.source
                    )))
                }
            },
        };
        let json = serde_json::from_str(&text)
            .map_err(|e| Error::config(format!("schema {name} is not valid JSON: {e}")))?;
        Ok(Some((name.clone(), json)))
    }

    /// Every template this search finds, by name: the built-in ones and the `.yaml`/`.yml` files of the
    /// search folders, each loaded (or with the reason it does not load).
    pub fn list(&self) -> Vec<ListedTemplate> {
        let mut names: Vec<String> = BUILTIN_TEMPLATES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
                if let (true, Some(stem)) = (is_yaml, path.file_stem().and_then(|s| s.to_str())) {
                    names.push(stem.to_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| match self.find(&name) {
                Ok(t) => ListedTemplate {
                    name: t.spec.name,
                    loaded: Ok((t.spec.version, t.source.to_string(), t.spec.description)),
                },
                Err(e) => ListedTemplate {
                    name,
                    loaded: Err(e.to_string()),
                },
            })
            .collect()
    }

    /// Loads and compiles a template and its schema: every problem is a configuration error.
    pub fn check(&self, name_or_path: &str) -> Result<CheckedTemplate> {
        let template = self.find(name_or_path)?;
        let compiled = template.compile()?;
        if let Some((name, schema)) = self.schema_of(&template)? {
            SchemaValidator::compile(&name, &schema)?;
        }
        Ok(CheckedTemplate {
            name: compiled.name.clone(),
            version: compiled.version.clone(),
            source: compiled.source.clone(),
            fields: compiled.fields().count(),
            schema: template.spec.schema.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferry_templates_comes_from_the_environment_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mine.yaml"),
            "name: mine\nversion: '2'\nfields:\n  - name: id\n",
        )
        .unwrap();
        let env = Environment::empty().with("FERRY_TEMPLATES", dir.path().to_str().unwrap());
        let search = TemplateSearch::new(&env);
        assert_eq!(search.find("mine").unwrap().spec.version, "2");
        let listed = search.list();
        assert!(listed.iter().any(|t| t.name == "mine" && t.loaded.is_ok()));
        assert!(listed.iter().any(|t| t.name == "std-context"));
        let checked = search.check("mine").unwrap();
        assert_eq!((checked.fields, checked.schema), (1, None));
        // Without the variable the folder is not searched.
        let err = TemplateSearch::new(&Environment::empty())
            .find("mine")
            .unwrap_err();
        assert!(err.is_config(), "{err}");
    }
}
