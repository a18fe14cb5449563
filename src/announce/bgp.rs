//! `ANNOUNCE=bgp`: host routes for the addresses this node can serve, in a
//! kernel table that BIRD 2 exports to the routers.
