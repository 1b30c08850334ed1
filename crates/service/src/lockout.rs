//! Lockout slots reserved before a password is checked, so parallel guesses
//! cannot get past the limit.
//!
//! The database is the record: every counted failure is a row in
//! `auth_failures`, read by the login's one lookup. That read alone cannot
//! bound parallel guesses (all of them read "4 of 5" before any writes its
//! failure), so each replica also keeps, per lockout key, in memory:
//!
//! * the attempts **in flight** — each holds a slot from the moment it
//!   passes the check until its outcome is known: released on success or
//!   on a failure that counts toward nothing (the directory was down),
//!   turned into a recorded failure otherwise;
//! * the failures it **recorded** lately, each with the sequence number of
//!   the moment its row was committed, for the reads that began before
//!   then and so may not see it.
//!
//! A login may pass only when `failures read + failures recorded after its
//! read began + attempts in flight < limit`; the check and the reservation
//! are one step under one lock. When only attempts in flight stand in the
//! way (a person signing in from several tabs, say), the login waits for
//! them rather than being refused: a success frees its slot, a failure
//! becomes a recorded one. Nothing here costs a round trip: the check
//! rides on the lookup the login made anyway, and the failure's row is the
//! write it made anyway.
//!
//! Several replicas share the record but not the in-flight slots: guesses
//! sent one after another are counted exactly wherever they land; guesses
//! landing on different replicas in the same instant are bounded per
//! replica.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Key {
    in_flight: i64,
    /// Sequence numbers of the failures recorded here, oldest first.
    recorded: Vec<u64>,
}

#[derive(Default)]
struct Inner {
    /// Ticks at every read that begins and every failure recorded.
    seq: u64,
    /// Reads in progress: their sequence number and how many share it.
    reads: BTreeMap<u64, usize>,
    keys: HashMap<String, Key>,
}

impl Inner {
    fn end_read(&mut self, r: u64) {
        if let Some(n) = self.reads.get_mut(&r) {
            *n -= 1;
            if *n == 0 {
                self.reads.remove(&r);
            }
        }
    }

    /// Forget what no read in progress can miss, and idle keys.
    fn tidy(&mut self, key: &str) {
        let oldest = self.reads.keys().next().copied();
        if let Some(k) = self.keys.get_mut(key) {
            match oldest {
                Some(r) => k.recorded.retain(|s| *s > r),
                None => k.recorded.clear(),
            }
            if k.in_flight <= 0 && k.recorded.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// A periodic sweep of every key (the per-key tidy runs on the keys a
    /// login touches; this catches the ones nobody touches again).
    fn sweep(&mut self) {
        let oldest = self.reads.keys().next().copied();
        self.keys.retain(|_, k| {
            match oldest {
                Some(r) => k.recorded.retain(|s| *s > r),
                None => k.recorded.clear(),
            }
            k.in_flight > 0 || !k.recorded.is_empty()
        });
    }
}

/// This replica's lockout slots.
#[derive(Default)]
pub(crate) struct Lockouts {
    inner: Mutex<Inner>,
    /// Woken whenever a slot is freed or turns into a recorded failure.
    changed: tokio::sync::Notify,
}

/// Why no slot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `checks[i]` has reached its limit of failures.
    Locked(usize),
    /// `checks[i]` would reach its limit only if the attempts in flight
    /// fail: wait for one of them to end, then ask again.
    Busy(usize),
}

impl std::fmt::Debug for Lockouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lockouts")
    }
}

/// One key to check: its failures in the database (as read) and its limit.
#[derive(Debug)]
pub(crate) struct Check<'a> {
    pub key: &'a str,
    pub read: i64,
    pub limit: i64,
}

/// A lookup's place in time: taken before its read of the failures.
pub(crate) struct ReadTicket {
    lockouts: Arc<Lockouts>,
    seq: Option<u64>,
}

impl Drop for ReadTicket {
    fn drop(&mut self) {
        if let Some(r) = self.seq.take() {
            self.lockouts.lock().end_read(r);
        }
    }
}

/// Slots held by one login attempt. Dropped unresolved (a panic), the
/// slots are released.
pub(crate) struct Reservation {
    lockouts: Arc<Lockouts>,
    keys: Vec<String>,
}

