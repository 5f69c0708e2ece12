//! `/init` of the initramfs berth boots a container image's VM with (see the library).

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::process::id() != 1 {
        eprintln!(
            "berth-guest: this is the guest agent of berth's VMs; it runs only as PID 1 (/init) \
             inside a VM's initramfs. Use `berth run --vm IMAGE` to boot one."
        );
        return ExitCode::from(2);
    }
    berth_guest::guest_init()
}
