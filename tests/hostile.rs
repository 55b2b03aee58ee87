//! Hostile and malformed plan files: each gives a clear error and exit 1 within
//! seconds, with no panic and zero AWS calls (`plan` runs through a recording proxy).
//! The cases are generated here (big ones must not be committed) and joined by the
//! broken-plan corpus of tests/plans/invalid.

mod common;

use std::time::{Duration, Instant};

use common::*;

const HEAD: &str =
    "[stack]\nname = \"h\"\n\n[regions.eu-west-1]\nazs = [\"eu-west-1a\", \"eu-west-1b\"]\n\n";
const VPC: &str = "[vpc.main]\ncidr_block = \"10.0.0.0/16\"\nsoc2_exceptions = { flow-logs = \"hostile-input test\" }\n\n";

fn with_head(body: &str) -> Vec<u8> {
    format!("{HEAD}{body}").into_bytes()
}

fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut c: Vec<(&'static str, Vec<u8>, &'static str)> = vec![
        ("empty", b"".to_vec(), "the plan has no [stack] table"),
        ("only_a_comment", b"# nothing\n".to_vec(), "the plan has no [stack] table"),
        ("binary_garbage", (0u8..=255).cycle().take(4096).collect(), "not valid UTF-8"),
        ("invalid_utf8_in_string", [b"[stack]\nname = \"".as_slice(), &[0xff, 0xfe], b"\"\n"].concat(), "not valid UTF-8"),
        ("nul_bytes", b"[stack]\nname = \"a\0b\"\n".to_vec(), "TOML syntax"),
        ("unterminated_string", b"[stack]\nname = \"h\n".to_vec(), "TOML syntax"),
        ("unterminated_header", b"[stack\nname = \"h\"\n".to_vec(), "TOML syntax"),
        ("duplicate_stack", b"[stack]\nname = \"a\"\n[stack]\nname = \"b\"\n".to_vec(), "duplicate key"),
        ("stack_is_array", b"stack = [1, 2]\n".to_vec(), "[stack] must be a table"),
        ("regions_is_string", b"regions = \"eu-west-1\"\n[stack]\nname = \"h\"\n".to_vec(), "[regions] must be a table"),
        ("azs_is_string", b"[stack]\nname = \"h\"\n[regions.eu-west-1]\nazs = \"eu-west-1a\"\n".to_vec(), "azs must be a list"),
        ("azs_empty", b"[stack]\nname = \"h\"\n[regions.eu-west-1]\nazs = []\n".to_vec(), "azs is empty"),
        ("azs_mixed_types", b"[stack]\nname = \"h\"\n[regions.eu-west-1]\nazs = [\"eu-west-1a\", 1]\n".to_vec(), "must be a string"),
        ("block_is_integer", [b"vpc = 5\n".as_slice(), &with_head("")].concat(), "vpc must be a table"),
        ("array_of_tables", with_head("[[vpc]]\ncidr_block = \"10.0.0.0/16\"\n"), "vpc must be a table"),
        ("name_with_space", with_head("[vpc.\"a b\"]\ncidr_block = \"10.0.0.0/16\"\n"), "is not a valid name"),
        ("name_10k_chars", with_head(&format!("[vpc.{}]\ncidr_block = 1\n", "a".repeat(10_000))), "expected a CIDR block"),
        ("self_dependency", with_head(&format!("{VPC}[vpc.b]\ncidr_block = \"10.1.0.0/16\"\ndepends_on = [\"vpc.b\"]\n")), "dependency cycle"),
        ("index_on_single", with_head(&format!("{VPC}[internet_gateway.g]\nvpc = \"vpc.main[0]\"\n")), "is not per_az"),
        ("negative_index", with_head(&format!("{VPC}[internet_gateway.g]\nvpc = \"vpc.main[-1]\"\n")), "is not a resource reference"),
        ("huge_integer", with_head("[log_group.l]\nretention_days = 99999999999999999999\n"), "out of range"),
        ("float_for_integer", with_head("[log_group.l]\nretention_days = 1.5\n"), "expected an integer"),
        ("table_for_string", with_head("[kms_key.k]\ndescription = { a = 1 }\n"), "expected a string, found a table"),
        ("per_az_string", with_head(&format!("{VPC}[subnet.s]\nper_az = \"yes\"\nvpc = \"vpc.main\"\ncidr_block = \"10.0.1.0/24\"\n")), "expected true or false"),
        ("unknown_region_in_block", with_head("[kms_key.k]\nregions = [\"mars-1\"]\n"), "unknown AWS region \"mars-1\""),
        ("cidr_prefix_33", with_head("[vpc.v]\ncidr_block = \"10.0.0.0/33\"\n"), "is not a valid CIDR block"),
        ("var_self_reference", [b"[vars]\nx = \"${x}\"\n".as_slice(), &with_head("[kms_key.k]\ndescription = \"${x}\"\n")].concat(), "nest deeper"),
        ("undefined_var", with_head("[kms_key.k]\ndescription = \"${nope}\"\n"), "undefined variable ${nope}"),
        ("unclosed_interpolation", with_head("[kms_key.k]\ndescription = \"${oops\"\n"), "unclosed"),
        ("reserved_tag", with_head("[kms_key.k]\ntags = { \"tsprov:stack\" = \"other\" }\n"), "is reserved"),
        ("tag_value_300_chars", with_head(&format!("[kms_key.k]\ntags = {{ Team = \"{}\" }}\n", "x".repeat(300))), "longer than 256"),
        ("stack_name_40_chars", format!("[stack]\nname = \"{}\"\n[regions.eu-west-1]\nazs = [\"eu-west-1a\"]\n", "a".repeat(40)).into_bytes(), "is not valid"),
        ("ssh_open_to_world", with_head(&format!("{VPC}[security_group.s]\nvpc = \"vpc.main\"\ningress = [{{ port = 22, cidr = \"0.0.0.0/0\" }}]\n")), "SOC 2 control open-ingress"),
        ("bucket_without_cmk", with_head("[s3_bucket.b]\n"), "SOC 2 control encryption-at-rest"),
        ("deep_nesting", format!("[stack]\nname = \"h\"\nx = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "TOML syntax"),
        ("one_megabyte_string", with_head(&format!("[kms_key.k]\ndescription = \"{}\"\nenable_key_rotation = \"no\"\n", "d".repeat(1 << 20))), "expected true or false"),
        ("datetime_for_cidr", with_head("[vpc.v]\ncidr_block = 1979-05-27T07:32:00Z\n"), "found the datetime"),
        ("homoglyph_kind", with_head("[v\u{0440}c.main]\ncidr_block = \"10.0.0.0/16\"\n"), "TOML syntax: invalid unquoted key"),
        ("netnum_out_of_range", with_head(&format!("{VPC}[subnet.s]\nper_az = true\nvpc = \"vpc.main\"\ncidr_block = {{ within = \"vpc.main\", newbits = 1, netnum = 1 }}\n")), "has no subnet number 2"),
        ("within_unknown", with_head(&format!("{VPC}[subnet.s]\nper_az = true\nvpc = \"vpc.main\"\ncidr_block = {{ within = \"vpc.nope\", newbits = 8, netnum = 1 }}\n")), "undeclared resource vpc.nope"),
        ("rule_with_two_peers", with_head(&format!("{VPC}[security_group.s]\nvpc = \"vpc.main\"\ningress = [{{ port = 443, cidr = \"10.0.0.0/8\", security_group = \"security_group.s\" }}]\n")), "needs exactly one peer"),
        ("route_without_target", with_head(&format!("{VPC}[route_table.r]\nvpc = \"vpc.main\"\nroutes = [{{ destination = \"0.0.0.0/0\" }}]\n")), "needs exactly one target"),
        ("many_errors", with_head(&(0..4_000).map(|i| format!("[kms_key.k{i}]\nbogus = {i}\n")).collect::<String>()), "4000 problems found"),
    ];
    // Too many resources: a plan holds at most 5000 blocks.
    c.push((
        "twenty_thousand_blocks",
        with_head(
            &(0..20_000)
                .map(|i| format!("[kms_key.k{i}]\n"))
                .collect::<String>(),
        ),
        "a plan holds at most 5000",
    ));
    // A 50 MB file and a million resources: refused by size before they are read.
    c.push((
        "fifty_megabytes",
        with_head(&format!("# {}\n", "x".repeat(50 << 20))),
        "plan files are limited to 10 MiB",
    ));
    c.push((
        "a_million_resources",
        with_head(
            &(0..1_000_000)
                .map(|i| format!("[kms_key.k{i}]\n"))
                .collect::<String>(),
        ),
        "plan files are limited to 10 MiB",
    ));
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plans_fail_fast_clearly_and_without_an_aws_call() {
    let dir = tempfile::tempdir().unwrap();
    // Any AWS call would reach this proxy (and LocalStack behind it, when it runs).
    let watch = proxy::start(
        endpoint(),
        std::sync::Arc::new(|_: &str, body: String| body),
    )
    .await;
    let mut files: Vec<(String, String)> = Vec::new();
    for (name, bytes, expected) in cases() {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, bytes).unwrap();
        files.push((path.display().to_string(), expected.to_string()));
    }
    for entry in std::fs::read_dir("tests/plans/invalid").unwrap() {
        let path = entry.unwrap().path();
        files.push((
            path.display().to_string(),
            "nothing was sent to AWS".to_string(),
        ));
    }
    assert!(files.len() >= 50, "only {} hostile plans", files.len());
    let mut failures = Vec::new();
    for (file, expected) in &files {
        let started = Instant::now();
        let run = tokio::task::spawn_blocking({
            let (url, file) = (watch.url.clone(), file.clone());
            // No --stack: an override would hide a bad stack name in the file.
            move || tsprov_via(&url, "plan", &file, "", &[], &[])
        })
        .await
        .unwrap();
        let took = started.elapsed();
        if run.code != 1 {
            failures.push(format!("{file}: exit {} (want 1)", run.code));
        }
        if !run.stderr.contains(expected.as_str()) {
            failures.push(format!(
                "{file}: no {expected:?} in:\n{}",
                run.stderr.chars().take(2000).collect::<String>()
            ));
        }
        if run.stderr.contains("panicked") {
            failures.push(format!("{file}: panicked"));
        }
        if took > Duration::from_secs(10) {
            failures.push(format!("{file}: took {took:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        watch.operations.lock().unwrap().is_empty(),
        "AWS calls were made: {:?}",
        watch.operations.lock().unwrap()
    );
    eprintln!("{} hostile plans refused, no AWS call", files.len());
}
