//! The audit log: entries made from queued events as the consumer makes
//! them, the admin and own views, filters, cursor pagination, retention,
//! secrets kept out, and an audit failure that holds up no delivery.

use std::collections::HashSet;

use portcullis::core::audit::{
    self, after_audit, AuditPage, AuditRecord, Cursor, Outcome, Purged, AUDIT_RETRIES, MAX_AUDIT_PAGE,
    MAX_PURGE_BATCHES, PURGE_BATCH,
};
use portcullis::core::delivery::{self, Verdict};
use portcullis::core::email_address::Email;
use portcullis::core::error::{Error, TokenError};
use portcullis::core::events::{self, Envelope, Event, EventContext, Received};
use portcullis::core::flows::admin::Admin;
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::{AuthResponse, Recipient};
use portcullis::core::ports::AuditLog;
use portcullis::core::time::UnixTime;
use serde_json::{json, Value};

use crate::support::{
    block_on, code, config, grant, login_at, signup_at, MemCourier, MemLedger, MemStore, TestRandom, World,
};

/// What the queue consumer does with every event published so far: the
/// entry from the message as queued (secret sealed, context beside it).
fn consume(w: &World) {
    let key = events::secrets_key(&w.config.kek);
    for env in w.events.sent.borrow().iter() {
        let body: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut TestRandom(7)).unwrap()).unwrap();
        let record = AuditRecord::of_message(&body, UnixTime(0)).expect("an event");
        block_on(w.store.record_audit(&record)).unwrap();
    }
}

/// A world with an administrator `root` (signed in) and a user `ada`.
fn setup(rng: &mut TestRandom) -> (World, AuthResponse, AuthResponse) {
    let w = World::new(&[]);
    signup_at(&w, rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let root = login_at(&w, rng, 1_001, "root@example.com", "password-1").unwrap();
    let ada = signup_at(&w, rng, 1_002, "ada@example.com", "password-1");
    (w, root, ada)
}

fn admin_of(w: &World, bearer: &str) -> Admin {
    let (deps, meta) = w.at(1_500);
    block_on(deps.require_admin(&meta, Some(bearer))).unwrap()
}

fn admin_page(w: &World, root: &AuthResponse, q: &str) -> Result<AuditPage, Error> {
    let a = admin_of(w, &root.access_token);
    let (deps, meta) = w.at(1_500);
    block_on(deps.admin_audit(&meta, &mut TestRandom(50), &a, Some(q)))
}

fn own_page(w: &World, bearer: Option<&str>, q: &str) -> Result<AuditPage, Error> {
    let (deps, meta) = w.at(1_500);
    block_on(deps.own_audit(&meta, &mut TestRandom(51), bearer, Some(q)))
}

fn kinds(page: &AuditPage) -> Vec<&str> {
    page.entries.iter().map(|e| e.kind.as_str()).collect()
}

/// Every member any event type has, with a one-time secret in `token` and `code`.
fn superset() -> Value {
    json!({
        "user_id": "u-1", "email": "ada@example.com", "name": null, "provider": "email", "fields": ["name"],
        "reason": "invalid_password", "ip_address": "192.0.2.1", "user_agent": "curl/8", "role": "editor",
        "session_id": null, "revoke_all": true, "token": "tok-SECRET-1", "code": "924511", "old_kid": null,
        "new_kid": "k2", "kid": "k1", "endpoint": "login", "limit": 5, "key_type": "ip", "method": "totp",
        "passkey_id": "pk-1"
    })
}

#[test]
fn every_event_type_reaches_the_log_with_its_outcome_and_never_its_secret() {
    let key = events::secrets_key(&config(&[]).kek);
    let store = MemStore::default();
    for (i, kind) in Event::KINDS.iter().enumerate() {
        let event = Event::from_parts(kind, superset()).unwrap();
        let ctx = EventContext {
            ip_address: Some("198.51.100.9".into()),
            user_agent: Some("Mozilla/5.0 (audit)".into()),
            actor_id: Some("admin-1".into()),
        };
        let env = Envelope::new(event, &mut TestRandom(i as u64 + 1), UnixTime(1_795_433_636)).with_context(ctx);
        let body: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut TestRandom(99)).unwrap()).unwrap();
        let record = AuditRecord::of_message(&body, UnixTime(0)).unwrap();
        assert_eq!((record.kind, record.at), (*kind, UnixTime(1_795_433_636)), "{kind}");
        assert_eq!(record.outcome, Outcome::of(kind));
        assert_eq!(record.ip_address.as_deref(), Some("198.51.100.9"), "{kind}: the request's IP");
        assert_eq!(record.user_agent.as_deref(), Some("Mozilla/5.0 (audit)"), "{kind}: the request's client");
        assert_eq!(record.actor_id.as_deref(), Some("admin-1"));
        assert!(block_on(store.record_audit(&record)).unwrap(), "{kind}");
        // Once per event id, however often the message comes.
        assert!(!block_on(store.record_audit(&record)).unwrap(), "{kind}");
    }
    let log = store.audit.borrow();
    assert_eq!(log.len(), Event::KINDS.len());
    let text = format!("{:?}", *log);
    assert!(!text.contains("tok-SECRET-1") && !text.contains("924511") && !text.contains("sealed"), "{text}");
    for entry in log.iter() {
        assert!(entry.data.get("token").is_none() && entry.data.get("code").is_none(), "{}", entry.kind);
    }
    let failures: Vec<&str> = log.iter().filter(|e| e.outcome == Outcome::Failure).map(|e| e.kind.as_str()).collect();
    assert_eq!(failures, ["login_failed", "rate_limit_exceeded", "mfa_failed"]);
}

