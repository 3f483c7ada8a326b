#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| orderflow_fuzz_targets::sqs_record(data));
