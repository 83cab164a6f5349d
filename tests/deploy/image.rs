//! The container image: the Dockerfile builds the static musl binary CI builds, on a distroless
//! non-root base; the musl binary CI built is static and runs.

use std::path::PathBuf;

use crate::support::repo_path;

/// The cargo command CI runs for the image's binary (`.ci/run`), which the Dockerfile repeats.
const MUSL_BUILD: &str =
    "cargo build --locked --release --target x86_64-unknown-linux-musl --bin upstash-operator";

#[test]
fn the_dockerfile_builds_a_static_binary_on_a_distroless_nonroot_base() {
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(MUSL_BUILD),
        "the Dockerfile does not run {MUSL_BUILD:?}"
    );
    let ci = std::fs::read_to_string(repo_path(".ci/run")).unwrap();
    let ci_build = MUSL_BUILD.replace("cargo build ", "(cargo build ");
    assert!(
        ci.contains(&ci_build),
        ".ci/run does not build the image's binary"
    );
    assert!(dockerfile.contains("musl-tools"));
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert_eq!(stages[1], "FROM gcr.io/distroless/static-debian12:nonroot");
    let last = dockerfile.split("FROM gcr.io/distroless").nth(1).unwrap();
    assert!(last.contains("USER 65532:65532"));
    assert!(last.contains("ENTRYPOINT [\"/usr/local/bin/upstash-operator\"]"));
    assert!(last.contains("EXPOSE 8080"));
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"));
}

/// Whether an ELF executable asks for a program interpreter (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP)
}

/// The musl binary named by `UPSTASH_OPERATOR_MUSL_BIN` is statically linked and runs. `.ci/run`
/// builds it and runs this test with `UPSTASH_OPERATOR_REQUIRE_MUSL=1`, which makes a missing
/// binary a failure; elsewhere the check runs when the variable is set.
#[test]
fn the_musl_binary_is_static_and_runs() {
    let Some(bin) = std::env::var_os("UPSTASH_OPERATOR_MUSL_BIN").map(PathBuf::from) else {
        assert!(
            std::env::var_os("UPSTASH_OPERATOR_REQUIRE_MUSL").is_none(),
            "UPSTASH_OPERATOR_MUSL_BIN must name the musl binary"
        );
        eprintln!("UPSTASH_OPERATOR_MUSL_BIN is not set; not checking the musl binary");
        return;
    };
    let elf = std::fs::read(&bin).unwrap_or_else(|e| panic!("reading {}: {e}", bin.display()));
    assert!(
        !has_interpreter(&elf),
        "{} is dynamically linked",
        bin.display()
    );
    // The check can fail: the test binary itself is dynamically linked.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(has_interpreter(&me));
    let out = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--leader-election"), "{help}");
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("upstash-operator {}", env!("CARGO_PKG_VERSION"))
    );
}