#[test]
fn an_action_appears_with_who_what_when_and_the_client() {
    let mut rng = TestRandom(1);
    let (w, root, ada) = setup(&mut rng);
    consume(&w);
    let page = admin_page(&w, &root, "type=user_created").unwrap();
    let created = page.entries.iter().find(|e| e.user_id.as_deref() == Some(&ada.user.id)).unwrap();
    let view = serde_json::to_value(created).unwrap();
    assert_eq!(view["type"], "user_created");
    assert_eq!(view["outcome"], "success");
    assert_eq!(view["ip_address"], "203.0.113.7");
    assert_eq!(view["user_agent"], "tests");
    assert_eq!(view["at"], UnixTime(1_002).rfc3339());
    assert_eq!(view["data"]["email"], "ada@example.com");
    assert!(view.get("actor_id").is_none(), "nobody acted for ada: {view}");
    let members: HashSet<&str> = view.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: HashSet<&str> =
        ["id", "type", "user_id", "outcome", "ip_address", "user_agent", "at", "data"].into_iter().collect();
    assert_eq!(members, expected);
}

#[test]
fn admin_actions_name_the_admin_who_acted_but_only_to_admins() {
    let mut rng = TestRandom(2);
    let (w, root, ada) = setup(&mut rng);
    let a = admin_of(&w, &root.access_token);
    let (deps, meta) = w.at(1_100);
    block_on(deps.admin_set_role(&meta, &mut rng, &a, &ada.user.id, "editor", true)).unwrap();
    consume(&w);
    let page = admin_page(&w, &root, "type=role_added").unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].actor_id.as_deref(), Some(root.user.id.as_str()));
    assert_eq!(page.entries[0].user_id.as_deref(), Some(ada.user.id.as_str()));
    let mine = own_page(&w, Some(&ada.access_token), "type=role_added").unwrap();
    assert_eq!(mine.entries.len(), 1);
    assert_eq!(mine.entries[0].actor_id, None, "a user is not told which admin acted");
    assert!(serde_json::to_value(&mine).unwrap()["entries"][0].get("actor_id").is_none());
}

#[test]
fn filters_select_by_user_type_and_time() {
    let mut rng = TestRandom(3);
    let (w, root, ada) = setup(&mut rng);
    login_at(&w, &mut rng, 1_200, "ada@example.com", "password-1").unwrap();
    assert_eq!(code(login_at(&w, &mut rng, 1_300, "ada@example.com", "wrong-password")), "invalid_credentials");
    login_at(&w, &mut rng, 1_400, "root@example.com", "password-1").unwrap();
    consume(&w);
    let ada_id = &ada.user.id;
    let by_user = admin_page(&w, &root, &format!("user_id={ada_id}")).unwrap();
    assert_eq!(kinds(&by_user), ["login_failed", "login", "user_created"], "newest first");
    assert!(by_user.entries.iter().all(|e| e.user_id.as_deref() == Some(ada_id.as_str())));
    let logins = admin_page(&w, &root, "type=login").unwrap();
    assert_eq!(logins.entries.len(), 3);
    assert!(logins.entries.iter().all(|e| e.kind == "login"));
    let window =
        admin_page(&w, &root, &format!("since={}&until={}", UnixTime(1_200).rfc3339(), UnixTime(1_400).rfc3339()))
            .unwrap();
    assert_eq!(kinds(&window), ["login_failed", "login"], "since inclusive, until exclusive");
    let both = admin_page(&w, &root, &format!("user_id={ada_id}&type=login&until=1300")).unwrap();
    assert_eq!(kinds(&both), ["login"]);
    assert_eq!(both.entries[0].at, UnixTime(1_200).rfc3339());
    // The failed login is attributed to the account by its address.
    let failed = &by_user.entries[0];
    assert_eq!((failed.outcome, failed.data["reason"].as_str()), (Outcome::Failure, Some("invalid_password")));
}

