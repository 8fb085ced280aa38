//! The HTTP API (README, *The HTTP API*): routing, admin access, and how a refusal is answered on
//! each listener (the statuses themselves are decided in [`super::error`]; reading a
//! request target, in [`super::url`]).
//!
//! One [`Api`] answers on each listener, in one of two [`Role`]s. The game listener
//! (`GWAR_LISTEN`) never serves an admin route, whoever asks: behind a reverse proxy on
//! the same host every player is a loopback peer, so neither the peer's address nor
//! anything a proxy forwards can be what grants admin access. The admin listener
//! (`GWAR_ADMIN_LISTEN`) serves the admin routes to whoever can connect to it — its
//! address is the protection — and, when `GWAR_ADMIN_TOKEN` is set, only to callers
//! presenting it.
//!
//! Handlers parse and validate everything from the request first, then make one call
//! into [`AppState`]; nothing here touches a galaxy lock or the disk directly.
//!
//! Several daemons on one database: a galaxy another live daemon owns is answered on the
//! game listener with `307 Temporary Redirect` to the same path and query on the owner's
//! advertised URL (307 keeps the method and body, so an order is sent on as it was), and
//! on the admin listener with 409 naming the owner (an operator deletes a galaxy on the
//! daemon that owns it); both bodies are `{"error": ..., "owner": URL}`. A galaxy whose
//! lease this daemon is renewing is 503 with `Retry-After: 1`.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::ApiError;
use super::json::{
    ArchivedErrorJson, ArchivedJson, BackupJson, BuildJson, CreatedJson, ElsewhereJson,
    GalaxiesJson, GalaxyJson, HealthJson, HistoryJson, NotDurableJson, RestoredJson, SavedJson,
    StructureJson, SystemJson,
};
use super::message::{Handler, Later, Reply, Request, Response};
use super::metrics::{render, HttpMetrics};
use super::origin::AdminOrigin;
use super::url::{query_pairs, split_path};
use crate::app::{valid_galaxy_name, AppError, AppState, CreateOptions, Durability};
use crate::model::{GalaxyConfig, StructureKind, DEFAULT_PRESET, MAX_SYSTEMS};
use crate::settings::GalaxyLimits;

impl ApiError {
    /// The refusal as the caller of `request` on a listener in `role` gets it.
    fn into_response(self, role: Role, request: &Request) -> Response {
        let mut response = match &self.owner {
            Some(owner) => {
                let body = ElsewhereJson {
                    error: &self.message,
                    owner,
                };
                let mut response = Response::json(self.status, &body);
                let location = match role {
                    Role::Game => redirect_location(owner, request),
                    Role::Admin => None,
                };
                if let Some(location) = location {
                    response.status = 307;
                    response.headers.push(("Location", location));
                }
                response
            }
            None if self.archived => Response::json(
                self.status,
                &ArchivedErrorJson {
                    error: &self.message,
                    archived: true,
                },
            ),
            None if self.applied => Response::json(
                self.status,
                &NotDurableJson {
                    applied: true,
                    durable: false,
                    error: &self.message,
                },
            ),
            None => Response::error(self.status, &self.message),
        };
        response.headers.extend(self.headers);
        response
    }
}

/// The request's own path and query on the daemon at `owner` (its advertised URL, as
/// read from the database); `None` when that is no `http(s)://` URL of visible ASCII,
/// which must not reach a header (the answer is then a 409 naming it).
fn redirect_location(owner: &str, request: &Request) -> Option<String> {
    let base = owner.trim_end_matches('/');
    let http = base.starts_with("http://") || base.starts_with("https://");
    if !http || !base.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut location =
        String::with_capacity(base.len() + request.path.len() + 1 + request.query.len());
    location.push_str(base);
    location.push_str(&request.path);
    if !request.query.is_empty() {
        location.push('?');
        location.push_str(&request.query);
    }
    Some(location)
}

/// Which listener an [`Api`] answers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `GWAR_LISTEN`, the players' port: every route but the admin routes.
    Game,
    /// `GWAR_ADMIN_LISTEN`, the operator's: health, metrics, the galaxies' list, reading,
    /// creation (up to the model's limit) and deletion, and `/admin/*`; not the players'
    /// routes (systems, structures, orders).
    Admin,
}

