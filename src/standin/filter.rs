//! The subset of Weaviate `where` filters batch delete needs: `Equal`,
//! `NotEqual`, `ContainsAny`, `ContainsAll`, `ContainsNone`, `IsNull` on the
//! id or a property, `Like` (`*`, `?`) on a text property, and `GreaterThan`, `GreaterThanEqual`, `LessThan`,
//! `LessThanEqual` with `valueInt` / `valueNumber` on a property, combined
//! with `And`, `Or`, `Not`. Text compares whole values, as under `field`
//! tokenization. Ranges compare numerically; a missing or null property, or
//! a non-numeric value, never matches one (an array property matches when
//! any element does).

use serde_json::{Map, Value};
use uuid::Uuid;

const VALUE_FIELDS: &[&str] = &[
    "valueText",
    "valueString",
    "valueInt",
    "valueNumber",
    "valueBoolean",
    "valueDate",
    "valueTextArray",
    "valueStringArray",
    "valueIntArray",
    "valueNumberArray",
    "valueBooleanArray",
    "valueDateArray",
    "valueGeoRange",
];

#[derive(Debug)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Leaf {
        path: String,
        op: String,
        values: Vec<Value>,
        /// `values` as a set, when they are many strings (an elysiactl
        /// delete names thousands of paths and ids): membership in O(1).
        set: Option<std::collections::HashSet<String>>,
    },
}

pub fn parse(v: &Value) -> Result<Filter, String> {
    let obj = v.as_object().ok_or("where filter must be an object")?;
    let op = obj
        .get("operator")
        .and_then(Value::as_str)
        .ok_or("where filter: operator is required")?;
    let operands = || -> Result<Vec<Filter>, String> {
        let list = obj
            .get("operands")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| format!("operator {op} needs operands"))?;
        list.iter().map(parse).collect()
    };
    match op {
        "And" => return Ok(Filter::And(operands()?)),
        "Or" => return Ok(Filter::Or(operands()?)),
        "Not" => {
            let mut ops = operands()?;
            if ops.len() != 1 {
                return Err("operator Not needs exactly one operand".into());
            }
            return Ok(Filter::Not(Box::new(ops.remove(0))));
        }
        "Equal" | "NotEqual" | "ContainsAny" | "ContainsAll" | "ContainsNone" | "IsNull"
        | "GreaterThan" | "GreaterThanEqual" | "LessThan" | "LessThanEqual" | "Like" => {}
        "WithinGeoRange" => return Err(format!("operator {op} is not supported by the stand-in")),
        other => return Err(format!("unknown operator {other:?}")),
    }
    let path: Vec<&str> = obj
        .get("path")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if path.len() != 1 {
        return Err(format!(
            "where filter: path must name one property, got {path:?}"
        ));
    }
    let present: Vec<&str> = VALUE_FIELDS
        .iter()
        .copied()
        .filter(|k| obj.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if present.len() != 1 {
        return Err(format!(
            "where filter: exactly one value field must be set, got {present:?}"
        ));
    }
    let field = present[0];
    let raw = &obj[field];
    let values = match raw {
        Value::Array(a) => a.clone(),
        v => vec![v.clone()],
    };
    let is_array_op = matches!(op, "ContainsAny" | "ContainsAll" | "ContainsNone");
    if is_array_op != field.ends_with("Array") && op != "IsNull" {
        return Err(format!("operator {op} cannot be used with {field}"));
    }
    let name = path[0];
    if op == "Like" && !matches!(field, "valueText" | "valueString") {
        return Err(format!("operator Like cannot be used with {field}"));
    }
    if is_range(op) {
        let (ok, kind) = match field {
            "valueInt" => (raw.as_f64().is_some_and(|f| f.fract() == 0.0), "an integer"),
            "valueNumber" => (raw.is_number(), "a number"),
            _ => {
                return Err(format!(
                    "operator {op} with {field} is not supported by the stand-in \
                     (only valueInt, valueNumber)"
                ))
            }
        };
        if !ok {
            return Err(format!("{field} must be {kind}, got {raw}"));
        }
    }
    if (name == "id" || name == "_id")
        && !matches!(
            field,
            "valueText" | "valueString" | "valueTextArray" | "valueStringArray"
        )
    {
        return Err(format!("the id can only be compared to text, got {field}"));
    }
    let set = (values.len() > 8 && values.iter().all(Value::is_string)).then(|| {
        values
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    });
    Ok(Filter::Leaf {
        set,
        path: if name == "_id" {
            "id".into()
        } else {
            name.into()
        },
        op: op.into(),
        values,
    })
}

