//! A deliberately misbehaving LDAP server for tests.
//!
//! `slapd` (testkit/slapd) is the real directory of the tests, but it cannot
//! misbehave on purpose. This responder speaks just enough LDAP (simple
//! bind, search with the RFC 2696 paged-results control, unbind) over the
//! server side of the `ldap3_proto` codec, and answers paged searches either
//! correctly or in one of the ways real servers get paging wrong (and
//! Compare honestly, or refuses it: [`Responder::refuse_compare`]):
//!
//! * [`Fault::RepeatCookie`]: every page hands back the same cookie, so a
//!   naive loop pages forever over the same entries;
//! * [`Fault::IgnorePaging`]: the control is ignored: one silently cut
//!   result (the server's own limit) with success and no control;
//! * [`Fault::SizeLimit`]: the first page, then `sizeLimitExceeded` (rc 4)
//!   with an empty cookie, which looks like "done" if the code is ignored;
//! * [`Fault::EndlessPages`]: a fresh cookie on every page, forever.
//!
//! Only a bounded number of entries ever leaves it, so a client that took any
//! of these for a complete enumeration would believe users are gone.
//!
//! Start one per test with [`Responder::start`]; it listens on a free
//! loopback port and stops when dropped. It is a dev-dependency only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{LdapBindResponse, LdapCompareRequest, LdapFilter, LdapOp, LdapResult, LdapSearchRequest};
use ldap3_proto::{LdapCodec, LdapMsg, LdapPartialAttribute, LdapResultCode, LdapSearchResultEntry, LdapSearchScope};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite};

/// How the responder answers paged searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Correct RFC 2696 paging.
    None,
    /// The same non-empty cookie on every page.
    RepeatCookie,
    /// No paged-results control in the answer; only the first page-size
    /// entries, with success.
    IgnorePaging,
    /// The first page, then rc 4 (size limit exceeded) and an empty cookie.
    SizeLimit,
    /// A new cookie on every page, whatever was asked; past the last entry
    /// the pages are empty.
    EndlessPages,
}

/// One entry the responder serves: a DN and its attributes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    /// A user `uid=NAME,BASE` with `uid`, `cn`, `mail`, `entryUUID` and
    /// an active `userAccountControl`, as `testkit/slapd` seeds them.
    pub fn user(base: &str, uid: &str, n: u32) -> Entry {
        let attr = |k: &str, v: String| (k.to_string(), vec![v]);
        Entry {
            dn: format!("uid={uid},{base}"),
            attrs: vec![
                attr("objectClass", "inetOrgPerson".into()),
                attr("uid", uid.into()),
                attr("cn", format!("User {uid}")),
                attr("sn", uid.into()),
                attr("mail", format!("{uid}@example.com")),
                attr("userAccountControl", "512".into()),
                attr("entryUUID", format!("00000000-0000-4000-8000-{n:012x}")),
            ],
        }
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    binds: AtomicU64,
    searches: AtomicU64,
    paged_searches: AtomicU64,
    compares: AtomicU64,
}

struct State {
    entries: Vec<Entry>,
    fault: Mutex<Fault>,
    /// Compare answered with unwillingToPerform (53), as by a server that
    /// does not offer it for the attribute.
    refuse_compare: std::sync::atomic::AtomicBool,
    counters: Counters,
}

