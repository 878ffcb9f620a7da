//! Tests of the room mixer (`super`): mix-minus, talker selection, idle and loss handling.

use super::*;

/// A publisher in a test: an Opus encoder fed a tone (or silence) and its RTP state.
struct Publisher {
    id: String,
    enc: opus::Encoder,
    seq: u16,
    /// Tone frequency, Hz; `None` for digital silence.
    freq: Option<f32>,
    /// RFC 6464 level sent (`-dBov`), or `None` for no extension.
    level: Option<u8>,
    sample: usize,
}

impl Publisher {
    fn new(id: &str, freq: Option<f32>, level: Option<u8>) -> Self {
        let enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        Self { id: id.into(), enc, seq: 0, freq, level, sample: 0 }
    }

    fn packet(&mut self) -> Cmd {
        let pcm: Vec<i16> = (0..FRAME_SAMPLES)
            .map(|i| {
                let t = (self.sample + i) as f32 / 48000.0;
                self.freq.map_or(0, |f| (8000.0 * (2.0 * std::f32::consts::PI * f * t).sin()) as i16)
            })
            .collect();
        self.sample += FRAME_SAMPLES;
        let mut buf = [0u8; 1500];
        let n = self.enc.encode(&pcm, &mut buf).unwrap();
        self.seq = self.seq.wrapping_add(1);
        Cmd::Packet {
            id: self.id.clone(),
            seq: self.seq,
            payload: Bytes::copy_from_slice(&buf[..n]),
            level: self.level,
        }
    }
}

struct Room {
    m: Mixer,
    rx: broadcast::Receiver<Arc<MixFrame>>,
    pubs: Vec<Publisher>,
    tick: u64,
    /// Decodes the shared stream, to measure what viewers hear.
    listener: opus::Decoder,
}

impl Room {
    fn new(k: usize, pubs: Vec<Publisher>) -> Self {
        let (out, rx) = broadcast::channel(1000);
        let mut m = Mixer::new(32, out, Arc::new(AudioStats::default())).unwrap();
        m.apply(Cmd::MixTalkers(k), "test");
        for p in &pubs {
            m.apply(Cmd::AddSource { id: p.id.clone(), listens: true }, "test");
        }
        let listener = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
        Self { m, rx, pubs, tick: 0, listener }
    }

    /// One 20 ms tick: a packet from every publisher, then the mix. Returns the frame, the
    /// level of the shared mix (dBFS) and the decodes and encodes of the tick.
    fn step(&mut self) -> (Arc<MixFrame>, f32, u64, u64) {
        for p in &mut self.pubs {
            let c = p.packet();
            self.m.apply(c, "test");
        }
        self.m.tick(self.tick);
        self.tick += 1;
        let f = self.rx.try_recv().unwrap();
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let n = self.listener.decode(&f.shared, &mut pcm, false).unwrap();
        let st = &self.m.stats;
        let (d, e) = (st.decodes_last_tick.load(Ordering::Relaxed), st.encodes_last_tick.load(Ordering::Relaxed));
        (f, mix::level_dbfs(&pcm[..n]), d, e)
    }

    fn selected(&self) -> Vec<&str> {
        self.m.sources.iter().filter(|(_, s)| s.talk.is_selected()).map(|(id, _)| id.as_str()).collect()
    }

    fn publisher(&mut self, id: &str) -> &mut Publisher {
        self.pubs.iter_mut().find(|p| p.id == id).unwrap()
    }
}

/// Ten publishers: `p0`..`p2` loud tones at −10 dBov, the others silent at −127 dBov.
fn ten() -> Vec<Publisher> {
    (0..10)
        .map(|i| {
            let id = format!("p{i}");
            if i < 3 {
                Publisher::new(&id, Some(300.0 + 200.0 * i as f32), Some(10))
            } else {
                Publisher::new(&id, None, Some(127))
            }
        })
        .collect()
}

#[test]
fn only_the_k_loudest_are_decoded_and_get_their_own_encode() {
    let mut r = Room::new(DEFAULT_MIX_TALKERS, ten());
    let mut loud = 0;
    for t in 0..50 {
        let (f, level, decodes, encodes) = r.step();
        assert!(decodes <= 3, "tick {t}: {decodes} decodes");
        assert!(encodes <= 4, "tick {t}: {encodes} encodes");
        if t >= 10 {
            assert_eq!(decodes, 3, "tick {t}");
            assert_eq!(encodes, 4, "tick {t}");
            let mut talkers: Vec<&str> = f.personal.keys().map(String::as_str).collect();
            talkers.sort();
            assert_eq!(talkers, ["p0", "p1", "p2"]);
            loud += (level > -30.0) as u32;
        }
    }
    assert_eq!(r.selected(), ["p0", "p1", "p2"]);
    assert!(loud >= 38, "the shared mix carries the talkers ({loud} of 40 ticks)");
    let st = &r.m.stats;
    assert!(st.decodes.load(Ordering::Relaxed) <= 150);
}

