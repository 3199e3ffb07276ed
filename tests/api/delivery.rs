//! Event delivery by the queue consumer's core: signed webhooks, emails,
//! idempotency per (event, target), retries with backoff, dead letters.

use std::cell::Cell;
use std::rc::Rc;

use portcullis::core::config::Config;
use portcullis::core::delivery::{self, Quarantine, Verdict};
use portcullis::core::events::{self, Envelope, Event, Received};
use portcullis::core::outbound::{HttpReply, SendError};
use portcullis::core::time::UnixTime;
use portcullis::core::webhook::WebhookSecret;

use crate::support::{block_on, config, MemCourier, MemLedger, TestRandom};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const A: &str = "https://a.example/hook";
const B: &str = "https://b.example/hook";

fn received(event: impl Into<Event>, seed: u64) -> Received {
    let env = Envelope::new(event, &mut TestRandom(seed), UnixTime(1_000));
    Received::parse(serde_json::from_str(&env.to_json()).unwrap()).unwrap()
}

fn login_event(seed: u64) -> Received {
    received(
        events::Login {
            user_id: "u1".into(),
            email: "a@example.com".into(),
            provider: "email".into(),
            ip_address: Some("203.0.113.7".into()),
            user_agent: None,
        },
        seed,
    )
}

fn magic(seed: u64, email: &str) -> Received {
    received(
        events::MagicLinkRequested {
            user_id: Some("u1".into()),
            email: email.into(),
            token: "tok-123".into(),
            locale: None,
        },
        seed,
    )
}

fn webhooks(extra: &[(&str, &str)]) -> Config {
    let urls = format!("{A},{B}");
    let mut vars = vec![("WEBHOOK_URLS", urls.as_str()), ("WEBHOOK_SECRET", SECRET), ("RETRY_BASE_DELAY_SECS", "2")];
    vars.extend_from_slice(extra);
    config(&vars)
}

fn deliver(cfg: &Config, ledger: &MemLedger, courier: &MemCourier, ev: &Received, now: i64) -> Verdict {
    block_on(delivery::deliver(cfg, ledger, courier, ev, UnixTime(now))).unwrap()
}

fn status(code: u16) -> Result<HttpReply, SendError> {
    Ok(HttpReply { status: code, body: "{}".into() })
}

#[test]
fn every_webhook_gets_the_envelope_signed_per_standard_webhooks() {
    let cfg = webhooks(&[]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = login_event(1);
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_005), Verdict::Ack);
    let secret = WebhookSecret::parse(SECRET).unwrap();
    for url in [A, B] {
        let sent = courier.sent_to(url);
        assert_eq!(sent.len(), 1, "{url}");
        let req = &sent[0];
        assert_eq!(req.header("webhook-id"), Some(ev.id.as_str()));
        assert_eq!(req.header("webhook-timestamp"), Some("1005"));
        assert!(secret.verify(&ev.id, UnixTime(1_005), &req.body, req.header("webhook-signature").unwrap()));
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body["id"], ev.id.as_str());
        assert_eq!(body["type"], "login");
        assert_eq!(body["timestamp"], "1970-01-01T00:16:40Z");
        assert_eq!(
            body["data"],
            serde_json::json!({"user_id": "u1", "email": "a@example.com", "provider": "email", "ip_address": "203.0.113.7", "user_agent": null})
        );
    }
    assert_eq!(courier.lines("portcullis.event").len(), 1);
    assert_eq!(courier.lines("portcullis.delivered").len(), 2);
}

#[test]
fn webhook_events_filters_by_type() {
    let cfg = webhooks(&[("WEBHOOK_EVENTS", "user_created")]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    assert_eq!(deliver(&cfg, &ledger, &courier, &login_event(2), 1_000), Verdict::Ack);
    assert!(courier.sent.borrow().is_empty());
    assert!(ledger.rows.borrow().is_empty(), "no targets: no ledger work");
    assert_eq!(courier.lines("portcullis.event").len(), 1, "still logged once");
}

#[test]
fn a_target_failing_twice_gets_the_event_once_and_the_others_are_not_resent() {
    let cfg = webhooks(&[]);
    let ledger = MemLedger::default();
    let b_calls = Rc::new(Cell::new(0));
    let counter = b_calls.clone();
    let courier = MemCourier::new(move |req| {
        if req.url == B {
            counter.set(counter.get() + 1);
            if counter.get() <= 2 {
                return if counter.get() == 1 { status(500) } else { Err(SendError::Timeout) };
            }
        }
        status(200)
    });
    let ev = login_event(3);
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Retry { delay_secs: 2 });
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_002), Verdict::Retry { delay_secs: 4 });
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_006), Verdict::Ack);
    assert_eq!(courier.sent_to(A).len(), 1, "A had it the first time and is never sent it again");
    assert_eq!(courier.sent_to(B).len(), 3);
    let row = ledger.row(&ev.id, &format!("webhook:{B}")).unwrap();
    assert_eq!((row.attempts, row.delivered_at), (3, Some(UnixTime(1_006))));
    assert_eq!(courier.lines("portcullis.event").len(), 1, "the event is announced once, not per attempt");
    let failures = courier.lines("portcullis.delivery_failed");
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["error"], "HTTP 500: {}");
    assert_eq!(failures[1]["error"], "no answer within 10000 ms");
    assert_eq!(failures[1]["retry_in_secs"], 4);
}

