//! Directory settings ("LDAP", "LDAP HA"): stored with encrypted secrets,
//! validated field by field, tested before saving.

use bindery_directory::config::validate;
use bindery_directory::{DirectoryConfig, Secret as DirSecret};
use bindery_model::{DirectoryInput, DirectoryKind, DirectorySettings, FieldError, LoginTestReport, ProbeReport};
use bindery_store::DirectoryRow;

use crate::logs::j;
use crate::util::{fmt_ts, now_ms};
use crate::{Actor, Error, Result, Service};

/// A stored configuration with its decrypted secrets.
pub(crate) struct Stored {
    pub(crate) settings: DirectorySettings,
    bind_password: Option<DirSecret>,
    client_key: Option<DirSecret>,
    /// Changes whenever the stored configuration does (0: never saved).
    pub(crate) version: i64,
}

fn ctx(kind: DirectoryKind, what: &str) -> String {
    format!("directory/{}/{what}", kind.as_str())
}

fn same_servers(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v.iter().map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
        v.sort();
        v.dedup();
        v
    };
    let (a, b) = (norm(a), norm(b));
    // Every server the secret would now go to received it before.
    b.iter().all(|s| a.contains(s))
}

/// Why a stored bind password may not go out with `input`, if it may not:
/// to a server it never went to, or over a connection weaker than, or
/// trusting other certificates than, the one it was saved for.
fn stored_secret_refused(stored: &DirectorySettings, input: &DirectoryInput) -> Option<&'static str> {
    let pem = |s: &str| s.split_whitespace().collect::<String>();
    if !same_servers(&stored.server_uris, &input.server_uris) {
        Some("the server URIs changed")
    } else if stored.starttls && !input.starttls {
        Some("StartTLS was turned off")
    } else if !stored.skip_verify && input.skip_verify {
        Some("certificate verification was turned off")
    } else if pem(&stored.ca_pem) != pem(&input.ca_pem) {
        Some("the CA certificate changed")
    } else if pem(&stored.client_cert_pem) != pem(&input.client_cert_pem) {
        Some("the client certificate changed")
    } else {
        None
    }
}

impl Service {
    pub(crate) async fn load_directory(&self, kind: DirectoryKind) -> Result<Stored> {
        let Some(row) = self.store.get_directory(kind.as_str()).await? else {
            return Ok(Stored { settings: DirectorySettings::defaults(kind), bind_password: None, client_key: None, version: 0 });
        };
        let mut settings: DirectorySettings =
            serde_json::from_str(&row.settings_json).map_err(|e| Error::Internal(format!("stored directory settings unreadable: {e}")))?;
        let key = &self.options.secret_key;
        let bind_password =
            row.bind_password_enc.as_deref().map(|c| key.decrypt(&ctx(kind, "bind_password"), c)).transpose()?.map(DirSecret::new);
        let client_key = row.client_key_enc.as_deref().map(|c| key.decrypt(&ctx(kind, "client_key"), c)).transpose()?.map(DirSecret::new);
        settings.kind = kind;
        settings.bind_password_set = bind_password.is_some();
        settings.client_key_set = client_key.is_some();
        settings.updated_at = Some(fmt_ts(row.updated_at));
        Ok(Stored { settings, bind_password, client_key, version: row.updated_at })
    }

    pub async fn list_directories(&self, actor: &Actor) -> Result<Vec<DirectorySettings>> {
        actor.require_reader()?;
        let mut out = Vec::new();
        for kind in [DirectoryKind::Ldap, DirectoryKind::LdapHa] {
            out.push(self.load_directory(kind).await?.settings);
        }
        Ok(out)
    }

    pub async fn get_directory(&self, actor: &Actor, kind: DirectoryKind) -> Result<DirectorySettings> {
        actor.require_reader()?;
        Ok(self.load_directory(kind).await?.settings)
    }

