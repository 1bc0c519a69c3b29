//! The shipped cron job, `examples/sync-all-repos.sh`, run as cron runs it:
//! an empty environment with `PATH=/usr/bin:/bin`, on generated git
//! repositories with local remotes. It finds the binary, creates its state
//! dir owner-only, syncs what it can, and ends non-zero (saying so) when a
//! repository failed to pull. Also the systemd unit's paths.

mod support;

#[path = "changes_support/mod.rs"]
mod csupport;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use csupport::gitrepo::{origin, Repo};
use support::{exported_paths, text, BIN};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sync-all-repos.sh");
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/systemd/elysiactl-sync.service"
);

struct Site {
    tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    logs: PathBuf,
    textfile: PathBuf,
    home: PathBuf,
    devs: Vec<Repo>,
}

impl Site {
    /// Two repositories cloned under `root` from local remotes; nothing of
    /// the script's directories exists yet.
    fn new() -> Site {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("dev")).expect("mkdir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).expect("mkdir");
        let mut devs = Vec::new();
        for name in ["A", "B"] {
            let first = format!("{name} 1\n");
            let (url, dev) = origin(tmp.path(), &tmp.path().join("dev"), name, &first);
            Repo::clone_from(&root, name, &url);
            devs.push(dev);
        }
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).expect("mkdir");
        let textfile = tmp.path().join("textfile");
        std::fs::create_dir_all(&textfile).expect("mkdir");
        Site {
            state: tmp.path().join("var/lib/elysiactl"),
            logs: tmp.path().join("var/log/elysiactl"),
            root,
            textfile,
            home,
            devs,
            tmp,
        }
    }

    /// The script under `env -i PATH=/usr/bin:/bin HOME=… ` plus `extra`.
    fn run(&self, extra: &[(&str, &str)]) -> Output {
        let mut c = Command::new("env");
        c.arg("-i")
            .arg("PATH=/usr/bin:/bin")
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("ROOT={}", self.root.display()))
            .arg(format!("STATE_DIR={}", self.state.display()))
            .arg(format!("LOG_DIR={}", self.logs.display()))
            .arg(format!("TEXTFILE_DIR={}", self.textfile.display()))
            .arg("JOBS=2");
        for (k, v) in extra {
            c.arg(format!("{k}={v}"));
        }
        c.arg(SCRIPT).output().expect("run the script")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.logs.join("sync.log")).unwrap_or_default()
    }

    fn push(&self, i: usize, file: &str) {
        self.devs[i].write(file, format!("{file}\n"));
        self.devs[i].commit(file);
        self.devs[i].push();
    }

    /// [`Site::run`], which must exit 0; returns the log.
    fn run_ok(&self, extra: &[(&str, &str)]) -> String {
        let out = self.run(extra);
        let log = self.log();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}\n{log}");
        log
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn cron_script_under_crons_path_syncs_creates_a_private_state_dir_and_exits_0() {
    let site = Site::new();
    let log = site.run_ok(&[("ELYSIACTL", BIN)]);
    assert!(log.contains("Sync completed successfully"), "{log}");
    assert_eq!(mode(&site.state), 0o700, "state dir");
    assert_eq!(mode(&site.logs), 0o700, "log dir");
    assert_eq!(exported_paths(&site.state), ["A/first.txt", "B/first.txt"]);
    assert_eq!(mode(&site.textfile.join("elysiactl.prom")), 0o644);

    // Without the override, under cron's PATH, the binary is found in
    // ~/.cargo/bin; new upstream commits are pulled and synced.
    let bin_dir = site.home.join(".cargo/bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("elysiactl")).expect("symlink");
    site.push(0, "second.txt");
    let log = site.run_ok(&[]);
    assert!(log.contains(".cargo/bin/elysiactl"), "{log}");
    assert_eq!(
        exported_paths(&site.state),
        ["A/first.txt", "A/second.txt", "B/first.txt"]
    );
}

#[test]
fn cron_script_with_a_failed_pull_syncs_the_rest_and_exits_non_zero_saying_so() {
    let site = Site::new();
    site.push(0, "second.txt");
    // B's remote is gone: its pull fails, `changes` exits 1.
    std::fs::remove_dir_all(site.tmp.path().join("remotes/B.git")).expect("rm remote");
    let out = site.run(&[("ELYSIACTL", BIN)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}\n{}", site.log());
    assert!(err.contains("some repositories failed to pull"), "{err}");
    assert!(
        !site.log().contains("Sync completed successfully"),
        "{}",
        site.log()
    );
    // What could be synced was: A's new commit, and B at its local HEAD.
    assert_eq!(
        exported_paths(&site.state),
        ["A/first.txt", "A/second.txt", "B/first.txt"]
    );
    assert_eq!(mode(&site.state), 0o700);
}

#[test]
fn cron_script_without_a_binary_fails_with_a_clear_message() {
    let site = Site::new();
    let out = site.run(&[("ELYSIACTL", "/nonexistent/elysiactl")]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("ELYSIACTL=/nonexistent/elysiactl is not an executable"),
        "{}",
        text(&out.stderr)
    );
    // Nothing on cron's PATH, in /usr/local/bin or ~/.cargo/bin (when this
    // machine has none installed there either).
    let installed = ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join("elysiactl").exists());
    if !installed {
        let out = site.run(&[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(127), "{err}");
        assert!(err.contains("elysiactl not found"), "{err}");
        assert!(err.contains("set ELYSIACTL="), "{err}");
    }
}

#[test]
fn systemd_unit_paths_that_may_be_missing_never_fail_the_unit() {
    let unit = std::fs::read_to_string(UNIT).expect("unit");
    let value = |key: &str| {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Directories systemd creates itself (StateDirectory=, LogsDirectory=)
    // always exist; any other path may be missing on a given host.
    let own: Vec<String> = ["StateDirectory", "LogsDirectory"]
        .iter()
        .flat_map(|k| {
            let base = if *k == "StateDirectory" {
                "/var/lib"
            } else {
                "/var/log"
            };
            value(k)
                .split_whitespace()
                .map(|d| format!("{base}/{d}"))
                .collect::<Vec<_>>()
        })
        .collect();
    let paths = value("ReadWritePaths");
    assert!(paths.contains("textfile_collector"), "{paths}");
    for p in paths.split_whitespace() {
        assert!(
            p.starts_with('-') || own.iter().any(|o| p == o),
            "ReadWritePaths entry {p} fails the unit when it does not exist: prefix it with -"
        );
    }
    assert_eq!(value("StateDirectoryMode"), "0700");

    // systemd's own check, where it is installed: no unknown keys or bad
    // values (it needs an ExecStart that exists: the script itself).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("elysiactl-sync.service");
        std::fs::write(
            &copy,
            unit.replace("/usr/local/bin/sync-all-repos.sh", SCRIPT),
        )
        .expect("write");
        let out = Command::new("/usr/bin/systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze");
        let err = text(&out.stderr);
        assert!(
            out.status.success() && !err.contains(copy.to_str().expect("utf-8")),
            "{err}"
        );
    }
}
