//! The console's pages, one handler each. Reads go through the query core's RPC methods (the
//! same checks and answers as `eye events`, `eye session`, `eye errors`, `eye stats`), admin
//! actions through `eye_admin` (as `eye apps` does).

use std::{collections::BTreeMap, fmt::Write, time::Duration};

use axum::{
    Form,
    extract::{Path, Query as Params, State},
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{DateTime, Utc};
use eye_proto::v1 as pb;
use eye_service::auth::Role;
use prost_types::Timestamp;

use super::{Console, Failure, Signed, csrf_field, esc, page, set_cookie};
use crate::queries;

type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn time(at: Option<&Timestamp>) -> String {
    at.and_then(event_model::envelope::to_datetime)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn datetime(at: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    at.and_then(event_model::envelope::to_datetime)
}

/// A path segment or query value, percent-encoded.
fn url(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn window(duration: Duration) -> pb::GetStatsRequest {
    pb::GetStatsRequest {
        window: Some(prost_types::Duration { seconds: duration.as_secs() as i64, nanos: 0 }),
    }
}

// ---------- sign-in ----------

pub(super) async fn login_form() -> Response {
    login_page(StatusCode::OK, "")
}

fn login_page(status: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\">{}</p>", esc(error))
    };
    let body = format!(
        "{error}<form id=\"login\" method=\"post\" action=\"/login\">\
         <label>API key with the <code>read</code> role <input name=\"key\" type=\"password\" \
         autocomplete=\"off\" required></label><button>Sign in</button></form>\
         <p class=\"hint\">The key is exchanged for a session cookie; it is not kept in the browser.</p>"
    );
    (status, page(None, "Sign in", &body)).into_response()
}

pub(super) async fn login(State(console): State<Console>, Form(fields): Form<Fields>) -> Response {
    let key = field(&fields, "key").unwrap_or("").trim();
    let authorization = format!("Bearer {key}");
    // The key, then its row afresh (not the lookup cache): a key revoked a moment ago signs in
    // nowhere.
    let checked = match console.auth.authenticate(Some(&authorization), Role::Read).await {
        Ok(principal) => match console.auth.principal_of_key(principal.key_id).await {
            Ok(Some(principal)) => Ok(principal),
            Ok(None) => Err(eye_service::auth::AuthError::Invalid),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    match checked {
        Ok(principal) => {
            let cookie = console.session_cookie(principal.key_id);
            let mut response = Redirect::to("/").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, set_cookie(Some(&cookie), console.session_length));
            response
        }
        Err(error) => {
            let status = match error {
                eye_service::auth::AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                eye_service::auth::AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_page(status, &error.to_string())
        }
    }
}

pub(super) async fn logout(who: Signed, Form(fields): Form<Fields>) -> Result<Response, Failure> {
    who.check_csrf(field(&fields, "_csrf"))?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(None, Duration::ZERO));
    Ok(response)
}

// ---------- overview ----------

pub(super) async fn overview(
    who: Signed,
    State(console): State<Console>,
) -> Result<Response, Failure> {
    let readable = who.readable();
    let hour = console.query.get_stats(&readable, window(Duration::from_secs(3600))).await?;
    let pool = console.query.pool();
    let since = Utc::now() - chrono::Duration::hours(1);
    let day_since = Utc::now() - chrono::Duration::days(1);
    let minutes = queries::stored_per_minute(pool, &readable, since).await?;
    let day_minutes = queries::stored_per_minute(pool, &readable, day_since).await?;
    let by_application =
        queries::stored_by(pool, &readable, since, queries::By::Application).await?;
    let by_category = queries::stored_by(pool, &readable, since, queries::By::Category).await?;
    // The day's count is the sum of its minutes: no second pass over the store.
    let stored_day: i64 = day_minutes.iter().map(|(_, count)| count).sum();
    let mut body = format!(
        "<section class=\"cards\">\
         <a class=\"card\" href=\"/events\"><span id=\"stored-hour\">{}</span> stored in the last hour</a>\
         <a class=\"card\" href=\"/events\"><span id=\"stored-day\">{}</span> stored in the last day</a>\
         <a class=\"card\" href=\"/errors\"><span id=\"errors-hour\">{}</span> quarantined in the last hour</a>\
         <a class=\"card\" href=\"/errors\"><span id=\"dead-letters\">{}</span> dead letters</a></section>",
        hour.events_stored, stored_day, hour.errors, hour.dead_letters
    );
    body.push_str("<h2>Stored per minute, last hour</h2>");
    body.push_str(&chart("chart", &minutes, since, 60));
    body.push_str("<h2>Stored per minute, last day</h2>");
    body.push_str(&chart("chart-day", &day_minutes, day_since, 1440));
    body.push_str("<section class=\"split\"><div><h2>Last hour, by application</h2>");
    body.push_str(&explorer_counts("by-application", "application", &by_application));
    body.push_str("</div><div><h2>Last hour, by category</h2>");
    body.push_str(&explorer_counts("by-category", "category", &by_category));
    body.push_str("</div></section>");
    body.push_str("<h2>Stages</h2><table id=\"stages\"><tr><th>stage</th><th>depth</th><th>in flight</th><th>lag</th><th>dead letters</th></tr>");
    for stage in &hour.stages {
        let lag = stage.lag.as_ref().map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
        let _ = write!(
            body,
            "<tr data-stage=\"{0}\"><td>{0}</td><td class=\"depth\">{1}</td><td>{2}</td><td>{lag:.1} s</td><td>{3}</td></tr>",
            esc(&stage.stage),
            stage.depth,
            stage.in_flight,
            stage.dead_letters
        );
    }
    body.push_str("</table><h2>Quarantined in the last hour, by reason</h2>");
    body.push_str(&reason_table("errors-by-reason", &hour.errors_by_reason));
    Ok(page(Some(&who), "Overview", &body).into_response())
}

/// A table of counts by a value of the explorer's filter `field`, each linking to its events.
fn explorer_counts(id: &str, field: &str, counts: &[(String, i64)]) -> String {
    let mut table = format!("<table id=\"{id}\">");
    for (value, count) in counts {
        let _ = write!(
            table,
            "<tr><td><a href=\"/events?{field}={}\">{}</a></td><td class=\"count\">{count}</td></tr>",
            url(value),
            esc(value)
        );
    }
    table.push_str("</table>");
    table
}

/// A table of counts by reason, each linking to its errors.
fn reason_table(id: &str, counts: &[pb::ReasonCount]) -> String {
    let mut table = format!("<table id=\"{id}\"><tr><th>reason</th><th>count</th></tr>");
    for count in counts {
        let _ = write!(
            table,
            "<tr data-reason=\"{0}\"><td><a href=\"/errors?reason={1}\">{0}</a></td><td class=\"count\">{2}</td></tr>",
            esc(&count.reason),
            url(&count.reason),
            count.count
        );
    }
    table.push_str("</table>");
    table
}

/// Events per minute over `minutes` minutes from `since`, as an inline SVG bar chart (drawn here:
/// no script, no CDN).
fn chart(id: &str, counts: &[(DateTime<Utc>, i64)], since: DateTime<Utc>, minutes: i64) -> String {
    let counts: BTreeMap<i64, i64> = counts
        .iter()
        .map(|(at, n)| ((*at - since).num_minutes().clamp(0, minutes - 1), *n))
        .collect();
    let max = counts.values().copied().max().unwrap_or(0).max(1);
    let (width, bar) = (minutes * 10, 9.0);
    let mut svg = format!(
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {width} 120\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"events stored per minute\">"
    );
    for (minute, count) in &counts {
        let height = (*count as f64 / max as f64 * 110.0).max(1.0);
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{:.1}\" width=\"{bar}\" height=\"{height:.1}\"><title>{count} events</title></rect>",
            minute * 10,
            120.0 - height
        );
    }
    let _ = write!(svg, "</svg><p class=\"hint\">highest: {max} events in a minute</p>");
    svg
}

// ---------- live tail ----------

pub(super) async fn tail_page(
    who: Signed,
    Params(params): Params<BTreeMap<String, String>>,
) -> Response {
    let query = query_string(&params, TAIL_FILTERS).join("&");
    let mut body = filter_form("tail-filters", "/tail", &params, TAIL_FILTERS);
    let _ = write!(
        body,
        "<p><button id=\"pause\" type=\"button\">Pause</button> <span id=\"held\"></span> \
         skipped: <span id=\"skipped\">0</span></p><ul id=\"tail\" data-src=\"/api/tail?{}\"></ul>",
        esc(&query)
    );
    page(Some(&who), "Live tail", &body).into_response()
}

const TAIL_FILTERS: &[&str] = &["application", "category", "name", "session", "contains"];
const EXPLORER_FILTERS: &[&str] =
    &["session", "category", "name", "application", "from", "to", "contains"];

/// The `name=value` pairs of the filters among `names` that `params` sets, encoded.
fn query_string(params: &BTreeMap<String, String>, names: &[&str]) -> Vec<String> {
    params
        .iter()
        .filter(|(name, value)| names.contains(&name.as_str()) && !value.is_empty())
        .map(|(name, value)| format!("{}={}", url(name), url(value)))
        .collect()
}

fn filter_form(
    id: &str,
    action: &str,
    params: &BTreeMap<String, String>,
    names: &[&str],
) -> String {
    let mut form =
        format!("<form id=\"{id}\" class=\"filters\" method=\"get\" action=\"{action}\">");
    for name in names {
        let value = params.get(*name).map(String::as_str).unwrap_or("");
        let placeholder = match *name {
            "contains" => "{\"host\": \"shop.example\"}",
            "from" | "to" => "2026-12-01T10:00:00Z",
            "application" => "name or id",
            _ => "",
        };
        let _ = write!(
            form,
            "<label>{name} <input name=\"{name}\" value=\"{}\" placeholder=\"{}\"></label>",
            esc(value),
            esc(placeholder)
        );
    }
    form.push_str("<button>Apply</button></form>");
    form
}

/// The event filter of the console's query parameters, as `eye events` takes them.
pub(super) fn event_filter(params: &BTreeMap<String, String>) -> Result<pb::EventFilter, Failure> {
    let get = |name: &str| params.get(name).map(|v| v.trim().to_owned()).unwrap_or_default();
    let at = |name: &'static str| -> Result<Option<Timestamp>, Failure> {
        let text = get(name);
        if text.is_empty() {
            return Ok(None);
        }
        let parsed = event_model::envelope::parse_timestamp(&text).ok().or_else(|| {
            chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M").ok().map(|n| n.and_utc())
        });
        parsed
            .map(|at| Some(event_model::envelope::to_timestamp(at)))
            .ok_or_else(|| Failure::Invalid(format!("{name}: {text:?} is not a time (RFC 3339)")))
    };
    Ok(pb::EventFilter {
        session_id: get("session"),
        category: get("category"),
        name: get("name"),
        application: get("application"),
        from: at("from")?,
        to: at("to")?,
        data_contains: get("contains"),
    })
}

