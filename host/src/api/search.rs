//! `/search`: every zone, system, module and driver whose descriptive text matches, best
//! first, with the matching words highlighted. Anyone signed in may search; drivers and
//! modules are found only by `support` and above (as their own routes allow).

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Query;
use super::list::page;
use super::{ApiError, ApiState, Principal};
use crate::search::{Hit, Kind, SearchQuery};
use crate::settings::Role;
use crate::store::{ListQuery, Page};

pub(super) fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(search))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchParams {
    /// Words (each matched as a prefix, allowing a typo or two) and `"quoted phrases"`;
    /// every one must match.
    q: Option<String>,
    /// Only these types, comma-separated: `zone`, `system`, `module`, `driver`.
    types: Option<String>,
    /// Only items filed under this zone (a zone itself, its children, the systems in
    /// it, their modules).
    zone: Option<String>,
    /// Only zones with this tag.
    tag: Option<String>,
    /// At most this many (default 20; more than 1,000 returns 1,000).
    #[param(value_type = Option<i64>, minimum = 0)]
    limit: Option<String>,
    /// After skipping this many (matches past the 10,000th are counted, not returned).
    #[param(value_type = Option<i64>, minimum = 0)]
    offset: Option<String>,
}

/// The kinds `caller` may find.
fn visible(caller: &Principal) -> &'static [Kind] {
    if caller.require(Role::Support).is_ok() {
        &Kind::ALL
    } else {
        &[Kind::Zone, Kind::System]
    }
}

/// Search zones, systems, modules and drivers.
#[utoipa::path(
    get,
    path = "/search",
    tag = "search",
    params(SearchParams),
    responses((status = 200, description = "The matches, best first", body = [Hit], headers(("x-total-count" = i64, description = "Matches over every page"), ("link" = String, description = "When more follow: `<PATH?offset=N&limit=M&…>; rel=\"next\"`")))),
)]
async fn search(
    State(state): State<ApiState>,
    caller: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let number = |field: &str, text: &Option<String>, default: usize| match text {
        None => Ok(default),
        // As the document says: an i64, 0 or more.
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .ok_or_else(|| ApiError::invalid(field, "must be a whole number, 0 or more")),
    };
    let limit = number("limit", &params.limit, 20)?.min(ListQuery::MAX_LIMIT as usize);
    let offset = number("offset", &params.offset, 0)?;
    let allowed = visible(&caller);
    let mut kinds = Vec::new();
    for name in params.types.iter().flat_map(|t| t.split(',')) {
        if name.trim().is_empty() {
            continue;
        }
        let kind = Kind::parse(name).ok_or_else(|| {
            ApiError::invalid("types", "each must be zone, system, module or driver")
        })?;
        kinds.push(kind);
    }
    if kinds.is_empty() {
        kinds = allowed.to_vec();
    }
    // What the caller asked for, of what they may see.
    kinds.retain(|kind| allowed.contains(kind));
    if kinds.is_empty() {
        return Ok(page(Page::<Hit> {
            items: Vec::new(),
            total: 0,
        }));
    }
    let query = SearchQuery {
        text: params.q.unwrap_or_default(),
        kinds,
        zone: params.zone.filter(|z| !z.is_empty()),
        tag: params.tag.filter(|t| !t.is_empty()),
        limit,
        offset,
    };
    let control = state.control.clone();
    let results = tokio::task::spawn_blocking(move || control.search(&query))
        .await
        .map_err(|error| ApiError::internal(&error))?
        .map_err(|error| ApiError::internal(&error))?;
    Ok(page(Page {
        items: results.hits,
        total: i64::try_from(results.total).unwrap_or(i64::MAX),
    }))
}
