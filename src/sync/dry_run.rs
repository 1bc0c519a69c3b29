//! `--dry-run`.

use super::*;

/// `--dry-run`: parse every line and check its path rules; touch neither the
/// index, the WAL nor the files.
pub(super) fn dry_run(opts: &Options, log: &mut dyn Write) -> Result<Report, Error> {
    let path = match &opts.input {
        Some(Input::File(p)) => p.clone(),
        Some(Input::Stdin) => return Err(Error::DryRunStdin),
        None => return Err(Error::DryRunNeedsInput),
    };
    let m = Manifest::open(&path, false)?;
    let roots = Roots::new(&opts.roots, opts.max_file_size)
        .map_err(Error::Roots)?
        .with_chunk_size(opts.chunk_size);
    let state = wal::replay(&opts.state_dir)
        .map(|r| r.state)
        .unwrap_or_default();
    let (start, line) = match opts.from_line {
        Some(n) => (
            m.offset_of_line(n).ok_or_else(|| Error::FromLinePastEnd {
                line: n,
                path: path.clone(),
                lines: m.count_lines(),
            })?,
            n,
        ),
        None => state
            .manifest_for(&m.id)
            .map(|p| p.resume_point())
            .unwrap_or((0, 1)),
    };
    let mut parser = LineParser::new();
    let mut counts = Counts::default();
    let mut since_release = 0u64;
    for raw in m.lines_from(start, line) {
        let parsed = match parser.parse(raw.bytes) {
            Ok(None) => continue,
            Ok(Some(c)) => Ok(c),
            Err(e) => Err(e),
        };
        match plan::plan(parsed, &roots, None, m.id.fingerprint, 0, raw.line) {
            Planned::Ops { counts: c, .. } => counts.add_all(&c),
            Planned::Changeset(_) => {
                counts.lines += 1;
                counts.changeset += 1;
            }
            Planned::Failed {
                counts: c, reason, ..
            } => {
                counts.add_all(&c);
                let e = SyncEvent::Invalid {
                    line: raw.line,
                    offset: raw.offset,
                    reason,
                };
                crate::report::write(log, opts.log_format, &e);
            }
        }
        since_release += raw.end - raw.offset;
        if since_release > 64 << 20 {
            m.release_before(raw.offset);
            since_release = 0;
        }
    }
    let e = SyncEvent::DryRun {
        from_line: line,
        offset: start,
        counts: status::counts_json(&counts),
        c: counts,
    };
    crate::report::write(log, opts.log_format, &e);
    Ok(Report {
        exit_code: if counts.failed > 0 {
            Exit::Partial
        } else {
            Exit::Ok
        }
        .code(),
        status: None,
        counts,
        degraded: false,
        message: None,
        cause: None,
        metrics: None,
    })
}