#[test]
fn a_duplicate_of_a_delivered_message_sends_nothing() {
    let cfg = webhooks(&[]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = login_event(4);
    deliver(&cfg, &ledger, &courier, &ev, 1_000);
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_001), Verdict::Ack);
    assert_eq!(courier.sent.borrow().len(), 2);
    assert_eq!(courier.lines("portcullis.event").len(), 1);
}

#[test]
fn a_target_claimed_by_another_consumer_is_retried_after_its_lease() {
    let cfg = webhooks(&[("WEBHOOK_EVENTS", "login")]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = login_event(5);
    // Another consumer claimed A at t=1000 and has not finished.
    block_on(portcullis::core::ports::DeliveryLedger::claim(
        &ledger,
        &ev.id,
        "login",
        &format!("webhook:{A}"),
        UnixTime(1_000),
        UnixTime(1_000 + delivery::LEASE_SECS as i64),
    ))
    .unwrap();
    let verdict = deliver(&cfg, &ledger, &courier, &ev, 1_010);
    assert_eq!(verdict, Verdict::Retry { delay_secs: delivery::LEASE_SECS as u32 - 10 });
    assert!(courier.sent_to(A).is_empty());
    assert_eq!(courier.sent_to(B).len(), 1);
}

#[test]
fn a_failing_ledger_is_an_error_and_sends_nothing() {
    let cfg = webhooks(&[]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    ledger.fail.set(true);
    assert!(block_on(delivery::deliver(&cfg, &ledger, &courier, &login_event(6), UnixTime(1_000))).is_err());
    assert!(courier.sent.borrow().is_empty());
}

#[test]
fn the_log_transport_prints_the_email_with_its_link() {
    let cfg = config(&[("MAGIC_LINK_URL", "http://127.0.0.1:8790/magic-link")]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = magic(7, "ada@example.com");
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Ack);
    let emails = courier.lines("portcullis.email");
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0]["to"], "ada@example.com");
    assert_eq!(emails[0]["event_id"], ev.id.as_str());
    assert!(emails[0]["text"].as_str().unwrap().contains("http://127.0.0.1:8790/magic-link?token=tok-123"));
    assert_eq!(ledger.row(&ev.id, "email:ada@example.com").unwrap().delivered_at, Some(UnixTime(1_000)));
    // The event's log line never shows the token, with the log transport too:
    // the printed email is the one place it appears, with its link on its own.
    assert_eq!(courier.lines("portcullis.event")[0]["data"]["token"], "[redacted]");
    assert_eq!(emails[0]["link"], "http://127.0.0.1:8790/magic-link?token=tok-123");
    // A redelivery does not print the email again.
    deliver(&cfg, &ledger, &courier, &ev, 1_001);
    assert_eq!(courier.lines("portcullis.email").len(), 1);
}

fn resend_config() -> Config {
    config(&[
        ("EMAIL_TRANSPORT", "resend"),
        ("EMAIL_API_URL", "https://mail.example/emails"),
        ("EMAIL_API_KEY", "re_test"),
        ("EMAIL_FROM", "Acme <auth@acme.example>"),
        ("MAGIC_LINK_URL", "https://acme.example/magic"),
        ("PASSWORD_RESET_URL", "https://acme.example/reset"),
        ("EMAIL_VERIFY_URL", "https://acme.example/verify"),
        ("RETRY_BASE_DELAY_SECS", "5"),
    ])
}

#[test]
fn the_resend_transport_posts_to_the_api_and_retries_its_failures() {
    let cfg = resend_config();
    let ledger = MemLedger::default();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    let courier = MemCourier::new(move |_| {
        c.set(c.get() + 1);
        if c.get() == 1 {
            status(429)
        } else {
            status(200)
        }
    });
    let ev = magic(8, "bob@example.com");
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Retry { delay_secs: 5 });
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_005), Verdict::Ack);
    let sent = courier.sent_to("https://mail.example/emails");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].header("authorization"), Some("Bearer re_test"));
    assert_eq!(sent[0].header("idempotency-key"), sent[1].header("idempotency-key"));
    let body: serde_json::Value = serde_json::from_str(&sent[1].body).unwrap();
    assert_eq!(body["to"], serde_json::json!(["bob@example.com"]));
    assert!(body["text"].as_str().unwrap().contains("https://acme.example/magic?token=tok-123"));
    assert!(courier.lines("portcullis.email").is_empty());
    // Production logs never show the one-time token.
    let logged =
        serde_json::to_string(&courier.lines.borrow().iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()).unwrap();
    assert!(!logged.contains("tok-123"), "{logged}");
}

