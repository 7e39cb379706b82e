//! The validate stage: JSON Schema (the `jsonschema` crate, no network), compiled once per run and applied to
//! every mapped record. Each violation names the field by its JSON pointer and the rule it breaks.

use std::borrow::Cow;
use std::str::FromStr as _;

use jsonschema::json::{Array, Json as Representation, JsonNumber, Node, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde_json::{Map, Number, Value as Json};

use crate::error::{Error, Position, Result, Stage};
use crate::record::{Key, Record, Value};
use crate::template::{FieldType, Guarantees};

/// A compiled JSON Schema.
pub struct SchemaValidator {
    name: String,
    /// What every record is checked against: the schema as written, less what was proven once per run.
    validator: jsonschema::Validator<RecordJson>,
    /// `validator`'s schema taken apart, one check per top-level property, when it is no more than that:
    /// what `validate` asks first (see [`PropertyChecks`]).
    by_property: Option<PropertyChecks>,
    /// The schema as written, once `validator` is reduced: the messages of a record `validator` rejects
    /// are this one's, so they are the same as without the reduction.
    full: Option<jsonschema::Validator<RecordJson>>,
    properties: Vec<PropertyType>,
    /// The schema `validator` was built from (as written until [`SchemaValidator::with_constants`] or
    /// [`SchemaValidator::with_guarantees`] reduce it).
    schema: Json,
    /// The top-level properties checked once by [`SchemaValidator::with_constants`].
    checked_once: Vec<String>,
    /// The rules [`SchemaValidator::with_guarantees`] found the template proves.
    proven: Vec<String>,
}

/// What a schema says about one top-level property's type (used when a database table is created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyType {
    /// The property.
    pub name: String,
    /// Its JSON type (`string`, `integer`, …); the first non-null one of a type list.
    pub json_type: String,
    /// Its `format` (`date`, `date-time`, …), if any.
    pub format: Option<String>,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchemaValidator({})", self.name)
    }
}

impl SchemaValidator {
    /// Compiles `schema` (its draft from `$schema`, 2020-12 when absent). `name` is used in messages.
    pub fn compile(name: &str, schema: &Json) -> Result<SchemaValidator> {
        let validator = validator_of(schema, draft_of(schema))
            .map_err(|e| Error::config(format!("schema {name} is not a valid JSON Schema: {e}")))?;
        Ok(SchemaValidator {
            name: name.to_owned(),
            validator,
            by_property: PropertyChecks::of(schema),
            properties: property_types(schema),
            schema: schema.clone(),
            checked_once: Vec::new(),
            full: None,
            proven: Vec::new(),
        })
    }

    /// The rules of the schema that the template proves for every record it maps, and that are therefore
    /// not checked per record (`id: type`, `required: id`, `additionalProperties`).
    pub fn proven(&self) -> &[String] {
        &self.proven
    }

    /// The top-level properties whose constant value was checked once instead of on every record.
    pub fn checked_once(&self) -> &[String] {
        &self.checked_once
    }

    /// This validator with the top-level properties whose value is the same for every record (`constants`,
    /// from the compiled template: `now()`, a default with no source) checked once, here, instead of on every
    /// record. A property whose constant satisfies its subschema gets `{}` in its place (still declared,
    /// so `additionalProperties` and `unevaluatedProperties` decide as before); one that does not keeps its
    /// subschema, so every record is rejected with the same message as before. Schemas with references are
    /// left whole (a `$ref` may point into a replaced subschema), and so are those whose subschemas would
    /// not be read alone as they are inside the schema (see `subschemas_read_alike`).
    pub fn with_constants(self, constants: &[(Key, Value)]) -> Result<SchemaValidator> {
        let mut reduced = self.schema.clone();
        if has_references(&reduced) || !subschemas_read_alike(&reduced) {
            return Ok(self);
        }
        let Some(properties) = reduced.get_mut("properties").and_then(Json::as_object_mut) else {
            return Ok(self);
        };
        let draft = draft_of(&self.schema);
        let mut replaced = Vec::new();
        for (name, value) in constants {
            let Some(subschema) = properties.get_mut(&**name) else {
                continue;
            };
            let Ok(check) = validator_of(subschema, draft) else {
                continue;
            };
            if check.is_valid(RecordNode::Value(value)) {
                // `{}` rather than `true`: draft 4 has no boolean schemas.
                *subschema = Json::Object(Map::new());
                replaced.push(name.to_string());
            }
        }
        if replaced.is_empty() {
            return Ok(self);
        }
        let mut reduced = self.reduced_to(reduced)?;
        reduced.checked_once.extend(replaced);
        Ok(reduced)
    }

    /// This validator less the rules of the schema that `guarantees` (from the compiled template whose
    /// records it validates) prove for every record, found once here instead of checked on every record:
    ///
    /// - a top-level property's `type`, when every JSON type the field's value can have is one it allows;
    /// - `required` names of fields in every mapped record;
    /// - `additionalProperties`, when the template emits only its own fields and `properties` names them
    ///   all (and no `patternProperties` or `unevaluatedProperties` reads the members it evaluates).
    ///
    /// `enum` and `const` are left: the template does not bound a field's values. A record the reduced
    /// schema rejects is validated again against the schema as written, for its messages, so that results
    /// and messages are exactly as without the reduction. Schemas with references are left whole.
    pub fn with_guarantees(self, guarantees: &Guarantees<'_>) -> Result<SchemaValidator> {
        let mut reduced = self.schema.clone();
        if has_references(&reduced) || !reduced.is_object() {
            return Ok(self);
        }
        let mut proven = prove_types(&mut reduced, guarantees);
        proven.extend(prove_required(&mut reduced, guarantees));
        proven.extend(prove_no_additional(&mut reduced, guarantees));
        if proven.is_empty() {
            return Ok(self);
        }
        let mut reduced = self.reduced_to(reduced)?;
        reduced.proven.extend(proven);
        Ok(reduced)
    }

    /// This validator checking `reduced` (this one's schema less what was proven) on every record, and
    /// the schema as written for the messages of those it rejects.
    fn reduced_to(self, reduced: Json) -> Result<SchemaValidator> {
        let validator = validator_of(&reduced, draft_of(&reduced)).map_err(|e| {
            Error::config(format!(
                "schema {} is not a valid JSON Schema: {e}",
                self.name
            ))
        })?;
        Ok(SchemaValidator {
            validator,
            by_property: PropertyChecks::of(&reduced),
            full: Some(self.full.unwrap_or(self.validator)),
            schema: reduced,
            ..self
        })
    }

    /// The top-level properties whose type the schema states.
    pub fn property_types(&self) -> &[PropertyType] {
        &self.properties
    }

    /// Reads and compiles a schema file.
    pub fn from_file(path: &std::path::Path) -> Result<SchemaValidator> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::config(format!("cannot read schema {name}: {e}")))?;
        let schema: Json = serde_json::from_slice(&bytes)
            .map_err(|e| Error::config(format!("schema {name} is not valid JSON: {e}")))?;
        SchemaValidator::compile(&name, &schema)
    }

    /// The schema's name (its file or built-in name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Validates one record; every violation becomes one per-record error naming the field.
    ///
    /// The record is read in place: the schema sees exactly the JSON [`record_to_json`] would build, without
    /// it being built.
    pub fn validate(&self, record: &Record) -> std::result::Result<(), Vec<Error>> {
        self.check(record, None)
    }

    /// [`SchemaValidator::validate`], finding text values in `passed` that checked valid before (one
    /// thread's memory, for this validator only) instead of checking them again: same answers, same errors.
    pub fn validate_remembering(
        &self,
        record: &Record,
        passed: &mut PassedTexts,
    ) -> std::result::Result<(), Vec<Error>> {
        self.check(record, Some(passed))
    }

    fn check(
        &self,
        record: &Record,
        passed: Option<&mut PassedTexts>,
    ) -> std::result::Result<(), Vec<Error>> {
        // Most records are valid, and `is_valid` stops at the first violation without building errors.
        let valid = match &self.by_property {
            Some(checks) => checks.is_valid(record, passed),
            None => self.validator.is_valid(RecordNode::Root(record)),
        };
        if valid {
            return Ok(());
        }
        let full = self.full.as_ref().unwrap_or(&self.validator);
        let errors: Vec<Error> = full
            .iter_errors(RecordNode::Root(record))
            .map(|violation| violation_error(&violation))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// JSON types as a set, an integer (what an `Int` always is) apart from other numbers: what a field's
/// values may be, or what a `type` keyword allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kinds(u8);

impl Kinds {
    const NONE: Kinds = Kinds(0);
    const NULL: Kinds = Kinds(1);
    const BOOLEAN: Kinds = Kinds(2);
    /// A number known to be an integer (written without a fraction or exponent).
    const INTEGER: Kinds = Kinds(4);
    /// Any other number.
    const NUMBER: Kinds = Kinds(8);
    const STRING: Kinds = Kinds(16);
    const ARRAY: Kinds = Kinds(32);
    const OBJECT: Kinds = Kinds(64);
    const ANY: Kinds = Kinds(127);

    fn or(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    fn within(self, allowed: Kinds) -> bool {
        self.0 & !allowed.0 == 0
    }

    /// The kind of one value, as [`RecordNode::json_type`] sees it.
    fn of_value(value: &Value) -> Kinds {
        if let Value::Int(_) = value {
            return Kinds::INTEGER;
        }
        match RecordNode::Value(value).json_type() {
            JsonType::Null => Kinds::NULL,
            JsonType::Boolean => Kinds::BOOLEAN,
            JsonType::Integer | JsonType::Number => Kinds::NUMBER,
            JsonType::String => Kinds::STRING,
            JsonType::Array => Kinds::ARRAY,
            JsonType::Object => Kinds::OBJECT,
        }
    }

    /// What [`FieldType::coerce`] can make of a non-null value, as JSON: a float is a string when not
    /// finite (and null should its text not be a JSON number); a decimal a string when its text is not a
    /// JSON number.
    fn of_type(field_type: FieldType) -> Kinds {
        match field_type {
            FieldType::String | FieldType::Date | FieldType::Datetime | FieldType::Bytes => {
                Kinds::STRING
            }
            FieldType::Integer => Kinds::INTEGER,
            FieldType::Number => Kinds::NUMBER.or(Kinds::STRING).or(Kinds::NULL),
            FieldType::Decimal => Kinds::NUMBER.or(Kinds::STRING),
            FieldType::Boolean => Kinds::BOOLEAN,
            FieldType::Array => Kinds::ARRAY,
            FieldType::Object => Kinds::OBJECT,
        }
    }

    /// What a `type` keyword allows (`integer` within `number`); `None` for a keyword that is not a type
    /// name or a list of them.
    fn allowed_by(keyword: &Json) -> Option<Kinds> {
        let one = |name: &Json| match name.as_str()? {
            "null" => Some(Kinds::NULL),
            "boolean" => Some(Kinds::BOOLEAN),
            "integer" => Some(Kinds::INTEGER),
            "number" => Some(Kinds::INTEGER.or(Kinds::NUMBER)),
            "string" => Some(Kinds::STRING),
            "array" => Some(Kinds::ARRAY),
            "object" => Some(Kinds::OBJECT),
            _ => None,
        };
        match keyword {
            Json::Array(names) => names
                .iter()
                .try_fold(Kinds::NONE, |kinds, name| Some(kinds.or(one(name)?))),
            name => one(name),
        }
    }
}

/// The JSON types a field's value can have in a mapped record.
fn field_kinds(field: &crate::template::FieldGuarantee<'_>) -> Kinds {
    let Some(field_type) = field.field_type else {
        return Kinds::ANY;
    };
    let mut kinds = Kinds::of_type(field_type);
    if let Some(default) = field.default {
        kinds = kinds.or(Kinds::of_value(default));
    }
    if field.may_be_null {
        kinds = kinds.or(Kinds::NULL);
    }
    kinds
}

/// A schema that says no more of a record than which members it must have, which it may have, and what each
/// member's value must be — only `type` (allowing objects), `required`, `properties`,
/// `additionalProperties: false` and annotations at its top, no references anywhere, and subschemas that
/// are read alone as inside it (`subschemas_read_alike`) — taken apart into one validator per property. A
/// record is valid exactly when its required members are there, it has no other members than `properties`
/// names (with `additionalProperties: false`) and each member is valid against its property's subschema;
/// checked that way it skips the walk over the record's sorted members and every property whose subschema
/// is `true` or `{}` (those `with_constants` and `with_guarantees` left). Templated 1M-row CSV → NDJSON:
/// see BENCHMARKS.md, "Eighth pass".
struct PropertyChecks {
    required: Vec<Box<str>>,
    /// With `additionalProperties: false`: the names `properties` declares.
    only: Option<Vec<Box<str>>>,
    /// The properties whose subschema can fail, with a validator of it alone and how else it is checked.
    checks: Vec<(Box<str>, jsonschema::Validator<RecordJson>, Shortcuts)>,
}

/// What answers a property's subschema without its validator, for some values.
struct Shortcuts {
    /// It answers a timestamp by the layout of its text alone ([`answers_by_layout`]).
    by_layout: bool,
    /// It only bounds the length of a text or of a list's texts.
    lengths: Option<TextLengths>,
}

/// A subschema that only bounds the length of a text (`minLength`, `maxLength`, perhaps `type: "string"`),
/// or of each text of a list (`items` of that kind, perhaps `type: "array"`), checked without the
/// validator's dispatch for text values and lists of texts (the validator took ~1,700 instructions a record
/// for `id`, `title` and `tags` of the std-context schema). Any other value is left to the validator, so
/// the answer is its answer: a text's length is its count of characters, as `RecordNode::string_length`
/// counts it.
#[derive(Debug, Clone, PartialEq)]
struct TextLengths {
    min: u64,
    max: u64,
    /// Of each item of a list rather than of the value.
    items: bool,
}

impl TextLengths {
    /// The bounds `subschema` sets, when it sets nothing else.
    fn of(subschema: &Json) -> Option<TextLengths> {
        let keywords = subschema.as_object()?;
        let allowed = ["type", "items", "minLength", "maxLength"];
        if !keywords
            .keys()
            .all(|k| allowed.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()))
        {
            return None;
        }
        let typed = |name: &str| keywords.get("type").is_none_or(|t| t == name);
        if let Some(items) = keywords.get("items") {
            let inner = TextLengths::of(items).filter(|inner| !inner.items)?;
            let only_items =
                !keywords.contains_key("minLength") && !keywords.contains_key("maxLength");
            return (typed("array") && only_items).then_some(TextLengths {
                items: true,
                ..inner
            });
        }
        let bound = |name: &str, absent: u64| match keywords.get(name) {
            None => Some(absent),
            Some(n) => n.as_u64(),
        };
        typed("string").then_some(())?;
        Some(TextLengths {
            min: bound("minLength", 0)?,
            max: bound("maxLength", u64::MAX)?,
            items: false,
        })
    }

    /// Whether `value` is valid, for a text or a list of texts (as the subschema expects); `None` for any
    /// other value.
    fn check(&self, value: &Value) -> Option<bool> {
        let fits = |text: &str| {
            let length = text.chars().count() as u64;
            self.min <= length && length <= self.max
        };
        match (value, self.items) {
            (Value::String(text), false) => Some(fits(text)),
            (Value::Array(items), true) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Some(fits(text)),
                    _ => None,
                })
                .try_fold(true, |all, item| Some(all && item?)),
            _ => None,
        }
    }
}

