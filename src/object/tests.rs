//! The object model against SPEC's Objects section: named cases, then the
//! invariants on arbitrary bytes (proptest). [`check`] is the oracle; the
//! tests at the end show it rejects each kind of broken object.

use proptest::prelude::*;

use super::chunk::{floor_char, is_blank};
use super::*;

/// Objects of `bytes` at any bound the chunker itself supports (≥ 4), for
/// the cases below `ChunkSize::MIN`.
fn objects_at(bytes: &[u8], bound: usize, path: &str) -> Vec<ChunkObject> {
    let size = ChunkSize(bound);
    objects("R", path, bytes, size)
}

fn checked(bytes: &[u8], bound: usize, path: &str) -> Vec<ChunkObject> {
    let objs = objects_at(bytes, bound, path);
    if let Err(v) = check(bytes, ChunkSize(bound), &objs) {
        panic!("{v}\nbound {bound}, path {path}, bytes {bytes:?}");
    }
    objs
}

fn cuts(objs: &[ChunkObject]) -> Vec<u64> {
    objs.iter().skip(1).map(|o| o.byte_start).collect()
}

/// The text of the line that starts at each cut.
fn lines_after_cuts<'a>(text: &'a str, objs: &[ChunkObject]) -> Vec<&'a str> {
    cuts(objs)
        .iter()
        .map(|&c| text[c as usize..].lines().next().unwrap_or(""))
        .collect()
}

#[test]
fn chunk_zero_id_is_the_whole_file_id() {
    assert_eq!(
        chunk_id("ServiceA", "src/main.py", 0),
        crate::target::object_id("ServiceA", "src/main.py")
    );
    assert_eq!(
        chunk_id("ServiceA", "src/main.py", 0).to_string(),
        "850e44aa-fe73-571b-a991-2a849c0a5c11"
    );
}

#[test]
fn chunk_k_id_is_uuid_v5_of_the_spec_name() {
    let id = chunk_id("ServiceA", "src/main.py", 2);
    // Python: uuid.uuid5(uuid.NAMESPACE_URL, "elysiactl://ServiceA/src/main.py//2")
    assert_eq!(id.to_string(), "f2341bab-4b99-5601-b562-ca4c3763eabf");
    assert_eq!(id.get_version_num(), 5);
    assert_ne!(id, chunk_id("ServiceA", "src/main.py", 1));
    assert_ne!(id, chunk_id("ServiceA", "src/main.py/", 2));
}

#[test]
fn chunk_size_below_the_minimum_is_refused_naming_both_sizes() {
    for n in 1..ChunkSize::MIN {
        let e = ChunkSize::new(n).expect_err("too small");
        assert_eq!(
            e,
            Error::ChunkSizeTooSmall {
                size: n,
                min: ChunkSize::MIN
            }
        );
        let msg = e.to_string();
        assert!(msg.contains(&n.to_string()) && msg.contains("16"), "{msg}");
    }
    assert_eq!(ChunkSize::new(0), Ok(ChunkSize::WHOLE_FILE));
    assert_eq!(ChunkSize::new(16).map(ChunkSize::get), Ok(16));
    assert_eq!("4096".parse::<ChunkSize>(), Ok(ChunkSize::DEFAULT));
    assert_eq!(ChunkSize::default().to_string(), "4096");
    assert!(matches!(
        "4k".parse::<ChunkSize>(),
        Err(Error::ChunkSizeNotANumber { .. })
    ));
    assert!("-1".parse::<ChunkSize>().is_err());
}