#[test]
fn a_failed_login_for_an_address_without_an_account_then_is_nobodys() {
    let mut rng = TestRandom(4);
    let (w, root, _) = setup(&mut rng);
    assert_eq!(code(login_at(&w, &mut rng, 1_100, "eve@example.com", "password-1")), "invalid_credentials");
    // Signed up after the failure: the failure is not theirs.
    let eve = signup_at(&w, &mut rng, 1_200, "eve@example.com", "password-1");
    consume(&w);
    let failed = admin_page(&w, &root, "type=login_failed").unwrap();
    assert_eq!(failed.entries.len(), 1);
    assert_eq!(failed.entries[0].user_id, None);
    assert!(own_page(&w, Some(&eve.access_token), "type=login_failed").unwrap().entries.is_empty());
}

#[test]
fn the_cursor_walks_every_entry_once_newest_first_even_within_one_second() {
    let mut rng = TestRandom(5);
    let (w, root, _) = setup(&mut rng);
    // Many entries in the same second: the id breaks the tie.
    for _ in 0..6 {
        login_at(&w, &mut rng, 1_200, "ada@example.com", "password-1").unwrap();
    }
    for t in 0..5 {
        login_at(&w, &mut rng, 1_210 + t, "root@example.com", "password-1").unwrap();
    }
    consume(&w);
    let total = w.store.audit.borrow().len();
    let all = admin_page(&w, &root, &format!("limit={MAX_AUDIT_PAGE}")).unwrap();
    assert_eq!((all.entries.len(), all.next_cursor.as_ref()), (total, None));
    let mut walked: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=4&cursor={c}"),
            None => "limit=4".to_string(),
        };
        let page = admin_page(&w, &root, &q).unwrap();
        assert!(page.entries.len() <= 4);
        walked.extend(page.entries.iter().map(|e| (e.at.clone(), e.id.clone())));
        pages += 1;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, total.div_ceil(4));
    let ids: HashSet<&String> = walked.iter().map(|(_, id)| id).collect();
    assert_eq!((walked.len(), ids.len()), (total, total), "every entry once");
    let all_ids: Vec<(String, String)> = all.entries.iter().map(|e| (e.at.clone(), e.id.clone())).collect();
    assert_eq!(walked, all_ids, "the same order as one page");
    // Filters hold across pages.
    let first = admin_page(&w, &root, "type=login&limit=2").unwrap();
    let next = admin_page(&w, &root, &format!("type=login&limit=2&cursor={}", first.next_cursor.unwrap())).unwrap();
    assert!(next.entries.iter().all(|e| e.kind == "login"));
    assert!(next.entries.iter().all(|e| !first.entries.iter().any(|f| f.id == e.id)));
}

#[test]
fn a_user_sees_only_their_own_entries_and_may_not_ask_for_anothers() {
    let mut rng = TestRandom(6);
    let (w, root, ada) = setup(&mut rng);
    assert_eq!(code(login_at(&w, &mut rng, 1_100, "ada@example.com", "nope-nope")), "invalid_credentials");
    consume(&w);
    let mine = own_page(&w, Some(&ada.access_token), "").unwrap();
    assert!(!mine.entries.is_empty());
    assert!(mine.entries.iter().all(|e| e.user_id.as_deref() == Some(ada.user.id.as_str())));
    assert!(kinds(&mine).contains(&"login_failed"), "attempts on the account are shown to its owner");
    assert!(!mine.entries.iter().any(|e| e.data["email"] == "root@example.com"));
    let roots = own_page(&w, Some(&root.access_token), "").unwrap();
    assert!(roots.entries.iter().all(|e| e.user_id.as_deref() == Some(root.user.id.as_str())));
    assert_eq!(code(own_page(&w, Some(&ada.access_token), &format!("user_id={}", root.user.id))), "invalid_query");
    assert_eq!(code(own_page(&w, None, "")), "missing_token");
    // Authentication comes before the query is read.
    assert_eq!(code(own_page(&w, None, "limit=0")), "missing_token");
    assert_eq!(code(own_page(&w, Some("garbage"), "")), "invalid_token");
    let (deps, meta) = w.at(1_500);
    assert_eq!(code(block_on(deps.require_admin(&meta, Some(&ada.access_token)))), "insufficient_role");
}

#[test]
fn requested_secrets_never_reach_the_log() {
    let mut rng = TestRandom(7);
    let (w, root, ada) = setup(&mut rng);
    let email = Recipient { email: Email::parse("ada@example.com").unwrap(), locale: None };
    let (deps, meta) = w.at(1_100);
    block_on(deps.send_magic_link(&meta, &mut rng, &email)).unwrap();
    block_on(deps.send_otp(&meta, &mut rng, &email)).unwrap();
    block_on(deps.send_password_reset(&meta, &mut rng, &email)).unwrap();
    block_on(deps.request_email_verification(&meta, &mut rng, Some(&ada.access_token))).unwrap();
    let secrets: Vec<String> = [
        ("magic_link_requested", "token"),
        ("email_otp_requested", "code"),
        ("password_reset_requested", "token"),
        ("email_verification_requested", "token"),
    ]
    .iter()
    .map(|(kind, field)| w.events.last_of(kind)[field].as_str().unwrap().to_string())
    .collect();
    consume(&w);
    let page = admin_page(&w, &root, "").unwrap();
    let text = serde_json::to_string(&page).unwrap() + &format!("{:?}", w.store.audit.borrow());
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "{s} in the audit log");
    }
    for kind in
        ["magic_link_requested", "email_otp_requested", "password_reset_requested", "email_verification_requested"]
    {
        let e = page.entries.iter().find(|e| e.kind == kind).unwrap();
        assert_eq!(e.data["email"], "ada@example.com", "{kind}");
        assert!(e.data.get("token").is_none() && e.data.get("code").is_none(), "{kind}: {}", e.data);
    }
}

