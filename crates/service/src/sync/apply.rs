//! Applying a run's planned items in chunked transactions.

use bindery_model::{DirectoryKind, SyncCounts};
use bindery_store::Change;

use crate::util::now_ms;
use crate::{Error, Result, Service};

/// Items per apply transaction.
const APPLY_CHUNK: i64 = 1000;

impl Service {
    /// Apply the run's planned changes in chunked transactions. A chunk
    /// that fails is retried change by change, so one bad change fails alone.
    ///
    /// With `rules` (the plan's), the staged rows whose change was applied
    /// are settled in the change's transaction: the next plan skips them
    /// until they or their user change.
    pub(super) async fn apply(&self, kind: DirectoryKind, id: i64, counts: &mut SyncCounts, rules: Option<&str>) -> Result<()> {
        let started = std::time::Instant::now();
        let mut after = 0;
        // PostgreSQL plans against table statistics: a first sync into an
        // empty users table would keep the plans made for zero rows until
        // autovacuum catches up. They are refreshed once early in the run.
        let mut statistics_fresh = false;
        // Changes a first sync's pages applied are counted already: this
        // apply's own are what its statistics, status computation and
        // vacuum follow (the pages wrote each row once, and the end of the
        // enumeration vacuumed and analysed after them).
        let before = counts.applied;
        loop {
            if !statistics_fresh && counts.applied - before >= 1000 {
                self.store.analyze_apply_inputs().await?;
                statistics_fresh = true;
            }
            let items = self.store.planned_items(id, after, APPLY_CHUNK).await?;
            let Some(last) = items.last() else { break };
            after = last.id;
            let mut changes = Vec::with_capacity(items.len());
            for i in &items {
                changes.push(
                    serde_json::from_str::<Change>(&i.change_json)
                        .map_err(|e| Error::Internal(format!("stored sync change {}: {e}", i.id))),
                );
            }
            let good: Vec<&Change> = changes.iter().filter_map(|c| c.as_ref().ok()).collect();
            let now = now_ms();
            if good.len() == items.len() {
                let rows: Vec<i64> = items.iter().filter_map(|i| i.staged_id).collect();
                match self.store.apply_changes(&good, rules.map(|r| (r, rows.as_slice())), Some((id, last.id)), now).await {
                    Ok(()) => {
                        counts.applied += items.len() as i64;
                        self.record_sync_changes(&good).await;
                        continue;
                    }
                    Err(e) => tracing::warn!(run = id, error = %e, "a chunk of the sync failed: applying its changes one by one"),
                }
            }
            for (item, change) in items.iter().zip(&changes) {
                let r = match change {
                    Ok(c) => {
                        let row: Vec<i64> = item.staged_id.into_iter().collect();
                        self.store.apply_changes(&[c], rules.map(|r| (r, row.as_slice())), Some((id, item.id)), now).await.map_err(|e| {
                            if e.is_unique_violation() || matches!(e, bindery_store::Error::Conflict(_)) {
                                format!("another user is named {}", item.username)
                            } else {
                                e.to_string()
                            }
                        })
                    }
                    Err(e) => Err(e.to_string()),
                };
                match r {
                    Ok(()) => {
                        counts.applied += 1;
                        if let Ok(c) = change {
                            self.record_sync_changes(&[c]).await;
                        }
                    }
                    Err(why) => {
                        self.store.set_item_failed(item.id, &why).await?;
                        counts.apply_failed += 1;
                    }
                }
            }
        }
        let applied = counts.applied - before;
        let bulk = applied > 1000;
        if applied + counts.apply_failed > 0 {
            if bulk {
                // Planned with the users the apply created.
                self.store.refresh_statistics(false).await?;
            }
            // The import table's statuses follow what was applied.
            self.store.compute_staged_status(kind.as_str()).await?;
        }
        if bulk {
            // After the status computation, which rewrote a row for each
            // applied change: vacuumed before, its dead row versions were
            // left for the next runs' index scans to walk, and for an
            // autovacuum of the snapshot that came seconds later, in the
            // middle of whatever ran then.
            self.store.vacuum_after_apply().await?;
        }
        // A first sync's bulk load (PostgreSQL) that its enumeration did
        // not end (an incomplete one: a complete one builds them once its
        // rows are in): the indexes the run reads are built here, the
        // import table's own once the run has ended. A failed build is
        // logged, not the run's failure: what it applied stands, and the
        // next run or start builds them.
        if self.end_bulk_load_within_run(id).await {
            counts.notes.push(super::BULK_LOAD_NOTE.into());
        }
        counts.apply_ms = started.elapsed().as_millis() as i64;
        self.system_audit(
            "directory.sync_applied",
            &format!("directory:{}", kind.as_str()),
            serde_json::json!({ "run": id, "applied": counts.applied, "failed": counts.apply_failed, "disabled": counts.disable }),
        )
        .await;
        Ok(())
    }

    /// Operation-log entries for role changes and (en|dis)ables a sync applied.
    /// One transaction for the chunk's entries, not one per change.
    async fn record_sync_changes(&self, changes: &[&Change]) {
        let mut events = Vec::new();
        for c in changes {
            if let Change::Update { update, reasons } = c {
                events.extend(crate::lifecycle::update_events(update, reasons, "sync", bindery_store::Applied::default()));
            }
        }
        self.system_changes(&events).await;
    }
}