#[test]
fn empty_file_is_one_empty_chunk_on_line_1() {
    for size in [ChunkSize::DEFAULT, ChunkSize::WHOLE_FILE] {
        let objs = objects("R", "a.rs", b"", size);
        check(b"", size, &objs).expect("valid");
        assert_eq!(objs.len(), 1);
        let o = &objs[0];
        assert_eq!(
            (o.byte_start, o.byte_end, o.start_line, o.end_line),
            (0, 0, 1, 1)
        );
        assert_eq!((o.chunk, o.chunk_count, o.size), (0, 1, 0));
        assert_eq!(o.content, "");
        assert_eq!(
            o.content_sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

#[test]
fn chunk_size_zero_keeps_one_object_per_file() {
    let text = "fn a() {}\n".repeat(10_000);
    let objs = objects("R", "a.rs", text.as_bytes(), ChunkSize::WHOLE_FILE);
    check(text.as_bytes(), ChunkSize::WHOLE_FILE, &objs).expect("valid");
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0].content, text);
    assert_eq!(objs[0].id, crate::target::object_id("R", "a.rs"));
    assert_eq!((objs[0].start_line, objs[0].end_line), (1, 10_000));
}

#[test]
fn end_line_of_a_chunk_ending_after_a_newline_is_the_line_it_closes() {
    // Three 10-byte lines, bound 20: chunks are lines 1-2 and line 3.
    let text = b"aaaaaaaaa\nbbbbbbbbb\nccccccccc\n";
    let objs = checked(text, 20, "a.txt");
    let lines: Vec<_> = objs.iter().map(|o| (o.start_line, o.end_line)).collect();
    assert_eq!(lines, vec![(1, 2), (3, 3)]);
    assert_eq!(cuts(&objs), vec![20]);
}

#[test]
fn crlf_lines_are_cut_after_their_lf_and_counted_once() {
    let text = "let x = 1;\r\n".repeat(50);
    let objs = checked(text.as_bytes(), 64, "a.rs");
    for o in &objs {
        assert!(o.content.ends_with("\r\n"), "{:?}", o.content);
        assert!(o.content.starts_with("let"), "{:?}", o.content);
        assert_eq!(
            o.end_line - o.start_line + 1,
            (o.byte_end - o.byte_start) / 12
        );
    }
    assert_eq!(objs.last().map(|o| o.end_line), Some(50));
}

#[test]
fn no_final_newline_ends_the_last_chunk_at_size_on_the_last_line() {
    let text = format!("{}tail without newline", "line\n".repeat(40));
    let objs = checked(text.as_bytes(), 64, "a.txt");
    let last = objs.last().expect("a chunk");
    assert_eq!(last.byte_end, text.len() as u64);
    assert!(last.content.ends_with("tail without newline"));
    assert_eq!(last.end_line, 41);
}

#[test]
fn multibyte_characters_are_never_split() {
    // No newline at all, so every cut is inside the line; 17 is no multiple
    // of 2, 3 or 4, so the naive cut would land inside a character.
    let text = "é€😀中".repeat(300);
    let objs = checked(text.as_bytes(), 17, "a.txt");
    assert!(objs.len() > 1);
    let joined: String = objs.iter().map(|o| o.content.as_str()).collect();
    assert_eq!(joined, text);
    assert!(objs.iter().all(|o| !o.content.contains('\u{FFFD}')));
}

#[test]
fn a_character_as_wide_as_the_bound_is_its_own_chunk() {
    // The chunker's own floor is 4 bytes, the widest character; the API
    // refuses sizes below ChunkSize::MIN before they get here.
    let text = "😀😀😀";
    let objs = checked(text.as_bytes(), 4, "a.txt");
    let contents: Vec<_> = objs.iter().map(|o| o.content.as_str()).collect();
    assert_eq!(contents, vec!["😀", "😀", "😀"]);
    let objs = checked("a😀b😀".as_bytes(), 4, "a.txt");
    let contents: Vec<_> = objs.iter().map(|o| o.content.as_str()).collect();
    assert_eq!(contents, vec!["a", "😀", "b", "😀"]);
}

#[test]
fn invalid_utf8_may_be_cut_anywhere_and_content_is_lossy() {
    // 0xff never starts a character; "\xe2\x82" is a truncated "€".
    let mut bytes = Vec::new();
    for _ in 0..100 {
        bytes.extend_from_slice(b"\xff\xe2\x82ab\xff");
    }
    let objs = checked(&bytes, 16, "a.bin");
    assert!(objs.iter().all(|o| o.content.contains('\u{FFFD}')));
    assert!(objs.iter().all(|o| o.byte_end - o.byte_start <= 16));
}

#[test]
fn a_1_mib_single_line_is_cut_into_chunks_within_the_bound() {
    let mut text = String::with_capacity(1 << 20);
    let mut k = 0u64;
    while text.len() < (1 << 20) {
        text.push_str(&format!("var v{k}=f({k}); "));
        k += 1;
    }
    text.truncate(1 << 20);
    let objs = checked(text.as_bytes(), 4096, "bundle.min.js");
    assert!(objs.len() >= 256 && objs.len() <= 260, "{}", objs.len());
    // Cut after a space wherever the window's second half has one.
    for o in &objs[..objs.len() - 1] {
        assert!(
            o.content.ends_with(' '),
            "{:?}",
            &o.content[o.content.len() - 10..]
        );
        assert_eq!((o.start_line, o.end_line), (1, 1));
    }
    // Without spaces: full chunks at character boundaries.
    let text = "ab".repeat(1 << 19);
    let objs = checked(text.as_bytes(), 4096, "blob.txt");
    assert_eq!(objs.len(), 256);
    assert!(objs.iter().all(|o| o.byte_end - o.byte_start == 4096));
}

#[test]
fn a_whitespace_only_file_is_chunked_like_any_file() {
    let text = " \t\n".repeat(100);
    let objs = checked(text.as_bytes(), 4096, "a.rs");
    assert_eq!(objs.len(), 1);
    let objs = checked(text.as_bytes(), 64, "a.rs");
    assert!(objs.len() >= 5);
    // Line ends still bound the chunks: every line fits.
    assert!(objs.iter().all(|o| o.content.ends_with('\n')));
}

#[test]
fn a_file_of_blank_lines_is_cut_at_line_ends() {
    let text = "\n".repeat(1000);
    let objs = checked(text.as_bytes(), 100, "a.py");
    assert_eq!(objs.len(), 10);
    assert_eq!(objs[3].start_line, 301);
    assert_eq!(objs[3].end_line, 400);
}

/// `head`, then `unit(k)` for k in 0..n.
fn repeated(head: &str, n: usize, unit: impl Fn(usize) -> String) -> String {
    let mut text = head.to_owned();
    text.extend((0..n).map(unit));
    text
}

#[test]
fn rust_boundaries_land_before_fn_lines_when_possible() {
    let text = repeated("use std::io;\n\n", 40, |k| {
        format!("/// Handler {k}.\nfn handler_{k}(x: u32) -> u32 {{\n    let y = x + {k};\n\n    y * 2\n}}\n\n")
    });
    let objs = checked(text.as_bytes(), 256, "src/lib.rs");
    assert!(objs.len() > 5);
    for line in lines_after_cuts(&text, &objs) {
        // The doc comment stays with its fn: cuts land before it, never
        // between it and the fn, nor at the blank line inside the body.
        assert!(line.starts_with("/// Handler"), "cut before {line:?}");
    }
}

#[test]
fn python_boundaries_land_before_top_level_defs_and_keep_decorators() {
    let text = repeated("import os\n\n", 30, |k| {
        format!("@cached\ndef handler_{k}(x):\n    y = x + {k}\n\n    return y\n\n\n")
    });
    let objs = checked(text.as_bytes(), 200, "pkg/mod.py");
    for line in lines_after_cuts(&text, &objs) {
        assert_eq!(line, "@cached");
    }
}

#[test]
fn methods_are_preferred_to_blank_lines_inside_bodies() {
    let mut text = repeated("impl Foo {\n", 30, |k| {
        format!("    pub fn m{k}(&self) -> u32 {{\n        let a = {k};\n\n        a\n    }}\n\n")
    });
    text.push_str("}\n");
    let objs = checked(text.as_bytes(), 300, "a.rs");
    for line in lines_after_cuts(&text, &objs) {
        assert!(line.starts_with("    pub fn m"), "cut before {line:?}");
    }
}

#[test]
fn trailing_whitespace_joins_the_last_content_chunk() {
    let text = format!("{}{}", "word word\n".repeat(30), "\n".repeat(50));
    let objs = checked(text.as_bytes(), 128, "a.txt");
    assert!(objs.iter().all(|o| !is_blank(o.content.as_bytes())));
}

#[test]
fn a_whitespace_chunk_that_cannot_merge_takes_a_neighbours_line() {
    // Each content line fits, so cuts stay at line ends; the blank run
    // after the full first chunk fits with the last line of it.
    let text = format!(
        "{}{}{}",
        "    0123456789a\n".repeat(8),
        "\n".repeat(100),
        "z".repeat(120)
    );
    let objs = checked(text.as_bytes(), 128, "a.txt");
    for o in &objs {
        assert!(!is_blank(o.content.as_bytes()), "{objs:#?}");
    }
}

#[test]
fn a_whitespace_tail_after_a_long_line_takes_the_end_of_that_line() {
    // The long line may be cut anywhere (it does not fit), so the tail's
    // chunk starts inside it rather than hold only newlines.
    for tail in [17, 60, 120] {
        let text = format!("{}\n{}", "x".repeat(300), "\n".repeat(tail));
        let objs = checked(text.as_bytes(), 128, "a.txt");
        for o in &objs {
            assert!(!is_blank(o.content.as_bytes()), "tail {tail}: {objs:#?}");
        }
    }
}

#[test]
fn a_whitespace_tail_follows_the_last_definition_it_fits_with() {
    // The cut leaves content after it, at the best seam: before `fn b`,
    // not in the blank tail nor before the closing brace.
    let text = format!(
        "fn a() {{\n{}}}\n\nfn b() {{\n    body();\n}}\n{}",
        "    a();\n".repeat(6),
        "\n".repeat(50)
    );
    let objs = checked(text.as_bytes(), 128, "a.rs");
    assert_eq!(
        lines_after_cuts(&text, &objs),
        vec!["fn b() {"],
        "{objs:#?}"
    );
}

#[test]
fn a_whitespace_run_longer_than_the_bound_leaves_whitespace_chunks() {
    // Documented: no chunking without gaps can give such a run content.
    let text = format!("x\n{}y\n", "\n".repeat(1000));
    let objs = checked(text.as_bytes(), 100, "a.txt");
    assert!(objs.iter().any(|o| is_blank(o.content.as_bytes())));
    assert!(!is_blank(objs[0].content.as_bytes()));
    assert!(!is_blank(objs[objs.len() - 1].content.as_bytes()));
}

#[test]
fn the_language_is_picked_by_extension_ignoring_case() {
    let text = "x = 1\n".repeat(10) + "fn a() {}\n" + &"x = 1\n".repeat(10);
    let rust = checked(text.as_bytes(), 70, "A.RS");
    let plain = checked(text.as_bytes(), 70, "a.txt");
    assert_eq!(lines_after_cuts(&text, &rust)[0], "fn a() {}");
    assert_ne!(cuts(&rust), cuts(&plain));
    // Only the file name's extension counts.
    let makefile = checked(text.as_bytes(), 70, "dir.rs/Makefile");
    assert_eq!(cuts(&makefile), cuts(&plain));
}

#[test]
fn floor_char_steps_back_only_out_of_valid_characters() {
    let b = "a€b".as_bytes(); // 'a' e2 82 ac 'b'
    assert_eq!(
        (0..=5).map(|i| floor_char(b, i)).collect::<Vec<_>>(),
        [0, 1, 1, 1, 4, 5]
    );
    // A truncated "€" is one U+FFFD: kept whole too. Stray continuation
    // bytes are one U+FFFD each.
    let b = b"a\xe2\x82b\x82\x82";
    assert_eq!(
        (0..=6).map(|i| floor_char(b, i)).collect::<Vec<_>>(),
        [0, 1, 1, 3, 4, 5, 6]
    );
}

// --- check rejects what breaks the contract --------------------------------

fn sample() -> (Vec<u8>, Vec<ChunkObject>) {
    let bytes = "fn a() {}\n\nfn b() { \"é€😀\" }\n".repeat(20).into_bytes();
    let objs = checked(&bytes, 64, "a.rs");
    assert!(objs.len() > 3);
    (bytes, objs)
}

#[test]
fn check_rejects_each_kind_of_broken_object() {
    let (bytes, objs) = sample();
    let size = ChunkSize(64);
    type Mutation = fn(&mut Vec<ChunkObject>);
    let cases: &[(&str, Mutation)] = &[
        ("no objects", |o| o.clear()),
        ("dropped chunk", |o| {
            o.remove(1);
        }),
        ("surplus chunk", |o| {
            let extra = o[o.len() - 1].clone();
            o.push(extra);
        }),
        ("numbering", |o| o[1].chunk = 2),
        ("count", |o| o[0].chunk_count += 1),
        ("id", |o| o[1].id = chunk_id("R", "a.rs", 7)),
        ("path", |o| o[2].path = "b.rs".into()),
        ("sha", |o| o[1].content_sha256 = "00".into()),
        ("size", |o| o[1].size += 1),
        ("gap", |o| o[1].byte_start += 1),
        ("start not 0", |o| o[0].byte_start = 1),
        ("end not size", |o| {
            let last = o.len() - 1;
            o[last].byte_end -= 1;
        }),
        ("empty chunk", |o| o[1].byte_end = o[1].byte_start),
        ("over the bound", |o| {
            o[0].byte_end = o[1].byte_end;
            o.remove(1);
        }),
        ("content", |o| o[1].content.push('x')),
        ("start line", |o| o[1].start_line += 1),
        ("end line", |o| o[1].end_line -= 1),
    ];
    for (what, mutate) in cases {
        let mut broken = objs.clone();
        mutate(&mut broken);
        for (k, o) in broken.iter_mut().enumerate() {
            // Renumber after removals, so each case breaks one thing.
            if *what == "dropped chunk" || *what == "over the bound" {
                o.chunk = k as u32;
                o.id = chunk_id(&o.repo, &o.path, o.chunk);
            }
        }
        if *what == "dropped chunk" || *what == "over the bound" {
            let n = broken.len() as u32;
            broken.iter_mut().for_each(|o| o.chunk_count = n);
        }
        assert!(
            check(&bytes, size, &broken).is_err(),
            "check accepted: {what}"
        );
    }
    check(&bytes, size, &objs).expect("the unbroken objects pass");
}

#[test]
fn check_rejects_a_cut_inside_a_character_but_not_inside_invalid_bytes() {
    let bytes = "ab😀cd".as_bytes().to_vec(); // the emoji is bytes 2..6
    let two = |cut: u64| -> Vec<ChunkObject> {
        let sha = crate::util::hex(&Sha256::digest(&bytes));
        [(0, cut), (cut, 8)]
            .iter()
            .enumerate()
            .map(|(k, &(a, b))| ChunkObject {
                id: chunk_id("R", "a", k as u32),
                repo: "R".into(),
                path: "a".into(),
                chunk: k as u32,
                chunk_count: 2,
                byte_start: a,
                byte_end: b,
                start_line: 1,
                end_line: 1,
                content: String::from_utf8_lossy(&bytes[a as usize..b as usize]).into_owned(),
                content_sha256: sha.clone(),
                size: 8,
            })
            .collect()
    };
    assert_eq!(check(&bytes, ChunkSize(16), &two(2)), Ok(()));
    assert_eq!(
        check(&bytes, ChunkSize(16), &two(3)),
        Err(Violation::CutsCharacter { chunk: 0, at: 3 })
    );
    let mut bad = bytes.clone();
    bad[2] = 0xff; // the emoji's lead byte gone: its other bytes are invalid
    let sha = crate::util::hex(&Sha256::digest(&bad));
    let mut objs = two(3);
    for o in &mut objs {
        o.content =
            String::from_utf8_lossy(&bad[o.byte_start as usize..o.byte_end as usize]).into_owned();
        o.content_sha256 = sha.clone();
    }
    assert_eq!(check(&bad, ChunkSize(16), &objs), Ok(()));
}

#[test]
fn check_accepts_overlapping_chunks_the_spec_allows() {
    let bytes = b"0123456789\nabcdefghij\n".to_vec();
    let mut objs = objects("R", "a.txt", &bytes, ChunkSize(16));
    assert_eq!(objs.len(), 2);
    objs[1].byte_start = 5;
    objs[1].content = String::from_utf8_lossy(&bytes[5..]).into_owned();
    objs[1].start_line = 1;
    assert_eq!(check(&bytes, ChunkSize(17), &objs), Ok(()));
}

// --- invariants on arbitrary bytes -----------------------------------------

/// The pieces [`piece`] and [`short_piece`] share, weighted as in both:
/// 17 in all, so that nested at weight 17 each keeps its own weight.
fn common_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z_]{1,10}".prop_map(String::into_bytes),
        3 => Just(b"\n".to_vec()),
        2 => Just(b" ".to_vec()),
        1 => Just(b"    ".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n\n".to_vec()),
        1 => Just(b"fn f() {\n".to_vec()),
        1 => Just(b"}\n".to_vec()),
        1 => Just(b"def g():\n".to_vec()),
        1 => Just("😀".as_bytes().to_vec()),
        1 => Just(vec![0xe2, 0x82]),
    ]
}