/// The API: the application state, the HTTP counters, and admin access.
#[derive(Clone)]
pub struct Api {
    role: Role,
    app: AppState,
    http_metrics: Arc<HttpMetrics>,
    admin_token: Option<String>,
    backup_dir: Option<PathBuf>,
    /// The largest galaxy a caller without the admin token may create.
    max_public_systems: u64,
    /// The admin listener's `Host` and `Origin` rules (see [`super::origin`]).
    admin_origin: Option<Arc<AdminOrigin>>,
}

impl Api {
    /// The API of the game listener; see [`Api::with_role`] for the admin listener's.
    pub fn new(
        app: AppState,
        http_metrics: Arc<HttpMetrics>,
        admin_token: Option<String>,
        backup_dir: Option<PathBuf>,
    ) -> Api {
        // The API's ticks are the wall clock's seconds.
        app.use_wall_clock();
        Api {
            role: Role::Game,
            app,
            http_metrics,
            admin_token,
            backup_dir,
            max_public_systems: GalaxyLimits::default().max_public_systems,
            admin_origin: None,
        }
    }

    /// In the admin role, refuse requests that name another host or come from another
    /// site (see [`super::origin`]); without it the admin role checks neither.
    pub fn with_admin_origin(mut self, origin: AdminOrigin) -> Api {
        self.admin_origin = Some(Arc::new(origin));
        self
    }

    /// Creations of more than `limit` systems need the admin token
    /// (`GWAR_MAX_GALAXY_SYSTEMS`).
    pub fn with_max_public_systems(mut self, limit: u64) -> Api {
        self.max_public_systems = limit;
        self
    }

    /// The same API answering as `role`.
    pub fn with_role(mut self, role: Role) -> Api {
        self.role = role;
        self
    }
}

impl Handler for Api {
    fn handle(&self, request: &Request) -> Reply {
        self.route(request)
            .unwrap_or_else(|error| error.into_response(self.role, request).into())
    }
}