/// Keywords that validate nothing (annotations).
const ANNOTATIONS: &[&str] = &[
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Top-level keywords [`PropertyChecks`] takes apart, besides [`ANNOTATIONS`].
const SEPARABLE_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "type",
    "required",
    "properties",
    "additionalProperties",
];

impl PropertyChecks {
    /// The checks of `schema`, when it is only what they take apart (none otherwise: the schema's own
    /// validator then checks each record whole).
    fn of(schema: &Json) -> Option<PropertyChecks> {
        let object = schema.as_object()?;
        let separable = object
            .keys()
            .all(|k| SEPARABLE_KEYWORDS.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()));
        if !separable || has_references(schema) || !subschemas_read_alike(schema) {
            return None;
        }
        // A record is always an object: a `type` that allows none fails every record, whole.
        let allows_object = match object.get("type") {
            None => true,
            Some(Json::String(t)) => t == "object",
            Some(Json::Array(types)) => types.iter().any(|t| t == "object"),
            Some(_) => false,
        };
        if !allows_object {
            return None;
        }
        let required = match object.get("required") {
            None => Vec::new(),
            Some(names) => names
                .as_array()?
                .iter()
                .map(|n| n.as_str().map(Box::from))
                .collect::<Option<Vec<_>>>()?,
        };
        let empty = Map::new();
        let properties = match object.get("properties") {
            None => &empty,
            Some(p) => p.as_object()?,
        };
        let only = match object.get("additionalProperties") {
            None | Some(Json::Bool(true)) => None,
            Some(Json::Bool(false)) => {
                Some(properties.keys().map(|k| Box::from(k.as_str())).collect())
            }
            Some(_) => return None,
        };
        let draft = draft_of(schema);
        let mut checks = Vec::new();
        for (name, subschema) in properties {
            let always_valid = match subschema {
                Json::Bool(b) => *b,
                Json::Object(keywords) => keywords.is_empty(),
                _ => false,
            };
            if always_valid {
                continue;
            }
            let validator = validator_of(subschema, draft).ok()?;
            let shortcuts = Shortcuts {
                by_layout: answers_by_layout(subschema),
                lengths: TextLengths::of(subschema),
            };
            checks.push((Box::from(name.as_str()), validator, shortcuts));
        }
        Some(PropertyChecks {
            required,
            only,
            checks,
        })
    }

    /// Whether the schema these checks were taken from accepts `record`; `passed` remembers text values
    /// that were valid.
    fn is_valid(&self, record: &Record, mut passed: Option<&mut PassedTexts>) -> bool {
        let has_required = self.required.iter().all(|name| record.contains_key(name));
        let no_others = self.only.as_ref().is_none_or(|declared| {
            record
                .keys()
                .all(|key| declared.iter().any(|d| **d == *key))
        });
        has_required
            && no_others
            && self
                .checks
                .iter()
                .enumerate()
                .all(|(i, (name, check, shortcuts))| {
                    record.get(name).is_none_or(|value| {
                        let lengths = shortcuts.lengths.as_ref();
                        if let Some(valid) = lengths.and_then(|l| l.check(value)) {
                            return valid;
                        }
                        let is_valid = || check.is_valid(RecordNode::Value(value));
                        match (value, passed.as_deref_mut()) {
                            (Value::String(text), Some(passed)) => passed.check(i, text, is_valid),
                            (Value::Timestamp(t), Some(passed)) if shortcuts.by_layout => {
                                match t.text_layout() {
                                    Some(layout) => passed.check_layout(i, layout, is_valid),
                                    None => is_valid(),
                                }
                            }
                            _ => is_valid(),
                        }
                    })
                })
    }
}

/// Keywords whose answer for a string depends on its length alone (besides [`ANNOTATIONS`]).
const LENGTH_KEYWORDS: &[&str] = &["type", "minLength", "maxLength"];

/// Whether `subschema` gives every timestamp of one text layout ([`Timestamp::text_layout`]) the same
/// answer: such texts differ only in which ASCII digit stands where, so keywords that read a string's
/// length and a `pattern` that treats every ASCII digit alike cannot tell them apart. A timestamp is
/// always a JSON string, so `type` answers the same for all of them too.
///
/// [`Timestamp::text_layout`]: crate::record::Timestamp::text_layout
fn answers_by_layout(subschema: &Json) -> bool {
    subschema.as_object().is_some_and(|keywords| {
        keywords
            .iter()
            .all(|(keyword, value)| match keyword.as_str() {
                "pattern" => value.as_str().is_some_and(digit_blind),
                other => LENGTH_KEYWORDS.contains(&other) || ANNOTATIONS.contains(&other),
            })
    })
}

/// Whether `pattern` matches a text exactly when it matches the text with any of its ASCII digits changed
/// to others: read as jsonschema compiles it (its ECMA-262 translation, in which `[1-9&&x]` is a class of
/// digits and `&`, not an empty intersection), it holds no digit as a literal and no class with some digits
/// but not all. A pattern the `regex` syntax does not read (a backreference, which can tell `11` from
/// `12`, or a lookaround) is not taken to be blind.
fn digit_blind(pattern: &str) -> bool {
    jsonschema_regex::to_rust_regex(pattern).is_ok_and(|translated| {
        regex_syntax::Parser::new()
            .parse(&translated)
            .is_ok_and(|hir| hir_digit_blind(&hir))
    })
}

fn hir_digit_blind(hir: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        // Word boundaries and anchors: every digit is a word character, and none is a line end.
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(literal) => !literal.0.iter().any(u8::is_ascii_digit),
        HirKind::Class(Class::Unicode(class)) => all_digits_or_none(
            class
                .ranges()
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end()))),
        ),
        HirKind::Class(Class::Bytes(class)) => all_digits_or_none(
            class
                .ranges()
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end()))),
        ),
        HirKind::Repetition(repetition) => hir_digit_blind(&repetition.sub),
        HirKind::Capture(capture) => hir_digit_blind(&capture.sub),
        HirKind::Concat(parts) | HirKind::Alternation(parts) => parts.iter().all(hir_digit_blind),
    }
}

/// Whether a class of these code point ranges holds all ten ASCII digits or none of them.
fn all_digits_or_none(ranges: impl Iterator<Item = (u32, u32)>) -> bool {
    let digits = u32::from(b'0')..=u32::from(b'9');
    let held: usize = ranges
        .map(|(start, end)| {
            let (low, high) = (start.max(*digits.start()), end.min(*digits.end()));
            if low <= high {
                (high - low + 1) as usize
            } else {
                0
            }
        })
        .sum();
    held == 0 || held == 10
}

/// Text values one thread's property checks found valid, remembered so that the same text is found
/// instead of checked again. A property check's answer depends on the value alone (no references, no
/// other member), and a column such as a category repeats a few texts in every record: in templated
/// 1M-row CSV → NDJSON, `pattern` checks were 9 % of the samples, about half of them on the `type`
/// column's few texts (BENCHMARKS.md, "Eleventh pass"). Per thread, so without locks; for one validator's
/// checks only. (Remembering small arrays and objects too, such as a default `metadata`, saved 0.6 % of
/// the instructions and was left out.)
#[derive(Debug, Default)]
pub struct PassedTexts {
    by_check: Vec<Passed>,
}

/// What one property check remembers.
#[derive(Debug, Default)]
struct Passed {
    texts: Vec<Box<str>>,
    /// The timestamp text layouts that passed, one bit each.
    layouts: u8,
    asked: u32,
    found: u32,
    given_up: bool,
}