/// Pieces of text files, their edge cases over-represented.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        17 => common_piece(),
        1 => Just(b"\t".to_vec()),
        1 => Just(b"/// doc\n".to_vec()),
        1 => Just(b"#[test]\n".to_vec()),
        1 => Just("é".as_bytes().to_vec()),
        1 => Just("€".as_bytes().to_vec()),
        1 => Just(vec![0xff]),
        1 => Just(vec![0xf0, 0x9f, 0x98]),
        1 => Just(vec![0x80]),
        1 => (1usize..300).prop_map(|n| vec![b' '; n]),
        1 => (1usize..300).prop_map(|n| vec![b'\n'; n]),
        1 => (50usize..700).prop_map(|n| vec![b'x'; n]),
    ]
}

/// The pieces without the long runs and lines.
fn short_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        17 => common_piece(),
        1 => Just(b"    /// doc\n".to_vec()),
    ]
}

/// Files whose lines and whitespace runs are mostly short.
fn short_file() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(short_piece(), 0..300).prop_map(|p| p.concat())
}

fn file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(piece(), 0..200).prop_map(|p| p.concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..2000),
    ]
}

fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("src/a.rs"),
        Just("a.py"),
        Just("a.go"),
        Just("a.ts"),
        Just("a.c"),
        Just("README.md"),
        Just("Makefile"),
    ]
}