impl Lockouts {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Call before reading the failures from the database.
    pub(crate) fn begin_read(self: &Arc<Self>) -> ReadTicket {
        let mut inner = self.lock();
        inner.seq += 1;
        let r = inner.seq;
        *inner.reads.entry(r).or_default() += 1;
        ReadTicket { lockouts: self.clone(), seq: Some(r) }
    }

    /// Check every key and, when none is at its limit, take a slot on each:
    /// one step. Refused, no slot is taken; the ticket stays valid for
    /// another try after [`Refusal::Busy`].
    pub(crate) fn reserve(self: &Arc<Self>, ticket: &mut ReadTicket, checks: &[Check<'_>]) -> Result<Reservation, Refusal> {
        let Some(r) = ticket.seq else {
            return Err(Refusal::Locked(0));
        };
        let mut inner = self.lock();
        let mut busy = None;
        for (i, c) in checks.iter().enumerate() {
            let (in_flight, missed) =
                inner.keys.get(c.key).map(|k| (k.in_flight, k.recorded.iter().filter(|s| **s > r).count() as i64)).unwrap_or((0, 0));
            if c.read + missed >= c.limit {
                ticket.seq = None;
                inner.end_read(r);
                inner.tidy(c.key);
                return Err(Refusal::Locked(i));
            }
            if c.read + missed + in_flight >= c.limit {
                busy = busy.or(Some(i));
            }
        }
        if let Some(i) = busy {
            return Err(Refusal::Busy(i));
        }
        ticket.seq = None;
        inner.end_read(r);
        for c in checks {
            inner.keys.entry(c.key.to_string()).or_default().in_flight += 1;
        }
        if inner.seq.is_multiple_of(1024) {
            inner.sweep();
        }
        Ok(Reservation { lockouts: self.clone(), keys: checks.iter().map(|c| c.key.to_string()).collect() })
    }

    /// Reserve, waiting up to `patience` while attempts in flight stand in
    /// the way.
    pub(crate) async fn reserve_or_wait(
        self: &Arc<Self>,
        mut ticket: ReadTicket,
        checks: &[Check<'_>],
        patience: std::time::Duration,
    ) -> Result<Reservation, Refusal> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Listening before checking: a change between the check and
            // the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.reserve(&mut ticket, checks) {
                Err(Refusal::Busy(i)) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Err(Refusal::Busy(i));
                    }
                }
                done => return done,
            }
        }
    }

    /// Keys with attempts in flight or failures this replica recorded
    /// (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().keys.len()
    }
}

impl Reservation {
    /// The lockout keys whose slots this attempt holds.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The attempt failed and its failure is now in the database.
    pub(crate) fn record_failure(mut self) {
        let keys = std::mem::take(&mut self.keys);
        let mut inner = self.lockouts.lock();
        inner.seq += 1;
        let s = inner.seq;
        for key in &keys {
            if let Some(k) = inner.keys.get_mut(key) {
                k.in_flight -= 1;
                k.recorded.push(s);
            }
            inner.tidy(key);
        }
        drop(inner);
        self.lockouts.changed.notify_waiters();
    }

    /// The attempt succeeded, or failed in a way that counts toward nothing.
    pub(crate) fn release(mut self) {
        self.release_keys();
    }

    fn release_keys(&mut self) {
        let keys = std::mem::take(&mut self.keys);
        if keys.is_empty() {
            return;
        }
        let mut inner = self.lockouts.lock();
        for key in &keys {
            if let Some(k) = inner.keys.get_mut(key) {
                k.in_flight -= 1;
            }
            inner.tidy(key);
        }
        drop(inner);
        self.lockouts.changed.notify_waiters();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release_keys();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, read: i64) -> [Check<'_>; 1] {
        [Check { key, read, limit: 5 }]
    }

