//! Active Directory behaviour against a real Samba AD DC (`testkit/samba`):
//! the AD specifics of sign-in (objectGUID as uid, bind sub-codes).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use bindery_directory::enumerate::{enumerate, Entry};
use bindery_directory::testing::Samba;
use bindery_directory::{DirectoryConfig, Secret};
use bindery_model::{AccountState, DirectoryInput};

fn config(input: &DirectoryInput) -> DirectoryConfig {
    bindery_directory::config::validate(input, Secret::new(input.bind_password.clone().unwrap_or_default()), Secret::default())
        .expect("valid config")
}

/// Every user of the configuration by username, as the full enumeration reads them.
async fn users(cfg: &DirectoryConfig) -> HashMap<String, Entry> {
    let all = std::sync::Mutex::new(HashMap::new());
    enumerate(cfg, &AtomicBool::new(false), |page, _| {
        for e in page {
            all.lock().unwrap().insert(e.user.username.to_lowercase(), e);
        }
        async { Ok(()) }
    })
    .await
    .expect("full enumeration");
    all.into_inner().unwrap()
}

fn in_group(e: &Entry, group_dn: &str) -> bool {
    e.user.groups.iter().any(|g| g.eq_ignore_ascii_case(group_dn))
}

#[tokio::test]
async fn samba_uid_is_the_object_guid_and_binds_give_ad_subcodes() {
    let d = Samba::start();
    let cfg = config(&d.input());
    let all = users(&cfg).await;
    assert_eq!(all.len(), 21, "{:?}", all.keys());
    for e in all.values() {
        assert!(e.uid.len() == 32 && e.uid.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{}", e.uid);
    }
    assert_eq!(all["disabled01"].state, Some(AccountState::Disabled));
    assert_eq!(all["user01"].state, None);
    assert!(in_group(&all["user01"], &d.group_dn("admins")));

    let bind = |dn: String, pw: String| {
        let cfg = cfg.clone();
        async move {
            let (mut ldap, _) = bindery_directory::conn::connect(&cfg.servers[0], &cfg).await.map_err(|(_, f, _)| f).expect("connect");
            bindery_directory::authn::bind_user(&mut ldap, &cfg, &dn, &pw).await
        }
    };
    bind(d.user_dn("user01"), d.user_password.clone()).await.expect("right password");
    let f = bind(d.user_dn("user01"), "wrong-password".into()).await.unwrap_err();
    assert_eq!((f.ldap_code, f.ad_subcode.as_deref()), (Some(49), Some("52e")), "{f:?}");
    assert!(f.message.contains("invalid credentials"), "{}", f.message);
    let f = bind(d.user_dn("disabled01"), d.user_password.clone()).await.unwrap_err();
    assert_eq!((f.ldap_code, f.ad_subcode.as_deref()), (Some(49), Some("533")), "{f:?}");
    assert!(f.message.contains("account disabled"), "{}", f.message);
}
