//! Expressions for the map stage's `compute` fields and `filter`: CEL (the Common Expression Language, via
//! the `cel` crate), compiled once per template and evaluated per record.
//!
//! A record's fields are variables (`title`, `old_created`), and the whole record is `record` (for names that
//! are not identifiers: `record["Order ID"]`). `now()` is the run's start time, the same for every record.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr as _;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr};
use cel::objects::{Key as CelKey, Value as Cel};
use cel::{Context, Env, IdedExpr};
use chrono::{DateTime, FixedOffset, Offset as _};

use super::functions;
use crate::record::{Decimal, Key, Record, Timestamp, Value};

/// The environment expressions compile and run in: CEL's standard library with its `strings`, `math` and
/// `lists` extensions (`'a,b'.split(',')`, `s.replace('a', 'b')`, `math.greatest(a, b)`, …).
pub fn environment() -> Env {
    let mut env = Env::stdlib();
    // Each extension declares names no other one does; a clash would be a bug in the crate, and leaves
    // the environment as the standard library plus what was added before it.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::math);
    let _ = env.add_extension(cel::extensions::lists);
    env
}

/// A compiled expression and the names it reads.
pub struct Expression {
    source: String,
    /// The program, its operators rewritten into ferry's (exact decimals and dates; see [`functions`]).
    expr: IdedExpr,
    /// The variables it reads (comprehension variables excluded), `record` included.
    variables: Vec<String>,
    /// Functions it calls that neither CEL nor ferry declares.
    unknown_functions: Vec<String>,
    /// Methods it calls as functions (`upperAscii(s)` for `s.upperAscii()`): CEL resolves them only on a
    /// receiver, so the call would fail on every record.
    methods_called_as_functions: Vec<String>,
    wants_record: bool,
    /// The value of an expression that reads no field (`now()`, a literal): the same for every record of a
    /// run, so it is evaluated once.
    constant: std::sync::OnceLock<Result<Value, String>>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl Expression {
    /// Compiles `source`; the error is the parser's message.
    pub fn compile(env: &Arc<Env>, source: &str) -> Result<Expression, String> {
        let program = env
            .compile(source)
            .map_err(|e| format!("invalid expression {source:?}: {e}"))?;
        let mut expr = program.expression().clone();
        let mut names = Names::new(env);
        names.walk(&expr, &mut Vec::new());
        rewrite_operators(&mut expr);
        let wants_record = names.variables.contains("record");
        Ok(Expression {
            source: source.to_owned(),
            expr,
            variables: names.variables.into_iter().collect(),
            unknown_functions: names.unknown.into_iter().collect(),
            methods_called_as_functions: names.methods.into_iter().collect(),
            wants_record,
            constant: std::sync::OnceLock::new(),
        })
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names it reads as variables (`record` among them when it reads the whole record), sorted.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// The functions it calls that no library declares (a typo, or a function of another CEL dialect).
    pub fn unknown_functions(&self) -> &[String] {
        &self.unknown_functions
    }

    /// The methods it calls without a receiver (`upperAscii(s)`), which only exist as `s.upperAscii()`.
    pub fn methods_called_as_functions(&self) -> &[String] {
        &self.methods_called_as_functions
    }
}

/// What an expression reads and calls, found by walking it once when it is compiled.
struct Names {
    env: Arc<Env>,
    probe: Context<'static, 'static>,
    variables: BTreeSet<String>,
    unknown: BTreeSet<String>,
    methods: BTreeSet<String>,
}

impl Names {
    fn new(env: &Arc<Env>) -> Names {
        Names {
            env: env.clone(),
            probe: Context::with_env(env.clone()),
            variables: BTreeSet::new(),
            unknown: BTreeSet::new(),
            methods: BTreeSet::new(),
        }
    }

    /// True when `name` is a function CEL's environment or ferry declares. The environment has no list of
    /// its functions; adding a function of a declared name is refused, so the refusal answers.
    fn declared(&mut self, name: &str) -> bool {
        functions::FUNCTIONS.contains(&name) || self.probe.add_function(name, || false).is_err()
    }

    /// True when `name(…)` without a receiver resolves: ferry's functions, and CEL's global ones. The
    /// environment declares methods (`s.upperAscii()`) under the same names, so a call of the bare name is
    /// tried once with no arguments: an undeclared reference is the one answer that means "no such function";
    /// any other error (no overload for no arguments) means there is one.
    fn declared_global(&self, name: &str) -> bool {
        if functions::FUNCTIONS.contains(&name) {
            return true;
        }
        let Ok(program) = self.env.compile(&format!("{name}()")) else {
            return false;
        };
        let context = Context::with_env(self.env.clone());
        !matches!(
            program.execute(&context),
            Err(cel::ExecutionError::UndeclaredReference(_))
        )
    }

    /// Notes a call of `name`, `global` when it has no receiver.
    fn call(&mut self, name: &str, global: bool) {
        // Operators and macros' internals (`_+_`, `!_`, `@in`, `_[_]`) are the language's own.
        let is_function = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !is_function {
            return;
        }
        let declared = self.declared(name);
        if global && declared && !self.declared_global(name) {
            self.methods.insert(name.to_owned());
        } else if !declared {
            self.unknown.insert(name.to_owned());
        }
    }

    /// Records the free variables and the calls of `e`; `bound` holds the comprehension variables in scope.
    fn walk(&mut self, e: &IdedExpr, bound: &mut Vec<String>) {
        match &e.expr {
            Expr::Ident(name) if !name.starts_with('@') && !bound.contains(name) => {
                self.variables.insert(name.clone());
            }
            Expr::Select(select) => self.walk(&select.operand, bound),
            Expr::Call(call) => {
                match &call.target {
                    // `math.ceil(x)`: a namespaced function, not a method of a variable `math`.
                    Some(target)
                        if qualified(target).is_some_and(|ns| {
                            self.declared(&format!("{ns}.{}", call.func_name))
                        }) => {}
                    Some(target) => {
                        self.call(&call.func_name, false);
                        self.walk(target, bound);
                    }
                    None => self.call(&call.func_name, true),
                }
                for arg in &call.args {
                    self.walk(arg, bound);
                }
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range, bound);
                self.walk(&c.accu_init, bound);
                let depth = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                self.walk(&c.loop_cond, bound);
                self.walk(&c.loop_step, bound);
                self.walk(&c.result, bound);
                bound.truncate(depth);
            }
            Expr::List(list) => {
                for item in &list.elements {
                    self.walk(item, bound);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    self.entry(&entry.expr, bound);
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    self.entry(&entry.expr, bound);
                }
            }
            _ => {}
        }
    }

    fn entry(&mut self, entry: &EntryExpr, bound: &mut Vec<String>) {
        match entry {
            EntryExpr::StructField(field) => self.walk(&field.value, bound),
            EntryExpr::MapEntry(m) => {
                self.walk(&m.key, bound);
                self.walk(&m.value, bound);
            }
        }
    }
}

/// `a.b.c` as text, when the expression is only names and dots.
fn qualified(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(s) if !s.test => Some(format!("{}.{}", qualified(&s.operand)?, s.field)),
        _ => None,
    }
}