/// The game's clock: Unix seconds.
fn now_tick() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Api {
    fn route(&self, request: &Request) -> Result<Reply, ApiError> {
        // First of all: a foreign page learns nothing, not even which routes exist.
        if let (Role::Admin, Some(origin)) = (self.role, &self.admin_origin) {
            origin.check(request)?;
        }
        let segments = split_path(&request.path)?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = request.method.as_str();
        match (self.role, segments.as_slice()) {
            (_, ["healthz" | "metrics"]) => {}
            // Not "forbidden": on this listener these routes do not exist.
            (Role::Game, ["admin", ..]) => {
                return Err(ApiError::new(
                    404,
                    format!(
                        "no route for {}: admin calls are served on the admin listener \
                         (GWAR_ADMIN_LISTEN) only",
                        request.path
                    ),
                ))
            }
            (Role::Admin, ["galaxies", _, "systems", ..]) => {
                return Err(ApiError::new(
                    404,
                    format!(
                        "no route for {}: the players' routes are served on the game \
                         listener (GWAR_LISTEN)",
                        request.path
                    ),
                ))
            }
            // Before anything else, so that a caller without the token learns nothing.
            (Role::Admin, _) => self.authorize(request)?,
            (Role::Game, _) => {}
        }
        // Parsed once for every route, so that a repeated parameter is refused everywhere.
        let query = query_pairs(&request.query)?;
        let admin = self.role == Role::Admin;
        // Ok: the route's answer; Err: the route exists but takes only these methods.
        let outcome: Result<Result<Response, ApiError>, &[&str]> =
            match (segments.as_slice(), method) {
                (["healthz"], "GET") => Ok(Ok(Response::json(
                    200,
                    &HealthJson::from(&self.app.health()),
                ))),
                (["healthz"], _) => Err(&["GET"]),
                (["metrics"], "GET") => Ok(Ok(self.metrics())),
                (["metrics"], _) => Err(&["GET"]),
                (["galaxies"], "GET") => Ok(self.list(&query)),
                (["galaxies"], _) => Err(&["GET"]),
                (["galaxies", name], "GET") => Ok(self.galaxy(name, &query)),
                (["galaxies", name], "POST") => Ok(self.create(name, &query, request)),
                (["galaxies", name], "DELETE") if admin => Ok(self.delete(name)),
                // A 405, not a 404 that a script could read as "already deleted".
                (["galaxies", _], "DELETE") => Ok(Ok(not_allowed(
                    "DELETE is an admin call: it is served on the admin listener \
                     (GWAR_ADMIN_LISTEN) only",
                    &["GET", "POST"],
                ))),
                (["galaxies", _], _) if admin => Err(&["GET", "POST", "DELETE"]),
                (["galaxies", _], _) => Err(&["GET", "POST"]),
                (["galaxies", name, "systems", x, y], "GET") => Ok(self.system(name, x, y)),
                (["galaxies", _, "systems", _, _], _) => Err(&["GET"]),
                (["galaxies", name, "systems", x, y, structure], "GET") => {
                    Ok(self.structure(name, x, y, structure))
                }
                (["galaxies", _, "systems", _, _, _], _) => Err(&["GET"]),
                (["galaxies", name, "systems", x, y, "build", structure], "POST") => {
                    return self.build(name, x, y, structure, &query, request);
                }
                (["galaxies", _, "systems", _, _, "build", _], _) => Err(&["POST"]),
                (["admin", "save"], "POST") => Ok(self.save()),
                (["admin", "backup"], "POST") => Ok(self.backup()),
                (["admin", "save" | "backup"], _) => Err(&["POST"]),
                (["admin", "galaxies", _, "archive" | "restore"], "POST") if !query.is_empty() => {
                    Ok(Err(ApiError::new(
                        400,
                        "this call takes no query parameters",
                    )))
                }
                (["admin", "galaxies", name, "archive"], "POST") => Ok(self.archive(name)),
                (["admin", "galaxies", name, "restore"], "POST") => Ok(self.restore(name)),
                (["admin", "galaxies", _, "archive" | "restore"], _) => Err(&["POST"]),
                (["admin", "galaxies", name, "history"], "GET") => Ok(self.history(name, &query)),
                (["admin", "galaxies", _, "history"], _) => Err(&["GET"]),
                _ => return Err(ApiError::new(404, format!("no route for {}", request.path))),
            };
        match outcome {
            Ok(result) => result.map(Reply::from),
            Err(allowed) => {
                Ok(not_allowed(&format!("method {method} not allowed here"), allowed).into())
            }
        }
    }

    fn archive(&self, name: &str) -> Result<Response, ApiError> {
        let name = galaxy_name(name)?;
        let archived = self.app.archive(name)?;
        let body = ArchivedJson {
            name,
            archived: true,
            systems: archived.systems,
            bytes: archived.bytes,
        };
        Ok(Response::json(200, &body))
    }

    fn restore(&self, name: &str) -> Result<Response, ApiError> {
        let name = galaxy_name(name)?;
        let restored = self.app.restore(name)?;
        let body = RestoredJson {
            name,
            restored: true,
            systems: restored.systems,
            tick: restored.tick,
        };
        Ok(Response::json(200, &body))
    }

    /// `?since_tick=N&limit=N` (default 0 and 1000, at most 10 000).
    fn history(&self, name: &str, query: &[(String, String)]) -> Result<Response, ApiError> {
        let name = galaxy_name(name)?;
        let (mut since_tick, mut limit) = (0u64, HISTORY_PAGE.default_limit);
        for (key, value) in query {
            let bad = || {
                ApiError::new(
                    400,
                    format!("{key} must be a non-negative integer, not {value:?}"),
                )
            };
            match key.as_str() {
                "since_tick" => since_tick = value.parse().map_err(|_| bad())?,
                "limit" => limit = value.parse().map_err(|_| bad())?,
                other => {
                    return Err(ApiError::new(
                        400,
                        format!(
                        "unknown query parameter {other:?} (this list takes since_tick and limit)"
                    ),
                    ))
                }
            }
        }
        if !(1..=HISTORY_PAGE.max_limit).contains(&limit) {
            let max = HISTORY_PAGE.max_limit;
            return Err(ApiError::new(
                400,
                format!("limit must be between 1 and {max}, not {limit}"),
            ));
        }
        let page = self.app.history(name, since_tick, limit, now_tick())?;
        Ok(Response::json(200, &HistoryJson::from(&page)))
    }

    fn metrics(&self) -> Response {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: render(&self.app, &self.http_metrics).into_bytes(),
        }
    }

    fn list(&self, query: &[(String, String)]) -> Result<Response, ApiError> {
        let page = Page::parse(query, GALAXIES_PAGE)?;
        let galaxies = self.app.list_page(page.offset, page.limit)?;
        Ok(Response::json(200, &GalaxiesJson::from(&galaxies)))
    }

    fn galaxy(&self, name: &str, query: &[(String, String)]) -> Result<Response, ApiError> {
        let name = galaxy_name(name)?;
        let page = Page::parse(query, SYSTEMS_PAGE)?;
        let details = self
            .app
            .galaxy_page(name, now_tick(), page.offset, page.limit)?;
        Ok(Response::json(200, &GalaxyJson::from(&details)))
    }

    fn create(
        &self,
        name: &str,
        query: &[(String, String)],
        request: &Request,
    ) -> Result<Response, ApiError> {
        let name = galaxy_name(name)?;
        let mut preset = None;
        let mut seed = None;
        let mut durability = Durability::WriteBehind;
        for (key, value) in query {
            match key.as_str() {
                "preset" => preset = Some(value.as_str()),
                "durable" => durability = parse_durable(value)?,
                "seed" => {
                    let parsed = value.parse::<u64>().map_err(|_| {
                        ApiError::new(
                            400,
                            format!("seed must be a non-negative integer, not {value:?}"),
                        )
                    })?;
                    seed = Some(parsed);
                }
                other => {
                    return Err(ApiError::new(
                        400,
                        format!("unknown query parameter {other:?}"),
                    ))
                }
            }
        }
        let body = std::str::from_utf8(&request.body)
            .map_err(|_| ApiError::new(400, "the config must be UTF-8 TOML"))?;
        let config = match (body.trim().is_empty(), preset) {
            (false, Some(_)) => {
                return Err(ApiError::new(
                    400,
                    "send either a TOML config or a preset, not both",
                ))
            }
            (false, None) => GalaxyConfig::from_toml(body).map_err(AppError::from)?.0,
            (true, preset) => {
                let preset = preset.unwrap_or(DEFAULT_PRESET);
                GalaxyConfig::preset(preset).map_err(AppError::from)?.0
            }
        };
        // Past the public limit: the operator's listener (already authorized), or on the
        // game listener a caller presenting the admin token. Without a token configured
        // nobody passes on the game listener, whatever its peer address.
        let admin = match self.role {
            Role::Admin => true,
            Role::Game => self.admin_token.is_some() && self.authorize(request).is_ok(),
        };
        let limit = if admin {
            MAX_SYSTEMS
        } else {
            self.max_public_systems
        };
        if config.system_count > limit {
            return Err(ApiError::new(
                422,
                format!(
                    "a galaxy of {} systems is above the limit of {limit}{}",
                    config.system_count,
                    if admin {
                        ""
                    } else {
                        " for callers without the admin token (GWAR_MAX_GALAXY_SYSTEMS)"
                    }
                ),
            ));
        }
        // The budgets bind whoever is bound by the public limit; the others still count.
        let options = CreateOptions {
            within_budget: !admin,
            durability,
        };
        let created = (self.app).create_galaxy_with(name, config, seed, now_tick(), options)?;
        Ok(Response::json(201, &CreatedJson::from(&created)))
    }

    fn delete(&self, name: &str) -> Result<Response, ApiError> {
        self.app.delete(galaxy_name(name)?)?;
        Ok(Response::empty(204))
    }

    fn system(&self, name: &str, x: &str, y: &str) -> Result<Response, ApiError> {
        let name = galaxy_name(name)?;
        let (x, y) = (coordinate(x)?, coordinate(y)?);
        let details = self.app.system_details(name, now_tick(), x, y)?;
        Ok(Response::json(200, &SystemJson::from(&details)))
    }

    fn structure(
        &self,
        name: &str,
        x: &str,
        y: &str,
        structure: &str,
    ) -> Result<Response, ApiError> {
        let name = galaxy_name(name)?;
        let (x, y, structure) = (coordinate(x)?, coordinate(y)?, structure_kind(structure)?);
        let details = self
            .app
            .structure_details(name, now_tick(), x, y, structure)?;
        Ok(Response::json(200, &StructureJson::from(&details)))
    }

    fn build(
        &self,
        name: &str,
        x: &str,
        y: &str,
        structure: &str,
        query: &[(String, String)],
        request: &Request,
    ) -> Result<Reply, ApiError> {
        let name = galaxy_name(name)?;
        let (x, y, structure) = (coordinate(x)?, coordinate(y)?, structure_kind(structure)?);
        let mut durability = Durability::WriteBehind;
        for (key, value) in query {
            match key.as_str() {
                "durable" => durability = parse_durable(value)?,
                other => {
                    return Err(ApiError::new(
                        400,
                        format!("unknown query parameter {other:?}"),
                    ))
                }
            }
        }
        if durability == Durability::WriteBehind {
            let build = self.app.build(name, now_tick(), x, y, structure)?;
            return Ok(Response::json(201, &BuildJson::from(build)).into());
        }
        // Applied now; answered once its synced commit comes, off the worker.
        let (build, ticket) = self.app.build_durably(name, now_tick(), x, y, structure)?;
        let (role, request) = (self.role, request.clone());
        Ok(Reply::Later(Later::new(move || match ticket.wait() {
            Ok(()) => Response::json(201, &BuildJson::from(build)),
            Err(error) => ApiError::from(error).into_response(role, &request),
        })))
    }

    fn save(&self) -> Result<Response, ApiError> {
        let saved = self.app.save_all()?;
        Ok(Response::json(
            200,
            &SavedJson {
                saved_systems: saved,
            },
        ))
    }

    fn backup(&self) -> Result<Response, ApiError> {
        let path = self.app.backup(self.backup_dir.as_deref())?;
        Ok(Response::json(200, &BackupJson::from(path.as_path())))
    }

    /// With a token configured, `Authorization: Bearer TOKEN`; without one, anyone (on
    /// the admin listener, whoever can connect to it).
    fn authorize(&self, request: &Request) -> Result<(), ApiError> {
        match &self.admin_token {
            Some(token) => {
                let presented = request
                    .header("authorization")
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        ApiError::new(401, "admin call: send Authorization: Bearer TOKEN")
                    })?;
                if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
                    Ok(())
                } else {
                    Err(ApiError::new(403, "admin call: wrong token"))
                }
            }
            None => Ok(()),
        }
    }
}

