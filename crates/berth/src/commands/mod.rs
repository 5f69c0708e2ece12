//! One module per group of commands; each command is a client call plus printing.

pub mod access;
pub mod host;
pub mod images;
pub mod instances;
pub mod networks;
pub mod nodes;
pub mod snapshots;
pub mod stacks;
pub mod vms;
pub mod volumes;
