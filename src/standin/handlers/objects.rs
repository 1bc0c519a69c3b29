//! The object endpoints: list (with the `after` cursor), get, head and
//! delete one object.

use std::collections::HashMap;

use hyper::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{code_message, error_list, reply, upper_first, Resp, State, Stored};

fn object_json(class: &str, id: &Uuid, o: &Stored) -> Value {
    json!({
        "class": class,
        "id": id.to_string(),
        "properties": &*o.properties,
        "creationTimeUnix": o.created,
        "lastUpdateTimeUnix": o.updated,
    })
}

pub(super) fn list_objects(st: &State, params: &HashMap<String, String>) -> Resp {
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 25,
        Some(Ok(l)) => l,
        Some(Err(_)) => return code_message(422, 601, "limit in query must be of type int64"),
    };
    let after = match params.get("after").filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match Uuid::parse_str(a) {
            Ok(u) => Some(u),
            Err(_) => {
                return error_list(422, &format!("invalid cursor: after {a:?} is not a uuid"))
            }
        },
    };
    let mut out = Vec::new();
    match params.get("class").map(|c| upper_first(c)) {
        Some(class) => {
            if !st.classes.contains_key(&class) {
                return error_list(404, &format!("class {class} not found"));
            }
            if let Some(objs) = st.objects.get(&class) {
                let range = match after {
                    Some(a) => {
                        objs.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    }
                    None => objs.range(..),
                };
                out.extend(range.take(limit).map(|(id, o)| object_json(&class, id, o)));
            }
        }
        None => {
            if after.is_some() {
                return error_list(422, "the 'after' cursor requires the 'class' parameter");
            }
            let mut classes: Vec<&String> = st.objects.keys().collect();
            classes.sort();
            for c in classes {
                for (id, o) in &st.objects[c] {
                    if out.len() >= limit {
                        break;
                    }
                    out.push(object_json(c, id, o));
                }
            }
        }
    }
    let n = out.len();
    reply(
        200,
        Some(&json!({"objects": out, "totalResults": n, "deprecations": null})),
    )
}

pub(super) fn object(st: &mut State, method: &Method, class: &str, id: &str) -> Resp {
    let Ok(id) = Uuid::parse_str(id) else {
        return code_message(
            422,
            606,
            &format!("id in path must be of type uuid: {id:?}"),
        );
    };
    let class = upper_first(class);
    match *method {
        Method::DELETE => {
            if !st.classes.contains_key(&class) {
                return error_list(500, &format!("delete from non-existing index for {class}"));
            }
            if let Some(objs) = st.objects.get_mut(&class) {
                if objs.remove(&id).is_some() {
                    st.stats.objects_deleted += 1;
                }
            }
            // Since 1.25.29/1.26 a missing object is not checked: 204 either way.
            reply(204, None)
        }
        Method::HEAD | Method::GET => match st.objects.get(&class).and_then(|m| m.get(&id)) {
            Some(o) if *method == Method::GET => reply(200, Some(&object_json(&class, &id, o))),
            Some(_) => reply(204, None),
            None => reply(404, None),
        },
        _ => code_message(405, 405, "method not allowed"),
    }
}
