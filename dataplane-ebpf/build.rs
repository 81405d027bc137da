//! Rebuilds the object when bpf-linker changes, since cargo cannot see
//! the linker as an input by itself.

fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask build` to install it"),
    }
}