#[test]
fn a_slightly_louder_fourth_does_not_displace_but_a_much_louder_one_does() {
    let mut pubs = ten();
    for p in &mut pubs[..3] {
        p.level = Some(20);
    }
    let mut r = Room::new(3, pubs);
    for _ in 0..20 {
        r.step();
    }
    assert_eq!(r.selected(), ["p0", "p1", "p2"]);
    // p3 talks 4 dB louder than the talkers: not enough, ever.
    let p3 = r.publisher("p3");
    p3.freq = Some(900.0);
    p3.level = Some(16);
    for _ in 0..100 {
        let (_, _, decodes, encodes) = r.step();
        assert!(decodes <= 3 && encodes <= 4);
    }
    assert_eq!(r.selected(), ["p0", "p1", "p2"]);
    // p4 talks 15 dB louder: it takes a slot after the hold (200 ms), not at once.
    let p4 = r.publisher("p4");
    p4.freq = Some(1100.0);
    p4.level = Some(5);
    for _ in 0..5 {
        r.step();
    }
    assert_eq!(r.selected(), ["p0", "p1", "p2"], "not at once");
    let mut first = None;
    for _ in 0..30 {
        let (_, _, decodes, encodes) = r.step();
        assert!(decodes <= 3 && encodes <= 4);
        if first.is_none() && r.m.sources["p4"].decoded {
            first = Some(r.m.sources["p4"].pcm.clone());
        }
    }
    let sel = r.selected();
    assert_eq!(sel.len(), 3);
    assert!(sel.contains(&"p4"), "{sel:?}");
    assert!(!sel.contains(&"p3"), "{sel:?}");
    // Its first frame fades in from silence: no click.
    let first = first.unwrap();
    assert!(first[..48].iter().all(|s| s.abs() < 500), "{:?}", &first[..48]);
}

#[test]
fn publishers_without_the_extension_are_always_decoded_and_muted_never() {
    let mut pubs: Vec<Publisher> = (0..5).map(|i| Publisher::new(&format!("q{i}"), None, Some(127))).collect();
    pubs.push(Publisher::new("plain-silent", None, None));
    pubs.push(Publisher::new("plain-tone", Some(500.0), None));
    pubs.push(Publisher::new("plain-muted", Some(700.0), None));
    let mut r = Room::new(1, pubs);
    r.m.apply(Cmd::Mute { id: "plain-muted".into(), muted: true }, "test");
    for t in 0..20 {
        let (f, level, decodes, _) = r.step();
        if t >= 2 {
            assert_eq!(decodes, 2, "tick {t}: both plain publishers, nobody else");
            assert!(f.personal.contains_key("plain-tone"));
        }
        if t >= 5 {
            assert!(level > -30.0, "tick {t}: {level}");
        }
    }
    assert!(r.selected().is_empty());
    assert!(!r.m.sources["plain-muted"].decoded);
}

/// Opus in-band FEC as the mixer uses it ([`Pop::Recover`]): a lost frame decoded from the
/// next packet comes out much closer to what was sent than PLC's guess.
#[test]
fn fec_recovers_a_lost_frame_closer_than_concealment() {
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(20).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    // A tone that changes pitch every frame: PLC can only repeat the last one.
    let frames: Vec<Vec<i16>> = (0..30)
        .map(|f| {
            let hz = 200.0 + 40.0 * f as f32;
            (0..FRAME_SAMPLES)
                .map(|i| {
                    let t = (f * FRAME_SAMPLES + i) as f32 / 48_000.0;
                    (8000.0 * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16
                })
                .collect()
        })
        .collect();
    let packets: Vec<Vec<u8>> = frames.iter().map(|f| enc.encode_vec(f, 4000).unwrap()).collect();
    let lost = 20;
    let error = |fec: bool| {
        let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        for p in &packets[..lost] {
            dec.decode(p, &mut pcm, false).unwrap();
        }
        let n = if fec {
            dec.decode(&packets[lost + 1], &mut pcm, true).unwrap()
        } else {
            dec.decode(&[], &mut pcm, false).unwrap()
        };
        assert_eq!(n, FRAME_SAMPLES);
        // Opus delays its output by 6.5 ms (312 samples at 48 kHz): compare the frame's
        // second half with what was sent shifted by that much.
        let sent = frames[lost - 1].iter().chain(&frames[lost]).copied().collect::<Vec<i16>>();
        let d = 312;
        (FRAME_SAMPLES / 2..FRAME_SAMPLES)
            .map(|i| (pcm[i] as f64 - sent[FRAME_SAMPLES + i - d] as f64).powi(2))
            .sum::<f64>()
    };
    let (fec, plc) = (error(true), error(false));
    assert!(fec * 2.0 < plc, "squared error with FEC {fec:.0}, with PLC {plc:.0}");
}
