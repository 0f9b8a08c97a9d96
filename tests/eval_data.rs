//! `ingest --outcomes` and `eval` on the real third-party routing data in ../shared/eval-data
//! (read at run time, never copied). Under `CI=true` its absence is a failure; elsewhere the
//! tests say they were skipped.

use std::io::Write;
use std::path::PathBuf;

use crate::util::{run_with, stderr, stdout};

fn eval_data() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/eval-data");
    if dir.join("routellm/routellm.jsonl").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {} is missing", dir.display());
    }
    eprintln!("skipped: {} not found", dir.display());
    None
}

/// The first `n` lines of a source file whose id is in the split, as a temporary JSONL file.
fn slice(dir: &std::path::Path, file: &str, split: &str, n: usize, out: &std::path::Path) {
    let ids: std::collections::HashSet<String> =
        std::fs::read_to_string(dir.join("splits").join(split))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut f = std::fs::File::create(out).unwrap();
    let mut kept = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if ids.contains(v["id"].as_str().unwrap()) {
            writeln!(f, "{line}").unwrap();
            kept += 1;
            if kept == n {
                break;
            }
        }
    }
    assert_eq!(kept, n, "not enough {split} rows in {file}");
}

#[test]
fn ingest_outcomes_then_eval_on_held_out_rows() {
    let Some(dir) = eval_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/eval.toml");
    let seed = tmp.path().join("seed.jsonl");
    let held = tmp.path().join("held.jsonl");
    let examples = tmp.path().join("examples.jsonl");
    // MMLU rows come subject by subject: 300 seed rows and 120 held-out rows overlap in subject.
    slice(&dir, "routellm/routellm.jsonl", "seed_ids.txt", 300, &seed);
    slice(&dir, "routellm/routellm.jsonl", "eval_ids.txt", 120, &held);

    let ingest_seed = || {
        run_with(
            &config,
            &[
                "--examples",
                examples.to_str().unwrap(),
                "ingest",
                "--outcomes",
                seed.to_str().unwrap(),
            ],
        )
    };
    let out = ingest_seed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("added 300 outcome examples"),
        "{}",
        stderr(&out)
    );
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&examples)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        first["outcomes"]["small"].is_number() && first["outcomes"]["large"].is_number(),
        "{first}"
    );
    // The source benchmark becomes the category, which `category_baseline` groups by.
    assert_eq!(first["category"], "mmlu", "{first}");
    // The same records again: every id is a duplicate, nothing is written.
    let before = std::fs::read(&examples).unwrap();
    let out = ingest_seed();
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&examples).unwrap(), before);

    let plot = tmp.path().join("plot.svg");
    let out = run_with(
        &config,
        &[
            "--examples",
            examples.to_str().unwrap(),
            "eval",
            held.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
            "--k",
            "5,10",
            "--category-baseline",
            "false,true",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["items"], 120);
    let settings = report["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 4);
    for (s, (k, baseline)) in settings
        .iter()
        .zip([(5, false), (10, false), (5, true), (10, true)])
    {
        assert_eq!(
            (s["k"].as_u64(), s["category_baseline"].as_bool()),
            (Some(k), Some(baseline))
        );
    }
    // Every seed example is MMLU, one category: re-basing on the overall mean changes nothing.
    let apgr = |i: usize| settings[i]["reports"][0]["router"]["apgr"].as_f64();
    assert_eq!(apgr(0), apgr(2));
    assert_eq!(apgr(1), apgr(3));
    let mmlu = &settings[0]["reports"][0];
    assert_eq!(mmlu["benchmark"], "mmlu");
    for key in ["apgr", "cpt50", "cpt80", "share_at_95"] {
        assert!(mmlu["router"].get(key).is_some(), "{key}");
    }
    assert_eq!(mmlu["random"]["apgr"], 0.5);
    let apgr = mmlu["router"]["apgr"].as_f64().unwrap();
    let oracle = mmlu["oracle"]["apgr"].as_f64().unwrap();
    assert!(
        apgr > 0.0 && apgr < oracle,
        "router {apgr}, oracle {oracle}"
    );
    // The bootstrap interval (1,000 resamples by default) brackets the estimate.
    let ci = mmlu["router_apgr_ci95"].as_array().expect("an interval");
    let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    assert!(lo < apgr && apgr < hi, "{lo} {apgr} {hi}");
    // Later settings are compared with the first on the same prompts (paired bootstrap).
    assert!(mmlu.get("apgr_minus_first_ci95").is_none());
    let diff = settings[1]["reports"][0]["apgr_minus_first_ci95"]
        .as_array()
        .expect("a paired interval");
    assert!(diff[0].as_f64().unwrap() <= diff[1].as_f64().unwrap());
    assert_eq!(mmlu["knob"].as_array().unwrap().len(), 21);
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
}

#[test]
fn rasch_smoothing_on_routerbench_rows() {
    let Some(dir) = eval_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/eval.toml");
    let seed = tmp.path().join("seed.jsonl");
    let examples = tmp.path().join("examples.jsonl");
    // ARC rows: eleven models' pass/fail each.
    slice(
        &dir,
        "routerbench-subset/routerbench_subset.jsonl",
        "seed_ids.txt",
        120,
        &seed,
    );
    let ex = examples.to_str().unwrap();
    let s = seed.to_str().unwrap();
    let out = run_with(
        &config,
        &[
            "--examples",
            ex,
            "ingest",
            "--outcomes",
            s,
            "--smooth",
            "rasch",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut strong_minus_weak = Vec::new();
    for line in std::fs::read_to_string(&examples).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (small, large) = (
            v["outcomes"]["small"].as_f64().unwrap(),
            v["outcomes"]["large"].as_f64().unwrap(),
        );
        // Pass probabilities, never a bare 0 or 1; GPT-4 is the abler model everywhere.
        assert!(small > 0.0 && small < 1.0 && large > small, "{v}");
        strong_minus_weak.push(large - small);
    }
    assert_eq!(strong_minus_weak.len(), 120);
    // The gain varies with each prompt's difficulty.
    let (lo, hi) = strong_minus_weak
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &g| (a.min(g), b.max(g)));
    assert!(hi - lo > 0.1, "{lo} {hi}");

    // Cross-validation compares both smoothings on the same rows; only the index side changes.
    let out = run_with(
        &config,
        &[
            "eval",
            s,
            "--cv",
            "2",
            "--smooth",
            "none,rasch",
            "--plot",
            tmp.path().join("p.svg").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let settings = report["settings"].as_array().unwrap();
    let smooth: Vec<&str> = settings
        .iter()
        .map(|s| s["smooth"].as_str().unwrap())
        .collect();
    assert_eq!(smooth, ["none", "rasch"]);
    let weak = |i: usize| settings[i]["reports"][0]["weak_quality"].as_f64();
    assert_eq!(weak(0), weak(1), "routed rows keep their own outcomes");

    // Misuse says what to do instead.
    let out = run_with(
        &config,
        &["--examples", ex, "ingest", s, "--smooth", "rasch"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ingest --outcomes"),
        "{}",
        stderr(&out)
    );
    let out = run_with(&config, &["--examples", ex, "eval", s, "--smooth", "rasch"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--cv"), "{}", stderr(&out));
}

/// Ids of a JSONL file's records, one per line, into `out`.
fn ids_of(file: &std::path::Path, out: &std::path::Path) {
    let ids: String = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{}\n", v["id"].as_str().unwrap())
        })
        .collect();
    std::fs::write(out, ids).unwrap();
}

#[test]
fn learning_curve_and_budget_stream_on_held_out_rows() {
    let Some(dir) = eval_data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/eval.toml");
    let p = |name: &str| tmp.path().join(name);
    slice(
        &dir,
        "routellm/routellm.jsonl",
        "seed_ids.txt",
        200,
        &p("seed.jsonl"),
    );
    slice(
        &dir,
        "routellm/routellm.jsonl",
        "eval_ids.txt",
        120,
        &p("held.jsonl"),
    );
    ids_of(&p("seed.jsonl"), &p("seed_ids.txt"));
    ids_of(&p("held.jsonl"), &p("held_ids.txt"));
    let both = format!(
        "{}{}",
        std::fs::read_to_string(p("seed.jsonl")).unwrap(),
        std::fs::read_to_string(p("held.jsonl")).unwrap()
    );
    std::fs::write(p("both.jsonl"), both).unwrap();
    let arg = |name: &str| p(name).to_str().unwrap().to_string();

    // The learning curve: the index is the seed rows (all MMLU: the domain), sampled.
    let curve = |seed_ids: &str| {
        run_with(
            &config,
            &[
                "eval",
                &arg("both.jsonl"),
                "--ids",
                &arg("held_ids.txt"),
                "--seed-ids",
                seed_ids,
                "--learning-curve",
                "0,50,all,5000",
                "--seeds",
                "2",
                "--bootstrap",
                "100",
            ],
        )
    };
    let out = curve(&arg("seed_ids.txt"));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let curves = report["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 1, "{report:#}");
    let c = &curves[0]["curve"];
    assert_eq!(c["domain"], "mmlu");
    assert_eq!(
        (c["available"].as_u64(), c["held_out"].as_u64()),
        (Some(200), Some(120))
    );
    assert_eq!(c["other_examples"], 0);
    let points = c["points"].as_array().unwrap();
    let labels: Vec<u64> = points
        .iter()
        .map(|p| p["labels"].as_u64().unwrap())
        .collect();
    assert_eq!(
        labels,
        [0, 50, 200],
        "5000 is more than the seed has: `all`"
    );
    let seeds: Vec<usize> = points
        .iter()
        .map(|p| p["apgr_per_seed"].as_array().unwrap().len())
        .collect();
    assert_eq!(seeds, [1, 2, 1]);
    for p in points {
        let apgr = p["apgr"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&apgr), "{p}");
        let ci = p["apgr_ci95"].as_array().expect("an interval");
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo - 1e-9 <= apgr && apgr <= hi + 1e-9, "{p}");
    }
    // An empty index knows nothing: every prompt ties, which scores exactly like random.
    assert!(
        (points[0]["apgr"].as_f64().unwrap() - 0.5).abs() < 1e-9,
        "{}",
        points[0]
    );
    assert!(curves[0]["labels_to_reach"].get("0.55").is_some());
    // A held-out id among the seed ids is refused before anything is indexed.
    let out = curve(&arg("held_ids.txt"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("never be indexed"),
        "{}",
        stderr(&out)
    );

    // The budget on a shuffled stream of the held-out rows, against an index of the seed rows.
    let out = run_with(
        &config,
        &[
            "--examples",
            &arg("examples.jsonl"),
            "ingest",
            "--outcomes",
            &arg("seed.jsonl"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_with(
        &config,
        &[
            "--examples",
            &arg("examples.jsonl"),
            "eval",
            &arg("held.jsonl"),
            "--budget",
            "large=0.3",
            "--window",
            "100",
            "--stream",
            "1000",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (r["stream"].as_u64(), r["prompts"].as_u64()),
        (Some(1000), Some(120))
    );
    let share = r["share_after_first_window"].as_f64().unwrap();
    assert!((share - 0.3).abs() < 0.05, "{r:#}");
    assert!(r["share_without_budget"].as_f64().unwrap() > 0.5, "{r:#}");
    assert!(r["pgr_difference"].as_f64().unwrap().abs() < 0.2, "{r:#}");
    assert!(
        stderr(&out).contains("budget large≤0.30"),
        "{}",
        stderr(&out)
    );
}