// ---------- explorer and sessions ----------

pub(super) async fn explorer(
    who: Signed,
    State(console): State<Console>,
    Params(params): Params<BTreeMap<String, String>>,
) -> Result<Response, Failure> {
    let filter = event_filter(&params).map_err(rename_fields)?;
    let request = pb::ListEventsRequest {
        filter: Some(filter),
        page_size: 50,
        page_token: params.get("page_token").cloned().unwrap_or_default(),
    };
    let answer = console
        .query
        .list_events(&who.readable(), request)
        .await
        .map_err(|e| rename_fields(e.into()))?;
    let mut body = filter_form("filters", "/events", &params, EXPLORER_FILTERS);
    body.push_str("<table id=\"events\"><tr><th>occurred</th><th>type</th><th>session</th><th>event</th></tr>");
    for event in &answer.events {
        body.push_str(&event_row(event));
    }
    body.push_str("</table>");
    if !answer.next_page_token.is_empty() {
        let mut query = query_string(&params, EXPLORER_FILTERS);
        query.push(format!("page_token={}", url(&answer.next_page_token)));
        let _ = write!(
            body,
            "<p><a id=\"next-page\" href=\"/events?{}\">Next page</a></p>",
            esc(&query.join("&"))
        );
    }
    if answer.events.is_empty() {
        body.push_str("<p class=\"hint\">No stored event matches.</p>");
    }
    Ok(page(Some(&who), "Explorer", &body).into_response())
}

