//! Hostile manifests and hostile trees, through the real binary. Every bad
//! line is a failed item naming its line and byte offset (and the run goes
//! on); every hostile file is a documented skip (docs/SECURITY.md); and no
//! file outside `--root` is ever opened — proved with inotify watching a
//! directory of secrets the manifest and the tree point at.

mod support;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use support::open_watch::OpenWatch;
use support::*;

/// What a manifest line must come to.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// A failed item with this text in its reason.
    Failed(&'static str),
    /// Not indexed, counted as skipped (hostile file kinds).
    Skipped,
    /// Indexed (`repo/path`).
    Indexed(&'static str),
    /// Not indexed; the disk disagreed with the op (reconciled).
    Absent,
}

struct Line {
    kind: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

fn line(kind: &'static str, bytes: impl Into<Vec<u8>>, want: Want) -> Line {
    Line {
        kind,
        bytes: bytes.into(),
        want,
    }
}

/// [`line`] of `{"op":"add","repo":"R","path":PATH}`.
fn add_r(kind: &'static str, path: &str, want: Want) -> Line {
    line(
        kind,
        format!(r#"{{"op":"add","repo":"R","path":"{path}"}}"#),
        want,
    )
}

fn tree() -> Sandbox {
    let t = sandbox();
    let (root, outside) = (&t.root, &t.outside);
    let repo = root.join("R");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(outside.join("secret"), "TOP-SECRET\n").unwrap();
    std::fs::write(repo.join("src/ok.rs"), "fn ok() {}\n").unwrap();
    std::fs::write(repo.join("src/crlf.rs"), "fn crlf() {}\n").unwrap();
    std::fs::write(repo.join("src/last.rs"), "fn last() {}\n").unwrap();
    std::fs::write(repo.join("src/big_line.rs"), "fn big() {}\n").unwrap();
    // Hostile tree entries.
    symlink(outside.join("secret"), repo.join("leak")).unwrap();
    symlink("/etc/passwd", repo.join("passwd")).unwrap();
    symlink(outside, repo.join("outdir")).unwrap();
    symlink(outside, root.join("EvilRepo")).unwrap();
    symlink("loop_a", repo.join("loop_b")).unwrap();
    symlink("loop_b", repo.join("loop_a")).unwrap();
    let fifo = CString::new(repo.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // A character device (as /dev/null) when we may make one; else a
    // symlink to the real one (outside the root either way).
    let dev = CString::new(repo.join("device").as_os_str().as_bytes()).unwrap();
    let made = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if made != 0 {
        symlink("/dev/null", repo.join("device")).unwrap();
    }
    std::fs::create_dir_all(repo.join("now_a_dir")).unwrap();
    std::fs::write(repo.join("bin.dat"), b"\x00\x01binary").unwrap();
    std::fs::write(repo.join("huge.txt"), vec![b'x'; 4096]).unwrap();
    t
}

fn hostile_lines(t: &Sandbox) -> Vec<Line> {
    let out = t.outside.display().to_string();
    let mut nested = "[".repeat(200_000);
    nested.push_str(&"]".repeat(200_000));
    let mut big = br#"{"op":"add","repo":"R","path":"src/big_line.rs","pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'p', 16 << 20));
    big.extend_from_slice(br#""}"#);
    let mut lines = vec![
        add_r("ordinary add", "src/ok.rs", Want::Indexed("R/src/ok.rs")),
        line(
            "truncated JSON",
            r#"{"op":"add","repo":"R","pa"#,
            Want::Failed("invalid JSON"),
        ),
        line("16 MiB line", big, Want::Indexed("R/src/big_line.rs")),
        line(
            "NUL byte in a string",
            b"{\"op\":\"add\",\"repo\":\"R\",\"path\":\"src/a\x00b\"}".to_vec(),
            Want::Failed(""),
        ),
        add_r("NUL escape in a path", r"src/a\u0000b", Want::Failed("NUL")),
        line(
            "invalid UTF-8",
            b"{\"op\":\"add\",\"repo\":\"R\",\"path\":\"src/\xff\xfe.rs\"}".to_vec(),
            Want::Failed(""),
        ),
        line("deeply nested JSON", nested, Want::Failed("")),
        line(
            "wrong type",
            r#"{"op":"add","repo":"R","path":42}"#,
            Want::Failed("must be"),
        ),
        line(
            "not an object",
            r#"["op","add"]"#,
            Want::Failed("not a JSON object"),
        ),
        line(
            "unknown op",
            r#"{"op":"chmod","repo":"R","path":"src/ok.rs"}"#,
            Want::Failed("unknown op"),
        ),
        line(
            "missing op",
            r#"{"repo":"R","path":"src/ok.rs"}"#,
            Want::Failed("missing field `op`"),
        ),
        add_r("empty path", "", Want::Failed("empty")),
        add_r(
            "dot-dot traversal",
            "../../outside/secret",
            Want::Failed("escapes"),
        ),
        line(
            "dot-dot traversal without repo",
            r#"{"op":"add","path":"R/../../outside/secret"}"#,
            Want::Failed("escapes"),
        ),
        line(
            "absolute path outside every root",
            format!(r#"{{"op":"add","path":"{out}/secret"}}"#),
            Want::Failed("outside every --root"),
        ),
        line(
            "absolute /etc/passwd",
            r#"{"op":"update","path":"/etc/passwd"}"#,
            Want::Failed("outside every --root"),
        ),
        line(
            "absolute path escaping by ..",
            format!(
                r#"{{"op":"add","path":"{}/R/../../outside/secret"}}"#,
                t.root.display()
            ),
            Want::Failed("outside every --root"),
        ),
        line(
            "hostile repo name",
            r#"{"op":"add","repo":"..","path":"outside/secret"}"#,
            Want::Failed("invalid repo"),
        ),
        line(
            "rename from outside",
            format!(r#"{{"op":"rename","repo":"R","from":"{out}/secret","path":"src/ok.rs"}}"#),
            Want::Failed(""),
        ),
        line(
            "bad base64",
            r#"{"op":"add","repo":"R","path":"src/x.rs","content_base64":"!!!"}"#,
            Want::Failed("base64"),
        ),
    ];
    // Hostile file kinds (op, repo, path): each is skipped.
    let skipped = [
        ("symlink to a secret outside", "add", "R", "leak"),
        ("symlink to a system file", "add", "R", "passwd"),
        ("path through a symlinked dir", "add", "R", "outdir/secret"),
        (
            "symlinked repo leaving the root",
            "add",
            "EvilRepo",
            "secret",
        ),
        ("symlink loop", "add", "R", "loop_a"),
        ("FIFO", "add", "R", "fifo"),
        ("device", "add", "R", "device"),
        ("file replaced by a directory", "update", "R", "now_a_dir"),
        ("binary file", "add", "R", "bin.dat"),
        ("file over --max-file-size", "add", "R", "huge.txt"),
    ];
    lines.extend(skipped.map(|(kind, op, repo, path)| {
        let json = format!(r#"{{"op":"{op}","repo":"{repo}","path":"{path}"}}"#);
        line(kind, json, Want::Skipped)
    }));
    lines.extend([
        add_r(
            "file deleted before the sync",
            "src/deleted.rs",
            Want::Absent,
        ),
        line(
            "CRLF line",
            "{\"op\":\"add\",\"repo\":\"R\",\"path\":\"src/crlf.rs\"}\r",
            Want::Indexed("R/src/crlf.rs"),
        ),
        line("blank and whitespace line", "  \t ", Want::Absent),
        add_r(
            "no final newline",
            "src/last.rs",
            Want::Indexed("R/src/last.rs"),
        ),
    ]);
    lines
}

fn counts(stderr: &str) -> BTreeMap<String, u64> {
    // [SUMMARY] status: N lines, A indexed, B removed, C reconciled, D skipped, E failed
    let s = stderr
        .lines()
        .find(|l| l.starts_with("[SUMMARY]"))
        .expect("a summary line");
    let body = s.split_once(": ").unwrap().1;
    body.split(", ")
        .map(|part| {
            let (n, what) = part.split_once(' ').unwrap();
            (what.to_owned(), n.parse().unwrap())
        })
        .collect()
}

#[test]
fn hostile_lines_fail_with_line_and_offset_hostile_files_are_skipped_and_nothing_outside_the_root_is_opened(
) {
    let t = tree();
    let lines = hostile_lines(&t);
    assert!(lines.len() >= 30);
    let mut manifest = Vec::new();
    let mut at = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        at.push(manifest.len() as u64);
        manifest.extend_from_slice(&l.bytes);
        if i + 1 < lines.len() {
            manifest.push(b'\n');
        }
    }
    let m = t.dir.join("hostile.jsonl");
    std::fs::write(&m, &manifest).unwrap();

    let watch = OpenWatch::new(&[&t.outside]);
    let started = Instant::now();
    let out = sync(
        &m,
        &t.root,
        &t.state,
        &["--max-file-size", "1024", "--batch-size", "7"],
    );
    let took = started.elapsed();
    let opened = watch.events();
    let err = text(&out.stderr);
    assert!(
        opened.is_empty(),
        "files outside the root were opened: {opened:?}\n{err}"
    );
    assert!(
        took < Duration::from_secs(60),
        "took {took:?} (a FIFO blocked?)"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked at"), "{err}");

    let mut want_failed = 0;
    let mut want_skipped = 0;
    let mut want_index = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        let n = i + 1;
        let tag = format!("[FAILED] line {n} (byte {})", at[i]);
        let reported = err.lines().find(|x| x.starts_with(&tag));
        match &l.want {
            Want::Failed(reason) => {
                want_failed += 1;
                let r = reported.unwrap_or_else(|| panic!("{}: no `{tag}` in\n{err}", l.kind));
                assert!(r.contains(reason), "{}: {r}", l.kind);
                assert!(
                    r.len() < 600,
                    "{}: the message is not one short line: {} bytes",
                    l.kind,
                    r.len()
                );
            }
            other => {
                assert!(
                    reported.is_none(),
                    "{}: unexpectedly failed: {reported:?}",
                    l.kind
                );
                match other {
                    Want::Skipped => want_skipped += 1,
                    Want::Indexed(rp) => {
                        let (repo, path) = rp.split_once('/').unwrap();
                        want_index
                            .insert(elysiactl::target::object_id(repo, path).to_string(), *rp);
                    }
                    _ => {}
                }
            }
        }
    }
    let c = counts(&err);
    assert_eq!(c["failed"], want_failed, "{err}");
    assert_eq!(c["skipped"], want_skipped, "{err}");
    let got = export(&t.state);
    let got: BTreeMap<String, &str> = got
        .iter()
        .map(|(k, (rp, _))| (k.clone(), rp.as_str()))
        .collect();
    assert_eq!(got, want_index);
    let all = serde_json::to_string(&export(&t.state)).unwrap();
    assert!(!all.contains("TOP-SECRET"));

    // The failures are in the state, by line and offset, for the next run.
    let status = status(&t.state).to_string();
    assert!(
        status.contains(&format!("{}", at[1])),
        "status lacks the failed offsets: {status}"
    );

    // A rerun retries only the failed lines, and fails them the same way.
    let watch = OpenWatch::new(&[&t.outside]);
    let again = sync(&m, &t.root, &t.state, &["--max-file-size", "1024"]);
    assert!(watch.events().is_empty());
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(counts(&text(&again.stderr))["failed"], want_failed);

    // The watch does see opens (so the checks above can fail).
    let watch = OpenWatch::new(&[&t.outside]);
    let _ = std::fs::read(t.outside.join("secret")).unwrap();
    assert_eq!(
        watch.events(),
        vec!["secret".to_owned(), "secret".to_owned()]
    );
}

#[test]
fn unreadable_file_is_a_failed_item_and_is_retried_by_the_next_run() {
    // SAFETY: getuid has no preconditions.
    let root_user = unsafe { libc::getuid() } == 0;
    let t = tree();
    let secret = t.root.join("R/src/private.rs");
    std::fs::write(&secret, "fn private() {}\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let m = t.dir.join("m.jsonl");
    let first = "{\"op\":\"add\",\"repo\":\"R\",\"path\":\"src/ok.rs\"}\n";
    std::fs::write(
        &m,
        format!("{first}{{\"op\":\"add\",\"repo\":\"R\",\"path\":\"src/private.rs\"}}\n"),
    )
    .unwrap();
    let mut c = sync_cmd(&m, &t.root, &t.state, &[]);
    if root_user {
        // Root reads anything: run as nobody, in a tree nobody may traverse.
        use std::os::unix::process::CommandExt;
        for p in [
            t.dir.as_path(),
            t.root.as_path(),
            &t.root.join("R"),
            &t.root.join("R/src"),
        ] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
        }
        std::fs::set_permissions(&m, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        c.uid(65534).gid(65534);
    }
    let out = c.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let tag = format!("[FAILED] line 2 (byte {}) R/src/private.rs", first.len());
    assert!(err.contains(&tag), "{err}");
    assert!(err.to_lowercase().contains("permission denied"), "{err}");

    // Readable again: the next run retries just that line and indexes it.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut c = sync_cmd(&m, &t.root, &t.state, &[]);
    if root_user {
        use std::os::unix::process::CommandExt;
        c.uid(65534).gid(65534);
    }
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let want = expected(
        &t.root,
        &[
            ("R".into(), "src/ok.rs".into()),
            ("R".into(), "src/private.rs".into()),
        ],
        1 << 20,
    );
    assert_eq!(export(&t.state), want);
}

#[test]
fn file_growing_while_read_is_indexed_as_an_exact_prefix() {
    use sha2::{Digest, Sha256};
    let t = tree();
    let growing = t.root.join("R/src/growing.log");
    std::fs::write(&growing, "start\n").unwrap();
    let n = 25;
    let mut manifest = String::new();
    for _ in 0..n {
        manifest.push_str("{\"op\":\"update\",\"repo\":\"R\",\"path\":\"src/growing.log\"}\n");
    }
    let m = t.dir.join("m.jsonl");
    std::fs::write(&m, manifest).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = growing.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 20_000 {
                // One write(2) per line, so a reader sees whole lines.
                let line = format!("line {i:08} of a log that keeps growing\n");
                f.write_all(line.as_bytes()).unwrap();
                i += 1;
                if i.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let out = sync(&m, &t.root, &t.state, &["--batch-size", "1", "--quiet"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let final_bytes = std::fs::read(&growing).unwrap();
    let got = export(&t.state);
    let id = elysiactl::target::object_id("R", "src/growing.log").to_string();
    let Some((_, sha)) = got.get(&id) else {
        // Grown past --max-file-size (1 MiB) when last read: a documented skip.
        assert!(final_bytes.len() > 1 << 20);
        return;
    };
    assert_ne!(
        sha,
        &sha256_hex(b"start\n"),
        "the file never grew during the run"
    );
    let mut h = Sha256::new();
    let mut prefixes = std::collections::HashSet::new();
    for chunk in final_bytes.split_inclusive(|&b| b == b'\n') {
        h.update(chunk);
        let hex: String = h
            .clone()
            .finalize()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        prefixes.insert(hex);
    }
    assert!(
        prefixes.contains(sha),
        "indexed content is not a prefix of the file as it grew"
    );
}
