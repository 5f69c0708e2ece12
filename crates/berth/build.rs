// Link berth as a position-dependent executable: a PIE's pointer tables are relocated at
// every start, which costs each supervisor process ~0.5 MiB of private memory.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