/// A 405 with its `Allow` header.
fn not_allowed(message: &str, allowed: &[&str]) -> Response {
    let mut response = Response::error(405, message);
    response.headers.push(("Allow", allowed.join(", ")));
    response
}

/// Compares without an early exit, so the time taken says nothing about where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let length_differs = u8::from(a.len() != b.len());
    let diff = a
        .iter()
        .zip(b.iter().cycle())
        .fold(length_differs, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && !b.is_empty()
}

/// The default and largest page of a list (`?limit=`).
#[derive(Clone, Copy, Debug)]
pub struct PageBounds {
    pub default_limit: usize,
    pub max_limit: usize,
}

/// `GET /galaxies/{name}`'s systems: the default holds a whole blitz or classic galaxy;
/// the maximum keeps a body near 400 KB, however large the galaxy (README, *Paging*).
pub const SYSTEMS_PAGE: PageBounds = PageBounds {
    default_limit: 1000,
    max_limit: 10_000,
};

/// `GET /admin/galaxies/{name}/history`.
pub const HISTORY_PAGE: PageBounds = PageBounds {
    default_limit: 1000,
    max_limit: 10_000,
};

/// `GET /galaxies`.
pub const GALAXIES_PAGE: PageBounds = PageBounds {
    default_limit: 100,
    max_limit: 1000,
};