/// A running responder (see the crate docs). Dropping it stops the server.
pub struct Responder {
    /// `ldap://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    /// Listen on a free loopback port, serving `entries` correctly until
    /// [`Responder::set_fault`] says otherwise.
    pub async fn start(entries: Vec<Entry>) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let state =
            Arc::new(State { entries, fault: Mutex::new(Fault::None), refuse_compare: Default::default(), counters: Counters::default() });
        let served = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                served.counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(socket, served.clone()));
            }
        });
        Responder { url: format!("ldap://127.0.0.1:{port}"), port, state, task }
    }

    /// `n` users `user1…userN` under `base` (see [`Entry::user`]).
    pub async fn with_users(base: &str, n: u32) -> Responder {
        Self::start((1..=n).map(|i| Entry::user(base, &format!("user{i}"), i)).collect()).await
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Refuse every Compare from now on (or answer it again).
    pub fn refuse_compare(&self, refuse: bool) {
        self.state.refuse_compare.store(refuse, Ordering::Relaxed);
    }

    /// Compare requests answered so far.
    pub fn compares(&self) -> u64 {
        self.state.counters.compares.load(Ordering::Relaxed)
    }

    fn fault(&self) -> Fault {
        *self.state.fault.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.counters.connections.load(Ordering::Relaxed)
    }

    /// Bind requests answered so far.
    pub fn binds(&self) -> u64 {
        self.state.counters.binds.load(Ordering::Relaxed)
    }

    /// Search requests answered so far (paged or not).
    pub fn searches(&self) -> u64 {
        self.state.counters.searches.load(Ordering::Relaxed)
    }

    /// Search requests that carried the paged-results control.
    pub fn paged_searches(&self) -> u64 {
        self.state.counters.paged_searches.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("url", &self.url).field("fault", &self.fault()).finish()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn done(code: LdapResultCode, message: &str) -> LdapResult {
    LdapResult { code, matcheddn: String::new(), message: message.to_string(), referral: vec![] }
}

fn under(dn: &str, base: &str) -> bool {
    let (dn, base) = (dn.to_ascii_lowercase(), base.to_ascii_lowercase());
    base.is_empty() || dn == base || dn.ends_with(&format!(",{base}"))
}

fn to_wire(e: &Entry) -> LdapSearchResultEntry {
    LdapSearchResultEntry {
        dn: e.dn.clone(),
        attributes: e
            .attrs
            .iter()
            .map(|(k, v)| LdapPartialAttribute { atype: k.clone(), vals: v.iter().map(|s| s.as_bytes().to_vec()).collect() })
            .collect(),
    }
}

impl Entry {
    fn values<'a>(&'a self, attr: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.attrs.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(attr)).flat_map(|(_, v)| v)
    }
}

/// Whether `e` matches `f`, read loosely: equality and presence (any
/// objectClass matches, every entry here is a user); other filter kinds
/// match everything.
fn matches(e: &Entry, f: &LdapFilter) -> bool {
    match f {
        LdapFilter::And(fs) => fs.iter().all(|f| matches(e, f)),
        LdapFilter::Or(fs) => fs.iter().any(|f| matches(e, f)),
        LdapFilter::Not(f) => !matches(e, f),
        LdapFilter::Equality(a, _) | LdapFilter::Present(a) if a.eq_ignore_ascii_case("objectClass") => true,
        LdapFilter::Equality(a, v) => e.values(a).any(|x| x.eq_ignore_ascii_case(v)),
        LdapFilter::Present(a) => e.values(a).next().is_some(),
        _ => true,
    }
}

/// The answer to a Compare: true, false, no such entry, or refused.
fn compare(state: &State, cr: &LdapCompareRequest) -> LdapResult {
    state.counters.compares.fetch_add(1, Ordering::Relaxed);
    if state.refuse_compare.load(Ordering::Relaxed) {
        return done(LdapResultCode::UnwillingToPerform, "compare is not offered here");
    }
    match state.entries.iter().find(|e| e.dn.eq_ignore_ascii_case(&cr.dn)) {
        None => done(LdapResultCode::NoSuchObject, ""),
        Some(e) if e.values(&cr.atype).any(|v| v.as_bytes().eq_ignore_ascii_case(&cr.val)) => done(LdapResultCode::CompareTrue, ""),
        Some(_) => done(LdapResultCode::CompareFalse, ""),
    }
}

