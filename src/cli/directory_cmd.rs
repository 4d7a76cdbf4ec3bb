//! Operator commands on a tenant's directory that onboarding scripts need: edit, close and
//! reopen records, change roles, manage groups. Each goes through the same `directory`
//! function as the console, so it is validated and audited the same way (actor `operator`).

use anyhow::Context;

use super::{GroupAction, RecordAction};
use crate::directory::{self, Group, RecordKind, RecordPatch, Role, User, UserPatch};
use crate::error::AppError;
use crate::tenancy::{Catalog, Tenant};

const ACTOR: &str = "operator";

fn err(e: AppError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

async fn tenant(catalog: &Catalog, t: &str) -> anyhow::Result<std::sync::Arc<Tenant>> {
    catalog.tenant(&catalog.find_tenant(t).await?.id).await
}

/// The id of the record named `kind:reference`.
async fn record_id(t: &Tenant, record: &str) -> anyhow::Result<String> {
    let (kind, reference) = record
        .split_once(':')
        .context("give the record as kind:reference, e.g. matter:M-2024-017")?;
    let kind: RecordKind = kind.parse().map_err(anyhow::Error::msg)?;
    let r = directory::find_record(&t.db, kind, reference)
        .await
        .map_err(err)?
        .with_context(|| format!("no record {record} in {}", t.name))?;
    Ok(r.id)
}

/// `record edit`, `record close`, `record reopen`.
pub(super) async fn record(catalog: &Catalog, action: RecordAction) -> anyhow::Result<()> {
    let (t, record, patch) = match action {
        RecordAction::Edit {
            tenant,
            record,
            title,
            client,
            contacts,
            no_contacts,
        } => {
            if title.is_none() && client.is_none() && contacts.is_none() && !no_contacts {
                anyhow::bail!(
                    "nothing to change: give --title, --client, --contact or --no-contacts"
                );
            }
            let contacts = if no_contacts { Some(vec![]) } else { contacts };
            let patch = RecordPatch {
                title,
                client,
                contacts,
                ..Default::default()
            };
            (tenant, record, patch)
        }
        RecordAction::Close { tenant, record } => (tenant, record, status("closed")),
        RecordAction::Reopen { tenant, record } => (tenant, record, status("open")),
        RecordAction::Add { .. } | RecordAction::List { .. } => unreachable!("handled in cli.rs"),
    };
    let t = tenant(catalog, &t).await?;
    let id = record_id(&t, &record).await?;
    let r = directory::update_record(&t.db, &id, &patch, ACTOR)
        .await
        .map_err(err)?;
    println!(
        "{}:{}\t{}\t{}\t{}\t{}",
        r.kind,
        r.reference,
        r.title,
        r.client,
        r.status,
        r.contacts.join(",")
    );
    Ok(())
}

fn status(s: &str) -> RecordPatch {
    RecordPatch {
        status: Some(s.to_string()),
        ..Default::default()
    }
}

/// `user set-role`.
pub(super) async fn set_role(t: &Tenant, u: &User, role: &str) -> anyhow::Result<()> {
    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
    let patch = UserPatch {
        role: Some(role),
        ..Default::default()
    };
    let d = directory::update_user(&t.db, &u.id, &patch, ACTOR)
        .await
        .map_err(err)?;
    println!("{} is now {}", d.email, d.role.as_str());
    Ok(())
}

/// The group named `name` (names are unique in a firm, compared without case).
async fn group_named(t: &Tenant, name: &str) -> anyhow::Result<Group> {
    directory::list_groups(&t.db)
        .await
        .map_err(err)?
        .into_iter()
        .find(|g| g.name.eq_ignore_ascii_case(name.trim()))
        .with_context(|| format!("no group {name:?} in {}", t.name))
}

/// The user ids of `emails`, each of which must be a user of the firm.
async fn user_ids(t: &Tenant, emails: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(emails.len());
    for e in emails {
        let u = directory::user_by_email(&t.db, e)
            .await
            .map_err(err)?
            .filter(|u| u.id != crate::access::SYSTEM_USER)
            .with_context(|| format!("no user {e} in {}", t.name))?;
        ids.push(u.id);
    }
    Ok(ids)
}

fn print_group(g: &Group) {
    let members: Vec<&str> = g.members.iter().map(|m| m.email.as_str()).collect();
    println!("{}\t{}", g.name, members.join(","));
}

/// `group list|add|rename|add-member|remove-member`.
pub(super) async fn group(catalog: &Catalog, action: GroupAction) -> anyhow::Result<()> {
    match action {
        GroupAction::List { tenant: tn } => {
            let t = tenant(catalog, &tn).await?;
            for g in directory::list_groups(&t.db).await.map_err(err)? {
                print_group(&g);
            }
        }
        GroupAction::Add {
            tenant: tn,
            name,
            members,
        } => {
            let t = tenant(catalog, &tn).await?;
            // Every member is checked before anything is written.
            let ids = user_ids(&t, &members).await?;
            let mut g = directory::create_group(&t.db, &name, ACTOR)
                .await
                .map_err(err)?;
            if !ids.is_empty() {
                g = directory::set_group_members(&t.db, &g.id, &ids, ACTOR)
                    .await
                    .map_err(err)?;
            }
            print_group(&g);
        }
        GroupAction::Rename {
            tenant: tn,
            name,
            new_name,
        } => {
            let t = tenant(catalog, &tn).await?;
            let g = group_named(&t, &name).await?;
            let g = directory::rename_group(&t.db, &g.id, &new_name, ACTOR)
                .await
                .map_err(err)?;
            print_group(&g);
        }
        GroupAction::AddMember {
            tenant: tn,
            group,
            emails,
        } => {
            let t = tenant(catalog, &tn).await?;
            let g = group_named(&t, &group).await?;
            let mut ids: Vec<String> = g.members.iter().map(|m| m.id.clone()).collect();
            for id in user_ids(&t, &emails).await? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            let g = directory::set_group_members(&t.db, &g.id, &ids, ACTOR)
                .await
                .map_err(err)?;
            print_group(&g);
        }
        GroupAction::RemoveMember {
            tenant: tn,
            group,
            emails,
        } => {
            let t = tenant(catalog, &tn).await?;
            let g = group_named(&t, &group).await?;
            let gone = user_ids(&t, &emails).await?;
            let ids: Vec<String> = g
                .members
                .iter()
                .map(|m| m.id.clone())
                .filter(|id| !gone.contains(id))
                .collect();
            let g = directory::set_group_members(&t.db, &g.id, &ids, ACTOR)
                .await
                .map_err(err)?;
            print_group(&g);
        }
    }
    Ok(())
}
