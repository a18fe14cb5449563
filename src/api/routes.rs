//! Every route of the HTTP API in one table, [`ROUTES`]: the HTTP layer
//! builds its routing table from it, and a test holds the OpenAPI document
//! to it, route for route.
//!
//! Paths use `{name}` for a path segment, the syntax of both OpenAPI and
//! actix-web, so they are registered as written. [`match_route`] is the same
//! table as a pure matcher (404 for an unknown path, 405 naming the allowed
//! methods), for a server without a router and for tests.

use super::error::{ApiError, MAX_BODY_BYTES, MAX_CONFIG_BODY_BYTES};

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Parses an upper-case method name.
    pub fn parse(name: &str) -> Option<Method> {
        [
            Method::Get,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// What a route does; the HTTP layer matches on it, so a route without a
/// handler does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Health,
    Ready,
    OpenApi,
    ListServices,
    CreateService,
    GetService,
    ReplaceService,
    PatchService,
    DeleteService,
    ListServers,
    CreateServer,
    GetServer,
    ReplaceServer,
    PatchServer,
    DeleteServer,
    GetConfig,
    ReplaceConfig,
    GetCluster,
    GetNode,
    GetNodeKernel,
    GetMemberKernel,
    GetTraffic,
    GetServiceTraffic,
    Metrics,
    JoinCluster,
    RemoveMember,
    Ui,
    UiAsset,
}

impl Operation {
    /// Whether it changes the desired state or the membership (an answer
    /// that does not come may hide a change that happened).
    pub fn writes(self) -> bool {
        use Operation::*;
        matches!(
            self,
            CreateService
                | ReplaceService
                | PatchService
                | DeleteService
                | CreateServer
                | ReplaceServer
                | PatchServer
                | DeleteServer
                | ReplaceConfig
                | JoinCluster
                | RemoveMember
        )
    }

    /// The `operationId` in the OpenAPI document.
    pub fn id(self) -> &'static str {
        use Operation::*;
        match self {
            Health => "health",
            Ready => "ready",
            OpenApi => "openapi",
            ListServices => "listServices",
            CreateService => "createService",
            GetService => "getService",
            ReplaceService => "replaceService",
            PatchService => "patchService",
            DeleteService => "deleteService",
            ListServers => "listServers",
            CreateServer => "createServer",
            GetServer => "getServer",
            ReplaceServer => "replaceServer",
            PatchServer => "patchServer",
            DeleteServer => "deleteServer",
            GetConfig => "getConfig",
            ReplaceConfig => "replaceConfig",
            GetCluster => "getCluster",
            GetNode => "getNode",
            GetNodeKernel => "getNodeKernel",
            GetMemberKernel => "getMemberKernel",
            GetTraffic => "getTraffic",
            GetServiceTraffic => "getServiceTraffic",
            Metrics => "metrics",
            JoinCluster => "joinCluster",
            RemoveMember => "removeMember",
            Ui => "ui",
            UiAsset => "uiAsset",
        }
    }
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub operation: Operation,
    /// Largest body accepted (413 above); 0 for routes without a body.
    pub max_body: usize,
    /// The query parameters it takes; any other is refused (400), so that
    /// a misspelt `?dry-run` cannot turn a rehearsal into a change.
    pub query: &'static [&'static str],
}

const fn route(
    method: Method,
    path: &'static str,
    operation: Operation,
    max_body: usize,
    query: &'static [&'static str],
) -> Route {
    Route {
        method,
        path,
        operation,
        max_body,
        query,
    }
}

/// The query parameters of each kind of route.
mod query {
    /// Reads of the desired state.
    pub const READ: &[&str] = &["consistent"];
    /// The list of services, which can also be watched from a revision.
    pub const LIST: &[&str] = &["consistent", "since", "watch"];
    /// Writes of the desired state.
    pub const WRITE: &[&str] = &["dry_run", "wait"];
    /// Removals, which drain.
    pub const REMOVE: &[&str] = &["dry_run", "grace", "wait"];
    /// The whole configuration: what it leaves out drains, what it gives
    /// may be taken back from a drain.
    pub const REPLACE: &[&str] = &["dry_run", "grace", "undrain", "wait"];
    /// Membership changes.
    pub const DRY_RUN: &[&str] = &["dry_run"];
    /// A node's report, as a long poll or watched.
    pub const NODE: &[&str] = &["programmed", "timeout_ms", "watch"];
    /// The traffic table, whole or the changes after an answer.
    pub const TRAFFIC: &[&str] = &["since"];
    /// A kernel table, whole or one service's part.
    pub const KERNEL: &[&str] = &["service"];
    pub const NONE: &[&str] = &[];
}

const SERVICES: &str = "/api/v1/services";
const SERVICE: &str = "/api/v1/services/{id}";
const SERVERS: &str = "/api/v1/services/{id}/servers";
const SERVER: &str = "/api/v1/services/{id}/servers/{server_id}";