/// The (repo, path) pairs a filter can only match within, when it says so
/// plainly: an `And` with `repo Equal` and `path Equal` among its operands, or
/// an `Or` of such. Lets a delete look only at those files' objects instead of
/// evaluating the filter on every object of the class (a real server uses
/// its inverted index for this). `None`: any object may match.
pub fn files_named(f: &Filter) -> Option<FileSet> {
    let mut set = FileSet::default();
    collect_files(f, &mut set).then_some(set)
}

/// Paths by repo.
pub type FileSet = std::collections::HashMap<String, std::collections::HashSet<String>>;

fn collect_files(f: &Filter, set: &mut FileSet) -> bool {
    match f {
        Filter::Or(fs) => fs.iter().all(|f| collect_files(f, set)),
        Filter::And(fs) => {
            // `name Equal v`, or `name ContainsAny [v…]`: the values.
            let named = |name: &str| {
                fs.iter().find_map(|f| match f {
                    Filter::Leaf {
                        path, op, values, ..
                    } if path == name && (op == "Equal" || op == "ContainsAny") => values
                        .iter()
                        .map(|v| v.as_str())
                        .collect::<Option<Vec<&str>>>(),
                    _ => None,
                })
            };
            match (named("repo"), named("path")) {
                (Some(repos), Some(paths)) if repos.len() == 1 => {
                    let entry = set.entry(repos[0].to_owned()).or_default();
                    entry.extend(paths.into_iter().map(str::to_owned));
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
}

pub fn matches(f: &Filter, id: &Uuid, props: &Map<String, Value>) -> bool {
    match f {
        Filter::And(fs) => fs.iter().all(|f| matches(f, id, props)),
        Filter::Or(fs) => fs.iter().any(|f| matches(f, id, props)),
        Filter::Not(f) => !matches(f, id, props),
        Filter::Leaf {
            path,
            op,
            values,
            set,
        } => {
            let id_value;
            let have: Vec<&Value> = if path == "id" {
                id_value = Value::String(id.to_string());
                vec![&id_value]
            } else {
                match props.get(path) {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(a)) => a.iter().collect(),
                    Some(v) => vec![v],
                }
            };
            let eq = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            };
            let has = |v: &Value| have.iter().any(|h| eq(h, v));
            let any_in_set = |set: &std::collections::HashSet<String>| {
                have.iter()
                    .filter_map(|v| v.as_str())
                    .any(|h| set.contains(h))
            };
            match (op.as_str(), set) {
                ("ContainsAny", Some(set)) => return any_in_set(set),
                ("ContainsNone", Some(set)) => return !any_in_set(set),
                _ => {}
            }
            match op.as_str() {
                "Equal" => !have.is_empty() && values.iter().all(has),
                "NotEqual" => have.is_empty() || !values.iter().all(has),
                "ContainsAny" => values.iter().any(has),
                "ContainsAll" => values.iter().all(has),
                "ContainsNone" => !values.iter().any(has),
                "IsNull" => values.first().and_then(Value::as_bool) == Some(have.is_empty()),
                "Like" => values.first().and_then(Value::as_str).is_some_and(|pat| {
                    have.iter().filter_map(|v| v.as_str()).any(|h| like(pat, h))
                }),
                op if is_range(op) => {
                    let Some(want) = values.first().and_then(Value::as_f64) else {
                        return false;
                    };
                    have.iter().filter_map(|v| v.as_f64()).any(|h| match op {
                        "GreaterThan" => h > want,
                        "GreaterThanEqual" => h >= want,
                        "LessThan" => h < want,
                        _ => h <= want,
                    })
                }
                _ => false,
            }
        }
    }
}

/// Weaviate's `Like` on a whole value (`field` tokenization): `*` any run
/// of characters, `?` any one character.
fn like(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // The classic two-pointer wildcard match, backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

fn is_range(op: &str) -> bool {
    matches!(
        op,
        "GreaterThan" | "GreaterThanEqual" | "LessThan" | "LessThanEqual"
    )
}