/// The answer to one search: entries, then the result and its controls.
fn search(state: &State, sr: &LdapSearchRequest, ctrl: &[LdapControl]) -> (Vec<LdapSearchResultEntry>, LdapResult, Vec<LdapControl>) {
    state.counters.searches.fetch_add(1, Ordering::Relaxed);
    if sr.scope == LdapSearchScope::Base {
        // An entry served here, else the rootDSE or "does this OU exist": it does.
        let e = state.entries.iter().find(|e| e.dn.eq_ignore_ascii_case(&sr.base)).cloned();
        let e = e.unwrap_or_else(|| Entry { dn: sr.base.clone(), attrs: vec![("objectClass".into(), vec!["top".into()])] });
        return (vec![to_wire(&e)], done(LdapResultCode::Success, ""), vec![]);
    }
    let matching: Vec<&Entry> = state.entries.iter().filter(|e| under(&e.dn, &sr.base) && matches(e, &sr.filter)).collect();
    let paged = ctrl.iter().find_map(|c| match c {
        LdapControl::SimplePagedResults { size, cookie } => Some((*size, cookie.clone())),
        _ => None,
    });
    let Some((size, cookie)) = paged else {
        let all = matching.iter().map(|e| to_wire(e)).collect();
        return (all, done(LdapResultCode::Success, ""), vec![]);
    };
    state.counters.paged_searches.fetch_add(1, Ordering::Relaxed);
    let size = usize::try_from(size).ok().filter(|s| *s > 0).unwrap_or(matching.len().max(1));
    // The cookie is the offset of the next page, in decimal.
    let offset: usize = std::str::from_utf8(&cookie).ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    let page = |from: usize| -> Vec<LdapSearchResultEntry> { matching.iter().skip(from).take(size).map(|e| to_wire(e)).collect() };
    let control = |cookie: Vec<u8>| vec![LdapControl::SimplePagedResults { size: 0, cookie }];
    let fault = *state.fault.lock().unwrap_or_else(|p| p.into_inner());
    match fault {
        Fault::None => {
            let next = offset + size;
            let cookie = if next < matching.len() { next.to_string().into_bytes() } else { Vec::new() };
            (page(offset), done(LdapResultCode::Success, ""), control(cookie))
        }
        Fault::RepeatCookie => (page(0), done(LdapResultCode::Success, ""), control(size.to_string().into_bytes())),
        Fault::IgnorePaging => (page(0), done(LdapResultCode::Success, ""), vec![]),
        Fault::SizeLimit => (page(0), done(LdapResultCode::SizeLimitExceeded, "size limit exceeded"), control(Vec::new())),
        Fault::EndlessPages => (page(offset), done(LdapResultCode::Success, ""), control((offset + size).to_string().into_bytes())),
    }
}

async fn serve(socket: TcpStream, state: Arc<State>) {
    let _ = socket.set_nodelay(true);
    let (r, w) = socket.into_split();
    let mut requests = FramedRead::new(r, LdapCodec::default());
    let mut answers = FramedWrite::new(w, LdapCodec::default());
    while let Some(Ok(msg)) = requests.next().await {
        let msgid = msg.msgid;
        let reply = |op: LdapOp, ctrl: Vec<LdapControl>| LdapMsg { msgid, op, ctrl };
        let out: Vec<LdapMsg> = match msg.op {
            LdapOp::BindRequest(_) => {
                state.counters.binds.fetch_add(1, Ordering::Relaxed);
                vec![reply(LdapOp::BindResponse(LdapBindResponse { res: done(LdapResultCode::Success, ""), saslcreds: None }), vec![])]
            }
            LdapOp::SearchRequest(sr) => {
                let (entries, result, ctrl) = search(&state, &sr, &msg.ctrl);
                let mut out: Vec<LdapMsg> = entries.into_iter().map(|e| reply(LdapOp::SearchResultEntry(e), vec![])).collect();
                out.push(reply(LdapOp::SearchResultDone(result), ctrl));
                out
            }
            LdapOp::CompareRequest(cr) => vec![reply(LdapOp::CompareResult(compare(&state, &cr)), vec![])],
            LdapOp::UnbindRequest => return,
            LdapOp::AbandonRequest(_) => continue,
            _ => return, // nothing else is spoken here: hang up
        };
        for m in out {
            if answers.feed(m).await.is_err() {
                return;
            }
        }
        if answers.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_matched_by_their_base() {
        assert!(under("uid=a,ou=people,dc=example,dc=com", "ou=People,dc=example,dc=com"));
        assert!(!under("uid=a,ou=tech,dc=example,dc=com", "ou=people,dc=example,dc=com"));
        assert!(!under("uid=a,xou=people,dc=example,dc=com", "ou=people,dc=example,dc=com"));
    }
}
