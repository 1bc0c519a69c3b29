#!/bin/bash
# /usr/local/bin/sync-all-repos.sh — the whole pipeline, for cron or a systemd timer:
#   1. elysiactl changes: pull every repository and write the change manifest
#      (every repo's changes since the commit the index last fully applied);
#   2. elysiactl index sync: apply it, resumably.
# A failed or killed run loses nothing: the next run's manifest covers whatever
# was not applied, and applying a change twice changes nothing.

set -euo pipefail

ROOT="${ROOT:-/opt/pdi/Enterprise}"
LOG_DIR="${LOG_DIR:-/var/log/elysiactl}"
STATE_DIR="${STATE_DIR:-/var/lib/elysiactl}"
CHANGE_DIR="${CHANGE_DIR:-/var/lib/elysiactl/changes}"
KEEP_DAYS="${KEEP_DAYS:-7}"
JOBS="${JOBS:-8}"
# node_exporter's textfile collector directory (metrics are skipped if absent).
TEXTFILE_DIR="${TEXTFILE_DIR:-/var/lib/node_exporter/textfile_collector}"
CHANGE_FILE="$CHANGE_DIR/repo-changes-$(date +%Y%m%d-%H%M%S).jsonl"

mkdir -p "$LOG_DIR" "$STATE_DIR" "$CHANGE_DIR"
log() { echo "[$(date)] $*" >> "$LOG_DIR/sync.log"; }

log "Starting repository sync"

# Step 1: pull every repository and write the manifest (atomically: a killed
# run never leaves half a manifest behind). Exit 1 = some repositories failed
# (pull or git error): the manifest still covers all the others, and the failed
# ones are retried next run. Anything else is fatal.
log "Pulling repositories and detecting changes..."
set +e
elysiactl changes --root "$ROOT" --pull --jobs "$JOBS" \
    --state-dir "$STATE_DIR" --output "$CHANGE_FILE" 2>> "$LOG_DIR/changes.log"
rc=$?
set -e
case $rc in
    0) ;;
    1) log "WARNING: some repositories failed to pull or diff (see changes.log), continuing..." ;;
    *) log "ERROR: failed to generate the change manifest (exit $rc, see changes.log)"
       exit 1 ;;
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
if elysiactl index sync \
    --input "$CHANGE_FILE" \
    --root "$ROOT" \
    --state-dir "$STATE_DIR" \
    --batch-size 100 \
    --on-error continue \
    ${METRICS_ARGS[@]+"${METRICS_ARGS[@]}"} \
    >> "$LOG_DIR/sync.log" 2>&1; then

    log "Sync completed successfully"
    # Clean up old change files (keep the last $KEEP_DAYS days).
    find "$CHANGE_DIR" -name 'repo-changes-*.jsonl' -mtime +"$KEEP_DAYS" -delete
else
    log "Sync failed or partially completed, will resume next run"
    exit 1
fi