fn logout_record(i: i64, at: UnixTime) -> AuditRecord {
    AuditRecord {
        id: format!("e-{i:06}"),
        kind: "logout",
        user_id: Some("u".into()),
        subject_email: None,
        actor_id: None,
        ip_address: None,
        user_agent: None,
        outcome: Outcome::Success,
        at,
        data: "{}".into(),
    }
}

#[test]
fn retention_purges_only_older_entries_in_batches() {
    let store = MemStore::default();
    let day = 86_400;
    let now = UnixTime(100 * day);
    let n = PURGE_BATCH as i64 + 3;
    for i in 0..n {
        let at = if i < n - 1 { UnixTime(now.0 - 91 * day + i % 7) } else { UnixTime(now.0 - 89 * day) };
        block_on(store.record_audit(&logout_record(i, at))).unwrap();
    }
    let purged = block_on(audit::purge(&store, now, 90, 1_000_000)).unwrap();
    assert_eq!(purged, Purged { over_cap: 0, expired: n as u64 - 1 }, "more than one batch");
    let left = store.audit.borrow();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].at, UnixTime(now.0 - 89 * day));
}

#[test]
fn the_cap_deletes_the_oldest_written_entries_beyond_it_whatever_their_age() {
    let store = MemStore::default();
    let now = UnixTime(100 * 86_400);
    let cap = 1_000;
    // A flood: three and a half batches over the cap, all of them fresh.
    let n = i64::from(cap) + 3 * i64::from(PURGE_BATCH) + 500;
    for i in 0..n {
        block_on(store.record_audit(&logout_record(i, UnixTime(now.0 - 60 + i % 60)))).unwrap();
    }
    let purged = block_on(audit::purge(&store, now, 90, cap)).unwrap();
    assert_eq!(purged, Purged { over_cap: (n - i64::from(cap)) as u64, expired: 0 });
    let left = store.audit.borrow();
    assert_eq!(left.len(), cap as usize);
    // The newest written stay, whatever their `at`.
    let first_kept = format!("e-{:06}", n - i64::from(cap));
    assert_eq!(left.iter().map(|e| e.id.as_str()).min(), Some(first_kept.as_str()));
    drop(left);
    // At the cap, a purge deletes nothing more.
    assert_eq!(block_on(audit::purge(&store, now, 90, cap)).unwrap(), Purged::default());
}

#[test]
fn one_purge_deletes_a_bounded_number_of_batches_and_the_next_goes_on() {
    let store = MemStore::default();
    let day = 86_400;
    let now = UnixTime(100 * day);
    let batch = i64::from(PURGE_BATCH);
    let cap = 5 * batch;
    // Over the cap by eight and a half batches (nine statements of the
    // run's budget), and two batches expired among the entries left.
    let over = 8 * batch + batch / 2;
    for i in 0..cap + over {
        let at = if i < over + 2 * batch { now.minus_secs(91 * day as u64) } else { now };
        block_on(store.record_audit(&logout_record(i, at))).unwrap();
    }
    assert_eq!(MAX_PURGE_BATCHES, 10);
    // The cap first; the retention gets what is left of the budget.
    let first = block_on(audit::purge(&store, now, 90, cap as u32)).unwrap();
    assert_eq!(first, Purged { over_cap: over as u64, expired: batch as u64 });
    let second = block_on(audit::purge(&store, now, 90, cap as u32)).unwrap();
    assert_eq!(second, Purged { over_cap: 0, expired: batch as u64 });
    assert_eq!(store.audit.borrow().len() as i64, cap - 2 * batch);
}

