//! The files elysiactl publishes next to other people's files — the
//! manifest of `changes --output`, the `--metrics-file` textfile — go
//! through exclusive temporary files: a symlink planted at a temporary name
//! (the old predictable `.NAME.tmp.<pid>` / `.NAME.<pid>.tmp`, or any name of
//! the pattern) is never written through, the published modes are the
//! documented ones, and the leftovers of killed runs are cleaned
//! (docs/SECURITY.md, *Secrets and temporary files*).

mod support;

#[path = "changes_support/mod.rs"]
mod csupport;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use csupport::gitrepo::Repo;
use elysiactl::cli::args::ChangesArgs;
use support::*;

const VICTIM: &str = "precious, not yours to write\n";

fn victim(dir: &Path) -> PathBuf {
    let v = dir.join("victim");
    std::fs::write(&v, VICTIM).unwrap();
    v
}

/// A temp dir with one repo, `A`, under `root`.
fn with_repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = Repo::init(&root, "A");
    r.write("a.txt", "a\n");
    r.commit("a");
    (dir, root)
}

/// [`with_repo`], an empty `shared` folder to publish into, and the victim.
struct Shared {
    dir: tempfile::TempDir,
    root: PathBuf,
    shared: PathBuf,
    v: PathBuf,
}

fn shared() -> Shared {
    let (dir, root) = with_repo();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let v = victim(dir.path());
    Shared {
        dir,
        root,
        shared,
        v,
    }
}

/// The binary's `changes --output shared/changes.jsonl`, then `index sync`
/// of that manifest with `--metrics-file shared/elysiactl.prom`; each must
/// exit 0. Returns the manifest's and the textfile's paths.
fn changes_then_sync(t: &Shared) -> (PathBuf, PathBuf) {
    let out = t.shared.join("changes.jsonl");
    let state = t.dir.path().join("state");
    let (root, prom) = (arg(&t.root), t.shared.join("elysiactl.prom"));
    let changes = ["changes", "--root", root, "--output", arg(&out)];
    expect_code(&run_state(&changes, &state), 0);
    let metrics = ["--metrics-file", arg(&prom)];
    expect_code(&sync(&out, &t.root, &state, &metrics), 0);
    (out, prom)
}

fn changes_args(root: &Path, output: &Path) -> ChangesArgs {
    ChangesArgs {
        roots: vec![root.to_path_buf()],
        output: output.to_path_buf(),
        state_dir: None,
        pull: false,
        jobs: 1,
        keep_missing: false,
        log_format: elysiactl::cli::args::LogFormatArg::Text,
    }
}

fn symlink(to: &Path, at: &Path) {
    std::os::unix::fs::symlink(to, at).unwrap();
}

#[test]
fn a_symlink_planted_at_the_old_temp_names_is_never_written_through() {
    let Shared {
        root, shared, v, ..
    } = &shared();
    let pid = std::process::id();

    // `changes --output` in this process: its old temp name was
    // `.NAME.tmp.<pid>`.
    let out = shared.join("changes.jsonl");
    symlink(v, &shared.join(format!(".changes.jsonl.tmp.{pid}")));
    symlink(v, &shared.join(format!(".changes.jsonl.{pid}.tmp")));
    let report = changes_args(root, &out)
        .execute(BTreeMap::new(), &mut Vec::new())
        .expect("changes runs");
    assert_eq!(report.repos_scanned, 1);
    assert_eq!(std::fs::read_to_string(v).unwrap(), VICTIM);
    let manifest = std::fs::read_to_string(&out).unwrap();
    assert!(manifest.contains("\"a.txt\""), "{manifest}");
    assert!(!out.symlink_metadata().unwrap().is_symlink());

    // The metrics textfile: its old temp name was `.NAME.<pid>.tmp`.
    let prom = shared.join("elysiactl.prom");
    symlink(v, &shared.join(format!(".elysiactl.prom.{pid}.tmp")));
    symlink(v, &shared.join(format!(".elysiactl.prom.tmp.{pid}")));
    let m = elysiactl::sync::metrics::RunMetrics::default();
    elysiactl::sync::metrics::write(&prom, &m).unwrap();
    assert_eq!(std::fs::read_to_string(v).unwrap(), VICTIM);
    assert_eq!(
        std::fs::read_to_string(&prom).unwrap(),
        elysiactl::sync::metrics::render(&m)
    );
    // Nothing of ours is left beside the planted links.
    let left: Vec<String> = std::fs::read_dir(shared)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains(&pid.to_string()))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

