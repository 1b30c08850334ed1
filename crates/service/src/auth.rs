//! Logins, sessions, API tokens and lockout.

use std::time::Instant;

use bindery_model::{ApiToken, CreatedApiToken, CurrentUser, Lockout, NewApiToken, UserSource};
use bindery_store::{Grant, GrantCredential, NewLoginEvent, UserRow};

use crate::lockout::{Check, Refusal, Reservation};
use crate::logs::j;
use crate::util::{self, now_ms};
use crate::{Actor, AuthVia, Error, Principal, Result, Secret, Service};

pub const SESSION_COOKIE: &str = "bindery_session";

/// Where a request came from (for lockout and the logs).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// What a successful sign-in issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issue {
    /// A console session (cookie).
    Session,
    /// A short-lived bearer token for the REST API.
    Bearer,
    /// A long-lived API key for the REST API (replaces the previous one).
    ApiKey,
}

pub const BEARER_TOKEN_NAME: &str = "authn/ldap bearer token";
pub const API_KEY_NAME: &str = "authn/ldap API key";

/// A credential issued at sign-in.
#[derive(Debug)]
pub struct Issued {
    pub secret: Secret,
    pub must_change_password: bool,
    pub expires_at: Option<i64>,
}

/// A successful login: the new session's cookie value.
#[derive(Debug)]
pub struct LoginSuccess {
    pub session_token: Secret,
    pub must_change_password: bool,
}

/// A failed login. The reason is for the login log only: callers show the
/// person one generic message whatever it says (security checklist item 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailure {
    pub reason: String,
    /// Whether it counts toward the lockout: a refused password or
    /// account does; a directory that could not be asked (unreachable,
    /// timed out, a server error) or an internal error does not.
    pub counts: bool,
}

impl LoginFailure {
    /// The only thing a failed login ever tells the person trying.
    pub const GENERIC_MESSAGE: &'static str = "Invalid username or password.";
}

fn fail(reason: impl Into<String>) -> LoginFailure {
    LoginFailure { reason: reason.into(), counts: true }
}

/// A password check that passed.
struct Granted {
    user: UserRow,
    /// The username's lockout key, when it has failures to clear.
    clear: Option<String>,
    bearer_minutes: i64,
}

/// A login refused, and whether it counts towards a lockout.
struct Denied {
    failure: LoginFailure,
    counts: bool,
}

impl Denied {
    /// Refused before any password was checked (or after, for a reason
    /// that is not a wrong guess): no lockout count.
    fn quiet(reason: &str) -> Denied {
        Denied { failure: LoginFailure { reason: reason.into(), counts: false }, counts: false }
    }

    fn store(e: bindery_store::Error) -> Denied {
        tracing::error!(error = %e, "store error during login");
        Denied::quiet("internal error")
    }
}

fn principal_of(u: &UserRow, via: AuthVia) -> Principal {
    Principal {
        user_id: u.id,
        username: u.username.clone(),
        name: u.name.clone(),
        role: u.role,
        must_change_password: u.must_change_password,
        via,
    }
}

/// How long a sign-in waits for the attempts in flight that stand between
/// it and the lockout limit (each ends within the directory's timeouts).
const ATTEMPTS_IN_FLIGHT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// How stale a user's last-login and validation times may get. Sign-ins
/// of one user within this time write them once: a script that signs in
/// many times a second would otherwise rewrite the user's row each time
/// (on SQLite, a page of the database log per sign-in).
const USER_TIMES_EVERY_MS: i64 = 60_000;

/// Whether a sign-in of `u` at `now` writes the user's times: unless both
/// (the last login's, and a directory user's validation) are recent.
fn user_times_due(u: &UserRow, now: i64) -> bool {
    let recent = |at: Option<i64>| at.is_some_and(|at| at <= now && now - at < USER_TIMES_EVERY_MS);
    !(recent(u.last_login_at) && (u.source == UserSource::Local || recent(u.validated_at)))
}

pub(crate) fn user_key(username_key: &str) -> String {
    format!("user:{username_key}")
}

fn ip_key(ip: &str) -> String {
    format!("ip:{ip}")
}