/// `?offset=N&limit=N` of a list; nothing else may be in the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    offset: usize,
    limit: usize,
}

impl Page {
    fn parse(query: &[(String, String)], bounds: PageBounds) -> Result<Page, ApiError> {
        let mut offset = None;
        let mut limit = None;
        for (key, value) in query {
            let slot = match key.as_str() {
                "offset" => &mut offset,
                "limit" => &mut limit,
                other => {
                    return Err(ApiError::new(
                        400,
                        format!(
                            "unknown query parameter {other:?} (this list takes offset and limit)"
                        ),
                    ))
                }
            };
            let number = value.parse::<usize>().map_err(|_| {
                ApiError::new(
                    400,
                    format!("{key} must be a non-negative integer, not {value:?}"),
                )
            })?;
            *slot = Some(number);
        }
        let limit = limit.unwrap_or(bounds.default_limit);
        if !(1..=bounds.max_limit).contains(&limit) {
            return Err(ApiError::new(
                400,
                format!(
                    "limit must be between 1 and {}, not {limit}",
                    bounds.max_limit
                ),
            ));
        }
        Ok(Page {
            offset: offset.unwrap_or(0),
            limit,
        })
    }
}

fn galaxy_name(name: &str) -> Result<&str, ApiError> {
    if valid_galaxy_name(name) {
        Ok(name)
    } else {
        Err(AppError::BadName(name.to_owned()).into())
    }
}

