//! Generated types for Envoy's ext_authz v3 API, from our own minimal `.proto` files under
//! `crates/proxy/proto` (wire-compatible with Envoy's; see the comment at the top of
//! `external_auth.proto`). The module tree mirrors the protobuf packages because the generated
//! code refers across packages with `super::` paths.

#![allow(clippy::all, missing_docs)]

pub mod envoy {
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod service {
        pub mod auth {
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}