/// Whether the client address is in one of the networks exempt from the
/// per-address lockout.
fn exempt(security: &bindery_model::SecuritySettings, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    security.lockout_exempt_networks.iter().filter_map(|n| n.parse::<crate::net::Network>().ok()).any(|n| n.contains(ip))
}

impl Service {
    /// Authenticate a person with a username and password and open a
    /// session. Failures all look the same to the caller and take at least
    /// [`crate::Options::min_failure_delay`].
    pub async fn login(&self, username: &str, password: &str, client: &ClientInfo, method: &str) -> Result<LoginSuccess, LoginFailure> {
        let issued = self.sign_in(username, password, client, method, Issue::Session).await?;
        Ok(LoginSuccess { session_token: issued.secret, must_change_password: issued.must_change_password })
    }

    /// Authenticate and issue a credential: a console session, a short-lived
    /// bearer token, or an API key. One path for all, so the policy, the
    /// lockout, the generic failure and its minimum time are the same.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
        client: &ClientInfo,
        method: &str,
        issue: Issue,
    ) -> Result<Issued, LoginFailure> {
        let started = Instant::now();
        // The attempt runs to its end on a task of its own: a client that
        // hangs up once its guess has reached the directory (the answer to
        // a wrong one is slow, to a right one fast) must not cancel the
        // failure's record, or guesses would count for nothing.
        let attempt = {
            let this = self.clone();
            let (username, password) = (username.to_string(), Secret::new(password));
            let (client, method) = (client.clone(), method.to_string());
            tokio::spawn(async move { this.attempt(&username, password.expose(), &client, &method, issue).await })
        };
        let failure = match attempt.await {
            Ok(Ok(issued)) => return Ok(issued),
            Ok(Err(failure)) => failure,
            Err(e) => {
                tracing::error!(error = %e, "a login attempt failed to complete");
                LoginFailure { reason: "internal error".into(), counts: false }
            }
        };
        let elapsed = started.elapsed();
        if elapsed < self.options.min_failure_delay {
            tokio::time::sleep(self.options.min_failure_delay - elapsed).await;
        }
        Err(failure)
    }

    /// One sign-in, from the lockout check to its record.
    async fn attempt(
        &self,
        username: &str,
        password: &str,
        client: &ClientInfo,
        method: &str,
        issue: Issue,
    ) -> Result<Issued, LoginFailure> {
        let logged_name: String = util::printable(&username.trim().chars().take(128).collect::<String>());
        let (outcome, slot) = self.try_login(username, password, client).await;
        let outcome = match outcome {
            Ok(granted) => self.grant(granted, &logged_name, client, method, issue).await,
            Err(denied) => Err(denied),
        };
        let outcome = match outcome {
            Ok(issued) => {
                if let Some(slot) = slot {
                    slot.release();
                }
                tracing::info!(user = %logged_name, ip = %client.ip, "login succeeded");
                return Ok(issued);
            }
            Err(d) => d,
        };
        // A failure: its lockout counts and the login log's line, in one
        // write; then its slots turn into recorded failures (or are freed).
        let reason = outcome.failure.reason.as_str();
        let counted = slot.filter(|_| outcome.counts);
        let keys: Vec<&str> = counted.as_ref().map(|s| s.keys().iter().map(String::as_str).collect()).unwrap_or_default();
        let line = NewLoginEvent {
            at: now_ms(),
            username: &logged_name,
            ip: &client.ip,
            user_agent: &client.user_agent,
            success: false,
            reason,
            method,
        };
        if let Err(e) = self.store.deny_login(&keys, &line).await {
            tracing::error!(error = %e, "could not record a failed login");
        }
        drop(keys);
        if let Some(slot) = counted {
            slot.record_failure();
        }
        tracing::info!(user = %logged_name, ip = %client.ip, reason = %reason, "login failed");
        Err(LoginFailure { counts: outcome.counts, ..outcome.failure })
    }

    /// Check a login: lockout, then the password (locally or against the
    /// directories). Reads only, apart from what the directory taught us
    /// (a user created at first login, renamed or disabled). Past the
    /// lockout check, the attempt holds a slot on each of its lockout keys
    /// (see [`crate::lockout`]) until the caller resolves it.
    async fn try_login(&self, username: &str, password: &str, client: &ClientInfo) -> (Result<Granted, Denied>, Option<Reservation>) {
        let key = util::username_key(username);
        if key.is_empty() {
            return (Err(Denied::quiet("empty username")), None);
        }
        // An LDAP simple bind with an empty password is an unauthenticated
        // bind that "succeeds" (RFC 4513 §5.1.2): refuse before anything else.
        if password.trim().is_empty() {
            return (Err(Denied::quiet("empty password")), None);
        }
        if key.chars().count() > 256 || password.len() > 1024 {
            return (Err(Denied::quiet("input too long")), None);
        }
        if key.chars().any(char::is_control) {
            return (Err(Denied::quiet("the username contains control characters")), None);
        }
        let security = match self.security_settings().await {
            Ok(s) => s,
            Err(_) => return (Err(Denied::quiet("internal error")), None),
        };
        let since = now_ms() - security.lockout_window_minutes * 60_000;
        let ukey = user_key(&key);
        let ikey = if client.ip.is_empty() || exempt(&security, &client.ip) { String::new() } else { ip_key(&client.ip) };
        let ticket = self.lockouts.begin_read();
        let bindery_store::LoginLookup { user_failures, ip_failures, user } = match self.store.login_lookup(&key, &ukey, &ikey, since).await
        {
            Ok(l) => l,
            Err(e) => return (Err(Denied::store(e)), None),
        };
        let mut checks = vec![Check { key: &ukey, read: user_failures, limit: security.lockout_max_failures }];
        if !ikey.is_empty() {
            checks.push(Check { key: &ikey, read: ip_failures, limit: security.lockout_ip_max_failures });
        }
        let slot = match self.lockouts.reserve_or_wait(ticket, &checks, ATTEMPTS_IN_FLIGHT_PATIENCE).await {
            Ok(slot) => slot,
            Err(Refusal::Locked(0)) => return (Err(Denied::quiet("locked out: too many failures for this username")), None),
            Err(Refusal::Locked(_)) => return (Err(Denied::quiet("locked out: too many failures from this address")), None),
            Err(Refusal::Busy(0)) => return (Err(Denied::quiet("refused: too many sign-ins in progress for this username")), None),
            Err(Refusal::Busy(_)) => return (Err(Denied::quiet("refused: too many sign-ins in progress from this address")), None),
        };

        let checked = match user {
            // Local users authenticate locally, and only locally.
            Some(u) if u.source == UserSource::Local => match &u.password_hash {
                Some(hash) if util::verify_password_async(password, hash).await => {
                    if !u.is_active {
                        Err(fail("account disabled"))
                    } else {
                        Ok(u)
                    }
                }
                _ => Err(fail("wrong password")),
            },
            // Directory users (and unknown names) go to the directories.
            other => self.directory_login(other, username.trim(), password).await,
        };
        let outcome = match checked {
            Ok(user) => Ok(Granted { user, clear: (user_failures > 0).then_some(ukey), bearer_minutes: security.bearer_token_minutes }),
            Err(failure) => Err(Denied { counts: failure.counts, failure }),
        };
        (outcome, Some(slot))
    }

    /// Issue what a checked login asked for, and write the whole login in
    /// one transaction.
    async fn grant(&self, g: Granted, logged_name: &str, client: &ClientInfo, method: &str, issue: Issue) -> Result<Issued, Denied> {
        let u = &g.user;
        if issue != Issue::Session && u.source == UserSource::Local {
            // The /authn/ldap endpoints are for directory users; local
            // users sign in to the console.
            return Err(Denied::quiet("local user: the directory authentication endpoints are for directory users"));
        }
        let now = now_ms();
        let must_change_password = u.must_change_password;
        let (secret, expires_at) = match issue {
            // A new random session on every login: the old cookie (if any)
            // is never promoted, which rules out session fixation.
            Issue::Session => (util::random_token(), None),
            Issue::Bearer => (format!("bdy_{}", util::random_token()), Some(now + g.bearer_minutes * 60_000)),
            Issue::ApiKey => (format!("bdy_{}", util::random_token()), None),
        };
        let token_hash = util::token_hash(&secret);
        let prefix: String = secret.chars().take(10).collect();
        let credential = match issue {
            Issue::Session => GrantCredential::Session { token_hash: &token_hash },
            Issue::Bearer | Issue::ApiKey => GrantCredential::Token {
                name: if issue == Issue::Bearer { BEARER_TOKEN_NAME } else { API_KEY_NAME },
                token_hash: &token_hash,
                prefix: &prefix,
                expires_at,
                // One API key per user from this endpoint: a new one replaces the old.
                replace_same_name: issue == Issue::ApiKey,
            },
        };
        let grant = Grant {
            user_id: u.id,
            username: &u.username,
            now,
            // A directory user: the directory just vouched for the account.
            validated: u.source != UserSource::Local,
            user_times: user_times_due(u, now),
            clear_failures: g.clear.as_deref(),
            credential,
            event: NewLoginEvent {
                at: now,
                username: logged_name,
                ip: &client.ip,
                user_agent: &client.user_agent,
                success: true,
                reason: "",
                method,
            },
        };
        self.store.grant_login(&grant).await.map_err(Denied::store)?;
        Ok(Issued { secret: Secret::new(secret), must_change_password, expires_at })
    }

    /// The principal behind a session cookie, if the session is still valid.
    /// Expired sessions and sessions of disabled users are removed.
    pub async fn session_principal(&self, token: &str) -> Result<Option<Principal>> {
        let hash = util::token_hash(token);
        let Some(s) = self.store.get_session(&hash).await? else {
            return Ok(None);
        };
        let basic = self.basic_settings().await?;
        let now = now_ms();
        let idle_ok = now - s.last_seen_at <= basic.session_idle_minutes * 60_000;
        let absolute_ok = now - s.created_at <= basic.session_absolute_hours * 3_600_000;
        let user = match self.store.get_user(s.user_id).await? {
            Some(u) if idle_ok && absolute_ok && u.is_active => self.revalidate_if_due(u).await?,
            _ => None,
        };
        match user {
            Some(u) => {
                // Write the activity time at most every 30 s.
                if now - s.last_seen_at > 30_000 {
                    self.store.touch_session(&hash, now).await?;
                }
                Ok(Some(principal_of(&u, AuthVia::Session)))
            }
            _ => {
                self.store.delete_session(&hash).await?;
                Ok(None)
            }
        }
    }

    pub async fn logout(&self, token: &str) -> Result<()> {
        self.store.delete_session(&util::token_hash(token)).await?;
        Ok(())
    }

    pub async fn current_user(&self, p: &Principal) -> CurrentUser {
        CurrentUser {
            id: p.user_id,
            username: p.username.clone(),
            name: p.name.clone(),
            role: p.role,
            must_change_password: p.must_change_password,
        }
    }

    /// Change one's own password (also the forced change after a one-time
    /// password). Ends every other session of the user.
    pub async fn change_password(&self, actor: &Actor, current: &str, new: &str, confirm: &str, keep_session: Option<&str>) -> Result<()> {
        let u = self.store.get_user(actor.principal.user_id).await?.ok_or(Error::NotFound("user"))?;
        let Some(hash) = u.password_hash.as_deref().filter(|_| u.is_local()) else {
            return Err(Error::field("current_password", "directory users change their password in the directory"));
        };
        if !util::verify_password_async(current, hash).await {
            return Err(Error::field("current_password", "the current password is not correct"));
        }
        let mut errors = self.password_problems("new_password", new, Some(&u.username)).await?;
        if new != confirm {
            errors.push(bindery_model::FieldError::new("confirm_password", "the two passwords differ"));
        }
        if new == current {
            errors.push(bindery_model::FieldError::new("new_password", "choose a password different from the current one"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let now = now_ms();
        self.store.set_password(u.id, &util::hash_password_async(new).await?, false, now).await?;
        self.store.delete_user_sessions(u.id).await?;
        if let Some(token) = keep_session {
            self.store.insert_session(&util::token_hash(token), u.id, &actor.ip, "", now).await?;
        }
        self.audit(actor, "user.change_password", &format!("user:{}", u.username), None, None).await;
        self.password_changed(&u.username_key);
        Ok(())
    }

    /// What is wrong with a proposed password (empty when nothing).
    pub(crate) async fn password_problems(
        &self,
        field: &str,
        password: &str,
        username: Option<&str>,
    ) -> Result<Vec<bindery_model::FieldError>> {
        let min = self.security_settings().await?.min_password_length;
        let mut errors = Vec::new();
        if (password.chars().count() as i64) < min {
            errors.push(bindery_model::FieldError::new(field, format!("must be at least {min} characters")));
        } else if password.trim().is_empty() {
            errors.push(bindery_model::FieldError::new(field, "must not be blank"));
        } else if password.len() > 1024 {
            errors.push(bindery_model::FieldError::new(field, "must be at most 1024 bytes"));
        } else if username.is_some_and(|u| util::username_key(u) == util::username_key(password)) {
            errors.push(bindery_model::FieldError::new(field, "must not be the username"));
        }
        Ok(errors)
    }

    // ----- API tokens ----------------------------------------------------

    /// The principal behind an API token (`Authorization: Bearer …`).
    pub async fn token_principal(&self, secret: &str) -> Result<Option<Principal>> {
        let Some(t) = self.store.find_api_token(&util::token_hash(secret)).await? else {
            return Ok(None);
        };
        let now = now_ms();
        if t.revoked_at.is_some() || t.expires_at.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        let Some(u) = self.store.get_user(t.user_id).await?.filter(|u| u.is_active) else {
            return Ok(None);
        };
        let Some(u) = self.revalidate_if_due(u).await? else {
            return Ok(None);
        };
        if t.last_used_at.is_none_or(|l| now - l > 30_000) {
            self.store.touch_api_token(t.id, now).await?;
        }
        let mut p = principal_of(&u, AuthVia::ApiToken);
        // A token is issued by an admin for automation; the one-time
        // password rule concerns the console login only.
        p.must_change_password = false;
        Ok(Some(p))
    }

    pub async fn create_api_token(&self, actor: &Actor, input: &NewApiToken) -> Result<CreatedApiToken> {
        actor.require_admin()?;
        let name = input.name.trim();
        let mut errors = Vec::new();
        if name.is_empty() || name.chars().count() > 64 {
            errors.push(bindery_model::FieldError::new("name", "give the token a name of 1 to 64 characters"));
        }
        if let Some(d) = input.expires_in_days {
            if !(1..=3650).contains(&d) {
                errors.push(bindery_model::FieldError::new("expires_in_days", "must be between 1 and 3650 days"));
            }
        }
        let user_id = input.user_id.unwrap_or(actor.principal.user_id);
        let owner = self.store.get_user(user_id).await?;
        if owner.is_none() {
            errors.push(bindery_model::FieldError::new("user_id", "no such user"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let now = now_ms();
        let secret = format!("bdy_{}", util::random_token());
        let prefix: String = secret.chars().take(10).collect();
        let expires_at = input.expires_in_days.map(|d| now + d * 86_400_000);
        let id = self
            .store
            .insert_api_token(user_id, name, &util::token_hash(&secret), &prefix, &actor.principal.username, expires_at, now)
            .await?;
        let row = self.store.get_api_token(id).await?.ok_or(Error::NotFound("token"))?;
        let token = token_dto(&row);
        self.audit(actor, "token.create", &format!("token:{id}"), None, Some(j(&token))).await;
        Ok(CreatedApiToken { token, secret })
    }

    pub async fn list_api_tokens(&self, actor: &Actor) -> Result<Vec<ApiToken>> {
        actor.require_reader()?;
        Ok(self.store.list_api_tokens(None).await?.iter().map(token_dto).collect())
    }

    pub async fn revoke_api_token(&self, actor: &Actor, id: i64) -> Result<()> {
        actor.require_admin()?;
        let before = self.store.get_api_token(id).await?.ok_or(Error::NotFound("token"))?;
        self.store.revoke_api_token(id, now_ms()).await?;
        self.audit(actor, "token.revoke", &format!("token:{id}"), Some(j(&token_dto(&before))), None).await;
        Ok(())
    }

    // ----- lockout -------------------------------------------------------

    /// Usernames and client addresses locked out now, each against its own
    /// limit; addresses in an exempt network are never locked.
    pub async fn list_lockouts(&self, actor: &Actor) -> Result<Vec<Lockout>> {
        actor.require_reader()?;
        Ok(self
            .locked_rows()
            .await?
            .into_iter()
            .map(|r| Lockout { key: r.key, failures: r.failures, last_failure_at: util::fmt_ts(r.last_at) })
            .collect())
    }

    async fn locked_rows(&self) -> Result<Vec<bindery_store::LockoutRow>> {
        let s = self.security_settings().await?;
        let since = now_ms() - s.lockout_window_minutes * 60_000;
        let mut rows = self.store.locked_keys(since, s.lockout_max_failures, s.lockout_ip_max_failures).await?;
        rows.retain(|r| r.key.strip_prefix("ip:").is_none_or(|ip| !exempt(&s, ip)));
        Ok(rows)
    }

    /// Lift a lockout: `user:<name>` or `ip:<address>`.
    pub async fn unlock(&self, actor: &Actor, key: &str) -> Result<()> {
        actor.require_admin()?;
        let key = match key.split_once(':') {
            Some(("user", name)) if !util::username_key(name).is_empty() => user_key(&util::username_key(name)),
            Some(("ip", addr)) if !addr.trim().is_empty() => ip_key(addr.trim()),
            _ => return Err(Error::field("key", "expected user:<name> or ip:<address>")),
        };
        let cleared = self.store.clear_failures(&key).await?;
        self.audit(actor, "lockout.unlock", &key, Some(serde_json::json!({ "failures": cleared })), None).await;
        Ok(())
    }

    /// Every `user:<key>` currently locked out.
    pub(crate) async fn locked_user_keys(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self.locked_rows().await?.into_iter().map(|r| r.key).filter(|k| k.starts_with("user:")).collect())
    }
}

fn token_dto(t: &bindery_store::ApiTokenRow) -> ApiToken {
    ApiToken {
        id: t.id,
        name: t.name.clone(),
        username: t.username.clone(),
        prefix: t.prefix.clone(),
        created_at: util::fmt_ts(t.created_at),
        last_used_at: t.last_used_at.map(util::fmt_ts),
        expires_at: t.expires_at.map(util::fmt_ts),
        revoked: t.revoked_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindery_model::Role;

    fn user(source: UserSource, last_login_at: Option<i64>, validated_at: Option<i64>) -> UserRow {
        UserRow {
            id: 1,
            username: "ann".into(),
            username_key: "ann".into(),
            name: "Ann".into(),
            email: String::new(),
            role: Role::User,
            source,
            is_active: true,
            password_hash: None,
            must_change_password: false,
            external_id: None,
            created_at: 0,
            updated_at: 0,
            last_login_at,
            validated_at,
            dir_disabled: false,
            role_pinned: false,
        }
    }

    #[test]
    fn a_sign_in_writes_the_users_times_unless_both_are_recent() {
        let now = 10_000_000;
        let recent = Some(now - USER_TIMES_EVERY_MS + 1);
        let stale = Some(now - USER_TIMES_EVERY_MS);
        // A directory user: both times recent, or not.
        assert!(!user_times_due(&user(UserSource::Ldap, recent, recent), now));
        assert!(user_times_due(&user(UserSource::Ldap, recent, stale), now), "the validation is due");
        assert!(user_times_due(&user(UserSource::Ldap, stale, recent), now), "the last login is due");
        assert!(user_times_due(&user(UserSource::Ldap, None, recent), now), "never signed in");
        assert!(user_times_due(&user(UserSource::Ldap, recent, None), now), "never validated");
        // A local user has no validation time.
        assert!(!user_times_due(&user(UserSource::Local, recent, None), now));
        assert!(user_times_due(&user(UserSource::Local, stale, None), now));
        // A time in the future (a clock set back) is not recent.
        assert!(user_times_due(&user(UserSource::Ldap, Some(now + 5), Some(now + 5)), now));
    }
}
