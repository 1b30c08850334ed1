//! The Sync runs page: the runs, a run's items, and its report as CSV.

use bindery_model::{Page, SyncAction, SyncItem, SyncRun, SyncRunDetail};
use bindery_store::ItemRow;

use crate::import::run_dto;
use crate::{Actor, Error, Result, Service};

fn item_dto(r: ItemRow) -> SyncItem {
    SyncItem { id: r.id, action: r.action, username: r.username, reason: r.reason, outcome: r.outcome, error: r.error }
}

impl Service {
    pub async fn list_sync_runs(&self, actor: &Actor, page: i64, per_page: i64) -> Result<Page<SyncRun>> {
        actor.require_reader()?;
        let per_page = per_page.clamp(1, 200);
        let page = page.max(1);
        let (rows, total) = self.store.list_sync_runs(per_page, (page - 1) * per_page).await?;
        Ok(Page { items: rows.into_iter().map(run_dto).collect(), total, page, per_page })
    }

    /// A run with a page of its per-user items (`action` filters).
    pub async fn sync_run(&self, actor: &Actor, id: i64, action: Option<&str>, page: i64, per_page: i64) -> Result<SyncRunDetail> {
        actor.require_reader()?;
        let run = self.store.get_run(id).await?.filter(|r| r.kind.on_sync_runs_page()).ok_or(Error::NotFound("sync run"))?;
        let action = match action.map(str::trim).filter(|a| !a.is_empty() && *a != "all") {
            None => None,
            Some(a) => Some(
                SyncAction::parse(a)
                    .ok_or_else(|| Error::field("action", "one of: all, create, update, enable, disable, conflict, failed"))?,
            ),
        };
        let per_page = per_page.clamp(1, 500);
        let page = page.max(1);
        let (rows, total) = self.store.list_items(id, action, per_page, (page - 1) * per_page).await?;
        Ok(SyncRunDetail { run: run_dto(run), items: Page { items: rows.into_iter().map(item_dto).collect(), total, page, per_page } })
    }

    /// The run report as CSV: every item, formula-safe.
    pub async fn sync_run_csv(&self, actor: &Actor, id: i64) -> Result<String> {
        actor.require_reader()?;
        self.sync_run(actor, id, None, 1, 1).await?; // exists, and is a sync run
        let mut out = String::from("action,username,reason,outcome,error\r\n");
        let mut offset = 0;
        loop {
            let (rows, _) = self.store.list_items(id, None, 5000, offset).await?;
            if rows.is_empty() {
                break;
            }
            offset += rows.len() as i64;
            for i in rows {
                let fields = [i.action.as_str(), &i.username, &i.reason, i.outcome.as_str(), &i.error];
                out.push_str(&fields.iter().map(|f| crate::util::csv_field(f)).collect::<Vec<_>>().join(","));
                out.push_str("\r\n");
            }
        }
        Ok(out)
    }
}