#[test]
fn a_failed_audit_write_holds_up_no_delivery_and_is_tried_again() {
    let cfg = config(&[
        ("WEBHOOK_URLS", "https://a.example/hook"),
        ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("RETRY_BASE_DELAY_SECS", "2"),
    ]);
    let env = Envelope::new(events::Logout { user_id: "u1".into() }, &mut TestRandom(1), UnixTime(1_000));
    let body: Value =
        serde_json::from_str(&env.to_sealed_json(&events::secrets_key(&cfg.kek), &mut TestRandom(2)).unwrap()).unwrap();
    let event = Received::open(body.clone(), &events::secrets_key(&cfg.kek)).unwrap();
    let (store, ledger, courier) = (MemStore::default(), MemLedger::default(), MemCourier::ok());
    // What the consumer does with one message on its `attempt`.
    let handle = |attempt: u32| {
        let record = AuditRecord::of_message(&body, UnixTime(1_001)).unwrap();
        let written = block_on(store.record_audit(&record)).is_ok();
        let delivered = block_on(delivery::deliver(&cfg, &ledger, &courier, &event, UnixTime(1_001))).unwrap();
        after_audit(delivered, written, attempt, cfg.retry_base_delay_secs)
    };
    store.fail_audit.set(true);
    assert_eq!(handle(1), Verdict::Retry { delay_secs: 2 });
    assert_eq!(courier.sent_to("https://a.example/hook").len(), 1, "delivered all the same");
    store.fail_audit.set(false);
    assert_eq!(handle(2), Verdict::Ack);
    assert_eq!(courier.sent_to("https://a.example/hook").len(), 1, "not delivered twice");
    assert_eq!(store.audit.borrow().len(), 1);
    // A log that keeps failing is given up after AUDIT_RETRIES retries.
    store.fail_audit.set(true);
    assert_eq!(after_audit(Verdict::Ack, false, AUDIT_RETRIES + 1, 2), Verdict::Ack);
}

#[test]
fn queries_with_bad_values_are_refused_with_invalid_query() {
    let mut rng = TestRandom(8);
    let (w, root, _) = setup(&mut rng);
    let stale = Cursor { at: UnixTime(1), id: "x".into() }.encode();
    for q in [
        "limit=0",
        "limit=%2B5",
        "limit=x",
        "since=last-week",
        "until=2026-02-30T00:00:00Z",
        "since=2000&until=1000",
        "cursor=not-a-cursor",
        "type=nope",
        "user_id=a/b",
        "page=2",
        "type=login&type=logout",
    ] {
        assert_eq!(code(admin_page(&w, &root, q)), "invalid_query", "{q}");
        let e = admin_page(&w, &root, q).unwrap_err().problem();
        assert_eq!(e.status, 422, "{q}");
    }
    // A well-formed cursor past every entry is just the end.
    let page = admin_page(&w, &root, &format!("cursor={stale}")).unwrap();
    assert!(page.entries.is_empty() && page.next_cursor.is_none());
}

#[test]
fn the_client_is_stored_once_in_its_own_members_not_again_in_data() {
    let mut rng = TestRandom(9);
    let w = World::new(&[]);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let long_agent = format!("Mozilla/5.0 {}", "x".repeat(500));
    let (deps, mut meta) = w.at(1_100);
    meta.user_agent = Some(long_agent.clone());
    let bad =
        portcullis::core::flows::account::LoginRequest { email: "ada@example.com".into(), password: "wrong-1".into() };
    assert_eq!(code(block_on(deps.login(&meta, &mut rng, bad))), "invalid_credentials");
    let ok = portcullis::core::flows::account::LoginRequest {
        email: "ada@example.com".into(),
        password: "password-1".into(),
    };
    let auth = block_on(deps.login(&meta, &mut rng, ok)).unwrap().complete().unwrap();
    block_on(deps.refresh(&meta, &mut rng, Some(&auth.refresh_token))).unwrap();
    consume(&w);
    let log = w.store.audit.borrow();
    for kind in ["login", "login_failed", "token_refreshed"] {
        let e = log.iter().find(|e| e.kind == kind).unwrap();
        assert_eq!(e.user_agent.as_deref(), Some(long_agent.as_str()), "{kind}");
        assert_eq!(e.ip_address.as_deref(), Some("203.0.113.7"), "{kind}");
        let data = e.data.as_object().unwrap();
        assert!(!data.contains_key("ip_address") && !data.contains_key("user_agent"), "{kind}: {}", e.data);
        assert!(!e.data.to_string().contains(&long_agent), "{kind}: the user agent once, not twice");
    }
    // What stays in data is the event's own.
    let failed = log.iter().find(|e| e.kind == "login_failed").unwrap();
    assert_eq!(failed.data, json!({"email": "ada@example.com", "reason": "invalid_password"}));
}

#[test]
fn a_copy_of_the_client_that_differs_from_the_context_is_kept() {
    let env = Envelope::new(
        events::Login {
            user_id: "u".into(),
            email: "a@b.co".into(),
            provider: "email".into(),
            ip_address: Some("192.0.2.1".into()),
            user_agent: None,
        },
        &mut TestRandom(1),
        UnixTime(5),
    )
    .with_context(EventContext { ip_address: Some("198.51.100.2".into()), user_agent: None, actor_id: None });
    let key = events::secrets_key(&config(&[]).kek);
    let body: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut TestRandom(2)).unwrap()).unwrap();
    let r = AuditRecord::of_message(&body, UnixTime(0)).unwrap();
    assert_eq!(r.ip_address.as_deref(), Some("198.51.100.2"));
    let data: Value = serde_json::from_str(&r.data).unwrap();
    assert_eq!(data["ip_address"], "192.0.2.1", "nothing is lost");
    assert!(data.get("user_agent").is_none(), "a null copy goes");
}

