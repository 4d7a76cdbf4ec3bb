//! The firm's "Filed" labels setting on the console's Firm settings page (the labelling
//! itself is tested with the add-on, `tests/addon.rs`).

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_turns_gmail_labels_on_and_off() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let tenant = app.tenant(&app.firm_a).await;
    // The console's Firm settings page: a new prefix, then off.
    let (cookie, csrf) = admin_session(&app, &tenant, "adam@a.test").await;
    let path = "/console/tenant/gmail-labels";
    let form = [
        ("csrf", csrf.as_str()),
        ("prefix", "Docket"),
        ("action", "save"),
    ];
    let (status, to) = post_form(&app, &cookie, path, &form).await;
    assert_eq!(
        (status, to.as_str()),
        (303, "/console/tenant?done=gmail-labels")
    );
    let (_, html) = page(&app, &cookie, "/console/tenant").await;
    assert!(
        html.contains("On, with the prefix <code>Docket</code>"),
        "{html}"
    );
    let prefix = docket::firm_settings::gmail_label_prefix(&tenant)
        .await
        .unwrap();
    assert_eq!(prefix.as_deref(), Some("Docket"));
    let form = [
        ("csrf", csrf.as_str()),
        ("prefix", "Docket"),
        ("action", "off"),
    ];
    assert_eq!(post_form(&app, &cookie, path, &form).await.0, 303);
    assert_eq!(
        docket::firm_settings::gmail_label_prefix(&tenant)
            .await
            .unwrap(),
        None
    );
    // An invalid prefix: the page again, saying why; nothing saved.
    let form = [
        ("csrf", csrf.as_str()),
        ("prefix", "SPAM"),
        ("action", "save"),
    ];
    let (status, html) = post_form(&app, &cookie, path, &form).await;
    assert_eq!(status, 422);
    assert!(html.contains("own labels"), "{html}");
    assert_eq!(
        docket::firm_settings::gmail_label_prefix(&tenant)
            .await
            .unwrap(),
        None
    );
}