/// The console's parameter names in messages (`session`, not the RPC's `filter.session_id`).
fn rename_fields(failure: Failure) -> Failure {
    match failure {
        Failure::Invalid(message) => Failure::Invalid(
            message
                .replace("filter.session_id", "session")
                .replace("filter.data_contains", "contains")
                .replace("filter.application", "application"),
        ),
        other => other,
    }
}

fn event_row(event: &pb::StoredEvent) -> String {
    format!(
        "<tr data-event-id=\"{id}\"><td>{occurred}</td><td>{category} / {name}</td>\
         <td><a class=\"session\" href=\"/sessions/{session}\">{session}</a></td><td>\
         <details class=\"detail\"><summary>{id}</summary><pre>{data}</pre><dl>\
         <dt>occurred</dt><dd>{occurred}</dd><dt>received</dt><dd>{received}</dd>\
         <dt>stored</dt><dd>{stored}</dd><dt>schema version</dt><dd>{version}</dd>\
         <dt>application</dt><dd>{application}</dd></dl></details></td></tr>",
        id = esc(&event.event_id),
        occurred = time(event.timestamp.as_ref()),
        received = time(event.received_at.as_ref()),
        stored = time(event.stored_at.as_ref()),
        category = esc(&event.category),
        name = esc(&event.name),
        session = esc(&event.session_id),
        data = esc(&pretty(&event.data_json)),
        version =
            if event.schema_version > 0 { event.schema_version.to_string() } else { "none".into() },
        application = esc(&event.application_id),
    )
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| json.to_owned())
}

