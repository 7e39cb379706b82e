//! The map stage's own expression functions and values, added to CEL's standard library: exact decimals
//! and calendar dates (CEL has neither), rounding, text helpers, names, `coalesce` and date arithmetic.
//!
//! Decimals and dates enter an expression as opaque values. CEL's interpreter applies its operators to
//! its own types only, so [`super::expr`] rewrites every arithmetic, comparison and equality operator into
//! a call to one of the `@`-named functions here: they work exactly on decimals (and dates), and hand every
//! other pair of operands to CEL's own operator, so the language is unchanged where no decimal is involved.

use std::cmp::Ordering;
use std::str::FromStr as _;
use std::sync::Arc;

use bigdecimal::{BigDecimal, RoundingMode, Zero as _};
use cel::extractors::Arguments;
use cel::objects::{Opaque, Value as Cel};
use cel::{Context, ExecutionError, FunctionContext};
use chrono::{Months, NaiveDate};

type CelResult = Result<Cel, ExecutionError>;

/// Significant digits a quotient keeps when it does not end (1/3): as many as an IEEE decimal128.
const QUOTIENT_DIGITS: u64 = 34;

/// An exact decimal inside an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CelDecimal(pub BigDecimal);

impl Opaque for CelDecimal {
    fn runtime_type_name(&self) -> &str {
        "decimal"
    }
}

/// A calendar date inside an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CelDate(pub NaiveDate);

impl Opaque for CelDate {
    fn runtime_type_name(&self) -> &str {
        "date"
    }
}

/// A decimal as an expression value.
pub(super) fn decimal(d: BigDecimal) -> Cel {
    Cel::Opaque(Arc::new(CelDecimal(d)))
}

/// A date as an expression value.
pub(super) fn date(d: NaiveDate) -> Cel {
    Cel::Opaque(Arc::new(CelDate(d)))
}

/// The decimal an expression value holds, if it is one.
pub(super) fn as_decimal(value: &Cel) -> Option<&BigDecimal> {
    match value {
        Cel::Opaque(o) => o.downcast_ref::<CelDecimal>().map(|d| &d.0),
        _ => None,
    }
}

/// The date an expression value holds, if it is one.
pub(super) fn as_date(value: &Cel) -> Option<NaiveDate> {
    match value {
        Cel::Opaque(o) => o.downcast_ref::<CelDate>().map(|d| d.0),
        _ => None,
    }
}

/// The text of a decimal, without an exponent (`1E+2` is written `100`).
pub(super) fn decimal_text(d: &BigDecimal) -> String {
    d.to_plain_string()
}

/// CEL's operators and the function each is rewritten to.
pub(super) const OPERATORS: &[(&str, &str)] = &[
    ("_+_", "@add"),
    ("_-_", "@sub"),
    ("_*_", "@mul"),
    ("_/_", "@div"),
    ("_%_", "@rem"),
    ("-_", "@neg"),
    ("_==_", "@eq"),
    ("_!=_", "@ne"),
    ("_<_", "@lt"),
    ("_<=_", "@le"),
    ("_>_", "@gt"),
    ("_>=_", "@ge"),
];

/// The functions ferry adds, as templates call them (README "Expressions" lists them).
pub const FUNCTIONS: &[&str] = &[
    "now",
    "decimal",
    "round",
    "floor",
    "ceil",
    "upper",
    "lower",
    "padLeft",
    "padRight",
    "coalesce",
    "min",
    "max",
    "firstName",
    "lastName",
    "date",
    "parseDate",
    "formatDate",
    "addDays",
    "addMonths",
    "addYears",
    "daysBetween",
    "fromEpoch",
];