/// Replaces CEL's arithmetic, comparison and equality operators by ferry's (see [`functions`]).
fn rewrite_operators(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(call) => {
            if call.target.is_none() {
                if let Some((_, ours)) = functions::OPERATORS
                    .iter()
                    .find(|(op, _)| *op == call.func_name)
                {
                    call.func_name = (*ours).to_owned();
                }
            }
            if let Some(target) = &mut call.target {
                rewrite_operators(target);
            }
            call.args.iter_mut().for_each(rewrite_operators);
        }
        Expr::Select(select) => rewrite_operators(&mut select.operand),
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                rewrite_operators(part);
            }
        }
        Expr::List(list) => list.elements.iter_mut().for_each(rewrite_operators),
        Expr::Map(map) => map
            .entries
            .iter_mut()
            .for_each(|entry| rewrite_entry(&mut entry.expr)),
        Expr::Struct(s) => s
            .entries
            .iter_mut()
            .for_each(|entry| rewrite_entry(&mut entry.expr)),
        _ => {}
    }
}

fn rewrite_entry(entry: &mut EntryExpr) {
    match entry {
        EntryExpr::StructField(field) => rewrite_operators(&mut field.value),
        EntryExpr::MapEntry(m) => {
            rewrite_operators(&mut m.key);
            rewrite_operators(&mut m.value);
        }
    }
}