pub(super) async fn session(
    who: Signed,
    State(console): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let request =
        pb::GetSessionRequest { session_id: id, page_size: 1000, page_token: String::new() };
    let answer =
        console.query.get_session(&who.readable(), request).await.map_err(
            |e| match Failure::from(e) {
                Failure::Invalid(message) => {
                    Failure::Invalid(message.replace("session_id", "session"))
                }
                other => other,
            },
        )?;
    let summary = answer.session.unwrap_or_default();
    let mut body = format!(
        "<section id=\"session-summary\"><p><span class=\"event-count\">{}</span> event(s), from {} to {}</p>\
         <p id=\"applications\">applications: {}</p></section><ol id=\"timeline\">",
        summary.event_count,
        time(summary.first_seen_at.as_ref()),
        time(summary.last_seen_at.as_ref()),
        esc(&summary.application_ids.join(", ")),
    );
    let mut previous: Option<DateTime<Utc>> = None;
    for event in &answer.events {
        let at = datetime(event.timestamp.as_ref());
        if let (Some(before), Some(at)) = (previous, at) {
            let gap = (at - before).num_milliseconds() as f64 / 1000.0;
            let _ = write!(body, "<li class=\"gap\">+{gap:.3} s</li>");
        }
        previous = at.or(previous);
        let _ = write!(
            body,
            "<li data-event-id=\"{}\"><time>{}</time> <strong>{} / {}</strong> <code>{}</code> \
             <small>application {}</small></li>",
            esc(&event.event_id),
            time(event.timestamp.as_ref()),
            esc(&event.category),
            esc(&event.name),
            esc(&event.data_json),
            esc(&event.application_id),
        );
    }
    body.push_str("</ol>");
    Ok(page(Some(&who), &format!("Session {}", summary.session_id), &body).into_response())
}

