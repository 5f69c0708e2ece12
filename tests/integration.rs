//! berth's integration tests: the real binary, a real daemon per test, real cgroups,
//! namespaces, overlayfs and a real OCI registry. Run as root (`scripts/test.sh`).

mod common;

mod admission;
mod api_schema;
mod bad_input;
mod cgroup_v2;
mod cluster;
mod dashboard;
mod devices;
mod dns;
mod docker_api;
mod etcd_store;
mod files;
mod health;
mod host_loopback;
mod hostile;
mod images;
mod inside;
mod lifecycle;
mod limits;
mod metrics;
mod migration;
mod mounts;
mod networks;
mod nfs;
mod numbers;
mod ovf;
mod registry;
mod remote;
mod restart;
mod seccomp;
mod signals;
mod stacks;
mod stop;
mod storage;
mod two_daemons;
mod types;
mod vm_files;
mod vms;
mod volumes;
mod whole_machines;