/// Adds ferry's functions (and the operators' replacements) to an evaluation context.
pub(super) fn register(ctx: &mut Context<'static, 'static>) {
    // Registration fails only for a name the environment already declares; none of these is one (a unit
    // test checks), so a failure would be a programming error caught there.
    let mut put = |name: &str, f: fn(&FunctionContext, Arguments) -> CelResult| {
        let _ = ctx.add_function(name, f);
    };
    put("@add", |_, a| binary(a, add));
    put("@sub", |_, a| binary(a, sub));
    put("@mul", |_, a| binary(a, mul));
    put("@div", |_, a| binary(a, div));
    put("@rem", |_, a| binary(a, rem));
    put("@neg", |_, a| unary(a, neg));
    put("@eq", |_, a| binary(a, |l, r| Ok(Cel::Bool(equal(&l, &r)))));
    put("@ne", |_, a| {
        binary(a, |l, r| Ok(Cel::Bool(!equal(&l, &r))))
    });
    put("@lt", |_, a| {
        compare_with(a, "_<_", |o| o == Ordering::Less)
    });
    put("@le", |_, a| {
        compare_with(a, "_<=_", |o| o != Ordering::Greater)
    });
    put("@gt", |_, a| {
        compare_with(a, "_>_", |o| o == Ordering::Greater)
    });
    put("@ge", |_, a| {
        compare_with(a, "_>=_", |o| o != Ordering::Less)
    });
    put("decimal", |f, a| to_decimal_fn(&args(f, a)?));
    put("round", |f, a| rounded(f, a, RoundingMode::HalfUp));
    put("floor", |f, a| rounded(f, a, RoundingMode::Floor));
    put("ceil", |f, a| rounded(f, a, RoundingMode::Ceiling));
    put("upper", |f, a| text_fn(f, a, |s| s.to_uppercase()));
    put("lower", |f, a| text_fn(f, a, |s| s.to_lowercase()));
    put("padLeft", |f, a| pad(f, a, true));
    put("padRight", |f, a| pad(f, a, false));
    put("coalesce", |f, a| coalesce(&args(f, a)?));
    put("min", |f, a| extreme(f, a, Ordering::Less));
    put("max", |f, a| extreme(f, a, Ordering::Greater));
    put("firstName", |f, a| {
        text_fn(f, a, |s| name_part(s, NamePart::First))
    });
    put("lastName", |f, a| {
        text_fn(f, a, |s| name_part(s, NamePart::Last))
    });
    put("date", |f, a| date_fn(&args(f, a)?));
    put("parseDate", |f, a| parse_date_fn(&args(f, a)?));
    put("formatDate", |f, a| format_date_fn(&args(f, a)?));
    put("addDays", |f, a| shift(&args(f, a)?, Shift::Days));
    put("addMonths", |f, a| shift(&args(f, a)?, Shift::Months));
    put("addYears", |f, a| shift(&args(f, a)?, Shift::Years));
    put("daysBetween", |f, a| days_between(&args(f, a)?));
    put("fromEpoch", |f, a| from_epoch(&args(f, a)?));
}

fn fail(function: &str, message: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

/// The arguments of a call, the target of a method call (`s.upper()`) first.
fn args(ftx: &FunctionContext, Arguments(rest): Arguments) -> Result<Vec<Cel>, ExecutionError> {
    let mut all = Vec::with_capacity(rest.len() + 1);
    if let Some(this) = &ftx.this {
        all.push(Cel::try_from(this.as_ref())?);
    }
    all.extend(rest.iter().cloned());
    Ok(all)
}

fn exactly<const N: usize>(name: &str, args: Vec<Cel>) -> Result<[Cel; N], ExecutionError> {
    let count = args.len();
    args.try_into()
        .map_err(|_| fail(name, format!("takes {N} arguments, got {count}")))
}

fn binary(Arguments(a): Arguments, op: fn(Cel, Cel) -> CelResult) -> CelResult {
    let mut it = a.iter().cloned();
    match (it.next(), it.next()) {
        (Some(l), Some(r)) => op(l, r),
        _ => Err(ExecutionError::invalid_argument_count(2, a.len())),
    }
}

fn unary(Arguments(a): Arguments, op: fn(Cel) -> CelResult) -> CelResult {
    match a.first() {
        Some(v) => op(v.clone()),
        None => Err(ExecutionError::invalid_argument_count(1, 0)),
    }
}

/// A number as an exact decimal: integers as they are, a double through its shortest text (0.1 is 0.1).
fn exact(value: &Cel) -> Option<BigDecimal> {
    match value {
        Cel::Int(i) => Some(BigDecimal::from(*i)),
        Cel::UInt(u) => Some(BigDecimal::from(*u)),
        Cel::Float(x) if x.is_finite() => {
            BigDecimal::from_str(ryu::Buffer::new().format_finite(*x)).ok()
        }
        other => as_decimal(other).cloned(),
    }
}

/// Both operands as decimals when either is one; `None` when neither is (CEL's own operator applies).
fn decimals(
    op: &'static str,
    l: &Cel,
    r: &Cel,
) -> Result<Option<(BigDecimal, BigDecimal)>, ExecutionError> {
    if as_decimal(l).is_none() && as_decimal(r).is_none() {
        return Ok(None);
    }
    match (exact(l), exact(r)) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        _ => Err(ExecutionError::UnsupportedBinaryOperator(
            op,
            l.clone(),
            r.clone(),
        )),
    }
}