#[test]
fn an_email_to_an_unusable_address_is_dead_lettered_at_once_not_dropped() {
    let cfg = config(&[("RETRY_BASE_DELAY_SECS", "3")]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = magic(9, "not an address");
    let Verdict::Reject { reason } = deliver(&cfg, &ledger, &courier, &ev, 1_000) else { panic!("not rejected") };
    assert!(reason.starts_with("email:not an address: email: "), "{reason}");
    assert!(courier.lines("portcullis.email").is_empty());
    let failed = courier.lines("portcullis.delivery_failed");
    assert_eq!((failed[0]["rejected"].as_bool(), failed[0].get("retry_in_secs")), (Some(true), None));
}

// ---------------------------------------------------------------------------
// Email providers: what each answer means. Throttling, server errors,
// timeouts and network errors are retried with backoff; a request refused
// as it is (bad key, unverified sender, invalid or suppressed recipient)
// goes to the dead-letter queue at once.
// ---------------------------------------------------------------------------

fn provider_config(transport: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("EMAIL_TRANSPORT", transport),
        ("EMAIL_FROM", "Acme <auth@acme.example>"),
        ("MAGIC_LINK_URL", "https://acme.example/magic"),
        ("PASSWORD_RESET_URL", "https://acme.example/reset"),
        ("EMAIL_VERIFY_URL", "https://acme.example/verify"),
        ("RETRY_BASE_DELAY_SECS", "5"),
    ];
    if transport != "cloudflare" {
        vars.push(("EMAIL_API_KEY", "key_s3cret"));
    }
    vars.extend_from_slice(extra);
    config(&vars)
}

