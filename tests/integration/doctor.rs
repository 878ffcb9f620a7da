//! `tessera doctor`: on a machine without a GPU (CI, the development VMs) every role of a GPU
//! backend is served by `cpu`, and the report says why (the GPU elements are missing); the JSON
//! shape is the documented one.

use std::process::Command;

/// `tessera doctor ARGS` (the built binary), its stdout parsed as JSON.
fn doctor_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("doctor")
        .args(args)
        .env_remove("TESSERA_BACKEND")
        .env_remove("TESSERA_PIPELINES_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tessera doctor");
    assert!(out.status.success(), "doctor failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn usable(report: &serde_json::Value, names: &[&str]) -> bool {
    report["accelerators"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| names.contains(&a["name"].as_str().unwrap()) && a["usable"] == true)
}

#[test]
fn without_a_gpu_every_role_of_a_gpu_backend_runs_on_cpu() {
    for (backend, accel) in [
        ("nvenc", &["nvenc", "nvdec", "cuda-compositor"][..]),
        ("vaapi", &["vaapi-decode", "vaapi-encode", "va-compositor"][..]),
    ] {
        let r = doctor_json(&["--json", "--backend", backend]);
        assert_eq!(r["schema"], 1);
        assert_eq!(r["backend"], backend);
        assert_eq!(r["probed"], true);
        assert!(r["gstreamer"].as_str().unwrap().starts_with("1."), "{}", r["gstreamer"]);
        if usable(&r, accel) {
            eprintln!("{backend}: this machine has a usable GPU; skipping the no-GPU assertions");
            continue;
        }
        let roles = r["roles"].as_array().unwrap();
        let names: Vec<&str> = roles.iter().map(|x| x["role"].as_str().unwrap()).collect();
        assert_eq!(names, ["vp8-decode", "h264-decode", "composite", "vp8-encode", "h264-encode"]);
        for role in roles {
            assert_eq!(role["backend"], "cpu", "{backend}: {role:#}");
            assert_eq!(role["wanted"], backend);
            assert!(!role["reason"].as_str().unwrap().is_empty(), "{backend}: a fallback says why: {role:#}");
        }
        // The H.264 encoder fell back because the GPU element is missing, and x264 ran in its probe.
        let h264 = &roles[4];
        let tried = h264["tried"].as_array().unwrap();
        assert_eq!(tried[0]["backend"], backend);
        assert_eq!(tried[0]["result"], "missing_elements", "{h264:#}");
        let last = tried.last().unwrap();
        assert_eq!((last["backend"].as_str(), last["result"].as_str()), (Some("cpu"), Some("ok")), "{h264:#}");
        assert_eq!(h264["fragment"]["backend"], "cpu");
        assert!(h264["fragment"]["description"].as_str().unwrap().starts_with("x264enc"));
        // Without a GPU encoder, VP8 stays first and nothing runs on a GPU.
        assert_eq!(r["policy"]["video_codec_order"], serde_json::json!(["vp8", "h264"]));
        assert_eq!(r["policy"]["gpu_encode"], false);
        assert_eq!(r["policy"]["gpu_decode"], false);
    }
}

#[test]
fn the_text_report_names_every_role_and_the_policy() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["doctor", "--backend", "nvenc", "--no-probe"])
        .env_remove("TESSERA_PIPELINES_DIR")
        .output()
        .expect("run tessera doctor");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["backend nvenc", "vp8-decode", "h264-encode", "composite", "accelerators:", "nvenc", "policy: offer"]
    {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}