fn add(l: Cel, r: Cel) -> CelResult {
    if let Some((a, b)) = decimals("add", &l, &r)? {
        return Ok(decimal(a + b));
    }
    if let Some(result) = date_plus(&l, &r, 1)? {
        return Ok(result);
    }
    l + r
}

fn sub(l: Cel, r: Cel) -> CelResult {
    if let Some((a, b)) = decimals("sub", &l, &r)? {
        return Ok(decimal(a - b));
    }
    if let (Some(a), Some(b)) = (as_date(&l), as_date(&r)) {
        return Ok(Cel::Duration(a - b));
    }
    if let Some(result) = date_plus(&l, &r, -1)? {
        return Ok(result);
    }
    l - r
}

/// A date plus (or minus) a duration of whole days.
fn date_plus(l: &Cel, r: &Cel, sign: i32) -> Result<Option<Cel>, ExecutionError> {
    let (day, duration) = match (as_date(l), as_date(r), l, r) {
        (Some(d), _, _, Cel::Duration(t)) => (d, *t),
        (_, Some(d), Cel::Duration(t), _) if sign > 0 => (d, *t),
        _ => return Ok(None),
    };
    if duration.num_seconds() % 86_400 != 0 || duration.subsec_nanos() != 0 {
        return Err(fail(
            "date arithmetic",
            "a date moves by whole days only; use addDays(), or a timestamp",
        ));
    }
    let days = chrono::Days::new(duration.num_days().unsigned_abs());
    let forward = (duration.num_days() >= 0) == (sign > 0);
    let moved = if forward {
        day.checked_add_days(days)
    } else {
        day.checked_sub_days(days)
    };
    moved
        .map(|d| Some(date(d)))
        .ok_or_else(|| fail("date arithmetic", "the date is out of range"))
}

fn mul(l: Cel, r: Cel) -> CelResult {
    match decimals("mul", &l, &r)? {
        Some((a, b)) => Ok(decimal(a * b)),
        None => l * r,
    }
}

fn div(l: Cel, r: Cel) -> CelResult {
    match decimals("div", &l, &r)? {
        Some((_, b)) if b.is_zero() => Err(ExecutionError::DivisionByZero(l)),
        Some((a, b)) => Ok(decimal(quotient(&a, &b))),
        None => l / r,
    }
}

/// `a / b`, exact when the quotient ends, else to 34 significant digits; trailing zeros dropped.
fn quotient(a: &BigDecimal, b: &BigDecimal) -> BigDecimal {
    let q = (a / b).with_prec(QUOTIENT_DIGITS);
    let q = q.normalized();
    // normalized() writes 100 as 1E+2: bring the scale back to at least 0, so the text has no exponent.
    if q.fractional_digit_count() < 0 {
        q.with_scale(0)
    } else {
        q
    }
}

fn rem(l: Cel, r: Cel) -> CelResult {
    match decimals("rem", &l, &r)? {
        Some((_, b)) if b.is_zero() => Err(ExecutionError::RemainderByZero(l)),
        Some((a, b)) => Ok(decimal(a % b)),
        None => l % r,
    }
}

fn neg(v: Cel) -> CelResult {
    if let Some(d) = as_decimal(&v) {
        return Ok(decimal(-d.clone()));
    }
    match v {
        Cel::Int(i) => i
            .checked_neg()
            .map(Cel::Int)
            .ok_or_else(|| fail("-_", "integer overflow")),
        Cel::Float(x) => Ok(Cel::Float(-x)),
        Cel::Duration(d) => Ok(Cel::Duration(-d)),
        other => Err(ExecutionError::function_error(
            "-_",
            format!("cannot negate {}", type_name(&other)),
        )),
    }
}

/// Equality: numerically between a decimal and any number, by value otherwise (as CEL's `==`).
fn equal(l: &Cel, r: &Cel) -> bool {
    if as_decimal(l).is_some() || as_decimal(r).is_some() {
        return matches!((exact(l), exact(r)), (Some(a), Some(b)) if a == b);
    }
    l == r
}

