//! Unit tests of locating and judging a manifest line's file: the spec's
//! path rules, several roots, what the disk decides, and symlinks refused
//! beneath the root.

use super::*;

fn roots(dir: &Path) -> Roots {
    Roots::new(&[dir.to_owned()], DEFAULT_MAX_FILE_SIZE).unwrap()
}

#[test]
fn paths_resolve_per_the_spec_rules() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("ServiceA/src")).unwrap();
    let r = roots(t.path());
    let root = t.path().canonicalize().unwrap();
    let abs = format!("{}/ServiceA/src/main.py", root.display());
    let want = Location {
        root: 0,
        repo: "ServiceA".into(),
        path: "src/main.py".into(),
    };
    assert_eq!(r.resolve(Some("ServiceA"), &abs), Ok(want.clone()));
    assert_eq!(r.resolve(None, &abs), Ok(want.clone()));
    assert_eq!(r.resolve(Some("ServiceA"), "src/main.py"), Ok(want.clone()));
    assert_eq!(
        r.resolve(Some("ServiceA"), "./src/x/../main.py"),
        Ok(want.clone())
    );
    assert_eq!(r.resolve(None, "ServiceA/src/main.py"), Ok(want));
    assert!(matches!(
        r.resolve(Some("ServiceB"), &abs),
        Err(PathError::NotUnderRepo { .. })
    ));
    assert!(matches!(
        r.resolve(None, "/etc/passwd"),
        Err(PathError::OutsideRoots(_))
    ));
    assert!(matches!(
        r.resolve(Some("A"), "../B/x"),
        Err(PathError::EscapesRepo(_))
    ));
    assert!(matches!(
        r.resolve(None, "../x"),
        Err(PathError::EscapesRoot(_))
    ));
    assert!(matches!(
        r.resolve(None, "ServiceA"),
        Err(PathError::NoFile(_))
    ));
    assert!(matches!(
        r.resolve(Some(".."), "x"),
        Err(PathError::BadRepo(_))
    ));
    let escape = format!("{}/../etc/passwd", root.display());
    assert!(r.resolve(None, &escape).is_err());
}

#[test]
fn with_several_roots_a_relative_path_belongs_to_the_first_root_with_its_repo() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(a.path().join("One")).unwrap();
    std::fs::create_dir_all(b.path().join("Two")).unwrap();
    std::fs::create_dir_all(b.path().join("One")).unwrap();
    std::fs::write(b.path().join("Two/x.txt"), "two\n").unwrap();
    let r = Roots::new(&[a.path().to_owned(), b.path().to_owned()], 100).unwrap();
    assert_eq!(r.resolve(Some("One"), "x").unwrap().root, 0);
    assert_eq!(r.resolve(Some("Two"), "x.txt").unwrap().root, 1);
    assert_eq!(r.resolve(None, "Two/x.txt").unwrap().root, 1);
    // No root has the repo: the first root (the file is simply absent).
    assert_eq!(r.resolve(Some("Three"), "y").unwrap().root, 0);
    let abs = format!("{}/Two/x.txt", b.path().canonicalize().unwrap().display());
    let loc = r.resolve(None, &abs).unwrap();
    assert_eq!(
        (loc.root, loc.repo.as_str(), loc.path.as_str()),
        (1, "Two", "x.txt")
    );
    match r.read(&loc).unwrap() {
        FileState::Eligible(d) => assert_eq!(d.chunks[0].content, "two\n"),
        other => panic!("{other:?}"),
    }
    // A symlink from one root into another leaves its root: not indexed.
    std::os::unix::fs::symlink(b.path().join("Two/x.txt"), a.path().join("One/link")).unwrap();
    let l = r.resolve(Some("One"), "link").unwrap();
    assert_eq!(r.read(&l).unwrap(), FileState::Absent(Absent::OutsideRoot));
}

