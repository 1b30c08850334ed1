//! A directory's sync settings: validated as a whole, saved with the
//! schedule's next firing, and shown with what Test connection detected.

use bindery_model::{DeltaSupportInfo, DirectoryKind, SyncMode, SyncSettings, SyncSettingsView};

use super::Schedule;
use crate::util::{fmt_ts, now_ms};
use crate::{Actor, Error, Result, Service};

/// What a delta cookie and a detected delta method belong to: the servers,
/// the account and the searches. Test connection's finding is shown for
/// the saved settings only while they have this fingerprint.
pub(crate) fn delta_fingerprint(cfg: &bindery_directory::DirectoryConfig) -> String {
    let servers: Vec<String> = cfg.servers.iter().map(|s| s.to_string()).collect();
    let parts = [servers.join(" "), cfg.starttls.to_string(), cfg.bind_dn.clone(), cfg.search_ous.join("|"), cfg.search_filter.clone()];
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    format!("{:016x}", bindery_store::stable_hash(&parts) as u64)
}

impl Service {
    pub(crate) async fn load_sync_settings(&self, kind: DirectoryKind) -> Result<(SyncSettings, Option<i64>)> {
        Ok(match self.store.get_sync_settings(kind.as_str()).await? {
            Some((json, next)) => (serde_json::from_str(&json).map_err(|e| Error::Internal(format!("stored sync settings: {e}")))?, next),
            None => (SyncSettings::default(), None),
        })
    }

    fn sync_view(settings: SyncSettings, next: Option<i64>, detected: Option<DeltaSupportInfo>) -> SyncSettingsView {
        let (schedule, next_runs) = match Schedule::of(&settings) {
            Ok(Some(s)) => {
                let mut runs = Vec::new();
                let mut t = next.unwrap_or_else(|| s.next_after(now_ms()).unwrap_or(0));
                for _ in 0..5 {
                    runs.push(fmt_ts(t));
                    match s.next_after(t) {
                        Some(n) => t = n,
                        None => break,
                    }
                }
                (s.describe(), runs)
            }
            _ => ("off".to_string(), vec![]),
        };
        SyncSettingsView { settings, schedule, next_runs, detected, live: None }
    }

    pub async fn sync_settings(&self, actor: &Actor, kind: DirectoryKind) -> Result<SyncSettingsView> {
        actor.require_reader()?;
        let (s, next) = self.load_sync_settings(kind).await?;
        let detected = self.detected_delta(kind).await?;
        let mut view = Self::sync_view(s, next, detected);
        view.live = self.live_view(kind, &view.settings).await?;
        Ok(view)
    }

    /// The live stream's state for the Sync card, when it is on.
    async fn live_view(&self, kind: DirectoryKind, settings: &SyncSettings) -> Result<Option<bindery_model::LiveStatus>> {
        Ok(if settings.live { Some(self.live_status_of(kind).await?) } else { None })
    }