#[test]
fn a_users_own_view_hides_the_administrators_ip_and_user_agent() {
    let mut rng = TestRandom(10);
    let (w, root, ada) = setup(&mut rng);
    let (deps, mut meta) = w.at(1_100);
    meta.ip = Some("10.66.0.5".into());
    meta.user_agent = Some("AdminConsole/3.1 (corp-laptop-042)".into());
    let admin = block_on(deps.require_admin(&meta, Some(&root.access_token))).unwrap();
    block_on(deps.admin_set_role(&meta, &mut rng, &admin, &ada.user.id, "editor", true)).unwrap();
    consume(&w);
    let mine = own_page(&w, Some(&ada.access_token), "").unwrap();
    let role = mine.entries.iter().find(|e| e.kind == "role_added").unwrap();
    assert_eq!((role.actor_id.as_deref(), role.ip_address.as_deref(), role.user_agent.as_deref()), (None, None, None));
    let view = serde_json::to_value(role).unwrap();
    assert_eq!((view["ip_address"].clone(), view["user_agent"].clone()), (Value::Null, Value::Null));
    assert!(!serde_json::to_string(&mine).unwrap().contains("10.66.0.5"));
    // Ada's own actions keep her client; the admin view keeps the admin's.
    let created = mine.entries.iter().find(|e| e.kind == "user_created").unwrap();
    assert_eq!(created.ip_address.as_deref(), Some("203.0.113.7"));
    let theirs = admin_page(&w, &root, "type=role_added").unwrap();
    assert_eq!(theirs.entries[0].ip_address.as_deref(), Some("10.66.0.5"));
    assert_eq!(theirs.entries[0].user_agent.as_deref(), Some("AdminConsole/3.1 (corp-laptop-042)"));
}

/// The address's owner, trying their own address from their own device.
const OWNER_IP: &str = "203.0.113.77";
const OWNER_UA: &str = "Mozilla/5.0 (Macintosh; owner's laptop) Firefox/133.0";

/// From the owner's client at `now`: a failed sign-in to `email`, then a
/// reset link, a magic link and an email code asked for it.
fn owner_tries(w: &World, rng: &mut TestRandom, now: i64, email: &str) {
    use portcullis::core::flows::account::LoginRequest;
    use portcullis::core::flows::EmailRequest;
    let (deps, mut meta) = w.at(now);
    meta.ip = Some(OWNER_IP.into());
    meta.user_agent = Some(OWNER_UA.into());
    let login = LoginRequest { email: email.into(), password: "the-owners-guess-1".into() };
    assert_eq!(code(block_on(deps.login(&meta, rng, login))), "invalid_credentials");
    let req = || EmailRequest { email: email.into(), locale: None };
    block_on(deps.forgot_password(&meta, rng, req())).unwrap();
    block_on(deps.request_magic_link(&meta, rng, req())).unwrap();
    block_on(deps.request_otp(&meta, rng, req())).unwrap();
}

#[test]
fn an_unverified_account_is_not_shown_the_client_of_others_using_its_address() {
    let mut rng = TestRandom(13);
    let (w, root, _) = setup(&mut rng);
    // Someone signs up with Carol's address and never proves it; Carol tries it.
    let planter = signup_at(&w, &mut rng, 1_100, "carol@example.com", "planters-password-1");
    owner_tries(&w, &mut rng, 1_200, "carol@example.com");
    consume(&w);
    // A copy of the client in `data` that differs from the request's goes too.
    let failed = events::LoginFailed {
        email: "carol@example.com".into(),
        reason: "invalid_password".into(),
        ip_address: Some(OWNER_IP.into()),
        user_agent: Some(OWNER_UA.into()),
    };
    let ctx = EventContext { ip_address: Some("2001:db8::77".into()), user_agent: None, actor_id: None };
    let env = Envelope::new(failed, &mut TestRandom(77), UnixTime(1_250)).with_context(ctx);
    let key = events::secrets_key(&w.config.kek);
    let body: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut TestRandom(78)).unwrap()).unwrap();
    block_on(w.store.record_audit(&AuditRecord::of_message(&body, UnixTime(0)).unwrap())).unwrap();
    let mine = own_page(&w, Some(&planter.access_token), "limit=200").unwrap();
    for kind in ["login_failed", "password_reset_requested", "magic_link_requested", "email_otp_requested"] {
        let e = mine.entries.iter().find(|e| e.kind == kind).unwrap_or_else(|| panic!("{kind}: {:?}", kinds(&mine)));
        assert_eq!((e.ip_address.as_deref(), e.user_agent.as_deref()), (None, None), "{kind}");
        let view = serde_json::to_value(e).unwrap();
        assert_eq!((view["ip_address"].clone(), view["user_agent"].clone()), (Value::Null, Value::Null), "{kind}");
    }
    let text = serde_json::to_string(&mine).unwrap();
    assert!(!text.contains(OWNER_IP) && !text.contains("owner's laptop") && !text.contains("2001:db8"), "{text}");
    assert_eq!(kinds(&mine).iter().filter(|k| **k == "login_failed").count(), 2);
    // The holder's own requests keep their client.
    let created = mine.entries.iter().find(|e| e.kind == "user_created").unwrap();
    assert_eq!((created.ip_address.as_deref(), created.user_agent.as_deref()), (Some("203.0.113.7"), Some("tests")));
    // Administrators see who tried.
    let all = admin_page(&w, &root, &format!("user_id={}&limit=200", planter.user.id)).unwrap();
    let tried: Vec<&str> =
        all.entries.iter().filter(|e| e.ip_address.as_deref() == Some(OWNER_IP)).map(|e| e.kind.as_str()).collect();
    assert_eq!(tried.len(), 4, "{tried:?}");
    assert!(all
        .entries
        .iter()
        .all(|e| e.ip_address.as_deref() != Some(OWNER_IP) || e.user_agent.as_deref() == Some(OWNER_UA)));
}

