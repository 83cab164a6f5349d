//! Teams (reference §2.1 "Teams", "Additions: Teams"): list, create, delete, members. A person
//! owns at most 5 teams; a team with databases cannot be deleted; only a team's owner and admins
//! change its members.

use serde_json::{Value, json};

use super::fields::{opt_bool, opt_str};
use super::{ApiError, ApiResult, Ctx};
use crate::accounts::{Member, ROLES, Team};
use crate::ids;

/// At most this many teams owned per person (Upstash's limit).
const MAX_OWNED_TEAMS: usize = 5;

fn team_json(t: &Team) -> Value {
    json!({"team_id": t.id, "team_name": t.name, "copy_cc": t.copy_cc})
}

fn member_json(t: &Team, m: &Member) -> Value {
    json!({
        "team_id": t.id,
        "team_name": t.name,
        "member_email": m.email,
        "member_role": m.role,
        "copy_cc": t.copy_cc,
    })
}

fn team_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("team not found: {id}"))
}

/// `GET /v2/teams`: the teams the caller belongs to.
pub fn list(ctx: &Ctx<'_>) -> ApiResult {
    let st = ctx.shared.lock();
    let teams: Vec<Value> = st
        .accounts
        .teams_of(&ctx.principal.email)
        .into_iter()
        .map(team_json)
        .collect();
    Ok(Value::Array(teams).into())
}

/// `POST /v2/team` `{"team_name", "copy_cc"}`: the caller owns the new team.
pub fn create(ctx: &Ctx<'_>) -> ApiResult {
    let b = ctx.body_obj()?;
    let name = opt_str(&b, "team_name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("team_name is required"))?;
    let copy_cc = opt_bool(&b, "copy_cc")?.unwrap_or(false);
    let email = &ctx.principal.email;
    let mut st = ctx.shared.lock();
    let owned = st
        .accounts
        .teams
        .values()
        .filter(|t| t.role_of(email) == Some("owner"))
        .count();
    if owned >= MAX_OWNED_TEAMS {
        return Err(ApiError::bad_request(format!(
            "a user can own at most {MAX_OWNED_TEAMS} teams"
        )));
    }
    let team = Team {
        id: ids::uuid(),
        name,
        copy_cc,
        members: vec![Member {
            email: email.clone(),
            role: "owner".into(),
        }],
    };
    let out = team_json(&team);
    st.accounts.teams.insert(team.id.clone(), team);
    drop(st);
    ctx.shared.mark_dirty();
    Ok(out.into())
}

/// `DELETE /v2/team/{id}`: the owner only, and only without databases.
pub fn delete(ctx: &Ctx<'_>) -> ApiResult {
    let id = ctx.id();
    let mut st = ctx.shared.lock();
    let team = st
        .accounts
        .teams
        .get(id)
        .filter(|t| t.role_of(&ctx.principal.email).is_some())
        .ok_or_else(|| team_not_found(id))?;
    if team.role_of(&ctx.principal.email) != Some("owner") {
        return Err(ApiError::bad_request("only the team's owner can delete it"));
    }
    if st.databases.values().any(|d| d.meta.account == id) {
        return Err(ApiError::bad_request(
            "team has databases: delete them or move them to another team first",
        ));
    }
    st.accounts.teams.remove(id);
    st.accounts
        .keys
        .retain(|k| k.team_id.as_deref() != Some(id));
    drop(st);
    ctx.shared.mark_dirty();
    Ok(Value::String("OK".into()).into())
}

/// `GET /v2/teams/{team_id}`: the members (for members of the team).
pub fn members(ctx: &Ctx<'_>) -> ApiResult {
    let id = ctx.id();
    let st = ctx.shared.lock();
    let team = st
        .accounts
        .teams
        .get(id)
        .filter(|t| t.role_of(&ctx.principal.email).is_some())
        .ok_or_else(|| team_not_found(id))?;
    let v: Vec<Value> = team.members.iter().map(|m| member_json(team, m)).collect();
    Ok(Value::Array(v).into())
}

/// The team named in the body, if the caller may change its members.
fn managed_team<'a>(
    teams: &'a mut std::collections::BTreeMap<String, Team>,
    ctx: &Ctx<'_>,
    team_id: &str,
) -> Result<&'a mut Team, ApiError> {
    let team = teams
        .get_mut(team_id)
        .filter(|t| t.role_of(&ctx.principal.email).is_some())
        .ok_or_else(|| team_not_found(team_id))?;
    if !matches!(
        team.role_of(&ctx.principal.email),
        Some("owner") | Some("admin")
    ) {
        return Err(ApiError::bad_request(
            "only the team's owner and admins can change its members",
        ));
    }
    Ok(team)
}

/// `POST /v2/teams/member` `{"team_id", "member_email", "member_role"}`.
pub fn add_member(ctx: &Ctx<'_>) -> ApiResult {
    let b = ctx.body_obj()?;
    let team_id =
        opt_str(&b, "team_id")?.ok_or_else(|| ApiError::bad_request("team_id is required"))?;
    let email = opt_str(&b, "member_email")?
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::bad_request("member_email is required"))?;
    let role = opt_str(&b, "member_role")?
        .ok_or_else(|| ApiError::bad_request("member_role is required"))?;
    if !ROLES.contains(&role.as_str()) || role == "owner" {
        return Err(ApiError::bad_request(format!(
            "invalid member_role: {role} (admin, dev or finance)"
        )));
    }
    let mut st = ctx.shared.lock();
    let team = managed_team(&mut st.accounts.teams, ctx, &team_id)?;
    if team.role_of(&email).is_some() {
        return Err(ApiError::bad_request(format!(
            "{email} is already a member of the team"
        )));
    }
    let member = Member { email, role };
    let out = member_json(team, &member);
    team.members.push(member);
    drop(st);
    ctx.shared.mark_dirty();
    Ok(out.into())
}

/// `DELETE /v2/teams/member` with the body `{"team_id", "member_email"}`.
pub fn remove_member(ctx: &Ctx<'_>) -> ApiResult {
    let b = ctx.body_obj()?;
    let team_id =
        opt_str(&b, "team_id")?.ok_or_else(|| ApiError::bad_request("team_id is required"))?;
    let email = opt_str(&b, "member_email")?
        .ok_or_else(|| ApiError::bad_request("member_email is required"))?;
    let mut st = ctx.shared.lock();
    let team = managed_team(&mut st.accounts.teams, ctx, &team_id)?;
    match team.role_of(&email) {
        None => {
            return Err(ApiError::not_found(format!(
                "{email} is not a member of the team"
            )));
        }
        Some("owner") => {
            return Err(ApiError::bad_request("the team's owner cannot be removed"));
        }
        Some(_) => team.members.retain(|m| m.email != email),
    }
    drop(st);
    ctx.shared.mark_dirty();
    Ok(Value::String("OK".into()).into())
}