/// `durable=1`: the request is answered once it is durable (without the parameter, it is
/// write-behind). Any other value is refused, so that a typo never silently downgrades a
/// request its client believes durable.
fn parse_durable(value: &str) -> Result<Durability, ApiError> {
    match value {
        "1" => Ok(Durability::Durable),
        _ => Err(ApiError::new(
            400,
            format!(
                "durable must be 1 (answer once synced to stable storage), not {value:?}; \
                 leave it out for an ordinary order"
            ),
        )),
    }
}

fn coordinate(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::new(
            400,
            format!("coordinates are non-negative integers, not {text:?}"),
        )
    })
}

fn structure_kind(name: &str) -> Result<StructureKind, ApiError> {
    name.parse::<StructureKind>()
        .map_err(|e| ApiError::new(404, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_with_defaults_and_bounds() {
        let page = |query| {
            query_pairs(query)
                .and_then(|pairs| Page::parse(&pairs, SYSTEMS_PAGE))
                .map_err(|e| e.status)
        };
        assert_eq!(
            page(""),
            Ok(Page {
                offset: 0,
                limit: 1000
            })
        );
        assert_eq!(
            page("offset=5&limit=10000"),
            Ok(Page {
                offset: 5,
                limit: 10_000
            })
        );
        assert_eq!(
            page("limit=1&offset=99999999"),
            Ok(Page {
                offset: 99_999_999,
                limit: 1
            })
        );
        for bad in [
            "limit=0",
            "limit=10001",
            "offset=-1",
            "offset=x",
            "offset=",
            "offset",
            "limit=1&limit=1",
            "offset=1&offset=2",
            "page=2",
            "offset=99999999999999999999999",
        ] {
            assert_eq!(page(bad), Err(400), "{bad}");
        }
        assert_eq!(
            Page::parse(&[], GALAXIES_PAGE).map(|p| p.limit).ok(),
            Some(100)
        );
        let over = query_pairs("limit=1001").unwrap();
        assert!(Page::parse(&over, GALAXIES_PAGE).is_err());
    }

    use crate::persistence::metrics::PersistenceState;

    fn api(role: Role, token: Option<&str>) -> Api {
        let app = AppState::without_engine(PersistenceState::Disabled, None);
        Api::new(app, Arc::default(), token.map(str::to_owned), None)
            .with_max_public_systems(200)
            .with_role(role)
    }

    /// A request as the server hands it over: without its peer, which behind a local proxy
    /// is loopback for every player.
    fn call(api: &Api, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> u16 {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        api.handle(&request).wait().status
    }

    const ADMIN_ROUTES: [(&str, &str); 5] = [
        ("DELETE", "/galaxies/g"),
        ("POST", "/admin/save"),
        ("POST", "/admin/backup"),
        ("GET", "/admin/save"),
        ("POST", "/admin/anything"),
    ];

    #[test]
    fn the_game_role_serves_no_admin_route_to_anyone() {
        for token in [None, Some("s3cret")] {
            let game = api(Role::Game, token);
            assert_eq!(call(&game, "POST", "/galaxies/g?seed=1", &[], ""), 201);
            for (method, path) in ADMIN_ROUTES {
                for headers in [&[][..], &[("Authorization", "Bearer s3cret")][..]] {
                    let status = call(&game, method, path, headers, "");
                    let expected = if method == "DELETE" { 405 } else { 404 };
                    assert_eq!(status, expected, "{method} {path} {headers:?} {token:?}");
                }
            }
            assert_eq!(
                call(&game, "GET", "/galaxies/g", &[], ""),
                200,
                "still there"
            );
        }
    }

    #[test]
    fn the_admin_role_serves_admin_routes_behind_the_token_when_set() {
        let open = api(Role::Admin, None);
        assert_eq!(call(&open, "POST", "/galaxies/g?seed=1", &[], ""), 201);
        assert_eq!(call(&open, "POST", "/admin/save", &[], ""), 200);
        assert_eq!(call(&open, "GET", "/admin/save", &[], ""), 405);
        assert_eq!(call(&open, "DELETE", "/galaxies/g", &[], ""), 204);
        assert_eq!(call(&open, "GET", "/galaxies/g", &[], ""), 404);
        assert_eq!(call(&open, "GET", "/galaxies/g/systems/0/0", &[], ""), 404);
        assert_eq!(
            call(
                &open,
                "POST",
                "/galaxies/g/systems/0/0/build/colony",
                &[],
                ""
            ),
            404
        );

        let guarded = api(Role::Admin, Some("s3cret"));
        let right = [("Authorization", "Bearer s3cret")];
        let wrong = [("Authorization", "Bearer nope")];
        assert_eq!(call(&guarded, "GET", "/healthz", &[], ""), 200);
        assert_eq!(call(&guarded, "GET", "/metrics", &[], ""), 200);
        assert_eq!(call(&guarded, "POST", "/galaxies/g?seed=1", &[], ""), 401);
        assert_eq!(call(&guarded, "GET", "/galaxies", &wrong, ""), 403);
        assert_eq!(
            call(&guarded, "POST", "/galaxies/g?seed=1", &right, ""),
            201
        );
        assert_eq!(call(&guarded, "POST", "/admin/save", &[], ""), 401);
        assert_eq!(call(&guarded, "POST", "/admin/save", &wrong, ""), 403);
        assert_eq!(call(&guarded, "POST", "/admin/save", &right, ""), 200);
        assert_eq!(call(&guarded, "DELETE", "/galaxies/g", &wrong, ""), 403);
        assert_eq!(call(&guarded, "DELETE", "/galaxies/g", &right, ""), 204);
    }

    #[test]
    fn the_public_creation_limit_yields_to_the_token_or_the_admin_role() {
        // 400 systems, over the public limit of 200 set by `api`.
        let config = "system_count = 400\n[size]\nx = 40\ny = 40\n\
                      [systems.structures.colony]\nstarting_level = 1\n";
        let token = [("Authorization", "Bearer s3cret")];
        let untokened = api(Role::Game, None);
        assert_eq!(call(&untokened, "POST", "/galaxies/a", &token, config), 422);
        let game = api(Role::Game, Some("s3cret"));
        assert_eq!(call(&game, "POST", "/galaxies/a", &[], config), 422);
        assert_eq!(call(&game, "POST", "/galaxies/a", &token, config), 201);
        let admin = api(Role::Admin, None);
        assert_eq!(call(&admin, "POST", "/galaxies/b", &[], config), 201);
    }

    #[test]
    fn a_repeated_query_parameter_is_refused_on_every_route() {
        let game = api(Role::Game, None);
        assert_eq!(call(&game, "POST", "/galaxies/g?seed=1", &[], ""), 201);
        for (method, target) in [
            ("POST", "/galaxies/h?preset=blitz&preset=classic"),
            ("POST", "/galaxies/h?seed=1&seed=1"),
            ("POST", "/galaxies/h?seed=1&s%65ed=2"),
            ("GET", "/galaxies?limit=1&limit=2"),
            ("GET", "/galaxies/g?offset=0&offset=0"),
            ("GET", "/galaxies/g/systems/0/0?x=1&x=2"),
            ("GET", "/healthz?a&a"),
            ("GET", "/metrics?a=1&a=2"),
        ] {
            assert_eq!(
                call(&game, method, target, &[], ""),
                400,
                "{method} {target}"
            );
        }
        assert_eq!(
            call(&game, "GET", "/galaxies/h", &[], ""),
            404,
            "nothing created"
        );
        let admin = api(Role::Admin, None);
        assert_eq!(call(&admin, "POST", "/admin/save?a=1&a=1", &[], ""), 400);
        assert_eq!(call(&admin, "DELETE", "/galaxies/g?a=1&a=1", &[], ""), 400);
        assert_eq!(
            call(&game, "GET", "/galaxies/g", &[], ""),
            200,
            "not deleted"
        );
    }

    fn request(method: &str, path: &str, query: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        let mut found = response.headers.iter().filter(|(n, _)| *n == name);
        let value = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "{name} sent twice");
        value
    }

    fn elsewhere(url: &str) -> ApiError {
        ApiError::from(AppError::OwnedElsewhere {
            name: "g".into(),
            owner: crate::app::Owner {
                id: "other:1".into(),
                url: url.into(),
            },
        })
    }

    #[test]
    fn a_galaxy_owned_elsewhere_redirects_players_and_names_the_owner_to_operators() {
        let owner = "http://10.0.0.5:3050";
        let order = request("POST", "/galaxies/g/systems/1/2/build/colony", "");
        let answer = elsewhere(owner).into_response(Role::Game, &order);
        assert_eq!(answer.status, 307);
        assert_eq!(
            header(&answer, "Location"),
            Some("http://10.0.0.5:3050/galaxies/g/systems/1/2/build/colony")
        );
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["owner"], owner);
        assert!(body["error"].as_str().unwrap().contains(owner), "{body}");
        // The query goes along as sent; a trailing slash of the URL is not doubled.
        let page = request("GET", "/galaxies/g%2D", "offset=5&limit=10");
        let answer = elsewhere("https://h:1/").into_response(Role::Game, &page);
        assert_eq!(
            header(&answer, "Location"),
            Some("https://h:1/galaxies/g%2D?offset=5&limit=10")
        );
        // On the admin listener: a conflict naming the owner, no redirect.
        let delete = request("DELETE", "/galaxies/g", "");
        let answer = elsewhere(owner).into_response(Role::Admin, &delete);
        assert_eq!((answer.status, header(&answer, "Location")), (409, None));
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["owner"], owner);
        // What another daemon wrote in the database never reaches a header unchecked.
        for bad in ["http://h:1\r\nSet-Cookie: x=1", "ftp://h:1", "http://h 1"] {
            let answer = elsewhere(bad).into_response(Role::Game, &page);
            assert_eq!(
                (answer.status, header(&answer, "Location")),
                (409, None),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_lapsed_lease_is_a_503_to_retry_in_a_second() {
        let answer = ApiError::from(AppError::LeaseLapsed("g".into()))
            .into_response(Role::Game, &request("GET", "/galaxies/g", ""));
        assert_eq!(answer.status, 503);
        assert_eq!(header(&answer, "Retry-After"), Some("1"));
        let other = ApiError::from(AppError::UnknownGalaxy("g".into()))
            .into_response(Role::Game, &request("GET", "/galaxies/g", ""));
        assert_eq!((other.status, header(&other, "Retry-After")), (404, None));
        // A take that met another daemon's lock is busy, not broken.
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let busy = AppError::from(crate::store::StoreError::Sqlite {
            context: "take",
            source: busy,
        });
        let answer = ApiError::from(busy).into_response(Role::Game, &request("GET", "/", ""));
        assert_eq!(
            (answer.status, header(&answer, "Retry-After")),
            (503, Some("1"))
        );
        let broken = AppError::from(crate::store::StoreError::Inconsistent {
            galaxy: "g".into(),
            reason: "r".into(),
        });
        let answer = ApiError::from(broken).into_response(Role::Game, &request("GET", "/", ""));
        assert_eq!((answer.status, header(&answer, "Retry-After")), (500, None));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"secretsecret", b"secret"));
        assert!(!constant_time_eq(b"", b""));
    }
}