    /// Apply the write-only secret rules and validate. A stored bind
    /// password is reused only if every server it would go to already had
    /// it, over a connection no weaker than before: changing the server
    /// URIs, turning StartTLS off, turning certificate verification off, or
    /// changing the CA or the client certificate requires re-entering it
    /// (for saving and for testing unsaved values alike).
    pub(crate) fn resolve(stored: &Stored, input: &DirectoryInput) -> Result<DirectoryConfig> {
        let servers_kept = same_servers(&stored.settings.server_uris, &input.server_uris);
        let refused = stored_secret_refused(&stored.settings, input);
        let mut errors: Vec<FieldError> = Vec::new();
        let bind_password = match input.bind_password.as_deref() {
            Some(p) if !p.is_empty() => DirSecret::new(p),
            _ => match (&stored.bind_password, refused) {
                (Some(p), None) => p.clone(),
                (Some(_), Some(why)) => {
                    errors.push(FieldError::new(
                        "bind_password",
                        format!(
                            "re-enter the bind password: {why}, and a stored password is never sent to a new host or over a weaker connection"
                        ),
                    ));
                    DirSecret::new("x")
                }
                (None, _) => DirSecret::default(),
            },
        };
        let client_key = match input.client_key_pem.as_deref() {
            Some(k) if !k.trim().is_empty() => DirSecret::new(k),
            _ if input.client_cert_pem.trim().is_empty() => DirSecret::default(),
            _ => match &stored.client_key {
                Some(k) if servers_kept => k.clone(),
                Some(_) => {
                    errors.push(FieldError::new("client_key_pem", "re-enter the client key: the server URIs changed"));
                    DirSecret::default()
                }
                None => DirSecret::default(),
            },
        };
        match validate(input, bind_password, client_key) {
            Ok(cfg) if errors.is_empty() => Ok(cfg),
            Ok(_) => Err(Error::Invalid(errors)),
            Err(mut more) => {
                more.retain(|e| !errors.iter().any(|x| x.field == e.field));
                errors.extend(more);
                Err(Error::Invalid(errors))
            }
        }
    }

    pub async fn save_directory(&self, actor: &Actor, kind: DirectoryKind, input: &DirectoryInput) -> Result<DirectorySettings> {
        actor.require_admin()?;
        let stored = self.load_directory(kind).await?;
        self.check_mapped_organisations(input).await?;
        let cfg = Self::resolve(&stored, input)?;
        let now = now_ms();
        let settings = DirectorySettings {
            kind,
            enabled: input.enabled,
            server_uris: cfg.servers.iter().map(|s| s.to_string()).collect(),
            starttls: cfg.starttls,
            bind_dn: cfg.bind_dn.clone(),
            bind_password_set: !cfg.bind_password.is_empty(),
            search_ous: cfg.search_ous.join("|"),
            search_filter: cfg.search_filter.clone(),
            attr_map: input.attr_map.trim().to_string(),
            group_mode: cfg.group_mode,
            group_base: cfg.group_base.join("|"),
            group_filter: cfg.group_filter.clone(),
            nested_groups: cfg.nested_groups,
            group_mappings: cfg.group_mappings.clone(),
            connect_timeout_secs: input.connect_timeout_secs,
            op_timeout_secs: input.op_timeout_secs,
            page_size: input.page_size,
            dn_cache_secs: input.dn_cache_secs,
            ca_pem: cfg.ca_pem.trim().to_string(),
            client_cert_pem: cfg.client_cert_pem.trim().to_string(),
            client_key_set: !cfg.client_key_pem.is_empty(),
            skip_verify: cfg.skip_verify,
            updated_at: Some(fmt_ts(now)),
        };
        let key = &self.options.secret_key;
        let row = DirectoryRow {
            kind: kind.as_str().into(),
            settings_json: serde_json::to_string(&settings).map_err(|e| Error::Internal(e.to_string()))?,
            bind_password_enc: (!cfg.bind_password.is_empty())
                .then(|| key.encrypt(&ctx(kind, "bind_password"), cfg.bind_password.expose()))
                .transpose()?,
            client_key_enc: (!cfg.client_key_pem.is_empty())
                .then(|| key.encrypt(&ctx(kind, "client_key"), cfg.client_key_pem.expose()))
                .transpose()?,
            updated_at: now,
        };
        self.store.put_directory(&row).await?;
        // New settings, new live state: the user DN cache and the pooled
        // connections of the old settings are dropped, and so are the delta
        // cookies (the next delta run starts from a full enumeration).
        self.forget_gateway(kind);
        self.store.clear_delta_cookies(kind.as_str()).await?;
        if settings.skip_verify {
            tracing::warn!(directory = kind.as_str(), actor = %actor.principal.username, "TLS certificate verification switched OFF for this directory");
        }
        self.audit(actor, "directory.update", &format!("directory:{}", kind.as_str()), Some(j(&stored.settings)), Some(j(&settings))).await;
        Ok(settings)
    }

