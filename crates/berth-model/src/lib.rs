//! berth's domain model, shared by every other crate: what an instance is, the limits it
//! runs under, images, the REST API's bodies, the attach stream protocol, and the driver
//! interface that containers and VMs both implement.

pub mod api;
pub mod driver;
pub mod health;
pub mod image;
pub mod instance;
pub mod log;
pub mod mount;
pub mod network;
pub mod node;
pub mod project;
pub mod quantity;
pub mod signal;
pub mod stack;
pub mod stream;
pub mod trust;
pub mod types;
pub mod volume;

pub use instance::{ExitStatus, Instance, InstanceKind, InstanceSpec, InstanceState, Limits, Requests};
pub use quantity::{ByteSize, LimitSetting, MilliCpus};
