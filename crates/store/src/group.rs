//! Grouping concurrent requests into one trip to SQLite.
//!
//! Each sqlx SQLite connection runs on a worker thread of its own, and every
//! query is a round trip to it: two thread wake-ups, whatever the query
//! costs. Under load those wake-ups, not the SQL, were most of the login
//! path's database time. A [`Group`] lets concurrent callers share a trip:
//! a caller queues its job, then waits for a turn; whoever gets the turn
//! takes every job queued by then and runs them together, and a caller
//! whose job an earlier turn already ran just takes its answer. Alone, a
//! caller runs its own job at once; nobody waits for company.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::Result;

/// A queued job and where its answer goes.
pub(crate) type Waiter<J, R> = (J, oneshot::Sender<Result<R>>);

/// The queue of one kind of job.
pub(crate) struct Group<J, R> {
    queue: Arc<Mutex<Vec<Waiter<J, R>>>>,
}

impl<J, R> Default for Group<J, R> {
    fn default() -> Self {
        Group { queue: Default::default() }
    }
}

impl<J, R> Clone for Group<J, R> {
    fn clone(&self) -> Self {
        Group { queue: self.queue.clone() }
    }
}

fn closed<R>() -> Result<R> {
    Err(sqlx::Error::WorkerCrashed.into())
}

impl<J: Send + 'static, R: Send + 'static> Group<J, R> {
    fn queued(&self) -> MutexGuard<'_, Vec<Waiter<J, R>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `job`, and wait for its answer or for a turn (`turn`). A turn
    /// that finds the job still queued takes the whole queue and hands it
    /// to `run` in trips of at most `per_trip` jobs, holding the turn until
    /// the last trip is done; `run` answers every job it is given.
    pub(crate) async fn join<T, Run, Fut>(&self, job: J, turn: impl Future<Output = T>, per_trip: usize, run: Run) -> Result<R>
    where
        T: Send + 'static,
        Run: Fn(Vec<Waiter<J, R>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (done, mut answer) = oneshot::channel();
        self.queued().push((job, done));
        let turn = tokio::select! {
            biased;
            // Run by an earlier turn: leave the queue for the turn.
            r = &mut answer => return r.unwrap_or_else(|_| closed()),
            turn = turn => turn,
        };
        match answer.try_recv() {
            Ok(r) => return r,
            Err(oneshot::error::TryRecvError::Closed) => return closed(),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        // Ours is still queued, so this turn runs the queue as it is now.
        let waiting = std::mem::take(&mut *self.queued());
        if waiting.len() == 1 {
            // Only ours: run here, nobody else waits on this turn.
            run(waiting).await;
            drop(turn);
        } else {
            // In a task of its own: should this caller be abandoned (its
            // client gone), the others it carries are still run and answered.
            tokio::spawn(async move {
                let _turn = turn;
                let mut waiting = waiting.into_iter().peekable();
                while waiting.peek().is_some() {
                    run(waiting.by_ref().take(per_trip).collect()).await;
                }
            });
        }
        answer.await.unwrap_or_else(|_| closed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs queued while a turn is taken are run together by the next
    /// turn, in trips no larger than asked; each caller gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_jobs_share_a_trip() {
        let group: Group<u32, u32> = Group::default();
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let trips = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let held = gate.clone().lock_owned().await;
        let mut callers = Vec::new();
        for i in 0..10u32 {
            let (group, gate, trips) = (group.clone(), gate.clone(), trips.clone());
            callers.push(tokio::spawn(async move {
                group
                    .join(i, gate.lock_owned(), 4, move |batch| {
                        trips.lock().unwrap().push(batch.iter().map(|(j, _)| *j).collect());
                        for (j, answer) in batch {
                            let _ = answer.send(Ok(j * 10));
                        }
                        async {}
                    })
                    .await
            }));
        }
        while group.queued().len() < 10 {
            tokio::task::yield_now().await;
        }
        drop(held);
        for (i, c) in callers.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), i as u32 * 10);
        }
        let trips = trips.lock().unwrap();
        assert_eq!(trips.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2], "one turn, trips of at most 4: {trips:?}");
    }

    /// Alone, a job runs at once in the caller's own turn.
    #[tokio::test]
    async fn a_lone_job_runs_at_once() {
        let group: Group<u32, u32> = Group::default();
        let r = group
            .join(7, async {}, 4, |batch| {
                for (j, answer) in batch {
                    let _ = answer.send(Ok(j + 1));
                }
                async {}
            })
            .await;
        assert_eq!(r.unwrap(), 8);
        assert!(group.queued().is_empty());
    }
}
