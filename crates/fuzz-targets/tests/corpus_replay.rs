//! Replays the fuzz corpus through the targets on the stable toolchain, in `cargo test --workspace` (so in
//! `cargo xtask test`): every file of `fuzz/corpus/<target>/` (the seeds, from the repository's sample events) and
//! of `fuzz/artifacts/<target>/` (each crash, timeout or OOM a fuzzer found, minimised with `cargo fuzz tmin`,
//! kept once its cause is fixed) must run through its target without a panic.
//!
//! It cannot pass silently: a target whose corpus directory is missing or empty fails, and so does a fuzz target
//! in `fuzz/fuzz_targets/` that this test does not replay (or the other way round).

use std::fs;
use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

/// Every fuzz target, by its name in `fuzz/fuzz_targets/`.
const TARGETS: [(&str, Target); 4] = [
    ("envelope_registry", orderflow_fuzz_targets::envelope_registry),
    ("sqs_record", orderflow_fuzz_targets::sqs_record),
    ("stream_image", orderflow_fuzz_targets::stream_image),
    ("http_request", orderflow_fuzz_targets::http_request),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file, naming the file that panics.
fn replay(name: &str, target: Target, files: &[PathBuf]) {
    for file in files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(outcome.is_ok(), "fuzz target {name} panics on {}", file.display());
    }
}

fn replay_target(name: &str) {
    let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).expect("a target of TARGETS");
    let corpus_dir = fuzz_dir().join("corpus").join(name);
    let corpus = files(&corpus_dir);
    assert!(
        !corpus.is_empty(),
        "{} is missing or empty: the {name} target would be replayed on nothing",
        corpus_dir.display()
    );
    replay(name, *target, &corpus);
    // Crashes found: none is a fine state, so the directory may be absent.
    replay(name, *target, &files(&fuzz_dir().join("artifacts").join(name)));
}

#[test]
fn envelope_registry_corpus_and_crashes_replay_without_a_panic() {
    replay_target("envelope_registry");
}

#[test]
fn sqs_record_corpus_and_crashes_replay_without_a_panic() {
    replay_target("sqs_record");
}

#[test]
fn stream_image_corpus_and_crashes_replay_without_a_panic() {
    replay_target("stream_image");
}

#[test]
fn http_request_corpus_and_crashes_replay_without_a_panic() {
    replay_target("http_request");
}

#[test]
fn every_fuzz_target_is_replayed() {
    let mut fuzz_targets: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().expect("a file name").to_string_lossy().into_owned())
        .collect();
    fuzz_targets.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    replayed.sort();
    assert!(!fuzz_targets.is_empty(), "no fuzz targets in {}", fuzz_dir().join("fuzz_targets").display());
    assert_eq!(fuzz_targets, replayed, "fuzz/fuzz_targets/ and the targets this test replays differ");
}

/// The seeds are the kinds of input each target reads (so the replay is not vacuous): at least one seed of each
/// target gets past the first parse into the code under test.
#[test]
fn some_seeds_of_each_target_are_real_samples() {
    for (name, _) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        let parses = corpus.iter().any(|file| {
            let data = fs::read(file).expect("a corpus file");
            serde_json::from_slice::<serde_json::Value>(&data).is_ok()
        });
        assert!(parses, "no seed of {name} is JSON");
    }
}