impl PassedTexts {
    /// The most texts remembered per property.
    const MOST: usize = 32;
    /// Longer texts are checked every time: they seldom repeat, and comparing them costs.
    const LONGEST: usize = 64;
    /// After this many texts looked for, a property where fewer than half were found is checked every
    /// time (its values do not repeat: `id`, `title`).
    const TRIAL: u32 = 1024;

    /// What check `index` remembers.
    fn of_check(&mut self, index: usize) -> &mut Passed {
        if self.by_check.len() <= index {
            self.by_check.resize_with(index + 1, Passed::default);
        }
        &mut self.by_check[index]
    }

    /// `is_valid()` for a timestamp of text layout `layout` for check `index`, which answers by layout alone,
    /// or true when a timestamp of that layout passed it before.
    fn check_layout(&mut self, index: usize, layout: u8, is_valid: impl FnOnce() -> bool) -> bool {
        let bit = 1u8 << (layout & 7);
        let passed = self.of_check(index);
        if passed.layouts & bit != 0 {
            return true;
        }
        let valid = is_valid();
        if valid {
            passed.layouts |= bit;
        }
        valid
    }

    /// `is_valid()` for text `text` of check `index`, or true when `text` passed it before.
    fn check(&mut self, index: usize, text: &str, is_valid: impl FnOnce() -> bool) -> bool {
        if text.len() > Self::LONGEST {
            return is_valid();
        }
        let passed = self.of_check(index);
        if passed.given_up {
            return is_valid();
        }
        passed.asked += 1;
        if passed.texts.iter().any(|t| **t == *text) {
            passed.found += 1;
            return true;
        }
        if passed.asked >= Self::TRIAL && passed.found < passed.asked / 2 {
            *passed = Passed {
                given_up: true,
                ..Passed::default()
            };
            return is_valid();
        }
        let valid = is_valid();
        if valid && passed.texts.len() < Self::MOST {
            passed.texts.push(text.into());
        }
        valid
    }
}

/// Removes the `type` of each top-level property that allows every type its field's values can have;
/// returns what it removed (`id: type`).
fn prove_types(schema: &mut Json, guarantees: &Guarantees<'_>) -> Vec<String> {
    let Some(properties) = schema.get_mut("properties").and_then(Json::as_object_mut) else {
        return Vec::new();
    };
    let mut proven = Vec::new();
    for field in &guarantees.fields {
        let Some(subschema) = properties.get_mut(field.name).and_then(Json::as_object_mut) else {
            continue;
        };
        let allowed = subschema.get("type").and_then(Kinds::allowed_by);
        if allowed.is_some_and(|allowed| field_kinds(field).within(allowed)) {
            subschema.remove("type");
            proven.push(format!("{}: type", field.name));
        }
    }
    proven
}

/// Removes the `required` names of fields in every mapped record (the keyword, when none is left);
/// returns what it removed (`required: id`).
fn prove_required(schema: &mut Json, guarantees: &Guarantees<'_>) -> Vec<String> {
    let Some(object) = schema.as_object_mut() else {
        return Vec::new();
    };
    let Some(required) = object.get_mut("required").and_then(Json::as_array_mut) else {
        return Vec::new();
    };
    let present = |name: &Json| {
        guarantees
            .fields
            .iter()
            .any(|f| f.always_present && name.as_str() == Some(f.name))
    };
    let mut proven = Vec::new();
    required.retain(|name| {
        let keep = !present(name);
        if !keep {
            proven.push(format!("required: {}", name.as_str().unwrap_or_default()));
        }
        keep
    });
    if required.is_empty() {
        object.remove("required");
    }
    proven
}

/// Removes `additionalProperties` when no mapped record can have a member that `properties` does not
/// name: the template emits only its own fields, all named there. Left when `patternProperties` is
/// there, or `unevaluatedProperties` anywhere (it reads which members `additionalProperties` evaluated).
fn prove_no_additional(schema: &mut Json, guarantees: &Guarantees<'_>) -> Vec<String> {
    if !guarantees.only_own_fields || has_keyword(schema, &["unevaluatedProperties"]) {
        return Vec::new();
    }
    let Some(object) = schema.as_object_mut() else {
        return Vec::new();
    };
    if object.contains_key("patternProperties") || !object.contains_key("additionalProperties") {
        return Vec::new();
    }
    let Some(properties) = object.get("properties").and_then(Json::as_object) else {
        return Vec::new();
    };
    if !guarantees
        .fields
        .iter()
        .all(|f| properties.contains_key(f.name))
    {
        return Vec::new();
    }
    object.remove("additionalProperties");
    vec!["additionalProperties".to_owned()]
}

/// True when any of `keywords` is a member name anywhere in `schema`.
fn has_keyword(schema: &Json, keywords: &[&str]) -> bool {
    match schema {
        Json::Object(map) => map
            .iter()
            .any(|(key, value)| keywords.contains(&key.as_str()) || has_keyword(value, keywords)),
        Json::Array(items) => items.iter().any(|item| has_keyword(item, keywords)),
        _ => false,
    }
}

/// True when `schema` has a reference anywhere (`$ref`, `$dynamicRef`, `$recursiveRef`).
fn has_references(schema: &Json) -> bool {
    has_keyword(schema, &["$ref", "$dynamicRef", "$recursiveRef"])
}

/// True when each of `schema`'s subschemas, compiled on its own with the root's draft (`draft_of`), is read
/// as it is inside `schema`: the root names a standard draft or none (a custom meta-schema brings
/// vocabularies of its own), and nothing below the root names one or declares vocabularies (the validator
/// switches drafts at any `$schema`, `$id` or not: `format` assertion, which keywords exist and what an
/// integer is all follow it).
fn subschemas_read_alike(schema: &Json) -> bool {
    let Some(object) = schema.as_object() else {
        return false;
    };
    let standard_draft = match object.get("$schema") {
        None => true,
        Some(Json::String(uri)) => {
            jsonschema::Draft::from_schema_uri(uri) != jsonschema::Draft::Unknown
        }
        Some(_) => false,
    };
    let named_below = object
        .iter()
        .filter(|(key, _)| *key != "$schema")
        .any(|(_, v)| has_keyword(v, &["$schema", "$vocabulary"]));
    standard_draft && !named_below
}

/// One violation as a per-record error: the field is the instance's JSON pointer, the message names the rule.
fn violation_error(violation: &jsonschema::ValidationError<'_>) -> Error {
    let pointer = violation.instance_path().to_string();
    let field = if pointer.is_empty() {
        "/".to_owned()
    } else {
        pointer
    };
    let message = format!("{violation} ({})", violation.kind().keyword());
    Error::record(
        Stage::Validate,
        Position::default().with_field(field),
        message,
    )
}

/// `schema` compiled under `draft` to validate records in place: the one way every validator here is built.
fn validator_of(
    schema: &Json,
    draft: jsonschema::Draft,
) -> std::result::Result<jsonschema::Validator<RecordJson>, String> {
    jsonschema::options_for::<RecordJson>()
        .with_draft(draft)
        .build(schema)
        .map_err(|e| e.to_string())
}

fn draft_of(schema: &Json) -> jsonschema::Draft {
    let uri = schema
        .get("$schema")
        .and_then(Json::as_str)
        .unwrap_or_default();
    match uri {
        u if u.contains("draft-04") => jsonschema::Draft::Draft4,
        u if u.contains("draft-06") => jsonschema::Draft::Draft6,
        u if u.contains("draft-07") => jsonschema::Draft::Draft7,
        u if u.contains("2019-09") => jsonschema::Draft::Draft201909,
        _ => jsonschema::Draft::Draft202012,
    }
}

/// A record as the JSON a schema sees: numbers exact, dates and timestamps as ISO 8601 strings, bytes as
/// base64 strings.
pub fn record_to_json(record: &Record) -> Json {
    let map: Map<String, Json> = record
        .iter()
        .map(|(k, v)| (k.to_string(), value_to_json(v)))
        .collect();
    Json::Object(map)
}

fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::Number((*i).into()),
        Value::Float(x) if x.is_finite() => {
            Number::from_str(&value.to_text()).map_or(Json::Null, Json::Number)
        }
        Value::Decimal(d) => {
            Number::from_str(d.as_str()).map_or_else(|_| Json::String(d.to_string()), Json::Number)
        }
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Object(record) => record_to_json(record),
        other => Json::String(other.to_text()),
    }
}

// Records as a `jsonschema` instance representation (`jsonschema::options_for`).
//
// Every answer below is the answer `jsonschema`'s serde_json representation gives for `record_to_json`'s
// output: same JSON types, same strings, and numbers with the very text serde_json's `Number` would hold
// (its `arbitrary_precision` text), so the numeric keywords, which read numbers through `JsonNumber`, decide
// alike. Record keys are unique (`Record::insert` replaces; `push_unchecked` callers promise it), so a
// record and the `Map` built from it have the same members.

/// The `jsonschema` representation of ferry records: validation reads [`Record`]s and [`Value`]s in place.
struct RecordJson;

impl Representation for RecordJson {
    type Node<'a> = RecordNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(
        _buffer: &mut (),
        string: &str,
        f: impl FnOnce(RecordNode<'_>) -> T,
    ) -> T {
        f(RecordNode::Str(string))
    }
}