// ---------- errors and replay ----------

pub(super) async fn errors(
    who: Signed,
    State(console): State<Console>,
    Params(params): Params<BTreeMap<String, String>>,
) -> Result<Response, Failure> {
    let reason = params.get("reason").cloned().unwrap_or_default();
    let request = pb::ListErrorsRequest {
        filter: Some(pb::ErrorFilter { reason: reason.clone(), ..Default::default() }),
        page_size: 100,
        page_token: String::new(),
    };
    let answer = console.query.list_errors(&who.readable(), request).await?;
    let types = queries::error_types(console.query.pool(), &who.readable()).await?;
    let mut body = String::new();
    if let Some(replayed) = params.get("replayed") {
        let _ = write!(
            body,
            "<p id=\"replay-outcome\" class=\"ok\">{} quarantined event(s) replayed: they go through validation again.</p>",
            esc(replayed)
        );
    }
    body.push_str("<h2>By reason</h2>");
    body.push_str(&reason_table("reasons", &answer.counts));
    body.push_str("<h2>By type</h2><table id=\"types\"><tr><th>type</th><th>count</th></tr>");
    for (category, name, count) in &types {
        let _ = write!(
            body,
            "<tr data-type=\"{0}/{1}\"><td>{0} / {1}</td><td class=\"count\">{2}</td></tr>",
            esc(category),
            esc(name),
            count
        );
    }
    body.push_str("</table>");
    let admin = who.is_admin();
    if admin {
        let _ = write!(
            body,
            "<form id=\"replay\" method=\"post\" action=\"/errors/replay\">{}",
            csrf_field(&who)
        );
        body.push_str("<p><label>Replay every error of reason <select name=\"reason\">");
        for count in &answer.counts {
            let selected = if count.reason == reason { " selected" } else { "" };
            let _ = write!(body, "<option{selected}>{}</option>", esc(&count.reason));
        }
        body.push_str("</select></label> <button id=\"replay-reason\" name=\"mode\" value=\"reason\">Replay by reason</button> \
            <button id=\"replay-selected\" name=\"mode\" value=\"selected\">Replay selected</button></p>");
    }
    body.push_str("<h2>Samples</h2><table id=\"samples\"><tr><th></th><th>failed</th><th>type</th><th>reason</th><th>message</th><th>payload</th><th>replay</th></tr>");
    for error in &answer.errors {
        let check = if admin {
            format!("<input type=\"checkbox\" name=\"id\" value=\"{}\">", error.id)
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr data-error-id=\"{id}\"><td>{check}</td><td>{failed}</td><td>{category} / {name}</td>\
             <td>{reason}</td><td class=\"message\">{message}</td><td><code>{data}</code></td><td>{outcome}</td></tr>",
            id = error.id,
            failed = time(error.failed_at.as_ref()),
            category = esc(&error.category),
            name = esc(&error.name),
            reason = esc(&error.reason),
            message = esc(&error.message),
            data = esc(&error.data_json),
            outcome = esc(replay_outcome(error)),
        );
    }
    body.push_str("</table>");
    if admin {
        body.push_str("</form>");
    }
    Ok(page(Some(&who), "Errors", &body).into_response())
}

fn replay_outcome(error: &pb::EventError) -> &'static str {
    match pb::ReplayOutcome::try_from(error.replay_outcome)
        .unwrap_or(pb::ReplayOutcome::Unspecified)
    {
        pb::ReplayOutcome::Pending => "pending",
        pb::ReplayOutcome::Stored => "stored",
        pb::ReplayOutcome::StillInvalid => "failed again",
        _ => "",
    }
}

