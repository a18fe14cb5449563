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
    Metrics,
    JoinCluster,
    RemoveMember,
    Ui,
    UiAsset,
}

impl Operation {
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
}

const fn route(method: Method, path: &'static str, operation: Operation, max_body: usize) -> Route {
    Route {
        method,
        path,
        operation,
        max_body,
    }
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
        route(Get, "/healthz", Health, 0),
        route(Get, "/readyz", Ready, 0),
        route(Get, "/api/v1/openapi.json", OpenApi, 0),
        route(Get, "/metrics", Metrics, 0),
        route(Get, SERVICES, ListServices, 0),
        route(Post, SERVICES, CreateService, B),
        route(Get, SERVICE, GetService, 0),
        route(Put, SERVICE, ReplaceService, B),
        route(Patch, SERVICE, PatchService, B),
        route(Delete, SERVICE, DeleteService, 0),
        route(Get, SERVERS, ListServers, 0),
        route(Post, SERVERS, CreateServer, B),
        route(Get, SERVER, GetServer, 0),
        route(Put, SERVER, ReplaceServer, B),
        route(Patch, SERVER, PatchServer, B),
        route(Delete, SERVER, DeleteServer, 0),
        route(Get, "/api/v1/config", GetConfig, 0),
        route(Put, "/api/v1/config", ReplaceConfig, MAX_CONFIG_BODY_BYTES),
        route(Get, "/api/v1/cluster", GetCluster, 0),
        route(Get, "/api/v1/node", GetNode, 0),
        route(Get, "/api/v1/node/kernel", GetNodeKernel, 0),
        route(Post, "/api/v1/cluster/join", JoinCluster, B),
        route(Delete, "/api/v1/cluster/members/{node_id}", RemoveMember, 0),
        route(
            Get,
            "/api/v1/cluster/members/{node_id}/kernel",
            GetMemberKernel,
            0,
        ),
        route(Get, "/", Ui, 0),
        route(Get, "/ui/{asset}", UiAsset, 0),
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
