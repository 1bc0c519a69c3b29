//! Permits to the target: at most N batches in flight, started in the order
//! they were read, and never two at once that write one object. Under rate
//! limits the N adapts (AIMD): halved when a batch comes back throttled, one
//! more after as many batches as the limit came back unthrottled, never
//! above `--concurrency` nor below 1.

use super::*;

/// A counting semaphore handed out in ticket order: at most `n` batches are
/// at the target at once, batch `k` (its ticket, in the order the feed sent
/// them) starts only after every batch before it has started, and never
/// while an earlier batch that writes one of its objects is still in flight
/// (so a retried write never lands after a later line's write, and the
/// earlier batch's outcome is queued for recording first).
///
/// No deadlock: the feed sends jobs in ticket order and workers take them
/// from one queue, so the lowest outstanding ticket is always held by a
/// worker, which gets the next free permit; a batch only ever waits for
/// batches before it.
pub(super) struct Permits {
    pub(super) total: usize,
    pub(super) state: Mutex<PermitState>,
    pub(super) changed: Condvar,
}

pub(super) struct PermitState {
    pub(super) free: usize,
    /// Batches allowed at the target now (AIMD, 1..=total).
    pub(super) limit: usize,
    /// Batches that came back since the limit last changed.
    pub(super) since_change: usize,
    /// The next ticket to serve.
    pub(super) next: u64,
    /// Object ids (sorted) of the batches at the target, by ticket.
    pub(super) in_flight: Vec<(u64, Vec<uuid::Uuid>)>,
}

impl PermitState {
    pub(super) fn conflicts(&self, ids: &[uuid::Uuid]) -> bool {
        self.in_flight
            .iter()
            .any(|(_, theirs)| ids.iter().any(|id| theirs.binary_search(id).is_ok()))
    }
}

pub(super) struct Permit<'a> {
    pub(super) permits: &'a Permits,
    pub(super) ticket: u64,
}

impl Permits {
    pub(super) fn new(n: usize) -> Permits {
        Permits {
            total: n,
            state: Mutex::new(PermitState {
                free: n,
                limit: n.max(1),
                since_change: 0,
                next: 0,
                in_flight: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }

    /// Wait for ticket `ticket`'s turn; `ids` are the sorted object ids the
    /// batch writes.
    pub(super) fn acquire(&self, ticket: u64, ids: Vec<uuid::Uuid>) -> Permit<'_> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.free == 0
            || self.total - st.free >= st.limit
            || st.next != ticket
            || st.conflicts(&ids)
        {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.free -= 1;
        st.next += 1;
        if !ids.is_empty() {
            st.in_flight.push((ticket, ids));
        }
        self.changed.notify_all();
        Permit {
            permits: self,
            ticket,
        }
    }
}

impl Permits {
    /// A batch came back, `throttled` or not: adapt the limit (and return
    /// it). One decrease
    /// per round of the batches in flight (those that were sent beside the
    /// throttled one say the same thing), one increase per `limit` batches
    /// back in a row without a rate limit.
    pub(super) fn signal(&self, throttled: bool) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.since_change += 1;
        if throttled {
            if st.since_change >= st.limit && st.limit > 1 {
                st.limit -= st.limit / 2;
                st.since_change = 0;
            }
        } else if st.since_change >= st.limit && st.limit < self.total {
            st.limit += 1;
            st.since_change = 0;
            self.changed.notify_all();
        }
        st.limit
    }

    /// The number of batches allowed at the target now.
    #[cfg(test)]
    pub(super) fn limit(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).limit
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut st = self.permits.state.lock().unwrap_or_else(|p| p.into_inner());
        st.free += 1;
        let ticket = self.ticket;
        st.in_flight.retain(|(t, _)| *t != ticket);
        self.permits.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    #[test]
    fn permits_are_served_in_ticket_order() {
        // One permit: each holder records itself while it holds it, so the
        // record is the order the permits were handed out in.
        let permits = Permits::new(1);
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            // Spawned in reverse: each still starts in ticket order.
            for t in (0..6u64).rev() {
                let (permits, order) = (&permits, &order);
                s.spawn(move || {
                    let _p = permits.acquire(t, Vec::new());
                    order.lock().unwrap().push(t);
                });
            }
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        // Two permits: two batches are at the target at once.
        let two = Permits::new(2);
        let a = two.acquire(0, Vec::new());
        let b = two.acquire(1, Vec::new());
        drop((a, b));
    }

    #[test]
    fn the_in_flight_limit_halves_when_throttled_and_grows_back_one_at_a_time() {
        let permits = Permits::new(8);
        assert_eq!(permits.limit(), 8);
        // The first throttled batch of a round halves it; the others of that
        // round do not.
        for _ in 0..8 {
            permits.signal(true);
        }
        assert_eq!(permits.limit(), 4);
        for _ in 0..4 {
            permits.signal(true);
        }
        assert_eq!(permits.limit(), 2);
        for _ in 0..10 {
            permits.signal(true);
        }
        assert_eq!(permits.limit(), 1);
        // Clear: +1 per `limit` batches back, up to the total.
        permits.signal(false);
        assert_eq!(permits.limit(), 2);
        permits.signal(false);
        permits.signal(false);
        assert_eq!(permits.limit(), 3);
        for _ in 0..100 {
            permits.signal(false);
        }
        assert_eq!(permits.limit(), 8);
    }

    #[test]
    fn no_more_batches_start_than_the_limit_allows() {
        let permits = Permits::new(4);
        for _ in 0..4 {
            permits.signal(true);
        }
        assert_eq!(permits.limit(), 2);
        let a = permits.acquire(0, Vec::new());
        let b = permits.acquire(1, Vec::new());
        let started = AtomicU64::new(0);
        std::thread::scope(|s| {
            let (permits, started) = (&permits, &started);
            s.spawn(move || {
                let _p = permits.acquire(2, Vec::new());
                started.fetch_add(1, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(started.load(Ordering::SeqCst), 0, "a third batch started");
            drop(a);
        });
        assert_eq!(started.load(Ordering::SeqCst), 1);
        drop(b);
    }

    #[test]
    fn a_batch_waits_for_an_earlier_one_writing_the_same_object() {
        let permits = Permits::new(4);
        let first = permits.acquire(0, vec![id(1), id(2)]);
        let started = AtomicU64::new(0);
        std::thread::scope(|s| {
            let (permits, started) = (&permits, &started);
            // Ticket 1 shares object 2 with ticket 0: it waits.
            s.spawn(move || {
                let _p = permits.acquire(1, vec![id(2), id(3)]);
                started.fetch_add(1, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                started.load(Ordering::SeqCst),
                0,
                "ticket 1 ran beside ticket 0"
            );
            drop(first);
        });
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Disjoint objects share the target.
        let a = permits.acquire(2, vec![id(7)]);
        let b = permits.acquire(3, vec![id(8)]);
        drop((a, b));
    }
}
