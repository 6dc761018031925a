//! Caller authentication. Client-certificate checks live with the service (they need the CA's
//! trust configuration); token verification is here.

mod account;
pub mod cache;
pub mod jwt;
pub mod node;
pub mod review;
