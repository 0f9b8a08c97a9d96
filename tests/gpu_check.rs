//! `model-router gpu-check` on a machine without a GPU (this one, and CI's): it says so in its
//! JSON report and exits non-zero; `--device cpu` runs the whole check on the CPU (candle's
//! operations against our kernels), and an f16 copy of the model checks like the original.

use serde_json::Value;

use crate::util::{cosine, run, stderr, stdout};

/// Small sizes: the check's machinery, not a GPU's speed.
const QUICK: [&str; 12] = [
    "--max-batch",
    "12",
    "--runs",
    "2",
    "--seconds",
    "0.5",
    "--batches",
    "4",
    "--requests",
    "32",
    "--concurrency",
    "4",
];

fn report(out: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("a JSON report ({e}): {}{}", stdout(out), stderr(out)))
}

#[test]
fn without_a_gpu_the_report_says_none_was_found() {
    let mut args = vec!["--device", "auto", "gpu-check"];
    args.extend(QUICK);
    let out = run(&args);
    let r = report(&out);
    if cfg!(any(feature = "cuda", feature = "metal")) && r["ok"] == true {
        // Built with a GPU backend, on a machine that has the GPU: then it must pass.
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(r["correctness"]["pass"], true, "{r:#}");
        return;
    }
    assert!(!out.status.success(), "{r:#}");
    assert_eq!(r["ok"], false);
    let error = r["error"].as_str().expect("an error field");
    assert!(error.contains("no GPU found"), "{error}");
    if !cfg!(feature = "cuda") {
        assert!(error.contains("--features cuda"), "{error}");
        assert!(r["backends"].as_array().unwrap().is_empty());
    }
    assert!(r["correctness"].is_null() && r["device"].is_null(), "{r:#}");
    assert!(
        stderr(&out).contains("gpu-check failed: device: no GPU found"),
        "{}",
        stderr(&out)
    );

    // Naming a backend this binary lacks says how to rebuild.
    if !cfg!(feature = "cuda") {
        let out = run(&["--device", "cuda:0", "gpu-check"]);
        assert!(!out.status.success());
        let error = report(&out)["error"].as_str().unwrap().to_string();
        assert!(error.contains("built without CUDA support"), "{error}");
    }
}

#[test]
fn a_cpu_dry_run_checks_candle_ops_against_the_kernels() {
    let mut args = vec!["--device", "cpu", "gpu-check", "--synthetic"];
    args.extend(QUICK);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(
        (r["ok"].clone(), r["device"].clone()),
        (true.into(), "cpu".into())
    );
    assert!(r["error"].is_null());
    assert_eq!(r["weights"]["kind"], "synthetic");
    assert_eq!(r["weights"]["hidden"], 384, "MiniLM-shaped");
    let c = &r["correctness"];
    assert_eq!(c["pass"], true, "{c:#}");
    assert!(c["min_cosine"].as_f64().unwrap() >= 0.9999);
    let sizes: Vec<u64> = c["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1, 2, 8, 12]);
    let sentences = c["sentences"].as_array().unwrap();
    assert!(sentences.iter().any(|s| s["truncated"] == true));
    assert!(sentences
        .iter()
        .any(|s| !s["text"].as_str().unwrap().is_ascii()));
    let latency = r["latency"].as_array().unwrap();
    assert_eq!(latency.len(), 2);
    assert_eq!(latency[0]["tokens"], 16);
    assert_eq!(latency[1]["tokens"], 64);
    for l in latency {
        assert!(l["device_ms"].as_f64().unwrap() > 0.0 && l["cpu_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(r["throughput"][0]["batch"], 4);
    assert!(r["throughput"][0]["device_per_s"].as_f64().unwrap() > 0.0);
    let s = &r["serving"];
    assert_eq!(
        (s["concurrency"].as_u64(), s["requests"].as_u64()),
        (Some(4), Some(32))
    );
    assert!(s["batched_routes_per_s"].as_f64().unwrap() > 0.0);
    assert!(s["unbatched_routes_per_s"].as_f64().unwrap() > 0.0);
    // Targets are a GPU's: a dry run has none.
    assert!(r["targets"].as_array().unwrap().is_empty());

    let out = run(&["--device", "cpu", "gpu-check", "--max-batch", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--max-batch"), "{}", stderr(&out));
}

#[test]
fn an_f16_copy_of_the_model_checks_and_embeds_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = dir.path().join("minilm-f16");
    let f16_arg = f16.to_str().unwrap();
    let out = run(&["gpu-check", "--write-f16", f16_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let size = std::fs::metadata(f16.join("model.safetensors"))
        .unwrap()
        .len();
    assert!((40_000_000..50_000_000).contains(&size), "{size} bytes");
    for f in ["config.json", "tokenizer.json", "1_Pooling/config.json"] {
        assert!(f16.join(f).is_file(), "{f}");
    }

    let mut args = vec!["--device", "cpu", "--model", f16_arg, "gpu-check"];
    args.extend(QUICK);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = report(&out);
    assert_eq!(r["weights"]["kind"], "model");
    assert_eq!(r["weights"]["stored_dtype"], "f16");
    assert_eq!(r["correctness"]["pass"], true);

    let text = "Prove that every group of prime order p is cyclic.";
    let vector = |out: std::process::Output| -> Vec<f32> {
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(stdout(&out).trim()).unwrap()
    };
    let original = vector(run(&["embed", text]));
    let half = vector(run(&["--model", f16_arg, "embed", text]));
    let cos = cosine(&original, &half);
    assert!(
        cos > 0.999,
        "f16 weights move the vector too far: cosine {cos}"
    );
}