/// The real binary with every pid's old temp names planted (possible where
/// `pid_max` is small, as on most machines): whatever pid the child gets,
/// its predictable name is a symlink to the victim.
#[test]
fn the_binary_never_writes_through_a_symlink_at_any_pids_old_temp_name() {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX);
    if pid_max > 65_536 {
        eprintln!("pid_max {pid_max}: too many names to plant; the in-process test covers this");
        return;
    }
    let t = shared();
    for pid in 1..=pid_max {
        symlink(&t.v, &t.shared.join(format!(".changes.jsonl.tmp.{pid}")));
        symlink(&t.v, &t.shared.join(format!(".elysiactl.prom.{pid}.tmp")));
    }
    let (out, prom) = changes_then_sync(&t);
    assert_eq!(std::fs::read_to_string(&t.v).unwrap(), VICTIM);
    assert!(std::fs::read_to_string(&out).unwrap().contains("\"a.txt\""));
    assert!(std::fs::read_to_string(&prom)
        .unwrap()
        .contains("elysiactl_sync_last_run_timestamp{status=\"complete\"}"));
}

#[test]
fn leftovers_of_killed_runs_are_cleaned_and_nothing_else() {
    let t = shared();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let plant = |name: &str| {
        let p = t.shared.join(name);
        File::create(&p).unwrap().set_modified(hour_ago).unwrap();
        p
    };
    // pid_max is at most 2^22: pid 99999999 never runs.
    let dead = [
        plant(".changes.jsonl.tmp.99999999"),
        plant(".changes.jsonl.99999999.tmp"),
        plant(".changes.jsonl.99999999.Ab3dEf9h.tmp"),
        plant(".elysiactl.prom.99999999.tmp"),
        plant(".elysiactl.prom.99999998.Zz09aB7c.tmp"),
    ];
    // Still being written by a live process (this one): kept.
    let live = plant(&format!(".changes.jsonl.{}.tmp", std::process::id()));
    let unrelated = plant(".notes.txt.99999999.tmp");
    let link = t.shared.join(".changes.jsonl.tmp.99999997");
    symlink(&t.v, &link);

    let (out, prom) = changes_then_sync(&t);

    for p in &dead {
        assert!(!p.exists(), "left behind: {}", p.display());
    }
    for p in [&live, &unrelated, &out, &prom] {
        assert!(p.exists(), "removed: {}", p.display());
    }
    assert!(link.symlink_metadata().unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&t.v).unwrap(), VICTIM);
}

#[test]
fn published_modes_are_the_documented_ones_whatever_the_umask() {
    let (dir, root) = with_repo();
    let out = dir.path().join("changes.jsonl");
    let prom = dir.path().join("elysiactl.prom");
    let state = dir.path().join("state");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // A private umask, as the cron script sets: the manifest follows it
    // (0666 less the umask), the metrics stay world-readable 0644.
    let script = format!(
        "umask 077 && \"$0\" changes --root '{r}' --state-dir '{st}' --output '{o}' && \
         \"$0\" index sync --input '{o}' --root '{r}' --state-dir '{st}' --metrics-file '{m}'",
        r = s(&root),
        st = s(&state),
        o = s(&out),
        m = s(&prom),
    );
    let r = Command::new("sh")
        .args(["-c", &script, BIN])
        .env_remove("ELYSIACTL_STATE_DIR")
        .env_remove("ELYSIACTL_WEAVIATE_URL")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o600);
    assert_eq!(mode(&prom), 0o644);
}

#[test]
fn a_metrics_path_that_is_not_a_regular_file_is_written_in_place_never_renamed_over() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("metrics.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: no mkfifo");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let m = elysiactl::sync::metrics::RunMetrics {
        finished_unix: 1_735_650_600,
        ..Default::default()
    };
    elysiactl::sync::metrics::write(&fifo, &m).unwrap();
    assert_eq!(reader.join().unwrap(), elysiactl::sync::metrics::render(&m));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