    /// The delta method the last Test connection found for the saved
    /// settings (`None` when they were not tested since they changed).
    pub(crate) async fn detected_delta(&self, kind: DirectoryKind) -> Result<Option<DeltaSupportInfo>> {
        let Some(row) = self.store.delta_support(kind.as_str()).await? else { return Ok(None) };
        let stored = match self.load_directory(kind).await {
            Ok(s) => s,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(cfg) = Self::resolve(&stored, &Self::stored_input(&stored.settings)) else { return Ok(None) };
        if delta_fingerprint(&cfg) != row.fingerprint {
            return Ok(None);
        }
        Ok(Some(DeltaSupportInfo {
            method: row.method,
            sees_deletions: row.sees_deletions,
            reason: row.reason,
            server: row.server,
            detected_at: fmt_ts(row.detected_at),
        }))
    }

    /// Validate and save; nothing is saved when any field is wrong.
    pub async fn save_sync_settings(&self, actor: &Actor, kind: DirectoryKind, input: &SyncSettings) -> Result<SyncSettingsView> {
        actor.require_admin()?;
        let mut s = input.clone();
        s.crontab = s.crontab.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut errors = Vec::new();
        let schedule = match Schedule::of(&s) {
            Ok(x) => x,
            Err((field, msg)) => {
                errors.push(bindery_model::FieldError::new(field, msg));
                None
            }
        };
        if !(0..=8760).contains(&s.interval_hours) {
            errors.push(bindery_model::FieldError::new("interval_hours", "must be between 0 (none) and 8760"));
        }
        if !(0..=100).contains(&s.threshold_percent) {
            errors.push(bindery_model::FieldError::new("threshold_percent", "must be between 0 and 100"));
        }
        if s.live && !s.disable_missing {
            errors.push(bindery_model::FieldError::new(
                "live",
                "live deprovisioning disables users: turn on disabling users missing from or disabled in the directory",
            ));
        }
        if !(1..=8760).contains(&s.full_every_hours) {
            errors.push(bindery_model::FieldError::new("full_every_hours", "must be between 1 and 8760"));
        }
        let detected = self.detected_delta(kind).await?;
        if s.mode == SyncMode::Delta {
            match &detected {
                None => errors.push(bindery_model::FieldError::new(
                    "mode",
                    "delta needs a delta method: run Test connection on the saved directory settings first",
                )),
                Some(d) if d.method == "none" => {
                    errors.push(bindery_model::FieldError::new("mode", format!("this directory cannot be read for changes: {}", d.reason)))
                }
                Some(_) => {}
            }
        }
        if s.live {
            match &detected {
                Some(d) if live_method(&d.method) => {}
                Some(d) => errors.push(bindery_model::FieldError::new(
                    "live",
                    format!(
                        "live deprovisioning needs OpenLDAP syncrepl or Active Directory DirSync / USN; Test connection detected {}",
                        d.method
                    ),
                )),
                None => errors.push(bindery_model::FieldError::new(
                    "live",
                    "live deprovisioning needs a delta method (syncrepl, DirSync or USN): run Test connection on the saved directory settings first",
                )),
            }
        }
        let orgs = self.store.organisation_names().await?;
        if let Some(bad) = s.organisation_ids.iter().find(|id| !orgs.iter().any(|o| o.id == **id)) {
            errors.push(bindery_model::FieldError::new("organisation_ids", format!("no organisation with id {bad}")));
        }
        s.organisation_ids.sort_unstable();
        s.organisation_ids.dedup();
        let mut recipients = Vec::new();
        for r in s.recipients.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            match self.store.find_user(&crate::util::username_key(r)).await? {
                Some(u) => recipients.push(u.username),
                None => errors.push(bindery_model::FieldError::new("recipients", format!("no user named {r}"))),
            }
        }
        recipients.dedup();
        s.recipients = recipients;
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let now = now_ms();
        let next = schedule.as_ref().and_then(|sch| sch.next_after(now));
        let json = serde_json::to_string(&s).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.put_sync_settings(kind.as_str(), &json, next, now).await?;
        self.audit(
            actor,
            "directory.sync_settings",
            &format!("directory:{}", kind.as_str()),
            None,
            Some(serde_json::to_value(&s).unwrap_or_default()),
        )
        .await;
        let mut view = Self::sync_view(s, next, detected);
        view.live = self.live_view(kind, &view.settings).await?;
        Ok(view)
    }
}

/// Whether a detected delta method (`syncrepl`, `dirsync`, `usn`) has a
/// live change stream: syncrepl refreshAndPersist on OpenLDAP, change
/// notification with DirSync or USN on Active Directory.
pub(crate) fn live_method(method: &str) -> bool {
    use bindery_directory::delta::DeltaMethod;
    matches!(DeltaMethod::parse(method), DeltaMethod::Syncrepl | DeltaMethod::Dirsync | DeltaMethod::Usn)
}
