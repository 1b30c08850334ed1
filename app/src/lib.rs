//! The Bindery console: Leptos components rendered on the server and
//! hydrated in the browser, and the server functions they call.

mod accounts;
pub mod api;
mod auth;
mod charts;
mod components;
pub mod data;
mod directory;
pub mod flash;
mod import;
mod logs;
pub mod rpc;
mod settings;
mod sync;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{ParentRoute, Route, Router, Routes};
use leptos_router::{path, SsrMode};

use bindery_model::{CurrentUser, FieldError};

/// The HTML document around the app (server side only).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                // Both follow cargo-leptos' hashed names in a release build.
                <HashedStylesheet options=options.clone() id="leptos"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The signed-in user, loaded once per page and shared through context.
#[derive(Clone, Copy)]
pub struct Me(pub data::Data<Option<CurrentUser>>);

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let me = data::Data::new(|| (), |_| auth::GetCurrentUser {});
    provide_context(Me(me));
    // Every route renders completely on the server before the page is sent
    // (SsrMode::Async): pages and forms then work without JavaScript, and
    // hydration picks up the same HTML.
    view! {
        <Title text="Bindery"/>
        <Router>
            <Routes fallback=|| view! { <components::NotFound/> }>
                <Route path=path!("/login") view=auth::LoginPage ssr=SsrMode::Async/>
                <Route path=path!("/change-password") view=auth::ChangePasswordPage ssr=SsrMode::Async/>
                <ParentRoute path=path!("") view=components::Layout ssr=SsrMode::Async>
                    <Route path=path!("") view=logs::HomePage ssr=SsrMode::Async/>
                    <Route path=path!("/users") view=accounts::UsersPage ssr=SsrMode::Async/>
                    <Route path=path!("/users/:id") view=accounts::UserPage ssr=SsrMode::Async/>
                    <Route path=path!("/import") view=import::ImportPage ssr=SsrMode::Async/>
                    <Route path=path!("/sync/runs") view=sync::SyncRunsPage ssr=SsrMode::Async/>
                    <Route path=path!("/sync/runs/:id") view=sync::SyncRunPage ssr=SsrMode::Async/>
                    <Route path=path!("/groups") view=accounts::GroupsPage ssr=SsrMode::Async/>
                    <Route path=path!("/organisations") view=accounts::OrganisationsPage ssr=SsrMode::Async/>
                    <Route path=path!("/logs/logins") view=logs::LoginLogPage ssr=SsrMode::Async/>
                    <Route path=path!("/logs/operations") view=logs::OperationLogPage ssr=SsrMode::Async/>
                    <Route path=path!("/settings/basic") view=settings::BasicSettingsPage ssr=SsrMode::Async/>
                    <Route path=path!("/settings/security") view=settings::SecuritySettingsPage ssr=SsrMode::Async/>
                    <Route path=path!("/settings/tokens") view=auth::TokensPage ssr=SsrMode::Async/>
                    <Route path=path!("/settings/ldap") view=directory::LdapPage ssr=SsrMode::Async/>
                    <Route path=path!("/settings/ldap-ha") view=directory::LdapHaPage ssr=SsrMode::Async/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}

