//! Tests of the fragment factory: every fragment parses, fallbacks, marks and probes.

use super::*;

#[test]
fn cpu_fragments_parse_and_gpu_falls_back() {
    gst::init().unwrap();
    let p = Params { kbps: 1500, keyint: 300, fps: 30 };
    let b = Backends::new("cpu", None);
    for role in [Role::Vp8Encode, Role::H264Encode, Role::Vp8Decode, Role::H264Decode] {
        let (desc, from) = b.description(role, p).unwrap();
        assert_eq!(from, "cpu");
        assert!(!desc.contains('{'), "{desc}");
        b.make_bin(role, p).unwrap();
    }
    assert!(b.description(Role::Vp8Encode, p).unwrap().0.contains("target-bitrate=1500000"));
    // nvenc has no VP8 encoder fragment, and this machine has no NVENC: both land on cpu.
    let nv = Backends::new("nvenc", None);
    let (_, from) = nv.description(Role::Vp8Encode, p).unwrap();
    assert_eq!(from, "cpu");
    let (desc, from) = nv.description(Role::H264Encode, p).unwrap();
    if gst::ElementFactory::find("nvh264enc").is_none() {
        assert_eq!(from, "cpu");
        assert!(desc.starts_with("x264enc"));
    }
    assert!(Backends::new("no-such-backend", None).make_bin(Role::Vp8Decode, p).is_ok());
}

#[test]
fn variants_split_on_dashes_and_drop_comments() {
    let v = split_variants("# c\na ! b\n  c=1\n---\n# only a comment\n---\nd\n---\n");
    assert_eq!(v, vec!["a ! b c=1".to_string(), "d".to_string()]);
    assert_eq!(split_variants("x264enc\n"), vec!["x264enc".to_string()]);
    assert!(split_variants("# nothing\n").is_empty());
    assert_eq!(
        element_names("nvh264dec ! capsfilter caps=\"video/x-raw(memory:CUDAMemory)\" ! cudadownload"),
        ["nvh264dec", "capsfilter", "cudadownload"]
    );
}

/// Every variant of every backend's fragment for every role parses with the placeholders
/// substituted. The only error tolerated is "no such element", and only for [`GPU_ELEMENTS`];
/// such a fragment is parsed again with each missing element replaced by `identity` (its
/// properties dropped), so the rest of it — the CPU elements, their properties, caps — is
/// checked too.
#[test]
fn every_fragment_parses_or_lacks_only_gpu_elements() {
    gst::init().unwrap();
    let b = Backends::new("cpu", None);
    let backends = b.available();
    assert_eq!(backends, ["cpu", "nvenc", "vaapi"]);
    let mut checked = 0;
    for backend in &backends {
        for role in Role::all() {
            for f in b.variants(backend, role, Params::TYPICAL) {
                let what = format!("{backend}/{}.gst variant {}: {}", role.name(), f.variant, f.description);
                assert!(!f.description.contains('{'), "placeholder left in {what}");
                let mut ctx = gst::ParseContext::new();
                let r = gst::parse::bin_from_description_full(
                    &f.description,
                    true,
                    Some(&mut ctx),
                    gst::ParseFlags::empty(),
                );
                let Err(e) = r else {
                    checked += 1;
                    continue;
                };
                assert_eq!(e.kind::<gst::ParseError>(), Some(gst::ParseError::NoSuchElement), "{what}: {e}");
                let missing = ctx.missing_elements();
                assert!(!missing.is_empty(), "{what}: {e}");
                for m in &missing {
                    assert!(is_gpu_element(m), "{what}: {m} is missing and not a GPU element");
                }
                let gpu = |seg: &&str| seg.split_whitespace().next().is_some_and(|n| missing.iter().any(|m| m == n));
                let segs: Vec<&str> =
                    f.description.split('!').map(|g| if gpu(&g) { " identity " } else { g }).collect();
                let stand_in = segs.join("!");
                gst::parse::bin_from_description(&stand_in, true)
                    .unwrap_or_else(|e| panic!("{what}: the rest does not parse ({stand_in}): {e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "only {checked} fragments checked");
    assert_eq!(b.variants("nvenc", Role::H264Encode, Params::TYPICAL).len(), 3);
    assert!(b.variants("cpu", Role::Composite, Params::TYPICAL).is_empty());
}

#[test]
fn a_marked_fragment_is_skipped_by_clones_too() {
    gst::init().unwrap();
    let a = Backends::new("cpu", None);
    let b = a.clone();
    let built = a.build(Role::Vp8Encode, Params::TYPICAL).unwrap();
    a.mark_failed(Role::Vp8Encode, &built.fragment, "test");
    let e = b.build(Role::Vp8Encode, Params::TYPICAL).unwrap_err();
    assert!(e.to_string().contains("marked failed: test"), "{e}");
    let r = b.resolve(Role::Vp8Encode, Check::Parse);
    assert_eq!(r.backend, None);
    assert_eq!(r.tried[0].outcome, Outcome::MarkedFailed { reason: "test".into() });
    // Other roles are untouched.
    assert!(b.build(Role::Vp8Decode, Params::TYPICAL).is_ok());
}