/// One JSON value of a record: the record itself, one of its values (at any depth), or a bare string
/// (`propertyNames` validates names as string nodes).
#[derive(Clone, Copy)]
enum RecordNode<'a> {
    Root(&'a Record),
    Value(&'a Value),
    Str(&'a str),
}

impl<'a> RecordNode<'a> {
    /// The number a value is in JSON, `None` for every other value. A finite float is its shortest text
    /// (`Value::to_text`); a decimal whose text is not a JSON number is a JSON string, as in
    /// [`record_to_json`].
    fn number(value: &'a Value) -> Option<RecordNumber<'a>> {
        match value {
            Value::Int(i) => Some(RecordNumber::Int(*i)),
            Value::Float(x) if x.is_finite() => json_number_text(&value.to_text())
                .map(|text| RecordNumber::Text(Cow::Owned(text.into_owned()))),
            Value::Decimal(d) => json_number_text(d.as_str()).map(RecordNumber::Text),
            _ => None,
        }
    }
}

impl<'a> Node<'a, RecordJson> for RecordNode<'a> {
    type Object = RecordObject<'a>;
    type Array = RecordArray<'a>;
    type Number = RecordNumber<'a>;

    fn as_object(&self) -> Option<RecordObject<'a>> {
        match *self {
            RecordNode::Root(record) | RecordNode::Value(Value::Object(record)) => {
                Some(RecordObject(record))
            }
            _ => None,
        }
    }

    fn as_array(&self) -> Option<RecordArray<'a>> {
        match self {
            RecordNode::Value(Value::Array(items)) => Some(RecordArray(items)),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match *self {
            RecordNode::Str(s) => Some(Cow::Borrowed(s)),
            RecordNode::Value(value) => match value {
                Value::String(s) => Some(Cow::Borrowed(s)),
                Value::Decimal(d) if json_number_text(d.as_str()).is_none() => {
                    Some(Cow::Borrowed(d.as_str()))
                }
                Value::Float(x) if !x.is_finite() => Some(Cow::Owned(value.to_text())),
                Value::Bytes(_) | Value::Date(_) | Value::Timestamp(_) => {
                    // `to_text`, sized up front (a timestamp's text is at most 35 bytes).
                    let mut text = String::with_capacity(40);
                    value.write_text(&mut text);
                    Some(Cow::Owned(text))
                }
                _ => None,
            },
            RecordNode::Root(_) => None,
        }
    }

    fn as_number(&self) -> Option<RecordNumber<'a>> {
        match self {
            RecordNode::Value(value) => RecordNode::number(value),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self {
            RecordNode::Value(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        self.json_type() == JsonType::Null
    }

    fn is_number(&self) -> bool {
        self.json_type() == JsonType::Number
    }

    fn json_type(&self) -> JsonType {
        match self {
            RecordNode::Root(_) => JsonType::Object,
            RecordNode::Str(_) => JsonType::String,
            RecordNode::Value(value) => match value {
                Value::Null => JsonType::Null,
                Value::Bool(_) => JsonType::Boolean,
                Value::Int(_) => JsonType::Number,
                // A finite float whose text serde_json would not take is null in `value_to_json` (ryu's
                // text always is a JSON number; the check keeps the two paths equal regardless).
                Value::Float(x) if x.is_finite() => {
                    if RecordNode::number(value).is_some() {
                        JsonType::Number
                    } else {
                        JsonType::Null
                    }
                }
                Value::Decimal(d) if json_number_text(d.as_str()).is_some() => JsonType::Number,
                Value::Float(_)
                | Value::Decimal(_)
                | Value::String(_)
                | Value::Bytes(_)
                | Value::Date(_)
                | Value::Timestamp(_) => JsonType::String,
                Value::Array(_) => JsonType::Array,
                Value::Object(_) => JsonType::Object,
            },
        }
    }

    fn string_length(&self) -> Option<u64> {
        let count = |s: &str| s.chars().count() as u64;
        match *self {
            RecordNode::Str(s) => Some(count(s)),
            RecordNode::Value(Value::String(s)) => Some(count(s)),
            _ => self.as_string().map(|s| count(&s)),
        }
    }

    fn equals_value(&self, expected: &Json) -> bool {
        match expected {
            Json::Null => self.is_null(),
            Json::Bool(b) => self.as_boolean() == Some(*b),
            Json::String(s) => self.as_string().is_some_and(|mine| mine == s.as_str()),
            Json::Number(n) => self.as_number().is_some_and(|mine| number_equals(&mine, n)),
            Json::Array(items) => self.as_array().is_some_and(|array| {
                array.0.len() == items.len()
                    && array
                        .0
                        .iter()
                        .zip(items)
                        .all(|(value, item)| RecordNode::Value(value).equals_value(item))
            }),
            // Same size and every member of the record present and equal in `map`: with unique keys on
            // both sides, the same key set (what `cmp::equal` decides on the sorted maps).
            Json::Object(map) => self.as_object().is_some_and(|object| {
                object.0.len() == map.len()
                    && object.0.iter().all(|(key, value)| {
                        map.get(&**key)
                            .is_some_and(|other| RecordNode::Value(value).equals_value(other))
                    })
            }),
        }
    }

    fn to_value(&self) -> Cow<'a, Json> {
        Cow::Owned(match self {
            RecordNode::Root(record) => record_to_json(record),
            RecordNode::Value(value) => value_to_json(value),
            RecordNode::Str(s) => Json::String((*s).to_owned()),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        // Tagged by variant: a record and a value (or a string's bytes) never share an identity.
        Some(match self {
            RecordNode::Value(value) => {
                NodeIdentity::tagged(std::ptr::from_ref(*value) as usize, 0)
            }
            RecordNode::Root(record) => {
                NodeIdentity::tagged(std::ptr::from_ref(*record) as usize, 1)
            }
            RecordNode::Str(s) => NodeIdentity::tagged(s.as_ptr() as usize, 2),
        })
    }

    fn container_identity(&self) -> Option<NodeIdentity> {
        match self {
            RecordNode::Root(_) | RecordNode::Value(Value::Array(_) | Value::Object(_)) => {
                self.identity()
            }
            _ => None,
        }
    }
}

/// `cmp::equal_numbers`, with integers settled without building their text.
fn number_equals(mine: &RecordNumber<'_>, expected: &Number) -> bool {
    if let RecordNumber::Int(i) = mine {
        if let Some(j) = expected.as_i64() {
            return *i == j;
        }
        if expected.as_u64().is_some() {
            // Above i64::MAX.
            return false;
        }
    }
    jsonschema::json::cmp::equal_numbers(mine, expected)
}

/// A record as a JSON object.
#[derive(Clone, Copy)]
struct RecordObject<'a>(&'a Record);

impl<'a> Object<'a, RecordJson> for RecordObject<'a> {
    type Node = RecordNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &Box<str>) -> Option<RecordNode<'a>> {
        self.0.get(key).map(RecordNode::Value)
    }

    fn members(&self) -> Members<'a> {
        Members::new(self.0)
    }
}

/// Members pass over a record in key order, as serde_json's (`BTreeMap`) objects iterate: keywords that
/// walk members (`properties`, `additionalProperties`, `patternProperties`, …) report in that order.
/// Records of up to [`INLINE_MEMBERS`] fields are sorted without allocating.
struct Members<'a> {
    inline: [(&'a str, &'a Value); INLINE_MEMBERS],
    /// The fields instead of `inline` when there are more than [`INLINE_MEMBERS`].
    heap: Vec<(&'a str, &'a Value)>,
    len: usize,
    next: usize,
}

const INLINE_MEMBERS: usize = 16;

/// Filler for the unused slots of [`Members::inline`].
static NULL: Value = Value::Null;

impl<'a> Members<'a> {
    fn new(record: &'a Record) -> Members<'a> {
        let len = record.len();
        let mut members = Members {
            inline: [("", &NULL); INLINE_MEMBERS],
            heap: Vec::new(),
            len,
            next: 0,
        };
        if len > INLINE_MEMBERS {
            members.heap = record.iter().map(|(k, v)| (&**k, v)).collect();
        } else {
            for (slot, (k, v)) in members.inline.iter_mut().zip(record.iter()) {
                *slot = (&**k, v);
            }
        }
        let fields = if len > INLINE_MEMBERS {
            &mut members.heap[..]
        } else {
            &mut members.inline[..len]
        };
        if !fields.is_sorted_by(|a, b| a.0 <= b.0) {
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        members
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, RecordNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let fields = if self.len > INLINE_MEMBERS {
            &self.heap[..]
        } else {
            &self.inline[..]
        };
        let (key, value) = *fields.get(self.next).filter(|_| self.next < self.len)?;
        self.next += 1;
        Some((key, RecordNode::Value(value)))
    }
}

/// An array value.
#[derive(Clone, Copy)]
struct RecordArray<'a>(&'a [Value]);

impl<'a> Array<'a, RecordJson> for RecordArray<'a> {
    type Node = RecordNode<'a>;
    type ElementsIter =
        std::iter::Map<std::slice::Iter<'a, Value>, fn(&'a Value) -> RecordNode<'a>>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> Self::ElementsIter {
        self.0.iter().map(RecordNode::Value)
    }

    fn is_unique(&self) -> bool {
        // Plain strings (the usual tag list) are equal exactly when their text is; anything else goes
        // through the JSON values and `jsonschema`'s own algorithm.
        let strings: Option<Vec<&str>> = self
            .0
            .iter()
            .map(|value| match value {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        match strings {
            Some(strings) if strings.len() <= 16 => strings
                .iter()
                .enumerate()
                .all(|(i, s)| !strings[i + 1..].contains(s)),
            Some(strings) => {
                let mut seen = std::collections::HashSet::with_capacity(strings.len());
                strings.into_iter().all(|s| seen.insert(s))
            }
            None => {
                let values: Vec<Cow<'a, Json>> =
                    self.elements().map(|element| element.to_value()).collect();
                jsonschema::json::unique::is_unique(&values)
            }
        }
    }
}

/// A JSON number: an integer, or the text serde_json's `Number` would hold for it.
#[derive(Clone)]
enum RecordNumber<'a> {
    Int(i64),
    Text(Cow<'a, str>),
}

impl JsonNumber for RecordNumber<'_> {
    fn as_u64(&self) -> Option<u64> {
        match self {
            RecordNumber::Int(i) => u64::try_from(*i).ok(),
            RecordNumber::Text(text) => text.parse().ok(),
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            RecordNumber::Int(i) => Some(*i),
            RecordNumber::Text(text) => text.parse().ok(),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            // Correctly rounded, as parsing its decimal text is.
            RecordNumber::Int(i) => Some(*i as f64),
            RecordNumber::Text(text) => text.parse::<f64>().ok().filter(|x| x.is_finite()),
        }
    }

    fn as_str(&self) -> Cow<'_, str> {
        match self {
            RecordNumber::Int(i) => Cow::Owned(itoa::Buffer::new().format(*i).to_owned()),
            RecordNumber::Text(text) => Cow::Borrowed(text),
        }
    }

    fn to_number(&self) -> Cow<'_, Number> {
        Cow::Owned(match self {
            RecordNumber::Int(i) => Number::from(*i),
            // The text passed `json_number_text`, which takes exactly what `Number::from_str` takes.
            RecordNumber::Text(text) => Number::from_str(text).unwrap_or_else(|_| Number::from(0)),
        })
    }

    /// `jsonschema`'s integer test for serde_json numbers, without building a `Number` where the text
    /// settles it.
    fn is_integer(&self) -> bool {
        let RecordNumber::Text(text) = self else {
            return true;
        };
        if self.as_i64().is_some() || self.as_u64().is_some() {
            return true;
        }
        if let Some((integer, fraction)) = text.split_once('.') {
            if !fraction.contains(['e', 'E']) {
                return fraction.bytes().all(|b| b == b'0')
                    && integer.bytes().all(|b| b.is_ascii_digit() || b == b'-');
            }
        }
        JsonNumber::is_integer(&*self.to_number())
    }
}