#[test]
fn once_the_holder_proves_the_address_they_are_shown_who_tried_it() {
    let mut rng = TestRandom(14);
    let (w, _, ada) = setup(&mut rng);
    owner_tries(&w, &mut rng, 1_100, "ada@example.com");
    consume(&w);
    let hidden = own_page(&w, Some(&ada.access_token), "type=login_failed").unwrap();
    assert_eq!(hidden.entries.len(), 1);
    assert_eq!(hidden.entries[0].ip_address, None, "unverified: not shown");
    // Ada proves her address while signed in: she reads its mail, the attempts are hers to see.
    let (deps, meta) = w.at(1_200);
    block_on(deps.request_email_verification(&meta, &mut rng, Some(&ada.access_token))).unwrap();
    let token = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    let (deps, meta) = w.at(1_300);
    let req = portcullis::core::flows::TokenRequest { token };
    block_on(deps.verify_email(&meta, &mut rng, req, Some(&ada.access_token))).unwrap();
    let shown = own_page(&w, Some(&ada.access_token), "limit=200").unwrap();
    let tried: Vec<&str> = shown
        .entries
        .iter()
        .filter(|e| (e.ip_address.as_deref(), e.user_agent.as_deref()) == (Some(OWNER_IP), Some(OWNER_UA)))
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(tried.len(), 4, "{:?}", kinds(&shown));
}

#[test]
fn after_a_takeover_the_new_holder_sees_only_what_happened_since() {
    use portcullis::core::flows::EmailRequest;
    let mut rng = TestRandom(11);
    let (w, root, _) = setup(&mut rng);
    // Bob signs up with Carol's address (unverified) and uses the account.
    let (deps, mut meta) = w.at(1_600);
    meta.ip = Some("192.0.2.44".into());
    meta.user_agent = Some("Bob's iPhone".into());
    let signup = portcullis::core::flows::account::SignupRequest {
        email: "carol@example.com".into(),
        password: "bobs-password-1".into(),
        name: None,
        locale: None,
    };
    let bob = block_on(deps.signup(&meta, &mut rng, signup)).unwrap();
    let login = portcullis::core::flows::account::LoginRequest {
        email: "carol@example.com".into(),
        password: "bobs-password-1".into(),
    };
    block_on(deps.login(&meta, &mut rng, login)).unwrap();
    // Carol proves the address by magic link: the account is hers from 2_000 on.
    let (deps, meta) = w.at(1_900);
    block_on(deps.request_magic_link(
        &meta,
        &mut rng,
        EmailRequest { email: "carol@example.com".into(), locale: None },
    ))
    .unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    let (deps, meta) = w.at(2_000);
    let carol = block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token, locale: None }))
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(carol.user.id, bob.user.id);
    assert_eq!(code(login_at(&w, &mut rng, 2_100, "carol@example.com", "bobs-password-1")), "invalid_credentials");
    consume(&w);
    let (deps, meta) = w.at(2_200);
    let mine = block_on(deps.own_audit(&meta, &mut rng, Some(&carol.access_token), Some("limit=200"))).unwrap();
    assert!(!mine.entries.is_empty());
    assert!(mine.entries.iter().all(|e| e.at >= UnixTime(2_000).rfc3339()), "{:?}", kinds(&mine));
    assert!(kinds(&mine).contains(&"email_verified") && kinds(&mine).contains(&"login_failed"), "{:?}", kinds(&mine));
    let text = serde_json::to_string(&mine).unwrap();
    assert!(!text.contains("192.0.2.44") && !text.contains("Bob's iPhone"), "{text}");
    // Asking for earlier times changes nothing; a window wholly before is empty.
    let since =
        block_on(deps.own_audit(&meta, &mut rng, Some(&carol.access_token), Some("since=1000&type=user_created")))
            .unwrap();
    assert!(since.entries.is_empty());
    let before = block_on(deps.own_audit(&meta, &mut rng, Some(&carol.access_token), Some("until=1999"))).unwrap();
    assert!(before.entries.is_empty());
    // Administrators keep the whole history.
    let all = admin_page(&w, &root, &format!("user_id={}&limit=200", bob.user.id)).unwrap();
    let created = all.entries.iter().find(|e| e.kind == "user_created").unwrap();
    assert_eq!(created.ip_address.as_deref(), Some("192.0.2.44"));
    assert!(kinds(&all).contains(&"login"));
}