/// Every line (with its `\n`) is at most `bound` bytes.
fn every_line_fits(bytes: &[u8], bound: usize) -> bool {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .all(|l| l.len() <= bound)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_file_gives_objects_that_pass_every_invariant(
        bytes in file(), bound in prop_oneof![Just(0usize), 16usize..400, Just(4096)], path in path()
    ) {
        let size = ChunkSize::new(bound).expect("valid size");
        let objs = objects("Repo", path, &bytes, size);
        prop_assert_eq!(check(&bytes, size, &objs), Ok(()));
        // Ours never overlap, so the contents concatenate to the whole file.
        let joined: String = objs.iter().map(|o| o.content.as_str()).collect();
        prop_assert_eq!(joined, String::from_utf8_lossy(&bytes));
        let spans = chunk_spans(&bytes, size, path);
        prop_assert_eq!(spans.len(), objs.len());
        for (s, o) in spans.iter().zip(&objs) {
            prop_assert_eq!(
                (s.byte_start, s.byte_end, s.start_line, s.end_line),
                (o.byte_start, o.byte_end, o.start_line, o.end_line)
            );
        }
    }

    #[test]
    fn bounds_down_to_one_character_never_cut_one(bytes in file(), bound in 4usize..16) {
        let objs = objects_at(&bytes, bound, "a.rs");
        prop_assert_eq!(check(&bytes, ChunkSize(bound), &objs), Ok(()));
    }

    #[test]
    fn the_same_bytes_and_size_give_the_same_chunks(bytes in file(), bound in 16usize..400, path in path()) {
        let size = ChunkSize(bound);
        prop_assert_eq!(objects("R", path, &bytes, size), objects("R", path, &bytes.clone(), size));
    }

    #[test]
    fn every_boundary_is_a_line_end_when_every_line_fits(
        bytes in prop_oneof![file(), short_file()], bound in 64usize..400, path in path()
    ) {
        prop_assume!(every_line_fits(&bytes, bound));
        for o in objects("R", path, &bytes, ChunkSize(bound)).iter().skip(1) {
            prop_assert_eq!(bytes[o.byte_start as usize - 1], b'\n', "cut at {}", o.byte_start);
        }
    }

    #[test]
    fn no_whitespace_only_chunk_where_lines_and_blank_runs_are_short(
        bytes in short_file(), bound in 128usize..400, path in path()
    ) {
        // Lines and runs of whitespace of at most a quarter of the bound.
        let quarter = bound / 4;
        prop_assume!(!is_blank(&bytes) && every_line_fits(&bytes, quarter));
        prop_assume!(bytes
            .split(|&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
            .all(|run| run.len() <= quarter));
        for o in objects("R", path, &bytes, ChunkSize(bound)) {
            prop_assert!(!is_blank(o.content.as_bytes()), "chunk {} {:?}", o.chunk, o.content);
        }
    }

    #[test]
    fn a_long_line_is_cut_only_where_the_bound_forces_it(
        head in "[a-z ]{0,15}\n", long in 100usize..2000, bound in 16usize..100
    ) {
        // One short line, then a line longer than the bound, then a short one.
        let bytes = format!("{head}{}\nend\n", "y".repeat(long)).into_bytes();
        let objs = objects("R", "a.txt", &bytes, ChunkSize(bound));
        prop_assert_eq!(check(&bytes, ChunkSize(bound), &objs), Ok(()));
        let long_start = head.len() as u64;
        let long_end = long_start + long as u64 + 1;
        for o in objs.iter().skip(1) {
            let c = o.byte_start;
            let at_line_end = bytes[c as usize - 1] == b'\n';
            prop_assert!(at_line_end || (c > long_start && c < long_end), "cut at {c}");
        }
    }
}