fn compare(op: &str, l: &Cel, r: &Cel) -> Result<Ordering, ExecutionError> {
    let ordering = if as_decimal(l).is_some() || as_decimal(r).is_some() {
        match (exact(l), exact(r)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    } else if let (Some(a), Some(b)) = (as_date(l), as_date(r)) {
        Some(a.cmp(&b))
    } else {
        l.partial_cmp(r)
    };
    ordering.ok_or_else(|| {
        fail(
            op,
            format!("cannot compare {} with {}", type_name(l), type_name(r)),
        )
    })
}

fn compare_with(Arguments(a): Arguments, op: &str, test: fn(Ordering) -> bool) -> CelResult {
    match (a.first(), a.get(1)) {
        (Some(l), Some(r)) => compare(op, l, r).map(|o| Cel::Bool(test(o))),
        _ => Err(ExecutionError::invalid_argument_count(2, a.len())),
    }
}

/// The type of an expression value, as messages name it.
pub(super) fn type_name(value: &Cel) -> String {
    match value {
        Cel::Opaque(o) => o.runtime_type_name().to_owned(),
        other => other.type_of().to_string(),
    }
}

fn to_decimal_fn(a: &[Cel]) -> CelResult {
    match a {
        [Cel::String(s)] => BigDecimal::from_str(s.trim())
            .map(decimal)
            .map_err(|_| fail("decimal", format!("{s:?} is not a decimal number"))),
        [v] => exact(v).map(decimal).ok_or_else(|| {
            fail(
                "decimal",
                format!("cannot make a decimal of {}", type_name(v)),
            )
        }),
        _ => Err(ExecutionError::invalid_argument_count(1, a.len())),
    }
}

/// `round(x)`, `round(x, places)` (and floor, ceil): a decimal stays an exact decimal, a double a double,
/// an integer an integer.
fn rounded(ftx: &FunctionContext, a: Arguments, mode: RoundingMode) -> CelResult {
    let a = args(ftx, a)?;
    let name = ftx.name;
    let (value, places) = match a.as_slice() {
        [v] => (v, 0),
        [v, Cel::Int(p)] => (v, *p),
        [_, other] => {
            return Err(fail(
                name,
                format!("places must be an integer, not {}", type_name(other)),
            ))
        }
        _ => return Err(ExecutionError::invalid_argument_count(2, a.len())),
    };
    if *value == Cel::Null {
        return Ok(Cel::Null);
    }
    let d = exact(value).ok_or_else(|| fail(name, format!("cannot round {}", type_name(value))))?;
    let r = round_decimal(&d, places, mode);
    Ok(match value {
        Cel::Float(_) => Cel::Float(decimal_text(&r).parse().unwrap_or(f64::NAN)),
        Cel::Int(_) | Cel::UInt(_) if places >= 0 => value.clone(),
        Cel::Int(_) => decimal_text(&r.with_scale(0))
            .parse()
            .map(Cel::Int)
            .map_err(|_| fail(name, "integer overflow"))?,
        _ => decimal(r),
    })
}

/// `d` rounded to `places` decimals (negative: to tens, hundreds, …) in `mode`, exactly.
pub fn round_decimal(d: &BigDecimal, places: i64, mode: RoundingMode) -> BigDecimal {
    if places >= 0 {
        return d.with_scale_round(places, mode);
    }
    // Rounding to tens or hundreds: scale down, round, scale back up.
    let factor = BigDecimal::from(10i64.pow(places.unsigned_abs().min(18) as u32));
    (d / &factor).with_scale_round(0, mode) * factor
}

fn text_fn(ftx: &FunctionContext, a: Arguments, f: fn(&str) -> String) -> CelResult {
    let a = args(ftx, a)?;
    match a.as_slice() {
        [Cel::String(s)] => Ok(Cel::String(Arc::new(f(s)))),
        [Cel::Null] => Ok(Cel::Null),
        [other] => Err(fail(
            ftx.name,
            format!("takes text, not {}", type_name(other)),
        )),
        _ => Err(ExecutionError::invalid_argument_count(1, a.len())),
    }
}

/// `padLeft(s, width)`, `padLeft(s, width, fill)`: text at least `width` characters long.
fn pad(ftx: &FunctionContext, a: Arguments, left: bool) -> CelResult {
    let a = args(ftx, a)?;
    let (text, width, fill) = match a.as_slice() {
        [Cel::Null, ..] => return Ok(Cel::Null),
        [v, Cel::Int(w)] => (text_of(v), *w, ' '),
        [v, Cel::Int(w), Cel::String(f)] if f.chars().count() == 1 => {
            (text_of(v), *w, f.chars().next().unwrap_or(' '))
        }
        _ => {
            return Err(fail(
                ftx.name,
                "takes (text, width) or (text, width, one fill character)",
            ))
        }
    };
    let missing = usize::try_from(width)
        .unwrap_or(0)
        .saturating_sub(text.chars().count());
    let padding: String = std::iter::repeat_n(fill, missing).collect();
    Ok(Cel::String(Arc::new(if left {
        padding + &text
    } else {
        text + &padding
    })))
}

/// The text of a scalar (numbers padded as `padLeft(n, 5, '0')` expects).
fn text_of(value: &Cel) -> String {
    match value {
        Cel::String(s) => s.to_string(),
        Cel::Int(i) => i.to_string(),
        Cel::UInt(u) => u.to_string(),
        Cel::Float(x) => x.to_string(),
        other => match (as_decimal(other), as_date(other)) {
            (Some(d), _) => decimal_text(d),
            (_, Some(d)) => d.to_string(),
            _ => format!("{other:?}"),
        },
    }
}

/// The first argument that has a value: not null and not empty (or blank) text.
fn coalesce(a: &[Cel]) -> CelResult {
    let present = |v: &&Cel| match v {
        Cel::Null => false,
        Cel::String(s) => !s.trim().is_empty(),
        _ => true,
    };
    Ok(a.iter().find(present).cloned().unwrap_or(Cel::Null))
}

/// `min(a, b, …)` / `max(a, b, …)`, or of one list; decimals compare exactly with other numbers.
fn extreme(ftx: &FunctionContext, a: Arguments, wanted: Ordering) -> CelResult {
    let a = args(ftx, a)?;
    let items: Vec<Cel> = match a.as_slice() {
        [Cel::List(items)] => items.to_vec(),
        _ => a,
    };
    let mut best: Option<Cel> = None;
    for item in items.into_iter().filter(|v| *v != Cel::Null) {
        best = Some(match best {
            Some(b) if compare(ftx.name, &item, &b)? != wanted => b,
            _ => item,
        });
    }
    Ok(best.unwrap_or(Cel::Null))
}

/// Which part of a person's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
    /// Given names: all but the last word, or what follows the comma of `Last, First`.
    First,
    /// The family name: the last word, or what precedes the comma of `Last, First`.
    Last,
}

