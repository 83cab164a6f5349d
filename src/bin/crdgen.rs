//! Prints the CustomResourceDefinitions as YAML, or writes them to a directory.
//!
//! `cargo run --bin crdgen` prints every CRD as a multi-document YAML stream;
//! `cargo run --bin crdgen -- crds/` writes one file per CRD into `crds/`.

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1);
    match out {
        None => print!("{}", upstash_operator::crdgen::render_all()?),
        Some(dir) => {
            for (file, yaml) in upstash_operator::crdgen::render_files()? {
                let path = std::path::Path::new(&dir).join(file);
                std::fs::write(&path, yaml)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