    #[test]
    fn parallel_attempts_take_the_free_slots_only() {
        let l = Arc::new(Lockouts::default());
        // 32 attempts all read "3 failures" before any of them finishes.
        let mut tickets: Vec<_> = (0..32).map(|_| l.begin_read()).collect();
        let mut held = Vec::new();
        let mut busy = 0;
        for t in &mut tickets {
            match l.reserve(t, &check("user:bob", 3)) {
                Ok(r) => held.push(r),
                Err(Refusal::Busy(0)) => busy += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((held.len(), busy), (2, 30), "5 - 3 free slots; the others wait");
        // Both fail: every waiting attempt is now locked out for good.
        held.into_iter().for_each(Reservation::record_failure);
        for t in &mut tickets[2..] {
            assert_eq!(l.reserve(t, &check("user:bob", 3)).err(), Some(Refusal::Locked(0)));
        }
        drop(tickets);
        assert_eq!(l.tracked(), 0, "nothing left behind once no read can miss a failure");
    }

    #[test]
    fn a_failure_recorded_after_a_read_began_counts_for_that_read() {
        let l = Arc::new(Lockouts::default());
        let mut early = l.begin_read();
        let first = l.reserve(&mut l.begin_read(), &check("user:bob", 4)).unwrap();
        // Its failure is committed (the database says 5 now) after `early`
        // began: `early` may have read 4.
        first.record_failure();
        assert_eq!(l.reserve(&mut early, &check("user:bob", 4)).err(), Some(Refusal::Locked(0)), "the read missed one failure");
        // A read that begins now sees the row itself: no double count.
        let late = l.reserve(&mut l.begin_read(), &check("user:bob", 4));
        assert!(late.is_ok(), "4 in the database, nothing pending: one slot");
        drop(late);
        assert_eq!(l.tracked(), 0, "nothing pending once no read can miss it");
    }

    #[test]
    fn every_key_must_be_free_and_a_refusal_takes_no_slot() {
        let l = Arc::new(Lockouts::default());
        let both = |user_read, ip_read| {
            [Check { key: "user:ann", read: user_read, limit: 5 }, Check { key: "ip:10.0.0.1", read: ip_read, limit: 50 }]
        };
        assert_eq!(l.reserve(&mut l.begin_read(), &both(0, 50)).err(), Some(Refusal::Locked(1)), "the address is at its limit");
        let held: Vec<_> = (0..5).map(|_| l.reserve(&mut l.begin_read(), &both(0, 0)).unwrap()).collect();
        assert_eq!(l.reserve(&mut l.begin_read(), &both(0, 0)).err(), Some(Refusal::Busy(0)));
        // Another user from the same address still gets a slot.
        let other = [Check { key: "user:cy", read: 0, limit: 5 }, Check { key: "ip:10.0.0.1", read: 0, limit: 50 }];
        assert!(l.reserve(&mut l.begin_read(), &other).is_ok());
        drop(held);
        assert_eq!(l.tracked(), 0);
    }

    #[tokio::test]
    async fn an_attempt_waits_for_the_ones_in_flight_and_follows_their_outcome() {
        let l = Arc::new(Lockouts::default());
        let patience = std::time::Duration::from_secs(5);
        let held: Vec<_> = (0..5).map(|_| l.reserve(&mut l.begin_read(), &check("user:bob", 0)).unwrap()).collect();
        let waiting = {
            let l = l.clone();
            tokio::spawn(async move { l.reserve_or_wait(l.begin_read(), &check("user:bob", 0), patience).await.map(Reservation::release) })
        };
        tokio::task::yield_now().await;
        // One succeeds: its slot goes to the waiting attempt.
        let mut held = held.into_iter();
        held.next().unwrap().release();
        assert_eq!(waiting.await.unwrap(), Ok(()));
        // All five fail: a waiting attempt is refused as locked.
        let again = {
            let l = l.clone();
            tokio::spawn(async move { l.reserve_or_wait(l.begin_read(), &check("user:bob", 0), patience).await.map(Reservation::release) })
        };
        let fifth = l.reserve(&mut l.begin_read(), &check("user:bob", 0)).unwrap();
        tokio::task::yield_now().await;
        held.chain([fifth]).for_each(Reservation::record_failure);
        assert_eq!(again.await.unwrap(), Err(Refusal::Locked(0)));
        // Busy for longer than its patience: refused as busy.
        let slow: Vec<_> = (0..5).map(|_| l.reserve(&mut l.begin_read(), &check("user:amy", 0)).unwrap()).collect();
        let r = l.reserve_or_wait(l.begin_read(), &check("user:amy", 0), std::time::Duration::from_millis(20)).await;
        assert_eq!(r.err(), Some(Refusal::Busy(0)));
        drop(slow);
    }
}