/// Every route of the API, grouped as probes, application, cluster, and the
/// web UI (its page and the assets it loads).
pub const ROUTES: &[Route] = {
    use Method::*;
    use Operation::*;
    const B: usize = MAX_BODY_BYTES;
    &[
        route(Get, "/healthz", Health, 0, query::NONE),
        route(Get, "/readyz", Ready, 0, query::NONE),
        route(Get, "/api/v1/openapi.json", OpenApi, 0, query::NONE),
        route(Get, "/metrics", Metrics, 0, query::NONE),
        route(Get, SERVICES, ListServices, 0, query::LIST),
        route(Post, SERVICES, CreateService, B, query::WRITE),
        route(Get, SERVICE, GetService, 0, query::READ),
        route(Put, SERVICE, ReplaceService, B, query::WRITE),
        route(Patch, SERVICE, PatchService, B, query::WRITE),
        route(Delete, SERVICE, DeleteService, 0, query::REMOVE),
        route(Get, SERVERS, ListServers, 0, query::READ),
        route(Post, SERVERS, CreateServer, B, query::WRITE),
        route(Get, SERVER, GetServer, 0, query::READ),
        route(Put, SERVER, ReplaceServer, B, query::WRITE),
        route(Patch, SERVER, PatchServer, B, query::WRITE),
        route(Delete, SERVER, DeleteServer, 0, query::REMOVE),
        route(Get, "/api/v1/config", GetConfig, 0, query::READ),
        route(
            Put,
            "/api/v1/config",
            ReplaceConfig,
            MAX_CONFIG_BODY_BYTES,
            query::REPLACE,
        ),
        route(Get, "/api/v1/cluster", GetCluster, 0, query::NONE),
        route(Get, "/api/v1/node", GetNode, 0, query::NODE),
        route(Get, "/api/v1/node/kernel", GetNodeKernel, 0, query::KERNEL),
        route(Post, "/api/v1/cluster/join", JoinCluster, B, query::DRY_RUN),
        route(
            Delete,
            "/api/v1/cluster/members/{node_id}",
            RemoveMember,
            0,
            query::DRY_RUN,
        ),
        route(
            Get,
            "/api/v1/cluster/members/{node_id}/kernel",
            GetMemberKernel,
            0,
            query::KERNEL,
        ),
        route(Get, "/api/v1/traffic", GetTraffic, 0, query::TRAFFIC),
        route(
            Get,
            "/api/v1/traffic/{id}",
            GetServiceTraffic,
            0,
            query::NONE,
        ),
        route(Get, "/", Ui, 0, query::NONE),
        route(Get, "/ui/{asset}", UiAsset, 0, query::NONE),
    ]
};

/// The values of a route's `{name}` segments, by name.
pub type PathParams<'p> = Vec<(&'static str, &'p str)>;

/// The route for `method` and `path` (no query string) and the values of
/// its `{name}` segments; 404 when no route has the path, 405 when routes
/// have it but not with this method.
pub fn match_route<'p>(
    method: &str,
    path: &'p str,
) -> Result<(&'static Route, PathParams<'p>), ApiError> {
    let mut allowed = Vec::new();
    for route in ROUTES {
        let Some(params) = match_path(route.path, path) else {
            continue;
        };
        if route.method.as_str() == method {
            return Ok((route, params));
        }
        allowed.push(route.method.as_str());
    }
    if allowed.is_empty() {
        Err(ApiError::no_route(path))
    } else {
        Err(ApiError::method_not_allowed(method, &allowed))
    }
}

/// Refuses a query parameter `route` does not take (400 naming it and
/// those it takes); repeated parameters are left to the handler.
pub fn check_query<S: AsRef<str>>(
    route: &Route,
    names: impl IntoIterator<Item = S>,
) -> Result<(), ApiError> {
    let Some(unknown) = names
        .into_iter()
        .find(|n| !route.query.contains(&n.as_ref()))
    else {
        return Ok(());
    };
    let unknown = unknown.as_ref();
    let takes = match route.query {
        [] => "takes no query parameters".to_string(),
        [one] => format!("takes only ?{one}"),
        [init @ .., last] => format!(
            "takes {} and ?{last}",
            init.iter()
                .map(|n| format!("?{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(ApiError::at(
        super::ErrorCode::InvalidQuery,
        format!("?{unknown}"),
        format!(
            "unknown query parameter ?{unknown}: {} {} {takes}",
            route.method.as_str(),
            route.path
        ),
    ))
}

fn match_path<'p>(template: &'static str, path: &'p str) -> Option<PathParams<'p>> {
    let mut params = Vec::new();
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                Some(name) if !g.is_empty() => params.push((name, g)),
                Some(_) => return None,
                None if w == g => {}
                None => return None,
            },
            _ => return None,
        }
    }
}