/// Splits a full name: `Ada King Lovelace` → `Ada King` + `Lovelace`; `Lovelace, Ada` → `Ada` + `Lovelace`;
/// a single word is a first name.
pub fn name_part(full: &str, part: NamePart) -> String {
    let full = full.split_whitespace().collect::<Vec<_>>().join(" ");
    let (first, last) = match full.split_once(',') {
        Some((last, first)) => (first.trim().to_owned(), last.trim().to_owned()),
        None => match full.rsplit_once(' ') {
            Some((first, last)) => (first.to_owned(), last.to_owned()),
            None => (full.clone(), String::new()),
        },
    };
    match part {
        NamePart::First => first,
        NamePart::Last => last,
    }
}

fn date_fn(a: &[Cel]) -> CelResult {
    match a {
        [Cel::Null] => Ok(Cel::Null),
        [Cel::String(s)] => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(date)
            .map_err(|_| fail("date", format!("{s:?} is not a date (YYYY-MM-DD)"))),
        [Cel::Timestamp(t)] => Ok(date(t.date_naive())),
        [v] if as_date(v).is_some() => Ok(v.clone()),
        [v] => Err(fail(
            "date",
            format!("cannot make a date of {}", type_name(v)),
        )),
        _ => Err(ExecutionError::invalid_argument_count(1, a.len())),
    }
}

/// `parseDate(text, format)`: a date, or a timestamp when the format has a time (UTC unless it has an
/// offset).
fn parse_date_fn(a: &[Cel]) -> CelResult {
    let [text, format] = exactly("parseDate", a.to_vec())?;
    let (Cel::String(text), Cel::String(format)) = (&text, &format) else {
        if text == Cel::Null {
            return Ok(Cel::Null);
        }
        return Err(fail("parseDate", "takes (text, format)"));
    };
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_str(text, format) {
        return Ok(Cel::Timestamp(t));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
        return Ok(Cel::Timestamp(t.and_utc().fixed_offset()));
    }
    NaiveDate::parse_from_str(text, format)
        .map(date)
        .map_err(|_| {
            fail(
                "parseDate",
                format!("{text:?} does not match the format {format:?}"),
            )
        })
}

