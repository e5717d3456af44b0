//! Links BLIS when the `blis` feature routes the GEMMs through it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_BLIS").is_some() {
        println!("cargo:rustc-link-lib=dylib=blis");
    }
}