/// The text serde_json's `Number::from_str` (with `arbitrary_precision`) keeps for `text`, or `None` where
/// it fails: the JSON number grammar, with the exponent written `e` and always signed (`1E5` → `1e+5`).
fn json_number_text(text: &str) -> Option<Cow<'_, str>> {
    let bytes = text.as_bytes();
    let digits_from = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_from(i + 1),
        _ => return None,
    }
    if bytes.get(i) == Some(&b'.') {
        let end = digits_from(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    let exponent_at = i;
    match bytes.get(i) {
        None => return Some(Cow::Borrowed(text)),
        Some(b'e' | b'E') => i += 1,
        Some(_) => return None,
    }
    let sign = match bytes.get(i) {
        Some(b'+') => Some('+'),
        Some(b'-') => Some('-'),
        _ => None,
    };
    let digits_at = i + usize::from(sign.is_some());
    let end = digits_from(digits_at);
    if end == digits_at || end != bytes.len() {
        return None;
    }
    if bytes.get(exponent_at) == Some(&b'e') && sign.is_some() {
        return Some(Cow::Borrowed(text));
    }
    let mut normal = String::with_capacity(text.len() + 1);
    normal.push_str(text.get(..exponent_at)?);
    normal.push('e');
    normal.push(sign.unwrap_or('+'));
    normal.push_str(text.get(digits_at..)?);
    Some(Cow::Owned(normal))
}

/// The stated types of a schema's top-level properties.
fn property_types(schema: &Json) -> Vec<PropertyType> {
    let Some(properties) = schema.get("properties").and_then(Json::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .filter_map(|(name, spec)| {
            let json_type = match spec.get("type")? {
                Json::String(t) => t.clone(),
                Json::Array(types) => types
                    .iter()
                    .filter_map(Json::as_str)
                    .find(|t| *t != "null")?
                    .to_owned(),
                _ => return None,
            };
            let format = spec.get("format").and_then(Json::as_str).map(str::to_owned);
            Some(PropertyType {
                name: name.clone(),
                json_type,
                format,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Timestamp;

    fn messages(v: &SchemaValidator, r: &Record) -> Vec<String> {
        match v.validate(r) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_constant_is_checked_once_only_when_it_passes_and_nothing_refers_into_the_schema() {
        let schema = serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"at": {"type": "string", "pattern": "^2"}, "n": {"type": "integer", "maximum": 5}}
        });
        let good: Vec<(Key, Value)> = vec![("at".into(), Value::String("2024".into()))];
        let bad: Vec<(Key, Value)> = vec![("at".into(), Value::String("x".into()))];
        let full = SchemaValidator::compile("t", &schema).unwrap();
        let once = SchemaValidator::compile("t", &schema)
            .unwrap()
            .with_constants(&good)
            .unwrap();
        assert_eq!(once.checked_once(), ["at"]);
        let kept = SchemaValidator::compile("t", &schema)
            .unwrap()
            .with_constants(&bad)
            .unwrap();
        assert!(kept.checked_once().is_empty());
        // The property stays declared: additionalProperties still rejects only the undeclared one.
        let mut r = Record::new();
        r.insert("at", Value::String("2024".into()));
        r.insert("n", Value::Int(9));
        r.insert("extra", Value::Int(1));
        assert_eq!(messages(&once, &r), messages(&full, &r));
        assert_eq!(messages(&once, &r).len(), 2, "{:?}", messages(&once, &r));
        let mut r = Record::new();
        r.insert("at", Value::String("x".into()));
        assert_eq!(messages(&kept, &r), messages(&full, &r));
        assert_eq!(messages(&kept, &r).len(), 1);
        // A schema with a reference is left whole.
        let with_ref = serde_json::json!({
            "$defs": {"d": {"pattern": "^2"}},
            "properties": {"at": {"$ref": "#/$defs/d"}}
        });
        let v = SchemaValidator::compile("t", &with_ref)
            .unwrap()
            .with_constants(&good)
            .unwrap();
        assert!(v.checked_once().is_empty());
    }

    /// A template compiled from its YAML fields (`fields:` follows the text).
    fn template(fields: &str, keep_unmapped: bool) -> crate::template::CompiledTemplate {
        let text = format!("name: t\nkeep_unmapped: {keep_unmapped}\nfields:\n{fields}");
        crate::template::Template::parse(&text, crate::template::TemplateSource::Builtin("t"))
            .unwrap()
            .compile()
            .unwrap()
    }

    /// The full and the reduced validator of `schema` for `template`.
    fn full_and_reduced(
        schema: &Json,
        template: &crate::template::CompiledTemplate,
    ) -> (SchemaValidator, SchemaValidator) {
        let full = SchemaValidator::compile("t", schema).unwrap();
        let reduced = SchemaValidator::compile("t", schema)
            .unwrap()
            .with_guarantees(&template.guarantees())
            .unwrap();
        (full, reduced)
    }

    /// Source records for the templates below: every field missing, blank, null, text, a number, a
    /// list, and an extra field.
    fn sources() -> Vec<Record> {
        let values = [
            Value::Null,
            Value::String(String::new()),
            Value::String(" 7 ".into()),
            Value::String("word".into()),
            Value::String("2024-05-01".into()),
            Value::Int(3),
            Value::Float(f64::NAN),
            Value::Array(vec![Value::String("a".into())]),
        ];
        let names = ["a", "b", "c", "d", "extra"];
        let mut records = vec![Record::new()];
        for (i, value) in values.iter().enumerate() {
            for (j, name) in names.iter().enumerate() {
                let mut r = Record::new();
                r.insert(*name, value.clone());
                r.insert(
                    names[(j + 1) % names.len()],
                    values[(i + j) % values.len()].clone(),
                );
                records.push(r);
            }
        }
        records
    }

    /// Maps every source with `template` and checks that the reduced validator rejects exactly the
    /// records the full one does, with its messages; returns how many mapped records each rejected.
    fn same_results(
        full: &SchemaValidator,
        reduced: &SchemaValidator,
        template: &crate::template::CompiledTemplate,
    ) -> usize {
        let evaluator = template.evaluator(chrono::DateTime::UNIX_EPOCH.fixed_offset());
        let mut rejected = 0;
        for source in sources() {
            let Ok(crate::template::Mapped::Keep(mapped)) = template.map(&evaluator, &source)
            else {
                continue;
            };
            let expected = messages(full, &mapped);
            assert_eq!(messages(reduced, &mapped), expected, "{mapped:?}");
            rejected += usize::from(!expected.is_empty());
        }
        rejected
    }

    #[test]
    fn a_type_is_proven_when_every_type_the_field_can_have_is_allowed() {
        let t = template(
            "  - {name: a, type: integer, required: true}\n\
             \x20 - {name: b, type: integer, default: 0}\n\
             \x20 - {name: c, type: date}\n\
             \x20 - {name: d, type: string, default: none}\n",
            false,
        );
        // integer within number; a date is a string, null when the source has none; a default's type.
        let schema = serde_json::json!({"properties": {
            "a": {"type": "number", "maximum": 5}, "b": {"type": ["integer"]},
            "c": {"type": ["string", "null"], "minLength": 10}, "d": {"type": "string"}
        }});
        let (full, reduced) = full_and_reduced(&schema, &t);
        assert_eq!(
            reduced.proven(),
            ["a: type", "b: type", "c: type", "d: type"]
        );
        assert!(same_results(&full, &reduced, &t) > 0);
    }

    #[test]
    fn a_type_the_template_cannot_prove_is_kept() {
        let t = template(
            "  - {name: a, type: number, required: true}\n\
             \x20 - {name: b, type: integer, default: none}\n\
             \x20 - {name: c, type: string}\n\
             \x20 - {name: d}\n\
             \x20 - {name: extra, type: decimal, required: true}\n",
            false,
        );
        // A float may be a string (not finite); a default of another type; a null; no declared type; a
        // decimal is not known to be an integer.
        let schema = serde_json::json!({"properties": {
            "a": {"type": "number"}, "b": {"type": "integer"}, "c": {"type": "string"},
            "d": {"type": "string"}, "extra": {"type": "integer"}
        }});
        let (full, reduced) = full_and_reduced(&schema, &t);
        assert!(reduced.proven().is_empty(), "{:?}", reduced.proven());
        assert!(same_results(&full, &reduced, &t) > 0);
        // A dropped field replaced by the source's (keep_unmapped) is any value.
        let t = template(
            "  - {name: a, type: string, from: b, transforms: [drop]}\n",
            true,
        );
        let schema = serde_json::json!({"properties": {"a": {"type": "string"}}});
        let (full, reduced) = full_and_reduced(&schema, &t);
        assert!(reduced.proven().is_empty(), "{:?}", reduced.proven());
        assert!(same_results(&full, &reduced, &t) > 0);
    }

    #[test]
    fn required_is_proven_for_fields_in_every_mapped_record() {
        // Not dropped means present, null or not.
        let t = template(
            "  - {name: a, type: string}\n  - {name: b, required: true}\n  - {name: c, transforms: [drop]}\n",
            false,
        );
        let schema = serde_json::json!({"required": ["a", "b", "c", "z"],
            "properties": {"a": {"type": "string"}}});
        let (full, reduced) = full_and_reduced(&schema, &t);
        // c can be dropped and z is never mapped: both stay required.
        assert_eq!(reduced.proven(), ["required: a", "required: b"]);
        assert_eq!(reduced.schema["required"], serde_json::json!(["c", "z"]));
        assert!(same_results(&full, &reduced, &t) > 0);
        // All proven: the keyword goes.
        let schema = serde_json::json!({"required": ["a"], "properties": {"a": {"minLength": 2}}});
        let (full, reduced) = full_and_reduced(&schema, &t);
        assert_eq!(reduced.proven(), ["required: a"]);
        assert!(reduced.schema.get("required").is_none());
        assert!(same_results(&full, &reduced, &t) > 0);
    }

    #[test]
    fn additional_properties_is_proven_when_the_template_emits_only_declared_fields() {
        let fields = "  - {name: a, type: string}\n  - {name: b}\n";
        let schema = serde_json::json!({"additionalProperties": false,
            "properties": {"a": {"minLength": 2}, "b": {"type": "string"}, "unused": {}}});
        let t = template(fields, false);
        let (full, reduced) = full_and_reduced(&schema, &t);
        // `b` has no declared type: its `type` stays.
        assert_eq!(reduced.proven(), ["additionalProperties"]);
        assert!(same_results(&full, &reduced, &t) > 0);
        // Kept: source fields pass through; a field `properties` does not name; patternProperties;
        // unevaluatedProperties anywhere; a reference anywhere (the schema is left whole).
        let cases = [
            (fields, true, schema.clone()),
            (
                "  - {name: a}\n  - {name: c}\n",
                false,
                serde_json::json!({"additionalProperties": false, "properties": {"a": {}}}),
            ),
            (
                fields,
                false,
                serde_json::json!({"additionalProperties": {"type": "integer"},
                    "properties": {"a": {}, "b": {}}, "patternProperties": {"^a": {"type": "string"}}}),
            ),
            (
                fields,
                false,
                serde_json::json!({"additionalProperties": false, "properties": {"a": {}, "b": {}},
                    "anyOf": [{"unevaluatedProperties": false}]}),
            ),
            (
                fields,
                false,
                serde_json::json!({"additionalProperties": false, "$defs": {"s": {"type": "string"}},
                    "properties": {"a": {"$ref": "#/$defs/s"}, "b": {"type": "string"}}}),
            ),
        ];
        for (fields, keep_unmapped, schema) in cases {
            let t = template(fields, keep_unmapped);
            let (full, reduced) = full_and_reduced(&schema, &t);
            assert!(
                !reduced.proven().iter().any(|p| p == "additionalProperties"),
                "{schema}: {:?}",
                reduced.proven()
            );
            same_results(&full, &reduced, &t);
        }
    }

    #[test]
    fn reduced_messages_are_the_full_schemas() {
        // The reduced schema no longer has `type` or `required`, but a record it rejects for its length is
        // reported with every violation of the schema as written (here only the length, as before).
        let t = template("  - {name: a, type: string, required: true}\n", false);
        let schema = serde_json::json!({"required": ["a"], "additionalProperties": false,
            "properties": {"a": {"type": "string", "minLength": 3}}});
        let (full, reduced) = full_and_reduced(&schema, &t);
        assert_eq!(
            reduced.proven(),
            ["a: type", "required: a", "additionalProperties"]
        );
        let mut r = Record::new();
        r.insert("a", Value::String("x".into()));
        assert_eq!(messages(&reduced, &r), messages(&full, &r));
        assert_eq!(messages(&reduced, &r).len(), 1);
        // Constants, then guarantees: both reductions, the messages still the full schema's.
        let t = template(
            "  - {name: a, type: string, required: true}\n  - {name: at, compute: \"'x'\"}\n",
            false,
        );
        let schema = serde_json::json!({"additionalProperties": false,
            "properties": {"a": {"type": "string", "minLength": 3}, "at": {"const": "x"}}});
        let constants = t.constants(&t.evaluator(chrono::DateTime::UNIX_EPOCH.fixed_offset()));
        let reduced = SchemaValidator::compile("t", &schema)
            .unwrap()
            .with_constants(&constants)
            .unwrap()
            .with_guarantees(&t.guarantees())
            .unwrap();
        assert_eq!(reduced.checked_once(), ["at"]);
        assert_eq!(reduced.proven(), ["a: type", "additionalProperties"]);
        let full = SchemaValidator::compile("t", &schema).unwrap();
        assert!(same_results(&full, &reduced, &t) > 0);
    }

    /// The JSON types claimed for a declared type hold for whatever `coerce` makes of any value.
    #[test]
    fn coerced_values_have_the_types_claimed_for_their_declared_type() {
        let mut values = interesting_values();
        values.extend(
            [
                " 12 ",
                "1.5",
                "true",
                "2024-05-01",
                "2024-05-01T10:00:00Z",
                "AQID",
                "[1]",
                "{}",
                "nan",
                "inf",
            ]
            .map(|s| Value::String(s.into())),
        );
        values.extend([f64::NAN, f64::INFINITY, -0.0, 1e300].map(Value::Float));
        let types = [
            FieldType::String,
            FieldType::Integer,
            FieldType::Number,
            FieldType::Decimal,
            FieldType::Boolean,
            FieldType::Date,
            FieldType::Datetime,
            FieldType::Array,
            FieldType::Object,
            FieldType::Bytes,
        ];
        let mut coerced = 0;
        for ty in types {
            for value in &values {
                if let Ok(v) = ty.coerce(value.clone()) {
                    if v != Value::Null {
                        assert!(
                            Kinds::of_value(&v).within(Kinds::of_type(ty)),
                            "{ty:?}: {value:?} became {v:?}"
                        );
                        coerced += 1;
                    }
                }
            }
        }
        assert!(coerced > 50, "{coerced}");
    }

    #[test]
    fn violations_name_the_field_and_rule() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["id"],
            "properties": {"title": {"type": "string", "minLength": 1}, "n": {"type": "integer", "maximum": 5}}
        });
        let v = SchemaValidator::compile("test", &schema).unwrap();
        let mut r = Record::new();
        r.insert("title", Value::String(String::new()));
        r.insert("n", Value::Int(9));
        let errors = v.validate(&r).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("field \"/title\"") && t.contains("minLength")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("field \"/n\"") && t.contains("maximum")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("\"id\" is a required property")),
            "{text:?}"
        );
    }

    #[test]
    fn invalid_schema_is_a_configuration_error() {
        let err = SchemaValidator::compile("bad", &serde_json::json!({"type": 12})).unwrap_err();
        assert!(err.is_config(), "{err}");
    }

    /// The reference: what `validate` did before it read records in place — build `record_to_json`'s
    /// serde_json value and validate that with `jsonschema`'s serde_json representation.
    fn reference_validator(schema: &Json) -> jsonschema::Validator {
        jsonschema::options()
            .with_draft(draft_of(schema))
            .build(schema)
            .unwrap()
    }

    fn reference_errors(validator: &jsonschema::Validator, record: &Record) -> (bool, Vec<String>) {
        let instance = record_to_json(record);
        let errors = validator
            .iter_errors(&instance)
            .map(|violation| violation_error(&violation).to_string())
            .collect();
        (validator.is_valid(&instance), errors)
    }

    fn direct_errors(validator: &SchemaValidator, record: &Record) -> (bool, Vec<String>) {
        let errors = match validator.validate(record) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        (
            validator.validator.is_valid(RecordNode::Root(record)),
            errors,
        )
    }

    fn decimal(text: &str) -> Value {
        Value::Decimal(crate::record::Decimal::parse(text).unwrap())
    }

    fn object(fields: &[(&str, Value)]) -> Value {
        let mut r = Record::new();
        for (k, v) in fields {
            r.insert(*k, v.clone());
        }
        Value::Object(r)
    }

    fn strings(items: &[&str]) -> Value {
        Value::Array(
            items
                .iter()
                .map(|s| Value::String((*s).to_owned()))
                .collect(),
        )
    }

    /// Values with every JSON shape and every ferry type, including the edge cases of the mapping.
    fn interesting_values() -> Vec<Value> {
        let date = chrono::NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let ts = crate::record::Timestamp::parse("2024-05-01T10:00:00.5+02:00").unwrap();
        let ts_utc = crate::record::Timestamp::parse("2010-11-01T15:07:00Z").unwrap();
        let many: Vec<String> = (0..20).map(|i| format!("t{}", i % 19)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(1),
            Value::Int(-7),
            Value::Int(5),
            Value::Int(12),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
            Value::Float(1.0),
            Value::Float(2.5),
            Value::Float(0.75),
            Value::Float(-0.0),
            Value::Float(1e20),
            Value::Float(1e16),
            Value::Float(1e-7),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            decimal("1.0"),
            decimal("1.10"),
            decimal("0.10"),
            decimal("12345678901234567890123"),
            decimal("18446744073709551616"),
            decimal("1E2"),
            decimal("2.5e-3"),
            decimal("-0"),
            decimal(".5"),
            decimal("007"),
            decimal("1."),
            Value::String(String::new()),
            Value::String("1".into()),
            Value::String("añé".into()),
            Value::String("日本".into()),
            Value::String("🦀🦀🦀".into()),
            Value::String("abcde".into()),
            Value::String("ABC".into()),
            Value::String("2024-05-01".into()),
            Value::Bytes(vec![1, 2, 3, 250]),
            Value::Bytes(Vec::new()),
            Value::Date(date),
            Value::Timestamp(ts),
            Value::Timestamp(ts_utc),
            strings(&["a", "b", "c"]),
            strings(&["a", "b", "a"]),
            strings(&["", "x"]),
            strings(&many),
            Value::Array(vec![Value::Int(1), decimal("1.0")]),
            Value::Array(vec![Value::Int(1), Value::Float(2.0), decimal("3")]),
            Value::Array(vec![Value::String("2024-05-01".into()), Value::Date(date)]),
            Value::Array(vec![
                object(&[("a", Value::Int(1))]),
                object(&[("a", decimal("1.00"))]),
            ]),
            Value::Array(vec![object(&[("v", Value::Int(11))]), Value::Null]),
            Value::Array(Vec::new()),
            object(&[]),
            object(&[("x", Value::Int(3)), ("tags", strings(&["a", ""]))]),
            object(&[("x", Value::Float(-1.5)), ("k", Value::Int(1))]),
            object(&[("k", decimal("1.0"))]),
            object(&[
                ("zed", Value::Null),
                ("x", decimal("1e400")),
                ("alpha", Value::Bool(true)),
            ]),
        ]
    }

    fn schemas() -> Vec<Json> {
        [
            // Types, integer against number.
            r#"{"properties": {"a": {"type": "integer"}, "b": {"type": "number"}, "c": {"type": "string"},
                "d": {"type": "boolean"}, "e": {"type": "null"}, "o": {"type": "object"},
                "arr": {"type": "array"}, "m": {"type": ["integer", "string"]}}}"#,
            // Draft 4 decides `integer` on how the number is written.
            r#"{"$schema": "http://json-schema.org/draft-04/schema#",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": ["integer", "null"]}}}"#,
            // Lengths in code points; patterns; strings from dates, timestamps and bytes.
            r#"{"properties": {"a": {"minLength": 3, "maxLength": 4}, "b": {"type": "string", "minLength": 1},
                "c": {"pattern": "^\\d{4}-\\d{2}"}, "d": {"pattern": "^[^A-Z]*$"},
                "e": {"type": "string", "maxLength": 20, "pattern": "T\\d{2}:"},
                "o": {"contentEncoding": "base64", "minLength": 4}}}"#,
            // enum and const: 1 against 1.0, decimals, mixed types, nested values.
            r#"{"properties": {"a": {"enum": [1, "1", 2.5, 12345678901234567890123, null, [1, "b"], {"k": 1.0}]},
                "b": {"const": 1.0}, "c": {"const": 0.1}, "d": {"enum": ["2024-05-01", "AQID+g==", 100]},
                "e": {"const": 18446744073709551616}, "m": {"enum": [true, 0, -7.0, 1e20]}}}"#,
            // required, additionalProperties (the unexpected names are listed in key order).
            r#"{"required": ["a", "b", "id"], "properties": {"a": {}, "b": {"type": "integer"}},
                "additionalProperties": false}"#,
            r#"{"properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "integer"}}"#,
            // Nested objects and arrays.
            r#"{"properties": {"o": {"type": "object", "required": ["x"],
                    "properties": {"x": {"type": "integer", "minimum": 0},
                                   "tags": {"type": "array", "items": {"type": "string", "minLength": 1}}},
                    "additionalProperties": false},
                "arr": {"type": "array", "minItems": 1, "maxItems": 2,
                        "items": {"type": "object", "properties": {"v": {"maximum": 10}}}}}}"#,
            // uniqueItems, contains, prefixItems.
            r#"{"properties": {"a": {"uniqueItems": true}, "b": {"uniqueItems": true},
                "arr": {"uniqueItems": true, "contains": {"type": "string"}},
                "c": {"prefixItems": [{"type": "integer"}], "items": {"type": "string"}}}}"#,
            // Numeric bounds of every kind, including decimal and huge limits.
            r#"{"properties": {"a": {"minimum": 0.5, "maximum": 1e2, "multipleOf": 0.25},
                "b": {"maximum": 18446744073709551616, "exclusiveMinimum": -3},
                "c": {"minimum": 1.05, "multipleOf": 5}, "m": {"exclusiveMaximum": 1.10, "minimum": -7}}}"#,
            // Names and patterns over members.
            r#"{"propertyNames": {"maxLength": 3, "pattern": "^[a-z]+$"},
                "patternProperties": {"^[a-c]$": {"type": "number"}, "^[d-z]": {"type": "string"}}}"#,
            // Combinators and unevaluated members.
            r#"{"anyOf": [{"required": ["a"]}, {"required": ["zz"]}],
                "properties": {"a": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]},
                               "b": {"not": {"type": "string"}}},
                "if": {"properties": {"c": {"type": "string"}}}, "then": {"required": ["d"]},
                "else": {"properties": {"d": {"type": "null"}}},
                "dependentRequired": {"e": ["m"]}, "unevaluatedProperties": {"type": "boolean"}}"#,
            // The shipped schemas.
            include_str!("../schemas/context.schema.json"),
            include_str!("../schemas/user.schema.json"),
        ]
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect()
    }

    /// Records over the fields the schemas above name (and a few they do not), in unsorted order, each
    /// leaving some out.
    fn records() -> Vec<Record> {
        let values = interesting_values();
        let names = [
            "m", "e", "d", "c", "b", "a", "o", "arr", "zz", "id", "title", "email", "Big", "alpha",
        ];
        (0..values.len() * 2)
            .map(|offset| {
                let mut r = Record::new();
                for (j, name) in names.iter().enumerate() {
                    if (offset + j) % 4 != 0 {
                        r.insert(*name, values[(offset + j * 7) % values.len()].clone());
                    }
                }
                r
            })
            .chain(values.iter().map(|v| {
                let mut r = Record::new();
                for name in ["c", "a", "b", "o", "arr", "d", "e", "m"] {
                    r.insert(name, v.clone());
                }
                r
            }))
            .chain(values.iter().enumerate().map(|(i, v)| {
                let mut r = Record::new();
                r.insert(names[i % 8], v.clone());
                r
            }))
            .chain(std::iter::once(Record::new()))
            .collect()
    }

    #[test]
    fn validating_records_in_place_equals_validating_their_json() {
        let records = records();
        let (mut checked, mut failing) = (0, 0);
        for schema in schemas() {
            let validator = SchemaValidator::compile("test", &schema).unwrap();
            let reference = reference_validator(&schema);
            for record in &records {
                let expected = reference_errors(&reference, record);
                let actual = direct_errors(&validator, record);
                assert_eq!(
                    actual,
                    expected,
                    "schema {schema}\nrecord {}",
                    record_to_json(record)
                );
                checked += 1;
                failing += usize::from(!expected.0);
            }
        }
        // Both outcomes are well represented.
        assert!(
            failing > checked / 10 && checked - failing > checked / 10,
            "{failing} of {checked}"
        );
    }

    #[test]
    fn std_context_shaped_records_validate_alike() {
        let schema: Json =
            serde_json::from_str(include_str!("../schemas/context.schema.json")).unwrap();
        let validator = SchemaValidator::compile("context", &schema).unwrap();
        let reference = reference_validator(&schema);
        for record in bench_records(64) {
            assert_eq!(
                direct_errors(&validator, &record),
                reference_errors(&reference, &record)
            );
        }
    }

    /// The text serde_json keeps for a number, or `None` where `Number::from_str` fails.
    fn serde_number_text(text: &str) -> Option<String> {
        Number::from_str(text).ok().map(|n| n.as_str().to_owned())
    }

    #[test]
    fn number_text_matches_serde_json_examples() {
        for text in [
            "0",
            "-0",
            "00",
            "01",
            "-",
            "",
            "1",
            "-1",
            "1.",
            ".5",
            "1.5",
            "1.50",
            "-0.0",
            "1e5",
            "1E5",
            "1e+5",
            "1e-5",
            "1E-5",
            "1.5e",
            "1.5e+",
            "1e5.0",
            "+1",
            " 1",
            "1 ",
            "1a",
            "18446744073709551616",
            "-9223372036854775809",
            "1.0e400",
            "0e0",
            "0.e1",
            "0.0E0",
        ] {
            assert_eq!(
                json_number_text(text).map(Cow::into_owned),
                serde_number_text(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn passed_texts_are_remembered_only_when_valid_short_and_repeated() {
        let mut passed = PassedTexts::default();
        let asked = std::cell::Cell::new(0);
        let check = |passed: &mut PassedTexts, text: &str, answer: bool| {
            passed.check(0, text, || {
                asked.set(asked.get() + 1);
                answer
            })
        };
        assert!(!check(&mut passed, "note", false));
        assert!(
            !check(&mut passed, "note", false),
            "a failure is not remembered"
        );
        assert!(check(&mut passed, "note", true));
        assert!(
            check(&mut passed, "note", false),
            "found: not checked again"
        );
        let long = "x".repeat(65);
        assert!(check(&mut passed, &long, true));
        assert!(
            !check(&mut passed, &long, false),
            "a long text is not remembered"
        );
        assert_eq!(asked.get(), 5);
        // Texts that never repeat: after the trial, every one is checked and none is kept.
        let mut unique = PassedTexts::default();
        for n in 0..2 * PassedTexts::TRIAL {
            assert!(unique.check(1, &n.to_string(), || true));
        }
        assert!(unique.by_check[1].given_up && unique.by_check[1].texts.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn number_text_matches_serde_json(text in "[-+]?[0-9]{0,3}[.]?[0-9]{0,3}([eE][-+]?[0-9]{0,2})?") {
            proptest::prop_assert_eq!(json_number_text(&text).map(Cow::into_owned), serde_number_text(&text));
        }

        #[test]
        fn floats_read_as_record_to_json_writes_them(bits in proptest::num::u64::ANY) {
            let value = Value::Float(f64::from_bits(bits));
            let node = RecordNode::Value(&value);
            let expected = value_to_json(&value);
            proptest::prop_assert_eq!(&*node.to_value(), &expected);
            proptest::prop_assert_eq!(node.json_type(), jsonschema::JsonType::from(&expected));
            let text = node.as_number().map(|n| n.as_str().into_owned());
            proptest::prop_assert_eq!(text.as_deref(), expected.as_number().map(Number::as_str));
            proptest::prop_assert_eq!(node.as_string(), expected.as_str().map(Cow::Borrowed));
        }

        #[test]
        fn decimals_read_as_record_to_json_writes_them(text in "[-+]?[0-9]{0,3}[.]?[0-9]{0,3}([eE][-+]?[0-9]{0,2})?") {
            if let Some(d) = crate::record::Decimal::parse(&text) {
                let value = Value::Decimal(d);
                let node = RecordNode::Value(&value);
                let expected = value_to_json(&value);
                proptest::prop_assert_eq!(node.json_type(), jsonschema::JsonType::from(&expected));
                let number = node.as_number();
                let text = number.as_ref().map(|n| n.as_str().into_owned());
                proptest::prop_assert_eq!(text.as_deref(), expected.as_number().map(Number::as_str));
                if let (Some(mine), Some(theirs)) = (number, expected.as_number()) {
                    proptest::prop_assert_eq!(mine.as_u64(), theirs.as_u64());
                    proptest::prop_assert_eq!(mine.as_i64(), theirs.as_i64());
                    proptest::prop_assert_eq!(mine.as_f64().map(f64::to_bits), theirs.as_f64().map(f64::to_bits));
                    proptest::prop_assert_eq!(mine.is_integer(), JsonNumber::is_integer(theirs));
                    proptest::prop_assert_eq!(&*mine.to_number(), theirs);
                }
                proptest::prop_assert_eq!(node.as_string(), expected.as_str().map(Cow::Borrowed));
            }
        }

        #[test]
        fn integers_read_as_record_to_json_writes_them(i in proptest::num::i64::ANY) {
            let value = Value::Int(i);
            let expected = value_to_json(&value);
            let theirs = expected.as_number().unwrap();
            let mine = RecordNode::Value(&value).as_number().unwrap();
            proptest::prop_assert_eq!(mine.as_u64(), theirs.as_u64());
            proptest::prop_assert_eq!(mine.as_i64(), theirs.as_i64());
            proptest::prop_assert_eq!(mine.as_f64().map(f64::to_bits), theirs.as_f64().map(f64::to_bits));
            proptest::prop_assert_eq!(mine.as_str(), Cow::Borrowed(theirs.as_str()));
            proptest::prop_assert_eq!(&*mine.to_number(), theirs);
            for other in [i, i.wrapping_add(1)] {
                let other = Number::from(other);
                proptest::prop_assert_eq!(
                    number_equals(&mine, &other),
                    jsonschema::json::cmp::equal_numbers(theirs, &other)
                );
            }
        }
    }

    /// Records shaped like std-context's mapped output (strings with non-ASCII text, a tag array, two
    /// timestamps, a nested metadata object).
    fn bench_records(n: usize) -> Vec<Record> {
        let words = [
            "status",
            "database",
            "Москва",
            "ledger",
            "東京",
            "Łódź",
            "invoice",
            "region",
        ];
        (0..n)
            .map(|i| {
                let mut r = Record::new();
                r.insert("id", Value::String(format!("{i:010}")));
                r.insert(
                    "title",
                    Value::String(format!("{} {}", words[i % 8], words[(i / 8) % 8])),
                );
                r.insert(
                    "content",
                    Value::String(
                        words
                            .iter()
                            .cycle()
                            .skip(i % 8)
                            .take(20)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                );
                r.insert("type", Value::String("sales, emea".into()));
                r.insert(
                    "tags",
                    Value::Array((0..i % 4).map(|t| Value::String(words[t].into())).collect()),
                );
                let ts = crate::record::Timestamp::parse("2010-11-01T15:07:00Z");
                r.insert("createdAt", ts.map_or(Value::Null, Value::Timestamp));
                let mut meta = Record::new();
                meta.insert("importance", Value::Int(1));
                meta.insert("source", Value::String("legacy-import".into()));
                r.insert("metadata", Value::Object(meta));
                r.insert("exportedAt", ts.map_or(Value::Null, Value::Timestamp));
                r
            })
            .collect()
    }

    /// `cargo test --release --lib validate::tests::bench -- --ignored --nocapture`: `validate` against the
    /// path it replaced (`record_to_json`, then the serde_json validator's `iter_errors`), single-threaded.
    #[test]
    #[ignore = "timing, run by hand"]
    fn bench_validate_1m() {
        let schema: Json =
            serde_json::from_str(include_str!("../schemas/context.schema.json")).unwrap();
        let v = SchemaValidator::compile("context", &schema).unwrap();
        let reference = reference_validator(&schema);
        let records = bench_records(1_000_000);
        for round in 0..3 {
            let start = std::time::Instant::now();
            let invalid = records.iter().filter(|r| v.validate(r).is_err()).count();
            let direct = start.elapsed();
            let start = std::time::Instant::now();
            let reference_invalid = records
                .iter()
                .filter(|r| {
                    let instance = record_to_json(r);
                    let errors = reference.iter_errors(&instance).count();
                    errors > 0
                })
                .count();
            let via_json = start.elapsed();
            assert_eq!(invalid, reference_invalid);
            println!(
                "round {round}: {} records: validate {direct:?}, record_to_json + serde_json validator {via_json:?}",
                records.len()
            );
        }
    }

    #[test]
    fn patterns_that_treat_every_digit_alike_are_found() {
        for blind in [
            r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}",
            r"^\d{4}-\d{2}-\d{2}T",
            "^[^A-Z]*$",
            r"^\w+(\.\d+)?Z?$",
            "[0-9]{2}:",
            "^.*$",
            r"\bT\b",
            "",
        ] {
            assert!(digit_blind(blind), "{blind}");
        }
        for telling in [
            "^2024-",
            "[0-5]{2}",
            r"(\d)\1",
            r"\x30",
            r"\u0039",
            "[^7]",
            "T0",
            "(?i)[a-f0-3]",
            "(unclosed",
            // ECMA-262 has no class set operations: these classes hold 1-9 and more, not nothing or 0-9.
            "^[1-9&&x]",
            "^[1-9~~1-9]",
            "^[[1-9]0]?",
        ] {
            assert!(!digit_blind(telling), "{telling}");
        }
        let by_layout = |s: Json| answers_by_layout(&s);
        assert!(by_layout(
            serde_json::json!({"type": "string", "pattern": "^\\d{4}-", "maxLength": 40})
        ));
        assert!(!by_layout(
            serde_json::json!({"type": "string", "format": "date-time"})
        ));
        assert!(!by_layout(
            serde_json::json!({"enum": ["2024-05-01T10:00:00Z"]})
        ));
        assert!(!by_layout(serde_json::json!({"pattern": "^2024"})));
    }

    /// A timestamp from its parts; `offset` in minutes, `None` for a local time.
    fn timestamp(days: i32, seconds: u32, nanos: u32, offset: Option<i32>) -> Timestamp {
        let date = chrono::NaiveDate::from_num_days_from_ce_opt(days).unwrap_or_default();
        let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos)
            .unwrap_or_default();
        Timestamp {
            datetime: date.and_time(time),
            offset: offset.and_then(|m| chrono::FixedOffset::east_opt(m * 60)),
        }
    }

    fn any_timestamp() -> impl proptest::strategy::Strategy<Value = Timestamp> {
        use proptest::prelude::*;
        (
            prop_oneof![1i32..3_652_059, -1000i32..1, 3_652_059i32..3_700_000],
            0u32..86_400,
            prop_oneof![
                Just(0u32),
                (0u32..1000).prop_map(|m| m * 1_000_000),
                (0u32..1_000_000).prop_map(|u| u * 1000),
                0u32..2_000_000_000
            ],
            prop_oneof![Just(None), Just(Some(0)), (-900i32..900).prop_map(Some)],
        )
            .prop_map(|(days, seconds, nanos, offset)| timestamp(days, seconds, nanos, offset))
    }

    proptest::proptest! {
        #[test]
        fn timestamps_of_one_layout_differ_only_in_their_digits(a in any_timestamp(), b in any_timestamp()) {
            let masked = |t: &Timestamp| t.to_string().replace(|c: char| c.is_ascii_digit(), "0");
            if let (Some(la), Some(lb)) = (a.text_layout(), b.text_layout()) {
                proptest::prop_assert_eq!(la == lb, masked(&a) == masked(&b), "{} {}", a, b);
            }
        }

        #[test]
        fn remembering_layouts_changes_no_answer(
            stamps in proptest::collection::vec(any_timestamp(), 1..40),
            pattern in proptest::sample::select(vec![
                r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}",
                r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
                r"\.\d{3}Z$",
                r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}$",
                "^20",
                "[05]Z$",
                "^[1-9&&x]",
                "^[[1-9]0]?-",
            ]),
            max in 19u64..31,
        ) {
            let schema = serde_json::json!({"type": "object", "properties": {
                "at": {"type": "string", "pattern": pattern, "maxLength": max}}});
            let v = SchemaValidator::compile("t", &schema).unwrap();
            let mut passed = PassedTexts::default();
            for t in stamps.iter().chain(&stamps) {
                let mut r = Record::new();
                r.insert("at", Value::Timestamp(*t));
                let whole = v.validator.is_valid(RecordNode::Root(&r));
                proptest::prop_assert_eq!(v.validate_remembering(&r, &mut passed).is_ok(), whole, "{} {}", pattern, t);
            }
        }
    }

    #[test]
    fn only_subschemas_that_bound_text_lengths_are_checked_without_the_validator() {
        let lengths = |schema: serde_json::Value| TextLengths::of(&schema);
        let text = |min, max| {
            Some(TextLengths {
                min,
                max,
                items: false,
            })
        };
        assert_eq!(
            lengths(serde_json::json!({"type": "string", "minLength": 1, "maxLength": 128})),
            text(1, 128)
        );
        assert_eq!(
            lengths(serde_json::json!({"maxLength": 5, "title": "t"})),
            text(0, 5)
        );
        assert_eq!(
            lengths(
                serde_json::json!({"type": "array", "items": {"type": "string", "minLength": 1}})
            ),
            Some(TextLengths {
                min: 1,
                max: u64::MAX,
                items: true
            })
        );
        for other in [
            serde_json::json!({"type": "string", "pattern": "^a"}),
            serde_json::json!({"type": ["string", "null"], "maxLength": 3}),
            serde_json::json!({"type": "integer"}),
            serde_json::json!({"minLength": 1.5}),
            serde_json::json!({"minLength": -1}),
            serde_json::json!({"type": "string", "items": {"maxLength": 1}}),
            serde_json::json!({"items": {"items": {"maxLength": 1}}}),
            serde_json::json!({"items": [{"maxLength": 1}]}),
            serde_json::json!({"items": {"maxLength": 1}, "maxLength": 2}),
            serde_json::json!(true),
        ] {
            assert_eq!(lengths(other.clone()), None, "{other}");
        }
        // Texts and lists of texts are answered; any other value is left to the validator.
        let bounds = TextLengths {
            min: 1,
            max: 3,
            items: false,
        };
        assert_eq!(bounds.check(&Value::String("ééé".into())), Some(true));
        assert_eq!(bounds.check(&Value::String("abcd".into())), Some(false));
        assert_eq!(bounds.check(&Value::String(String::new())), Some(false));
        assert_eq!(bounds.check(&Value::Int(7)), None);
        let list = TextLengths {
            items: true,
            ..bounds
        };
        let texts =
            |t: &[&str]| Value::Array(t.iter().map(|s| Value::String((*s).into())).collect());
        assert_eq!(list.check(&texts(&["a", "東京"])), Some(true));
        assert_eq!(list.check(&texts(&["a", ""])), Some(false));
        assert_eq!(list.check(&texts(&[])), Some(true));
        assert_eq!(list.check(&Value::Array(vec![Value::Int(1)])), None);
        assert_eq!(list.check(&Value::String("a".into())), None);
    }

    #[test]
    fn a_schema_taken_apart_by_property_accepts_exactly_what_it_accepts_whole() {
        let at = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00+02:00").unwrap();
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Int(12),
            Value::Float(2.5),
            Value::Float(f64::INFINITY),
            Value::String(String::new()),
            Value::String("Ab".into()),
            Value::String("année".into()),
            Value::String("x".repeat(70)),
            Value::Timestamp(Timestamp {
                datetime: at.naive_local(),
                offset: Some(*at.offset()),
            }),
            Value::Array(vec![
                Value::String("a".into()),
                Value::String(String::new()),
            ]),
            Value::Array(vec![Value::String("tag".into())]),
            Value::Object({
                let mut o = Record::new();
                o.insert("importance", Value::Int(11));
                o
            }),
            // Three characters in six bytes: within `maxLength: 3` by characters, not by bytes.
            Value::String("ééé".into()),
            Value::Array(vec![Value::String("東京".into()), Value::Int(1)]),
        ];
        let names = ["id", "type", "tags", "meta", "extra"];
        let mut records = vec![Record::new()];
        for (i, value) in values.iter().enumerate() {
            for (j, name) in names.iter().enumerate() {
                let mut r = Record::new();
                r.insert(*name, value.clone());
                for k in 1..=j {
                    let other = &values[(i * 7 + j + k) % values.len()];
                    r.insert(names[(j + k) % names.len()], other.clone());
                }
                records.push(r);
            }
        }
        for (id, kind, tags) in [("Ab", "note", 12), ("x", "Ab", 11), ("abcd", "", 12)] {
            let mut r = Record::new();
            r.insert("id", Value::String(id.into()));
            r.insert("type", Value::String(kind.into()));
            r.insert("tags", values[tags].clone());
            records.push(r);
        }
        let separable = [
            serde_json::json!({"$schema": "http://json-schema.org/draft-07/schema#", "title": "t",
                "type": "object", "required": ["id", "type"], "additionalProperties": false,
                "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 3}, "extra": true,
                    "type": {"type": "string", "pattern": "^[^A-Z]*$"}, "meta": {},
                    "tags": {"type": "array", "items": {"type": "string", "minLength": 1}}}}),
            serde_json::json!({"type": ["object", "null"], "properties": {
                "meta": {"type": "object", "properties": {"importance": {"maximum": 10}}},
                "id": {"enum": ["Ab", -3, null]}, "type": {"const": 12},
                "tags": {"anyOf": [{"type": "integer"}, {"format": "date-time", "pattern": "^2024"}]},
                "extra": false}}),
            serde_json::json!({"required": ["extra"]}),
            serde_json::json!({"additionalProperties": false}),
        ];
        for schema in &separable {
            let v = SchemaValidator::compile("t", schema).unwrap();
            let checks = v.by_property.as_ref().expect("taken apart");
            let mut accepted = 0;
            for r in &records {
                let whole = v.validator.is_valid(RecordNode::Root(r));
                assert_eq!(checks.is_valid(r, None), whole, "{schema} {r:?}");
                accepted += usize::from(whole);
            }
            // Remembering what passed changes no answer, the second time through either.
            let mut passed = PassedTexts::default();
            for r in records.iter().chain(&records) {
                let whole = v.validator.is_valid(RecordNode::Root(r));
                assert_eq!(
                    checks.is_valid(r, Some(&mut passed)),
                    whole,
                    "{schema} {r:?}"
                );
            }
            assert!(
                accepted > 0 && accepted < records.len(),
                "{schema}: {accepted}"
            );
        }
        let whole_only = [
            serde_json::json!({"type": "array"}),
            serde_json::json!({"patternProperties": {"^x": false}}),
            serde_json::json!({"additionalProperties": {"type": "string"}}),
            serde_json::json!({"allOf": [{"required": ["id"]}]}),
            serde_json::json!({"properties": {"id": {"$ref": "#/$defs/d"}}, "$defs": {"d": {}}}),
            serde_json::json!({"minProperties": 1}),
            serde_json::json!({"unevaluatedProperties": false, "properties": {"id": {}}}),
            serde_json::json!(true),
            // A subschema naming its own draft is read under that draft inside the schema (here `format`
            // asserted, a later draft's keyword, draft 4's integers), alone under the root's.
            serde_json::json!({"type": "object", "properties": {"email": {
                "$schema": "http://json-schema.org/draft-07/schema#", "format": "email"}}}),
            serde_json::json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
                "properties": {"email": {"$id": "https://example.com/email",
                "$schema": "http://json-schema.org/draft-07/schema#", "format": "email"}}}),
            serde_json::json!({"$schema": "http://json-schema.org/draft-07/schema#",
                "properties": {"p": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "dependentRequired": {"a": ["b"]}}}}),
            serde_json::json!({"properties": {"n": {
                "$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}}}),
            // A custom meta-schema brings its own vocabularies (here format assertion).
            serde_json::json!({"$schema": "https://example.com/meta",
                "$defs": {"meta": {"$id": "https://example.com/meta",
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$vocabulary": {
                        "https://json-schema.org/draft/2020-12/vocab/core": true,
                        "https://json-schema.org/draft/2020-12/vocab/applicator": true,
                        "https://json-schema.org/draft/2020-12/vocab/validation": true,
                        "https://json-schema.org/draft/2020-12/vocab/format-assertion": true}}},
                "properties": {"email": {"format": "email"}}}),
        ];
        for schema in &whole_only {
            let v = SchemaValidator::compile("t", schema).unwrap();
            assert!(v.by_property.is_none(), "{schema}");
        }
    }

    #[test]
    fn a_constant_under_a_subschema_of_another_draft_or_in_draft_4_is_checked_as_the_schema_says() {
        let email =
            |v: &str| -> Vec<(Key, Value)> { vec![("email".into(), Value::String(v.into()))] };
        let mut r = Record::new();
        r.insert("email", Value::String("not an email".into()));
        // Draft 7 asserts `format` in the subschema, the 2020-12 root would not: left whole.
        let nested = serde_json::json!({"properties": {"email": {
            "$schema": "http://json-schema.org/draft-07/schema#", "format": "email"}}});
        let full = SchemaValidator::compile("t", &nested).unwrap();
        let once = SchemaValidator::compile("t", &nested)
            .unwrap()
            .with_constants(&email("not an email"))
            .unwrap();
        assert!(once.checked_once().is_empty());
        assert_eq!(messages(&once, &r), messages(&full, &r));
        assert_eq!(messages(&full, &r).len(), 1, "{:?}", messages(&full, &r));
        // Draft 4 has no boolean schemas: a constant checked once leaves `{}`.
        let draft4 = serde_json::json!({"$schema": "http://json-schema.org/draft-04/schema#",
            "additionalProperties": false, "properties": {"email": {"type": "string"}}});
        let full = SchemaValidator::compile("t", &draft4).unwrap();
        let once = SchemaValidator::compile("t", &draft4)
            .unwrap()
            .with_constants(&email("a@b.c"))
            .unwrap();
        assert_eq!(once.checked_once(), ["email"]);
        r.insert("extra", Value::Int(1));
        assert_eq!(messages(&once, &r), messages(&full, &r));
        assert_eq!(messages(&full, &r).len(), 1, "{:?}", messages(&full, &r));
    }
}