pub(super) async fn replay(
    who: Signed,
    State(console): State<Console>,
    Form(fields): Form<Fields>,
) -> Result<Response, Failure> {
    who.admin_form(field(&fields, "_csrf"))?;
    let request = if field(&fields, "mode") == Some("selected") {
        let ids = fields
            .iter()
            .filter(|(name, _)| name == "id")
            .map(|(_, id)| {
                id.parse::<i64>()
                    .map_err(|_| Failure::Invalid(format!("id: {id:?} is not an error id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Err(Failure::Invalid("id: select at least one error to replay".into()));
        }
        pb::ReplayErrorsRequest { error_ids: ids, filter: None, limit: 10_000 }
    } else {
        let reason = field(&fields, "reason").unwrap_or("").to_owned();
        pb::ReplayErrorsRequest {
            error_ids: Vec::new(),
            filter: Some(pb::ErrorFilter { reason, ..Default::default() }),
            limit: 10_000,
        }
    };
    let answer = console.query.replay_errors(&who.readable(), request).await?;
    Ok(Redirect::to(&format!("/errors?replayed={}", answer.replayed)).into_response())
}

// ---------- schemas ----------

/// A type on the schemas page: its latest registered version, and what is stored of it.
type TypeRow<'a> = (Option<i32>, Option<&'a queries::TypeStats>);

pub(super) async fn schemas(
    who: Signed,
    State(console): State<Console>,
) -> Result<Response, Failure> {
    let pool = console.query.pool();
    let registered = eye_admin::schemas::list(pool).await?;
    let stats = queries::type_stats(pool, &who.readable()).await?;
    let mut types: BTreeMap<(String, String), TypeRow<'_>> = BTreeMap::new();
    for schema in &registered {
        types.entry((schema.category.clone(), schema.name.clone())).or_default().0 =
            Some(schema.latest_version);
    }
    for stat in &stats {
        types.entry((stat.category.clone(), stat.name.clone())).or_default().1 = Some(stat);
    }
    let mut body = String::from(
        "<table id=\"schemas\"><tr><th>type</th><th>version</th><th>stored</th><th>first seen</th><th>last seen</th><th>errors</th></tr>",
    );
    for ((category, name), (version, stat)) in &types {
        let stored = stat.map_or(0, |s| s.stored);
        let errors = stat.map_or(0, |s| s.errors);
        let share = if stored + errors > 0 {
            errors as f64 * 100.0 / (stored + errors) as f64
        } else {
            0.0
        };
        let seen = |at: Option<DateTime<Utc>>| {
            at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
        };
        let _ = write!(
            body,
            "<tr data-type=\"{c}/{n}\"><td><a href=\"/schemas/{cu}/{nu}\">{c} / {n}</a></td><td class=\"version\">{v}</td>\
             <td class=\"stored\">{stored}</td><td class=\"first-seen\">{first}</td><td class=\"last-seen\">{last}</td>\
             <td class=\"error-share\">{share:.1}%</td></tr>",
            c = esc(category),
            n = esc(name),
            cu = url(category),
            nu = url(name),
            v = version.map_or("none".into(), |v| v.to_string()),
            first = seen(stat.and_then(|s| s.first_seen)),
            last = seen(stat.and_then(|s| s.last_seen)),
        );
    }
    body.push_str(
        "</table><p class=\"hint\">Register a version with <code>eye schemas put</code>.</p>",
    );
    Ok(page(Some(&who), "Schemas", &body).into_response())
}

pub(super) async fn schema(
    who: Signed,
    State(console): State<Console>,
    Path((category, name)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let versions = eye_admin::schemas::versions(console.query.pool(), &category, &name).await?;
    if versions.is_empty() {
        return Err(Failure::NotFound(format!("no schema is registered for {category} / {name}")));
    }
    let mut body = String::new();
    let mut previous: Option<String> = None;
    for version in &versions {
        let text = serde_json::to_string_pretty(&version.schema).unwrap_or_default();
        let _ = write!(
            body,
            "<section class=\"version\"><h2>Version {} <small>{}</small></h2>",
            version.version,
            version.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        match &previous {
            None => {
                let _ = write!(body, "<pre>{}</pre>", esc(&text));
            }
            Some(before) => {
                body.push_str("<pre class=\"diff\">");
                for change in similar::TextDiff::from_lines(before, &text).iter_all_changes() {
                    let (class, sign) = match change.tag() {
                        similar::ChangeTag::Delete => ("del", "-"),
                        similar::ChangeTag::Insert => ("ins", "+"),
                        similar::ChangeTag::Equal => ("eq", " "),
                    };
                    let _ = write!(
                        body,
                        "<span class=\"{class}\">{sign} {}</span>",
                        esc(&change.to_string())
                    );
                }
                body.push_str("</pre>");
            }
        }
        body.push_str("</section>");
        previous = Some(text);
    }
    Ok(page(Some(&who), &format!("{category} / {name}"), &body).into_response())
}

// ---------- applications and keys ----------

pub(super) async fn apps(who: Signed, State(console): State<Console>) -> Result<Response, Failure> {
    who.require_admin()?;
    apps_page(&who, &console, None).await
}

async fn apps_page(
    who: &Signed,
    console: &Console,
    new_key: Option<(&str, &str)>,
) -> Result<Response, Failure> {
    let apps = eye_admin::apps::list(console.query.pool()).await?;
    let mut body = String::new();
    if let Some((name, key)) = new_key {
        let _ = write!(
            body,
            "<p class=\"ok\">A new key for <strong>{}</strong>, shown only this once:</p><pre id=\"new-key\">{}</pre>",
            esc(name),
            esc(key)
        );
    }
    body.push_str("<table id=\"apps\"><tr><th>name</th><th>created</th><th>revoked</th><th>keys</th><th>roles</th><th></th></tr>");
    for app in &apps {
        let csrf = csrf_field(who);
        let name = esc(&app.name);
        let action = url(&app.name);
        let revoked =
            app.revoked_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let actions = if revoked.is_some() {
            String::new()
        } else {
            format!(
                "<form class=\"issue-key\" method=\"post\" action=\"/apps/{action}/keys\">{csrf}\
                 <label><input type=\"checkbox\" name=\"role\" value=\"ingest\" checked> ingest</label>\
                 <label><input type=\"checkbox\" name=\"role\" value=\"read\"> read</label>\
                 <label><input type=\"checkbox\" name=\"role\" value=\"admin\"> admin</label>\
                 <button>Issue a key</button></form>\
                 <form class=\"revoke\" method=\"post\" action=\"/apps/{action}/revoke\">{csrf}<button>Revoke</button></form>"
            )
        };
        let _ = write!(
            body,
            "<tr data-app=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{actions}</td></tr>",
            app.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked.unwrap_or_else(|| "-".into()),
            app.active_keys,
            esc(&app.roles.join(", ")),
        );
    }
    body.push_str("</table>");
    Ok(page(Some(who), "Applications", &body).into_response())
}

pub(super) async fn issue_key(
    who: Signed,
    State(console): State<Console>,
    Path(name): Path<String>,
    Form(fields): Form<Fields>,
) -> Result<Response, Failure> {
    who.admin_form(field(&fields, "_csrf"))?;
    let roles = fields
        .iter()
        .filter(|(field, _)| field == "role")
        .map(|(_, role)| {
            Role::from_name(role).ok_or_else(|| Failure::Invalid(format!("role: no role {role:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let issued = eye_admin::apps::issue_key(console.query.primary(), &name, &roles).await?;
    apps_page(&who, &console, Some((&name, &issued.key))).await
}

pub(super) async fn revoke(
    who: Signed,
    State(console): State<Console>,
    Path(name): Path<String>,
    Form(fields): Form<Fields>,
) -> Result<Response, Failure> {
    who.admin_form(field(&fields, "_csrf"))?;
    eye_admin::apps::revoke(console.query.primary(), &name).await?;
    Ok(Redirect::to("/apps").into_response())
}