#[test]
fn each_provider_retries_throttling_server_errors_and_timeouts_and_rejects_refusals() {
    type Answer = fn() -> Result<HttpReply, SendError>;
    let retried: [(&str, Answer); 6] = [
        ("429", || status(429)),
        ("500", || status(500)),
        ("503", || status(503)),
        ("408", || status(408)),
        ("timeout", || Err(SendError::Timeout)),
        ("network", || Err(SendError::Network("connection refused".into()))),
    ];
    // Refusals of the account or configuration, not of the message: retried too.
    let account: [(&str, Answer); 4] =
        [("401", || status(401)), ("403", || status(403)), ("404", || status(404)), ("302", || status(302))];
    let postmark_412: Answer =
        || Ok(HttpReply { status: 422, body: r#"{"ErrorCode":412,"Message":"Account pending"}"#.into() });
    // Refusals of the message (recipient or payload), per provider.
    let postmark_406: Answer =
        || Ok(HttpReply { status: 422, body: r#"{"ErrorCode":406,"Message":"Inactive recipient"}"#.into() });
    for transport in ["resend", "postmark", "sendgrid"] {
        let cfg = provider_config(transport, &[]);
        let pending = (transport == "postmark").then_some(("422 412", postmark_412));
        for (seed, (what, answer)) in (100..).zip(retried.iter().chain(&account).copied().chain(pending)) {
            let (ledger, courier) = (MemLedger::default(), MemCourier::new(move |_| answer()));
            let v = deliver(&cfg, &ledger, &courier, &magic(seed, "ada@example.com"), 1_000);
            assert_eq!(v, Verdict::Retry { delay_secs: 5 }, "{transport} {what}");
        }
        let rejected: Vec<(&str, Answer)> = match transport {
            "resend" => vec![("400", || status(400)), ("422", || status(422))],
            "postmark" => vec![("422", postmark_406)],
            _ => vec![("400", || status(400)), ("413", || status(413))],
        };
        for (seed, (what, answer)) in (200..).zip(rejected) {
            let (ledger, courier) = (MemLedger::default(), MemCourier::new(move |_| answer()));
            let ev = magic(seed, "ada@example.com");
            match deliver(&cfg, &ledger, &courier, &ev, 1_000) {
                Verdict::Reject { reason } => {
                    assert!(reason.starts_with(&format!("email:ada@example.com: HTTP {what}")), "{transport}: {reason}")
                }
                other => panic!("{transport} {what}: {other:?}"),
            }
            assert_eq!(courier.sent.borrow().len(), 1, "{transport} {what}: tried once");
        }
    }
}

#[test]
fn a_refused_email_waits_for_the_targets_being_retried_then_is_dead_lettered_with_its_reason() {
    let cfg = provider_config("postmark", &[("WEBHOOK_URLS", A), ("WEBHOOK_SECRET", SECRET)]);
    let ledger = MemLedger::default();
    let hook_calls = Rc::new(Cell::new(0));
    let h = hook_calls.clone();
    let courier = MemCourier::new(move |req| {
        if req.url == A {
            h.set(h.get() + 1);
            return if h.get() == 1 { status(503) } else { status(200) };
        }
        Ok(HttpReply { status: 422, body: r#"{"ErrorCode":406,"Message":"Inactive recipient"}"#.into() })
    });
    let ev = magic(11, "gone@example.com");
    // The webhook failed too: the message is retried, email and all.
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Retry { delay_secs: 5 });
    let Verdict::Reject { reason } = deliver(&cfg, &ledger, &courier, &ev, 1_005) else { panic!("not rejected") };
    assert_eq!(reason, r#"email:gone@example.com: HTTP 422: {"ErrorCode":406,"Message":"Inactive recipient"}"#);
    assert_eq!(ledger.row(&ev.id, &format!("webhook:{A}")).unwrap().delivered_at, Some(UnixTime(1_005)));
    // The edge sends the message, wrapped with its reason, to the dead-letter queue.
    let message = ev.to_value();
    let wrapped = serde_json::to_value(delivery::Rejection::new(message.clone(), &reason)).unwrap();
    let letter = block_on(delivery::dead_letter(&ledger, &courier, "m-11", Ok(wrapped), UnixTime(1_006))).unwrap();
    assert_eq!(letter.id, ev.id);
    assert_eq!(letter.reason, format!("rejected: {reason}"));
    assert_eq!(letter.failed.len(), 1);
    assert_eq!(letter.failed[0].target, "email:gone@example.com");
    assert_eq!(letter.failed[0].attempts, 2);
    // Stored unwrapped (its secret masked, as it came in clear here): the body is the event.
    let stored: serde_json::Value = serde_json::from_str(&letter.body).unwrap();
    assert_eq!(stored["id"], ev.id.as_str());
    assert_eq!(stored["data"]["token"], "[redacted]");
    assert_eq!(courier.lines("portcullis.dead_letter")[0]["reason"], letter.reason.as_str());
}

#[test]
fn an_api_key_a_provider_echoes_is_neither_logged_nor_recorded() {
    let cfg = provider_config("sendgrid", &[]);
    let ledger = MemLedger::default();
    let courier = MemCourier::new(|_| {
        Ok(HttpReply { status: 400, body: r#"{"errors":[{"message":"bad key key_s3cret"}]}"#.into() })
    });
    let ev = magic(12, "ada@example.com");
    let Verdict::Reject { reason } = deliver(&cfg, &ledger, &courier, &ev, 1_000) else { panic!("not rejected") };
    assert!(!reason.contains("key_s3cret") && reason.contains("[redacted]"), "{reason}");
    let row = ledger.row(&ev.id, "email:ada@example.com").unwrap();
    assert!(!row.last_error.unwrap().contains("key_s3cret"));
    let logged = format!("{:?}", courier.lines.borrow());
    assert!(!logged.contains("key_s3cret"), "{logged}");
}

#[test]
fn the_cloudflare_transport_hands_a_mime_message_to_the_binding_and_classifies_its_errors() {
    use portcullis::core::mail::BindingError;
    let cfg = provider_config("cloudflare", &[]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = magic(13, "ada@example.com");
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Ack);
    let sent = courier.mime_sent.borrow();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].from.as_str(), sent[0].to.as_str()), ("auth@acme.example", "ada@example.com"));
    assert!(sent[0].raw.contains(&format!("Message-ID: <{}.magic_link_requested@acme.example>", ev.id)));
    assert!(sent[0].raw.contains("multipart/alternative"));
    assert!(courier.sent.borrow().is_empty(), "no HTTP request");
    drop(sent);

    let refused =
        |code: &'static str| move |_: &_| Err(BindingError::Refused { code: Some(code.into()), message: "no".into() });
    let courier = MemCourier::binding(refused("E_RATE_LIMIT_EXCEEDED"));
    assert_eq!(
        deliver(&cfg, &MemLedger::default(), &courier, &magic(14, "a@example.com"), 1_000),
        Verdict::Retry { delay_secs: 5 }
    );
    let courier = MemCourier::binding(|_| Err(BindingError::Timeout));
    assert_eq!(
        deliver(&cfg, &MemLedger::default(), &courier, &magic(15, "a@example.com"), 1_000),
        Verdict::Retry { delay_secs: 5 }
    );
    let courier = MemCourier::binding(refused("E_SENDER_NOT_VERIFIED"));
    let Verdict::Reject { reason } = deliver(&cfg, &MemLedger::default(), &courier, &magic(16, "a@example.com"), 1_000)
    else {
        panic!("not rejected")
    };
    assert_eq!(reason, "email:a@example.com: send_email refused it: E_SENDER_NOT_VERIFIED: no");

    // The binding's error texts are capped and kept on one line, like a provider's answer.
    let long = "x\n".repeat(5_000);
    let courier = MemCourier::binding(move |_| Err(BindingError::Refused { code: None, message: long.clone() }));
    let (ledger, ev) = (MemLedger::default(), magic(18, "a@example.com"));
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Retry { delay_secs: 5 });
    let last_error = ledger.row(&ev.id, "email:a@example.com").unwrap().last_error.unwrap();
    assert!(last_error.chars().count() <= 301 && !last_error.contains('\n'), "{} chars", last_error.len());
    assert!(last_error.starts_with("send_email refused it: x x") && last_error.ends_with('…'), "{last_error}");
}

#[test]
fn emails_are_written_in_the_language_the_event_carries() {
    let cfg = provider_config("resend", &[]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = received(
        events::MagicLinkRequested {
            user_id: None,
            email: "ada@example.com".into(),
            token: "tok-fr".into(),
            locale: Some("fr-CA".into()),
        },
        17,
    );
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Ack);
    let body: serde_json::Value = serde_json::from_str(&courier.sent.borrow()[0].body).unwrap();
    assert_eq!(body["subject"], "Votre lien de connexion");
    assert!(body["text"].as_str().unwrap().starts_with("Bonjour,"));
    assert!(body["html"].as_str().unwrap().contains("<html lang=\"fr\">"));
}

#[test]
fn dead_letters_record_the_undelivered_targets_once() {
    let cfg = webhooks(&[]);
    let ledger = MemLedger::default();
    let courier = MemCourier::new(|req| if req.url == B { status(503) } else { status(200) });
    let ev = login_event(10);
    deliver(&cfg, &ledger, &courier, &ev, 1_000);
    deliver(&cfg, &ledger, &courier, &ev, 1_002);
    let body = Ok(ev.to_value());
    let letter = block_on(delivery::dead_letter(&ledger, &courier, "m-1", body.clone(), UnixTime(2_000))).unwrap();
    assert_eq!(letter.id, ev.id);
    assert_eq!(letter.event_type.as_deref(), Some("login"));
    assert_eq!(letter.reason, "retries_exhausted");
    assert_eq!(letter.failed.len(), 1);
    assert_eq!(letter.failed[0].target, format!("webhook:{B}"));
    assert_eq!(letter.failed[0].attempts, 2);
    assert_eq!(letter.failed[0].last_error.as_deref(), Some("HTTP 503: {}"));
    // The dead-letter queue may deliver twice: recorded once, logged each time.
    block_on(delivery::dead_letter(&ledger, &courier, "m-1", body, UnixTime(2_001))).unwrap();
    assert_eq!(ledger.dead.borrow().len(), 1);
    let lines = courier.lines("portcullis.dead_letter");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], ev.id.as_str());
    assert_eq!(lines[0]["event"]["type"], "login");
}

#[test]
fn malformed_messages_are_dead_lettered_with_their_reason() {
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let q = Quarantine::new("m-7", "envelope: missing field `id`", r#"{"type":"login"}"#);
    let letter =
        block_on(delivery::dead_letter(&ledger, &courier, "m-8", Ok(serde_json::to_value(&q).unwrap()), UnixTime(5)))
            .unwrap();
    assert_eq!(letter.id, "msg:m-7");
    assert_eq!(letter.reason, "malformed: envelope: missing field `id`");
    assert_eq!(letter.body, r#"{"type":"login"}"#);
    let other =
        block_on(delivery::dead_letter(&ledger, &courier, "m-9", Ok(serde_json::json!([1, 2])), UnixTime(5))).unwrap();
    assert_eq!(other.id, "msg:m-9");
    assert!(other.reason.starts_with("malformed: "));
    assert_eq!(other.body, "[1,2]");
    assert_eq!(ledger.dead.borrow().len(), 2);
    assert_eq!(courier.lines("portcullis.dead_letter").len(), 2);
}

#[test]
fn a_dead_letter_is_logged_even_when_the_ledger_is_down() {
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    ledger.fail.set(true);
    let q = Quarantine::new("m-1", "bad", "x");
    let r =
        block_on(delivery::dead_letter(&ledger, &courier, "m-1", Ok(serde_json::to_value(&q).unwrap()), UnixTime(5)));
    assert!(r.is_err());
    assert_eq!(courier.lines("portcullis.dead_letter").len(), 1);
}

// ---------------------------------------------------------------------------
// Secrets at rest: the four events that carry a one-time secret travel and
// rest sealed, are opened only to be delivered, and are logged masked.
// ---------------------------------------------------------------------------

/// The four secret-carrying events, with their secrets.
fn secret_events() -> Vec<(Event, &'static str)> {
    vec![
        (
            events::MagicLinkRequested {
                user_id: Some("u1".into()),
                email: "a@example.com".into(),
                token: "tok-magic-1".into(),
                locale: None,
            }
            .into(),
            "tok-magic-1",
        ),
        (
            events::EmailOtpRequested {
                user_id: Some("u1".into()),
                email: "a@example.com".into(),
                code: "804211".into(),
                locale: None,
            }
            .into(),
            "804211",
        ),
        (
            events::PasswordResetRequested {
                user_id: "u1".into(),
                email: "a@example.com".into(),
                token: "tok-reset-2".into(),
                locale: None,
            }
            .into(),
            "tok-reset-2",
        ),
        (
            events::EmailVerificationRequested {
                user_id: "u1".into(),
                email: "a@example.com".into(),
                token: "tok-verify-3".into(),
                locale: None,
            }
            .into(),
            "tok-verify-3",
        ),
    ]
}

/// The message body the queue sink sends (and the outbox keeps) for `event`.
fn queued(cfg: &Config, event: Event, seed: u64) -> serde_json::Value {
    let env = Envelope::new(event, &mut TestRandom(seed), UnixTime(1_000));
    let text = env.to_sealed_json(&events::secrets_key(&cfg.kek), &mut TestRandom(seed + 1)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn all_lines(courier: &MemCourier) -> String {
    serde_json::to_string(&courier.lines.borrow().iter().filter(|(m, _)| m != "portcullis.email").collect::<Vec<_>>())
        .unwrap()
}

#[test]
fn queued_secrets_are_sealed_opened_only_for_delivery_and_never_logged() {
    let cfg = webhooks(&[
        ("MAGIC_LINK_URL", "http://127.0.0.1:8790/magic-link"),
        ("PASSWORD_RESET_URL", "http://127.0.0.1:8790/reset"),
        ("EMAIL_VERIFY_URL", "http://127.0.0.1:8790/verify"),
    ]);
    let key = events::secrets_key(&cfg.kek);
    for (i, (event, secret)) in secret_events().into_iter().enumerate() {
        let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
        let message = queued(&cfg, event, 40 + 2 * i as u64);
        assert!(!message.to_string().contains(secret), "queued in clear: {message}");
        let ev = Received::open(message, &key).unwrap();
        assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Ack);
        // Webhooks get the envelope as specified, secret included.
        for url in [A, B] {
            let body: serde_json::Value = serde_json::from_str(&courier.sent_to(url)[0].body).unwrap();
            assert_eq!(body, ev.to_value(), "{url}");
            assert!(body.to_string().contains(secret));
        }
        // The log transport prints the email (development's channel for it) ...
        let email = &courier.lines("portcullis.email")[0];
        assert!(email["text"].as_str().unwrap().contains(secret));
        // ... and no other line shows it.
        let event_line = &courier.lines("portcullis.event")[0];
        assert_eq!(event_line["id"], ev.id.as_str());
        assert!(event_line["data"].as_object().unwrap().values().any(|v| v == "[redacted]"), "{event_line}");
        let logged = all_lines(&courier);
        assert!(!logged.contains(secret), "{logged}");
    }
}

#[test]
fn dead_letters_keep_the_secret_sealed_so_they_can_be_sent_again() {
    let cfg = webhooks(&[]);
    let key = events::secrets_key(&cfg.kek);
    for (i, (event, secret)) in secret_events().into_iter().enumerate() {
        let (ledger, courier) = (MemLedger::default(), MemCourier::new(|_| status(500)));
        let message = queued(&cfg, event, 60 + 2 * i as u64);
        let ev = Received::open(message.clone(), &key).unwrap();
        deliver(&cfg, &ledger, &courier, &ev, 1_000);
        // The platform moves the message, as queued, to the dead-letter queue.
        let letter = block_on(delivery::dead_letter(&ledger, &courier, "m-1", Ok(message), UnixTime(2_000))).unwrap();
        assert_eq!(letter.id, ev.id);
        assert_eq!(letter.reason, "retries_exhausted");
        assert!(!letter.body.contains(secret), "stored in clear: {}", letter.body);
        assert_eq!(ledger.dead.borrow()[0].body, letter.body);
        // Sent to the queue again, the stored body is delivered like the original.
        let again = Received::open(serde_json::from_str(&letter.body).unwrap(), &key).unwrap();
        assert_eq!(again, ev);
        let line = &courier.lines("portcullis.dead_letter")[0];
        assert_eq!(line["event"]["id"], ev.id.as_str());
        let logged = all_lines(&courier);
        assert!(!logged.contains(secret), "{logged}");
    }
}

#[test]
fn a_dead_letter_queued_in_clear_is_stored_masked() {
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let old = magic(70, "old@example.com").to_value();
    assert!(old.to_string().contains("tok-123"));
    let letter = block_on(delivery::dead_letter(&ledger, &courier, "m-1", Ok(old), UnixTime(5))).unwrap();
    assert!(!letter.body.contains("tok-123"), "{}", letter.body);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&letter.body).unwrap()["data"]["token"], "[redacted]");
    assert!(!all_lines(&courier).contains("tok-123"));
}

#[test]
fn a_failure_that_echoes_the_secret_is_logged_and_recorded_without_it() {
    let cfg = webhooks(&[]);
    // A receiver that quotes the request body in its error page.
    let courier = MemCourier::new(|req| {
        if req.url == B {
            Ok(HttpReply { status: 400, body: format!("bad payload: {}", req.body) })
        } else {
            status(200)
        }
    });
    let ledger = MemLedger::default();
    let ev = magic(72, "echo@example.com");
    assert!(matches!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Retry { .. }));
    let failed = &courier.lines("portcullis.delivery_failed")[0];
    assert!(failed["error"].as_str().unwrap().starts_with("HTTP 400: bad payload"), "{failed}");
    assert!(!all_lines(&courier).contains("tok-123"));
    let row = ledger.row(&ev.id, &format!("webhook:{B}")).unwrap();
    assert!(!row.last_error.unwrap().contains("tok-123"));
    let letter = block_on(delivery::dead_letter(&ledger, &courier, "m-1", Ok(ev.to_value()), UnixTime(2_000))).unwrap();
    assert!(!serde_json::to_string(&letter.failed).unwrap().contains("tok-123"));
}

#[test]
fn a_sealed_token_cannot_be_redirected_by_editing_the_queued_envelope() {
    let cfg = config(&[]);
    let key = events::secrets_key(&cfg.kek);
    let event: Event = events::PasswordResetRequested {
        user_id: "u1".into(),
        email: "victim@corp.example".into(),
        token: "RESET-TOKEN-OF-VICTIM".into(),
        locale: None,
    }
    .into();
    let mut message = queued(&cfg, event, 80);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let ev = Received::open(message.clone(), &key).unwrap();
    assert_eq!(deliver(&cfg, &ledger, &courier, &ev, 1_000), Verdict::Ack);
    // The same body with another recipient (an outbox row, a redriven dead
    // letter, a queue send): the seal no longer opens, nothing is mailed.
    message["data"]["email"] = "attacker@evil.example".into();
    assert!(Received::open(message.clone(), &key).is_err(), "the victim's token would go to the attacker");
    // It is retried like any seal that does not open, then quarantined with
    // its secret still sealed, and never delivered.
    let error = Received::open(message.clone(), &key).unwrap_err();
    assert_eq!(delivery::retry_unopened(&cfg, &error, delivery::UNOPENED_RETRIES + 1), None);
    let q = delivery::quarantine("m-80", &error, delivery::UNOPENED_RETRIES + 1, Some(message));
    let letter =
        block_on(delivery::dead_letter(&ledger, &courier, "m-81", Ok(serde_json::to_value(&q).unwrap()), UnixTime(9)))
            .unwrap();
    assert!(letter.reason.starts_with("unopened: password_reset_requested: the sealed token does not open"));
    assert!(!letter.body.contains("RESET-TOKEN-OF-VICTIM"), "{}", letter.body);
    assert_eq!(courier.lines("portcullis.email").len(), 1, "mailed once, to the victim");
}

#[test]
fn a_seal_that_does_not_open_is_retried_with_backoff_before_it_is_quarantined() {
    let cfg = webhooks(&[]); // RETRY_BASE_DELAY_SECS=2
    let other = events::secrets_key(&portcullis::core::signing_keys::Kek::from_bytes([42; 32]));
    let (event, secret) = secret_events().remove(0);
    let message = queued(&cfg, event, 90);
    // Sealed under another KEY_ENCRYPTION_KEY (an isolate on the previous
    // one, while a change rolls out).
    let error = Received::open(message.clone(), &other).unwrap_err();
    assert!(matches!(error, events::OpenError::Unopened(_)), "{error:?}");
    let delays: Vec<Option<u32>> = (1..=5).map(|a| delivery::retry_unopened(&cfg, &error, a)).collect();
    assert_eq!(delays, [Some(2), Some(4), Some(8), None, None]);
    // The isolate that has the right key delivers it on a retry.
    assert_eq!(Received::open(message.clone(), &events::secrets_key(&cfg.kek)).unwrap().event.secret(), Some(secret));
    // After the retries: quarantined, still sealed, so it can be redriven
    // once the key that sealed it is back.
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let q = delivery::quarantine("m-90", &error, 4, Some(message.clone()));
    assert!(q.quarantined.unopened);
    let letter =
        block_on(delivery::dead_letter(&ledger, &courier, "m-91", Ok(serde_json::to_value(&q).unwrap()), UnixTime(9)))
            .unwrap();
    assert!(letter.reason.starts_with("unopened: ") && letter.reason.ends_with("tried 4 times"), "{}", letter.reason);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&letter.body).unwrap(), message);
    // A malformed message is not retried.
    let malformed = events::OpenError::Malformed("envelope: missing field `id`".into());
    assert_eq!(delivery::retry_unopened(&cfg, &malformed, 1), None);
}