/// `Set-Cookie` value for the session: HttpOnly, SameSite=Lax, Path=/,
/// Secure when served over HTTPS. `max_age = Some(0)` deletes it.
pub fn session_cookie(name: &str, value: &str, secure: bool, max_age: Option<i64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

/// Percent-encode a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Parse a whole number typed into a form field, recording a field error.
pub fn parse_int(errors: &mut Vec<FieldError>, field: &str, value: &str) -> i64 {
    match value.trim().parse::<i64>() {
        Ok(v) => v,
        Err(_) => {
            errors.push(FieldError::new(field, "must be a whole number"));
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_flags() {
        let c = session_cookie("s", "v", true, None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"), "{c}");
        assert!(!session_cookie("s", "v", false, None).contains("Secure"));
        assert!(session_cookie("s", "", false, Some(0)).ends_with("Max-Age=0"));
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn next_is_a_same_origin_path_only() {
        assert_eq!(api::safe_next(Some("/users?page=2")), "/users?page=2");
        assert_eq!(api::safe_next(Some("/users/3#top")), "/users/3#top");
        assert_eq!(api::safe_next(Some("/users?q=a b")), "/users?q=a%20b", "the parser's encoding");
        assert_eq!(api::safe_next(Some("/élodie")), "/%C3%A9lodie");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "/\\evil",
            "/rpc/logout",
            "/%72pc/logout",
            "",
            "users",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\nSet-Cookie: x=1",
            "/ok\u{7f}",
            "/ok\u{85}",
            "/.//evil.example",
            "/..//evil.example",
            "/%2F/evil.example",
            "/a/../..//evil.example",
        ] {
            assert_eq!(api::safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(api::safe_next(None), "/");
    }

    #[test]
    fn locations_carry_no_control_bytes() {
        assert_eq!(api::location_safe("/a\r\nb c\té"), "/a%0D%0Ab%20c%09%C3%A9");
        assert_eq!(api::location_safe("/login?failed=1&next=%2F"), "/login?failed=1&next=%2F");
    }

    /// Every type that holds a secret formats without it.
    #[cfg(feature = "ssr")]
    #[test]
    fn debug_output_holds_no_secret() {
        const S: &str = "Sup3r-Secret-Value";
        let form = api::DirectoryForm {
            bind_password: S.into(),
            client_key_pem: S.into(),
            bind_dn: "cn=visible".into(),
            connect_timeout_secs: "5".into(),
            op_timeout_secs: "10".into(),
            page_size: "100".into(),
            dn_cache_secs: "60".into(),
            ..Default::default()
        };
        let input = form.clone().into_input().expect("numbers are numbers");
        assert_eq!(input.bind_password.as_deref(), Some(S));
        let user = bindery_model::NewUser { username: "visible-user".into(), password: S.into(), ..Default::default() };
        let token = bindery_model::CreatedApiToken {
            token: bindery_model::ApiToken {
                id: 1,
                name: "visible-token".into(),
                username: "admin".into(),
                prefix: "abcd".into(),
                created_at: String::new(),
                last_used_at: None,
                expires_at: None,
                revoked: false,
            },
            secret: S.into(),
        };
        let ctx = bindery_service::RequestContext { session_token: Some(S.into()), ..Default::default() };
        let login = auth::Login { username: "visible-user".into(), password: api::Password(S.into()), next: None };
        let change = auth::ChangePassword {
            current_password: api::Password(S.into()),
            new_password: api::Password(S.into()),
            confirm_password: api::Password(S.into()),
        };
        let create = accounts::CreateUser {
            username: "visible-user".into(),
            name: String::new(),
            email: String::new(),
            role: "user".into(),
            password: api::Password(S.into()),
            orgs: None,
        };
        let test_login = api::TestDirectoryLogin {
            kind: "ldap".into(),
            form: form.clone(),
            test_username: "visible-user".into(),
            test_password: api::Password(S.into()),
            lookup_only: None,
        };
        let key = bindery_service::SecretKey::new([7; 32]);
        let shown = [
            format!("{input:?}"),
            format!("{form:?}"),
            format!("{user:?}"),
            format!("{token:?}"),
            format!("{ctx:?}"),
            format!("{login:?}"),
            format!("{change:?}"),
            format!("{create:?}"),
            format!("{test_login:?}"),
            format!("{key:?}"),
            format!("{:#?}", bindery_service::Secret::new(S)),
        ];
        for s in &shown {
            assert!(!s.contains(S) && !s.contains(&"07".repeat(32)), "a secret in {s}");
        }
        assert!(shown[1].contains("cn=visible") && shown[2].contains("visible-user") && shown[3].contains("visible-token"), "{shown:?}");
        assert!(shown[0].contains("<redacted>"), "{}", shown[0]);
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(url_encode("a b&c=/é"), "a%20b%26c%3D/%C3%A9");
    }
}