/// The fields an expression sees: for a computed field, the fields mapped before it (by their output
/// names) over the source record; for the filter, the mapped record. `record` is `source`.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// Fields mapped so far, which win over source fields of the same name.
    pub mapped: Option<&'a Record>,
    /// The record as read (for the filter: the mapped record).
    pub source: &'a Record,
}

impl<'a> Scope<'a> {
    /// A scope of one record.
    pub fn of(record: &'a Record) -> Scope<'a> {
        Scope {
            mapped: None,
            source: record,
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.mapped
            .and_then(|m| m.get(name))
            .or_else(|| self.source.get(name))
    }
}

/// Evaluates expressions; one per worker thread, reused across records.
pub struct Evaluator {
    root: Context<'static, 'static>,
    /// The environment it was made with: a template's names below are its template's only.
    pub(super) env: Arc<Env>,
    /// The template's output names, this thread's own copies (see `CompiledTemplate::evaluator`).
    pub(super) names: Vec<Key>,
}

impl Evaluator {
    /// An evaluator whose `now()` is `now`.
    pub fn new(env: Arc<Env>, now: DateTime<FixedOffset>) -> Evaluator {
        let mut root = Context::with_env(Arc::clone(&env));
        // Registration only fails for a name the environment declares, and `now` is not one.
        let _ = root.add_function("now", move || now);
        functions::register(&mut root);
        Evaluator {
            root,
            env,
            names: Vec::new(),
        }
    }

    /// Evaluates `expr` against one record.
    pub fn eval(&self, expr: &Expression, record: &Record) -> Result<Value, String> {
        self.eval_in(expr, Scope::of(record))
    }

    /// Evaluates `expr` in `scope`.
    pub fn eval_in(&self, expr: &Expression, scope: Scope<'_>) -> Result<Value, String> {
        if expr.variables.is_empty() {
            return expr
                .constant
                .get_or_init(|| self.eval_fresh(expr, scope))
                .clone();
        }
        self.eval_fresh(expr, scope)
    }

    fn eval_fresh(&self, expr: &Expression, scope: Scope<'_>) -> Result<Value, String> {
        let mut context = self.root.new_inner_scope();
        for name in &expr.variables {
            if name == "record" {
                continue;
            }
            // Every variable gets a value, null when the record lacks it, so a missing field never
            // resolves to a stale or undeclared name.
            let value = scope.get(name).map_or(Cel::Null, to_cel);
            context.add_variable_from_value(name.as_str(), value);
        }
        if expr.wants_record {
            context.add_variable_from_value("record", to_cel(&Value::Object(scope.source.clone())));
        }
        let result = context
            .resolve(&expr.expr)
            .map_err(|e| format!("{}: {}", expr.source, explain(e)))?;
        from_cel(result).map_err(|e| format!("{}: {e}", expr.source))
    }
}

/// CEL's error as a sentence a template author can act on. Arithmetic on text is the usual case: every
/// value a CSV holds is text until a field's `type` (or `decimal(x)`, `int(x)`) makes it a number.
fn explain(error: cel::ExecutionError) -> String {
    match &error {
        cel::ExecutionError::UnsupportedBinaryOperator(op, l, r)
            if matches!(l, Cel::String(_)) || matches!(r, Cel::String(_)) =>
        {
            let text = [l, r]
                .into_iter()
                .find_map(|v| match v {
                    Cel::String(s) => Some(s.to_string()),
                    _ => None,
                })
                .unwrap_or_default();
            let op = match op.trim_start_matches('@') {
                "add" => "add",
                "sub" => "subtract",
                "mul" => "multiply",
                "div" => "divide",
                "rem" => "take the remainder of",
                other => other,
            };
            format!(
                "cannot {op} the text {text:?} and a number: map that field with a type \
                 (`type: decimal` or `integer`) above this one and read it by its name, or convert it \
                 with decimal(x) or int(x)"
            )
        }
        _ => error.to_string(),
    }
}

fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Int(i) => Cel::Int(*i),
        Value::Float(x) => Cel::Float(*x),
        // CEL has no decimal type: a decimal is ferry's own value, exact in arithmetic and comparisons.
        Value::Decimal(d) => bigdecimal::BigDecimal::from_str(d.as_str())
            .map_or_else(|_| Cel::String(Arc::new(d.to_string())), functions::decimal),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Bytes(b) => Cel::Bytes(Arc::new(b.clone())),
        Value::Timestamp(t) => {
            let offset = t.offset.unwrap_or_else(|| chrono::Utc.fix());
            Cel::Timestamp(DateTime::from_naive_utc_and_offset(
                t.datetime - offset,
                offset,
            ))
        }
        Value::Date(d) => functions::date(*d),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(record) => {
            let map: HashMap<CelKey, Cel> = record
                .iter()
                .map(|(k, v)| (CelKey::String(Arc::new(k.to_string())), to_cel(v)))
                .collect();
            Cel::Map(map.into())
        }
    }
}