#[test]
fn a_quarantined_body_is_stored_and_logged_masked() {
    // A wrapper made before secrets were sealed, its body in clear.
    let env = Envelope::new(
        events::MagicLinkRequested {
            user_id: None,
            email: "a@example.com".into(),
            token: "CLEAR-TOKEN".into(),
            locale: None,
        },
        &mut TestRandom(4),
        UnixTime(1_000),
    );
    let q = Quarantine::new("m-9", "envelope: whatever", &env.to_json());
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let letter =
        block_on(delivery::dead_letter(&ledger, &courier, "m-9", Ok(serde_json::to_value(&q).unwrap()), UnixTime(5)))
            .unwrap();
    assert!(!letter.body.contains("CLEAR-TOKEN"), "stored: {}", letter.body);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&letter.body).unwrap()["data"]["token"], "[redacted]");
    assert!(!ledger.dead.borrow()[0].body.contains("CLEAR-TOKEN"));
    assert!(!all_lines(&courier).contains("CLEAR-TOKEN"), "{}", all_lines(&courier));
    // Text that is not JSON (cut at the cap) is withheld when it may hold a secret.
    let json = env.to_json();
    let cut_at = json.find("CLEAR-TOKEN").unwrap() + 5;
    let cut = Quarantine::new("m-10", "envelope: whatever", &json[..cut_at]);
    let letter = block_on(delivery::dead_letter(
        &ledger,
        &courier,
        "m-10",
        Ok(serde_json::to_value(&cut).unwrap()),
        UnixTime(5),
    ))
    .unwrap();
    assert_eq!(letter.body, format!("[withheld: {cut_at} characters, not JSON, that may hold a secret]"));
    assert!(!all_lines(&courier).contains("CLEAR"), "{}", all_lines(&courier));
}