fn format_date_fn(a: &[Cel]) -> CelResult {
    let [value, format] = exactly("formatDate", a.to_vec())?;
    let Cel::String(format) = &format else {
        return Err(fail("formatDate", "takes (date or timestamp, format)"));
    };
    let items = chrono::format::StrftimeItems::new(format)
        .parse()
        .map_err(|_| fail("formatDate", format!("invalid format {format:?}")))?;
    let mut out = String::new();
    let written = match (&value, as_date(&value)) {
        (Cel::Null, _) => return Ok(Cel::Null),
        (_, Some(d)) => std::fmt::Write::write_fmt(
            &mut out,
            format_args!("{}", d.format_with_items(items.iter())),
        ),
        (Cel::Timestamp(t), _) => std::fmt::Write::write_fmt(
            &mut out,
            format_args!("{}", t.format_with_items(items.iter())),
        ),
        (other, _) => {
            return Err(fail(
                "formatDate",
                format!("cannot format {}", type_name(other)),
            ))
        }
    };
    written.map(|()| Cel::String(Arc::new(out))).map_err(|_| {
        fail(
            "formatDate",
            format!("the value has no part the format {format:?} asks for"),
        )
    })
}

#[derive(Clone, Copy)]
enum Shift {
    Days,
    Months,
    Years,
}

/// `addDays(d, n)`, `addMonths(d, n)`, `addYears(d, n)` on a date or a timestamp; a month past the end of
/// the shorter month ends on its last day (Jan 31 + 1 month = Feb 28 or 29).
fn shift(a: &[Cel], unit: Shift) -> CelResult {
    let name = match unit {
        Shift::Days => "addDays",
        Shift::Months => "addMonths",
        Shift::Years => "addYears",
    };
    let [value, n] = exactly(name, a.to_vec())?;
    let Cel::Int(n) = n else {
        return Err(fail(name, "the amount must be an integer"));
    };
    let move_date = |d: NaiveDate| -> Option<NaiveDate> {
        match unit {
            Shift::Days => d.checked_add_signed(chrono::Duration::try_days(n)?),
            Shift::Months | Shift::Years => {
                let months = if matches!(unit, Shift::Years) {
                    n.checked_mul(12)?
                } else {
                    n
                };
                let m = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
                if months >= 0 {
                    d.checked_add_months(m)
                } else {
                    d.checked_sub_months(m)
                }
            }
        }
    };
    let out_of_range = || fail(name, "the result is out of range");
    match (&value, as_date(&value)) {
        (Cel::Null, _) => Ok(Cel::Null),
        (_, Some(d)) => move_date(d).map(date).ok_or_else(out_of_range),
        (Cel::Timestamp(t), _) => {
            let day = move_date(t.date_naive()).ok_or_else(out_of_range)?;
            let moved = day.and_time(t.time()).and_local_timezone(*t.offset());
            moved.single().map(Cel::Timestamp).ok_or_else(out_of_range)
        }
        (other, _) => Err(fail(
            name,
            format!("takes a date or timestamp, not {}", type_name(other)),
        )),
    }
}

/// `daysBetween(a, b)`: whole days from `a` to `b` (negative when `b` is earlier).
fn days_between(a: &[Cel]) -> CelResult {
    let [from, to] = exactly("daysBetween", a.to_vec())?;
    let day = |v: &Cel| match (v, as_date(v)) {
        (_, Some(d)) => Some(d),
        (Cel::Timestamp(t), _) => Some(t.date_naive()),
        _ => None,
    };
    if from == Cel::Null || to == Cel::Null {
        return Ok(Cel::Null);
    }
    match (day(&from), day(&to)) {
        (Some(a), Some(b)) => Ok(Cel::Int((b - a).num_days())),
        _ => Err(fail("daysBetween", "takes two dates or timestamps")),
    }
}

/// `fromEpoch(seconds)`: the UTC timestamp of seconds (an integer, a double or a decimal) since 1970.
fn from_epoch(a: &[Cel]) -> CelResult {
    let [secs] = exactly("fromEpoch", a.to_vec())?;
    if secs == Cel::Null {
        return Ok(Cel::Null);
    }
    let d = exact(&secs).ok_or_else(|| fail("fromEpoch", "takes a number of seconds"))?;
    let nanos = (d * BigDecimal::from(1_000_000_000)).with_scale_round(0, RoundingMode::HalfEven);
    let nanos: i64 = decimal_text(&nanos)
        .parse()
        .map_err(|_| fail("fromEpoch", "the time is out of range"))?;
    Ok(Cel::Timestamp(
        chrono::DateTime::from_timestamp_nanos(nanos).fixed_offset(),
    ))
}
