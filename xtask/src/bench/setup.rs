//! What the init and memory figures share: the release binaries they run (`cargo build --release`, the
//! profile Lambda gets), and `infra/stateful.yaml` deployed into moto under a fresh stage, with the functions of
//! `infra/functions.yaml` resolved against it, so that every process runs with the environment the template
//! gives it.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use local_lambda::aws::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, sdk_config};
use local_lambda::deploy::deploy_stack;
use local_lambda::iac::{FunctionSpec, Resolver, load_functions};
use orderflow_local_cloud::cloud::stateful_stack_name;

use super::init::{HELLO, INIT_FUNCTIONS};
use super::{cargo, target_dir};

/// The release binaries by name.
pub struct Binaries {
    dir: PathBuf,
    pub hello: PathBuf,
}

impl Binaries {
    pub fn function(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub fn build_release(root: &Path) -> Result<Binaries> {
    let mut args = vec!["build", "--release"];
    // The memory run's function is one of them.
    for function in INIT_FUNCTIONS {
        args.extend(["-p", function]);
    }
    cargo(root, &args)?;
    cargo(root, &["build", "--release", "-p", "orderflow-local-cloud", "--example", HELLO])?;
    let dir = target_dir(root).join("release");
    Ok(Binaries { hello: dir.join("examples").join(HELLO), dir })
}

/// The stateful stack deployed into the emulator, and the functions of the template resolved against it.
pub struct Stack {
    pub stage: String,
    functions: Vec<FunctionSpec>,
}

impl Stack {
    pub fn function(&self, name: &str) -> Result<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name).with_context(|| format!("no function {name} in the template"))
    }

    /// What the local runner gives every function besides the template's environment.
    pub fn sdk_env(&self, endpoint: &str) -> BTreeMap<String, String> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

pub async fn deploy(root: &Path, endpoint: &str) -> Result<Stack> {
    let stage = format!("bench{:08x}", RandomState::new().build_hasher().finish() as u32);
    let cloudformation = aws_sdk_cloudformation::Client::new(&sdk_config(endpoint));
    let outputs = deploy_stack(
        &cloudformation,
        &stateful_stack_name(&stage),
        &root.join("infra/stateful.yaml"),
        &[("Stage", &stage)],
    )
    .await?;
    let resolver = Resolver::new().with_parameter("Stage", &stage).with_exports(outputs.exports().clone());
    let functions = load_functions(&root.join("infra/functions.yaml"), &resolver)?;
    Ok(Stack { stage, functions })
}
