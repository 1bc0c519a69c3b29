//! Unit tests of the line parser: every op form of SPEC.md, changeset and
//! prune lines, mgit's porcelain forms, why a malformed line is refused, and
//! the reuse of its buffers.

use super::*;

fn parse(s: &str) -> Result<Option<Change>, LineError> {
    LineParser::new().parse(s.as_bytes())
}

fn file(s: &str) -> FileChange {
    match parse(s) {
        Ok(Some(Change::File(f))) => f,
        other => panic!("{s}: {other:?}"),
    }
}

#[test]
fn every_op_form_of_the_spec_parses() {
    let f = file(
        r#"{"op":"add","repo":"ServiceA","path":"/opt/pdi/Enterprise/ServiceA/src/main.py","size":2453}"#,
    );
    assert_eq!(f.op, Op::Add);
    assert_eq!(f.repo.as_deref(), Some("ServiceA"));
    assert_eq!(file(r#"{"op":"modify","path":"a/b"}"#).op, Op::Update);
    assert_eq!(
        file(r#"{"op":"update","repo":"A","path":"src/u.py"}"#).op,
        Op::Update
    );
    assert_eq!(
        file(r#"{"op":"delete","repo":"B","path":"x","size":0}"#).op,
        Op::Delete
    );
    let r = file(r#"{"op":"rename","repo":"C","from":"a/old.py","path":"a/new.py"}"#);
    assert_eq!((r.op, r.from.as_deref()), (Op::Rename, Some("a/old.py")));
    let c = file(r#"{"op":"add","path":"r/x","content":"hi\n"}"#);
    assert_eq!(c.content.as_deref(), Some(&b"hi\n"[..]));
    let b = file(r#"{"op":"add","path":"r/x","content_base64":"aGk="}"#);
    assert_eq!(b.content.as_deref(), Some(&b"hi"[..]));
    let u = file(
        r#"{"op":"add","path":"r/\u00e9\n x","mime":"text/plain","extra":{"a":[1,2,{"b":null}]},"z":1}"#,
    );
    assert_eq!(u.path, "r/é\n x");
}

#[test]
fn changeset_and_prune_lines_are_recognised() {
    let c =
        parse(r#"{"repo":"ServiceA","new_changeset":{"commit":"9f1c","branch":"main","x":[1]}}"#);
    assert_eq!(
        c,
        Ok(Some(Change::Changeset(Changeset {
            repo: "ServiceA".into(),
            commit: "9f1c".into(),
            branch: Some("main".into()),
            parent: None,
            base: false,
        })))
    );
    assert_eq!(
        parse(r#"{"op":"prune","repo":"R"}"#),
        Ok(Some(Change::Prune { repo: "R".into() }))
    );
}

#[test]
fn mgit_porcelain_forms_are_normalised() {
    let r = file(r#"{"repo":"A","op":"modify","path":"old.py -> new.py"}"#);
    assert_eq!(
        (r.op, r.from.as_deref(), r.path.as_str()),
        (Op::Rename, Some("old.py"), "new.py")
    );
    let q = file(r#"{"repo":"A","op":"add","path":"\"a b\\303\\251\""}"#);
    assert_eq!(q.path, "a bé");
    assert_eq!(
        parse(r#"{"repo":"A","op":"add","path":"docs/"}"#),
        Ok(Some(Change::UntrackedDir {
            repo: Some("A".into()),
            dir: "docs".into()
        }))
    );
    match parse(r#"{"repo":"A","new_changeset":{"commit":"c","parent":null}}"#) {
        Ok(Some(Change::Changeset(c))) => assert!(c.base),
        other => panic!("{other:?}"),
    }
}

#[test]
fn blank_lines_are_skipped() {
    assert_eq!(parse(""), Ok(None));
    assert_eq!(parse("  \t "), Ok(None));
}

#[test]
fn malformed_lines_say_why() {
    let cases = [
        (r#"{"op":"add","path":"#, "invalid JSON"),
        (r#"["op","add"]"#, "not a JSON object"),
        (r#""add""#, "not a JSON object"),
        (r#"{"path":"a/b"}"#, "missing field `op`"),
        (r#"{"op":"add"}"#, "missing field `path`"),
        (r#"{"op":"copy","path":"a"}"#, "unknown op `copy`"),
        (r#"{"op":"add","path":""}"#, "field `path` is empty"),
        (r#"{"op":"add","path":7}"#, "field `path` must be a string"),
        (r#"{"op":1,"path":"a"}"#, "field `op` must be a string"),
        (r#"{"op":"rename","path":"a/b"}"#, "missing field `from`"),
        (r#"{"op":"add","path":"a\u0000b"}"#, "NUL"),
        (r#"{"op":"add","path":"a","content_base64":"!!"}"#, "base64"),
        (
            r#"{"repo":"A","new_changeset":{"branch":"m"}}"#,
            "new_changeset.commit",
        ),
        (r#"{"op":"add","path":"a"} trailing"#, "invalid JSON"),
    ];
    for (line, want) in cases {
        let got = parse(line).expect_err(line).to_string();
        assert!(got.contains(want), "{line}: {got}");
    }
    let bad_utf8 = b"{\"op\":\"add\",\"path\":\"a\xff\"}";
    assert!(matches!(
        LineParser::new().parse(bad_utf8),
        Err(LineError::Json(_))
    ));
}

#[test]
fn parser_buffers_are_reused_across_lines() {
    let mut p = LineParser::new();
    for i in 0..1000 {
        let line = format!(r#"{{"op":"add","repo":"r","path":"p/{i}.rs"}}"#);
        match p.parse(line.as_bytes()) {
            Ok(Some(Change::File(f))) => assert_eq!(f.path, format!("p/{i}.rs")),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ignored_fields_are_ignored_whatever_their_json_value() {
    // tests/path_rules.rs feeds the binary the same values.
    let shared = include_str!("../../tests/data/odd-json-values.txt").lines();
    let own = ["true", "[1e999,{\"a\":{\"b\":[18446744073709551616]}}]"];
    for v in shared.chain(own) {
        let line = format!(
            r#"{{"op":"add","repo":"R","size":{v},"path":"a.txt","mime":null,"x":{{"y":{v}}}}}"#
        );
        let f = file(&line);
        assert_eq!((f.op, f.path.as_str()), (Op::Add, "a.txt"), "{line}");
    }
    let c = parse(r#"{"repo":"R","new_changeset":{"commit":"c","n":1e999}}"#);
    assert!(matches!(c, Ok(Some(Change::Changeset(_)))), "{c:?}");
    let d = parse(r#"{"repo":"R","op":"add","path":"d/","size":1e999}"#);
    assert!(matches!(d, Ok(Some(Change::UntrackedDir { .. }))), "{d:?}");
    let r = file(r#"{"repo":"R","op":"modify","path":"a -> b","size":-1e999}"#);
    assert_eq!((r.op, r.path.as_str()), (Op::Rename, "b"));
    // A field we read must still have its type.
    let e = parse(r#"{"op":"add","path":1e999}"#).expect_err("number path");
    assert!(e.to_string().contains("must be a string"), "{e}");
}

#[test]
fn zeroing_numbers_keeps_invalid_json_invalid_and_strings_untouched() {
    let z = |s: &str| zero_numbers(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(
        z(r#"{"a":1e999,"b":[-12.5e3, 7],"s":"1e999 \" 5"}"#).as_deref(),
        Some(r#"{"a":0    ,"b":[0      , 0],"s":"1e999 \" 5"}"#)
    );
    assert_eq!(z(r#"{"a":0,"s":"12"}"#), None);
    for bad in [
        "01", "1.", "-", "--5", "1e", "1e+", "-a1", "x12", "1.5.3", "0x10",
    ] {
        let line = format!(r#"{{"a":{bad}}}"#);
        if let Some(zeroed) = zero_numbers(line.as_bytes()) {
            assert!(
                LineParser::new()
                    .read_tape_once(&zeroed, interpret)
                    .is_err(),
                "{bad} became valid: {zeroed:?}"
            );
        }
        assert!(parse(&line).is_err(), "{bad}");
    }
}
