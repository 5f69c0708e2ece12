//! berth's integration tests: the real binary, a real daemon per test, real cgroups,
//! namespaces, overlayfs and a real OCI registry. Run as root (`scripts/test.sh`).

mod common;

mod bad_input;
mod files;
mod hostile;
mod images;
mod inside;
mod lifecycle;
mod limits;
mod networks;
mod nfs;
mod registry;
mod restart;
mod storage;
mod types;
mod vms;
mod volumes;
