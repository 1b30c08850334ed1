//! A checked directory configuration.

use std::time::Duration;

use bindery_model::{DirectoryInput, FieldError, GroupMapping, GroupMode};

use crate::conn::ServerUri;
use crate::dn;

/// A secret (bind password, private key) that never shows in `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(<empty>)" } else { "Secret(<redacted>)" })
    }
}

/// Bindery field → directory attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttrMap {
    pub username: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub is_active: Option<String>,
    pub groups: Option<String>,
    pub phone: Option<String>,
    pub comment: Option<String>,
}

impl AttrMap {
    pub const KEYS: [&'static str; 7] = ["name", "username", "email", "is_active", "groups", "phone", "comment"];

    pub fn parse(json: &str) -> Result<AttrMap, String> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("is not valid JSON: {e}"))?;
        let obj = v.as_object().ok_or("must be a JSON object such as {\"username\":\"uid\"}")?;
        let mut m = AttrMap::default();
        for (k, v) in obj {
            let attr =
                v.as_str().map(str::trim).filter(|a| !a.is_empty()).ok_or(format!("the value of {k:?} must be an attribute name"))?;
            if !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.') {
                return Err(format!("{attr:?} is not an attribute name"));
            }
            let name = attr.to_string();
            let attr = Some(name.clone());
            match k.as_str() {
                "username" => m.username = name,
                "name" => m.name = attr,
                "email" => m.email = attr,
                "is_active" => m.is_active = attr,
                "groups" => m.groups = attr,
                "phone" => m.phone = attr,
                "comment" => m.comment = attr,
                other => return Err(format!("unknown key {other:?}; allowed: {}", Self::KEYS.join(", "))),
            }
        }
        if m.username.is_empty() {
            return Err("must map \"username\" (e.g. {\"username\":\"uid\"})".into());
        }
        Ok(m)
    }

    /// Every directory attribute the map reads.
    pub fn attributes(&self) -> Vec<String> {
        let mut v = vec![self.username.clone()];
        for a in [&self.name, &self.email, &self.is_active, &self.groups, &self.phone, &self.comment].into_iter().flatten() {
            if !v.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                v.push(a.clone());
            }
        }
        v
    }
}

#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    pub servers: Vec<ServerUri>,
    pub starttls: bool,
    pub bind_dn: String,
    pub bind_password: Secret,
    pub search_ous: Vec<String>,
    pub search_filter: String,
    pub attr_map: AttrMap,
    pub group_mode: GroupMode,
    pub group_base: Vec<String>,
    pub group_filter: String,
    pub nested_groups: bool,
    pub group_mappings: Vec<GroupMapping>,
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    pub page_size: i32,
    /// Hard stop for a paged search that never ends (a server that keeps
    /// returning a cookie): at most this many pages per search OU, then
    /// the result is reported incomplete. [`crate::probe::MAX_PAGES`]
    /// unless the embedding service (or a test) says otherwise.
    pub max_pages: usize,
    /// How many pages of an enumeration are stored at once (at least one):
    /// the embedding service raises it where its database takes writers
    /// side by side (PostgreSQL).
    pub stores_at_once: usize,
    pub dn_cache: Duration,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: Secret,
    pub skip_verify: bool,
}

fn range(errors: &mut Vec<FieldError>, field: &str, v: i64, lo: i64, hi: i64) {
    if !(lo..=hi).contains(&v) {
        errors.push(FieldError::new(field, format!("must be between {lo} and {hi}")));
    }
}

/// `ou=a,dc=x|ou=b,dc=x` → checked list.
pub fn split_dns(field: &str, s: &str, errors: &mut Vec<FieldError>) -> Vec<String> {
    let mut out = Vec::new();
    for part in s.split('|').map(str::trim).filter(|p| !p.is_empty()) {
        match dn::check(part) {
            Ok(()) => out.push(part.to_string()),
            Err(e) => errors.push(FieldError::new(field, format!("{part:?} is not a valid DN: it {e}"))),
        }
    }
    out
}

