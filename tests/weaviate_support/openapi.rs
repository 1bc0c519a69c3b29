//! A hand-written validator for the JSON-schema subset Swagger 2.0 uses in
//! `tests/data/weaviate/openapi.json`: `$ref`, `allOf`, `type`, `format:
//! uuid`, `enum`, `properties`, `additionalProperties`, `items`,
//! `x-nullable`. Stricter than the server in one way on purpose: a key not
//! declared in an object schema that lists `properties` (and has no
//! `additionalProperties`) is an error, so a misspelt field is caught.

use serde_json::Value;

pub struct Spec {
    root: Value,
}

impl Spec {
    pub fn load() -> Spec {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/weaviate/openapi.json"
        );
        let text = std::fs::read_to_string(path).expect("openapi.json");
        Spec {
            root: serde_json::from_str(&text).expect("openapi.json is JSON"),
        }
    }

    /// The `paths` template matching a concrete path (`/v1/...`, query ignored).
    pub fn route(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let path = path.strip_prefix("/v1").unwrap_or(path);
        let want: Vec<&str> = path.split('/').collect();
        let paths = self.root.get("paths")?.as_object()?;
        // Prefer a literal match over a templated one.
        let mut best: Option<(usize, &String)> = None;
        for tmpl in paths.keys() {
            let have: Vec<&str> = tmpl.split('/').collect();
            if have.len() != want.len() {
                continue;
            }
            let mut literal = 0;
            let ok = have.iter().zip(&want).all(|(h, w)| {
                if h.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    h == w
                }
            });
            if ok && best.is_none_or(|(n, _)| literal > n) {
                best = Some((literal, tmpl));
            }
        }
        best.map(|(_, t)| t.clone())
    }

    /// Whether `method` is documented on the route of `path`.
    pub fn documents(&self, method: &str, path: &str) -> bool {
        self.route(path).is_some_and(|r| {
            self.root["paths"][r.as_str()]
                .get(method.to_ascii_lowercase())
                .is_some()
        })
    }

    /// The body parameter's schema of an operation, if it takes a body.
    pub fn body_schema(&self, method: &str, path: &str) -> Option<Value> {
        let route = self.route(path)?;
        let op = self.root["paths"][route.as_str()].get(method.to_ascii_lowercase())?;
        let params = op.get("parameters")?.as_array()?;
        params.iter().find_map(|p| {
            let p = self.resolve(p);
            (p.get("in")?.as_str()? == "body").then(|| p.get("schema").cloned())?
        })
    }

    /// Check one request a client sent: `method` is documented on the
    /// route of `path`, and a body, when there is one, is JSON that
    /// validates against the operation's body schema and holds no
    /// `"vector"`. Panics on a violation; returns `METHOD /route` for a
    /// request with a body (to count what was validated), None without.
    pub fn assert_request_conforms(&self, method: &str, path: &str, body: &[u8]) -> Option<String> {
        assert!(
            self.documents(method, path),
            "{method} {path} is not in openapi.json"
        );
        if body.is_empty() {
            return None;
        }
        let schema = self
            .body_schema(method, path)
            .unwrap_or_else(|| panic!("{method} {path} takes no body"));
        let v: Value = serde_json::from_slice(body).expect("body is JSON");
        let errs = self.validate(&schema, &v);
        assert!(errs.is_empty(), "{method} {path}: {errs:#?}");
        assert!(
            !body.windows(8).any(|w| w == b"\"vector\""),
            "a vector was sent: {method} {path}"
        );
        Some(format!("{method} {}", self.route(path).unwrap_or_default()))
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        for _ in 0..32 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let ptr = r.strip_prefix('#').unwrap_or(r);
                    s = self.root.pointer(ptr).unwrap_or(&Value::Null);
                }
                None => break,
            }
        }
        s
    }

    /// Every violation of `schema` by `v`, as `pointer: reason`.
    pub fn validate(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.check(schema, v, "", &mut errs);
        errs
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let s = self.resolve(schema);
        if s.is_null() {
            errs.push(format!("{at}: unresolvable schema {schema}"));
            return;
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, v, at, errs);
            }
        }
        if v.is_null() {
            if s.get("x-nullable") != Some(&Value::Bool(true)) && s.get("type").is_some() {
                errs.push(format!("{at}: null is not allowed"));
            }
            return;
        }
        if let Some(ty) = s.get("type").and_then(Value::as_str) {
            let ok = match ty {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                errs.push(format!("{at}: expected {ty}, got {v}"));
                return;
            }
        }
        if s.get("format").and_then(Value::as_str) == Some("uuid") {
            if let Some(text) = v.as_str() {
                if uuid::Uuid::parse_str(text).is_err() {
                    errs.push(format!("{at}: {text:?} is not a uuid"));
                }
            }
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.contains(v) {
                errs.push(format!("{at}: {v} is not one of {options:?}"));
            }
        }
        if let (Some(obj), true) = (v.as_object(), s.get("type").is_none_or(|t| t == "object")) {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties");
            for (k, val) in obj {
                let here = format!("{at}/{k}");
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(sub), _) => self.check(sub, val, &here, errs),
                    (None, Some(Value::Object(_))) => {
                        if let Some(e) = extra {
                            self.check(e, val, &here, errs)
                        }
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) if props.is_some() => {
                        errs.push(format!("{here}: not a documented field"))
                    }
                    (None, _) => {}
                }
            }
        }
        if let (Some(items), Some(list)) = (s.get("items"), v.as_array()) {
            for (i, item) in list.iter().enumerate() {
                self.check(items, item, &format!("{at}/{i}"), errs);
            }
        }
    }
}