    /// Every organisation a group mapping names must exist.
    async fn check_mapped_organisations(&self, input: &DirectoryInput) -> Result<()> {
        let known: Vec<String> = self.store.organisation_names().await?.into_iter().map(|o| o.name.to_lowercase()).collect();
        for (i, m) in input.group_mappings.iter().enumerate() {
            if let Some(o) = m.organisations.iter().find(|o| !known.contains(&o.to_lowercase())) {
                return Err(Error::field("group_mappings", format!("mapping {}: no organisation named {o:?}", i + 1)));
            }
        }
        Ok(())
    }

    pub async fn delete_directory(&self, actor: &Actor, kind: DirectoryKind) -> Result<()> {
        actor.require_admin()?;
        let before = self.load_directory(kind).await?.settings;
        if !self.store.delete_directory(kind.as_str()).await? {
            return Err(Error::NotFound("directory configuration"));
        }
        self.forget_gateway(kind);
        self.store.clear_delta_cookies(kind.as_str()).await?;
        self.audit(actor, "directory.delete", &format!("directory:{}", kind.as_str()), Some(j(&before)), None).await;
        Ok(())
    }

    /// The stored configuration as an input (for testing what is saved).
    pub(crate) fn stored_input(s: &DirectorySettings) -> DirectoryInput {
        DirectoryInput {
            enabled: s.enabled,
            server_uris: s.server_uris.clone(),
            starttls: s.starttls,
            bind_dn: s.bind_dn.clone(),
            bind_password: None,
            search_ous: s.search_ous.clone(),
            search_filter: s.search_filter.clone(),
            attr_map: s.attr_map.clone(),
            group_mode: s.group_mode,
            group_base: s.group_base.clone(),
            group_filter: s.group_filter.clone(),
            nested_groups: s.nested_groups,
            group_mappings: s.group_mappings.clone(),
            connect_timeout_secs: s.connect_timeout_secs,
            op_timeout_secs: s.op_timeout_secs,
            page_size: s.page_size,
            dn_cache_secs: s.dn_cache_secs,
            ca_pem: s.ca_pem.clone(),
            client_cert_pem: s.client_cert_pem.clone(),
            client_key_pem: None,
            skip_verify: s.skip_verify,
        }
    }

    async fn config_for_test(&self, kind: DirectoryKind, input: Option<&DirectoryInput>) -> Result<(DirectoryConfig, Vec<String>)> {
        let stored = self.load_directory(kind).await?;
        let input = match input {
            Some(i) => i.clone(),
            None => Self::stored_input(&stored.settings),
        };
        let cfg = Self::resolve(&stored, &input)?;
        let raw: Vec<String> = input.server_uris.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        Ok((cfg, raw))
    }

    /// "Test connection" on the given (unsaved) form values, or on the
    /// stored configuration when `input` is `None`.
    pub async fn test_directory_connection(
        &self,
        actor: &Actor,
        kind: DirectoryKind,
        input: Option<&DirectoryInput>,
    ) -> Result<ProbeReport> {
        actor.require_admin()?;
        let outcome = match self.config_for_test(kind, input).await {
            Ok((cfg, raw)) => {
                let report = bindery_directory::probe::test_connection(&cfg, &raw).await;
                // Remembered for the Sync settings, for as long as these
                // are the saved settings (the fingerprint says which).
                if let Some(d) = &report.delta {
                    let row = bindery_store::DeltaSupportRow {
                        fingerprint: crate::sync::delta_fingerprint(&cfg),
                        method: d.method.clone(),
                        sees_deletions: d.sees_deletions,
                        reason: d.reason.clone(),
                        server: d.server.clone(),
                        detected_at: now_ms(),
                    };
                    // What the account may read changed under the same
                    // settings (a right given or taken): the cookies were
                    // read another way, so the next run is a full one.
                    if let Some(old) = self.store.delta_support(kind.as_str()).await? {
                        if old.fingerprint == row.fingerprint && (old.method != row.method || old.sees_deletions != row.sees_deletions) {
                            self.store.clear_delta_cookies(kind.as_str()).await?;
                        }
                    }
                    self.store.put_delta_support(kind.as_str(), &row).await?;
                }
                Ok(report)
            }
            Err(e) => Err(e),
        };
        let result = match &outcome {
            Ok(r) => serde_json::json!({
                "ok": r.ok,
                "servers": r.servers.iter().map(|s| serde_json::json!({
                    "uri": s.uri,
                    "ok": s.ok,
                    "failed_step": s.steps.iter().find(|st| !st.ok).map(|st| format!("{}: {}", st.step, st.detail)),
                })).collect::<Vec<_>>(),
                "user_count": r.user_count,
                "delta": r.delta.as_ref().map(|d| d.method.clone()),
            }),
            Err(e) => refused(e),
        };
        self.audit_test(actor, "directory.test_connection", kind, input.is_some(), result).await;
        outcome
    }