fn from_cel(value: Cel) -> Result<Value, String> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(b),
        Cel::Int(i) => Value::Int(i),
        Cel::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Decimal(Decimal::from_u64(u))),
        Cel::Float(x) => Value::Float(x),
        Cel::String(s) => Value::String(s.to_string()),
        Cel::Bytes(b) => Value::Bytes(b.to_vec()),
        Cel::Timestamp(t) => Value::Timestamp(Timestamp {
            datetime: t.naive_local(),
            offset: Some(*t.offset()),
        }),
        Cel::Duration(d) => Value::String(format!("{}s", d.num_milliseconds() as f64 / 1000.0)),
        Cel::List(items) => Value::Array(
            items
                .iter()
                .cloned()
                .map(from_cel)
                .collect::<Result<_, _>>()?,
        ),
        Cel::Map(map) => {
            // CEL maps have no order; sort the keys so output is the same on every run.
            let mut entries: Vec<(String, Cel)> = map
                .map
                .iter()
                .map(|(k, v)| (key_text(k), v.clone()))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut record = Record::with_capacity(entries.len());
            for (k, v) in entries {
                record.push_unchecked(Key::from(k), from_cel(v)?);
            }
            Value::Object(record)
        }
        other => {
            if let Some(d) = functions::as_decimal(&other) {
                let text = functions::decimal_text(d);
                return Decimal::parse(&text)
                    .map(Value::Decimal)
                    .ok_or_else(|| format!("the decimal {text} cannot be kept"));
            }
            if let Some(d) = functions::as_date(&other) {
                return Ok(Value::Date(d));
            }
            return Err(format!(
                "the result {other:?} is not a value a record can hold"
            ));
        }
    })
}

