//! Build script: embeds the SQL migrations of `sql/` (applied by version at run time) and records
//! what this binary was built with, for `--version` and each run's `host_json`.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    embed_migrations(Path::new(&manifest_dir), Path::new(&out_dir));
    record_build_info(Path::new(&manifest_dir));
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        // The CUDA build links llama.cpp as shared libraries that sit beside the binary.
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN");
    }
}

/// Writes `$OUT_DIR/migrations.rs`: every `sql/NNN_name.sql` in version order, plus `sql/views.sql`.
/// A gap or a duplicate version fails the build rather than a user's database.
fn embed_migrations(manifest_dir: &Path, out_dir: &Path) {
    let sql_dir = manifest_dir.join("sql");
    println!("cargo:rerun-if-changed={}", sql_dir.display());
    let mut migrations: Vec<(u32, String)> = Vec::new();
    for entry in std::fs::read_dir(&sql_dir).expect("sql/ exists") {
        let path = entry.expect("readable sql/ entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((number, _)) = name.split_once('_') else {
            continue;
        };
        let Ok(version) = number.parse::<u32>() else {
            continue;
        };
        if name.ends_with(".sql") {
            migrations.push((version, path.display().to_string()));
        }
    }
    migrations.sort();
    for (expected, (version, path)) in (1..).zip(&migrations) {
        assert_eq!(
            *version, expected,
            "migration {path} breaks the 1,2,3... version sequence"
        );
    }
    let mut code = String::from("/// Schema migrations: (version, file, SQL), in order.\npub const MIGRATIONS: &[(u32, &str, &str)] = &[\n");
    for (version, path) in &migrations {
        let file = Path::new(path).file_name().unwrap().to_string_lossy();
        writeln!(code, "    ({version}, {file:?}, include_str!({path:?})),").unwrap();
    }
    code.push_str("];\n");
    let views = sql_dir.join("views.sql");
    writeln!(code, "/// Views for users, recreated on every open.\npub const VIEWS: &str = include_str!({:?});", views.display().to_string()).unwrap();
    std::fs::write(out_dir.join("migrations.rs"), code).expect("write migrations.rs");
}

/// Sets `DOCENT_BUILD_*` environment variables read with `env!` by the crate.
fn record_build_info(manifest_dir: &Path) {
    let lock = manifest_dir.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let sys_version = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|text| locked_version(&text, "llama-cpp-sys-2"))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=DOCENT_BUILD_LLAMA_CPP_SYS={sys_version}");
    let backend = if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        "cuda"
    } else {
        "cpu"
    };
    println!("cargo:rustc-env=DOCENT_BUILD_BACKEND={backend}");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=DOCENT_BUILD_PROFILE={profile}");
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=DOCENT_BUILD_TARGET={target}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=DOCENT_BUILD_RUSTC={rustc_version}");
}

/// The version of `package` in a Cargo.lock text.
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let version = lines.next()?.trim();
            return version
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string);
        }
    }
    None
}