#[test]
fn a_malformed_message_is_quarantined_without_its_secret_in_body_or_reason() {
    // No id, and the code as a number: malformed, and serde's error quotes the value.
    let body = serde_json::json!({
        "type": "email_otp_requested", "timestamp": "t", "v": 1,
        "data": {"user_id": null, "email": "a@example.com", "code": 804211}
    });
    let cfg = config(&[]);
    let error = Received::open(body.clone(), &events::secrets_key(&cfg.kek)).unwrap_err();
    assert!(matches!(error, events::OpenError::Malformed(_)));
    let q = delivery::quarantine("m-11", &error, 1, Some(body));
    let text = serde_json::to_string(&q).unwrap();
    assert!(!text.contains("804211"), "{text}");
    assert!(!q.quarantined.unopened);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    let letter = block_on(delivery::dead_letter(
        &ledger,
        &courier,
        "m-11",
        Ok(serde_json::from_str(&text).unwrap()),
        UnixTime(5),
    ))
    .unwrap();
    assert!(letter.reason.starts_with("malformed: "), "{}", letter.reason);
    assert!(!serde_json::to_string(&letter).unwrap().contains("804211"));
}

#[test]
fn a_masked_dead_letter_sent_to_the_queue_again_is_refused_not_mailed() {
    let cfg = config(&[]);
    let (ledger, courier) = (MemLedger::default(), MemCourier::ok());
    // A dead letter that arrived in clear is stored masked ...
    let letter = block_on(delivery::dead_letter(
        &ledger,
        &courier,
        "m-1",
        Ok(magic(73, "old@example.com").to_value()),
        UnixTime(5),
    ))
    .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&letter.body).unwrap();
    assert_eq!(stored["data"]["token"], "[redacted]");
    // ... and redriven as it is, it is malformed: no mail with "[redacted]" for a link.
    let redriven = Received::open(stored, &events::secrets_key(&cfg.kek));
    assert!(redriven.is_err(), "{redriven:?}");
}