    /// An operation-log entry for a test: who (the actor), which directory,
    /// on saved or unsaved values, and the result. Never a password.
    async fn audit_test(&self, actor: &Actor, action: &str, kind: DirectoryKind, unsaved: bool, mut result: serde_json::Value) {
        if let Some(o) = result.as_object_mut() {
            o.insert("values".into(), serde_json::json!(if unsaved { "unsaved form" } else { "saved" }));
        }
        self.audit(actor, action, &format!("directory:{}", kind.as_str()), None, Some(result)).await;
    }

    /// "Fetch certificate": the chain each server presents (no bind; nothing
    /// is trusted). The admin may then trust a CA of it.
    pub async fn fetch_directory_certificates(
        &self,
        actor: &Actor,
        kind: DirectoryKind,
        input: Option<&DirectoryInput>,
    ) -> Result<Vec<bindery_model::ServerCertificates>> {
        actor.require_admin()?;
        let outcome = self.fetch_certificates_inner(kind, input).await;
        let result = match &outcome {
            Ok(servers) => serde_json::json!({
                "ok": servers.iter().all(|s| s.error.is_none()),
                "servers": servers.iter().map(|s| serde_json::json!({
                    "uri": s.uri,
                    "certificates": s.certificates.iter().map(|c| &c.sha256).collect::<Vec<_>>(),
                    "error": s.error,
                })).collect::<Vec<_>>(),
            }),
            Err(e) => refused(e),
        };
        self.audit_test(actor, "directory.fetch_certificate", kind, input.is_some(), result).await;
        outcome
    }

    async fn fetch_certificates_inner(
        &self,
        kind: DirectoryKind,
        input: Option<&DirectoryInput>,
    ) -> Result<Vec<bindery_model::ServerCertificates>> {
        let stored = self.load_directory(kind).await?;
        let mut input = input.cloned().unwrap_or_else(|| Self::stored_input(&stored.settings));
        // Only the handshake is needed: let an unset password not stop it.
        if input.bind_password.as_deref().is_none_or(str::is_empty) {
            input.bind_password = Some("unused".into());
        }
        let cfg = Self::resolve(
            &Stored {
                settings: stored.settings.clone(),
                bind_password: None,
                client_key: stored.client_key.clone(),
                version: stored.version,
            },
            &input,
        )?;
        let mut out = Vec::new();
        for server in &cfg.servers {
            let r = bindery_directory::conn::fetch_certificates(server, &cfg).await;
            out.push(match r {
                Ok(certificates) => bindery_model::ServerCertificates { uri: server.to_string(), certificates, error: None },
                Err(f) => bindery_model::ServerCertificates { uri: server.to_string(), certificates: vec![], error: Some(f.message) },
            });
        }
        Ok(out)
    }

    /// "Test login": never counts toward lockout, never uses the service
    /// account's password as the user's.
    pub async fn test_directory_login(
        &self,
        actor: &Actor,
        kind: DirectoryKind,
        input: Option<&DirectoryInput>,
        username: &str,
        password: Option<&str>,
    ) -> Result<LoginTestReport> {
        actor.require_admin()?;
        if username.trim().is_empty() {
            return Err(Error::field("username", "enter the username to test"));
        }
        if username.chars().any(char::is_control) {
            return Err(Error::field("username", "must not contain control characters (tab, line break, …)"));
        }
        let (cfg, _) = match self.config_for_test(kind, input).await {
            Ok(c) => c,
            Err(e) => {
                let mut result = refused(&e);
                result["username"] = serde_json::json!(username);
                self.audit_test(actor, "directory.test_login", kind, input.is_some(), result).await;
                return Err(e);
            }
        };
        let mut report = bindery_directory::authn::test_login(&cfg, username.trim(), password).await;
        self.judge_test_login(kind, &cfg, &mut report, password.is_some()).await?;
        let result = serde_json::json!({ "username": username, "allowed": report.allowed, "verdict": report.verdict });
        self.audit_test(actor, "directory.test_login", kind, input.is_some(), result).await;
        Ok(report)
    }

