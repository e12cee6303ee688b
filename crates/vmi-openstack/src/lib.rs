//! The OpenStack source of vm-import.
//!
//! - [`config`]: credentials and settings from a Secret, `clouds.yaml` or `OS_*` variables;
//! - [`session`] and [`client`]: a thin typed client over Keystone v3, Nova, Neutron, Cinder
//!   and Glance, behind the [`api::OpenstackApi`] trait;
//! - [`preflight`]: the checks that run before anything is touched.
//!
//! Nova's `os-networks` proxy is never used: networks are looked up in Neutron.

pub mod api;
pub mod client;
pub mod config;
pub mod describe;
pub mod error;
pub mod export;
pub mod preflight;
pub mod session;
pub mod tls;
pub mod wire;

pub use api::OpenstackApi;
pub use client::HttpOpenstack;
pub use error::OpenstackError;
