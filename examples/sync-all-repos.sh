#!/bin/bash
# /usr/local/bin/sync-all-repos.sh — the whole pipeline, for cron or a systemd timer:
#   1. elysiactl changes: pull every repository and write the change manifest
#      (every repo's changes since the commit the index last fully applied);
#   2. elysiactl index sync: apply it, resumably.
# A failed or killed run loses nothing: the next run's manifest covers whatever
# was not applied, and applying a change twice changes nothing.
#
# Exit status: 0 only when every repository was pulled and diffed and the sync
# applied everything; 1 when something failed (some repositories, or some
# items: what could be synced was synced, and the next run retries the rest);
# the sync's own code (2 usage, 3 fatal) when it could not run; 127 when the
# elysiactl binary cannot be found. Failures are also printed on stderr (cron
# mails them).
#
# Settings (environment): ROOT, STATE_DIR, LOG_DIR, CHANGE_DIR, KEEP_DAYS, JOBS,
# TEXTFILE_DIR, and ELYSIACTL (the binary; otherwise PATH, then
# /usr/local/bin/elysiactl, then ~/.cargo/bin/elysiactl — cron's PATH is only
# /usr/bin:/bin).

set -euo pipefail

# Everything this script creates (state dir, logs, manifests) is owner-only.
# elysiactl makes the metrics file world-readable (0644) itself.
umask 077

ROOT="${ROOT:-/opt/pdi/Enterprise}"
LOG_DIR="${LOG_DIR:-/var/log/elysiactl}"
STATE_DIR="${STATE_DIR:-/var/lib/elysiactl}"
CHANGE_DIR="${CHANGE_DIR:-$STATE_DIR/changes}"
KEEP_DAYS="${KEEP_DAYS:-7}"
JOBS="${JOBS:-8}"
# node_exporter's textfile collector directory (metrics are skipped if absent).
TEXTFILE_DIR="${TEXTFILE_DIR:-/var/lib/node_exporter/textfile_collector}"
CHANGE_FILE="$CHANGE_DIR/repo-changes-$(date +%Y%m%d-%H%M%S).jsonl"

mkdir -p "$LOG_DIR" "$STATE_DIR" "$CHANGE_DIR"
log() { echo "[$(date)] $*" >> "$LOG_DIR/sync.log"; }
# A failure goes to the log and to stderr.
fail() {
    log "ERROR: $*"
    echo "sync-all-repos: $*" >&2
}

# The elysiactl binary: $ELYSIACTL, else PATH, else the usual install places.
find_elysiactl() {
    if [ -n "${ELYSIACTL:-}" ]; then
        if [ -f "$ELYSIACTL" ] && [ -x "$ELYSIACTL" ]; then
            echo "$ELYSIACTL"
            return 0
        fi
        fail "ELYSIACTL=$ELYSIACTL is not an executable file"
        return 1
    fi
    if command -v elysiactl > /dev/null 2>&1; then
        command -v elysiactl
        return 0
    fi
    local candidate
    for candidate in /usr/local/bin/elysiactl ${HOME:+"$HOME/.cargo/bin/elysiactl"}; do
        if [ -f "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    fail "elysiactl not found in PATH ($PATH), /usr/local/bin or ~/.cargo/bin; set ELYSIACTL=/path/to/elysiactl"
    return 1
}
if ! ELYSIACTL_BIN="$(find_elysiactl)"; then
    exit 127
fi

log "Starting repository sync ($ELYSIACTL_BIN)"

# Step 1: pull every repository and write the manifest (atomically: a killed
# run never leaves half a manifest behind). Exit 1 = some repositories failed
# (pull or git error): the manifest still covers all the others, so the sync
# still runs, but this script ends non-zero. Anything else is fatal.
log "Pulling repositories and detecting changes..."
set +e
"$ELYSIACTL_BIN" changes --root "$ROOT" --pull --jobs "$JOBS" \
    --state-dir "$STATE_DIR" --output "$CHANGE_FILE" 2>> "$LOG_DIR/changes.log"
changes_rc=$?
set -e
case $changes_rc in
    0) ;;
    1) log "WARNING: some repositories failed to pull or diff (see $LOG_DIR/changes.log); syncing the others" ;;
    *) fail "failed to generate the change manifest (elysiactl changes exit $changes_rc, see $LOG_DIR/changes.log)"
       exit "$changes_rc" ;;
esac

# Step 2: count changes (new_changeset lines are bookkeeping, not changes).
CHANGE_COUNT=$(grep -vc '"new_changeset"' "$CHANGE_FILE" || true)
log "Found $CHANGE_COUNT changes to process"

# Step 3: apply them. The state dir is shared with step 1: that is where the
# applied commit of every repository is recorded.
METRICS_ARGS=()
if [ -d "$TEXTFILE_DIR" ]; then
    METRICS_ARGS=(--metrics-file "$TEXTFILE_DIR/elysiactl.prom")
fi
log "Starting index sync..."
set +e
"$ELYSIACTL_BIN" index sync \
    --input "$CHANGE_FILE" \
    --root "$ROOT" \
    --state-dir "$STATE_DIR" \
    --batch-size 100 \
    --on-error continue \
    ${METRICS_ARGS[@]+"${METRICS_ARGS[@]}"} \
    >> "$LOG_DIR/sync.log" 2>&1
sync_rc=$?
set -e

if [ "$sync_rc" -ne 0 ]; then
    fail "index sync ended with exit $sync_rc (1: some items failed; see $LOG_DIR/sync.log and 'elysiactl index failures'); the next run resumes"
    exit "$sync_rc"
fi
# The manifest is fully applied: older ones are done with (keep $KEEP_DAYS days).
find "$CHANGE_DIR" -name 'repo-changes-*.jsonl' -mtime +"$KEEP_DAYS" -delete
if [ "$changes_rc" -ne 0 ]; then
    fail "sync applied, but some repositories failed to pull or diff (see $LOG_DIR/changes.log); they are retried next run"
    exit 1
fi
log "Sync completed successfully"