fn key_text(key: &CelKey) -> String {
    match key {
        CelKey::Int(i) => i.to_string(),
        CelKey::Uint(u) => u.to_string(),
        CelKey::Bool(b) => b.to_string(),
        CelKey::String(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(source: &str, record: &Record) -> Result<Value, String> {
        let env = Arc::new(environment());
        let expr = Expression::compile(&env, source)?;
        let now = DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z").unwrap();
        Evaluator::new(env, now).eval(&expr, record)
    }

    fn record() -> Record {
        let mut r = Record::new();
        r.insert("title", Value::String("Hello".into()));
        r.insert("n", Value::Int(4));
        r.insert("Order ID", Value::Int(7));
        r
    }

    #[test]
    fn methods_called_as_functions_are_found_at_compile_time() {
        let env = Arc::new(environment());
        let expr = Expression::compile(
            &env,
            "upperAscii(title) + lowerAscii(title) + split(title, ' ')[0] + replace(title, 'a', 'b')",
        )
        .unwrap();
        assert_eq!(
            expr.methods_called_as_functions(),
            ["lowerAscii", "replace", "split", "upperAscii"]
        );
        assert!(expr.unknown_functions().is_empty());
        // The same functions as methods, CEL's global functions and ferry's own are fine.
        let fine = Expression::compile(
            &env,
            "title.upperAscii() + title.split(' ')[0] + string(size(title)) + upper(title) + \
             string(math.ceil(1.5)) + string(max(1, 2))",
        )
        .unwrap();
        assert!(fine.methods_called_as_functions().is_empty());
        assert!(fine.unknown_functions().is_empty());
        assert_eq!(
            eval("title.upperAscii() + title.split('l')[0]", &record()).unwrap(),
            Value::String("HELLOHe".into())
        );
        let typo = Expression::compile(&env, "uper(title)").unwrap();
        assert_eq!(typo.unknown_functions(), ["uper"]);
    }

    #[test]
    fn fields_are_variables() {
        assert_eq!(eval("n * 2 + 1", &record()).unwrap(), Value::Int(9));
        assert_eq!(
            eval("title + '!'", &record()).unwrap(),
            Value::String("Hello!".into())
        );
        assert_eq!(
            eval("size(title) > 3 && n < 5", &record()).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            eval("record['Order ID']", &record()).unwrap(),
            Value::Int(7)
        );
        assert_eq!(
            eval("missing == null", &record()).unwrap(),
            Value::Bool(true)
        );
    }

    #[test]
    fn now_is_the_run_start() {
        assert_eq!(
            eval("now()", &record()).unwrap().to_text(),
            "2024-06-01T12:00:00Z"
        );
    }

    #[test]
    fn maps_come_back_sorted_and_errors_are_sentences() {
        let v = eval("{'source': 'import', 'importance': 1}", &record()).unwrap();
        assert_eq!(v.to_text(), r#"{"importance":1,"source":"import"}"#);
        assert!(eval("n +", &record())
            .unwrap_err()
            .contains("invalid expression"));
        assert!(eval("title * 2", &record()).is_err());
    }

    #[test]
    fn readme_examples_run() {
        let mut r = record();
        r.insert("first", Value::String("Ada".into()));
        r.insert("last", Value::String("Lovelace".into()));
        r.insert("type", Value::String("note".into()));
        assert_eq!(
            eval("first + \" \" + last", &r).unwrap(),
            Value::String("Ada Lovelace".into())
        );
        assert_eq!(
            eval("size(title) > 3 && type in ['note', 'idea']", &r).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            eval("title.startsWith('Draft') || title.contains('ell')", &r).unwrap(),
            Value::Bool(true)
        );
        let default = eval(
            "has(record.metadata) ? record.metadata : {'importance': 1}",
            &r,
        )
        .unwrap();
        assert_eq!(default.to_text(), r#"{"importance":1}"#);
        let mut meta = Record::new();
        meta.insert("source", Value::String("x".into()));
        r.insert("metadata", Value::Object(meta));
        let kept = eval(
            "has(record.metadata) ? record.metadata : {'importance': 1}",
            &r,
        )
        .unwrap();
        assert_eq!(kept.to_text(), r#"{"source":"x"}"#);
    }
}
