//! The feed: cut a manifest into batches (failed lines first, then every
//! line not yet applied, skipping ranges applied out of order) and send
//! them to the workers.

use super::*;

impl Syncer<'_> {
    /// Produce the manifest's batches: failed lines first, then the rest.
    pub(super) fn feed<'m>(
        &mut self,
        m: &'m Manifest,
        progress: &ManifestProgress,
        pipe: &mut Pipe<'m>,
    ) -> Result<(), Error> {
        let fp = m.id.fingerprint;
        // 1. Lines that failed in earlier runs.
        let failed: Vec<FailedEntry> = progress
            .failed
            .values()
            .filter(|f| self.opts.retry_failed || f.attempts < MAX_ATTEMPTS)
            .cloned()
            .collect();
        for chunk in failed.chunks(self.opts.batch_size) {
            if self.should_stop() {
                return Ok(());
            }
            m.check_unchanged()?;
            let mut lines = Vec::new();
            let mut spans = Vec::new();
            for f in chunk {
                let body = m.line_at(f.offset, f.end);
                lines.push(RawLine {
                    line: f.line,
                    offset: f.offset,
                    end: f.end,
                    body,
                });
                spans.push(Span {
                    start: f.offset,
                    end: f.end,
                    first_line: f.line,
                    next_line: f.line + 1,
                });
            }
            self.submit(pipe, fp, spans, lines, true);
        }
        // 2. Everything not yet applied.
        let (start, line) = progress.resume_point();
        let mut lines = m.lines_from(start, line).peekable();
        loop {
            if self.should_stop() {
                return Ok(());
            }
            m.check_unchanged()?;
            let mut batch_lines = Vec::new();
            let mut spans: Vec<Span> = Vec::new();
            let mut nonblank = 0;
            while nonblank < self.opts.batch_size {
                let Some(raw) = lines.next() else { break };
                if progress.is_done(raw.offset) {
                    continue;
                }
                match spans.last_mut() {
                    Some(s) if s.end == raw.offset => {
                        s.end = raw.end;
                        s.next_line = raw.line + 1;
                    }
                    _ => spans.push(Span {
                        start: raw.offset,
                        end: raw.end,
                        first_line: raw.line,
                        next_line: raw.line + 1,
                    }),
                }
                if raw.bytes.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                nonblank += 1;
                batch_lines.push(RawLine {
                    line: raw.line,
                    offset: raw.offset,
                    end: raw.end,
                    body: raw.bytes,
                });
            }
            if spans.is_empty() {
                break;
            }
            // Trailing blank lines belong to this batch too.
            while let Some(next) = lines.peek() {
                if progress.is_done(next.offset)
                    || !next.bytes.iter().all(|b| b.is_ascii_whitespace())
                {
                    break;
                }
                let raw = *next;
                lines.next();
                if let Some(s) = spans.last_mut().filter(|s| s.end == raw.offset) {
                    s.end = raw.end;
                    s.next_line = raw.line + 1;
                }
            }
            self.submit(pipe, fp, spans, batch_lines, false);
            // Pages before every batch still being planned are not read
            // again (a dropped page is only read back from the file if
            // touched, so this is about memory, not correctness).
            let oldest = pipe
                .waiting
                .values()
                .filter_map(|b| b.spans.first().map(|s| s.start))
                .min();
            if let Some(release_to) = oldest {
                m.release_before(release_to);
            }
        }
        Ok(())
    }

    pub(super) fn submit<'m>(
        &mut self,
        pipe: &mut Pipe<'m>,
        fp: [u8; 32],
        spans: Vec<Span>,
        lines: Vec<RawLine<'m>>,
        retry_pass: bool,
    ) {
        while pipe.waiting.len() >= pipe.limit {
            self.collect_one(pipe);
        }
        if self.should_stop() {
            // `--on-error stop` or a fatal error came back while this batch
            // was being read: it is not applied, and the next run starts here.
            return;
        }
        // Numbered only once sent: batches settle in `seq` order, so there
        // is no gap to wait for.
        let seq = self.seq + 1;
        let job = Job {
            seq,
            ticket: pipe.sent,
            fingerprint: fp,
            lines,
        };
        let sent = pipe
            .job_tx
            .as_ref()
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false);
        if sent {
            self.seq = seq;
            pipe.sent += 1;
            pipe.waiting.insert(
                seq,
                Batch {
                    seq,
                    fingerprint: fp,
                    spans,
                    items: Vec::new(),
                    retry_pass,
                },
            );
        } else {
            self.stop_with(StopReason::Fatal(
                "worker threads ended unexpectedly".into(),
                failed_run::Cause::Other,
            ));
        }
    }
}
