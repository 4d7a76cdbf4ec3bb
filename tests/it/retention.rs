//! Retention, legal hold and disposition (`src/retention.rs`): nothing is listed before its
//! time, nothing is deleted before an admin approves, holds (on a record, on a person) win
//! at listing and at approval, a message filed elsewhere stays, every step is audited and
//! the chain still verifies; the console pages work end to end.

use docket::audit::{self, ChainStatus};
use docket::directory::{self, RecordPatch};
use docket::retention::{self, HoldOn};
use docket::tenancy::Tenant;
use sqlx::Row;

use crate::both_backends;
use crate::common::*;

fn years(n: i64) -> time::Duration {
    time::Duration::days(365 * n + n / 4 + 1)
}

async fn close(t: &Tenant, id: &str) {
    let patch = RecordPatch {
        status: Some("closed".into()),
        ..Default::default()
    };
    directory::update_record(&t.db, id, &patch, "adam@a.test")
        .await
        .unwrap();
}

/// Files a message from `from` to `targets`; returns its filings' ids by target.
async fn file_from(app: &TestApp, subject: &str, from: &str, targets: &[&str]) -> Vec<String> {
    let raw = format!(
        "From: {from}\r\nTo: alice@a.test\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\n\r\nBody of {subject}\r\n",
        subject.replace(' ', "-")
    );
    let r = app
        .post_filing(
            &app.token("alice@a.test"),
            &filing_body(raw.as_bytes(), targets),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    v["filings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

async fn count(t: &Tenant, sql: &str, id: &str) -> i64 {
    sqlx::query(sql)
        .bind(id)
        .fetch_one(&t.db)
        .await
        .unwrap()
        .get(0)
}

async fn actions(t: &Tenant) -> Vec<String> {
    sqlx::query("SELECT action FROM audit_log ORDER BY seq")
        .fetch_all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

both_backends!(
    disposition_waits_for_approval_and_holds_win,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let now = || app.state.catalog.clock().now();
        let (k1, m1) = (
            record_id(&t, "contract", "K-1").await,
            record_id(&t, "matter", "M-1").await,
        );
        retention::set_policy(&t.db, "contract", Some(7), "adam@a.test")
            .await
            .unwrap();
        file_from(&app, "plain one", "cfo@globex.com", &["contract:K-1"]).await;
        file_from(
            &app,
            "from the witness",
            "witness@globex.com",
            &["contract:K-1"],
        )
        .await;
        file_from(&app, "plain two", "cfo@globex.com", &["contract:K-1"]).await;
        let shared = file_from(
            &app,
            "also a matter",
            "cfo@globex.com",
            &["contract:K-1", "matter:M-1"],
        )
        .await;
        let blobs_before = blob_files(&t);

        // Open records are never listed; closed ones only once their time has come.
        assert!(retention::evaluate(&t.db, now() + years(8), "test")
            .await
            .unwrap()
            .is_none());
        close(&t, &k1).await;
        assert!(retention::evaluate(&t.db, now() + years(6), "test")
            .await
            .unwrap()
            .is_none());
        let list = retention::evaluate(&t.db, now() + years(7), "test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(list.status, "pending");
        assert_eq!(list.items.len(), 1);
        assert_eq!(
            (list.items[0].record.as_str(), list.items[0].filings),
            ("contract:K-1", 4)
        );
        // Listed once: the next evaluation does not list it again while it waits.
        assert!(retention::evaluate(&t.db, now() + years(7), "test")
            .await
            .unwrap()
            .is_none());
        // Nothing is deleted before the approval.
        assert_eq!(
            count(&t, "SELECT COUNT(*) FROM filings WHERE record_id = $1", &k1).await,
            4
        );

        // A hold on a person, placed after the listing, still wins at approval.
        retention::place_hold(
            &t.db,
            &HoldOn::Person("Witness@Globex.com".into()),
            "Globex v. Us",
            "adam@a.test",
        )
        .await
        .unwrap();
        let done = retention::approve(&t.db, &list.id, "adam@a.test", now() + years(7))
            .await
            .unwrap();
        assert_eq!(done.status, "approved");
        assert_eq!(
            (done.items[0].disposed, done.items[0].held),
            (Some(3), Some(1))
        );
        assert_eq!(
            count(&t, "SELECT COUNT(*) FROM filings WHERE record_id = $1", &k1).await,
            1
        );
        // The message also filed to M-1 stays, and is still served from there.
        assert_eq!(
            count(&t, "SELECT COUNT(*) FROM filings WHERE record_id = $1", &m1).await,
            1
        );
        let r = app
            .get(
                &app.token("alice@a.test"),
                &format!("/v1/filings/{}/raw", shared[1]),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            count(&t, "SELECT COUNT(*) FROM messages WHERE id <> $1", "").await,
            2
        );
        // Decided once.
        let again = retention::approve(&t.db, &list.id, "adam@a.test", now() + years(7))
            .await
            .unwrap_err();
        assert_eq!(again.status().as_u16(), 422);
        // The two messages filed nowhere else lose their blobs at the next sweep.
        docket::maintenance::sweep_tenant(&t, std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(blob_files(&t), blobs_before - 2);

        // Audited, and the chain still verifies.
        let acts = actions(&t).await;
        for a in [
            "retention.policy_set",
            "record.closed",
            "disposition.listed",
            "hold.placed",
            "record.disposed",
            "disposition.approved",
        ] {
            assert!(acts.iter().any(|x| x == a), "{a} missing from {acts:?}");
        }
        assert!(matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ));
    }
);

both_backends!(
    a_held_record_is_never_listed_and_a_rejected_list_deletes_nothing,
    |app: TestApp| async move {
        let t = app.tenant(&app.firm_a).await;
        let later = app.state.catalog.clock().now() + years(3);
        let c1 = record_id(&t, "case", "C-1").await;
        retention::set_policy(&t.db, "case", Some(2), "adam@a.test")
            .await
            .unwrap();
        file_from(&app, "case mail", "clerk@court.test", &["case:C-1"]).await;
        close(&t, &c1).await;
        let hold = retention::place_hold(
            &t.db,
            &HoldOn::Record(c1.clone()),
            "Appeal pending",
            "adam@a.test",
        )
        .await
        .unwrap();
        assert_eq!(hold.record.as_deref(), Some("case:C-1"));
        assert!(retention::evaluate(&t.db, later, "test")
            .await
            .unwrap()
            .is_none());
        retention::release_hold(&t.db, &hold.id, "adam@a.test")
            .await
            .unwrap();
        let e = retention::release_hold(&t.db, &hold.id, "adam@a.test")
            .await
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 422);
        let list = retention::evaluate(&t.db, later, "test")
            .await
            .unwrap()
            .unwrap();
        // Held again between listing and approval: everything is kept.
        let again = retention::place_hold(
            &t.db,
            &HoldOn::Record(c1.clone()),
            "New claim",
            "adam@a.test",
        )
        .await
        .unwrap();
        let done = retention::approve(&t.db, &list.id, "adam@a.test", later)
            .await
            .unwrap();
        assert_eq!(
            (done.items[0].disposed, done.items[0].held),
            (Some(0), Some(1))
        );
        retention::release_hold(&t.db, &again.id, "adam@a.test")
            .await
            .unwrap();
        // Reopened and closed again after the listing: a new closure, so not due; kept.
        let list = retention::evaluate(&t.db, later, "test")
            .await
            .unwrap()
            .unwrap();
        let reopen = RecordPatch {
            status: Some("open".into()),
            ..Default::default()
        };
        directory::update_record(&t.db, &c1, &reopen, "adam@a.test")
            .await
            .unwrap();
        close(&t, &c1).await;
        let done = retention::approve(&t.db, &list.id, "adam@a.test", later)
            .await
            .unwrap();
        assert_eq!(
            (done.items[0].disposed, done.items[0].held),
            (Some(0), Some(1)),
            "a record closed again since its listing keeps everything"
        );
        // Its new closure is due only two years after it; then a policy removed after the
        // listing keeps it too.
        let much_later = later + years(3);
        let list = retention::evaluate(&t.db, much_later, "test")
            .await
            .unwrap()
            .unwrap();
        retention::set_policy(&t.db, "case", None, "adam@a.test")
            .await
            .unwrap();
        let done = retention::approve(&t.db, &list.id, "adam@a.test", much_later)
            .await
            .unwrap();
        assert_eq!(
            (done.items[0].disposed, done.items[0].held),
            (Some(0), Some(1))
        );
        retention::set_policy(&t.db, "case", Some(2), "adam@a.test")
            .await
            .unwrap();
        // Rejected: nothing deleted; listed again at the next evaluation.
        let list = retention::evaluate(&t.db, later, "test")
            .await
            .unwrap()
            .unwrap();
        let rejected = retention::reject(&t.db, &list.id, "adam@a.test")
            .await
            .unwrap();
        assert_eq!(rejected.status, "rejected");
        assert_eq!(
            count(&t, "SELECT COUNT(*) FROM filings WHERE record_id = $1", &c1).await,
            1
        );
        assert!(retention::evaluate(&t.db, later, "test")
            .await
            .unwrap()
            .is_some());
        // Bad input is a clear 422.
        for (kind, y) in [("widget", Some(3)), ("case", Some(0)), ("case", Some(101))] {
            let e = retention::set_policy(&t.db, kind, y, "adam@a.test")
                .await
                .unwrap_err();
            assert_eq!(e.status().as_u16(), 422, "{kind} {y:?}");
        }
        for reason in ["", "   "] {
            let e = retention::place_hold(&t.db, &HoldOn::Record(c1.clone()), reason, "a")
                .await
                .unwrap_err();
            assert_eq!(e.status().as_u16(), 422);
        }
        let e = retention::place_hold(&t.db, &HoldOn::Person("not an address".into()), "x", "a")
            .await
            .unwrap_err();
        assert_eq!(e.status().as_u16(), 422);
        assert!(matches!(
            audit::verify(&t.db).await.unwrap(),
            ChainStatus::Intact { .. }
        ));
    }
);

#[tokio::test]
async fn console_sets_policies_approves_on_a_second_page_and_places_and_releases_holds() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let t = app.tenant(&app.firm_a).await;
    let (cookie, csrf) = admin_session(&app, &t, "adam@a.test").await;
    let k1 = record_id(&t, "contract", "K-1").await;
    file_from(&app, "msa mail", "cfo@globex.com", &["contract:K-1"]).await;
    close(&t, &k1).await;

    let (s, html) = page(&app, &cookie, "/console/retention").await;
    assert_eq!(s, 200);
    assert!(html.contains("No disposition list is waiting"), "{html}");
    let form = [
        ("csrf", csrf.as_str()),
        ("years_matter", ""),
        ("years_case", ""),
        ("years_contract", "abc"),
    ];
    let (s, html) = post_form(&app, &cookie, "/console/retention/policies", &form).await;
    assert_eq!(s, 422);
    assert!(html.contains("is not a number of years"), "{html}");
    let form = [
        ("csrf", csrf.as_str()),
        ("years_matter", ""),
        ("years_case", ""),
        ("years_contract", "1"),
    ];
    let (s, to) = post_form(&app, &cookie, "/console/retention/policies", &form).await;
    assert_eq!((s, to.as_str()), (303, "/console/retention?done=policies"));
    // Nothing due yet; a year and more later, the contract is listed.
    let (s, to) = post_form(
        &app,
        &cookie,
        "/console/retention/evaluate",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!((s, to.as_str()), (303, "/console/retention?done=nothing"));
    app.state
        .catalog
        .clock()
        .advance(years(1) + time::Duration::days(2));
    let (s, to) = post_form(
        &app,
        &cookie,
        "/console/retention/evaluate",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!((s, to.as_str()), (303, "/console/retention?done=listed"));
    let (_, html) = page(&app, &cookie, "/console/retention?done=listed").await;
    assert!(
        html.contains("contract:K-1") && html.contains("Approve and delete"),
        "{html}"
    );
    let list = &retention::dispositions(&t.db).await.unwrap()[0];
    // The second page says what will go; only its POST (with the CSRF token) deletes.
    let (s, html) = page(
        &app,
        &cookie,
        &format!("/console/retention/{}/approve", list.id),
    )
    .await;
    assert_eq!(s, 200);
    assert!(html.contains("This deletes up to 1 filing(s)"), "{html}");
    let (s, _) = post_form(
        &app,
        &cookie,
        &format!("/console/retention/{}/approve", list.id),
        &[],
    )
    .await;
    assert_eq!(s, 403, "no CSRF token, no deletion");
    assert_eq!(
        count(&t, "SELECT COUNT(*) FROM filings WHERE record_id = $1", &k1).await,
        1
    );
    let (s, to) = post_form(
        &app,
        &cookie,
        &format!("/console/retention/{}/approve", list.id),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!((s, to.as_str()), (303, "/console/retention?done=approved"));
    assert_eq!(
        count(&t, "SELECT COUNT(*) FROM filings WHERE record_id = $1", &k1).await,
        0
    );

    // Holds: an unknown record is named; a bare reference works; release on a second page.
    let form = [
        ("csrf", csrf.as_str()),
        ("record", "Z-9"),
        ("email", ""),
        ("reason", "x"),
    ];
    let (s, html) = post_form(&app, &cookie, "/console/holds", &form).await;
    assert_eq!(s, 422);
    assert!(html.contains("no record"), "{html}");
    let form = [
        ("csrf", csrf.as_str()),
        ("record", "M-1"),
        ("email", ""),
        ("reason", "Acme litigation"),
    ];
    let (s, to) = post_form(&app, &cookie, "/console/holds", &form).await;
    assert_eq!((s, to.as_str()), (303, "/console/holds?done=placed"));
    let (_, html) = page(&app, &cookie, "/console/holds").await;
    assert!(
        html.contains("matter:M-1") && html.contains("Acme litigation"),
        "{html}"
    );
    let hold = &retention::holds(&t.db, false).await.unwrap()[0];
    let (s, html) = page(
        &app,
        &cookie,
        &format!("/console/holds/{}/release", hold.id),
    )
    .await;
    assert_eq!(s, 200);
    assert!(html.contains("Release this legal hold?"), "{html}");
    let (s, to) = post_form(
        &app,
        &cookie,
        &format!("/console/holds/{}/release", hold.id),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!((s, to.as_str()), (303, "/console/holds?done=released"));
    assert!(retention::holds(&t.db, false).await.unwrap().is_empty());
}