#[test]
fn an_echoed_secret_is_scrubbed_before_the_reply_is_cut() {
    let cfg = config(&[("WEBHOOK_URLS", A), ("WEBHOOK_SECRET", SECRET)]);
    for (i, (event, secret)) in secret_events().into_iter().enumerate() {
        let ev = received(event, 100 + i as u64);
        let body = ev.to_value().to_string();
        let at = body.find(secret).unwrap();
        // Error pages whose text before the echoed body puts the 200-character
        // cut after `kept` characters of the secret.
        for kept in 1..secret.len() {
            let prefix = "x".repeat(200 - kept - at);
            let courier =
                MemCourier::new(move |req| Ok(HttpReply { status: 400, body: format!("{prefix}{}", req.body) }));
            let ledger = MemLedger::default();
            deliver(&cfg, &ledger, &courier, &ev, 1_000);
            let failed = courier.lines("portcullis.delivery_failed")[0]["error"].as_str().unwrap().to_string();
            let row = ledger.row(&ev.id, &format!("webhook:{A}")).unwrap().last_error.unwrap();
            for text in [&failed, &row] {
                assert!(text.starts_with("HTTP 400: xxx"), "{text}");
                assert!(!text.ends_with(&format!("{}…", &secret[..kept])), "{kept} of {secret} kept: {text}");
                assert!(kept < 4 || !text.contains(&secret[..kept]), "{kept} of {secret} kept: {text}");
            }
        }
    }
}