#[test]
fn a_verified_account_has_no_takeover_and_its_whole_history_is_its_owners() {
    let mut rng = TestRandom(12);
    let (w, _, ada) = setup(&mut rng);
    // Ada proves her own address while signed in: a confirmation, not a takeover.
    let (deps, meta) = w.at(1_100);
    block_on(deps.request_email_verification(&meta, &mut rng, Some(&ada.access_token))).unwrap();
    let token = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    let (deps, meta) = w.at(1_200);
    let req = portcullis::core::flows::TokenRequest { token };
    block_on(deps.verify_email(&meta, &mut rng, req, Some(&ada.access_token))).unwrap();
    assert_eq!(block_on(w.store.taken_over_at(&ada.user.id)).unwrap(), None);
    consume(&w);
    let mine = own_page(&w, Some(&ada.access_token), "").unwrap();
    assert!(kinds(&mine).contains(&"user_created"), "{:?}", kinds(&mine));
}

/// `key = value` of the `[[queues.consumers]]` table of `queue` in a
/// wrangler.toml (the few lines this test needs, read by hand).
fn consumer_setting(toml: &str, queue: &str, key: &str) -> Option<String> {
    let tables = toml.split("\n[").filter(|t| t.starts_with("[queues.consumers]]"));
    let value = |table: &str, name: &str| {
        table.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    tables.into_iter().find(|t| value(t, "queue").as_deref() == Some(queue)).and_then(|t| value(t, key))
}

#[test]
fn audit_retries_fit_within_the_event_queues_max_retries() {
    // An audit-only retry must never push a delivered event past the
    // queue's max_retries into the dead-letter queue: AUDIT_RETRIES is
    // bounded by it (wrangler.toml says so beside max_retries).
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wrangler.toml")).unwrap();
    let max_retries: u32 = consumer_setting(&toml, "portcullis-events", "max_retries").unwrap().parse().unwrap();
    assert!(AUDIT_RETRIES <= max_retries, "AUDIT_RETRIES {AUDIT_RETRIES} > max_retries {max_retries}");
    assert!(toml.contains("AUDIT_RETRIES"), "wrangler.toml names the constant beside max_retries");
    // The reader reads what it should.
    assert_eq!(consumer_setting(&toml, "portcullis-events-dlq", "max_retries").as_deref(), Some("10"));
    assert_eq!(consumer_setting(&toml, "nope", "max_retries"), None);
}

/// SECURITY 49: the own view reads whether the address is verified, then
/// (separately) the takeover floor. Read the other way round, a planter's
/// listing that read the floor just before the owner's takeover, and the
/// flag just after, showed the owner's attempts from before the takeover
/// with their client.
#[test]
fn a_takeover_between_the_listings_reads_never_shows_the_planter_the_owners_client() {
    use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
    use portcullis::core::flows::EmailRequest;
    use std::rc::Rc;
    let mut rng = TestRandom(91);
    let (w, _, _) = setup(&mut rng);
    let w = Rc::new(w);
    let planter = signup_at(&w, &mut rng, 1_100, "carol@example.com", "planters-password-1");
    owner_tries(&w, &mut rng, 1_200, "carol@example.com");
    consume(&w);
    let hidden = own_page(&w, Some(&planter.access_token), "limit=200").unwrap();
    assert!(!serde_json::to_string(&hidden).unwrap().contains(OWNER_IP), "no race: hidden");
    // Carol signs in by magic link (a takeover) right after the planter's
    // listing read the floor.
    let w2 = Rc::clone(&w);
    *w.store.after_takeover_read.borrow_mut() = Some(Box::new(move || {
        let (deps, mut meta) = w2.at(1_400);
        meta.ip = Some(OWNER_IP.into());
        let mut rng = TestRandom(92);
        block_on(deps.request_magic_link(
            &meta,
            &mut rng,
            EmailRequest { email: "carol@example.com".into(), locale: None },
        ))
        .unwrap();
        let token = w2.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
        block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token, locale: None })).unwrap();
    }));
    // The takeover revoked the planter's session in its write: the page
    // read meanwhile is not answered.
    let raced = own_page(&w, Some(&planter.access_token), "limit=200");
    assert_eq!(raced.map(|p| serde_json::to_string(&p).unwrap()), Err(Error::InvalidToken(TokenError::SessionRevoked)));
    assert_eq!(w.events.count("magic_link_login"), 1, "the takeover did happen in between");
}