/// Check an administrator's input. `bind_password` and `client_key` are the
/// effective secrets (the new ones, or the stored ones the caller kept).
pub fn validate(input: &DirectoryInput, bind_password: Secret, client_key: Secret) -> Result<DirectoryConfig, Vec<FieldError>> {
    let mut errors = Vec::new();
    let uris: Vec<&str> = input.server_uris.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    let mut servers = Vec::new();
    if uris.is_empty() {
        errors.push(FieldError::new("server_uris", "enter at least one server, e.g. ldap://ldap.example.com:389"));
    } else if uris.len() > 3 {
        errors.push(FieldError::new("server_uris", "at most 3 servers per directory"));
    }
    for u in &uris {
        match ServerUri::parse(u) {
            Ok(s) => servers.push(s),
            Err(e) => errors.push(FieldError::new("server_uris", format!("{u:?}: {e}"))),
        }
    }
    if input.starttls && servers.iter().any(|s| s.ldaps) {
        errors.push(FieldError::new("starttls", "StartTLS upgrades ldap:// connections; ldaps:// is already TLS"));
    }
    let bind_dn = input.bind_dn.trim().to_string();
    if bind_dn.is_empty() {
        errors.push(FieldError::new("bind_dn", "enter the service account's DN, e.g. cn=bindery,ou=services,dc=example,dc=com"));
    } else if let Err(e) = dn::check(&bind_dn) {
        errors.push(FieldError::new("bind_dn", format!("is not a valid DN: it {e}")));
    }
    if bind_password.is_empty() && !bind_dn.is_empty() {
        errors.push(FieldError::new("bind_password", "enter the service account's password"));
    }
    let search_ous = split_dns("search_ous", &input.search_ous, &mut errors);
    if search_ous.is_empty() && !errors.iter().any(|e| e.field == "search_ous") {
        errors.push(FieldError::new("search_ous", "enter at least one base DN (several separated by |)"));
    }
    let filter = input.search_filter.trim().to_string();
    if !filter.contains("%(user)s") {
        errors.push(FieldError::new("search_filter", "must contain %(user)s where the username goes, e.g. (uid=%(user)s)"));
    } else if ldap3::parse_filter(crate::user_filter(&filter, "x")).is_err() {
        errors.push(FieldError::new("search_filter", "is not a valid LDAP filter (RFC 4515); check the parentheses"));
    }
    let attr_map = match AttrMap::parse(&input.attr_map) {
        Ok(m) => m,
        Err(e) => {
            errors.push(FieldError::new("attr_map", e));
            AttrMap::default()
        }
    };
    let group_base = split_dns("group_base", &input.group_base, &mut errors);
    let group_filter = input.group_filter.trim().to_string();
    if input.group_mode == GroupMode::Search {
        if !group_filter.contains("{0}") && !group_filter.contains("{1}") {
            errors.push(FieldError::new("group_filter", "must contain {0} (the user's DN) or {1} (the username), e.g. (member={0})"));
        } else if ldap3::parse_filter(group_filter.replace("{0}", "x").replace("{1}", "x")).is_err() {
            errors.push(FieldError::new("group_filter", "is not a valid LDAP filter (RFC 4515)"));
        }
    }
    for (i, m) in input.group_mappings.iter().enumerate() {
        if let Err(e) = dn::check(&m.group_dn) {
            errors.push(FieldError::new("group_mappings", format!("mapping {}: {:?} is not a valid DN: it {e}", i + 1, m.group_dn)));
        }
    }
    range(&mut errors, "connect_timeout_secs", input.connect_timeout_secs, 1, 60);
    range(&mut errors, "op_timeout_secs", input.op_timeout_secs, 1, 300);
    range(&mut errors, "page_size", input.page_size, 1, 5000);
    range(&mut errors, "dn_cache_secs", input.dn_cache_secs, 0, 86_400);
    if !input.ca_pem.trim().is_empty() {
        if let Err(e) = crate::conn::parse_certs(&input.ca_pem) {
            errors.push(FieldError::new("ca_pem", e));
        }
    }
    let has_cert = !input.client_cert_pem.trim().is_empty();
    if has_cert {
        if let Err(e) = crate::conn::parse_certs(&input.client_cert_pem) {
            errors.push(FieldError::new("client_cert_pem", e));
        }
    }
    if has_cert == client_key.is_empty() {
        errors.push(FieldError::new("client_key_pem", "a client certificate needs its private key, and a key needs its certificate"));
    } else if !client_key.is_empty() {
        if let Err(e) = crate::conn::parse_key(client_key.expose()) {
            errors.push(FieldError::new("client_key_pem", e));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(DirectoryConfig {
        servers,
        starttls: input.starttls,
        bind_dn,
        bind_password,
        search_ous,
        search_filter: filter,
        attr_map,
        group_mode: input.group_mode,
        group_base,
        group_filter,
        nested_groups: input.nested_groups,
        group_mappings: input.group_mappings.clone(),
        connect_timeout: Duration::from_secs(input.connect_timeout_secs as u64),
        op_timeout: Duration::from_secs(input.op_timeout_secs as u64),
        page_size: input.page_size as i32,
        max_pages: crate::probe::MAX_PAGES,
        stores_at_once: 1,
        dn_cache: Duration::from_secs(input.dn_cache_secs as u64),
        ca_pem: input.ca_pem.clone(),
        client_cert_pem: input.client_cert_pem.clone(),
        client_key_pem: client_key,
        skip_verify: input.skip_verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn input() -> DirectoryInput {
        DirectoryInput {
            enabled: true,
            server_uris: vec!["ldap://127.0.0.1:389".into()],
            starttls: false,
            bind_dn: "cn=bindery,dc=example,dc=com".into(),
            bind_password: None,
            search_ous: "ou=people,dc=example,dc=com|ou=tech,dc=example,dc=com".into(),
            search_filter: "(uid=%(user)s)".into(),
            attr_map: r#"{"username":"uid","name":"cn","email":"mail","groups":"memberOf"}"#.into(),
            group_mode: GroupMode::Attribute,
            group_base: String::new(),
            group_filter: "(member={0})".into(),
            nested_groups: false,
            group_mappings: vec![],
            connect_timeout_secs: 5,
            op_timeout_secs: 10,
            page_size: 1000,
            dn_cache_secs: 300,
            ca_pem: String::new(),
            client_cert_pem: String::new(),
            client_key_pem: None,
            skip_verify: false,
        }
    }

    fn fields(input: &DirectoryInput) -> Vec<String> {
        match validate(input, Secret::new("pw"), Secret::default()) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn a_good_form_validates() {
        let c = validate(&input(), Secret::new("pw"), Secret::default()).unwrap();
        assert_eq!(c.search_ous.len(), 2);
        assert_eq!(c.attr_map.attributes(), vec!["uid", "cn", "mail", "memberOf"]);
        assert!(!format!("{c:?}").contains("\"pw\""));
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut i = input();
        i.server_uris = vec!["http://x".into()];
        i.bind_dn = "not a dn".into();
        i.search_ous = "dc=,x".into();
        i.search_filter = "(uid=jdoe)".into();
        i.attr_map = r#"{"name":"cn"}"#.into();
        i.connect_timeout_secs = 0;
        i.page_size = 6000;
        i.ca_pem = "garbage".into();
        let f = fields(&i);
        for want in ["server_uris", "bind_dn", "search_ous", "search_filter", "attr_map", "connect_timeout_secs", "page_size", "ca_pem"] {
            assert!(f.contains(&want.to_string()), "{want} not in {f:?}");
        }
    }

    #[test]
    fn filters_and_maps() {
        let mut i = input();
        i.search_filter = "(&(objectClass=person)(uid=%(user)s)".into();
        assert_eq!(fields(&i), vec!["search_filter"]);
        i = input();
        i.attr_map = r#"{"username":"uid","colour":"x"}"#.into();
        assert_eq!(fields(&i), vec!["attr_map"]);
        i = input();
        i.starttls = true;
        i.server_uris = vec!["ldaps://h:636".into()];
        assert_eq!(fields(&i), vec!["starttls"]);
        i = input();
        i.server_uris = vec!["ldap://a".into(), "ldap://b".into(), "ldap://c".into(), "ldap://d".into()];
        assert_eq!(fields(&i), vec!["server_uris"]);
        i = input();
        i.client_cert_pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----".into();
        assert!(fields(&i).contains(&"client_key_pem".to_string()));
    }
}

#[cfg(test)]
mod secret_tests {
    #[test]
    fn debug_redacts() {
        assert_eq!(format!("{:?}", super::Secret::new("hunter2")), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", super::Secret::default()), "Secret(<empty>)");
    }
}