    /// *Test login*'s verdict is the one access verdict, with the one
    /// identity rule run on what the directory answered (nothing applied):
    /// what it says is what signing in would do.
    async fn judge_test_login(
        &self,
        kind: DirectoryKind,
        cfg: &bindery_directory::DirectoryConfig,
        report: &mut bindery_model::LoginTestReport,
        with_password: bool,
    ) -> Result<()> {
        use crate::identity::{self, AccessFacts, Account, Directory, Entry, Password};
        use crate::lifecycle::{mapped_access, Holding};
        let (Some(server), Some(dn), Some(user), Some(uid)) =
            (report.server.clone(), report.dn.clone(), report.user.clone(), report.external_id.clone())
        else {
            // No server reached, or the lookup failed: the directory's own words stand.
            return Ok(());
        };
        let orgs = self.store.organisation_names().await?;
        let mapped = mapped_access(cfg, &user.groups, &orgs);
        let key = crate::util::username_key(&user.username);
        let (linked, holder) = self.linked_and_holder(&uid, &key, None, mapped.is_some()).await?;
        let mut policy = identity::Policy { source: kind.source(), disable: true, create: true, ..Default::default() };
        if linked.is_none() && holder.is_none() {
            policy.create = !self.security_settings().await?.only_imported_users;
        }
        let state = report.account_state;
        let email = user.email.trim();
        let problem = if user.username.trim().is_empty() { "the entry has no value for the mapped username attribute" } else { "" };
        let entry = Entry {
            external_id: &uid,
            username: &user.username,
            username_key: &key,
            name: &user.name,
            email: if crate::accounts::email_problem(email).is_none() { email } else { "" },
            state,
            problem,
        };
        let change = identity::reconcile(
            Some(&entry),
            linked.as_ref().map(Holding::held).as_ref(),
            holder.as_ref().map(Holding::held).as_ref(),
            &policy,
            mapped.as_ref(),
        );
        let account_user = linked.as_ref().or(holder.as_ref()).map(|h| &h.user);
        let password = match report.bind.as_str() {
            "ok" => Password::Accepted,
            _ if !with_password => Password::NotChecked,
            other => Password::Refused(other),
        };
        let server = format!("{} — {server}", kind.label());
        let verdict = identity::access_verdict(&AccessFacts {
            account: match (&change, account_user) {
                (bindery_store::Change::Create { .. }, _) => Some(Account::WouldCreate),
                (_, Some(u)) => Some(Account::User(u)),
                (_, None) => None,
            },
            locked: None,
            directory: Directory::Answered { server: &server, dn: Some(&dn) },
            state: Some(state),
            password,
            identity: Some(&change),
            mapped: mapped.as_ref(),
            role_pinned: account_user.is_some_and(|u| u.role_pinned),
        });
        report.allowed = with_password && verdict.allowed();
        let name = if user.username.is_empty() { dn.clone() } else { user.username.clone() };
        report.verdict = if !with_password && verdict.allowed() {
            format!("{name} resolves to {dn} (lookup only, password not checked).")
        } else if report.allowed {
            format!("Would be let in as {}.", account_user.map(|u| u.username.as_str()).unwrap_or(&name))
        } else {
            let sentence = verdict.sentence(&name);
            format!("Would be refused: {}", sentence.split_once(" — ").map(|(_, r)| r).unwrap_or(&sentence))
        };
        let pinned = account_user.is_some_and(|u| u.role_pinned);
        if verdict.allowed() {
            report.verdict.push_str(&match (&mapped, pinned) {
                (_, true) => format!(" Role {} (pinned: managed in Bindery).", account_user.map(|u| u.role.label()).unwrap_or_default()),
                (None, _) if account_user.is_none() => {
                    " No group mappings: a new user gets role User and the default organisation.".to_string()
                }
                (None, _) => " No group mappings: role and organisations are managed in Bindery.".to_string(),
                (Some(m), _) if m.matched => {
                    let names: Vec<&str> = orgs.iter().filter(|o| m.organisations.contains(&o.id)).map(|o| o.name.as_str()).collect();
                    format!(
                        " Group mapping: role {}, organisations {}.",
                        m.role.label(),
                        if names.is_empty() { "(default)".to_string() } else { names.join(", ") }
                    )
                }
                (Some(_), _) => " No group mapping matches: role User, mapped organisations removed.".to_string(),
            });
        }
        report.mapped_role = mapped.as_ref().filter(|m| m.matched).map(|m| m.role);
        report.local_user = account_user.map(|u| u.username.clone()).or_else(|| (!user.username.is_empty()).then(|| user.username.clone()));
        report.facts =
            verdict.facts.into_iter().map(|f| bindery_model::AccessFact { label: f.label.to_string(), value: f.value, ok: f.ok }).collect();
        Ok(())
    }
}

/// The result of a test that could not start (invalid values, a stored
/// password that may not be reused): the error names fields, never values.
fn refused(e: &Error) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": e.to_string() })
}