#[test]
fn disk_decides_eligibility() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("R");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("ok.txt"), "hello\n").unwrap();
    std::fs::write(repo.join("bin"), b"a\0b").unwrap();
    std::fs::write(repo.join("big"), vec![b'x'; 2000]).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), repo.join("leak")).unwrap();
    std::os::unix::fs::symlink("ok.txt", repo.join("inside")).unwrap();
    std::os::unix::fs::symlink("loop", repo.join("loop")).unwrap();
    std::fs::create_dir(repo.join("dir")).unwrap();
    let r = Roots::new(&[t.path().to_owned()], 1000).unwrap();
    let at = |p: &str| r.read(&r.resolve(Some("R"), p).unwrap()).unwrap();
    match at("ok.txt") {
        FileState::Eligible(d) => {
            assert_eq!(d.chunks[0].content, "hello\n");
            assert_eq!(d.path, "ok.txt");
            assert_eq!(
                d.content_sha256,
                "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
            );
        }
        other => panic!("{other:?}"),
    }
    match at("inside") {
        FileState::Eligible(d) => {
            assert_eq!(
                (d.path.as_str(), d.chunks[0].content.as_str()),
                ("inside", "hello\n")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(at("bin"), FileState::Absent(Absent::Binary));
    assert_eq!(at("big"), FileState::Absent(Absent::TooLarge));
    assert_eq!(at("leak"), FileState::Absent(Absent::OutsideRoot));
    assert_eq!(at("loop"), FileState::Absent(Absent::NotRegular));
    assert_eq!(at("dir"), FileState::Absent(Absent::NotRegular));
    assert_eq!(at("gone"), FileState::Absent(Absent::Missing));
    assert_eq!(at("ok.txt/sub"), FileState::Absent(Absent::Missing));
}

/// Symlinks the kernel's RESOLVE_BENEATH refuses but SPEC allows (their
/// target stays inside the root) still count, by the long road.
#[test]
fn symlinks_refused_beneath_the_root_are_judged_the_long_way() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap().join("root");
    std::fs::write(t.path().join("outside.txt"), "secret\n").unwrap();
    let repo = root.join("R");
    std::fs::create_dir_all(repo.join("d")).unwrap();
    std::fs::write(repo.join("ok.txt"), "hello\n").unwrap();
    std::os::unix::fs::symlink(repo.join("ok.txt"), repo.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../R/ok.txt", repo.join("d/updown")).unwrap();
    std::os::unix::fs::symlink("../../../outside.txt", repo.join("d/out")).unwrap();
    std::os::unix::fs::symlink(&root, repo.join("d/rootdir")).unwrap();
    let r = Roots::new(std::slice::from_ref(&root), 1000).unwrap();
    #[cfg(target_os = "linux")]
    assert!(r.roots[0].dir.is_some(), "openat2 available on this kernel");
    let at = |p: &str| r.read(&r.resolve(Some("R"), p).unwrap()).unwrap();
    assert!(matches!(at("abs"), FileState::Eligible(_)));
    assert!(matches!(at("d/updown"), FileState::Eligible(_)));
    assert!(matches!(at("d/rootdir/R/ok.txt"), FileState::Eligible(_)));
    assert_eq!(at("d/out"), FileState::Absent(Absent::OutsideRoot));
    assert_eq!(at("d"), FileState::Absent(Absent::NotRegular));
}

/// The byte resolver and the `std::path` rules it replaced give the same
/// answer (the same location or the same error) for hostile paths: `..`
/// above and back into a root, `//`, `.`, a root's name as a string prefix,
/// a root given through a symlink or with a `..` left in it, nested roots,
/// `/` as a root, absolute and relative, with and without a repo.
#[test]
fn byte_resolver_agrees_with_the_std_path_rules_on_hostile_paths() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let t = tempfile::tempdir().unwrap();
    let base = t.path().canonicalize().unwrap();
    for d in ["real/R/src", "real/S", "real/nested/R", "real/nested/T"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(base.join("real"), base.join("alias")).unwrap();
    let b = base.display().to_string();
    let sets: Vec<Vec<PathBuf>> = vec![
        vec![base.join("alias")],
        vec![base.join("real")],
        vec![base.join("alias"), base.join("real/nested")],
        vec![base.join("real/nested"), base.join("real")],
        vec![PathBuf::from("/")],
        vec![PathBuf::from(format!("/..{b}/alias"))],
        vec![base.join("real/./nested/../nested")],
    ];
    let all: Vec<Roots> = sets
        .iter()
        .map(|s| Roots::new(s, DEFAULT_MAX_FILE_SIZE).unwrap())
        .collect();
    let prefixes: Vec<String> = [
        "",
        "/",
        "//",
        "/..",
        "/etc",
        &b,
        &format!("{b}/real"),
        &format!("{b}/alias"),
        &format!("{b}/realx"),
        &format!("{b}/real/nested"),
        &format!("{b}/real/../real"),
        &format!("{b}/alias/.."),
        &format!("//{b}//real/."),
        &format!("/..{b}/alias"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let parts = prop::sample::select(vec![
        "", ".", "..", "...", ".a", "R", "S", "T", "src", "nested", "real", "alias", "x.py", "a b",
        "é", "R -> S", "\0", "\\",
    ]);
    let seps = prop::sample::select(vec!["/", "//", "/./"]);
    let repos = prop::sample::select(vec![
        None,
        Some("R"),
        Some("S"),
        Some("T"),
        Some("nested"),
        Some("real"),
        Some(".."),
        Some("."),
        Some(""),
        Some("a/b"),
    ]);
    let strategy = (
        0..all.len(),
        0..prefixes.len(),
        prop::collection::vec((seps, parts), 0..7),
        any::<bool>(),
        repos,
    );
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(set, prefix, tail, trailing, repo)| {
            let mut path = prefixes[prefix].clone();
            for (i, (sep, part)) in tail.iter().enumerate() {
                if i > 0 || !path.is_empty() {
                    path.push_str(sep);
                }
                path.push_str(part);
            }
            if trailing {
                path.push('/');
            }
            let r = &all[set];
            prop_assert_eq!(
                r.resolve(repo, &path),
                std_rules::resolve(r, repo, &path),
                "roots {:?}, repo {:?}, path {:?}",
                sets[set],
                repo,
                path
            );
            Ok(())
        })
        .unwrap();
}
